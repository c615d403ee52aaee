"""The day model's inputs: the state at a step, candidate actions, the sampled rest of the day.

:class:`SurrogateState` (storage, connected EVs, last thermal setpoints), :class:`ActionBatch`
(``C`` candidate dispatches of one step, with their multi-step parts) and :class:`DayPaths`
(``M`` paths of loads, renewables, prices, future EV charging and TSO requirements), as
:class:`policies.surrogate.DaySurrogate` plays them; and the state keys that tell when two
candidates leave the same state after their first step (docs/math.md section 7).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from env.balancing import initial_thermal
from env.dispatch import Dispatch
from env.evcs import asap_profile, unmet_kwh
from env.grid_model import GridModel
from env.network import Grid
from policies.ev_knowledge import ConnectedEVs
from scenarios import EVSessions, ScenarioSet

__all__ = ["PLAN_FREE", "ActionBatch", "DayPaths", "SurrogateState", "feeder_key", "future_ev", "paths_from_forecast",
           "paths_from_scenario", "same_state"]

PLAN_FREE = -1e30  # a plan entry left to the base rule (stored finite: batches must be finite)


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
            object.__setattr__(self, "storage_plan_mw", np.nan_to_num(plan, nan=PLAN_FREE))
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
        return np.where(p == PLAN_FREE, np.nan, p)

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


def same_state(keys: np.ndarray, ref_key: np.ndarray) -> np.ndarray:
    """(C,) whether each candidate's state after row 0 and its storage plan equal the reference's
    (a shorter plan is padded with "base rule" entries)."""
    width = max(keys.shape[1], ref_key.shape[0])
    k = np.pad(keys, ((0, 0), (0, width - keys.shape[1])), constant_values=PLAN_FREE)
    r = np.pad(ref_key, (0, width - ref_key.shape[0]), constant_values=PLAN_FREE)
    return np.abs(k - r).max(axis=1, initial=0.0) <= 1e-12


def feeder_key(key: np.ndarray, n_gen: int, ev: ConnectedEVs, n_st: int) -> np.ndarray:
    """The columns of state keys (C, n) that the feeder rows 1.. depend on (all but the thermal setpoints)."""
    cut = len(ev) + n_st
    return np.concatenate([key[:, :cut], key[:, cut + n_gen:]], axis=1)


def paths_from_forecast(model: GridModel, obs: Any, sample: ScenarioSet, q_comp_mvar: np.ndarray | None = None
                        ) -> DayPaths:
    """The paths of ``forecast.sample`` (rows ``t..T-1``) with row 0 replaced by the nowcast.

    EVs the sample lets arrive at ``t`` are dropped (the real ones are in ``obs.ev``); their
    mean dwell per hour is kept as the pseudo-EVs' dwell. ``q_comp_mvar``: the compensator
    setpoints held on every row (None: the day model's ``settings.q_comp_mvar``).
    """
    t, T, dt = int(obs.step), int(obs.n_steps), float(obs.dt_h)
    if sample.start_step != t or sample.horizon != T - t:
        raise ValueError(f"paths_from_forecast: sample covers steps {sample.start_step}.."
                         f"{sample.start_step + sample.horizon - 1}, expected {t}..{T - 1}")
    load = np.moveaxis(sample.load_p_mw, 1, 0).copy()                 # (H, M, n_load)
    load_q = np.moveaxis(sample.load_pu, 1, 0) * model.load_q_base
    der = np.moveaxis(model.der_mw(sample.pv_p_mw, sample.wind_p_mw), 1, 0).copy()
    load[0], der[0] = obs.load_p_mw, obs.der_avail_mw
    load_q[0] = obs.load_q_mvar
    ev_mw, unmet, dwell = future_ev(sample.ev_sessions, t, T, dt, len(sample), model.sizes.n_evcs)
    return DayPaths(start_step=t, n_steps=T, dt_h=dt, probabilities=sample.probabilities,
                    load_p_mw=load, load_q_mvar=load_q, der_avail_mw=der,
                    price_buy_per_mwh=np.asarray(obs.price_ahead_per_mwh, dtype=float),
                    ev_future_mw=ev_mw, ev_future_unmet_kwh=unmet,
                    tso_requirement_mw=np.moveaxis(sample.tso_requirement_mw, 1, 0), ev_dwell_steps=dwell,
                    q_comp_mvar=q_comp_mvar)

def paths_from_scenario(grid: Grid, model: GridModel, scenario: Any) -> tuple[DayPaths, SurrogateState]:
    """The realized day (a ``scenarios.Scenario``) as one path, with the state before the day
    (storage at its initial energy, the EVs arriving at step 0 connected)."""
    m, lay = model, grid.layout
    T, dt = int(scenario.n_steps), scenario.dt_minutes / 60.0
    load = (scenario.load_pu * lay.load_p_mw)[:, None]
    load_q = (scenario.load_pu * m.load_q_base)[:, None]
    der = model.der_mw(scenario.pv_p_mw, scenario.wind_p_mw)[:, None]
    ev = scenario.ev
    now = ev.select(ev.arrival_step == 0)
    ev_mw, unmet, _ = future_ev((ev,), 0, T, dt, 1, m.sizes.n_evcs)
    price = grid.tariff.buy_price_at(np.arange(T) * dt)
    paths = DayPaths(start_step=0, n_steps=T, dt_h=dt, probabilities=np.ones(1), load_p_mw=load,
                     load_q_mvar=load_q, der_avail_mw=der, price_buy_per_mwh=price, ev_future_mw=ev_mw,
                     ev_future_unmet_kwh=unmet, tso_requirement_mw=np.asarray(scenario.tso_requirement_mw)[:, None],
                     ev_dwell_steps=np.zeros(m.sizes.n_evcs))
    state = SurrogateState(step=0, storage_e_mwh=m.st_e_init.astype(float).copy(),
                           ev=ConnectedEVs.from_sessions(now, now.e_arrival_kwh, T),
                           thermal_p_last_mw=initial_thermal(m, load[0, 0], der[0, 0]))
    return paths, state

def future_ev(sessions: tuple[EVSessions, ...], t: int, T: int, dt: float, n_paths: int, n_station: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ASAP power (H, M, n_station) and unmet (H, M) of the sessions arriving after ``t``,
    and the mean dwell (steps) of sessions arriving within an hour of ``t``."""
    H, ns = T - t, n_station
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
