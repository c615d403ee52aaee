"""Decoding an action and projecting a dispatch onto a step's feasible set (docs/design.md
"Physics truth", item 1).

:class:`StepProjection` holds what does not change during a day (a grid model at a step
length); its methods take a leading batch axis of ``B`` days (:class:`env.batched.BatchedSimulator`'s
batch, ``B = 1`` for the one-day :class:`env.simulator.GridSimulator`). The one home of:

* the action decoding ``x = (a + 1) span / 2 + x(-1)`` with this step's EV station limits;
* the projection, stage 1: EV stations to ``[p_min, p_max]``; storage to ``|p| <= p_max``
  and ``0 <= e + (eta_c p+ - p-/eta_d) dt <= e_max``, i.e.
  ``-min(p_max, e eta_d / dt) <= p <= min(p_max, (e_max - e) / (eta_c dt))``; curtailment to
  ``[0, 1]``; thermal setpoints to ``[max(p_min, P_last - ramp dt), max(up, down)]`` with
  ``up = min(p_max, P_last + ramp dt)``; compensators to ``[q_min, q_max]``; tie lines to
  ``+-p_max``. Stage 2: the reserves to ``[0, headroom]`` of the stage-1 values: thermal
  ``r_up <= up - P``, ``r_dn <= P - down``; stations ``r_up <= P_ev - p_min``,
  ``r_dn <= p_max - P_ev``.

:func:`storage_energy_next` is the storage dynamics those limits keep within ``[0, e_max]``.
"""

from __future__ import annotations

import numpy as np

from env.grid_model import GridModel

__all__ = ["StepProjection", "der_used_mw", "storage_energy_next"]


