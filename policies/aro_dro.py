"""Seed 000's DRO-ARO TSO-DSO controller: a day-ahead plan plus a recourse LP at every step.

**Plan** (:mod:`policies.planning`): at the first step of the day the policy builds the
planning data from ``forecast.day_ahead`` (non-anticipative) and solves the first stage: thermal
energy and reserves, the stations' TOU schedule and cleared regulation, and the boundary reserves
the DSOs sell to the TSO; by ADMM (TSO and DSOs coordinated, seed 000) or centrally. If ADMM fails
or does not converge the centralized C&CG solve is used instead and this is recorded in
:attr:`AroDroPolicy.plan_log` and, as a fallback the loop reports, in :attr:`AroDroPolicy.fallback_log`.
The first stage prices load shedding (and curtailment through its recourse), so a tight day has
a plan with expected shedding rather than none.

**Intraday stage (seed 000), the default**: the plan is re-solved every ``replan_every_h`` hours
(default 6) for the whole day from a :class:`~scenarios.DayAheadInfo` whose load and wind-speed forecasts are
replaced, from the current step on, by the current intraday point forecast (the error samples of
the planner are still drawn from the day-ahead error model, so the plan stays conservative); each
step the TSO re-dispatches its thermal units within the cleared band and, beyond it, at
``redispatch_price_per_mwh`` (default :data:`REDISPATCH_PRICE_PER_MWH`) and calls the boundary
reserves, and the DSOs move their stations within the cleared regulation (the recourse below).
``aro_dro_hard_band`` plans once and keeps the setpoints inside the cleared band.

**Recourse** (:class:`RecourseLP`, built once with cvxpy Parameters, DPP, re-solved by HiGHS each
step): one LP on the realized step (the observation's nowcast of loads and availability) that
moves only what the plan cleared (variables in brackets)::

    min  fuel(P) [tangents] + (subsidy - EV price) dt sum P_ev + c_der dt sum w
         + pen_curt dt (sum (avail - w) + spill) + VOLL dt (shed + line overload)
         + pen_V dt sum viol(v) + c_st dt sum (p_c + p_d) - v_st e_end
         + c_ev dt sum (ru + rd) + kappa pen_B dt sum_d (s_up_d + s_dn_d)
         + c_redisp dt sum (x_up + x_dn)
    s.t. thermal (thermal_block): P in [max(p_min, P_last - ramp dt), min(p_max, P_last + ramp dt)]
             and in the cleared band W = [P_ref - r_dn, P_ref + r_up] clipped to that window, where
             P_ref = P_plan (interpolated) clipped to the window (= P_plan whenever reachable)
             (hard band: P in W; with ``redispatch_price_per_mwh``: P - x_up <= W_hi, P + x_dn >= W_lo)
         stations (ev_aggregate_block): P_ev in E = clip([P0_ref - r_up_ev, P0_ref + r_dn_ev], p_min, p_max)
             (plan schedule +- cleared regulation, inside the step's virtual-storage bounds;
             P0_ref = the schedule clipped into [p_min, p_max] when the connected EVs cannot follow it);
             the TSO share of the regulation held: P_ev - ru >= E_lo, P_ev + rd <= E_hi,
             0 <= ru <= share_up, 0 <= rd <= share_dn, sum_{s in d} ru + s_up_d >= Rup_d (same dn)
         storage (storage_block), DER 0 <= w <= avail (der_block), compensators at 0
         feeders: LinDistFlow (network_block "lin_compact"), head_d = -sum_j p_j
         transmission: 1^T p = 0 and |PTDF p| <= Fmax + o with
             p = C_g P + C_w w_T - (D - share shed) - C_b (head + loss_factor x feeder load) - e_ref spill

The TSO share of a station's regulation is ``share = r_ev x min(1, R_d / sum_{s in d} r_ev)``
(the feeder's boundary reserve ``R_d`` spread pro rata over its stations' cleared regulation).
The answer: setpoints ``P``, ``P_ev``, storage, curtailment; the thermal reserves still
undeployed, ``r_up = clip(W_hi - P, 0, min(p_max, P_last + ramp dt) - P)`` and
``r_dn = clip(P - W_lo, 0, P - max(p_min, P_last - ramp dt))``, go into the Dispatch (the env
deploys them for what the LP did not foresee: the TSO call, revealed after dispatch, and the
feeder losses); the held ``ru``, ``rd`` become ``ev_r_up_mw`` / ``ev_r_dn_mw`` so the env can
serve the TSO's call. Load shedding, spill and line overloads are slacks that keep the LP
feasible: the Dispatch has no shedding field; the env sheds what its balancing cannot cover.
On a solver failure the plan's own dispatch is played (:meth:`FirstStagePlan.to_dispatch` with
the heuristic's action as base, setpoints clipped into the same windows) and recorded in
:attr:`AroDroPolicy.fallbacks` / :attr:`AroDroPolicy.fallback_log`.

Only T-D grids are supported (the planner needs a transmission network): a single feeder raises
``ValueError`` at construction.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import cvxpy as cp
import numpy as np

from policies.planning import (
    FirstStagePlan,
    PlanningData,
    PlanningSettings,
    build_planning_data,
    solve_admm,
    solve_centralized,
)
from policies.planning.calibration import CalibrationSettings, beyond_cleared_reserves, calibrate
from policies.solver_quiet import quiet_highs
from env.dispatch import Dispatch, DispatchSizes
from env.formulations.dc import DCNetwork, incidence
from env.formulations.dispatch_model import (
    GridIndex,
    der_block,
    ev_aggregate_block,
    fuel_cost,
    network_block,
    storage_block,
    thermal_block,
    voltage_penalty,
)
from env.network import Grid
from env.observation import Observation
from env.settings import StrictKwargs
from env.simulator import GridModel, SimulatorSettings
from policies.heuristic import HeuristicPolicy

__all__ = ["ARO_VARIANTS", "REDISPATCH_PRICE_PER_MWH", "REPLAN_EVERY_H", "AroDroPolicy", "AroDroSettings", "RecourseLP", "StepBand",
           "make_variant"]

#: Price of intraday re-dispatch beyond the cleared band, the default recourse ($/MWh). Seed 000 has
#: no intraday market price; chosen below the curtailment (100) and shedding (1000) penalties of the
#: T-D tariff (so the recourse re-dispatches before it spills or sheds) and above the units' marginal
#: fuel cost. ``aro_dro_hard_band`` keeps the setpoints inside the cleared band instead.
REDISPATCH_PRICE_PER_MWH = 50.0

#: Default re-planning interval (h): the plan is re-solved on the intraday forecast at 0, 6, 12 and
#: 18 h. On t30d2 (cloudy days 1-4, centralized planner, redispatch recourse) re-planning every 6 h
#: or 3 h changed the day's cost by -0.1 % ... +0.1 % against planning once, at 3-4 x (6 h) and
#: 5-12 x (3 h) the decision time, so the interval is the coarse one.
REPLAN_EVERY_H = 6.0

#: Registry name -> the PlanningSettings fields that define the variant.
ARO_VARIANTS: dict[str, dict[str, str]] = {
    "aro_dro": {"uncertainty": "dro", "requirement": "aro", "evcs_service": "both"},
    "aro_ro": {"uncertainty": "ro", "requirement": "aro", "evcs_service": "both"},
    "aro_so": {"uncertainty": "so", "requirement": "aro", "evcs_service": "both"},
    "dro_only": {"uncertainty": "dro", "requirement": "none", "evcs_service": "both"},
    "evcs_both": {"uncertainty": "dro", "requirement": "aro", "evcs_service": "both"},
    "evcs_dso_only": {"uncertainty": "dro", "requirement": "aro", "evcs_service": "dso_only"},
    "evcs_none": {"uncertainty": "dro", "requirement": "aro", "evcs_service": "none"},
}


# ============================================================================ settings


@dataclass(frozen=True)
class AroDroSettings(StrictKwargs):
    """Settings of :class:`AroDroPolicy` (frozen; validated; unknown keys raise in :meth:`from_kwargs`).

    Attributes:
        planning: the day-ahead planner's settings (uncertainty model, requirement, EVCS service, ...).
        planner: ``"admm"`` (TSO and DSOs coordinated, seed 000; falls back to the centralized
            solve when ADMM fails or does not converge) or ``"centralized"``.
        replan_every_h: ``None``: plan once at the start of the day; ``H``: re-plan every ``H`` hours
            on the current intraday point forecast (see the module docstring); default
            :data:`REPLAN_EVERY_H` (seed 000's intraday stage).
        redispatch_price_per_mwh: ``None``: thermal setpoints stay inside the cleared band (hard;
            ``aro_dro_hard_band``): a deficit beyond the cleared up-reserve (and the stations' room)
            is shed, a surplus beyond the down-reserve is curtailed (renewables, then the env backs
            thermal units off, also counted as curtailment). A price (default
            :data:`REDISPATCH_PRICE_PER_MWH`, seed 000's intraday stage: the TSO re-dispatches its
            units): setpoints may leave the band, within unit limits and ramps, at this price per
            MWh beyond it; below the curtailment penalty the LP redispatches down before it spills.
        tso_share_weight: weight (0..1) of the boundary penalty on holding less than the boundary
            reserve the plan sold to the TSO (the call is revealed after dispatch).
        loss_factor: feeder losses added at the boundary, as a share of the feeder load (LinDistFlow
            has none; the env's remaining thermal reserves absorb the error).
        fuel_tangents: tangents of the quadratic fuel cost (keeps the recourse an LP).
        storage_value_per_mwh: value of the energy left in storage at the end of the step;
            ``None`` = the thermal units' capacity-weighted mean ``c1`` (storage then acts only
            when it avoids penalties or expensive output).
        objective_scale: the objective is divided by this in the solver (conditioning).
        solver: the LP solver (HiGHS).
        calibration: ``None``: the plan uses ``planning.n_samples`` and ``planning.radius_tso_mw``;
            else the day's first plan chooses them by the out-of-sample reserve check at
            ``calibration.risk`` (:func:`policies.planning.calibration.calibrate`, centralized
            candidate plans) and the day's re-plans keep the choice (``aro_dro_calibrated``).
    """

    planning: PlanningSettings = field(default_factory=PlanningSettings)
    planner: Literal["admm", "centralized"] = "admm"
    replan_every_h: float | None = REPLAN_EVERY_H
    redispatch_price_per_mwh: float | None = REDISPATCH_PRICE_PER_MWH
    tso_share_weight: float = 1.0
    loss_factor: float = 0.05
    fuel_tangents: int = 9
    storage_value_per_mwh: float | None = None
    objective_scale: float = 100.0
    solver: str = "HIGHS"
    calibration: CalibrationSettings | None = None

    def __post_init__(self) -> None:
        self.check_types()   # every field by its annotation (env.settings.check_field_types)
        if not isinstance(self.planning, PlanningSettings):
            raise ValueError(f"AroDroSettings.planning: a PlanningSettings, got {type(self.planning).__name__}")
        if self.planner not in ("admm", "centralized"):
            raise ValueError(f"AroDroSettings.planner: 'admm' or 'centralized', got {self.planner!r}")
        h = self.replan_every_h
        if h is not None and not (isinstance(h, (int, float)) and np.isfinite(h) and 0 < h <= 24):
            raise ValueError(f"AroDroSettings.replan_every_h: None or a number of hours in (0, 24], got {h!r}")
        for name in ("redispatch_price_per_mwh", "storage_value_per_mwh"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and v >= 0):
                raise ValueError(f"AroDroSettings.{name}: None or finite and >= 0, got {v!r}")
        for name in ("tso_share_weight", "loss_factor"):
            v = getattr(self, name)
            if not (np.isfinite(v) and 0 <= v <= 1):
                raise ValueError(f"AroDroSettings.{name}: must be in [0, 1], got {v!r}")
        if isinstance(self.fuel_tangents, bool) or int(self.fuel_tangents) != self.fuel_tangents \
                or self.fuel_tangents < 2:
            raise ValueError(f"AroDroSettings.fuel_tangents: an integer >= 2, got {self.fuel_tangents!r}")
        if not (np.isfinite(self.objective_scale) and self.objective_scale > 0):
            raise ValueError("AroDroSettings.objective_scale: must be finite and > 0")
        if self.solver not in cp.installed_solvers():
            raise ValueError(f"AroDroSettings.solver: {self.solver!r} is not installed")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "AroDroSettings":
        """Build from keyword arguments (``planning`` may be a dict of PlanningSettings fields);
        unknown keys raise ValueError listing the valid ones."""
        if isinstance(kwargs.get("planning"), dict):
            kwargs["planning"] = PlanningSettings.from_kwargs(**kwargs["planning"])
        return super().from_kwargs(**kwargs)


# ============================================================================ the step's windows


@dataclass(frozen=True)
class StepBand:
    """What the plan allows at one step (MW; see the module docstring).

    Attributes:
        step, period: env step and plan period.
        th_plan: (n_gen,) plan setpoint (interpolated).
        th_phys_lo, th_phys_hi: unit limits and ramps from the last setpoint (the env's window).
        th_band_lo / th_band_hi: the cleared band ``P_ref -+ r`` around ``P_ref = clip(P_plan,
            phys_lo, phys_hi)``: the plan's setpoint, moved into the ramp window when it is not
            reachable from the last setpoint (the plan does not know the env's initial state, and
            a re-plan may jump), so the cleared reserve amounts are kept.
        th_lo, th_hi: the band clipped into the physical window (``W``).
        ev_plan: (n_station,) plan schedule (from the expected sessions of the day ahead).
        ev_band_lo / ev_band_hi: ``P0_ref -+ r_ev`` around ``P0_ref = clip(P0, p_min, p_max)`` (the
            schedule moved into the step's bounds when the connected EVs cannot follow it).
        ev_lo, ev_hi: the band clipped into the step's ``[p_min, p_max]`` (``E``).
        ev_p_min, ev_p_max: the step's station bounds.
        share_up, share_dn: (n_station,) TSO share of the stations' regulation.
        need_up, need_dn: (n_boundary,) boundary reserves sold to the TSO this period.
    """

    step: int
    period: int
    th_plan: np.ndarray
    th_band_lo: np.ndarray
    th_band_hi: np.ndarray
    th_phys_lo: np.ndarray
    th_phys_hi: np.ndarray
    th_lo: np.ndarray
    th_hi: np.ndarray
    ev_plan: np.ndarray
    ev_band_lo: np.ndarray
    ev_band_hi: np.ndarray
    ev_lo: np.ndarray
    ev_hi: np.ndarray
    ev_p_min: np.ndarray
    ev_p_max: np.ndarray
    share_up: np.ndarray
    share_dn: np.ndarray
    need_up: np.ndarray
    need_dn: np.ndarray

    def remaining_reserves(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Undeployed cleared reserves at setpoints ``p`` within the env's headroom:
        ``r_up = clip(W_hi - P, 0, phys_hi - P)``, ``r_dn = clip(P - W_lo, 0, P - phys_lo)``."""
        up = np.clip(self.th_hi - p, 0.0, np.maximum(self.th_phys_hi - p, 0.0))
        dn = np.clip(p - self.th_lo, 0.0, np.maximum(p - self.th_phys_lo, 0.0))
        return up, dn


def tso_share(r_ev: np.ndarray, feeder: np.ndarray, sold: np.ndarray) -> np.ndarray:
    """Per station, ``r_s min(1, R_d / sum_{s' in d} r_s')`` (``R_d`` = ``sold[d]``)."""
    total = np.bincount(feeder, weights=r_ev, minlength=sold.shape[0])
    ratio = np.divide(sold, total, out=np.zeros_like(sold), where=total > 1e-9)
    return r_ev * np.minimum(ratio, 1.0)[feeder]


def step_band(plan: FirstStagePlan, model: GridModel, obs: Observation) -> StepBand:
    """The plan's windows at ``obs.step`` (thermal and stations; see :class:`StepBand`)."""
    dt_min = round(obs.dt_h * 60)
    p = plan.period_of(obs.step, dt_min)
    th_plan = plan.thermal_setpoint(obs.step, dt_min, interpolate=True)
    ramp = model.g_ramp * obs.dt_h
    last = np.asarray(obs.thermal_p_last_mw, dtype=float)
    up_lim = np.minimum(model.g_p_max, last + ramp)
    dn_lim = np.maximum(model.g_p_min, last - ramp)
    phys_lo, phys_hi = dn_lim, np.maximum(up_lim, dn_lim)
    ref = np.clip(th_plan, phys_lo, phys_hi)          # = th_plan whenever the plan is reachable
    band_lo, band_hi = ref - plan.thermal_r_dn_mw[p], ref + plan.thermal_r_up_mw[p]
    ev_min, ev_max = obs.ev.p_min_kw * 1e-3, np.maximum(obs.ev.p_max_kw, obs.ev.p_min_kw) * 1e-3
    ev_plan = plan.ev_p_mw[p]
    ev_ref = np.clip(ev_plan, ev_min, ev_max)         # = ev_plan whenever the schedule is reachable
    ev_blo, ev_bhi = ev_ref - plan.ev_r_up_mw[p], ev_ref + plan.ev_r_dn_mw[p]
    f = np.asarray(model.ev_feeder)
    return StepBand(
        step=obs.step, period=p, th_plan=th_plan, th_band_lo=band_lo, th_band_hi=band_hi,
        th_phys_lo=phys_lo, th_phys_hi=phys_hi,
        th_lo=np.clip(band_lo, phys_lo, phys_hi), th_hi=np.clip(band_hi, phys_lo, phys_hi),
        ev_plan=ev_plan, ev_band_lo=ev_blo, ev_band_hi=ev_bhi,
        ev_lo=np.clip(ev_blo, ev_min, ev_max), ev_hi=np.clip(ev_bhi, ev_min, ev_max),
        ev_p_min=ev_min, ev_p_max=ev_max,
        share_up=tso_share(plan.ev_r_up_mw[p], f, plan.boundary_r_up_mw[p]),
        share_dn=tso_share(plan.ev_r_dn_mw[p], f, plan.boundary_r_dn_mw[p]),
        need_up=np.asarray(plan.boundary_r_up_mw[p], dtype=float),
        need_dn=np.asarray(plan.boundary_r_dn_mw[p], dtype=float))


# ============================================================================ the recourse LP


class RecourseLP:
    """The one-step recourse LP of the module docstring, built once (Parameters, DPP).

    Args:
        grid, model: the grid and its :class:`GridModel`.
        dt_h: step length.
        settings: the policy's settings.
        ev_reserve_price: $/MWh of station regulation capacity (the env's).
    """

    def __init__(self, grid: Grid, model: GridModel, dt_h: float, settings: AroDroSettings,
                 ev_reserve_price: float) -> None:
        self.grid, self.model, self.dt, self.settings = grid, model, float(dt_h), settings
        self.ev_price = float(ev_reserve_price)
        self.index = GridIndex.from_model(model)
        self.cons: list[cp.Constraint] = []
        cost = self._feeders() + self._stations() + self._thermal() + self._transmission()
        self.problem = cp.Problem(cp.Minimize(cost / settings.objective_scale), self.cons)
        if not self.problem.is_dcp(dpp=True):
            raise RuntimeError("RecourseLP: the problem is not DPP")

    # ---------------------------------------------------------------- blocks
    def _feeders(self) -> cp.Expression:
        """Loads, DER (``0 <= w <= avail``), storage, stations and LinDistFlow feeders; their costs
        ``c_der dt w + pen_curt dt (avail - w) + c_st dt (p_c + p_d) - v_st e_end + pen_V dt viol``."""
        m, tar, dt = self.model, self.grid.tariff, self.dt
        sz = m.sizes
        P = cp.Parameter
        self.lp = [P((f.n_bus, 1), name=f"load_p_{k}") for k, f in enumerate(self.grid.feeders)]
        self.lq = [P((f.n_bus, 1), name=f"load_q_{k}") for k, f in enumerate(self.grid.feeders)]
        self.avail = P((sz.n_der, 1), nonneg=True, name="der_avail")
        self.used, c = der_block(self.avail, sz.n_der, 1)
        self.cons += c
        nst = sz.n_storage
        self.st_e0 = P(nst, nonneg=True, name="storage_e0") if nst else None
        self.st = storage_block(m.st_p_max, m.st_e_max, m.st_eta_c, m.st_eta_d,
                                self.st_e0 if nst else np.zeros(0), 1, dt)
        self.cons += self.st.constraints
        self.ev_lo, self.ev_hi = P((sz.n_evcs, 1), name="ev_lo"), P((sz.n_evcs, 1), name="ev_hi")
        self.ev = ev_aggregate_block(sz.n_evcs, 1, dt, self.ev_lo, self.ev_hi, self.ev_lo * dt, self.ev_hi * dt)
        self.cons += self.ev.constraints
        q = np.zeros((sz.n_comp, 1))
        self.net = network_block(self.index, "lin_compact", 1, self.lp, self.lq, self.ev.p_mw, self.st.net_mw,
                                 self.used, q)
        self.cons += self.net.constraints
        viol = sum(voltage_penalty(self.net.v[k], self.net.v_hat[k], f.bus.vmin_pu, f.bus.vmax_pu, "linear")
                   for k, f in enumerate(self.grid.feeders))
        cost = (tar.penalty_voltage_per_puh * dt * viol + dt * cp.sum(m.der_cost @ self.used)
                + tar.penalty_curtailment_per_mwh * dt * cp.sum(self.avail - self.used)
                + (tar.ev_subsidy_per_mwh - tar.ev_charging_price_per_mwh) * dt * cp.sum(self.ev.p_mw)
                + tar.penalty_ev_unmet_per_mwh * cp.sum(self.ev.shortfall_mwh))
        if nst:
            value = self._storage_value()
            cost += tar.storage_cost_per_mwh * dt * cp.sum(self.st.throughput_mw) - value * cp.sum(self.st.e_mwh[:, 1])
        return cost

    def _storage_value(self) -> float:
        s, m = self.settings, self.model
        if s.storage_value_per_mwh is not None:
            return float(s.storage_value_per_mwh)
        return float(m.g_c1 @ m.g_p_max / m.g_p_max.sum())

    def _stations(self) -> cp.Expression:
        """TSO share held: ``P_ev - ru >= E_lo``, ``P_ev + rd <= E_hi``, ``ru <= share_up``,
        ``rd <= share_dn``, ``F ru + s_up >= R_up``, ``F rd + s_dn >= R_dn`` (F: station -> feeder);
        cost ``c_ev dt sum (ru + rd) + kappa pen_B dt sum (s_up + s_dn)``."""
        m, tar, dt = self.model, self.grid.tariff, self.dt
        ns, nb = m.sizes.n_evcs, m.n_boundary
        P = cp.Parameter
        self.share_up, self.share_dn = P(ns, nonneg=True, name="share_up"), P(ns, nonneg=True, name="share_dn")
        self.need_up, self.need_dn = P(nb, nonneg=True, name="need_up"), P(nb, nonneg=True, name="need_dn")
        self.ru, self.rd = cp.Variable(ns, nonneg=True, name="ev_r_up"), cp.Variable(ns, nonneg=True, name="ev_r_dn")
        s_up, s_dn = cp.Variable(nb, nonneg=True), cp.Variable(nb, nonneg=True)
        pev = self.ev.p_mw[:, 0]
        F = np.asarray(m.f_ev)
        self.cons += [pev - self.ru >= self.ev_lo[:, 0], pev + self.rd <= self.ev_hi[:, 0],
                      self.ru <= self.share_up, self.rd <= self.share_dn,
                      F @ self.ru + s_up >= self.need_up, F @ self.rd + s_dn >= self.need_dn]
        pen = self.settings.tso_share_weight * tar.penalty_boundary_per_mwh
        return dt * (self.ev_price * cp.sum(self.ru + self.rd) + pen * cp.sum(s_up + s_dn))

    def _thermal(self) -> cp.Expression:
        """``thermal_block`` (limits, ramps from ``P_last``) and the band: hard ``W_lo <= P <= W_hi``,
        or ``P - x_up <= W_hi``, ``P + x_dn >= W_lo`` within the physical window at the redispatch
        price; fuel by tangents."""
        m, s, dt = self.model, self.settings, self.dt
        ng = m.n_gen
        P = cp.Parameter
        self.p_last = P(ng, name="thermal_p_last")
        th = thermal_block(m.g_p_min, m.g_p_max, m.g_ramp, self.p_last, 1, dt)
        self.P = th.p_mw[:, 0]
        self.th_lo, self.th_hi = P(ng, name="thermal_lo"), P(ng, name="thermal_hi")     # allowed window
        self.w_lo, self.w_hi = P(ng, name="band_lo"), P(ng, name="band_hi")            # the cleared band
        x_up, x_dn = cp.Variable(ng, nonneg=True), cp.Variable(ng, nonneg=True)
        self.cons += th.constraints + [th.r_up_mw == 0, th.r_dn_mw == 0,
                                       self.P >= self.th_lo, self.P <= self.th_hi,
                                       self.P - x_up <= self.w_hi, self.P + x_dn >= self.w_lo]
        fuel, c = fuel_cost(th.p_mw, m.g_c1, m.g_c2, dt, m.g_p_min, m.g_p_max, n_tangents=s.fuel_tangents)
        self.cons += c
        price = s.redispatch_price_per_mwh or 0.0
        return fuel + price * dt * cp.sum(x_up + x_dn)

    def _transmission(self) -> cp.Expression:
        """DC balance and PTDF line limits (see the module docstring); cost
        ``VOLL dt (shed + sum o) + pen_curt dt spill``."""
        m, tar, dt = self.model, self.grid.tariff, self.dt
        t = self.grid.transmission
        nbt = t.n_bus
        P = cp.Parameter
        self.load_t = P(nbt, nonneg=True, name="load_t_bus")
        self.shed_share = P(nbt, nonneg=True, name="shed_share")
        self.loss = P(m.n_boundary, nonneg=True, name="loss_estimate")
        self.shed, spill = cp.Variable(nonneg=True, name="shed_t"), cp.Variable(nonneg=True, name="spill")
        head = cp.hstack(self.net.head_mw)
        wind_t = self.used[self.index.n_der_f:, 0]
        ref = incidence(nbt, np.array([t.gen.bus[m.ref_unit]]))[:, 0]
        inj = (incidence(nbt, t.gen.bus) @ self.P + incidence(nbt, t.der.bus) @ wind_t - self.load_t
               + cp.multiply(self.shed_share, self.shed) - incidence(nbt, np.asarray(self.grid.boundary_bus)) @ (
                   head + self.loss) - ref * spill)
        row = cp.reshape(inj, (1, nbt), order="C")
        dc = DCNetwork.from_network(t)
        rated = dc.rated
        over = cp.Variable(rated.size, nonneg=True, name="line_over")
        flows = row @ dc.ptdf[rated].T + dc.f_shift_mw[rated][None, :]
        self.cons += [dc.balance(row), self.shed <= cp.sum(self.load_t),
                      flows[0] <= dc.rate_mw[rated] + over, flows[0] >= -dc.rate_mw[rated] - over]
        return dt * (tar.penalty_load_shed_per_mwh * (self.shed + 2.0 * cp.sum(over))
                     + tar.penalty_curtailment_per_mwh * spill)

    # ---------------------------------------------------------------- data and answer
    def set(self, obs: Observation, band: StepBand) -> None:
        """Fill the Parameters from the nowcast in ``obs`` and the step's windows."""
        m, ix, s = self.model, self.index, self.settings
        load = np.asarray(obs.load_p_mw, dtype=float)
        for k in range(m.n_feeder):
            self.lp[k].value = (ix.load_bus[k] @ load)[:, None]
            self.lq[k].value = (ix.load_bus[k] @ np.asarray(obs.load_q_mvar, dtype=float))[:, None]
        self.avail.value = np.maximum(np.asarray(obs.der_avail_mw, dtype=float), 0.0)[:, None]
        if self.st_e0 is not None:
            self.st_e0.value = np.maximum(np.asarray(obs.storage_e_mwh, dtype=float), 0.0)
        self.ev_lo.value, self.ev_hi.value = band.ev_lo[:, None], band.ev_hi[:, None]
        self.share_up.value, self.share_dn.value = band.share_up, band.share_dn
        self.need_up.value, self.need_dn.value = band.need_up, band.need_dn
        self.p_last.value = np.asarray(obs.thermal_p_last_mw, dtype=float)
        hard = s.redispatch_price_per_mwh is None
        self.th_lo.value = band.th_lo if hard else band.th_phys_lo
        self.th_hi.value = band.th_hi if hard else band.th_phys_hi
        self.w_lo.value, self.w_hi.value = band.th_lo, band.th_hi
        t = self.grid.transmission
        load_t = incidence(t.n_bus, t.load.bus) @ load[ix.n_load_f:]
        self.load_t.value = load_t
        self.shed_share.value = load_t / max(load_t.sum(), 1e-12)
        self.loss.value = s.loss_factor * (np.asarray(m.f_load) @ load[:ix.n_load_f])

    def solve(self) -> str:
        """Solve with HiGHS; returns ``""`` on success, else the failure reason."""
        quiet_highs()
        opts = {"warm_start": False} if self.settings.solver == "HIGHS" else {}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.problem.solve(solver=self.settings.solver, enforce_dpp=True, **opts)
        except cp.error.SolverError as exc:
            return f"solver error: {str(exc)[:80]}"
        if self.problem.status != cp.OPTIMAL:
            return f"status {self.problem.status}"
        if not np.all(np.isfinite(self.P.value)):
            return "non-finite solution"
        return ""

    def dispatch(self, obs: Observation, band: StepBand) -> Dispatch:
        """The Dispatch of the solved LP, clipped into the windows (solver tolerances)."""
        m = self.model
        p = np.clip(self.P.value, self.th_lo.value, self.th_hi.value)
        r_up, r_dn = band.remaining_reserves(p)
        ev = np.clip(self.ev.p_mw.value[:, 0], band.ev_lo, band.ev_hi)
        ru = np.clip(self.ru.value, 0.0, np.minimum(band.share_up, np.maximum(ev - band.ev_lo, 0.0)))
        rd = np.clip(self.rd.value, 0.0, np.minimum(band.share_dn, np.maximum(band.ev_hi - ev, 0.0)))
        avail = np.asarray(obs.der_avail_mw, dtype=float)
        used = self.used.value[:, 0] if m.sizes.n_der else np.zeros(0)
        curtail = np.divide(avail - used, avail, out=np.zeros_like(avail), where=avail > 1e-9)
        st = (self.st.p_charge_mw.value - self.st.p_discharge_mw.value)[:, 0] if m.sizes.n_storage else np.zeros(0)
        return Dispatch(ev_p_mw=ev, storage_p_mw=st, der_curtail_frac=np.clip(curtail, 0.0, 1.0),
                        thermal_p_mw=p, thermal_r_up_mw=r_up, thermal_r_dn_mw=r_dn, ev_r_up_mw=ru, ev_r_dn_mw=rd)

    @property
    def shed_mw(self) -> float:
        """The LP's transmission shedding slack of the last solve (MW)."""
        return float(self.shed.value) if self.shed.value is not None else float("nan")


# ============================================================================ the policy


def day_ahead_digest(da: Any) -> str:
    """A content hash of a DayAheadInfo (plan cache key)."""
    h = hashlib.sha1()
    for name in ("load_pu_da", "pv_clear_sky_pu", "pv_k_da", "wind_speed_ms_da", "ev_rate_per_h_da",
                 "tso_nominal_mw", "tso_deviation_mw", "tso_budget", "pv_p_max_mw", "wind_p_max_mw"):
        h.update(np.ascontiguousarray(getattr(da, name), dtype=float).tobytes())
    h.update(f"{da.dt_minutes}|{da.layout.case}|{da.params!r}".encode())
    return h.hexdigest()


def intraday_day_ahead(forecast: Any, step: int) -> Any:
    """The forecast's DayAheadInfo with load and wind speed from ``step`` on replaced by the
    intraday point forecast (its rows are steps ``step .. T-1``)."""
    da = forecast.day_ahead
    if step == 0:
        return da
    load, wind = np.array(da.load_pu_da), np.array(da.wind_speed_ms_da)
    load[step:] = np.asarray(forecast.load_pu)
    wind[step:] = np.maximum(np.asarray(forecast.wind_speed_ms), 0.0)
    return replace(da, load_pu_da=load, wind_speed_ms_da=wind)


class AroDroPolicy:
    """Day-ahead DRO-ARO plan + per-step recourse LP (see the module docstring).

    Args:
        grid: a T-D grid (single feeders raise ValueError).
        settings: :class:`AroDroSettings`.
        simulator_settings: the env's settings (the EV reserve price it charges).
        plan_cache: optional mapping shared by policies (and tests) to reuse plans of the same day
            ahead info, planning settings and planner (keyed by content).

    Attributes:
        plan: the current :class:`FirstStagePlan` (None before the first step).
        plan_log: one dict per planning run (step, method used, time, converged, fallback reason).
        fallbacks, fallback_log: steps of the current day on which the recourse LP failed and the
            plan's dispatch was played instead (or, without a plan, the heuristic's action:
            reason ``"no plan"``), with the reason; plan-level failures (ADMM replaced by the
            centralized solve, no plan) are logged as ``(step, "plan: ...")`` too
            (:mod:`policies.base`: the loop records every entry).
        solve_ms: per step, wall time of the recourse (LP data + solve).
        reserve_exceeded: per step with a plan, whether the wind deviation exceeded the cleared reserves.
        bands: per step, the :class:`StepBand` used.
        lp_shed_mw: per step, the LP's shedding slack (what the plan's windows could not cover).
    """

    name = "aro_dro"

    def __init__(self, grid: Grid, settings: AroDroSettings | None = None,
                 simulator_settings: SimulatorSettings | None = None,
                 plan_cache: MutableMapping[Any, FirstStagePlan] | None = None) -> None:
        if not grid.is_td or grid.transmission is None:
            raise ValueError(f"AroDroPolicy: needs a T-D grid (transmission + feeders, e.g. t30d2, t118d10); "
                             f"{grid.name} is a single feeder")
        if len(grid.layout.pv_names):
            raise ValueError(f"AroDroPolicy: grid {grid.name} has PV units, which the T-D planner does not model")
        self.grid = grid
        self.settings = settings or AroDroSettings()
        self.sim_settings = simulator_settings or SimulatorSettings()
        self.model = GridModel(grid)
        self.sizes = DispatchSizes.from_grid(grid)
        self.heuristic = HeuristicPolicy(grid)
        self.plan_cache = plan_cache
        m = self.model
        self._ev_price = (m.ev_reserve_price_default if self.sim_settings.ev_reserve_price_per_mwh is None
                          else float(self.sim_settings.ev_reserve_price_per_mwh))
        self._lps: dict[float, RecourseLP] = {}
        self.plan_log: list[dict[str, Any]] = []
        self.reset()

    # ------------------------------------------------------------------ Policy protocol
    def reset(self, seed: int | None = None) -> None:
        """Start a day: forget the plan and the day's records (compiled LPs are kept)."""
        self.plan: FirstStagePlan | None = None
        self._planned_at = -1
        self.fallbacks = 0
        self.fallback_log: list[tuple[int, str]] = []
        self.solve_ms: list[float] = []
        self.bands: list[StepBand] = []
        self.lp_shed_mw: list[float] = []
        self.reserve_exceeded: list[bool] = []
        self._plans_before_today = len(self.plan_log)     # plan_log spans days; day_stats counts today's
        self._day_planning: PlanningSettings | None = None  # the calibrated settings of today's plans
        self.calibration_share = float("nan")              # out-of-sample exceedance of today's choice
        self.calibration_reached = float("nan")            # 1 if it met the risk level, 0 if not

    def act(self, obs: Observation, forecast: Any = None) -> Dispatch:
        """Plan if due, then solve the recourse LP of ``obs.step`` (plan's dispatch on failure)."""
        if obs.is_terminal:
            raise ValueError("AroDroPolicy.act: the day is over")
        forecast = forecast if forecast is not None else obs.forecast
        if self._replan_due(obs):
            self._plan(obs, forecast)
        if self.plan is None:
            return self._fail(obs, None, "no plan")
        self.reserve_exceeded.append(self._exceeds_cleared_reserves(obs))
        t0 = time.perf_counter()
        band = step_band(self.plan, self.model, obs)
        self.bands.append(band)
        lp = self._lp(obs.dt_h)
        lp.set(obs, band)
        reason = lp.solve()
        dispatch = self._fail(obs, band, reason) if reason else lp.dispatch(obs, band)
        self.lp_shed_mw.append(lp.shed_mw if not reason else float("nan"))
        self.solve_ms.append((time.perf_counter() - t0) * 1e3)
        return dispatch

    # ------------------------------------------------------------------ planning
    def _replan_due(self, obs: Observation) -> bool:
        """At the day's first act, then every ``replan_every_h`` (a failed planning run is retried
        only then: planning takes seconds, so it is not repeated every step)."""
        if self._planned_at < 0 or obs.step < self._planned_at:
            return True
        h = self.settings.replan_every_h
        return h is not None and obs.step - self._planned_at >= max(1, round(h / obs.dt_h))

    def _plan(self, obs: Observation, forecast: Any) -> None:
        """Plan the day from the day-ahead info (or, re-planning, the intraday forecast)."""
        self._planned_at = obs.step
        if forecast is None:
            self.plan_log.append({"step": obs.step, "method": None, "fallback": "no forecast"})
            self.fallback_log.append((obs.step, "plan: no forecast"))
            return
        da = intraday_day_ahead(forecast, obs.step) if self.settings.replan_every_h else forecast.day_ahead
        planning = self._planning_for_today(obs, forecast.day_ahead)
        key = (self.grid.name, day_ahead_digest(da), planning, self.settings.planner)
        cached = self.plan_cache.get(key) if self.plan_cache is not None else None
        if cached is not None:
            self.plan = cached
            self.plan_log.append({"step": obs.step, "method": cached.method, "cached": True})
            return
        data = build_planning_data(self.grid, da, planning)
        plan, record = self.solve_plan(data)
        record["step"] = obs.step
        self.plan_log.append(record)
        if record["fallback"]:   # ADMM replaced by the centralized solve, or no plan at all
            self.fallback_log.append((obs.step, f"plan: {record['fallback']}"))
        if plan is not None:
            self.plan = plan
            if self.plan_cache is not None:
                self.plan_cache[key] = plan

    def _planning_for_today(self, obs: Observation, day_ahead: Any) -> PlanningSettings:
        """The planning settings of today's plans: ``settings.planning``, or with ``calibration``
        its N and TSO radius chosen on the day-ahead information at the day's first plan (logged
        in ``plan_log`` and reported by :meth:`day_stats`; a failed calibration is a fallback)."""
        cal = self.settings.calibration
        if cal is None:
            return self.settings.planning
        if self._day_planning is None:
            t0 = time.perf_counter()
            try:
                res = calibrate(self.grid, day_ahead, self.settings.planning, cal)
            except (RuntimeError, ValueError) as exc:
                self.fallback_log.append((obs.step, f"calibration failed ({exc}); planning with the set radius"))
                self._day_planning = self.settings.planning
                return self._day_planning
            self._day_planning = replace(self.settings.planning, n_samples=res.n_samples,
                                         radius_tso_mw=res.radius_tso_mw)
            self.calibration_share = res.exceedance_share
            self.plan_log.append({"step": obs.step, "method": "calibration", "n_samples": res.n_samples,
                                  "radius_tso_mw": res.radius_tso_mw, "exceedance_share": res.exceedance_share,
                                  "reached": res.reached, "tried": res.tried, "time_s": time.perf_counter() - t0,
                                  "fallback": ""})
            self.calibration_reached = float(res.reached)
        return self._day_planning

    def solve_plan(self, data: PlanningData) -> tuple[FirstStagePlan | None, dict[str, Any]]:
        """ADMM (if chosen), else / on failure or non-convergence the centralized solve.
        Returns (plan or None, record)."""
        record: dict[str, Any] = {"method": None, "fallback": ""}
        t0 = time.perf_counter()
        if self.settings.planner == "admm":
            try:
                res = solve_admm(data)
                record.update(admm_iterations=res.iterations, converged=res.converged)
                if res.converged:
                    record.update(method="admm", time_s=time.perf_counter() - t0)
                    return res.plan, record
                record["fallback"] = f"ADMM not converged in {res.iterations} iterations"
            except (RuntimeError, ValueError) as exc:
                record["fallback"] = f"ADMM failed: {exc}"
        try:
            plan = solve_centralized(data).plan
            record.update(method="centralized", time_s=time.perf_counter() - t0)
            return plan, record
        except (RuntimeError, ValueError) as exc:
            record.update(time_s=time.perf_counter() - t0, fallback=f"{record['fallback']}; centralized failed: {exc}")
            return None, record

    # ------------------------------------------------------------------ recourse
    def _lp(self, dt_h: float) -> RecourseLP:
        key = round(dt_h, 9)
        if key not in self._lps:
            self._lps[key] = RecourseLP(self.grid, self.model, dt_h, self.settings, self._ev_price)
        return self._lps[key]

    def _fail(self, obs: Observation, band: StepBand | None, reason: str) -> Dispatch:
        """Record a fallback and return the plan's dispatch (heuristic base, setpoints clipped
        into the step's windows), or the heuristic's action when there is no plan."""
        self.fallbacks += 1
        self.fallback_log.append((obs.step, reason))
        base = self.heuristic.act(obs)
        if self.plan is None or band is None:
            return base
        dt_min = round(obs.dt_h * 60)
        d = self.plan.to_dispatch(obs.step, dt_min, base=base, interpolate=True)
        p = np.clip(d.thermal_p_mw, band.th_lo, band.th_hi)
        r_up, r_dn = band.remaining_reserves(p)
        ev = np.clip(band.ev_plan, band.ev_lo, band.ev_hi)
        ru = np.minimum(band.share_up, ev - band.ev_lo)
        rd = np.minimum(band.share_dn, band.ev_hi - ev)
        return d.replace(thermal_p_mw=p, thermal_r_up_mw=r_up, thermal_r_dn_mw=r_dn, ev_p_mw=ev,
                         ev_r_up_mw=ru, ev_r_dn_mw=rd)

    def _exceeds_cleared_reserves(self, obs: Observation) -> bool:
        """Whether the step's transmission wind deviates from the plan by more than the plan cleared
        for its period: ``W_plan - avail > sum r_up + sum R_up`` (deficit beyond the thermal and
        boundary up-reserves) or ``avail - W_plan > sum r_dn + sum R_dn`` (surplus beyond the
        down-reserves, i.e. curtailment). ``avail`` is the observation's nowcast of the farms."""
        plan = self.plan
        assert plan is not None
        p = plan.period_of(obs.step, round(obs.dt_h * 60))
        n_f = sum(len(f.der) for f in self.grid.feeders)
        avail = float(np.maximum(np.asarray(obs.der_avail_mw, dtype=float)[n_f:], 0.0).sum())
        short, surplus = beyond_cleared_reserves(plan, p, avail)
        return bool(short > 1e-6 or surplus > 1e-6)

    # ------------------------------------------------------------------ reporting
    def day_stats(self) -> dict[str, float]:
        """KPIs of the current day: fallbacks, plans, recourse solve times (ms), and
        ``aro_reserve_exceedance_share``: the share of steps whose transmission wind deviation from
        the plan exceeded the reserves it cleared for the period (see :meth:`_exceeds_cleared_reserves`;
        what the ambiguity set is meant to cover at its risk level); with ``calibration``,
        ``aro_calibration_share`` is the out-of-sample share of the day's choice and
        ``aro_calibration_reached`` whether it met the risk level (else NaN)."""
        ms = np.asarray(self.solve_ms, dtype=float)
        ex = np.asarray(self.reserve_exceeded, dtype=float)
        return {"aro_reserve_exceedance_share": float(ex.mean()) if ex.size else float("nan"),
                "aro_calibration_share": self.calibration_share,
                "aro_calibration_reached": self.calibration_reached,
                "aro_fallbacks": float(self.fallbacks), "aro_steps": float(ms.size),
                "aro_plans": float(sum(r.get("method") != "calibration"
                                       for r in self.plan_log[self._plans_before_today:])),
                "aro_solve_ms_median": float(np.median(ms)) if ms.size else float("nan"),
                "aro_solve_ms_max": float(ms.max()) if ms.size else float("nan")}


def make_variant(name: str, grid: Grid, settings: AroDroSettings | None = None, **kwargs: Any) -> AroDroPolicy:
    """An :class:`AroDroPolicy` of registry variant ``name`` (:data:`ARO_VARIANTS`): the variant's
    ``uncertainty``, ``requirement`` and ``evcs_service`` replace those of ``settings.planning``
    (its other fields are kept); ``policy.name == name``."""
    if name not in ARO_VARIANTS:
        raise ValueError(f"make_variant: unknown variant {name!r}; known: {list(ARO_VARIANTS)}")
    base = settings or AroDroSettings()
    planning = PlanningSettings.from_kwargs(**{**asdict(base.planning), **ARO_VARIANTS[name]})
    policy = AroDroPolicy(grid, replace(base, planning=planning), **kwargs)
    policy.name = name
    return policy
