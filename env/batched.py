"""The grid simulator: ``B`` independent days of one grid stepped together, the physics truth
every policy is judged by (docs/design.md "Physics truth" and "Batched simulation").

``BatchedSimulator(grid, scenarios)`` plays ``len(scenarios)`` days in lockstep:
``step_action(a)`` takes a ``(B, n_action)`` array in the gym action layout (``play(req)`` a
requested dispatch in physical units) and returns a :class:`BatchedStepOutcome` whose every
field has the batch axis first. :class:`env.simulator.GridSimulator`, the one-day simulator
the gym env and the controllers use, is this simulator with ``B = 1``. One step of every day:

1. **Projection** of the dispatch onto the feasible set of the step
   (:class:`env.projection.StepProjection`): EV station power to ``[p_min, p_max]`` of its
   connected EVs; storage to ``|p| <= p_max`` and the energy limits
   ``0 <= e + (eta_c p+ - p-/eta_d) dt <= e_max``; curtailment to ``[0, 1]``; thermal
   setpoints to ``[p_min, p_max]`` and the ramp ``|P - P_last| <= ramp dt``; thermal reserves
   to ``0 <= r_up <= min(p_max - P, P_last + ramp dt - P)``,
   ``0 <= r_dn <= min(P - p_min, P - P_last + ramp dt)``; EV reserves to
   ``0 <= r_up <= P_ev - p_min``, ``0 <= r_dn <= p_max - P_ev``; compensators to
   ``[q_min, q_max]``. Every moved amount is reported per field (``projection``).
2. **EVs**: the station setpoints (after any reserve deployment) are split to the EVs by one
   :class:`env.ev_fleet.EVFleet` over the ``B x n_station`` stations of the merged sessions (day
   ``b``'s station ``s`` is station ``b n_station + s``; must-run first, then least laxity);
   storage ``e += (eta_c p+ - p-/eta_d) dt``.
3. **Feeders**: per bus ``p = load - DER used + EV + storage``, ``q = load q - compensator q``;
   the AC backward/forward sweeps of all days' feeders at once, warm-started from the last
   step, each day stopping on its own rule (:func:`env.physics.sweep.fixed_point_blocks`).
   A day whose sweep has no solution (overload) sheds its feeders' loads proportionally
   (bisection on the shed share, :func:`env.feeder_flow.shed_group`) until it converges.
4. **Single feeder**: the root buys at the time-of-use price and sells at ``price_sell``.
   **T-D**: the TSO's call on boundary ``b`` is clipped to the feeder's cleared EV reserves
   and delivered by its stations (pro rata to their ``r_up`` / ``r_dn``); the real-time
   imbalance ``D = T loads + sum head P - (thermal setpoints + T wind used)`` is covered
   (:func:`env.balancing.balance`); the days whose feeders the balancing touched are
   re-solved; the reference unit closes the residual (feeder loss changes) within its limits
   (:func:`env.balancing.settle_reference`: an excess goes to the other units, then to
   spilling transmission wind or shedding transmission loads, and only what is left stays
   outside its limits, recorded as ``violations["ref_unit_limit_mw"]`` and priced); DC flows
   by PTDF.
5. **Costs** (tariff currency; energy = MW x dt): :data:`env.step_outcome.COST_KEYS`, by
   :func:`env.step_outcome.energy_terms` and :func:`env.step_outcome.cost_breakdown`.

Energy balance holds per feeder (``head P + DER used = load served + losses + storage +
EV``, to the sweep tolerance) and on the transmission network (``thermal + wind used =
T loads served + sum head P``). Day ``b`` of a batch equals the same day simulated alone, to
floating-point rounding (BLAS may sum in another order for a wider matrix;
``tests/env/test_batched.py`` checks every field on random actions, every case).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from env.balancing import TOL_MW, balance, imbalance_mw, initial_thermal, settle_reference, tso_call
from env.day_data import DayData, day_arrays
from env.ev_fleet import EVFleet
from env.evcs import EVStepResult
from env.fastpath import unchecked
from env.feeder_flow import head_and_losses, shed_group, voltage_violation_pu
from env.grid_model import GridModel
from env.network import Grid
from env.projection import StepProjection, der_used_mw, storage_energy_next
from env.physics.sweep import V_COLLAPSE_PU, fixed_point_blocks
from env.simulator_settings import SimulatorSettings
from env.step_outcome import boundary_violation_mw, cost_breakdown, curtailment_mwh, energy_terms
from scenarios import EVSessions

__all__ = ["BatchedSimulator", "BatchedStepOutcome", "merge_sessions"]

_ALL = slice(None)   # every day of the batch, as rows (views, not copies)
_rsum, _rmax = np.add.reduce, np.maximum.reduce   # = ndarray.sum / max(axis), without the Python wrapper



@dataclass(frozen=True)
class BatchedStepOutcome:
    """One step of ``B`` days: every array has the batch axis first (``(B,)`` or ``(B, n)``);
    the fields mean what :class:`env.step_outcome.StepOutcome`'s do. ``cost`` and
    ``violations`` map each key of ``COST_KEYS`` / ``VIOLATION_KEYS`` to a ``(B,)`` array."""

    step: int
    ev: EVStepResult
    cost: dict[str, np.ndarray]
    violations: dict[str, np.ndarray]
    setpoints: dict[str, np.ndarray]
    projection: dict[str, np.ndarray]
    load_p_mw: np.ndarray
    load_served_mw: np.ndarray
    der_used_mw: np.ndarray
    storage_p_mw: np.ndarray
    storage_e_mwh: np.ndarray
    ev_p_mw: np.ndarray
    thermal_p_mw: np.ndarray
    head_p_mw: np.ndarray
    head_q_mvar: np.ndarray
    loss_mw: np.ndarray
    v_pu: np.ndarray
    v_min_pu: np.ndarray
    v_max_pu: np.ndarray
    line_p_mw: np.ndarray
    line_loading: np.ndarray
    imbalance_mw: np.ndarray
    residual_mw: np.ndarray
    tso_requirement_mw: np.ndarray
    tso_delivered_mw: np.ndarray
    boundary_violation_mw: np.ndarray
    import_mw: np.ndarray


def merge_sessions(sessions: Sequence[EVSessions], n_station: int) -> EVSessions:
    """The EV sessions of several days as one table: day ``b``'s station ``s`` becomes station
    ``b n_station + s``; sorted by arrival step, then day, then station, then the day's own order."""
    fields = ("station", "arrival_step", "departure_step", "e_arrival_kwh", "e_request_kwh",
              "e_capacity_kwh", "p_max_kw", "efficiency")
    cols = {f: np.concatenate([np.asarray(getattr(s, f)) for s in sessions]) for f in fields}
    day = np.concatenate([np.full(len(s), b) for b, s in enumerate(sessions)])
    cols["station"] = cols["station"] + n_station * day
    # by (arrival, station, position): one stable sort of the key arrival x stations + station
    key = cols["arrival_step"].astype(np.int64) * (n_station * len(sessions)) + cols["station"]
    order = np.argsort(key, kind="stable")
    return EVSessions(**{f: v[order] for f, v in cols.items()})


