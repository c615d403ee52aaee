"""A fast, vectorized model of the rest of a day, for simulation-based policies (rollout).

:class:`DaySurrogate` plays the base rule (seed 003's heuristic, :mod:`policies.heuristic`)
from a state at step ``t`` to the end of the day on ``M`` sampled future paths and ``C``
candidate first-step actions at once (arrays ``(H, C, M, ...)``, ``H = T - t`` steps, row 0 =
step ``t``), and prices every step with the env's cost accounting (:data:`env.simulator.COST_KEYS`).

What it models exactly (as :class:`env.simulator.GridSimulator` does):

* **EVs** per EV: the connected EVs' energies (rebuilt by :class:`EVTracker` from what a policy
  may know), the station split of step ``t`` (must-run floor, then least laxity up to each
  headroom, as :class:`env.evcs.EVFleet`), then as-soon-as-possible charging to capacity
  (the base rule: ``b_k = min(E_cap, e + eta pmax dt k)``, docs/math.md §3), departures and unmet
  energy ``max(0, e_req - e)``; the sampled future arrivals charge ASAP from arrival
  (:func:`env.evcs.asap_profile`).
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
unmet energy :mod:`env.evcs`'s (the functions :class:`env.evcs.EVFleet` runs); the
injections and the DER availability :class:`env.grid_model.GridModel`'s; the sweeps, the
slack power and the voltage penalty :mod:`env.physics.sweep`'s and :mod:`env.feeder_flow`'s;
the imbalance and the balancing :mod:`env.balancing`'s (the points flattened onto its batch
axis); the accounting :mod:`env.step_outcome`'s. What it adds is the orchestration (a
reference trajectory, its warm-started re-solves of the changed points with the injection
change ``M_ctrl du / S_base``, the first-order expansion below), the EV model of what a
policy may know, and the base rule's future in closed form (:func:`ev_asap`, the future
sessions' ASAP profiles and unmet energy), which stepping the env's split with the base
rule's setpoints reproduces (tested).

Feeder physics: the reference trajectory (the first action priced, normally the base
action) is solved by the AC backward/forward sweep on every step and path (to 1e-8 p.u.);
a candidate re-solves only the (step, path) points where its feeder controls differ from the
current reference, by sweeps warm-started at the reference voltages (row 0, the nowcast, once
per candidate), so candidate costs are those of the full AC model. Above ``max_columns`` such
points per feeder (never reached on d33 / t30d2 days) the first-order expansion of the sweep's
fixed point is used instead: ``dV = -DLF (dp / conj(V)) + DLF diag(conj(S)/conj(V)^2) conj(dV)``
solved per step at the path-mean point, ``d|V| = Re(conj(V) dV)/|V|``, head power
``dP = Re(V0 conj(sum dI))`` (losses included).

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

from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from env.balancing import balance, imbalance_mw, initial_thermal, tso_call
from env.dispatch import Dispatch
from env.evcs import (EVCSBounds, asap_profile, battery_gain_kwh, ev_rows, fill_stage, interval_power_kw, laxity_order,
                      split_kw, station_sums, step_limits, unmet_kwh)
from env.feeder_flow import voltage_violation_pu
from env.network import Grid
from env.physics.sweep import PowerFlowError, fixed_point, slack_power_pu
from env.projection import StepProjection, der_used_mw, storage_energy_next
from env.settings import StrictKwargs
from env.simulator import GridModel
from env.step_outcome import boundary_violation_mw, cost_breakdown, curtailment_mwh, energy_terms
from policies.heuristic import (
    feeder_net_mw,
    own_use_curtailment,
    reserve_split,
    storage_rule,
    storage_share,
    thermal_demand,
    thermal_rule,
)
from scenarios import EVSessions, ScenarioSet

__all__ = [
    "ActionBatch", "ConnectedEVs", "DayPaths", "DaySurrogate", "EVSplit", "EVTracker", "Lookahead", "SurrogateSettings",
    "SurrogateState", "ev_asap", "ev_split",
]

_PLAN_FREE = -1e30  # a plan entry left to the base rule (stored finite: batches must be finite)
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



# ============================================================================ EVs


@dataclass(frozen=True)
class ConnectedEVs:
    """The EVs connected at a step, one entry each (kW / kWh, 0-based station index).

    ``deadline_step = min(departure_step, n_steps)``: the EV charges during steps
    ``< deadline_step`` and its unmet energy is counted when it leaves.
    """

    station: np.ndarray
    e_kwh: np.ndarray
    e_capacity_kwh: np.ndarray
    e_request_kwh: np.ndarray
    p_max_kw: np.ndarray
    efficiency: np.ndarray
    deadline_step: np.ndarray

    def __post_init__(self) -> None:
        n = np.asarray(self.station).shape[0]
        for f in fields(self):
            dtype = np.intp if f.name in ("station", "deadline_step") else float
            arr = np.asarray(getattr(self, f.name), dtype=dtype).reshape(-1)
            if arr.shape != (n,):
                raise ValueError(f"ConnectedEVs.{f.name}: expected {n} values, got {arr.shape[0]}")
            if dtype is float and not np.isfinite(arr).all():
                raise ValueError(f"ConnectedEVs.{f.name}: values must be finite")
            object.__setattr__(self, f.name, arr)
        if (self.p_max_kw <= 0).any() or ((self.efficiency <= 0) | (self.efficiency > 1)).any():
            raise ValueError("ConnectedEVs: need p_max_kw > 0 and 0 < efficiency <= 1")

    def __len__(self) -> int:
        return int(self.station.shape[0])

    @classmethod
    def empty(cls) -> "ConnectedEVs":
        z = np.zeros(0)
        return cls(z, z, z, z, z, z, z)

    @classmethod
    def from_sessions(cls, s: EVSessions, e_kwh: np.ndarray, n_steps: int) -> "ConnectedEVs":
        return cls(s.station, e_kwh, s.e_capacity_kwh, s.e_request_kwh, s.p_max_kw, s.efficiency,
                   np.minimum(s.departure_step, n_steps))

    def rows(self, dt_h: float, e_kwh: np.ndarray | None = None) -> np.ndarray:
        """The env fleet's compact state of these EVs (:func:`env.evcs.ev_rows`), at energies
        ``e_kwh`` (default: their own)."""
        return ev_rows(self.station, self.e_kwh if e_kwh is None else e_kwh, self.e_request_kwh,
                       self.e_capacity_kwh, self.p_max_kw, self.efficiency, self.deadline_step, dt_h)

    def concat(self, other: "ConnectedEVs") -> "ConnectedEVs":
        return ConnectedEVs(**{f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)])
                               for f in fields(self)})


def _ev_limits(ev: ConnectedEVs, e_kwh: np.ndarray, t: int, dt_h: float) -> tuple[np.ndarray, np.ndarray]:
    """(must-run ``p_lo``, headroom) per EV in kW at energies ``e_kwh`` (n_ev,): the env
    fleet's (:func:`env.evcs.step_limits`, docs/math.md §3)."""
    p_lo, head = step_limits(ev.rows(dt_h, e_kwh), t, dt_h)
    return p_lo, head


