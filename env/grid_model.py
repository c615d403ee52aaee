"""The compiled grid model: everything about a grid that does not change during a day.

:class:`GridModel` stacks the feeders' buses into one vector, builds the dense incidence
matrices of loads, DER, EV stations, storage and compensators onto it, groups the feeders
that share a topology into batched radial sweeps (``env.physics.sweep``), builds the
transmission network's DC model and collects the cost coefficients. It is built once per grid
and shared by every simulator of that grid (docs/design.md, "Physics truth").
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from env.dispatch import DispatchSizes
from env.network import Grid, Network
from env.physics.dc import DCModel
from env.physics.sweep import RadialSweep

__all__ = ["GridModel"]


def _incidence(n_rows: int, rows: np.ndarray) -> np.ndarray:
    """Dense (n_rows, len(rows)) 0/1 matrix with a one at (rows[j], j)."""
    m = np.zeros((n_rows, rows.shape[0]))
    m[rows, np.arange(rows.shape[0])] = 1.0
    return m


class _SweepGroup:
    """Feeders sharing one topology, solved together (one column each), warm-started.

    Uses the kernel's matrices (``RadialSweep.dlf`` / ``.bibc``) over the buses they cover:
    all buses (slack row/column zero) or the non-slack buses, whichever the kernel provides.
    """

    def __init__(self, sweep: RadialSweep, feeders: list[int], offsets: np.ndarray, v_slack_pu: float,
                 base_mva: float) -> None:
        self.sweep = sweep
        self.name = sweep.name
        self.feeders = np.array(feeders, dtype=np.intp)
        n_bus, slack = sweep.n_bus, sweep.slack_bus
        full = sweep.dlf.shape == (n_bus, n_bus)
        if not full and sweep.dlf.shape != (n_bus - 1, n_bus - 1):
            raise ValueError(f"GridModel: unexpected DLF shape {sweep.dlf.shape} of feeder {sweep.name}")
        # buses the kernel's matrices cover, in their order
        self.buses = np.arange(n_bus) if full else np.delete(np.arange(n_bus), slack)
        self.dlf = np.ascontiguousarray(sweep.dlf)
        self.bibc = np.ascontiguousarray(np.asarray(sweep.bibc)[:, self.buses] if sweep.bibc.shape[1] == n_bus
                                         else sweep.bibc)
        # (n_bus, K) gather index into the stacked feeder-bus vector, and the covered part
        self.idx = offsets[self.feeders][None, :] + np.arange(n_bus)[:, None]
        self.idx_cov = self.idx[self.buses]
        self.slack_row = int(np.flatnonzero(self.buses == slack)[0]) if full else -1
        self.v0 = complex(v_slack_pu)
        self.base_mva = float(base_mva)
        self.r = np.asarray(sweep.r_pu)
        self.x = np.asarray(sweep.x_pu)
        self.slack = slack
        self.k = int(self.feeders.shape[0])
        self.n_cov = int(self.buses.shape[0])
        self.head_scale = np.full((), self.v0 * self.base_mva)
        self.base0 = np.full((), self.base_mva)
        for value in vars(self).values():
            if isinstance(value, np.ndarray):
                value.flags.writeable = False


class GridModel:
    """Everything about a grid that does not change during a day, precomputed once.

    Index maps (dense incidence matrices onto the stacked feeder-bus vector), the sweep
    groups, the DC model and the cost coefficients. Immutable after construction and
    shared by every simulator of the grid (the env builds it once).
    """

    def __init__(self, grid: Grid, reactive: bool = False) -> None:
        self.grid = grid
        self.sizes = DispatchSizes.from_grid(grid, reactive=reactive)
        self.sizes_q = replace(self.sizes, reactive=True)
        self.sizes_no_q = replace(self.sizes, reactive=False)
        self.tariff = grid.tariff
        feeders = grid.feeders
        self.n_feeder = len(feeders)
        self._check_supported(grid)
        n_bus = np.array([f.n_bus for f in feeders])
        self.fb_offset = np.concatenate(([0], np.cumsum(n_bus)[:-1])).astype(np.intp)
        self.n_fb = int(n_bus.sum())
        self.feeder_bus_slices = tuple(slice(int(o), int(o + n)) for o, n in zip(self.fb_offset, n_bus))
        self.bus_feeder = np.repeat(np.arange(self.n_feeder), n_bus).astype(np.intp)
        if sum(len(f.evcs) for f in feeders) == 0:
            raise ValueError(f"GridModel: grid {grid.name} has no EV station (at least one is required)")
        self._stack_feeder_items(feeders)
        self._stack_ties(grid)
        self._build_groups(feeders)
        self._build_transmission(grid)
        self._build_costs(grid)
        for name, value in vars(self).items():
            if isinstance(value, np.ndarray):
                value.flags.writeable = False

    @staticmethod
    def _check_supported(grid: Grid) -> None:
        for f in grid.feeders:
            if len(f.gen):
                raise ValueError(f"GridModel: feeder {f.name} has thermal units; only the transmission may")
        t = grid.transmission
        if t is not None and (len(t.storage) or len(t.evcs) or len(t.compensator)):
            raise ValueError(f"GridModel: storage, EV stations and compensators on the transmission "
                             f"network {t.name} are not supported")

    def _stack(self, feeders: tuple[Network, ...], table: str) -> tuple[np.ndarray, np.ndarray]:
        """(stacked bus index, feeder index) of every row of a feeder table, in feeder order."""
        bus = [self.fb_offset[k] + getattr(f, table).bus for k, f in enumerate(feeders)]
        owner = [np.full(len(getattr(f, table)), k) for k, f in enumerate(feeders)]
        return np.concatenate(bus).astype(np.intp), np.concatenate(owner).astype(np.intp)

    def _stack_ties(self, grid: Grid) -> None:
        """Tie lines between feeders (docs/flexibility.md §6): a controllable, lossless transfer
        ``p`` (+ = from ``from_feeder``'s bus to ``to_feeder``'s bus) is a consumption at the sending
        bus and an injection at the receiving one, so each feeder stays radial for its sweep:
        ``tie_inc`` (N_fb, n_tie) maps the transfer onto the stacked feeder buses (consumption > 0)."""
        ties = grid.tie_lines
        self.n_tie = len(ties)
        self.tie_p_max = np.array([t.p_max_mw for t in ties], dtype=float)
        col = np.zeros((self.n_fb, self.n_tie))
        for j, t in enumerate(ties):
            col[self.fb_offset[t.from_feeder] + t.from_bus, j] += 1.0
            col[self.fb_offset[t.to_feeder] + t.to_bus, j] -= 1.0
        self.tie_inc = col                              # (N_fb, n_tie): +1 sending bus, -1 receiving bus

    def _stack_feeder_items(self, feeders: tuple[Network, ...]) -> None:
        n_fb, nf = self.n_fb, self.n_feeder
        load_bus, self.load_feeder = self._stack(feeders, "load")
        self.n_load_f = load_bus.shape[0]
        der_bus, self.der_feeder = self._stack(feeders, "der")
        self.n_der_f = der_bus.shape[0]
        ev_bus, self.ev_feeder = self._stack(feeders, "evcs")
        st_bus, self.st_feeder = self._stack(feeders, "storage")
        comp_bus, _ = self._stack(feeders, "compensator")
        self.m_load = _incidence(n_fb, load_bus)                    # (N_fb, n_load_f)
        self.load_bus_f = load_bus                                    # stacked bus of each feeder load
        self._load_bus_distinct = bool(np.unique(load_bus).shape[0] == load_bus.shape[0])
        # controllable active power onto buses: [EV, storage, -DER used on feeders]
        self.m_ctrl = np.hstack([_incidence(n_fb, ev_bus), _incidence(n_fb, st_bus), -_incidence(n_fb, der_bus)])
        self.m_ev, self.m_der = _incidence(n_fb, ev_bus), _incidence(n_fb, der_bus)   # (N_fb, n_evcs), (N_fb, n_der_f)
        self.m_comp = _incidence(n_fb, comp_bus)
        self.f_load = _incidence(nf, self.load_feeder)              # (n_feeder, n_load_f) sums per feeder
        self.f_der = _incidence(nf, self.der_feeder)
        self.f_ev = _incidence(nf, self.ev_feeder)
        self.f_st = _incidence(nf, self.st_feeder)
        self.inv_base_fb = np.concatenate([np.full(f.n_bus, 1.0 / f.base_mva) for f in feeders])
        self.vmin_fb = np.concatenate([f.bus.vmin_pu for f in feeders])
        self.vmax_fb = np.concatenate([f.bus.vmax_pu for f in feeders])
        cat = np.concatenate
        self.st_p_max = cat([f.storage.p_max_mw for f in feeders])
        self.st_e_max = cat([f.storage.e_max_mwh for f in feeders])
        self.st_eta_c = cat([f.storage.eta_charge for f in feeders])
        self.st_eta_d = cat([f.storage.eta_discharge for f in feeders])
        self.st_e_init = cat([f.storage.e_init_mwh for f in feeders])
        self.q_min = cat([f.compensator.q_min_mvar for f in feeders])
        self.q_max = cat([f.compensator.q_max_mvar for f in feeders])
        self.evcs_ports = cat([f.evcs.n_ports for f in feeders]).astype(int)
        self.load_peak_f = self.f_load @ cat([f.load.p_mw for f in feeders])  # (n_feeder,)
        self.load_q_base = cat([f.load.q_mvar for f in feeders])      # extended with the T loads below

    def _build_groups(self, feeders: tuple[Network, ...]) -> None:
        groups: dict[tuple, list[int]] = {}
        for k, f in enumerate(feeders):
            br = f.branch
            key = (f.n_bus, f.slack_bus, f.v_slack_pu, f.base_mva, br.from_bus.tobytes(), br.to_bus.tobytes(),
                   br.r_pu.tobytes(), br.x_pu.tobytes())
            groups.setdefault(key, []).append(k)
        self.groups: list[_SweepGroup] = []
        for ks in groups.values():
            f = feeders[ks[0]]
            sweep = RadialSweep.build(f.branch.from_bus, f.branch.to_bus, f.branch.r_pu, f.branch.x_pu,
                                      f.n_bus, f.slack_bus, name=f.name)
            self.groups.append(_SweepGroup(sweep, ks, self.fb_offset, f.v_slack_pu, f.base_mva))

    def _build_transmission(self, grid: Grid) -> None:
        t = grid.transmission
        self.is_td = t is not None
        self.n_boundary = len(grid.boundary_bus)
        if t is None:
            self.dc = None
            self.n_gen = self.n_load_t = self.n_der_t = self.n_line = 0
            self.ref_unit = -1
            self.load_peak_t = 0.0
            self.any_rated = False
            return
        self.dc = DCModel.build(t.branch.from_bus, t.branch.to_bus, t.branch.x_pu, t.branch.tap,
                                t.branch.shift_rad, n_bus=t.n_bus, slack_bus=t.slack_bus)
        self.base_mva_t = float(t.base_mva)
        self.n_gen, self.n_load_t, self.n_der_t, self.n_line = len(t.gen), len(t.load), len(t.der), len(t.branch)
        if self.n_gen == 0:
            raise ValueError(f"GridModel: transmission network {t.name} has no thermal unit to balance it")
        # bus injection of [thermal, T DER used, -T loads served, -feeder heads]
        self.m_inj_t = np.hstack([_incidence(t.n_bus, t.gen.bus), _incidence(t.n_bus, t.der.bus),
                                  -_incidence(t.n_bus, t.load.bus),
                                  -_incidence(t.n_bus, np.array(grid.boundary_bus, dtype=np.intp))])
        self.rate_mva = t.branch.rate_mva
        self.load_q_base = np.concatenate((self.load_q_base, t.load.q_mvar))
        self.load_peak_t = float(t.load.p_mw.sum())
        self.inv_rate = np.where(np.isfinite(t.branch.rate_mva), 1.0 / t.branch.rate_mva, 0.0)
        self.any_rated = bool(np.isfinite(t.branch.rate_mva).any())   # else no line loading (NaN)
        at_slack = np.flatnonzero(t.gen.bus == t.slack_bus)
        self.ref_unit = int(at_slack[0]) if at_slack.size else int(np.argmax(t.gen.p_max_mw))
        g = t.gen
        self.g_p_min, self.g_p_max, self.g_ramp = g.p_min_mw, g.p_max_mw, g.ramp_mw_per_h
        self.g_c1, self.g_c2, self.g_cr = g.cost_c1_per_mwh, g.cost_c2_per_mw2h, g.cost_reserve_per_mwh
        self.gen = g
        # deep peak shaving (env.thermal_cost): priced only when some unit has the extra term
        self.g_deep_peak = bool(np.any(g.p_normal_min_mw > g.p_min_mw)
                                and np.any((g.cost_deep_loss_per_mwh > 0) | (g.cost_deep_oil_per_mwh > 0)))
        # hydro water spillage (env.hydro): priced only when some unit has an inflow and a price
        self.g_spill = bool(np.any((g.water_inflow_mw > 0) & (g.cost_spill_per_mwh > 0)))

    def _build_costs(self, grid: Grid) -> None:
        tar = grid.tariff
        kinds = [f.der.kind for f in grid.feeders]
        if grid.transmission is not None:
            kinds.append(grid.transmission.der.kind)
        kind = np.concatenate(kinds) if kinds else np.zeros(0, dtype=str)
        self.der_is_pv = kind == "pv"
        self._der_cols = self.der_columns()
        self.der_cost = np.where(self.der_is_pv, tar.pv_cost_per_mwh, tar.wind_cost_per_mwh)
        if self.is_td and self.g_p_max.sum() > 0:
            self.ev_reserve_price_default = float((self.g_cr * self.g_p_max).sum() / self.g_p_max.sum())
        else:
            self.ev_reserve_price_default = 0.0

    # ------------------------------------------------------------------ day data
    def der_mw(self, pv_mw: np.ndarray, wind_mw: np.ndarray) -> np.ndarray:
        """DER availability in dispatch order (..., n_der) from a scenario's PV and wind columns
        (any leading axes): each DER takes its column of its kind (:meth:`der_columns`)."""
        is_pv, col = self._der_cols
        out = np.zeros(np.shape(pv_mw)[:-1] + (is_pv.shape[0],))
        out[..., is_pv] = np.asarray(pv_mw)[..., col[is_pv]]
        out[..., ~is_pv] = np.asarray(wind_mw)[..., col[~is_pv]]
        return out

    def load_injection_pu(self, load_f_mw: np.ndarray, load_f_mvar: np.ndarray) -> np.ndarray:
        """The feeder loads' complex consumption per stacked feeder bus, p.u. (..., N_fb):
        ``(M_load (p + j q)) / S_base``."""
        shape = np.shape(load_f_mw)[:-1] + (self.m_load.shape[0],)
        if self._load_bus_distinct:         # M_load is a one-to-one scatter: the same numbers
            out = np.zeros(shape, dtype=complex)
            out[..., self.load_bus_f] = load_f_mw
            out.imag[..., self.load_bus_f] = load_f_mvar
        else:                               # real: two real products, not a complex copy of M
            out = np.empty(shape, dtype=complex)
            np.matmul(load_f_mw, self.m_load.T, out=out.real)
            np.matmul(load_f_mvar, self.m_load.T, out=out.imag)
        out *= self.inv_base_fb
        return out

    def control_injection_pu(self, ctrl_mw: np.ndarray, q_comp_mvar: np.ndarray, tie_mw: np.ndarray | None = None
                             ) -> np.ndarray:
        """The controllable part of the stacked feeder buses' complex consumption, p.u. (..., N_fb):
        ``(M_ctrl [P_ev, P_st, -P_der used] - j M_comp Q_comp + M_tie P_tie) / S_base``, with
        ``ctrl_mw = [EV stations, storage, feeder DER used]`` (any leading axes; one point: 1-D)."""
        if ctrl_mw.ndim == 1:               # .dot: the single env's BLAS call (the digest's bits)
            s = self.m_ctrl.dot(ctrl_mw) - 1j * self.m_comp.dot(q_comp_mvar)
            if self.n_tie and tie_mw is not None:
                s += self.tie_inc.dot(tie_mw)
        else:
            s = ctrl_mw @ self.m_ctrl.T - 1j * (q_comp_mvar @ self.m_comp.T)
            if self.n_tie and tie_mw is not None:
                s += tie_mw @ self.tie_inc.T
        s *= self.inv_base_fb
        return s

    def der_columns(self) -> tuple[np.ndarray, np.ndarray]:
        """For every DER in dispatch order: (is_pv, column in the scenario's pv / wind arrays)."""
        nets = list(self.grid.feeders) + ([self.grid.transmission] if self.is_td else [])
        cols, n_pv, n_wind = [], 0, 0
        for net in nets:
            for kind in net.der.kind:
                if kind == "pv":
                    cols.append(n_pv)
                    n_pv += 1
                else:
                    cols.append(n_wind)
                    n_wind += 1
        return self.der_is_pv, np.array(cols, dtype=np.intp)
