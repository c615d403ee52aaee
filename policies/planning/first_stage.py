"""Day-ahead first stage of seed 000's TSO-DSO coordination: data, the TSO and DSO problems, the plan.

The day is planned on hourly periods (``period_minutes = 60``, T = 24): the day-ahead
information (15-min steps) is averaged per period. Three stages (seed 000, Fig. 1):

1. **EVCS day-ahead demand** (:func:`ev_day_ahead`): every station is a virtual storage
   (docs/math.md §3) built from the *expected* sessions of the day-ahead EV forecast (the mean of
   ``ev_samples`` sampled EV days: ``P_max``, ``X_lo``, ``X_hi`` per station and period);
   as a price taker it charges at least cost under the time-of-use price,
   ``min sum_t price_t P_t s.t. 0 <= P <= P_max, X_lo <= sum P dt <= X_hi``, and declares
   the largest regulation it can hold, ``Rup_max = min(P0, (X0 - X_lo)/tau)``,
   ``Rdn_max = min(P_max - P0, (X_hi - X0)/tau)`` (``tau`` = one period). The feeder's
   baseline head power ``P_d`` is the AC sweep of the forecast loads and DER with the
   stations at ``P0`` (losses included).
2. **Day-ahead dispatch** (this module + :mod:`policies.planning.ccg`): the TSO clears
   thermal energy and reserves and the boundary reserves it buys; each DSO clears its
   stations' up/down regulation ``r_up``, ``r_dn`` (price signals ``ev_reg_price_*``) and
   the boundary reserves ``Rup_d``, ``Rdn_d`` it sells, backed by them.
3. **Intraday recourse** (inside both problems, per uncertainty realization).

Uncertainty (documented in :class:`PlanningSettings`):

* renewables — the forecast error ``xi_t`` of the *total* wind of an area (the T wind
  farms; the DER of one feeder), hourly mean, in MW; N samples are drawn from the
  day-ahead forecast model. ``uncertainty="dro"``: 1-Wasserstein ball with the 1-norm
  over the 24 hourly errors **in MW** (scale 1 MW per hour; equivalently the 1-norm over
  the units' MW errors, since the recourse only sees totals), radius ``radius_tso_mw = 10``
  and ``radius_dso_mw = 1`` (seed 000's values), support ``0 <= wind <= capacity``;
  ``"so"``: the sample average (radius 0); ``"ro"``: a budget set around the sample mean
  with the samples' envelope as deviation and ``ro_budget_h`` periods of deviation.
* the TSO's requirement on each boundary (seed 000's ARO) — the day-ahead
  :class:`scenarios.BudgetSet` (hourly: nominal = mean, deviation = max over the hour,
  Gamma = budget hours); ``requirement="none"`` keeps only its nominal (DRO-only).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from env.dispatch import Dispatch, DispatchSizes
from env.formulations.dc import DCNetwork, incidence, thermal_units
from env.formulations.distflow import radial_topology
from env.network import Grid, Network
from env.physics.grid_flow import GridPhysics, per_bus
from env.settings import StrictKwargs
from scenarios import BudgetSet, DayAheadInfo, Forecast, Observed
from scenarios.ambiguity import top_gamma_sum
from scenarios.ev_ports import sessions_each

__all__ = [
    "AreaUncertainty", "EVDayAhead", "FeederData", "FirstStagePlan", "PlanningData", "PlanningError",
    "PlanningSettings",
    "ProxPWL", "SolveRecord", "TSOData", "TSOModel", "TSOPieces", "TSOSolver", "assemble_plan",
    "build_planning_data", "ev_day_ahead", "restrict_periods", "solve_problem",
]

Uncertainty = Literal["dro", "ro", "so"]
Requirement = Literal["aro", "none"]
Service = Literal["both", "dso_only", "none"]


# ============================================================================ settings


@dataclass(frozen=True)
class PlanningSettings(StrictKwargs):
    """Options of the day-ahead plan (frozen; validated; unknown keys raise in :meth:`from_kwargs`).

    Attributes:
        period_minutes: planning period (60: 24 hourly periods; must divide the day and be a
            multiple of the day-ahead step).
        uncertainty: renewable uncertainty model, ``"dro"`` (Wasserstein), ``"ro"`` (budget
            box robust), ``"so"`` (sample average = Wasserstein radius 0).
        requirement: ``"aro"`` (the TSO requirement ranges over its budget set) or ``"none"``
            (nominal requirement only: seed 000's DRO-only case).
        evcs_service: ``"both"`` (stations regulate for the DSO and, through the boundary
            reserves, for the TSO), ``"dso_only"`` (no boundary reserve; the boundary is a
            rigid load and the requirement is not served), ``"none"`` (no station regulation).
        n_samples: N, sampled day-ahead forecast error paths.
        radius_tso_mw, radius_dso_mw: Wasserstein radii in MW (1-norm over the hourly errors
            of the area's total wind, averaged over the samples).
        ro_budget_h: RO only: number of periods in which the renewable error may sit at its
            envelope (Gamma of the renewable budget set).
        ccg_tol: relative C&CG gap (seed 000: 0.5 %).
        ccg_max_iter: C&CG iterations for a stand-alone solve.
        subproblem: C&CG worst-case oracle, ``"milp"`` (dual MILP with McCormick, HiGHS) or
            ``"enumerate"`` (exact per-period enumeration + dynamic program; valid because the
            DSO recourse is separable over periods).
        ev_samples: sampled EV days averaged into the expected virtual storage.
        ev_reg_price_up_per_mwh, ev_reg_price_dn_per_mwh: price signals for station
            regulation capacity; ``None`` = the env's EV reserve price (p_max-weighted mean of
            the thermal reserve prices).
        reserve_time_h: delivery time of thermal reserves (the env's 15-min step: a unit holds
            at most ``ramp x 0.25 h``).
        env_step_minutes: the env step the plan is executed at; thermal ramps and reserves are
            coupled per step with setpoints interpolated between periods
            (:func:`env.formulations.dc.thermal_units` ``substeps``), as the env checks them.
        tso_deploy_cost: price thermal reserve deployment at ``c1`` (else 0).
        admm_rho: ADMM penalty; ``None`` = 15 for up to two feeders (T30D2), 20 beyond (T118D10).
        admm_eps_abs (MW), admm_eps_rel: stopping tolerances (docs/math.md §6).
        admm_max_iter: ADMM iteration limit.
        admm_balance: residual balancing (rho x/÷ 2 when one residual exceeds 10 x the other).
        admm_balance_changes: stop adapting rho after this many changes.
        admm_balance_start: first iteration at which rho may be adapted (the first iterations move
            z a lot while the duals build up; halving rho then slows ADMM down).
        admm_balance_patience: rho changes only after the same imbalance held this many
            consecutive iterations (a change of rho makes the iterates jump, which inflates the
            next dual residual and would undo the change at once).
        admm_warm_duals: start the ADMM multipliers at the TSO's marginal values (see
            :mod:`policies.planning.admm`); else at 0.
        admm_ccg_iter: C&CG iterations per DSO and ADMM iteration (inexact ADMM; the last
            iterations run C&CG to ``ccg_tol``).
        solver: cvxpy solver for the LPs and MILPs (HiGHS).
        fuel_segments: tangent segments of the thermal fuel cost ``c2 P^2`` (an LP; error
            <= c2 (Pmax/K)^2/4 per unit and hour); ``None`` = the exact quadratic (then the TSO
            and centralized problems are QPs solved by ``qp_solver``).
        qp_solver: cvxpy solver for problems with quadratic terms; ``None`` = ``solver``.
        tso_prox: the TSO's ADMM proximal term, ``"pwl"`` (the LP model :class:`ProxPWL`) or
            ``"quadratic"`` (exact, a QP for ``qp_solver``; on t30d2 it needed 41-49 iterations
            against 19-37, residual balancing pushing rho to 240 where the relative dual tolerance
            ``eps_rel ||rho u||`` gets loose, and stopped up to 2.6 % above the optimum).
        seed: seed of the error and EV samples.
    """

    period_minutes: int = 60
    uncertainty: Uncertainty = "dro"
    requirement: Requirement = "aro"
    evcs_service: Service = "both"
    n_samples: int = 10
    radius_tso_mw: float = 10.0
    radius_dso_mw: float = 1.0
    ro_budget_h: float = 6.0
    ccg_tol: float = 0.005
    ccg_max_iter: int = 30
    subproblem: Literal["milp", "enumerate"] = "enumerate"
    ev_samples: int = 20
    ev_reg_price_up_per_mwh: float | None = None
    ev_reg_price_dn_per_mwh: float | None = None
    reserve_time_h: float = 0.25
    env_step_minutes: int = 15
    tso_deploy_cost: bool = True
    admm_rho: float | None = None
    # 0.05 MW: 50 kW RMS mismatch per boundary quantity and hour (station regulation is ~0.3 MW
    # per station). On t30d2 (cloudy days 8200-8203, 8209) 0.01 MW took 32-49+ iterations for the
    # same plan cost: 0.05 MW took 14, 16, 21, 54, 29 iterations, objective within 0.4 % of the
    # centralized solve on every day.
    admm_eps_abs: float = 0.05
    admm_eps_rel: float = 1e-3
    admm_max_iter: int = 100
    admm_balance: bool = True
    admm_balance_changes: int = 4
    admm_balance_start: int = 10
    admm_balance_patience: int = 3
    admm_warm_duals: bool = True
    admm_ccg_iter: int = 1
    solver: str = "HIGHS"
    fuel_segments: int | None = 16
    qp_solver: str | None = "CLARABEL"
    tso_prox: Literal["quadratic", "pwl"] = "pwl"
    seed: int = 0

    def __post_init__(self) -> None:
        choices = {"uncertainty": ("dro", "ro", "so"), "requirement": ("aro", "none"),
                   "evcs_service": ("both", "dso_only", "none"), "subproblem": ("milp", "enumerate"),
                   "tso_prox": ("quadratic", "pwl")}
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"PlanningSettings.{name}: must be one of {valid}, got {getattr(self, name)!r}")
        if self.period_minutes not in (15, 30, 60, 120) or 1440 % self.period_minutes:
            raise ValueError(f"PlanningSettings.period_minutes: 15, 30, 60 or 120, got {self.period_minutes}")
        for name in ("n_samples", "ev_samples", "ccg_max_iter", "admm_max_iter", "admm_ccg_iter", "admm_balance_start",
                     "admm_balance_patience"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                raise ValueError(f"PlanningSettings.{name}: must be an integer >= 1")
        for name in ("radius_tso_mw", "radius_dso_mw", "ro_budget_h", "admm_balance_changes"):
            if not (np.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"PlanningSettings.{name}: must be finite and >= 0")
        for name in ("ccg_tol", "reserve_time_h", "admm_eps_abs"):
            if not (np.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"PlanningSettings.{name}: must be finite and > 0")
        if not 0 <= self.admm_eps_rel < 1:
            raise ValueError("PlanningSettings.admm_eps_rel: must be in [0, 1)")
        for name in ("ev_reg_price_up_per_mwh", "ev_reg_price_dn_per_mwh", "admm_rho"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and v >= 0 and (name != "admm_rho" or v > 0)):
                raise ValueError(f"PlanningSettings.{name}: must be None or finite and >= 0 (rho > 0)")


    def rho_for(self, n_feeder: int) -> float:
        """The ADMM penalty: the setting, or seed 000's 15 (<= 2 feeders) / 20 (more)."""
        if self.admm_rho is not None:
            return float(self.admm_rho)
        return 15.0 if n_feeder <= 2 else 20.0