class EVSplit:
    """The env fleet's split (:class:`env.evcs.EVFleet`, no V2G, must-run enforced) of station
    setpoints among the EVs ``ev`` connected at step ``t``; what does not depend on the
    setpoints (limits, laxity order, fill stages) is computed once, for any number of calls:
    ``P_s = clip(P_set_s, sum p_lo, sum head)``; every EV gets its must-run ``p_lo``, the rest
    ``P_s - sum p_lo`` goes by least laxity up to each headroom (:func:`env.evcs.laxity_order`,
    :func:`env.evcs.fill_stage`, :func:`env.evcs.split_kw`).
    """

    def __init__(self, ev: ConnectedEVs, t: int, dt_h: float, n_station: int) -> None:
        self.n_ev = len(ev)
        if self.n_ev == 0:
            return
        s = ev.rows(dt_h)
        self.p_lo, head = step_limits(s, t, dt_h)
        self.lo_sum = station_sums(ev.station, self.p_lo, n_station)
        self.head_sum = station_sums(ev.station, head, n_station)
        self.order, self.station_o, first_o = laxity_order(s, ev.station)
        self.before_o, self.cap_o = fill_stage(head - self.p_lo, self.order, first_o)

    def __call__(self, target_kw: np.ndarray) -> np.ndarray:
        """Per-EV powers (C, n_ev) kW of station setpoints ``target_kw`` (C, n_station)."""
        target = np.atleast_2d(np.asarray(target_kw, dtype=float))
        if self.n_ev == 0:
            return np.zeros((target.shape[0], 0))
        extra = np.minimum(np.maximum(target, self.lo_sum), self.head_sum) - self.lo_sum    # (C, n_station)
        p = np.broadcast_to(self.p_lo, (target.shape[0], self.n_ev)).copy()
        p[:, self.order] += split_kw(extra, self.station_o, self.before_o, self.cap_o)
        return p


def ev_split(ev: ConnectedEVs, t: int, dt_h: float, target_kw: np.ndarray, n_station: int) -> np.ndarray:
    """Per-EV powers (C, n_ev) kW of station setpoints ``target_kw`` (C, n_station) by the env
    fleet's split (:class:`EVSplit`), for all ``C`` setpoints at once."""
    return EVSplit(ev, t, dt_h, n_station)(target_kw)