class StepProjection:
    """The constant part of the decoding and projection of a grid at a step length.

    Args:
        model: the grid model (``model.sizes`` is the action layout, reactive or not).
        dt_h: step length in hours.
    """

    def __init__(self, model: GridModel, dt_h: float) -> None:
        m, sz = model, model.sizes
        self.model, self.dt_h = m, float(dt_h)
        ramp = m.g_ramp * dt_h if m.is_td else np.zeros(0)
        z = np.zeros
        lo = [z(sz.n_evcs), -m.st_p_max, z(sz.n_der), m.g_p_min if m.is_td else z(0), z(sz.n_gen), z(sz.n_gen),
              z(sz.n_ev_reserve), z(sz.n_ev_reserve), -m.tie_p_max]
        hi = [z(sz.n_evcs), m.st_p_max, np.ones(sz.n_der), m.g_p_max if m.is_td else z(0), ramp, ramp,
              z(sz.n_ev_reserve), z(sz.n_ev_reserve), m.tie_p_max]
        if sz.reactive:
            lo.append(m.q_min)
            hi.append(m.q_max)
        #: the action ranges of the layout, EV fields 0 (set per step)
        self.lim_lo, self.lim_hi = np.concatenate(lo), np.concatenate(hi)
        sign = sz.codec.sign
        self.lim_at_minus = np.where(sign > 0, self.lim_lo, self.lim_hi)   # x(-1), constant but for EVs
        self.lim_span = sign * (self.lim_hi - self.lim_lo)
        self.lim_half_span = self.lim_span * 0.5
        lay = dict(sz.layout())
        self.sl_ev = lay["ev_p_mw"]
        self.sl_rup = lay["ev_r_up_mw"] if sz.n_ev_reserve else None
        self.sl_rdn = lay["ev_r_dn_mw"] if sz.n_ev_reserve else None
        # the projection works in the reactive layout (q last)
        lay_q = dict(m.sizes_q.layout())
        self.layout_q = tuple(m.sizes_q.layout())
        self.n_noq, self.n_req = m.sizes_no_q.n_action, m.sizes_q.n_action
        lohi = np.empty((2, self.n_req))           # rows: low, high; the state-dependent ones set per step
        lohi[0], lohi[1] = -np.inf, np.inf
        lohi[:, lay_q["der_curtail_frac"]] = ((0.0,), (1.0,))
        lohi[0, lay_q["q_comp_mvar"]], lohi[1, lay_q["q_comp_mvar"]] = m.q_min, m.q_max
        lohi[0, lay_q["tie_p_mw"]], lohi[1, lay_q["tie_p_mw"]] = -m.tie_p_max, m.tie_p_max
        self.proj_lohi = lohi
        self.psl_ev, self.psl_st, self.psl_th = lay_q["ev_p_mw"], lay_q["storage_p_mw"], lay_q["thermal_p_mw"]
        self.psl_res = slice(lay_q["thermal_r_up_mw"].start, lay_q["ev_r_dn_mw"].stop)  # the four reserves
        self.inv_eta_c_dt = 1.0 / (m.st_eta_c * dt_h)
        self.eta_d_over_dt = m.st_eta_d / dt_h
        self.ramp_dt = m.g_ramp * dt_h if m.is_td else np.zeros(0)
        for arr in vars(self).values():
            if isinstance(arr, np.ndarray):
                arr.flags.writeable = False

    def decode_vectors(self, ev_lims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x(-1), span / 2), each (B, n_action), of the decoding at a step whose station limits
        are ``ev_lims`` (2, B, n_evcs) ``[p_min, p_max]`` in MW."""
        ev_lo, ev_hi = ev_lims[0], ev_lims[1]
        n = ev_lo.shape[0]
        at_minus = np.repeat(self.lim_at_minus[None, :], n, 0)
        half = np.repeat(self.lim_half_span[None, :], n, 0)
        at_minus[:, self.sl_ev] = ev_lo
        top = np.maximum(ev_hi, ev_lo)
        top -= ev_lo
        half[:, self.sl_ev] = top * 0.5
        if self.sl_rup is not None:
            flex = np.maximum(ev_hi - ev_lo, 0.0)
            flex *= 0.5
            half[:, self.sl_rup] = flex
            half[:, self.sl_rdn] = flex
        return at_minus, half

    def decode(self, a: np.ndarray, ev_lims: np.ndarray, q_comp_mvar: np.ndarray | None) -> np.ndarray:
        """The requested dispatch (B, n_req) in the reactive layout of actions ``a`` (B, n_action):
        ``(a + 1) span / 2 + x(-1)``, with ``q_comp_mvar`` (B, n_comp) appended when the action
        carries no compensator block (zeros when None)."""
        at_minus, half = self.decode_vectors(ev_lims)
        if self.model.sizes.reactive:
            req = a + 1.0
            dec = req
        else:
            req = np.empty((a.shape[0], self.n_req))
            dec = req[:, :self.n_noq]
            np.add(a, 1.0, out=dec)
            req[:, self.n_noq:] = 0.0 if q_comp_mvar is None else q_comp_mvar
        dec *= half
        dec += at_minus
        return req

    def project(self, req: np.ndarray, ev_lims: np.ndarray, e_mwh: np.ndarray, p_last_mw: np.ndarray
                ) -> np.ndarray:
        """The projection (module docstring) of requests ``req`` (B, n_req) given the station
        limits (2, B, n_evcs), storage energies (B, n_storage) and last thermal setpoints
        (B, n_gen): the applied values (B, n_req)."""
        m = self.model
        lohi = np.repeat(self.proj_lohi[:, None, :], req.shape[0], 1)
        lohi[:, :, self.psl_ev] = ev_lims
        if m.st_p_max.shape[0]:
            lohi[0, :, self.psl_st], lohi[1, :, self.psl_st] = self.storage_limits(e_mwh)
        if m.is_td:
            dn_lim, up_lim = self.thermal_limits(p_last_mw)
            lohi[0, :, self.psl_th] = dn_lim
            lohi[1, :, self.psl_th] = np.maximum(up_lim, dn_lim)
        x = np.maximum(req, lohi[0])
        np.minimum(x, lohi[1], out=x)
        if m.is_td:
            p, ev = x[:, self.psl_th], x[:, self.psl_ev]
            room = np.concatenate((up_lim - p, p - dn_lim, ev - ev_lims[0], ev_lims[1] - ev), axis=1)
            np.maximum(room, 0.0, out=room)
            res = x[:, self.psl_res]
            np.maximum(res, 0.0, out=res)
            np.minimum(res, room, out=res)
        return x


    def storage_limits(self, e_mwh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The storage power range at energies ``e_mwh`` (any leading batch axis):
        ``(-min(p_max, e eta_d / dt), min(p_max, (e_max - e) / (eta_c dt)))``."""
        m = self.model
        return (-np.minimum(m.st_p_max, e_mwh * self.eta_d_over_dt),
                np.minimum(m.st_p_max, (m.st_e_max - e_mwh) * self.inv_eta_c_dt))

    def thermal_limits(self, p_last_mw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The thermal ramp window after setpoints ``p_last_mw`` (any leading batch axis):
        ``(down, up) = (max(p_min, P_last - ramp dt), min(p_max, P_last + ramp dt))``."""
        m = self.model
        return np.maximum(m.g_p_min, p_last_mw - self.ramp_dt), np.minimum(m.g_p_max, p_last_mw + self.ramp_dt)

    def project_thermal(self, p_mw: np.ndarray, r_up_mw: np.ndarray, r_dn_mw: np.ndarray, p_last_mw: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The thermal part of :meth:`project` on its own (any leading batch axis; new arrays,
        but the inputs themselves on a single feeder, which has no units):
        ``P`` into ``[down, max(up, down)]``, then ``r_up`` into ``[0, up - P]`` and ``r_dn``
        into ``[0, P - down]`` (rooms below 0 count as 0)."""
        if not self.model.is_td:
            return p_mw, r_up_mw, r_dn_mw
        dn_lim, up_lim = self.thermal_limits(p_last_mw)
        p = np.minimum(np.maximum(p_mw, dn_lim), np.maximum(up_lim, dn_lim))
        r_up = np.minimum(np.maximum(r_up_mw, 0.0), np.maximum(up_lim - p, 0.0))
        r_dn = np.minimum(np.maximum(r_dn_mw, 0.0), np.maximum(p - dn_lim, 0.0))
        return p, r_up, r_dn


def der_used_mw(avail_mw: np.ndarray, curtail_frac: np.ndarray) -> np.ndarray:
    """Renewable output used at curtailment shares ``c`` (projected, in ``[0, 1]``):
    ``(1 - c) P_avail`` (any leading batch axis; a new array)."""
    used = np.subtract(_ONE, curtail_frac)
    if used.shape != np.shape(avail_mw):
        return used * avail_mw
    used *= avail_mw
    return used


def storage_energy_next(model: GridModel, e_mwh: np.ndarray, p_mw: np.ndarray, dt_h: float) -> np.ndarray:
    """Storage energy after a step at power ``p`` (+ = charging; any leading batch axis):
    ``e + (eta_c max(p, 0) + min(p, 0) / eta_d) dt``, clipped to ``[0, e_max]`` (a new array)."""
    m = model
    e_new = m.st_eta_c * np.maximum(p_mw, _ZERO)
    e_new += np.minimum(p_mw, _ZERO) / m.st_eta_d
    e_new *= dt_h
    e_new += e_mwh
    np.maximum(e_new, _ZERO, out=e_new)
    np.minimum(e_new, m.st_e_max, out=e_new)
    return e_new


_ZERO = np.zeros(())   # a 0-d zero: ufuncs take it faster than a Python float (the single env's hot path)
_ONE = np.ones(())