# ============================================================================ solver helper


@dataclass
class SolveRecord:
    """Status and time of every solve of one problem (failures are recorded, then raised)."""

    name: str
    n_solves: int = 0
    time_s: float = 0.0
    failures: list[str] = field(default_factory=list)


class PlanningError(RuntimeError):
    """A planning solve failed: which stage (the :class:`SolveRecord` name, e.g. ``"tso"``,
    ``"centralized_master"``, ``"dso0_master"``) and the solver status (or ``"solver error"``)."""

    def __init__(self, stage: str, status: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.status = status


def solve_problem(problem: cp.Problem, solver: str, record: SolveRecord) -> float:
    """Solve ``problem`` with ``solver`` (HiGHS: ``warm_start=False``) and check the status.

    Returns the optimal value. Raises :class:`PlanningError` (a RuntimeError; after recording
    it) unless the status is ``optimal`` or ``optimal_inaccurate``.
    """
    import time

    from policies.solver_quiet import quiet_highs

    quiet_highs()
    opts: dict[str, Any] = {"warm_start": False} if solver.upper() == "HIGHS" else {}
    t0 = time.perf_counter()
    try:
        problem.solve(solver=solver, **opts)
    except cp.error.SolverError as exc:
        record.failures.append(f"{record.name}: solver error {exc}")
        raise PlanningError(record.name, "solver error", f"{record.name}: solver {solver} failed ({exc})") from exc
    finally:
        record.n_solves += 1
        record.time_s += time.perf_counter() - t0
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        record.failures.append(f"{record.name}: status {problem.status}")
        raise PlanningError(record.name, str(problem.status), f"{record.name}: status {problem.status} with {solver}")
    return float(problem.value)


# ============================================================================ data


def _period_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Average consecutive groups of ``k`` steps along axis -2 (or 0 for 1-D / time-first arrays)."""
    x = np.asarray(x, dtype=float)
    T = x.shape[0] // k
    return x.reshape((T, k) + x.shape[1:]).mean(axis=1)


def _period_max(x: np.ndarray, k: int) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    T = x.shape[0] // k
    return x.reshape((T, k) + x.shape[1:]).max(axis=1)


@dataclass(frozen=True)
class AreaUncertainty:
    """The renewable uncertainty of one area (TSO or a feeder) in MW, hourly.

    Attributes:
        centers: (K, T) sample errors (``K = N`` for dro/so; ``K = 1``, the sample mean, for ro).
        weights: (K,) probabilities of the centers (1/N).
        up, dn: (T,) the two alternative values of ``xi_t`` the adversary may move to: the
            support bounds (dro) or mean +- envelope (ro); unused for so.
        mode: ``"wasserstein"`` (transport cost ``lambda |xi - center|`` per MW),
            ``"budget"`` (at most ``budget`` periods away from the center) or ``"sample"``.
        radius: Wasserstein radius in MW (dro).
        budget: number of periods (ro).
        support_lo, support_hi: (T,) the support of ``xi_t`` (wind between 0 and capacity).
    """

    centers: np.ndarray
    weights: np.ndarray
    up: np.ndarray
    dn: np.ndarray
    mode: Literal["wasserstein", "budget", "sample"]
    radius: float
    budget: float
    support_lo: np.ndarray
    support_hi: np.ndarray

    @property
    def n_centers(self) -> int:
        return int(self.centers.shape[0])


def area_uncertainty(samples: np.ndarray, lo: np.ndarray, hi: np.ndarray, settings: PlanningSettings,
                     radius: float) -> AreaUncertainty:
    """Build the :class:`AreaUncertainty` of an area from its (N, T) error samples in MW."""
    xi = np.clip(samples, lo[None, :], hi[None, :])
    n = xi.shape[0]
    if settings.uncertainty == "ro":
        mean = xi.mean(axis=0)
        env_ = np.abs(xi - mean[None, :]).max(axis=0)
        up, dn = np.minimum(mean + env_, hi), np.maximum(mean - env_, lo)
        return AreaUncertainty(mean[None, :], np.ones(1), up, dn, "budget", 0.0,
                               float(settings.ro_budget_h * 60 / settings.period_minutes), lo, hi)
    mode = "sample" if settings.uncertainty == "so" else "wasserstein"
    return AreaUncertainty(xi, np.full(n, 1.0 / n), hi.copy(), lo.copy(), mode,
                           float(radius) if mode == "wasserstein" else 0.0, 0.0, lo, hi)


@dataclass(frozen=True)
class EVDayAhead:
    """Stage 1 of one feeder's stations (MW, MWh; (T, n_station) arrays, period ends for X).

    Attributes:
        p_max_mw: expected charger rating connected (mean over the period).
        x_lo_mwh, x_hi_mwh: cumulative grid-side energy bounds at the end of each period.
        p0_mw: the price-taking TOU schedule.
        x0_mwh: its cumulative energy.
        r_up_max_mw, r_dn_max_mw: declared maximal up (charge less) / down (charge more) regulation.
    """

    p_max_mw: np.ndarray
    x_lo_mwh: np.ndarray
    x_hi_mwh: np.ndarray
    p0_mw: np.ndarray
    x0_mwh: np.ndarray
    r_up_max_mw: np.ndarray
    r_dn_max_mw: np.ndarray


@dataclass(frozen=True)
class FeederData:
    """Everything the DSO of one feeder plans with (hourly, MW unless named).

    Attributes:
        k: feeder index; net: the feeder.
        load_mw: (T,) total load; load_frac_p / load_frac_q: (n_bus,) per-bus share of it
            (MW / MVAr per MW of total load).
        der_bus: (n_der,) buses of the DER; der_fc_mw: (T, n_der) forecast; der_cap_mw: (n_der,).
        der_share: (T, n_der) how the total error splits over the units (forecast shares).
        station_bus: (n_station,) buses; ev: the stations' stage 1.
        comp_bus, q_min_mvar, q_max_mvar: compensators.
        head0_mw: (T,) baseline head power (AC sweep, losses included).
        v0_pu2: (T, n_bus) baseline squared voltages (AC sweep).
        R_pu, X_pu: (n_bus, n_bus) LinDistFlow sensitivities ``v = v0 + 2 (R p + X q)`` (pu).
        vmin_pu2, vmax_pu2: (n_bus,) squared limits.
        uncertainty: the DER error model.
        requirement: the TSO requirement's hourly budget set as the DSO's recourse sees it (all
            zero when the stations do not serve the TSO: the boundary is then rigid).
        unserved_requirement_cost: the worst-case cost of requirement no decision can serve
            (EVCS service other than ``"both"``): ``pen_boundary dt (sum |nom| + top_Gamma(dev))``.
    """

    k: int
    net: Network
    load_mw: np.ndarray
    load_frac_p: np.ndarray
    load_frac_q: np.ndarray
    der_bus: np.ndarray
    der_fc_mw: np.ndarray
    der_cap_mw: np.ndarray
    der_share: np.ndarray
    station_bus: np.ndarray
    ev: EVDayAhead
    comp_bus: np.ndarray
    q_min_mvar: np.ndarray
    q_max_mvar: np.ndarray
    head0_mw: np.ndarray
    v0_pu2: np.ndarray
    R_pu: np.ndarray
    X_pu: np.ndarray
    vmin_pu2: np.ndarray
    vmax_pu2: np.ndarray
    uncertainty: AreaUncertainty
    requirement: BudgetSet
    unserved_requirement_cost: float = 0.0

    @property
    def n_station(self) -> int:
        return int(self.station_bus.shape[0])

    @property
    def n_periods(self) -> int:
        return int(self.load_mw.shape[0])


@dataclass(frozen=True)
class TSOData:
    """The transmission side (hourly, MW).

    Attributes:
        net: the transmission network; dc: its PTDF model.
        load_bus_mw: (T, n_bus) transmission loads per bus.
        wind_bus: (n_farm,) buses; wind_fc_mw: (T, n_farm); wind_cap_mw: (n_farm,).
        boundary_bus: (n_feeder,) T-buses of the feeders.
        uncertainty: the wind-farm error model (total of the farms).
    """

    net: Network
    dc: DCNetwork
    load_bus_mw: np.ndarray
    wind_bus: np.ndarray
    wind_fc_mw: np.ndarray
    wind_cap_mw: np.ndarray
    boundary_bus: np.ndarray
    uncertainty: AreaUncertainty


@dataclass(frozen=True)
class PlanningData:
    """All inputs of the day-ahead plan.

    Attributes:
        grid, settings, n_periods, dt_h: the grid, options, T and the period length (h).
        price_buy_per_mwh: (T,) time-of-use price (EVCS stage 1).
        ev_price_up, ev_price_dn: station regulation price signals ($/MW per hour).
        tso: transmission data; feeders: one :class:`FeederData` per feeder.
    """

    grid: Grid
    settings: PlanningSettings
    n_periods: int
    dt_h: float
    price_buy_per_mwh: np.ndarray
    ev_price_up: float
    ev_price_dn: float
    tso: TSOData
    feeders: tuple[FeederData, ...]

    @property
    def n_feeder(self) -> int:
        return len(self.feeders)

    def with_settings(self, **changes: Any) -> "PlanningData":
        """The same data with some settings replaced that do not change the data itself
        (solver, ADMM and C&CG options)."""
        data_keys = {"period_minutes", "uncertainty", "requirement", "evcs_service", "n_samples", "radius_tso_mw",
                     "radius_dso_mw", "ro_budget_h", "ev_samples", "ev_reg_price_up_per_mwh",
                     "ev_reg_price_dn_per_mwh", "seed"}
        if set(changes) & data_keys:
            raise ValueError(f"with_settings: {sorted(set(changes) & data_keys)} change the data; rebuild it")
        s = PlanningSettings.from_kwargs(**{**asdict(self.settings), **changes})
        return PlanningData(self.grid, s, self.n_periods, self.dt_h, self.price_buy_per_mwh, self.ev_price_up,
                            self.ev_price_dn, self.tso, self.feeders)


def _expected_virtual_storage(da: DayAheadInfo, n_ports: np.ndarray, n_days: int,
                              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over ``n_days`` sampled EV days (M = 1) of the stations' virtual storage (docs/math.md §3).

    Per session (arrival a, deadline D = min(departure, T), e0, e_req, E, pmax, eta) at the end
    of step k: ``n = clip(k + 1 - a, 0, D - a)`` connected steps, ``r = max(D - 1 - k, 0)`` left,
    ``x_hi = min((E - e0)/eta, pmax dt n)``, ``x_lo = min(x_hi, max(0, (e_req - e0)/eta - pmax dt r))``;
    ``P_max = sum pmax 1[a <= k < D]``. Returns (p_max_kw, x_lo_kwh, x_hi_kwh), each (T_steps, n_station).
    """
    lay, p = da.layout, da.params.ev
    T, dt_h, ns = da.n_steps, da.dt_minutes / 60.0, len(n_ports)
    acc = [np.zeros((T, ns)) for _ in range(3)]
    k = np.arange(T)[:, None]
    days = sessions_each([rng] * n_days, p, n_ports, [1.0] * n_days, da.dt_minutes, lay.ev_battery_kwh,
                         lay.ev_charger_kw, lay.ev_efficiency)
    for ev, _ in days:
        if len(ev) == 0:
            continue
        a = ev.arrival_step[None, :].astype(float)
        D = np.minimum(ev.departure_step, T)[None, :].astype(float)
        n = np.clip(k + 1 - a, 0.0, D - a)
        r = np.maximum(D - 1 - k, 0.0)
        pdt = ev.p_max_kw * dt_h
        x_hi = np.minimum((ev.e_capacity_kwh - ev.e_arrival_kwh) / ev.efficiency, pdt * n)
        x_lo = np.minimum(x_hi, np.maximum(0.0, (ev.e_request_kwh - ev.e_arrival_kwh) / ev.efficiency - pdt * r))
        on = ((k >= a) & (k < D)) * ev.p_max_kw
        onehot = incidence(ns, ev.station).T  # (n_ev, ns)
        for arr, val in zip(acc, (on, x_lo, x_hi)):
            arr += val @ onehot
    return tuple(a / n_days for a in acc)  # type: ignore[return-value]


def ev_day_ahead(p_max_mw: np.ndarray, x_lo_mwh: np.ndarray, x_hi_mwh: np.ndarray, price: np.ndarray,
                 dt_h: float, solver: str = "HIGHS") -> EVDayAhead:
    """Stage 1 of the stations: price-taking TOU schedule and declared regulation maxima.

    ``min sum_t (price_t + 1e-3 t) P_t dt  s.t.  0 <= P <= P_max,  X_lo <= cumsum(P) dt <= X_hi``
    (the tiny ``1e-3 t`` breaks ties towards early charging). Then
    ``Rup_max = max(0, min(P0, (X0 - X_lo)/dt))``, ``Rdn_max = max(0, min(P_max - P0, (X_hi - X0)/dt))``.
    """
    T, ns = p_max_mw.shape
    P = cp.Variable((T, ns), nonneg=True)
    cum = cp.cumsum(P, axis=0) * dt_h
    cost = (np.asarray(price, dtype=float) + 1e-3 * np.arange(T)) * dt_h
    prob = cp.Problem(cp.Minimize(cost @ cp.sum(P, axis=1)),
                      [P <= p_max_mw, cum >= x_lo_mwh - 1e-9, cum <= x_hi_mwh + 1e-9])
    solve_problem(prob, solver, SolveRecord("evcs_tou"))
    p0 = np.clip(P.value, 0.0, p_max_mw)
    x0 = np.cumsum(p0, axis=0) * dt_h
    r_up = np.maximum(0.0, np.minimum(p0, (x0 - x_lo_mwh) / dt_h))
    r_dn = np.maximum(0.0, np.minimum(p_max_mw - p0, (x_hi_mwh - x0) / dt_h))
    return EVDayAhead(p_max_mw, x_lo_mwh, x_hi_mwh, p0, x0, r_up, r_dn)


def _wind_error_samples(da: DayAheadInfo, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, T_steps, n_wind) MW errors of sampled realized wind around the day-ahead forecast."""
    lay = da.layout
    obs = Observed(t=-1, load_pu=np.zeros((0, len(lay.load_names))), pv_pu=np.zeros((0, len(lay.pv_names))),
                   wind_speed_ms=np.zeros((0, len(lay.wind_names))), wind_pu=np.zeros((0, len(lay.wind_names))),
                   tso_requirement_mw=np.zeros((0, len(lay.boundary_names))))
    paths = Forecast.at(da, obs).sample(n, rng, ev_sessions=False)
    return (paths.wind_pu - da.wind_pu_da[None]) * da.wind_p_max_mw[None, None, :]


def build_planning_data(grid: Grid, day_ahead: DayAheadInfo, settings: PlanningSettings | None = None) -> PlanningData:
    """Aggregate the day-ahead information of ``grid`` into hourly planning data (see the module doc).

    Raises:
        ValueError: not a T-D grid, PV present (not modeled by the plan), or periods that do
            not align with the day-ahead steps.
    """
    s = settings or PlanningSettings()
    if not grid.is_td or grid.transmission is None:
        raise ValueError(f"build_planning_data: {grid.name} is not a T-D grid")
    lay, da = grid.layout, day_ahead
    if da.layout.load_names != lay.load_names or da.layout.wind_names != lay.wind_names:
        raise ValueError(f"build_planning_data: day-ahead info of {da.layout.case} does not match grid {grid.name}")
    if len(lay.pv_names):
        raise ValueError("build_planning_data: PV units are not modeled by the T-D plan (seed 000 has none)")
    if s.period_minutes % da.dt_minutes:
        raise ValueError(f"period_minutes={s.period_minutes} is not a multiple of the day-ahead step {da.dt_minutes}")
    kk = s.period_minutes // da.dt_minutes
    T, dt_h = da.n_steps // kk, s.period_minutes / 60.0
    rng = np.random.default_rng(np.random.SeedSequence([s.seed, 7001]))
    err = _period_mean(np.moveaxis(_wind_error_samples(da, s.n_samples, rng), 1, 0), kk)  # (T, N, n_wind)
    load_mw = _period_mean(da.load_pu_da * lay.load_p_mw[None, :], kk)                   # (T, n_load)
    wind_fc = _period_mean(da.wind_pu_da * da.wind_p_max_mw[None, :], kk)                # (T, n_wind)
    price = _period_mean(grid.tariff.buy_price_at(da.time_h), kk)
    physics = GridPhysics(grid)
    ev_rng = np.random.default_rng(np.random.SeedSequence([s.seed, 7002]))
    p_max_kw, x_lo_kwh, x_hi_kwh = _expected_virtual_storage(da, lay.evcs_n_ports, s.ev_samples, ev_rng)
    ev_pmax = _period_mean(p_max_kw, kk) / 1e3
    ev_xlo = x_lo_kwh[kk - 1::kk] / 1e3
    ev_xhi = x_hi_kwh[kk - 1::kk] / 1e3
    feeders, load0, wind0, ev0 = [], 0, 0, 0
    for k, f in enumerate(grid.feeders):
        nl, nw, ns = len(f.load), len(f.der), len(f.evcs)
        ev = ev_day_ahead(ev_pmax[:, ev0:ev0 + ns], ev_xlo[:, ev0:ev0 + ns], ev_xhi[:, ev0:ev0 + ns], price,
                          dt_h, s.solver)
        feeders.append(_feeder_data(k, f, physics, load_mw[:, load0:load0 + nl], wind_fc[:, wind0:wind0 + nw],
                                    err[:, :, wind0:wind0 + nw], ev, da, kk, s, grid.tariff.penalty_boundary_per_mwh))
        load0, wind0, ev0 = load0 + nl, wind0 + nw, ev0 + ns
    t = grid.transmission
    fc_t = wind_fc[:, wind0:]
    cap_t = np.asarray(t.der.p_max_mw, dtype=float)
    lo, hi = -fc_t.sum(axis=1), cap_t.sum() - fc_t.sum(axis=1)
    tso = TSOData(
        net=t, dc=DCNetwork.from_network(t),
        load_bus_mw=load_mw[:, load0:] @ incidence(t.n_bus, t.load.bus).T,
        wind_bus=np.asarray(t.der.bus, dtype=int), wind_fc_mw=fc_t, wind_cap_mw=cap_t,
        boundary_bus=np.asarray(grid.boundary_bus, dtype=int),
        uncertainty=area_uncertainty(err[:, :, wind0:].sum(axis=2).T, lo, hi, s, s.radius_tso_mw))
    price_up = _ev_price(grid, s.ev_reg_price_up_per_mwh)
    price_dn = _ev_price(grid, s.ev_reg_price_dn_per_mwh)
    return PlanningData(grid, s, T, dt_h, price, price_up, price_dn, tso, tuple(feeders))


def restrict_periods(data: PlanningData, periods: np.ndarray | slice) -> PlanningData:
    """A copy of ``data`` on a subset of consecutive periods (reduced-horizon studies and tests).

    Every per-period array is sliced; the requirement's budget becomes ``min(Gamma, T')`` (the
    constant unserved-requirement cost of non-"both" services is scaled pro rata, approximately).
    A plan of the restricted data does not cover a day, so it is not assembled into a
    :class:`FirstStagePlan` (use the solvers' pieces directly).
    """
    idx = np.arange(data.n_periods)[periods]
    if idx.size == 0 or np.any(np.diff(idx) != 1):
        raise ValueError("restrict_periods: need a non-empty run of consecutive periods")

    def unc(u: AreaUncertainty) -> AreaUncertainty:
        return AreaUncertainty(u.centers[:, idx], u.weights, u.up[idx], u.dn[idx], u.mode, u.radius,
                               min(u.budget, float(idx.size)), u.support_lo[idx], u.support_hi[idx])

    feeders = []
    for f in data.feeders:
        ev = EVDayAhead(*(getattr(f.ev, n)[idx] for n in ("p_max_mw", "x_lo_mwh", "x_hi_mwh", "p0_mw", "x0_mwh",
                                                         "r_up_max_mw", "r_dn_max_mw")))
        req = BudgetSet(f.requirement.nominal[idx], f.requirement.deviation[idx],
                        min(f.requirement.gamma, float(idx.size)))
        feeders.append(FeederData(
            k=f.k, net=f.net, load_mw=f.load_mw[idx], load_frac_p=f.load_frac_p, load_frac_q=f.load_frac_q,
            der_bus=f.der_bus, der_fc_mw=f.der_fc_mw[idx], der_cap_mw=f.der_cap_mw, der_share=f.der_share[idx],
            station_bus=f.station_bus, ev=ev, comp_bus=f.comp_bus, q_min_mvar=f.q_min_mvar, q_max_mvar=f.q_max_mvar,
            head0_mw=f.head0_mw[idx], v0_pu2=f.v0_pu2[idx], R_pu=f.R_pu, X_pu=f.X_pu, vmin_pu2=f.vmin_pu2,
            vmax_pu2=f.vmax_pu2, uncertainty=unc(f.uncertainty), requirement=req,
            unserved_requirement_cost=f.unserved_requirement_cost * idx.size / data.n_periods))
    t = data.tso
    tso = TSOData(t.net, t.dc, t.load_bus_mw[idx], t.wind_bus, t.wind_fc_mw[idx], t.wind_cap_mw, t.boundary_bus,
                  unc(t.uncertainty))
    return PlanningData(data.grid, data.settings, int(idx.size), data.dt_h, data.price_buy_per_mwh[idx],
                        data.ev_price_up, data.ev_price_dn, tso, tuple(feeders))


def _ev_price(grid: Grid, value: float | None) -> float:
    """The station regulation price: the setting, or the env's default EV reserve price."""
    if value is not None:
        return float(value)
    g = grid.transmission.gen  # type: ignore[union-attr]
    return float((g.cost_reserve_per_mwh * g.p_max_mw).sum() / g.p_max_mw.sum())


def _feeder_data(k: int, f: Network, physics: GridPhysics, load_mw: np.ndarray, der_fc: np.ndarray,
                 err: np.ndarray, ev: EVDayAhead, da: DayAheadInfo, kk: int, s: PlanningSettings,
                 pen_boundary: float) -> FeederData:
    """Hourly data of feeder ``k``: load shares, DER, AC baseline, LinDistFlow sensitivities, sets."""
    T = load_mw.shape[0]
    total = load_mw.sum(axis=1)
    peak = np.asarray(f.load.p_mw, dtype=float)
    q_ratio = np.divide(f.load.q_mvar, peak, out=np.zeros_like(peak), where=peak > 0)
    # day-ahead loads share one shape, so the per-bus split of the total is (nearly) constant
    share = load_mw.sum(axis=0) / max(load_mw.sum(), 1e-12)
    frac_p = per_bus(f, f.load.bus, share)
    frac_q = per_bus(f, f.load.bus, share * q_ratio)
    cap = np.asarray(f.der.p_max_mw, dtype=float)
    p_bus = (np.outer(frac_p, total) - per_bus(f, f.der.bus, der_fc.T) + per_bus(f, f.evcs.bus, ev.p0_mw.T))
    q_bus = np.outer(frac_q, total)
    flow = physics.solve_feeder(k, p_bus, q_bus)
    topo = radial_topology(f)
    R, X = topo.lin_voltage_matrices()
    fc_tot = der_fc.sum(axis=1)
    der_share = np.where(fc_tot[:, None] > 1e-9, der_fc / np.maximum(fc_tot[:, None], 1e-12),
                         (cap / cap.sum())[None, :])
    # support of the total error: every unit between 0 and its capacity under the split
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.max(np.where(der_share > 0, -der_fc / der_share, -np.inf), axis=1)
        hi = np.min(np.where(der_share > 0, (cap[None, :] - der_fc) / der_share, np.inf), axis=1)
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    unc = area_uncertainty(err.sum(axis=2).T, lo, hi, s, s.radius_dso_mw)
    bs = da.tso_budget_set(k)
    nominal = _period_mean(bs.nominal, kk)
    deviation = _period_max(bs.deviation, kk)
    gamma = math.ceil(bs.gamma * da.dt_minutes / s.period_minutes - 1e-9)
    if s.requirement == "none":
        deviation, gamma = np.zeros_like(deviation), 0
    unserved = 0.0
    if s.evcs_service != "both":
        # the stations do not serve the TSO: the boundary stays at its schedule and every call is violated
        unserved = pen_boundary * s.period_minutes / 60.0 * (np.abs(nominal).sum() + top_gamma_sum(deviation, gamma))
        nominal, deviation, gamma = np.zeros_like(nominal), np.zeros_like(deviation), 0
    if s.evcs_service == "none":
        ev = EVDayAhead(ev.p_max_mw, ev.x_lo_mwh, ev.x_hi_mwh, ev.p0_mw, ev.x0_mwh,
                        np.zeros_like(ev.r_up_max_mw), np.zeros_like(ev.r_dn_max_mw))
    return FeederData(
        k=k, net=f, load_mw=total, load_frac_p=frac_p, load_frac_q=frac_q,
        der_bus=np.asarray(f.der.bus, dtype=int), der_fc_mw=der_fc, der_cap_mw=cap, der_share=der_share,
        station_bus=np.asarray(f.evcs.bus, dtype=int), ev=ev, comp_bus=np.asarray(f.compensator.bus, dtype=int),
        q_min_mvar=np.asarray(f.compensator.q_min_mvar, dtype=float),
        q_max_mvar=np.asarray(f.compensator.q_max_mvar, dtype=float),
        head0_mw=flow.head_p_mw, v0_pu2=(flow.v_pu**2).T, R_pu=R, X_pu=X,
        vmin_pu2=np.asarray(f.bus.vmin_pu) ** 2, vmax_pu2=np.asarray(f.bus.vmax_pu) ** 2,
        uncertainty=unc, requirement=BudgetSet(nominal, deviation, float(min(gamma, T))),
        unserved_requirement_cost=float(unserved))


# ============================================================================ the TSO problem


@dataclass(frozen=True, eq=False)
class TSOPieces:
    """Variables, constraints and objective parts of the TSO problem (for composition).

    Attributes:
        thermal: thermal setpoints and reserves; wind: (T, n_farm) planned wind.
        Pd, Rup, Rdn: (T, n_feeder) the TSO's copies of the boundary power and reserves.
        fuel, reserve, wind_cost: first-stage cost parts; risk: worst-case expected recourse.
        consensus: per feeder, the (3T,) expression ``(Pd, Rup, Rdn)``.
        constraints: everything.
        shed: (T, n_bus) planned transmission load shedding (MW); shed_cost: its price
            ``VOLL dt sum shed`` (the env's ``penalty_load_shed_per_mwh``).
        shed_expected_mwh: planned shedding plus the recourse's shedding averaged over the
            sample centers (MWh per day; the expectation under the empirical distribution).
    """

    thermal: Any
    wind: cp.Variable
    Pd: cp.Variable
    Rup: cp.Variable
    Rdn: cp.Variable
    fuel: cp.Expression
    reserve: cp.Expression
    wind_cost: cp.Expression
    risk: cp.Expression
    consensus: list[cp.Expression]
    constraints: list[cp.Constraint]
    shed: cp.Variable
    shed_cost: cp.Expression
    shed_expected_mwh: cp.Expression

    @property
    def cost(self) -> cp.Expression:
        return self.fuel + self.reserve + self.wind_cost + self.shed_cost + self.risk


class TSOModel:
    """The TSO's day-ahead problem: DC-OPF with reserves (docs/math.md §2) + DRO intraday recourse (docs/math.md §4).

    First stage (per period, MW): thermal ``P, Ru, Rd`` (:func:`env.formulations.dc.thermal_units`,
    reserve delivery time ``reserve_time_h``), planned wind ``0 <= W <= fc``, boundary power
    ``Pd`` (a load at the boundary bus) and boundary reserves ``Rup, Rdn >= 0`` bought from the
    DSOs (0 unless the EVCS service is ``"both"``); balance ``1^T p = 0`` and line limits
    ``|PTDF p| <= Fmax`` with ``p = C_g P + C_w W - D + L - C_b Pd``, where ``0 <= L <= D`` is
    planned load shedding per bus. Cost: fuel ``c2 P^2 + c1 P``, reserve ``cR (Ru + Rd)``, wind
    ``wind_cost W``, shedding ``VOLL L`` (the env's ``penalty_load_shed_per_mwh``). Planned wind
    curtailment ``fc - W`` is priced in the recourse (every realization pays
    ``pen_curt (fc + xi - w)`` with ``w = W`` plus what the reserves absorb). So the first stage
    is feasible whenever the thermal units can follow some load path at all (seed 000's
    objective carries both penalties): a day whose load exceeds what the units can reach gets a
    plan with priced shedding instead of an infeasible status (docs/math.md §4).

    Recourse for a total wind error ``xi_t`` (zonal, per period): deploy thermal up ``a <= Ru``
    / down ``b <= Rd`` and boundary reserves ``-Rdn <= y <= Rup``, use wind ``0 <= w <= fc + xi``,
    shed T-load ``0 <= sh <= D - sum L``: ``sum a - sum b + sum y + sh + w - sum W = 0``; cost
    ``c1 (a - b)`` (if ``tso_deploy_cost``) ``+ wind_cost (w - W) + pen_curt (fc + xi - w) + VOLL sh``.

    The recourse is separable over periods and convex in ``xi_t``, so the Wasserstein worst case
    (1-norm over periods, box support) reduces exactly to three points per period (docs/math.md §4 (ii)):
    ``sup = min_{lambda >= 0} lambda eps + (1/N) sum_i sum_t s_it`` with
    ``s_it >= Q_t(xi_it)``, ``s_it >= Q_t(up_t) - lambda (up_t - xi_it)``,
    ``s_it >= Q_t(dn_t) - lambda (xi_it - dn_t)`` — one LP (QP with the quadratic fuel cost),
    the C&CG of this problem converged in one step (all three candidate columns are present).
    RO: ``Gamma theta + sum_t w_t``, ``w_t >= Q_t(mean)``, ``w_t >= Q_t(mean +- env) - theta``
    (the closed form of docs/math.md §5, exact for integer Gamma). SO: ``(1/N) sum_i sum_t Q_t(xi_it)``.

    ``Pd`` is the feeders' head schedule submitted by the DSOs in stage 1 (seed 000: the DSO
    collects the stations' day-ahead demand and submits the boundary power); with
    ``fix_boundary_power`` (default) the TSO's copy is fixed to it, so ADMM coordinates the
    boundary reserves and the ``Pd`` part of ``z`` has zero residual from the start (the DSO's
    head is fixed by its stations' price-taking schedule anyway).
    """

    def __init__(self, data: PlanningData, fix_boundary_power: bool = True) -> None:
        self.data = data
        self.tso = data.tso
        self.settings = data.settings
        self.fix_boundary_power = fix_boundary_power

    def build(self) -> TSOPieces:
        d, tso, s = self.data, self.tso, self.settings
        T, dt, tar = d.n_periods, d.dt_h, d.grid.tariff
        net = tso.net
        nb, nf = d.n_feeder, len(tso.wind_bus)
        th = thermal_units(net.gen, T, dt, s.reserve_time_h, fuel_segments=s.fuel_segments,
                           substeps=s.period_minutes // s.env_step_minutes)
        W = cp.Variable((T, nf), nonneg=True, name="wind_mw")
        Pd = cp.Variable((T, nb), name="tso_Pd")
        Rup = cp.Variable((T, nb), nonneg=True, name="tso_Rup")
        Rdn = cp.Variable((T, nb), nonneg=True, name="tso_Rdn")
        cons = list(th.constraints) + [W <= tso.wind_fc_mw]
        if self.fix_boundary_power:
            cons.append(Pd == np.stack([f.head0_mw for f in d.feeders], axis=1))
        if s.evcs_service != "both":
            cons += [Rup == 0, Rdn == 0]
        Cg = incidence(net.n_bus, net.gen.bus)
        Cw = incidence(net.n_bus, tso.wind_bus)
        Cb = incidence(net.n_bus, tso.boundary_bus)
        shed = cp.Variable((T, net.n_bus), nonneg=True, name="tso_planned_shed_mw")
        cons.append(shed <= tso.load_bus_mw)
        inj = th.p_mw @ Cg.T + W @ Cw.T - tso.load_bus_mw + shed - Pd @ Cb.T
        cons += [tso.dc.balance(inj)] + tso.dc.line_limits(inj)
        wind_cost = tar.wind_cost_per_mwh * dt * cp.sum(W)
        shed_cost = tar.penalty_load_shed_per_mwh * dt * cp.sum(shed)
        risk, rec_cons = self._recourse(th, W, Rup, Rdn, shed)
        cons += rec_cons
        unc = tso.uncertainty
        rec_shed = cp.reshape(self._rec_shed, (T, self._n_cand), order="C")[:, :unc.n_centers] @ unc.weights
        shed_expected = dt * (cp.sum(shed) + cp.sum(rec_shed))
        consensus = [cp.hstack([Pd[:, k], Rup[:, k], Rdn[:, k]]) for k in range(nb)]
        return TSOPieces(th, W, Pd, Rup, Rdn, th.fuel_cost, th.reserve_cost, wind_cost, risk, consensus, cons,
                         shed, shed_cost, shed_expected)

    def candidates(self) -> np.ndarray:
        """(T, C) candidate errors per period: the centers, then up, then dn (not for SO)."""
        unc = self.tso.uncertainty
        cols = [unc.centers.T]
        if unc.mode != "sample":
            cols += [unc.up[:, None], unc.dn[:, None]]
        return np.hstack(cols)

    def _recourse(self, th: Any, W: cp.Variable, Rup: cp.Variable, Rdn: cp.Variable,
                  planned_shed: cp.Variable) -> tuple[cp.Expression, list]:
        d, tso, s = self.data, self.tso, self.settings
        T, dt, tar = d.n_periods, d.dt_h, d.grid.tariff
        unc = tso.uncertainty
        xi_c = self.candidates()                       # (T, C)
        C = xi_c.shape[1]
        B = T * C
        bt = np.repeat(np.arange(T), C)                # block b = t C + c
        xi = xi_c.ravel()
        sel = sp.csr_matrix((np.ones(B), (np.arange(B), bt)), shape=(B, T))
        ng, nb = th.p_mw.shape[1], Rup.shape[1]
        A = cp.Variable((B, ng), nonneg=True, name="tso_up_deploy")
        Bd = cp.Variable((B, ng), nonneg=True, name="tso_dn_deploy")
        Y = cp.Variable((B, nb), name="tso_boundary_deploy")
        w = cp.Variable(B, nonneg=True, name="tso_wind_used")
        sh = cp.Variable(B, nonneg=True, name="tso_shed")
        self._rec_shed, self._n_cand = sh, C
        fc = tso.wind_fc_mw.sum(axis=1)
        load = tso.load_bus_mw.sum(axis=1)
        cons = [A <= sel @ th.r_up_mw, Bd <= sel @ th.r_dn_mw, Y <= sel @ Rup, Y >= -(sel @ Rdn),
                w <= fc[bt] + xi, sh <= load[bt] - sel @ cp.sum(planned_shed, axis=1),
                cp.sum(A, axis=1) - cp.sum(Bd, axis=1) + cp.sum(Y, axis=1) + sh + w - sel @ cp.sum(W, axis=1) == 0]
        c1 = np.asarray(tso.net.gen.cost_c1_per_mwh, dtype=float) if s.tso_deploy_cost else np.zeros(ng)
        cost = dt * ((A - Bd) @ c1 + tar.wind_cost_per_mwh * (w - sel @ cp.sum(W, axis=1))
                     + tar.penalty_curtailment_per_mwh * (fc[bt] + xi - w) + tar.penalty_load_shed_per_mwh * sh)
        Q = cp.reshape(cost, (T, C), order="C")          # Q[t, c]
        K = unc.n_centers
        if unc.mode == "sample":
            return cp.sum(Q[:, :K] @ unc.weights), cons
        if unc.mode == "budget":
            theta = cp.Variable(nonneg=True, name="tso_theta")
            wt = cp.Variable(T, name="tso_w")
            cons += [wt >= Q[:, 0], wt >= Q[:, 1] - theta, wt >= Q[:, 2] - theta]
            return unc.budget * theta + cp.sum(wt), cons
        lam = cp.Variable(nonneg=True, name="tso_lambda")
        S = cp.Variable((T, K), name="tso_s")
        centers = unc.centers.T                          # (T, K)
        up_gap = unc.up[:, None] - centers
        dn_gap = centers - unc.dn[:, None]
        cons += [S >= Q[:, :K],
                 S >= cp.reshape(Q[:, K], (T, 1), order="C") @ np.ones((1, K)) - lam * up_gap,
                 S >= cp.reshape(Q[:, K + 1], (T, 1), order="C") @ np.ones((1, K)) - lam * dn_gap]
        self.lam_var = lam
        return lam * unc.radius + cp.sum(S @ unc.weights), cons


class ProxPWL:
    """Outer piecewise-linear model of an ADMM proximal term ``rho/2 ||e - v||^2`` (docs/math.md §6), an LP.

    ``t_j >= rho d_jk e_j - rho d_jk v_j - rho d_jk^2 / 2`` for ``d_jk = +-f_j delta_k`` with
    ``delta`` in ``DELTAS_MW`` (0 and 1e-4 ... 839 MW, ratio 2): the tangents of the quadratic at
    ``v_j + d_jk``. It is exact at ``e = v`` and at the tangent points and below in between (at most
    ``rho g^2 / 8`` in a gap ``g``, i.e. below 1/8 of the term's value), so the ADMM steps stay LPs for
    HiGHS (whose QP solver fails on the DSO masters); the error vanishes as the iterates reach
    consensus. The outermost slope exceeds any marginal cost of the model (VOLL), so far from ``v``
    the term still pulls like the quadratic. Each coordinate's grid is stretched by its own factor
    ``f_j = 2^frac(j phi)`` (golden ratio phi): with one grid for all, two coordinates on segments
    of equal slope form a flat direction (e.g. the two feeders' reserves, substitutes in the TSO's
    zonal recourse) along which the LP solution jumps and ADMM cycles. Slopes and intercepts are
    Parameters (DPP).
    """

    DELTAS_MW = np.concatenate([[0.0], 1e-4 * 2.0 ** np.arange(24)])   # 1e-4 ... 839 MW, ratio 2

    def __init__(self, n: int, name: str) -> None:
        self.n = int(n)
        base = np.concatenate([-self.DELTAS_MW[:0:-1], self.DELTAS_MW])
        stretch = 2.0 ** np.mod(np.arange(self.n) * 0.6180339887498949, 1.0)
        self.deltas = stretch[:, None] * base[None, :]                # (n, K)
        k = base.size
        self.slopes = cp.Parameter((self.n, k), value=np.zeros((self.n, k)), name=f"{name}_prox_slope")
        self.icpt = cp.Parameter((self.n, k), value=np.zeros((self.n, k)), name=f"{name}_prox_icpt")
        self.rho = 0.0
        self.target = np.zeros(self.n)

    def epigraph(self, e: cp.Expression) -> tuple[cp.Variable, list[cp.Constraint]]:
        """(t, constraints) with ``sum t`` modeling the term for the (n,) expression ``e``."""
        t = cp.Variable(self.n)
        k = self.deltas.shape[1]
        ee = cp.reshape(e, (self.n, 1), order="C") @ np.ones((1, k))
        return t, [t[:, None] >= cp.multiply(ee, self.slopes) + self.icpt]

    def set(self, rho: float, target: np.ndarray) -> None:
        """Center the model at ``target`` (v) with penalty ``rho``."""
        v = np.asarray(target, dtype=float).reshape(self.n)
        d = self.deltas
        self.rho, self.target = float(rho), v.copy()
        self.slopes.value = rho * d
        self.icpt.value = -rho * d * v[:, None] - 0.5 * rho * d**2

    def exact(self, e: np.ndarray) -> float:
        """``rho/2 ||e - v||^2`` at a value."""
        return 0.5 * self.rho * float(np.sum((np.asarray(e) - self.target) ** 2))


class TSOSolver:
    """The TSO problem with the ADMM proximal terms as Parameters (built once, DPP).

    ``tso_prox = "quadratic"``: ``half_rho sum_d ||xT_d||^2 - lin^T xT`` with ``half_rho = rho/2`` and
    ``lin = rho (z - u)`` (solved by ``qp_solver``); ``"pwl"``: :class:`ProxPWL` (an LP for ``solver``).
    """

    def __init__(self, data: PlanningData) -> None:
        self.data = data
        self.model = TSOModel(data)
        self.pieces = self.model.build()
        T, nb = data.n_periods, data.n_feeder
        p = self.pieces
        s = data.settings
        e = cp.hstack(p.consensus)
        self.quadratic = s.tso_prox == "quadratic"
        self.prox = ProxPWL(nb * 3 * T, "tso")
        if self.quadratic:
            self.half_rho = cp.Parameter(nonneg=True, value=0.0, name="tso_half_rho")
            self.lin = cp.Parameter(nb * 3 * T, value=np.zeros(nb * 3 * T), name="tso_lin")
            self.problem = cp.Problem(cp.Minimize(p.cost + self.half_rho * cp.sum_squares(e) - self.lin @ e),
                                      p.constraints)
        else:
            tvar, pcons = self.prox.epigraph(e)
            self.problem = cp.Problem(cp.Minimize(p.cost + cp.sum(tvar)), p.constraints + pcons)
        lp = s.fuel_segments is not None and not self.quadratic
        self.solver = s.solver if lp else (s.qp_solver or s.solver)
        self.record = SolveRecord("tso")

    def set_proximal(self, rho: float, target: np.ndarray) -> None:
        """``rho/2 sum_d ||xT_d - target_d||^2`` (target = z - u, shape (n_feeder, 3T)), up to a constant."""
        v = np.asarray(target, dtype=float).ravel()
        self.prox.set(rho, v)
        if self.quadratic:
            self.half_rho.value = rho / 2.0
            self.lin.value = rho * v

    def marginal_values(self, z: np.ndarray) -> np.ndarray:
        """The TSO's marginal value of the boundary quantities at ``z`` ((n_feeder, 3T)): the dual
        ``nu = -grad f_T`` of ``xT = z`` (cvxpy's sign), for warm-starting the ADMM multipliers
        (``uT = nu / rho``). Computed by the TSO alone; the ``Pd`` part is 0 (fixed on both sides)."""
        if getattr(self, "_fixed", None) is None:
            zpar = cp.Parameter(self.prox.n, name="tso_fixed_z")
            con = cp.hstack(self.pieces.consensus) == zpar
            self._fixed = (cp.Problem(cp.Minimize(self.pieces.cost), self.pieces.constraints + [con]), zpar, con)
        prob, zpar, con = self._fixed
        zpar.value = np.asarray(z, dtype=float).ravel()
        solve_problem(prob, self.solver, self.record)
        nu = np.asarray(con.dual_value, dtype=float).reshape(np.shape(z)).copy()
        nu[:, : self.data.n_periods] = 0.0
        return nu

    def solve(self) -> float:
        return solve_problem(self.problem, self.solver, self.record)

    def consensus_value(self) -> np.ndarray:
        return np.stack([c.value for c in self.pieces.consensus])

    def cost_value(self) -> float:
        return float(self.pieces.cost.value)


# ============================================================================ the plan


_PLAN_ARRAYS = ("thermal_p_mw", "thermal_r_up_mw", "thermal_r_dn_mw", "wind_planned_mw", "boundary_p_mw",
                "boundary_r_up_mw", "boundary_r_dn_mw", "ev_p_mw", "ev_r_up_mw", "ev_r_dn_mw",
                "ev_r_up_max_mw", "ev_r_dn_max_mw")


@dataclass(frozen=True)
class FirstStagePlan:
    """A day-ahead first-stage plan, per planning period (MW; arrays are ``(T, n)``, read-only).

    Attributes:
        case, method: grid name and ``"admm"`` / ``"centralized"``.
        period_minutes: length of a period (60: hourly, T = 24).
        thermal_p_mw, thermal_r_up_mw, thermal_r_dn_mw: (T, n_gen) energy and reserves.
        wind_planned_mw: (T, n_farm) planned transmission wind (forecast minus planned curtailment).
        boundary_p_mw: (T, n_feeder) feeder head schedule (+ = import).
        boundary_r_up_mw, boundary_r_dn_mw: (T, n_feeder) boundary reserves (the DSOs' copies).
        ev_p_mw: (T, n_station) stations' day-ahead (TOU) schedule, stations stacked by feeder.
        ev_r_up_mw, ev_r_dn_mw: (T, n_station) cleared station regulation (up = charge less).
        ev_r_up_max_mw, ev_r_dn_max_mw: (T, n_station) the stations' declared maxima.
        objective: cost parts (``thermal_fuel``, ``thermal_reserve``, ``wind``, ``load_shed`` (planned
            shedding at VOLL), ``tso_recourse``,
            ``ev_regulation``, ``requirement_unserved`` (EVCS not serving the TSO), ``dso_recourse``,
            ``dso_f<k>``, ``tso``, ``total``); the recourse parts are worst-case expectations.
        info: solver facts (iterations, time_s, gaps, settings, ``shed_planned_mw`` (T,),
            ``shed_planned_mwh``, ``shed_expected_mwh``, ...); JSON-friendly.
    """

    case: str
    method: str
    period_minutes: int
    thermal_p_mw: np.ndarray
    thermal_r_up_mw: np.ndarray
    thermal_r_dn_mw: np.ndarray
    wind_planned_mw: np.ndarray
    boundary_p_mw: np.ndarray
    boundary_r_up_mw: np.ndarray
    boundary_r_dn_mw: np.ndarray
    ev_p_mw: np.ndarray
    ev_r_up_mw: np.ndarray
    ev_r_dn_mw: np.ndarray
    ev_r_up_max_mw: np.ndarray
    ev_r_dn_max_mw: np.ndarray
    objective: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        T = None
        for name in _PLAN_ARRAYS:
            arr = np.array(getattr(self, name), dtype=float)
            if arr.ndim != 2:
                raise ValueError(f"FirstStagePlan.{name}: expected a (T, n) array, got shape {arr.shape}")
            T = arr.shape[0] if T is None else T
            if arr.shape[0] != T or not np.all(np.isfinite(arr)):
                raise ValueError(f"FirstStagePlan.{name}: {arr.shape[0]} periods (expected {T}) or non-finite")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if T is None or T * self.period_minutes != 1440:
            raise ValueError(f"FirstStagePlan: {T} periods of {self.period_minutes} min do not cover a day")

    @property
    def n_periods(self) -> int:
        return int(self.thermal_p_mw.shape[0])

    @property
    def shed_expected_mwh(self) -> float:
        """Expected transmission load shedding of the plan (MWh per day): planned shedding plus the
        recourse's over the sample centers (``info["shed_expected_mwh"]``; 0 when not recorded)."""
        return float(self.info.get("shed_expected_mwh", 0.0))

    def period_of(self, step: int, dt_minutes: int = 15) -> int:
        """The plan period containing env step ``step`` of ``dt_minutes``."""
        if step < 0 or step * dt_minutes >= 1440:
            raise ValueError(f"FirstStagePlan.period_of: step {step} outside the day at dt={dt_minutes} min")
        return int(step * dt_minutes // self.period_minutes)

    def thermal_setpoint(self, step: int, dt_minutes: int = 15, interpolate: bool = False) -> np.ndarray:
        """Thermal setpoints at env step ``step``: the period's value, or (``interpolate``) linear
        between the midpoints of consecutive periods (constant before the first and after the last
        midpoint), the path the plan's per-step ramp/reserve constraints assume."""
        p = self.period_of(step, dt_minutes)
        if not interpolate:
            return self.thermal_p_mw[p]
        pos = ((step + 0.5) * dt_minutes) / self.period_minutes - 0.5   # in period-midpoint units
        lo = int(np.clip(np.floor(pos), 0, self.n_periods - 1))
        hi = min(lo + 1, self.n_periods - 1)
        w = float(np.clip(pos - lo, 0.0, 1.0)) if hi > lo else 0.0
        return (1 - w) * self.thermal_p_mw[lo] + w * self.thermal_p_mw[hi]

    def to_dispatch(self, step: int, dt_minutes: int = 15, base: Dispatch | None = None,
                    sizes: DispatchSizes | None = None, interpolate: bool = False,
                    p_min_mw: np.ndarray | None = None, p_max_mw: np.ndarray | None = None) -> Dispatch:
        """The env ``Dispatch`` of step ``step`` from the plan's period.

        Thermal setpoints (:meth:`thermal_setpoint`) and reserves, and the stations' regulation
        (``ev_r_up_mw`` / ``ev_r_dn_mw``: the env clips each TSO call to the feeder's sum and deploys
        pro rata) come from the plan; with ``p_min_mw`` / ``p_max_mw`` the reserves are clipped to
        ``p_max - P`` / ``P - p_min`` at the (interpolated) setpoint. The other fields come from
        ``base`` when given (the recourse policy's dispatch); otherwise stations follow the plan's
        schedule ``ev_p_mw``, storage is idle, nothing is curtailed and ``q_comp_mvar`` is None.
        """
        p = self.period_of(step, dt_minutes)
        P = self.thermal_setpoint(step, dt_minutes, interpolate)
        r_up, r_dn = self.thermal_r_up_mw[p], self.thermal_r_dn_mw[p]
        if p_max_mw is not None:
            r_up = np.clip(r_up, 0.0, np.maximum(np.asarray(p_max_mw) - P, 0.0))
        if p_min_mw is not None:
            r_dn = np.clip(r_dn, 0.0, np.maximum(P - np.asarray(p_min_mw), 0.0))
        plan = {"thermal_p_mw": P, "thermal_r_up_mw": r_up, "thermal_r_dn_mw": r_dn,
                "ev_r_up_mw": self.ev_r_up_mw[p], "ev_r_dn_mw": self.ev_r_dn_mw[p]}
        if base is not None:
            d = base.replace(**plan)
        else:
            n_der = sizes.n_der if sizes is not None else self.info.get("n_der")
            n_st = sizes.n_storage if sizes is not None else self.info.get("n_storage", 0)
            if n_der is None:
                raise ValueError("FirstStagePlan.to_dispatch: pass base or sizes (the plan does not know n_der)")
            d = Dispatch(ev_p_mw=self.ev_p_mw[p], storage_p_mw=np.zeros(int(n_st)),
                         der_curtail_frac=np.zeros(int(n_der)), **plan)
        if sizes is not None:
            d.check_sizes(sizes)
        return d

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (arrays as nested lists)."""
        out: dict[str, Any] = {"case": self.case, "method": self.method, "period_minutes": self.period_minutes,
                               "objective": dict(self.objective), "info": self.info}
        for name in _PLAN_ARRAYS:
            out[name] = getattr(self, name).tolist()
        return out


def assemble_plan(data: PlanningData, method: str, tso: TSOPieces, dsos: list[Any],
                  dso_values: list[tuple[float, float]], info: dict[str, Any]) -> FirstStagePlan:
    """Build a :class:`FirstStagePlan` from solved TSO pieces and DSO pieces.

    Args:
        dsos: per feeder, solved :class:`~policies.planning.ccg.DSOPieces`.
        dso_values: per feeder, (regulation cost, worst-case recourse term) at the plan (the
            recourse term from the C&CG upper bound, i.e. evaluated exactly).
    """
    cl = lambda a: np.maximum(np.asarray(a, dtype=float), 0.0)  # noqa: E731 - solver noise below 0
    ev_cost = sum(v[0] for v in dso_values)
    dso_risk = sum(v[1] for v in dso_values)
    unserved = sum(f.unserved_requirement_cost for f in data.feeders)
    obj = {"thermal_fuel": float(tso.fuel.value), "thermal_reserve": float(tso.reserve.value),
           "wind": float(tso.wind_cost.value), "load_shed": float(tso.shed_cost.value),
           "tso_recourse": float(tso.risk.value),
           "ev_regulation": float(ev_cost - unserved), "requirement_unserved": float(unserved),
           "dso_recourse": float(dso_risk)}
    obj["tso"] = obj["thermal_fuel"] + obj["thermal_reserve"] + obj["wind"] + obj["load_shed"] + obj["tso_recourse"]
    for k, v in enumerate(dso_values):
        obj[f"dso_f{k}"] = float(v[0] + v[1])
    obj["total"] = obj["tso"] + ev_cost + dso_risk  # ev_cost includes the unserved requirement
    grid = data.grid
    shed_t = np.maximum(np.asarray(tso.shed.value, dtype=float), 0.0).sum(axis=1)
    info = {"n_der": sum(len(f.der) for f in grid.feeders) + len(grid.transmission.der),  # type: ignore[union-attr]
            "n_storage": sum(len(f.storage) for f in grid.feeders),
            "shed_planned_mw": shed_t.tolist(), "shed_planned_mwh": float(shed_t.sum() * data.dt_h),
            "shed_expected_mwh": max(float(tso.shed_expected_mwh.value), 0.0), **info}
    return FirstStagePlan(
        case=grid.name, method=method, period_minutes=data.settings.period_minutes,
        thermal_p_mw=tso.thermal.p_mw.value, thermal_r_up_mw=cl(tso.thermal.r_up_mw.value),
        thermal_r_dn_mw=cl(tso.thermal.r_dn_mw.value), wind_planned_mw=cl(tso.wind.value),
        boundary_p_mw=np.stack([d.Pd.value for d in dsos], axis=1),
        boundary_r_up_mw=cl(np.stack([d.Rup.value for d in dsos], axis=1)),
        boundary_r_dn_mw=cl(np.stack([d.Rdn.value for d in dsos], axis=1)),
        ev_p_mw=np.hstack([f.ev.p0_mw for f in data.feeders]),
        ev_r_up_mw=cl(np.hstack([d.r_up.value for d in dsos])), ev_r_dn_mw=cl(np.hstack([d.r_dn.value for d in dsos])),
        ev_r_up_max_mw=np.hstack([f.ev.r_up_max_mw for f in data.feeders]),
        ev_r_dn_max_mw=np.hstack([f.ev.r_dn_max_mw for f in data.feeders]),
        objective=obj, info=info)
