"""A fast, vectorized model of the rest of a day, for simulation-based policies (rollout).

:class:`DaySurrogate` plays the base rule (seed 003's heuristic, :mod:`policies.heuristic`)
from a state at step ``t`` to the end of the day on ``M`` sampled future paths and ``C``
candidate first-step actions at once (arrays ``(H, C, M, ...)``, ``H = T - t`` steps, row 0 =
step ``t``), and prices every step with the env's cost accounting (:data:`env.simulator.COST_KEYS`).

What it models exactly (as :class:`env.simulator.GridSimulator` does):

* **EVs** per EV (:mod:`policies.ev_knowledge`): the connected EVs' energies as a policy may
  know them, the env fleet's station split of step ``t``, then as-soon-as-possible charging to
  capacity (the base rule), departures and unmet energy ``max(0, e_req - e)``; the sampled
  future arrivals charge ASAP from arrival (:func:`env.evcs.asap_profile`).
* **Storage**: the base rule's charge/discharge, the env's projection and
  ``e += (eta_c p+ + p-/eta_d) dt``.
* **Costs**: import at the time-of-use price and export at the sell price (single feeder),
  EV revenue and subsidy, renewable generation cost, storage degradation, curtailment, EV
  unmet energy and voltage penalties. On T-D cases: the thermal rule (merit order within the
  ramp window, reserve margin), fuel (with the deep-peak terms) and spillage, reserve cost,
  and the real-time balancing of the imbalance ``T loads + sum head P - thermal - T wind`` by
  the env's chain; boundary violations with no EV reserve offered (the base rule offers none).

One home for each rule: the model composes the env's and the base rule's own functions with
its batch axes ``(H, C, M)``: the base rule is :mod:`policies.heuristic`'s
(:func:`~policies.heuristic.storage_rule`, :func:`~policies.heuristic.thermal_rule`,
:func:`~policies.heuristic.own_use_curtailment`, ...); the ranges, the projection, the DER
used and the storage dynamics are :mod:`env.projection`'s; the EV split, battery gain and
unmet energy :mod:`env.evcs`'s (the functions :class:`env.ev_fleet.EVFleet` runs); the
injections and the DER availability :class:`env.grid_model.GridModel`'s; the sweeps, the
slack power and the voltage penalty :mod:`env.physics.sweep`'s and :mod:`env.feeder_flow`'s;
the imbalance and the balancing :mod:`env.balancing`'s (the points flattened onto its batch
axis); the accounting :mod:`env.step_outcome`'s. What it adds is the orchestration: the
dispatch of all rows first (the base rule does not depend on the voltages), then the feeders
of every row, candidate and path in one AC sweep per feeder (to 1e-8 p.u.), then the
accounting. :mod:`policies.lookahead` prices a step's candidates against a reference
trajectory with re-solves of the changed points only (docs/design.md, "Batched simulation").

What it approximates:

* **Compensators** are held at the setpoints of ``DayPaths.q_comp_mvar`` (the rollout passes
  the ones the loop applied last step) or at ``settings.q_comp_mvar``: the reactive
  controller's future responses are not simulated.
* **EVs arriving in the current step** are known to the policy only as station totals: they are
  one pseudo-EV per station (the totals' energies and power) staying the mean dwell of the
  sampled sessions arriving within an hour of now.
* **The future** is the forecast's sampled paths (its EV sessions charge ASAP from arrival).
* Load shedding after a failed sweep (overload) and line flows are not modelled; the T-D
  balancing sheds / curtails without re-solving the feeders, and the reference unit takes
  what is left without being brought back within its limits.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from env.balancing import balance, imbalance_mw, tso_call
from env.evcs import battery_gain_kwh, station_sums, unmet_kwh
from env.feeder_flow import voltage_violation_pu
from env.network import Grid
from env.projection import StepProjection, der_used_mw, storage_energy_next
from env.settings import StrictKwargs
from env.grid_model import GridModel
from env.step_outcome import boundary_violation_mw, cost_breakdown, curtailment_mwh, energy_terms
from policies.day_inputs import (ActionBatch, DayPaths, SurrogateState, feeder_key, paths_from_forecast,
                                 paths_from_scenario, same_state)
from policies.ev_knowledge import ConnectedEVs, EVSplit, defer_key, ev_asap, ev_limits
from policies.heuristic import (
    feeder_net_mw,
    own_use_curtailment,
    reserve_split,
    storage_rule,
    storage_share,
    thermal_demand,
    thermal_rule,
)
from scenarios import ScenarioSet

if TYPE_CHECKING:
    from policies.lookahead import Lookahead

__all__ = ["DaySurrogate", "FeederRows", "SurrogateSettings", "Trajectory", "take_rows"]

# Inputs of the base rule's thermal row within this of the reference's count as the same (MW):
# rounding of the station sums, far below any setpoint that matters (chosen).
_SAME_MW = 1e-9


# ============================================================================ settings


@dataclass(frozen=True)
class SurrogateSettings(StrictKwargs):
    """Options of the day model (frozen; unknown keys raise, see :meth:`from_kwargs`).

    Attributes:
        no_exchange: the base rule without power exchange among nodes (seed 003's third case).
        reserve_margin, loss_factor: the base rule's thermal reserve margin and feeder loss
            allowance (as :class:`policies.heuristic.HeuristicPolicy`).
        sweep_tol_pu: tolerance of the reference AC sweeps.
        q_comp_mvar: compensator output assumed at every future step (MVAr, each unit).
    """

    no_exchange: bool = False
    reserve_margin: float = 0.10
    loss_factor: float = 0.03
    sweep_tol_pu: float = 1e-8
    q_comp_mvar: float = 0.0

    def __post_init__(self) -> None:
        self.check_types()   # every field by its annotation (env.settings.check_field_types)
        if not 0 <= self.reserve_margin < 1:
            raise ValueError(f"SurrogateSettings.reserve_margin: must be in [0, 1), got {self.reserve_margin}")
        if not (np.isfinite(self.loss_factor) and self.loss_factor >= 0):
            raise ValueError(f"SurrogateSettings.loss_factor: must be finite >= 0, got {self.loss_factor}")
        if not 0 < self.sweep_tol_pu < 1e-3:
            raise ValueError(f"SurrogateSettings.sweep_tol_pu: must be in (0, 1e-3), got {self.sweep_tol_pu}")
        if not np.isfinite(self.q_comp_mvar):
            raise ValueError("SurrogateSettings.q_comp_mvar: must be finite")


# ============================================================================ trajectories


@dataclass
class Trajectory:
    """Dispatch trajectory of C candidates on M paths, rows (H, C, M, n) (broadcastable)."""

    ev_mw: np.ndarray          # (H, C, M, n_station)
    ev_unmet_kwh: np.ndarray   # (H, C, M)
    storage_mw: np.ndarray     # (H, C, M, n_st)
    der_used_mw: np.ndarray    # (H, C, M, n_der)
    thermal_mw: np.ndarray     # (H, C, M, n_gen) setpoints after projection
    r_up_mw: np.ndarray
    r_dn_mw: np.ndarray
    next_key: np.ndarray       # (C, n) state after row 0 (EV energies, storage, thermal)
    fnet_mw: np.ndarray        # (H, C, M, F) feeder net demand with storage seen by the thermal rule (rows 1..)


@dataclass
class FeederRows:
    """Feeder results per row: head P (H, C, M, F) MW, voltage violation (H, C, M) p.u. summed."""

    head_mw: np.ndarray
    v_viol_pu: np.ndarray


class DaySurrogate:
    """The day model of a grid (see the module docstring), built once per grid.

    Args:
        grid: the grid.
        settings: :class:`SurrogateSettings`.
    """

    def __init__(self, grid: Grid, settings: SurrogateSettings | None = None) -> None:
        self.grid = grid
        self.settings = settings or SurrogateSettings()
        self.model = m = GridModel(grid)
        self.tariff = grid.tariff
        self.sizes = m.sizes
        self.n_station = m.sizes.n_evcs
        self.is_td = m.is_td
        self.n_der_f = m.n_der_f
        # ctrl vector of the feeders: [EV stations, storage, DER used on feeders] (consumption signs in m_ctrl)
        ctrl_feeder = np.concatenate([m.ev_feeder, m.st_feeder, m.der_feeder])
        self._feeder_ctrl = [np.flatnonzero(ctrl_feeder == k) for k in range(m.n_feeder)]
        self._m_ctrl = np.asarray(m.m_ctrl)
        self._q_comp = np.full(m.sizes.n_comp, self.settings.q_comp_mvar)
        self._st_share = storage_share(m)
        self._projections: dict[float, StepProjection] = {}

    def projection(self, dt_h: float) -> StepProjection:
        """The env's projection at step length ``dt_h`` (its storage and thermal ranges)."""
        proj = self._projections.get(dt_h)
        if proj is None:
            proj = self._projections[dt_h] = StepProjection(self.model, dt_h)
        return proj

    # ------------------------------------------------------------------ inputs
    def paths_from_forecast(self, obs: Any, sample: ScenarioSet, q_comp_mvar: np.ndarray | None = None) -> DayPaths:
        """:func:`policies.day_inputs.paths_from_forecast` on this grid."""
        return paths_from_forecast(self.model, obs, sample, q_comp_mvar)

    def paths_from_scenario(self, scenario: Any) -> tuple[DayPaths, SurrogateState]:
        """:func:`policies.day_inputs.paths_from_scenario` on this grid."""
        return paths_from_scenario(self.grid, self.model, scenario)

    # ------------------------------------------------------------------ the base rule, vectorized
    def base_action(self, state: SurrogateState, paths: DayPaths) -> ActionBatch:
        """The base rule's action at row 0 (the nowcast), as :class:`HeuristicPolicy` computes it."""
        m = self.model
        t, dt = state.step, paths.dt_h
        _, head = ev_limits(state.ev, state.ev.e_kwh, t, dt)
        ev = station_sums(state.ev.station, head, self.n_station) * 1e-3
        load, der = paths.load_p_mw[:1, None, :1], paths.der_avail_mw[:1, None, :1]      # (1, 1, 1, n)
        ev4 = ev[None, None, None]
        curt, der_used = self._curtail(load, ev4, der)
        net = self._feeder_net(load, ev4, der_used)[0]                                   # (1, 1, F)
        st = self._storage_rule(net, state.storage_e_mwh[None, None], dt)                # (1, 1, n_st)
        th: tuple[np.ndarray, ...] = (np.zeros((1, 0)),) * 3
        if self.is_td:
            fnet = net + st @ m.f_st.T
            p, r_up, r_dn = self._thermal_rule(self._thermal_demand(load[0], der_used[0], fnet),
                                               state.thermal_p_last_mw[None, None], dt)
            th = tuple(a[:, 0] for a in self.projection(dt).project_thermal(p, r_up, r_dn, state.thermal_p_last_mw))
        return ActionBatch(ev[None], st[:, 0], curt[0, :, 0], *th)

    def ev_bounds(self, state: SurrogateState, dt_h: float) -> tuple[np.ndarray, np.ndarray]:
        """Station power range (MW) of the surrogate's EVs now: (sum must-run, sum headroom)."""
        p_lo, head = ev_limits(state.ev, state.ev.e_kwh, state.step, dt_h)
        station = state.ev.station
        return station_sums(station, p_lo, self.n_station) * 1e-3, station_sums(station, head, self.n_station) * 1e-3

    def step(self, state: SurrogateState, paths: DayPaths, action: ActionBatch
             ) -> tuple[np.ndarray, SurrogateState]:
        """Play row 0 with one action: (its cost on every path (M,), the state at the next step).

        The EVs leaving at the end of the step drop out; no EV arrives (paths carry future
        arrivals only as ASAP profiles), so use it on paths without future arrivals.
        """
        if len(action) != 1:
            raise ValueError("DaySurrogate.step: one action")
        tr = self.trajectory(state, paths, action, n_rows=1)
        ph, _ = self.feeder_physics(paths, tr, 1)
        cost = self.costs(paths, tr, ph, 1)["total"][0, 0]
        ev, n_ev, n_st = state.ev, len(state.ev), self.sizes.n_storage
        e1 = tr.next_key[0, :n_ev]
        stay = ev.deadline_step > state.step + 1
        ev1 = ConnectedEVs(ev.station[stay], e1[stay], ev.e_capacity_kwh[stay], ev.e_request_kwh[stay],
                           ev.p_max_kw[stay], ev.efficiency[stay], ev.deadline_step[stay])
        nxt = SurrogateState(state.step + 1, tr.next_key[0, n_ev:n_ev + n_st].copy(), ev1,
                             tr.next_key[0, n_ev + n_st:n_ev + n_st + self.sizes.n_gen].copy())
        return cost, nxt

    def no_exchange_floor(self, paths: DayPaths, actions: ActionBatch) -> ActionBatch:
        """Raise each candidate's curtailment to the no-exchange rule's own-use share at row 0
        (given its EV setpoints), so that no node exports renewable power (no-exchange case)."""
        if not self.settings.no_exchange or self.n_der_f == 0:
            return actions
        load, der = paths.load_p_mw[:1, None, :1], paths.der_avail_mw[:1, None, :1]
        own, _ = self._curtail(load, actions.ev_p_mw[None, :, None], der)                 # (1, C, 1, n_der)
        curt = np.maximum(actions.der_curtail_frac, own[0, :, 0])
        return replace(actions, der_curtail_frac=curt)

    def thermal_margin(self, state: SurrogateState, paths: DayPaths, action: ActionBatch) -> float:
        """The base rule's reserve margin (MW) at row 0 given the feeder part of ``action``."""
        m = self.model
        if not self.is_td:
            return 0.0
        ev = action.ev_p_mw[:1][None, :, None]
        load, der = paths.load_p_mw[:1, None, :1], paths.der_avail_mw[:1, None, :1]
        der_used = der * (1.0 - action.der_curtail_frac[:1][None, :, None])
        fnet = self._feeder_net(load, ev, der_used)[0] + action.storage_p_mw[:1][:, None] @ m.f_st.T
        demand = thermal_demand(load[0][..., m.n_load_f:], fnet, der_used[0][..., m.n_der_f:],
                                self.settings.loss_factor)
        return float(self.settings.reserve_margin * demand.reshape(-1)[0])

    def reserves_for(self, p: np.ndarray, margin_mw: float, p_last: np.ndarray, dt: float
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The base rule's reserves (C, n_gen) for thermal setpoints ``p`` (C, n_gen): the margin
        split by headroom (:func:`policies.heuristic.reserve_split`), then projected as the env does."""
        if not self.is_td:
            z = np.zeros((p.shape[0], 0))
            return z, z
        proj = self.projection(dt)
        r_up, r_dn = reserve_split(proj, p, np.full(p.shape[0], margin_mw))
        _, r_up, r_dn = proj.project_thermal(p, r_up, r_dn, p_last)
        return r_up, r_dn

    def _curtail(self, load: np.ndarray, ev: np.ndarray, der: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(curtailment share, DER used) of the base rule, arrays (h, C, M, n_der): none with
        exchange, else :func:`policies.heuristic.own_use_curtailment` on the feeder DERs."""
        shape = np.broadcast_shapes(der.shape[:-1], ev.shape[:-1], load.shape[:-1]) + der.shape[-1:]
        if not self.settings.no_exchange or self.n_der_f == 0:
            return np.zeros(shape), np.broadcast_to(der, shape)
        m = self.model
        curt = np.zeros(shape)
        curt[..., :m.n_der_f] = own_use_curtailment(m, load[..., :m.n_load_f], ev, der[..., :m.n_der_f])
        return curt, der * (1.0 - curt)

    def _feeder_net(self, load: np.ndarray, ev: np.ndarray, der_used: np.ndarray) -> np.ndarray:
        """Feeder net demand (h, C, M, F) (:func:`policies.heuristic.feeder_net_mw`)."""
        m = self.model
        return feeder_net_mw(m, load[..., :m.n_load_f], ev, der_used[..., :m.n_der_f])

    def _storage_rule(self, net_f: np.ndarray, e: np.ndarray, dt: float) -> np.ndarray:
        """Base storage power (C, M, n_st) (:func:`policies.heuristic.storage_rule` within the
        env's range at energies ``e``)."""
        lo, hi = self.projection(dt).storage_limits(e)
        return storage_rule(net_f[..., self.model.st_feeder] * self._st_share, lo, hi, self.settings.no_exchange)

    def _thermal_demand(self, load: np.ndarray, der_used: np.ndarray, feeder_net: np.ndarray) -> np.ndarray:
        """The transmission net load the base rule's units cover (:func:`policies.heuristic.thermal_demand`)."""
        m = self.model
        return thermal_demand(load[..., m.n_load_f:], feeder_net, der_used[..., m.n_der_f:], self.settings.loss_factor)

    def _thermal_rule(self, demand_mw: np.ndarray, p_last: np.ndarray, dt: float
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The base rule's thermal setpoints and reserves (C, M, n_gen) on the transmission net
        load ``demand_mw`` (:func:`policies.heuristic.thermal_rule`)."""
        return thermal_rule(self.projection(dt), demand_mw, p_last, self.settings.reserve_margin)

    # ------------------------------------------------------------------ dispatch trajectories
    def trajectory(self, state: SurrogateState, paths: DayPaths, first: ActionBatch, n_rows: int | None = None,
                   ref: Trajectory | None = None, row0: Trajectory | None = None) -> Trajectory:
        """Row 0 with the candidates (``row0``: :meth:`first_row` of ``first``, if already
        computed), then the base rule on every path (rows 1..n_rows-1).

        ``ref``: a full trajectory of the same state and paths (one candidate) whose rows are
        reused where they are the same: the feeder rows 1.. when every candidate's feeder state
        after row 0 (EV and storage energies, deferrals, storage plan) equals ``ref``'s (to
        1e-12, the test :class:`Lookahead` uses to share rows), and each thermal row ``k`` where
        every candidate's last setpoints equal ``ref``'s row ``k - 1`` and the feeder net demand
        of row ``k`` equals ``ref``'s, to ``_SAME_MW`` (the base rule's row is a Lipschitz
        function of those inputs alone, so the rows reused differ from the ones computed by a
        small multiple of it).
        """
        H = paths.horizon if n_rows is None else min(n_rows, paths.horizon)
        row0 = row0 if row0 is not None else self.first_row(state, paths, first)
        if H == 1:
            return row0
        m, dt, t, ev_state = self.model, paths.dt_h, state.step, state.ev
        n_ev, n_st, n_gen = len(ev_state), self.sizes.n_storage, self.sizes.n_gen
        key = row0.next_key
        ev_all, unmet, st_all, der_all, fnet_all, *th_all = (
            np.empty((H,) + a.shape[1:]) for a in (row0.ev_mw, row0.ev_unmet_kwh, row0.storage_mw, row0.der_used_mw,
                                                   row0.fnet_mw, row0.thermal_mw, row0.r_up_mw, row0.r_dn_mw))
        for a, b in zip((ev_all, unmet, st_all, der_all, fnet_all, *th_all),
                        (row0.ev_mw, row0.ev_unmet_kwh, row0.storage_mw, row0.der_used_mw, row0.fnet_mw,
                         row0.thermal_mw, row0.r_up_mw, row0.r_dn_mw)):
            a[0] = b[0]
        load = paths.load_p_mw[1:H, None]                                                    # (H-1, 1, M, n)
        if ref is not None and ref.ev_mw.shape[0] == H and same_state(
                feeder_key(key, n_gen, ev_state, n_st), feeder_key(ref.next_key, n_gen, ev_state, n_st)[0]).all():
            for a, b in ((ev_all, ref.ev_mw), (unmet, ref.ev_unmet_kwh), (st_all, ref.storage_mw),
                         (der_all, ref.der_used_mw), (fnet_all, ref.fnet_mw)):
                a[1:] = b[1:]
        else:
            ev_cur, unmet_cur = ev_asap(ev_state, key[:, :n_ev], t + 1, H - 1, dt, self.n_station,   # (H-1, C, ns)
                                        first.ev_defer_steps)
            ev_all[1:] = ev_cur[:, :, None] + paths.ev_future_mw[1:H, None]
            unmet[1:] = unmet_cur[:, :, None] + paths.ev_future_unmet_kwh[1:H, None]
            _, der_all[1:] = self._curtail(load, ev_all[1:], paths.der_avail_mw[1:H, None])
            net = self._feeder_net(load, ev_all[1:], der_all[1:])                             # (H-1, C, M, F)
            self._storage_loop(net, key[:, n_ev:n_ev + n_st], st_all, dt, first.plan(n_st))
            fnet_all[1:] = net + st_all[1:] @ m.f_st.T
        if self.is_td:
            self._thermal_rows(load, der_all, fnet_all, th_all, row0.thermal_mw[0, :, 0], dt, ref)
        return Trajectory(ev_all, unmet, st_all, der_all, th_all[0], th_all[1], th_all[2], key, fnet_all)

    def first_row(self, state: SurrogateState, paths: DayPaths, first: ActionBatch, split: EVSplit | None = None
                  ) -> Trajectory:
        """Row 0 of the candidates (projected like the env), a one-row :class:`Trajectory` with the
        state key after it: EV energies, storage energies, thermal setpoints, deferrals, plan.
        ``split``: the :class:`EVSplit` of ``state`` (made here if None)."""
        m, dt, t = self.model, paths.dt_h, state.step
        C, M = len(first), paths.n_paths
        ev_state = state.ev
        split = split if split is not None else EVSplit(ev_state, t, dt, self.n_station)
        p_ev = split(first.ev_p_mw * 1e3)                                                     # (C, n_ev) kW
        ev0 = station_sums(ev_state.station, p_ev, self.n_station) * 1e-3
        e1 = ev_state.e_kwh + battery_gain_kwh(p_ev, ev_state.efficiency, dt)
        proj = self.projection(dt)
        st_lo, st_hi = proj.storage_limits(state.storage_e_mwh)
        st0 = np.minimum(np.maximum(first.storage_p_mw, st_lo), st_hi)                        # (C, n_st)
        curt0 = np.minimum(np.maximum(first.der_curtail_frac, 0.0), 1.0)
        der0 = der_used_mw(paths.der_avail_mw[0][None], curt0[:, None])                       # (C, M, n_der)
        th0 = proj.project_thermal(first.thermal_p_mw, first.thermal_r_up_mw, first.thermal_r_dn_mw,
                                   state.thermal_p_last_mw)
        est1 = storage_energy_next(m, state.storage_e_mwh, st0, dt)
        unmet0 = np.zeros(C)
        leave0 = ev_state.deadline_step == t + 1
        if leave0.any():
            unmet0 = unmet_kwh(ev_state.e_request_kwh[leave0], e1[:, leave0]).sum(axis=1)
        key = np.concatenate([e1, est1, th0[0], defer_key(first.ev_defer_steps, self.n_station),
                              first.storage_plan_mw], axis=1)

        def rows(a: np.ndarray) -> np.ndarray:                                                # (C, n) -> (1, C, M, n)
            return np.broadcast_to(a[:, None], (C, M, a.shape[-1]))[None].copy()

        unmet = (unmet0[:, None] + paths.ev_future_unmet_kwh[0][None])[None]
        return Trajectory(rows(ev0), unmet, rows(st0), der0[None], *(rows(v) for v in th0), key,
                          np.zeros((1, C, M, m.n_feeder)))

    def _thermal_rows(self, load: np.ndarray, der_all: np.ndarray, fnet_all: np.ndarray, th_all: list[np.ndarray],
                      p0: np.ndarray, dt: float, ref: Trajectory | None) -> None:
        """The base rule's thermal rows 1.. (``th_all``: setpoints, reserves (H, C, M, n_gen)) on
        the feeder net demand ``fnet_all``, each row's ramp window after the row before. Rows
        whose inputs equal ``ref``'s (see :meth:`trajectory`) are ``ref``'s, in runs up to the
        next row where the feeder net demand differs."""
        H, C, M = fnet_all.shape[:3]
        proj = self.projection(dt)
        p_last = np.broadcast_to(p0[:, None], (C, M, p0.shape[-1]))
        differ = np.arange(1, H)
        if ref is not None and ref.fnet_mw.shape[0] == H:
            differ = np.flatnonzero((np.abs(fnet_all - ref.fnet_mw) > _SAME_MW).any(axis=(1, 2, 3)))
        ref_rows = (ref.thermal_mw, ref.r_up_mw, ref.r_dn_mw) if ref is not None else ()
        demand = self._thermal_demand(load, der_all[1:], fnet_all[1:])                       # (H-1, C, M)
        k = 1
        while k < H:
            if ref_rows and (np.abs(p_last - ref.thermal_mw[k - 1]) <= _SAME_MW).all():
                j = int(np.searchsorted(differ, k))
                nxt = int(differ[j]) if j < differ.shape[0] else H
                if nxt > k:
                    for a, b in zip(th_all, ref_rows):
                        a[k:nxt] = b[k:nxt]
                    p_last, k = ref.thermal_mw[nxt - 1], nxt
                    continue
            th = self._thermal_rule(demand[k - 1], p_last, dt)
            for a, v in zip(th_all, proj.project_thermal(*th, p_last)):
                a[k] = v
            p_last = th_all[0][k]
            k += 1

    def _storage_loop(self, net: np.ndarray, e1: np.ndarray, out: np.ndarray, dt: float,
                      plan: np.ndarray | None = None) -> None:
        """The base storage rule on rows 1.. (``out[1:]``, (H, C, M, n_st)) from energies ``e1`` (C, n_st).

        Row by row: :func:`policies.heuristic.storage_rule` on the feeder's net demand shared by
        rating, within the env's range at the current energies, then
        :func:`env.projection.storage_energy_next`. Where a candidate's ``plan`` (C, L, n_st)
        has a value for row ``k <= L`` it is played instead, clipped to that range as the env does.
        """
        m = self.model
        if out.shape[-1] == 0:
            return
        proj, no_exchange = self.projection(dt), self.settings.no_exchange
        n = net[..., m.st_feeder] * self._st_share                                      # (H-1, C, M, n_st)
        e = np.broadcast_to(e1[:, None], n.shape[1:])
        n_plan = 0 if plan is None or not np.isfinite(plan).any() else plan.shape[1]
        for k in range(n.shape[0]):
            lo, hi = proj.storage_limits(e)
            p = storage_rule(n[k], lo, hi, no_exchange)
            if k < n_plan and np.isfinite(plan[:, k]).any():
                want = plan[:, k][:, None]                                               # (C, 1, n_st)
                p = np.where(np.isfinite(want), np.minimum(np.maximum(np.nan_to_num(want), lo), hi), p)
            out[k + 1] = p
            e = storage_energy_next(m, e, p, dt)

    # ------------------------------------------------------------------ physics
    def controls(self, tr: Trajectory) -> np.ndarray:
        """Feeder control vector (H, C, M, n_ctrl): [EV, storage, feeder DER used]."""
        return np.concatenate([tr.ev_mw, tr.storage_mw, tr.der_used_mw[..., :self.n_der_f]], axis=-1)

    def feeder_physics(self, paths: DayPaths, tr: Trajectory, n_rows: int
                       ) -> tuple[FeederRows, list[dict[str, Any]]]:
        """AC sweeps of every (row, candidate, path); also each feeder's operating points
        (complex voltages and injections, for warm-started re-solves and the expansion)."""
        m = self.model
        ctrl = self.controls(tr)
        H, C, M = ctrl.shape[:3]
        q_comp = self._q_comp if paths.q_comp_mvar is None else paths.q_comp_mvar
        s = (m.load_injection_pu(paths.load_p_mw[:n_rows, None, :, :m.n_load_f],          # (H, C, M, n_fb)
                                 paths.load_q_mvar[:n_rows, None, :, :m.n_load_f])
             + m.control_injection_pu(ctrl, q_comp))
        head = np.empty((H, C, M, m.n_feeder))
        viol = np.zeros((H, C, M))
        feeders: list[dict[str, Any]] = [{} for _ in range(m.n_feeder)]
        for g in m.groups:
            sw = g.sweep
            for j, k in enumerate(g.feeders):
                cols = s[..., g.idx[:, j]].reshape(-1, sw.n_bus).T                          # (n_bus, HCM)
                res = sw.solve(cols, v_slack_pu=g.v0, tol=self.settings.sweep_tol_pu)
                v = res.v_pu.T.reshape(H, C, M, sw.n_bus)
                vm = np.abs(v)
                viol += self.feeder_violation_pu(k, vm)
                head[..., k] = res.s_slack_pu.real.reshape(H, C, M) * g.base_mva
                idx = self._feeder_ctrl[k]
                feeders[k] = {"v": v, "vm": vm, "s": cols.T.reshape(H, C, M, sw.n_bus), "ctrl_idx": idx,
                              "m_loc": self._m_ctrl[m.feeder_bus_slices[k]][:, idx], "group": g}
        return FeederRows(head, viol), feeders

    def feeder_violation_pu(self, k: int, vm: np.ndarray) -> np.ndarray:
        """Sum over feeder ``k``'s buses of :func:`env.feeder_flow.voltage_violation_pu` (p.u.)."""
        sl = self.model.feeder_bus_slices[k]
        return voltage_violation_pu(vm, self.model.vmin_fb[sl], self.model.vmax_fb[sl]).sum(-1)

    # ------------------------------------------------------------------ costs
    def costs(self, paths: DayPaths, tr: Trajectory, ph: FeederRows, n_rows: int, bviol_mwh: np.ndarray | None = None
               ) -> dict[str, np.ndarray]:
        """Cost breakdown per row (H, C, M), keys of :data:`env.simulator.COST_KEYS`: the env's
        accounting (:func:`env.step_outcome.energy_terms`, :func:`env.step_outcome.cost_breakdown`)
        of the trajectory, after the T-D balancing (:meth:`_balance`; ``bviol_mwh``:
        :meth:`unserved_boundary_mwh` of these rows, if already computed)."""
        m, tar, dt = self.model, self.tariff, paths.dt_h
        H = n_rows
        shape = ph.v_viol_pu.shape
        z = np.zeros(shape)
        der_used, thermal, backoff, shed_mwh, unserved_mwh = tr.der_used_mw, tr.thermal_mw, z, z, z
        if m.is_td:
            der_used, thermal, backoff, shed_mwh, unserved_mwh = self._balance(paths, tr, ph, H, bviol_mwh)
        price = paths.price_buy_per_mwh[:H, None, None]
        energy = energy_terms(m, dt, price, tar.price_sell_per_mwh, ph.head_mw.sum(-1), thermal, tr.r_up_mw,
                              tr.r_dn_mw, 0.0, 0.0)
        avail = np.broadcast_to(paths.der_avail_mw[:H, None].sum(-1), shape)
        cost = cost_breakdown(tar, dt, *energy, tr.ev_mw.sum(-1) * dt, der_used @ m.der_cost,
                              np.abs(tr.storage_mw).sum(-1), curtailment_mwh(avail, der_used.sum(-1), backoff, dt),
                              shed_mwh, tr.ev_unmet_kwh, ph.v_viol_pu * dt, unserved_mwh, z)
        return {k: v if isinstance(v, np.ndarray) and v.shape == shape and v.flags.writeable
                else np.array(np.broadcast_to(v, shape)) for k, v in cost.items()}

    def _balance(self, paths: DayPaths, tr: Trajectory, ph: FeederRows, H: int, bviol_mwh: np.ndarray | None = None
                 ) -> tuple[np.ndarray, ...]:
        """T-D real-time balancing of every (row, candidate, path) by the env's chain
        (:func:`env.balancing.balance`, the points flattened onto its batch axis) of the imbalance
        ``D = T loads + sum head - thermal - T wind``, the reference unit taking what is left,
        with no station reserve (the base rule offers none): the TSO call goes undelivered
        (:meth:`unserved_boundary_mwh`, or ``bviol_mwh`` (H, 1, M)). Not modelled: the feeders'
        re-solve after shedding and the reference unit's limits (:func:`env.balancing.settle_reference`).

        Returns:
            DER used (H, C, M, n_der), thermal outputs (H, C, M, n_gen), thermal back-off MW,
            load shed MWh and boundary violation MWh (H, C, M).
        """
        m, dt = self.model, paths.dt_h
        shape = ph.v_viol_pu.shape
        n = int(np.prod(shape))

        def flat(a: np.ndarray, k: int) -> np.ndarray:
            return np.broadcast_to(a, shape + (k,)).reshape(n, k)

        load = paths.load_p_mw[:H, None]
        load_t = np.broadcast_to(load[..., m.n_load_f:].sum(-1), shape).reshape(n)
        load_f = np.broadcast_to(load[..., :m.n_load_f].sum(-1), shape).reshape(n)
        der = flat(tr.der_used_mw, m.sizes.n_der)
        thermal = flat(tr.thermal_mw, m.n_gen)
        head = np.broadcast_to(ph.head_mw.sum(-1), shape).reshape(n)
        imbalance = imbalance_mw(load_t, head, thermal.sum(-1), der[:, m.n_der_f:].sum(-1))
        none = np.zeros((n, m.sizes.n_evcs))
        x = {"thermal_p_mw": thermal, "thermal_r_up_mw": flat(tr.r_up_mw, m.n_gen),
             "thermal_r_dn_mw": flat(tr.r_dn_mw, m.n_gen), "ev_r_up_mw": none, "ev_r_dn_mw": none}
        r = balance(m, imbalance, x, none, der, load_t, load_f)
        thermal = r["thermal"]
        thermal[:, m.ref_unit] += r["unbalanced"]
        shed_mwh = (r["shed_t"] * load_t + r["shed_f"] * load_f) * dt
        bviol = self.unserved_boundary_mwh(paths, H) if bviol_mwh is None else bviol_mwh
        return (r["der_used"].reshape(shape + (-1,)), thermal.reshape(shape + (-1,)),
                r["backoff"].reshape(shape), shed_mwh.reshape(shape), np.broadcast_to(bviol, shape))

    def unserved_boundary_mwh(self, paths: DayPaths, H: int) -> np.ndarray:
        """Boundary violation (H, 1, M) MWh of rows ``0..H-1`` with no station reserve: the TSO
        call (:func:`env.balancing.tso_call`) delivers nothing, the requirement is left unserved
        (:func:`env.step_outcome.boundary_violation_mw`). The same for every candidate."""
        m = self.model
        req = paths.tso_requirement_mw[:H]
        rows = req.reshape(-1, req.shape[-1])
        no_reserve = np.zeros((rows.shape[0], m.sizes.n_evcs))
        call, _ = tso_call(m, rows, no_reserve, no_reserve)
        return boundary_violation_mw(rows, call).sum(-1).reshape(H, 1, req.shape[1]) * paths.dt_h

    # ------------------------------------------------------------------ public
    def simulate(self, state: SurrogateState, paths: DayPaths, first: ActionBatch | None = None
                 ) -> dict[str, np.ndarray]:
        """Cost breakdown (C, M) of each first-step action (default: the base action) followed by
        the base rule to the day's end, with exact AC sweeps on every step."""
        first = first if first is not None else self.base_action(state, paths)
        tr = self.trajectory(state, paths, first)
        ph, _ = self.feeder_physics(paths, tr, paths.horizon)
        return {k: v.sum(axis=0) for k, v in self.costs(paths, tr, ph, paths.horizon).items()}

    def lookahead(self, state: SurrogateState, paths: DayPaths, reference: ActionBatch,
                  max_columns: int = 4096) -> "Lookahead":
        """A :class:`policies.lookahead.Lookahead` that prices candidates around ``reference`` (one action)."""
        from policies.lookahead import Lookahead   # it builds on this module

        return Lookahead(self, state, paths, reference, max_columns)


def take_rows(tr: Trajectory, idx: np.ndarray) -> Trajectory:
    return Trajectory(*(getattr(tr, f.name)[:, idx] if f.name != "next_key" else tr.next_key[idx]
                   for f in fields(tr)))