class BatchedSimulator:
    """``B`` days of one grid stepped together (module docstring).

    Args:
        grid: the grid.
        scenarios: the days (``scenarios.day.Scenario`` of this grid, same step length).
        settings: :class:`SimulatorSettings` (defaults when None).
        model: a prebuilt :class:`GridModel` of ``grid``.
        projection: a prebuilt :class:`env.projection.StepProjection` of ``model`` at the days'
            step length, shared by many simulators (built when None or when it does not match).

    Raises:
        ValueError: no scenario, days of different lengths, a model of another grid or a
            scenario of another layout.
    """

    def __init__(self, grid: Grid, scenarios: Sequence[Any], settings: SimulatorSettings | None = None,
                 model: GridModel | None = None, projection: StepProjection | None = None) -> None:
        if not scenarios:
            raise ValueError("BatchedSimulator: at least one scenario is needed")
        self.grid = grid
        self.model = m = model if model is not None else GridModel(grid)
        if m.grid is not grid:
            raise ValueError("BatchedSimulator: model was built for another grid")
        self.settings = cfg = settings or SimulatorSettings()
        try:
            batch = day_arrays(m, scenarios, cfg.forecast_horizon_h)     # (T, B, ...) arrays of all days
        except ValueError as err:
            raise ValueError(f"BatchedSimulator: {err}") from None
        self.days = days = [DayData(m, sc, cfg.forecast_horizon_h, batch, b) for b, sc in enumerate(scenarios)]
        d0 = days[0]
        self.n_batch = B = len(days)
        # read-only constants of the outcome (a step with nothing shed, a feeder with no lines)
        self._zero_b, self._nan_b, self._empty_b0 = _ro(np.zeros(B)), _ro(np.full(B, math.nan)), _ro(np.zeros((B, 0)))
        self.n_steps, self.dt_h = d0.n_steps, d0.dt_h
        if projection is None or projection.model is not m or projection.dt_h != self.dt_h:
            projection = StepProjection(m, self.dt_h)
        self.projection = projection   # env.projection: decoding and projection, batch axis first

        self.load_p, self.s_load_pu, self.der_avail = batch["load_p"], batch["s_load_fb_pu"], batch["der_avail"]
        self.der_avail_sum, self.tso = batch["der_avail_sum"], batch["tso"]
        self.pv_pu, self.wind_pu, self.fc_rows = batch["pv_pu"], batch["wind_pu"], batch["fc_rows"]
        self.price_list = d0.price_list                 # the tariff's: the same for every day
        self.price_sell = float(grid.tariff.price_sell_per_mwh)
        self.ev_reserve_price = (m.ev_reserve_price_default if cfg.ev_reserve_price_per_mwh is None
                                 else float(cfg.ev_reserve_price_per_mwh))
        self.n_station = ns = max(len(m.evcs_ports), 1)
        sessions = scenarios[0].ev if B == 1 else merge_sessions([sc.ev for sc in scenarios], ns)
        self.fleet = EVFleet(sessions, B * ns, self.dt_h, self.n_steps, v2g=cfg.v2g,
                             enforce_must_run=cfg.enforce_must_run)
        self._lay = dict(m.sizes_q.layout())
        # per sweep group, (n, B, k) flat indices of its covered buses in the (B, N_fb) injection
        self._take = [g.idx_cov[:, None, :] + (m.n_fb * np.arange(B))[:, None] for g in m.groups]
        self._init_state()

    def _init_state(self) -> None:
        """Before the day: storage at its initial energy, thermal units at
        :func:`env.balancing.initial_thermal`, the voltages of step 0's loads and DERs with the
        controls at zero (from a flat start); nothing called, no flows, compensators at 0."""
        m, B = self.model, self.n_batch
        self.t = 0
        self._ev_lims_t = -1
        self.e_mwh = np.tile(m.st_e_init.astype(float), (B, 1))
        self.p_last = np.stack([initial_thermal(m, d.load_p[0], d.der_avail[0]) for d in self.days])
        self.tso_last = np.zeros((B, m.n_boundary))
        self.line_loading = np.zeros((B, m.n_line))
        self.q_last = np.zeros((B, m.sizes.n_comp))
        self.v_groups = [np.full((g.idx_cov.shape[0], B * g.idx_cov.shape[1]), g.v0, dtype=complex)
                         for g in m.groups]
        rows = _ALL
        shed_f = np.zeros((B, m.n_feeder))
        zeros = {"storage_p_mw": np.zeros((B, m.sizes.n_storage)), "q_comp_mvar": self.q_last,
                 "tie_p_mw": np.zeros((B, m.n_tie))}
        sol = self._solve(self._injection(rows, np.zeros((B, m.sizes.n_evcs)), zeros,
                                          self.der_avail[0][:, :m.n_der_f], shed_f), rows, shed_f)
        self.v_groups, self.vm = sol["v"], sol["vm"]
        self.v_min, self.v_max = _feeder_min_max(m, self.vm)
        self._freeze_state()

    def _freeze_state(self) -> None:
        """The state arrays are read-only (observations hand out views of them)."""
        for a in (self.e_mwh, self.p_last, self.tso_last, self.line_loading, self.q_last, self.vm, self.v_min,
                  self.v_max):
            a.flags.writeable = False

    @property
    def done(self) -> bool:
        return self.t >= self.n_steps

    # ------------------------------------------------------------------ observation
    def ev_limits_mw(self) -> np.ndarray:
        """(2, B, n_station) ``p_min, p_max`` of the stations at the current step (MW; cached per
        step, not to be modified)."""
        if self._ev_lims_t != self.t:
            self._ev_lims = self.fleet._limits_mw(self.t).reshape(2, self.n_batch, self.n_station)
            self._ev_lims_t = self.t
        return self._ev_lims

    def observation_parts(self) -> dict[str, np.ndarray]:
        """The raw (unscaled) observation of every day, per key of
        :class:`env.observation.ObservationEncoder` (batch axis first): what
        :meth:`GridSimulator.observe` gives each day (after the last step: the last step's
        data, no EVs)."""
        t, n, B = self.t, self.n_steps, self.n_batch
        tc = min(t, n - 1)
        if t < n:
            bd = self.fleet.bounds(t)
            r = lambda a: np.asarray(a, dtype=float).reshape(B, -1)   # noqa: E731
            need = np.maximum(r(bd.e_target_kwh) - r(bd.e_kwh), 0.0)
            ev = np.concatenate((r(bd.p_min_kw), r(bd.p_max_kw), r(bd.n_connected), need), axis=1)
        else:
            ev = np.zeros((B, 4 * self.n_station))
        return {"load": self.load_p[tc], "pv": self.pv_pu[tc], "wind": self.wind_pu[tc], "ev": ev,
                "storage_soc": self.e_mwh, "voltage": self.vm, "forecast": self.fc_rows[tc].reshape(B, -1),
                "thermal": self.p_last, "line_loading": self.line_loading, "boundary": self.tso_last}

    # ------------------------------------------------------------------ the step
    def step_action(self, a: np.ndarray, q_comp_mvar: np.ndarray | None = None) -> BatchedStepOutcome:
        """Play the current step of every day with actions ``a`` (B, n_action) in the flat
        layout (finite; the caller checks), compensators at ``q_comp_mvar`` (B, n_comp) when
        the action carries none (zeros when None), and advance. Decodes
        ``(a + 1) span / 2 + x(-1)`` (:meth:`env.projection.StepProjection.decode`)."""
        self._require_running()
        return self.play(self.projection.decode(a, self.ev_limits_mw(), q_comp_mvar))

    def project(self, req: np.ndarray) -> np.ndarray:
        """(B, n_req) the requested dispatch ``req`` (flat, reactive layout: ``q_comp_mvar``
        last) projected onto each day's feasible set of the current step (module docstring,
        stage 1); nothing changes."""
        self._require_running()
        return self.projection.project(req, self.ev_limits_mw(), self.e_mwh, self.p_last)

    def play(self, req: np.ndarray) -> BatchedStepOutcome:
        """Project the requested dispatch ``req`` (B, n_req) (flat, reactive layout), simulate
        and account every day (module docstring, stages 1-5), and advance."""
        x = self.project(req)
        diff = x - req
        lay = self._lay
        xs = {name: x[:, sl] for name, sl in lay.items()}
        r = self._step_td(xs) if self.model.is_td else self._step_feeder(xs)
        return self._finish(xs, {name: diff[:, sl] for name, sl in lay.items()}, r)

    def _require_running(self) -> None:
        if self.t >= self.n_steps:
            raise RuntimeError(f"BatchedSimulator: the days are over (step {self.t} of {self.n_steps})")

    # .................................................................. feeders
    def _injection(self, rows: Any, ev_mw: np.ndarray, x: dict[str, np.ndarray], der_f: np.ndarray,
                   shed_f: np.ndarray) -> np.ndarray:
        """(b, N_fb) stacked complex net consumption (p.u.) of the days ``rows``
        (``control_injection_pu`` plus the loads kept at ``1 - shed``)."""
        m = self.model
        s = m.control_injection_pu(np.concatenate((ev_mw, x["storage_p_mw"][rows], der_f), axis=1),
                                   x["q_comp_mvar"][rows], x["tie_p_mw"][rows] if m.n_tie else None)
        s += self._loads_kept(rows, shed_f)
        return s

    def _loads_kept(self, rows: Any, shed_f: np.ndarray) -> np.ndarray:
        """(b, N_fb) the feeder loads' injection (p.u.) of the days ``rows`` at ``1 - shed`` of
        their feeder's share (the day's own array when nothing is shed: not to be modified)."""
        s_load = self.s_load_pu[self.t][rows]
        return s_load * (1.0 - shed_f[:, self.model.bus_feeder]) if shed_f.any() else s_load

    def _solve(self, s: np.ndarray, rows: np.ndarray | slice, shed_f: np.ndarray) -> dict[str, Any]:
        """AC sweeps of the days ``rows`` from their last voltages: all their feeders at once
        (:func:`env.physics.sweep.fixed_point_blocks`, one block per day); a day whose group
        fails (no convergence, non-finite, or a bus below ``V_COLLAPSE_PU``) has that group's
        feeders solved alone with load shedding (``s`` and ``shed_f`` updated in place)."""
        m, cfg = self.model, self.settings
        nb, B = s.shape[0], self.n_batch
        every = nb == B                              # all days, in order
        vm = np.empty((nb, m.n_fb))
        flows = np.empty((4, nb, m.n_feeder))        # head P, head Q, loss P, loss Q
        v_out = []
        for gi, g in enumerate(m.groups):
            n, k = g.idx_cov.shape
            take = self._take[gi] if every else (g.idx_cov[:, None, :] + (m.n_fb * np.arange(nb))[:, None])
            s_conj = s.take(take.reshape(n, nb * k))  # (n, nb k): day-major columns
            np.conjugate(s_conj, out=s_conj)
            if g.slack_row >= 0:
                s_conj[g.slack_row] = 0.0
            start = (self.v_groups[gi].copy() if every
                     else self.v_groups[gi].reshape(n, B, k)[:, rows].reshape(n, nb * k))
            v, i_bus, ok = fixed_point_blocks(g.dlf.dot, g.v0, s_conj, start, cfg.sweep_tol_pu,
                                              cfg.sweep_max_iter, k)
            av = np.abs(v)
            if av.min() < V_COLLAPSE_PU + 1e-9:      # screens the exact test |V|^2 < V_COLLAPSE^2
                ok &= ~((v.real * v.real + v.imag * v.imag) < V_COLLAPSE_PU ** 2).reshape(n, nb, k).any(axis=(0, 2))
            if not ok.all():
                load = self._loads_kept(rows, shed_f)
                for j in np.flatnonzero(~ok):        # shed this day's load
                    vj, ij = shed_group(g, s[j], load[j], shed_f[j], cfg.sweep_tol_pu, cfg.sweep_max_iter)
                    v[:, j * k:(j + 1) * k] = vj
                    i_bus[:, j * k:(j + 1) * k] = ij
                av = np.abs(v)
            v_out.append(v)
            if g.slack_row < 0:
                vm[:, g.idx] = abs(g.v0)
            vm[:, g.idx_cov] = av.reshape(n, nb, k).transpose(1, 0, 2)
            s_head, lp_g, lq_g = head_and_losses(g, i_bus)
            flows[:, :, g.feeders] = np.stack((s_head.real, s_head.imag, lp_g, lq_g)).reshape(4, nb, k)
        return {"vm": vm, "v": v_out, "hp": flows[0], "hq": flows[1], "lp": flows[2], "lq": flows[3]}

    def _merge(self, sol: dict[str, Any], rows: np.ndarray | slice, part: dict[str, Any]) -> None:
        """Write the re-solved days ``rows`` (``part``) into ``sol``."""
        if isinstance(rows, slice):               # every day re-solved
            sol.update(part)
            return
        for key in ("vm", "hp", "hq", "lp", "lq"):
            sol[key][rows] = part[key]
        for gi, g in enumerate(self.model.groups):
            n, k = g.idx_cov.shape
            sol["v"][gi].reshape(n, self.n_batch, k)[:, rows] = part["v"][gi].reshape(n, rows.shape[0], k)

    def _step_feeder(self, x: dict[str, np.ndarray]) -> dict[str, Any]:
        m, t, B = self.model, self.t, self.n_batch
        res = self.fleet.step(t, (x["ev_p_mw"] * 1e3).reshape(-1))
        ev = res.p_kw.reshape(B, -1) * 1e-3
        der_used = der_used_mw(self.der_avail[t], x["der_curtail_frac"])
        shed_f = np.zeros((B, m.n_feeder))
        rows = _ALL
        s = self._injection(rows, ev, x, der_used[:, :m.n_der_f], shed_f)
        z, e0 = self._zero_b, self._empty_b0
        return {"fleet": res, "ev": ev, "der_used": der_used, "sol": self._solve(s, rows, shed_f),
                "shed_f": shed_f, "shed_t": z, "thermal": e0, "imbalance": z, "residual": z,
                "tso_delivered": e0, "backoff": z, "unbalanced": z, "line_p": e0, "ref_limit": z}

    # .................................................................. T-D
    def _step_td(self, x: dict[str, np.ndarray]) -> dict[str, Any]:
        m, t, B = self.model, self.t, self.n_batch
        nd_f, nl_f = m.n_der_f, m.n_load_f
        call, dev = tso_call(m, self.tso[t], x["ev_r_up_mw"], x["ev_r_dn_mw"])
        der_used = der_used_mw(self.der_avail[t], x["der_curtail_frac"])
        ev1 = x["ev_p_mw"] + dev
        shed_f = np.zeros((B, m.n_feeder))
        rows = _ALL
        sol = self._solve(self._injection(rows, ev1, x, der_used[:, :nd_f], shed_f), rows, shed_f)
        load_t = self.load_p[t][:, nl_f:]
        load_t_mw = _rsum(load_t, 1)
        load_f_mw = _rsum(self.load_p[t][:, :nl_f], 1)
        imbalance = imbalance_mw(load_t_mw, _rsum(sol["hp"], 1), _rsum(x["thermal_p_mw"], 1),
                                 _rsum(der_used[:, nd_f:], 1))
        bal = balance(m, imbalance, x, dev, der_used, load_t_mw, load_f_mw)
        thermal, dev2, der_used = bal["thermal"], bal["dev"], bal["der_used"]
        shed_t, shed_fb, changed = bal["shed_t"], bal["shed_f"], bal["feeder_changed"]
        backoff, unbalanced = bal["backoff"], bal["unbalanced"]
        ev_set = x["ev_p_mw"] + dev2
        res = self.fleet.step(t, (ev_set * 1e3).reshape(-1))
        ev = res.p_kw.reshape(B, -1) * 1e-3
        changed |= (shed_fb > 0) | (np.abs(ev - ev1).max(axis=1, initial=0.0) > 1e-12)
        idx = np.flatnonzero(changed)
        if idx.size:                             # re-solve the days the balancing changed
            rows = _ALL if idx.size == B else idx
            shed_f[rows] = 1.0 - (1.0 - shed_f[rows]) * (1.0 - shed_fb[rows, None])
            sub_shed = shed_f[rows]
            s2 = self._injection(rows, ev[rows], x, der_used[rows, :nd_f], sub_shed)
            self._merge(sol, rows, self._solve(s2, rows, sub_shed))
            shed_f[rows] = sub_shed
        served_t = load_t * (1.0 - shed_t)[:, None]
        residual = _rsum(served_t, 1) + _rsum(sol["hp"], 1) - _rsum(thermal, 1) - _rsum(der_used[:, nd_f:], 1)
        k = m.ref_unit
        thermal[:, k] += residual
        ref_limit = np.zeros(B)
        outside = ~((m.g_p_min[k] - TOL_MW <= thermal[:, k]) & (thermal[:, k] <= m.g_p_max[k] + TOL_MW))
        for b in np.flatnonzero(outside):
            shed_t[b], ref_limit[b] = settle_reference(m, thermal[b], der_used[b], load_t[b], float(shed_t[b]))
            served_t[b] = load_t[b] * (1.0 - shed_t[b])
        inj = np.concatenate((thermal, der_used[:, nd_f:], served_t, sol["hp"]), axis=1) @ m.m_inj_t.T
        line_p = m.dc.flows_pu((inj / m.base_mva_t).T).T * m.base_mva_t
        miss = (ev - ev_set) @ m.f_ev.T
        return {"fleet": res, "ev": ev, "der_used": der_used, "sol": sol, "shed_f": shed_f, "shed_t": shed_t,
                "thermal": thermal, "imbalance": imbalance, "residual": residual, "tso_delivered": call - miss,
                "backoff": backoff, "unbalanced": unbalanced, "line_p": line_p, "ref_limit": ref_limit}

    # .................................................................. accounting
    def _finish(self, x: dict[str, np.ndarray], proj: dict[str, np.ndarray], r: dict[str, Any]) -> BatchedStepOutcome:
        """Storage, served load, violations and :meth:`_costs` of every day; advance."""
        m, t, dt, B = self.model, self.t, self.dt_h, self.n_batch
        sol = r["sol"]
        p_st = x["storage_p_mw"]
        e_new = storage_energy_next(m, self.e_mwh, p_st, dt)
        load = self.load_p[t]
        served = load.copy()
        if r["shed_f"].any() or r["shed_t"].any():
            served[:, :m.n_load_f] *= 1.0 - r["shed_f"][:, m.load_feeder]
            served[:, m.n_load_f:] *= (1.0 - r["shed_t"])[:, None]
            shed_mwh = (_rsum(load, 1) - _rsum(served, 1)) * dt
        else:                                       # nothing shed (the usual step)
            shed_mwh = self._zero_b
        vm = sol["vm"]
        viol = voltage_violation_pu(vm, m.vmin_fb, m.vmax_fb)
        ev, der_used, head = r["ev"], r["der_used"], sol["hp"]
        ev_mwh = _rsum(ev, 1) * dt
        unmet_kwh = _rsum(r["fleet"].unmet_kwh.reshape(B, -1), 1)
        curt_mwh = curtailment_mwh(self.der_avail_sum[t], _rsum(der_used, 1), r["backoff"], dt)
        v_puh = _rsum(viol, 1) * dt
        head_mw = _rsum(head, 1)
        if m.is_td:
            req = self.tso[t]
            bviol = boundary_violation_mw(req, r["tso_delivered"])
            bviol_mwh = _rsum(bviol, 1) * dt
            line_p = r["line_p"]
            loading = np.abs(line_p) * m.inv_rate
            loading_max = loading.max(axis=1) if m.any_rated else np.full(B, math.nan)
        else:
            req, line_p, loading, bviol = self._empty_b0, r["line_p"], self._empty_b0, self._empty_b0
            bviol_mwh, loading_max = self._zero_b, self._nan_b
        cost = self._costs(x, r, der_used, p_st, ev_mwh, unmet_kwh, shed_mwh, curt_mwh, v_puh, bviol_mwh, head_mw)
        violations = {
            "voltage_puh": v_puh, "voltage_worst_pu": _rmax(viol, 1),
            "voltage_buses": _rsum(viol > 0.0, 1, dtype=float), "load_shed_mwh": shed_mwh,
            "curtailment_mwh": curt_mwh, "ev_unmet_kwh": unmet_kwh,
            "boundary_violation_mwh": bviol_mwh,
            "line_overload_max": np.maximum(loading_max - 1.0, 0.0) if m.any_rated else self._zero_b,
            "unbalanced_mw": r["unbalanced"], "ref_unit_limit_mw": r["ref_limit"],
        }
        v_min, v_max = _feeder_min_max(m, vm)
        if not np.isfinite(cost["total"]).all():
            raise ValueError(f"BatchedStepOutcome.cost: total is {cost['total']}")
        out = unchecked(BatchedStepOutcome, dict(
            step=t, ev=r["fleet"], cost=cost, violations=violations, setpoints=x, projection=proj, load_p_mw=load,
            load_served_mw=served, der_used_mw=der_used, storage_p_mw=p_st, storage_e_mwh=e_new, ev_p_mw=ev,
            thermal_p_mw=r["thermal"], head_p_mw=head, head_q_mvar=sol["hq"], loss_mw=sol["lp"], v_pu=vm,
            v_min_pu=v_min, v_max_pu=v_max, line_p_mw=line_p, line_loading=loading, imbalance_mw=r["imbalance"],
            residual_mw=r["residual"], tso_requirement_mw=req, boundary_violation_mw=bviol,
            tso_delivered_mw=r["tso_delivered"], import_mw=head_mw))
        # advance
        self.t = t + 1
        self.e_mwh = e_new
        if m.is_td:
            self.p_last, self.tso_last, self.line_loading = x["thermal_p_mw"].copy(), req, loading
        self.v_groups, self.vm, self.v_min, self.v_max = sol["v"], vm, v_min, v_max
        self.q_last = x["q_comp_mvar"]
        self._freeze_state()
        return out

    def _costs(self, x: dict[str, np.ndarray], r: dict[str, Any], der_used: np.ndarray, p_st: np.ndarray,
               ev_mwh: np.ndarray, unmet_kwh: np.ndarray, shed_mwh: np.ndarray, curt_mwh: np.ndarray,
               v_puh: np.ndarray, bviol_mwh: np.ndarray, head_mw: np.ndarray) -> dict[str, np.ndarray]:
        """The cost breakdown (:data:`env.step_outcome.COST_KEYS`) of every day:
        :func:`env.step_outcome.energy_terms`, then :func:`env.step_outcome.cost_breakdown`."""
        m, dt = self.model, self.dt_h
        ev_res = _rsum(x["ev_r_up_mw"] + x["ev_r_dn_mw"], 1) if m.is_td else 0.0
        bought, sold, fuel, spillage, reserves, boundary_energy = energy_terms(
            m, dt, self.price_list[self.t], self.price_sell, head_mw, r.get("thermal"), x["thermal_r_up_mw"],
            x["thermal_r_dn_mw"], ev_res, self.ev_reserve_price)
        return cost_breakdown(self.grid.tariff, dt, bought, sold, fuel, spillage, reserves, boundary_energy, ev_mwh,
                              der_used @ m.der_cost, _rsum(np.abs(p_st), 1), curt_mwh, shed_mwh, unmet_kwh,
                              v_puh, bviol_mwh, r["ref_limit"])


def _ro(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _feeder_min_max(model: GridModel, vm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, n_feeder) each feeder's lowest and highest bus voltage magnitude of ``vm`` (B, N_fb)."""
    return np.minimum.reduceat(vm, model.fb_offset, axis=1), np.maximum.reduceat(vm, model.fb_offset, axis=1)