def ev_asap(ev: ConnectedEVs, e_kwh: np.ndarray, t_from: int, n_rows: int, dt_h: float, n_station: int,
            defer_steps: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """ASAP charging (to capacity) of connected EVs from the start of step ``t_from``.

    With ``e_kwh`` (C, n_ev) at that time and ``gain = eta pmax dt``, the battery after ``k``
    steps is ``b_k = min(E_cap, e + gain k)`` and the grid power in step ``t_from + k`` is
    ``(b_{k+1} - b_k)/(eta dt)`` while ``t_from + k < D``. With ``defer_steps`` (C, n_station)
    ``= s``, the EVs of that station first take only their must-run power for ``d = s - 1``
    rows (the env's must-run: ``b_k = min(E_cap, e + gain k, max(e, e_req - gain (D - t_from - k)))``),
    then charge ASAP from ``b_d``.

    Both are full power over intervals of rows (:func:`env.evcs.interval_power_kw`): with
    ``L = D - t_from`` rows left, ``K = (E_cap - e)/gain`` and ``R = (e_req - e)/gain``, the
    must-run part is ``[a, min(a + K, L, d))`` from ``a = max(L - R, 0)``, and the ASAP part
    ``[min(d, L), min(d, L) + min(K - x_d, L - min(d, L)))`` where ``x_d`` is the must-run part's
    length (no deferral: ``d = 0``, the ASAP part alone, ``[0, min(K, L))``).

    Returns:
        power (n_rows, C, n_station) in MW, and unmet energy (n_rows, C) in kWh counted on the
        row where each EV leaves (``D - 1 - t_from``; EVs leaving after the rows are dropped).
    """
    e = np.atleast_2d(e_kwh)
    C = e.shape[0]
    if len(ev) == 0 or n_rows <= 0:
        return np.zeros((max(n_rows, 0), C, n_station)), np.zeros((max(n_rows, 0), C))
    gain = ev.efficiency * ev.p_max_kw * dt_h
    steps_left = np.maximum(ev.deadline_step - t_from, 0)                      # (n_ev,)
    room = np.maximum((ev.e_capacity_kwh - e) / gain, 0.0)                     # K (C, n_ev)
    b_end = np.minimum(ev.e_capacity_kwh, e + gain * steps_left)
    if defer_steps is not None and np.asarray(defer_steps).size and np.any(np.asarray(defer_steps) > 1):
        d = np.maximum(np.asarray(defer_steps, dtype=float)[:, ev.station] - 1.0, 0.0)   # (C, n_ev) rows deferred

        def must_run(j: np.ndarray) -> np.ndarray:
            floor = np.maximum(e, ev.e_request_kwh - gain * np.maximum(steps_left - j, 0.0))
            return np.minimum(np.minimum(ev.e_capacity_kwh, e + gain * np.minimum(j, steps_left)), floor)

        a = np.maximum(steps_left - (ev.e_request_kwh - e) / gain, 0.0)
        stop = np.maximum(np.minimum(np.minimum(a + room, steps_left), d), a)
        d_left = np.minimum(d, steps_left)
        start2 = d_left
        stop2 = d_left + np.maximum(np.minimum(room - (stop - a), steps_left - d_left), 0.0)
        p_kw = (interval_power_kw(a, stop, ev.p_max_kw, ev.station, n_rows, n_station)
                + interval_power_kw(start2, stop2, ev.p_max_kw, ev.station, n_rows, n_station))
        b_d = must_run(d)
        b_end = np.where(steps_left <= d, must_run(steps_left + 0.0 * d),
                         np.minimum(ev.e_capacity_kwh, b_d + gain * (steps_left - d_left)))
    else:
        p_kw = interval_power_kw(np.zeros_like(room), np.minimum(room, steps_left), ev.p_max_kw, ev.station,
                                 n_rows, n_station)
    unmet = unmet_kwh(ev.e_request_kwh, b_end)                                 # (C, n_ev)
    row = ev.deadline_step - 1 - t_from
    ok = (row >= 0) & (row < n_rows)
    key = (row[ok][None, :] * C + np.arange(C)[:, None]).reshape(-1)
    unmet_rows = np.bincount(key, weights=unmet[:, ok].reshape(-1), minlength=n_rows * C).reshape(n_rows, C)
    return p_kw * 1e-3, unmet_rows


def _defer_key(defer_steps: np.ndarray, n_station: int) -> np.ndarray:
    """(C, n_station) deferral of each candidate (0 where none) for state comparisons."""
    d = np.asarray(defer_steps, dtype=float)
    return d if d.shape[1] else np.zeros((d.shape[0], n_station))


class EVTracker:
    """Per-EV energies of the connected EVs, rebuilt from what a policy may know.

    A policy sees the sessions that plugged in before ``t`` (``forecast.known_ev``, with their
    declared departure and request), the station totals of step ``t`` (``obs.ev``) and its own
    station setpoints. The env's split is deterministic, so replaying the setpoints through
    :func:`ev_split` reproduces every known EV's energy; the EVs plugging in at ``t`` are known
    only as station totals and become one pseudo-EV per station (``dwell_steps`` long).

    Call :meth:`reset` each day, :meth:`state` at every step, and :meth:`record` with the
    station setpoints sent (MW).
    """

    def __init__(self, n_station: int, n_steps: int, dt_h: float, efficiency: float) -> None:
        self.n_station, self.n_steps, self.dt_h, self.efficiency = int(n_station), int(n_steps), float(dt_h), \
            float(efficiency)
        self.reset()

    def reset(self) -> None:
        """Forget the day."""
        self._setpoints: dict[int, np.ndarray] = {}
        self._t = -1                      # energies below hold at the start of step _t
        self._e = np.zeros(0)             # per known session
        self._n = 0

    def record(self, t: int, ev_p_mw: np.ndarray) -> None:
        """The station setpoints (MW) sent at step ``t``."""
        self._setpoints[int(t)] = np.asarray(ev_p_mw, dtype=float) * 1e3

    def known_state(self, t: int, known: EVSessions) -> ConnectedEVs:
        """The known EVs (arrived before ``t``) still connected at ``t``, with their energies."""
        if len(known) and int(known.arrival_step.max()) >= t:
            raise ValueError(f"EVTracker: sessions arriving at or after t={t} cannot be known")
        n = len(known)
        if self._t == t and n == self._n:
            e = self._e
        elif self._t == t - 1 and n >= self._n and (t - 1) in self._setpoints:
            e = np.concatenate([self._e, known.e_arrival_kwh[self._n:]])
            e = self._play(known, e, t - 1)
        else:                                          # replay the day (first call, or a gap)
            e = known.e_arrival_kwh.astype(float).copy()
            for tau in range(t):
                e = self._play(known, e, tau)
        self._t, self._e, self._n = t, e, n
        dead = np.minimum(known.departure_step, self.n_steps)
        on = dead > t
        return ConnectedEVs.from_sessions(known.select(on), e[on], self.n_steps)

    def _play(self, known: EVSessions, e: np.ndarray, tau: int) -> np.ndarray:
        """Energies after step ``tau`` (EVs connected at ``tau`` split the recorded setpoint)."""
        dead = np.minimum(known.departure_step, self.n_steps)
        on = (known.arrival_step <= tau) & (dead > tau)
        if not on.any():
            return e
        ev = ConnectedEVs.from_sessions(known.select(on), e[on], self.n_steps)
        target = self._setpoints.get(tau, np.full(self.n_station, np.inf))   # unknown: ASAP
        p = ev_split(ev, tau, self.dt_h, target[None, :], self.n_station)[0]
        out = e.copy()
        out[on] = e[on] + battery_gain_kwh(p, ev.efficiency, self.dt_h)
        return out

    def state(self, t: int, known: EVSessions, bounds: EVCSBounds, dwell_steps: np.ndarray | float
              ) -> ConnectedEVs:
        """All EVs connected at ``t``: the known ones plus one pseudo-EV per station for the
        EVs plugging in at ``t`` (station totals of ``bounds`` minus the known EVs')."""
        ev = self.known_state(t, known)
        def total(x: np.ndarray) -> np.ndarray:
            return station_sums(ev.station, x, self.n_station)

        rated = bounds.p_rated_kw - total(ev.p_max_kw)
        new = rated > 1e-9
        if not new.any():
            return ev
        st = np.flatnonzero(new)
        e = np.maximum(bounds.e_kwh - total(ev.e_kwh), 0.0)[st]
        cap = np.maximum(bounds.e_capacity_kwh - total(ev.e_capacity_kwh), 0.0)[st]
        req = np.maximum(bounds.e_target_kwh - total(ev.e_request_kwh), 0.0)[st]
        cap = np.maximum(cap, e)
        req = np.clip(req, e, cap)
        dwell = np.broadcast_to(np.asarray(dwell_steps, dtype=float), (self.n_station,))[st]
        dead = np.minimum(t + np.maximum(np.round(dwell), 1).astype(np.intp), self.n_steps)
        pseudo = ConnectedEVs(st, e, cap, req, rated[st], np.full(st.shape, self.efficiency), dead)
        return ev.concat(pseudo)


# ============================================================================ inputs


@dataclass(frozen=True)
class SurrogateState:
    """The state at ``step``: storage energy, connected EVs, last thermal setpoints."""

    step: int
    storage_e_mwh: np.ndarray
    ev: ConnectedEVs
    thermal_p_last_mw: np.ndarray


@dataclass(frozen=True)
class ActionBatch:
    """``C`` candidate dispatches of one step (arrays of shape (C, n)), MW / shares.

    ``storage_plan_mw`` (C, L n_st): a multi-step candidate's storage power on the next ``L``
    steps (rows 1..L, flattened row by row; NaN = the base rule decides that entry; projected to
    the energy limits as the env does). Width 0 (the default): the base rule from step t + 1 on.
    ``ev_defer_steps`` (C, n_station): a multi-step EV candidate: the station's connected EVs take
    only their must-run power for this many steps (this one included, whose station value is
    ``ev_p_mw``), then charge as soon as possible (0 = no deferral; width 0 = none anywhere).
    """

    ev_p_mw: np.ndarray
    storage_p_mw: np.ndarray
    der_curtail_frac: np.ndarray
    thermal_p_mw: np.ndarray
    thermal_r_up_mw: np.ndarray
    thermal_r_dn_mw: np.ndarray
    storage_plan_mw: np.ndarray = field(default_factory=lambda: np.zeros((1, 0)))
    ev_defer_steps: np.ndarray = field(default_factory=lambda: np.zeros((1, 0)))

    def __post_init__(self) -> None:
        plan = np.asarray(self.storage_plan_mw, dtype=float)
        n_c = np.asarray(self.ev_p_mw, dtype=float).reshape(-1, np.asarray(self.ev_p_mw).shape[-1]).shape[0]
        defer = np.asarray(self.ev_defer_steps, dtype=float)
        if defer.size == 0:
            object.__setattr__(self, "ev_defer_steps", np.zeros((n_c, 0)))
        elif np.any(defer < 0) or np.any(defer != np.round(defer)):
            raise ValueError("ActionBatch.ev_defer_steps: integers >= 0 required")
        if plan.size == 0:
            object.__setattr__(self, "storage_plan_mw", np.zeros((n_c, 0)))
        elif np.isinf(plan).any():
            raise ValueError("ActionBatch.storage_plan_mw: values must be finite or NaN")
        else:
            object.__setattr__(self, "storage_plan_mw", np.nan_to_num(plan, nan=_PLAN_FREE))
        c = None
        for f in fields(self):
            arr = np.array(getattr(self, f.name), dtype=float, ndmin=2)
            if arr.ndim != 2 or (c is not None and arr.shape[0] != c):
                raise ValueError(f"ActionBatch.{f.name}: expected a (C, n) array, got shape {arr.shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"ActionBatch.{f.name}: values must be finite")
            c = arr.shape[0]
            object.__setattr__(self, f.name, arr)

    def __len__(self) -> int:
        return int(self.ev_p_mw.shape[0])

    def plan(self, n_storage: int) -> np.ndarray:
        """(C, L, n_st) storage plan of rows 1..L, NaN where the base rule decides."""
        p = self.storage_plan_mw.reshape(len(self), -1, n_storage) if n_storage else np.zeros((len(self), 0, 0))
        return np.where(p == _PLAN_FREE, np.nan, p)

    @classmethod
    def from_dispatch(cls, d: Dispatch) -> "ActionBatch":
        return cls(d.ev_p_mw[None], d.storage_p_mw[None], d.der_curtail_frac[None], d.thermal_p_mw[None],
                   d.thermal_r_up_mw[None], d.thermal_r_dn_mw[None])

    def dispatch(self, i: int = 0) -> Dispatch:
        """Candidate ``i`` as a :class:`Dispatch` (no EV reserves, no reactive setpoints)."""
        z = np.zeros(0) if self.thermal_p_mw.shape[1] == 0 else np.zeros(self.ev_p_mw.shape[1])
        return Dispatch(ev_p_mw=self.ev_p_mw[i], storage_p_mw=self.storage_p_mw[i],
                        der_curtail_frac=self.der_curtail_frac[i], thermal_p_mw=self.thermal_p_mw[i],
                        thermal_r_up_mw=self.thermal_r_up_mw[i], thermal_r_dn_mw=self.thermal_r_dn_mw[i],
                        ev_r_up_mw=z, ev_r_dn_mw=z)

    def take(self, idx: np.ndarray | list[int]) -> "ActionBatch":
        idx = np.asarray(idx, dtype=np.intp)
        return ActionBatch(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def vary(self, name: str, index: int, values: np.ndarray, **also: np.ndarray) -> "ActionBatch":
        """``len(values)`` copies of candidate 0 with ``name[index]`` set to each value
        (``also``: other fields replaced by (C, n) arrays, e.g. recomputed reserves)."""
        values = np.asarray(values, dtype=float).reshape(-1)
        out = {f.name: np.repeat(getattr(self, f.name)[:1], values.shape[0], axis=0) for f in fields(self)}
        out[name][:, index] = values
        out.update(also)
        return ActionBatch(**out)


@dataclass(frozen=True)
class DayPaths:
    """Exogenous inputs of steps ``start_step .. n_steps - 1`` on ``M`` paths (row 0 = step t).

    Attributes:
        start_step, n_steps, dt_h: the rows' steps and length.
        probabilities: (M,) path weights (sum 1).
        load_p_mw, load_q_mvar: (H, M, n_load) loads in ``Layout`` order.
        der_avail_mw: (H, M, n_der) available DER output, dispatch order.
        price_buy_per_mwh: (H,) purchase price of every row.
        ev_future_mw: (H, M, n_station) ASAP charging of the EVs arriving after ``start_step``.
        ev_future_unmet_kwh: (H, M) their unmet energy on the row they leave.
        tso_requirement_mw: (H, M, n_boundary).
        ev_dwell_steps: (n_station,) expected stay of an EV plugging in at ``start_step``.
        q_comp_mvar: (n_comp,) compensator setpoints held on every row (None: the surrogate's
            ``settings.q_comp_mvar``).
    """

    start_step: int
    n_steps: int
    dt_h: float
    probabilities: np.ndarray
    load_p_mw: np.ndarray
    load_q_mvar: np.ndarray
    der_avail_mw: np.ndarray
    price_buy_per_mwh: np.ndarray
    ev_future_mw: np.ndarray
    ev_future_unmet_kwh: np.ndarray
    tso_requirement_mw: np.ndarray
    ev_dwell_steps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    q_comp_mvar: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.q_comp_mvar is not None:
            q = np.asarray(self.q_comp_mvar, dtype=float)
            if q.ndim != 1 or not np.isfinite(q).all():
                raise ValueError(f"DayPaths.q_comp_mvar: expected a finite 1-D array, got {self.q_comp_mvar!r}")
            object.__setattr__(self, "q_comp_mvar", q)
        H, M = self.n_steps - self.start_step, np.asarray(self.probabilities).shape[0]
        p = np.asarray(self.probabilities, dtype=float)
        if M < 1 or (p < 0).any() or not np.isclose(p.sum(), 1.0):
            raise ValueError("DayPaths.probabilities: need M >= 1 weights >= 0 summing to 1")
        for name in ("load_p_mw", "load_q_mvar", "der_avail_mw", "ev_future_mw", "tso_requirement_mw",
                     "ev_future_unmet_kwh"):
            arr = np.asarray(getattr(self, name), dtype=float)
            if arr.shape[:2] != (H, M) or not np.isfinite(arr).all():
                raise ValueError(f"DayPaths.{name}: expected finite (H={H}, M={M}, ...), got shape {arr.shape}")
        if np.asarray(self.price_buy_per_mwh).shape != (H,):
            raise ValueError(f"DayPaths.price_buy_per_mwh: expected ({H},)")

    @property
    def n_paths(self) -> int:
        return int(self.probabilities.shape[0])

    @property
    def horizon(self) -> int:
        return self.n_steps - self.start_step


# ============================================================================ trajectories


@dataclass
class _Traj:
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
class _Physics:
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
        """The paths of ``forecast.sample`` (rows ``t..T-1``) with row 0 replaced by the nowcast.

        EVs the sample lets arrive at ``t`` are dropped (the real ones are in ``obs.ev``); their
        mean dwell per hour is kept as the pseudo-EVs' dwell. ``q_comp_mvar``: the compensator
        setpoints held on every row (None: ``settings.q_comp_mvar``).
        """
        t, T, dt = int(obs.step), int(obs.n_steps), float(obs.dt_h)
        if sample.start_step != t or sample.horizon != T - t:
            raise ValueError(f"paths_from_forecast: sample covers steps {sample.start_step}.."
                             f"{sample.start_step + sample.horizon - 1}, expected {t}..{T - 1}")
        load = np.moveaxis(sample.load_p_mw, 1, 0).copy()                 # (H, M, n_load)
        load_q = np.moveaxis(sample.load_pu, 1, 0) * self.model.load_q_base
        der = np.moveaxis(self.model.der_mw(sample.pv_p_mw, sample.wind_p_mw), 1, 0).copy()
        load[0], der[0] = obs.load_p_mw, obs.der_avail_mw
        load_q[0] = obs.load_q_mvar
        ev_mw, unmet, dwell = self._future_ev(sample.ev_sessions, t, T, dt, len(sample))
        return DayPaths(start_step=t, n_steps=T, dt_h=dt, probabilities=sample.probabilities,
                        load_p_mw=load, load_q_mvar=load_q, der_avail_mw=der,
                        price_buy_per_mwh=np.asarray(obs.price_ahead_per_mwh, dtype=float),
                        ev_future_mw=ev_mw, ev_future_unmet_kwh=unmet,
                        tso_requirement_mw=np.moveaxis(sample.tso_requirement_mw, 1, 0), ev_dwell_steps=dwell,
                        q_comp_mvar=q_comp_mvar)

    def paths_from_scenario(self, scenario: Any) -> tuple[DayPaths, SurrogateState]:
        """The realized day (a ``scenarios.Scenario``) as one path, with the state before the day
        (storage at its initial energy, the EVs arriving at step 0 connected)."""
        m, lay = self.model, self.grid.layout
        T, dt = int(scenario.n_steps), scenario.dt_minutes / 60.0
        load = (scenario.load_pu * lay.load_p_mw)[:, None]
        load_q = (scenario.load_pu * m.load_q_base)[:, None]
        der = self.model.der_mw(scenario.pv_p_mw, scenario.wind_p_mw)[:, None]
        ev = scenario.ev
        now = ev.select(ev.arrival_step == 0)
        ev_mw, unmet, _ = self._future_ev((ev,), 0, T, dt, 1)
        price = self.tariff.buy_price_at(np.arange(T) * dt)
        paths = DayPaths(start_step=0, n_steps=T, dt_h=dt, probabilities=np.ones(1), load_p_mw=load,
                         load_q_mvar=load_q, der_avail_mw=der, price_buy_per_mwh=price, ev_future_mw=ev_mw,
                         ev_future_unmet_kwh=unmet, tso_requirement_mw=np.asarray(scenario.tso_requirement_mw)[:, None],
                         ev_dwell_steps=np.zeros(self.n_station))
        state = SurrogateState(step=0, storage_e_mwh=m.st_e_init.astype(float).copy(),
                               ev=ConnectedEVs.from_sessions(now, now.e_arrival_kwh, T),
                               thermal_p_last_mw=initial_thermal(m, load[0, 0], der[0, 0]))
        return paths, state

    def _future_ev(self, sessions: tuple[EVSessions, ...], t: int, T: int, dt: float, n_paths: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ASAP power (H, M, n_station) and unmet (H, M) of the sessions arriving after ``t``,
        and the mean dwell (steps) of sessions arriving within an hour of ``t``."""
        H, ns = T - t, self.n_station
        power, unmet = np.zeros((H, n_paths, ns)), np.zeros((H, n_paths))
        dwell_all: list[np.ndarray] = []
        if not sessions:
            return power, unmet, np.full(ns, 4.0 / dt)
        for j, s in enumerate(sessions):
            near = np.abs(s.arrival_step - t) <= max(1, int(round(1.0 / dt)))
            dwell_all.append(s.departure_step[near] - s.arrival_step[near])
            fut = s.select(s.arrival_step > t)
            if not len(fut):
                continue
            power[:, j] = asap_profile(fut, ns, dt, T)[t:] * 1e-3
            dead = np.minimum(fut.departure_step, T)
            gain = fut.efficiency * fut.p_max_kw * dt
            b_end = np.minimum(fut.e_capacity_kwh, fut.e_arrival_kwh + gain * (dead - fut.arrival_step))
            np.add.at(unmet[:, j], dead - 1 - t, unmet_kwh(fut.e_request_kwh, b_end))
        d = np.concatenate(dwell_all) if dwell_all else np.zeros(0)
        dwell = float(d.mean()) if d.size else 4.0 / dt
        return power, unmet, np.full(ns, dwell)

    # ------------------------------------------------------------------ the base rule, vectorized
    def base_action(self, state: SurrogateState, paths: DayPaths) -> ActionBatch:
        """The base rule's action at row 0 (the nowcast), as :class:`HeuristicPolicy` computes it."""
        m = self.model
        t, dt = state.step, paths.dt_h
        _, head = _ev_limits(state.ev, state.ev.e_kwh, t, dt)
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
        p_lo, head = _ev_limits(state.ev, state.ev.e_kwh, state.step, dt_h)
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
        tr = self._trajectory(state, paths, action, n_rows=1)
        ph, _ = self._exact_physics(paths, tr, 1)
        cost = self._costs(paths, tr, ph, 1)["total"][0, 0]
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
    def _trajectory(self, state: SurrogateState, paths: DayPaths, first: ActionBatch, n_rows: int | None = None,
                    ref: _Traj | None = None, row0: _Traj | None = None) -> _Traj:
        """Row 0 with the candidates (``row0``: :meth:`_first_row` of ``first``, if already
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
        row0 = row0 if row0 is not None else self._first_row(state, paths, first)
        if H == 1:
            return row0
        m, dt, t, ev_state = self.model, paths.dt_h, state.step, state.ev
        C, M = len(first), paths.n_paths
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
        if ref is not None and ref.ev_mw.shape[0] == H and _same_state(
                _feeder_key(key, n_gen, ev_state, n_st), _feeder_key(ref.next_key, n_gen, ev_state, n_st)[0]).all():
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
        return _Traj(ev_all, unmet, st_all, der_all, th_all[0], th_all[1], th_all[2], key, fnet_all)

    def _first_row(self, state: SurrogateState, paths: DayPaths, first: ActionBatch, split: EVSplit | None = None
                   ) -> _Traj:
        """Row 0 of the candidates (projected like the env), a one-row :class:`_Traj` with the
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
        key = np.concatenate([e1, est1, th0[0], _defer_key(first.ev_defer_steps, self.n_station),
                              first.storage_plan_mw], axis=1)

        def rows(a: np.ndarray) -> np.ndarray:                                                # (C, n) -> (1, C, M, n)
            return np.broadcast_to(a[:, None], (C, M, a.shape[-1]))[None].copy()

        return _Traj(rows(ev0), (unmet0[:, None] + paths.ev_future_unmet_kwh[0][None])[None], rows(st0), der0[None],
                     *(rows(v) for v in th0), key, np.zeros((1, C, M, m.n_feeder)))

    def _thermal_rows(self, load: np.ndarray, der_all: np.ndarray, fnet_all: np.ndarray, th_all: list[np.ndarray],
                      p0: np.ndarray, dt: float, ref: _Traj | None) -> None:
        """The base rule's thermal rows 1.. (``th_all``: setpoints, reserves (H, C, M, n_gen)) on
        the feeder net demand ``fnet_all``, each row's ramp window after the row before. Rows
        whose inputs equal ``ref``'s (see :meth:`_trajectory`) are ``ref``'s, in runs up to the
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
    def _ctrl(self, tr: _Traj) -> np.ndarray:
        """Feeder control vector (H, C, M, n_ctrl): [EV, storage, feeder DER used]."""
        return np.concatenate([tr.ev_mw, tr.storage_mw, tr.der_used_mw[..., :self.n_der_f]], axis=-1)

    def _exact_physics(self, paths: DayPaths, tr: _Traj, n_rows: int
                       ) -> tuple[_Physics, list[dict[str, Any]]]:
        """AC sweeps of every (row, candidate, path); also each feeder's operating points
        (complex voltages and injections, for warm-started re-solves and the expansion)."""
        m = self.model
        ctrl = self._ctrl(tr)
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
                viol += self._viol(k, vm)
                head[..., k] = res.s_slack_pu.real.reshape(H, C, M) * g.base_mva
                idx = self._feeder_ctrl[k]
                feeders[k] = {"v": v, "vm": vm, "s": cols.T.reshape(H, C, M, sw.n_bus), "ctrl_idx": idx,
                              "m_loc": self._m_ctrl[m.feeder_bus_slices[k]][:, idx], "group": g}
        return _Physics(head, viol), feeders

    def _viol(self, k: int, vm: np.ndarray) -> np.ndarray:
        """Sum over feeder ``k``'s buses of :func:`env.feeder_flow.voltage_violation_pu` (p.u.)."""
        sl = self.model.feeder_bus_slices[k]
        return voltage_violation_pu(vm, self.model.vmin_fb[sl], self.model.vmax_fb[sl]).sum(-1)

    @staticmethod
    def _sensitivities(L: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(sv, hf) of a feeder at the path-mean operating point of each row, computed on first
        use (:func:`_sweep_sensitivities`; sv per MW)."""
        if "sv" not in L:
            g, v, s = L["group"], L["v"], L["s"]
            H, nb = v.shape[0], v.shape[-1]
            vbar = v.reshape(H, -1, nb).mean(axis=1)
            sbar = s.reshape(H, -1, nb).mean(axis=1)
            sv, hf = _sweep_sensitivities(np.asarray(g.sweep.dlf), vbar, sbar, L["m_loc"], g.sweep.slack_bus, g.v0)
            L["sv"], L["hf"] = sv / g.base_mva, hf
        return L["sv"], L["hf"]

    def _delta_physics(self, ref: "_Reference", tr: _Traj, n_rows: int, max_columns: int,
                       commit: bool = False, keep: list | None = None) -> _Physics:
        """Feeder results of candidates against the reference trajectory ``ref``.

        Where a (row, candidate, path) has the reference's controls, the reference's results are
        reused; the others are re-solved by AC sweeps warm-started at the reference voltages
        (row 0, the nowcast, once per candidate when it is common to all paths); beyond
        ``max_columns`` columns per feeder the first-order expansion is used instead. With
        ``commit`` (one candidate) the reference becomes that candidate's trajectory; ``keep``
        receives the re-solved points ``(k, h, c, m, V, |V|, S, row0)`` (for :meth:`Lookahead.commit_last`).
        """
        m = self.model
        ctrl = self._ctrl(tr)
        H, C, M = ctrl.shape[:3]
        d = ctrl - ref.ctrl[:n_rows]                                                        # (H, C, M, n_ctrl)
        head = np.broadcast_to(ref.head[:n_rows], (H, C, M, m.n_feeder)).copy()
        viol = np.broadcast_to(ref.viol[:n_rows], (H, C, M)).copy()
        for k in range(m.n_feeder):
            L = ref.feeders[k]
            dk = d[..., L["ctrl_idx"]]
            changed = np.abs(dk).max(axis=-1, initial=0.0) > 1e-12
            if ref.row0_shared and M > 1:
                changed[0, :, 1:] = False                                                  # solved once, copied below
            if not changed.any():
                continue
            h, c, mm = np.nonzero(changed)
            du = dk[h, c, mm]                                                               # (n_col, n_i)
            g = L["group"]
            s_new = L["s"][h, 0, mm] + (du @ L["m_loc"].T) / g.base_mva                     # (n_col, n_bus)
            vm_old = L["vm"][h, 0, mm]
            if h.shape[0] <= max_columns:
                v, head_pu = _sweep_warm(np.asarray(g.sweep.dlf), s_new.T, L["v"][h, 0, mm].T, g.v0,
                                         g.sweep.slack_bus, self.settings.sweep_tol_pu)
                v = v.T
                vm = np.abs(v)
                dhead = head_pu * g.base_mva - ref.head[h, 0, mm, k]
            else:
                sv, hf = self._sensitivities(L)
                vm = vm_old + np.einsum("ni,nij->nj", du, sv[h])
                dhead = np.einsum("ni,ni->n", du, hf[h])
                v = L["v"][h, 0, mm] * (vm / vm_old)
            dviol = self._viol(k, vm) - self._viol(k, vm_old)
            head[h, c, mm, k] += dhead
            viol[h, c, mm] += dviol
            row0 = ref.row0_shared and M > 1 and bool((h == 0).any())
            if row0:                                                                        # copy to all paths
                r0 = h == 0
                head[0, c[r0], :, k] = head[0, c[r0], :1, k]
                viol[0, c[r0], :] = viol[0, c[r0], :1]
            if keep is not None:
                keep.append((k, h, c, mm, v, vm, s_new, row0))
            if commit:
                L["v"][h, 0, mm], L["vm"][h, 0, mm], L["s"][h, 0, mm] = v, vm, s_new
                if row0:
                    for name in ("v", "vm", "s"):
                        L[name][0, 0, 1:] = L[name][0, 0, :1]
                L.pop("sv", None)
                L.pop("hf", None)
        if commit:
            ref.ctrl[:n_rows] = ctrl
            ref.head[:n_rows] = head
            ref.viol[:n_rows] = viol
        return _Physics(head, viol)

    # ------------------------------------------------------------------ costs
    def _costs(self, paths: DayPaths, tr: _Traj, ph: _Physics, n_rows: int, bviol_mwh: np.ndarray | None = None
               ) -> dict[str, np.ndarray]:
        """Cost breakdown per row (H, C, M), keys of :data:`env.simulator.COST_KEYS`: the env's
        accounting (:func:`env.step_outcome.energy_terms`, :func:`env.step_outcome.cost_breakdown`)
        of the trajectory, after the T-D balancing (:meth:`_balance`; ``bviol_mwh``:
        :meth:`_unserved_boundary_mwh` of these rows, if already computed)."""
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

    def _balance(self, paths: DayPaths, tr: _Traj, ph: _Physics, H: int, bviol_mwh: np.ndarray | None = None
                 ) -> tuple[np.ndarray, ...]:
        """T-D real-time balancing of every (row, candidate, path) by the env's chain
        (:func:`env.balancing.balance`, the points flattened onto its batch axis) of the imbalance
        ``D = T loads + sum head - thermal - T wind``, the reference unit taking what is left,
        with no station reserve (the base rule offers none): the TSO call goes undelivered
        (:meth:`_unserved_boundary_mwh`, or ``bviol_mwh`` (H, 1, M)). Not modelled: the feeders'
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
        bviol = self._unserved_boundary_mwh(paths, H) if bviol_mwh is None else bviol_mwh
        return (r["der_used"].reshape(shape + (-1,)), thermal.reshape(shape + (-1,)),
                r["backoff"].reshape(shape), shed_mwh.reshape(shape), np.broadcast_to(bviol, shape))

    def _unserved_boundary_mwh(self, paths: DayPaths, H: int) -> np.ndarray:
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
        tr = self._trajectory(state, paths, first)
        ph, _ = self._exact_physics(paths, tr, paths.horizon)
        return {k: v.sum(axis=0) for k, v in self._costs(paths, tr, ph, paths.horizon).items()}

    def lookahead(self, state: SurrogateState, paths: DayPaths, reference: ActionBatch,
                  max_columns: int = 4096) -> "Lookahead":
        """A :class:`Lookahead` that prices candidates around ``reference`` (one action)."""
        return Lookahead(self, state, paths, reference, max_columns)


def _sweep_warm(dlf: np.ndarray, s: np.ndarray, v_start: np.ndarray, v0: complex, slack: int, tol: float,
                max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The sweep kernel (:func:`env.physics.sweep.fixed_point`) from ``v_start`` (columns =
    operating points, per unit); returns (|V| (n_bus, K), head P ``Re(V0 conj(sum I))`` (K,)).

    Raises:
        PowerFlowError: no convergence (an overloaded feeder).
    """
    s_conj = np.conjugate(s, dtype=complex, order="C")
    s_conj[slack] = 0.0
    v = np.array(v_start, dtype=complex, order="C")
    v, i_bus, _ = fixed_point(dlf.dot, v0, s_conj, v, tol, max_iter, "surrogate")
    return np.abs(v), slack_power_pu(v0, i_bus).real


def _sweep_sensitivities(dlf: np.ndarray, v: np.ndarray, s: np.ndarray, m_loc: np.ndarray, slack: int,
                         v0: complex) -> tuple[np.ndarray, np.ndarray]:
    """Derivatives of ``|V|`` and the head power of the sweep's fixed point w.r.t. real injections.

    At ``V = V0 - DLF conj(S / V)`` (per unit, ``v``, ``s`` of shape (H, n_bus), ``S`` = net
    consumption), a consumption change ``dp = m_loc u`` gives
    ``dV = -DLF (dp / conj(V)) + DLF diag(conj(S) / conj(V)^2) conj(dV)``, a real linear system
    in ``(Re dV, Im dV)`` solved per row; then ``d|V_j| = Re(conj(V_j) dV_j) / |V_j|`` and
    ``dP_head = Re(V0 conj(sum_j dI_j))`` with ``dI = dp / conj(V) - conj(S) conj(dV) / conj(V)^2``.

    Returns:
        sv (H, n_u, n_bus): ``d|V_j| / du_i``; hf (H, n_u): ``dP_head / du_i`` (both per unit).
    """
    H, n = v.shape
    s = s.copy()
    s[:, slack] = 0.0
    cv = np.conj(v)
    d2 = np.conj(s) / (cv * cv)                                                  # (H, n)
    B = dlf[None] * d2[:, None, :]                                               # (H, n, n)
    K = np.block([[B.real, B.imag], [B.imag, -B.real]])                          # (H, 2n, 2n)
    A = np.eye(2 * n)[None] - K
    c = -np.einsum("jb,hb,bi->hji", dlf, 1.0 / cv, m_loc)                       # (H, n, n_u)
    x = np.linalg.solve(A, np.concatenate([c.real, c.imag], axis=1))           # (H, 2n, n_u)
    dv = x[:, :n] + 1j * x[:, n:]
    sv = ((v.real[:, :, None] * dv.real + v.imag[:, :, None] * dv.imag) / np.abs(v)[:, :, None])
    di = m_loc[None] / cv[:, :, None] - d2[:, :, None] * np.conj(dv)            # (H, n, n_u)
    di[:, slack] = 0.0
    hf = (v0 * np.conj(di.sum(axis=1))).real
    return np.swapaxes(sv, 1, 2), hf


@dataclass
class _Reference:
    """The trajectory candidates are priced against (initially the reference action's; after a
    :meth:`Lookahead.commit`, the committed action's), with its feeder operating points."""

    ctrl: np.ndarray            # (H, 1, M, n_ctrl)
    head: np.ndarray            # (H, 1, M, F)
    viol: np.ndarray            # (H, 1, M)
    feeders: list[dict[str, Any]]
    row0_shared: bool           # row 0 (the nowcast) identical on every path
    key: np.ndarray             # state after row 0
    rows: np.ndarray            # (H, M) total cost per row
    traj: _Traj                 # its dispatch trajectory (rows reused by candidates, see DaySurrogate._trajectory)


class Lookahead:
    """Q-factors of first-step actions at one state, on one set of paths (common random numbers).

    ``Q(u)[m] = cost of row 0 with u + cost of the base rule on rows 1.. of path m``. The
    reference action is simulated with AC sweeps on every row and path; other candidates re-solve
    only the (row, path) points where their controls differ from the current reference (warm-started
    sweeps), and candidates whose state after row 0 equals the reference's (e.g. a curtailment
    change) share its rows 1.. . :meth:`commit` moves the reference to a chosen candidate.

    Args:
        max_columns: per feeder and evaluation, at most this many operating points are re-solved
            by sweeps; beyond, the first-order expansion of the module docstring is used.
    """

    def __init__(self, sur: DaySurrogate, state: SurrogateState, paths: DayPaths, reference: ActionBatch,
                 max_columns: int = 4096) -> None:
        if len(reference) != 1:
            raise ValueError("Lookahead: the reference must be one action")
        self.sur, self.state, self.paths, self.max_columns = sur, state, paths, int(max_columns)
        H = paths.horizon
        tr = sur._trajectory(state, paths, reference)
        ph, feeders = sur._exact_physics(paths, tr, H)
        shared = bool(np.ptp(paths.load_p_mw[0], axis=0).max(initial=0.0) == 0.0
                      and np.ptp(paths.der_avail_mw[0], axis=0).max(initial=0.0) == 0.0
                      and np.ptp(paths.load_q_mvar[0], axis=0).max(initial=0.0) == 0.0)
        self._bviol = sur._unserved_boundary_mwh(paths, H) if sur.is_td else None
        self._split = EVSplit(state.ev, state.step, paths.dt_h, sur.n_station)
        rows = sur._costs(paths, tr, ph, H, self._bviol)["total"][:, 0]
        self._ref = _Reference(sur._ctrl(tr).copy(), ph.head_mw.copy(), ph.v_viol_pu.copy(), feeders, shared,
                               tr.next_key[0].copy(), rows, tr)
        self.reference_cost = rows.sum(axis=0)                                               # (M,)
        self.current_cost = self.reference_cost.copy()

    def evaluate(self, actions: ActionBatch) -> np.ndarray:
        """Q (C, M) of ``actions`` on every path."""
        sur, paths, ref = self.sur, self.paths, self._ref
        H = paths.horizon
        out = np.empty((len(actions), paths.n_paths))
        self._last: list[tuple[Any, ...]] = []
        tr1 = sur._first_row(self.state, paths, actions, self._split)
        same = _same_state(tr1.next_key, ref.key)
        for sel, rows in ((same, 1), (~same, H)):
            if not sel.any():
                continue
            idx = np.flatnonzero(sel)
            tr = _take_traj(tr1, idx)
            if rows > 1:
                tr = sur._trajectory(self.state, paths, actions.take(idx), ref=ref.traj, row0=tr)
            keep: list[tuple[Any, ...]] = []
            ph = sur._delta_physics(ref, tr, rows, self.max_columns, keep=keep)
            cost = sur._costs(paths, tr, ph, rows, None if self._bviol is None else self._bviol[:rows])["total"]
            out[idx] = cost.sum(axis=0) + (ref.rows[1:].sum(axis=0) if rows == 1 else 0.0)
            self._last.append((idx, tr, rows, ph, keep, cost))
        return out

    def commit_last(self, i: int) -> np.ndarray:
        """:meth:`commit` candidate ``i`` of the last :meth:`evaluate` (no re-simulation)."""
        ref = self._ref
        for idx, tr, rows, ph, keep, cost in self._last:
            hit = np.flatnonzero(idx == i)
            if not hit.size:
                continue
            j = int(hit[0])
            for k, h, c, mm, v, vm, s_new, row0 in keep:
                L, on = ref.feeders[k], c == j
                L["v"][h[on], 0, mm[on]], L["vm"][h[on], 0, mm[on]], L["s"][h[on], 0, mm[on]] = v[on], vm[on], \
                    s_new[on]
                if row0 and (h[on] == 0).any():
                    for name in ("v", "vm", "s"):
                        L[name][0, 0, 1:] = L[name][0, 0, :1]
                L.pop("sv", None)
                L.pop("hf", None)
            ref.ctrl[:rows] = self.sur._ctrl(tr)[:, j:j + 1]
            ref.head[:rows] = ph.head_mw[:, j:j + 1]
            ref.viol[:rows] = ph.v_viol_pu[:, j:j + 1]
            ref.rows[:rows] = cost[:, j]
            ref.key = tr.next_key[j].copy()
            if rows == ref.traj.ev_mw.shape[0]:
                ref.traj = _take_traj(tr, np.array([j]))
            self.current_cost = ref.rows.sum(axis=0)
            return self.current_cost
        raise ValueError(f"Lookahead.commit_last: no candidate {i} in the last evaluation")

    def commit(self, action: ActionBatch) -> np.ndarray:
        """Make ``action`` (one) the reference candidates are priced against; returns its Q (M,)."""
        self.evaluate(action)
        return self.commit_last(0)


def _same_state(keys: np.ndarray, ref_key: np.ndarray) -> np.ndarray:
    """(C,) whether each candidate's state after row 0 and its storage plan equal the reference's
    (a shorter plan is padded with "base rule" entries)."""
    width = max(keys.shape[1], ref_key.shape[0])
    k = np.pad(keys, ((0, 0), (0, width - keys.shape[1])), constant_values=_PLAN_FREE)
    r = np.pad(ref_key, (0, width - ref_key.shape[0]), constant_values=_PLAN_FREE)
    return np.abs(k - r).max(axis=1, initial=0.0) <= 1e-12


def _feeder_key(key: np.ndarray, n_gen: int, ev: ConnectedEVs, n_st: int) -> np.ndarray:
    """The columns of state keys (C, n) that the feeder rows 1.. depend on (all but the thermal setpoints)."""
    cut = len(ev) + n_st
    return np.concatenate([key[:, :cut], key[:, cut + n_gen:]], axis=1)


def _take_traj(tr: _Traj, idx: np.ndarray) -> _Traj:
    return _Traj(*(getattr(tr, f.name)[:, idx] if f.name != "next_key" else tr.next_key[idx]
                   for f in fields(tr)))
