"""Perfect information: the clairvoyant optimum of one sampled day (docs/math.md §9), a true lower bound.

``PerfectInformation(grid)`` is handed the realized day by ``observe_day(scenario)`` (the
rolling controller calls it right after ``reset``), solves one convex program over the whole
day, exposes its optimal objective as :attr:`PerfectInformation.bound` (``C_PI`` of docs/math.md §9,
in the tariff's currency) and plays the plan: ``act`` returns the plan's dispatch of the step
(with the planned compensator setpoints, so the controller's reactive SOCP is overridden).

The model **relaxes** the env (:mod:`env.simulator`): every trajectory the env can produce
under any policy, mapped to the model's variables, is feasible, and the model's objective
there is at most the env's cost. Its optimum is therefore ``<=`` every policy's realized
cost of the day (and executing the plan gives a realized cost ``>=`` the bound). Piece by piece:

* **Feeders**: DistFlow with the SOC relaxation ``P^2 + Q^2 <= l v`` over all T steps, no
  current or voltage limits (the env enforces neither). Any AC solution of the env's sweep
  satisfies the branch-flow equations with equality, hence the relaxation.
* **Loads**: a shed share ``s_f in [0, 1]`` per feeder and step scales the feeder's P and Q
  loads (the env sheds proportionally after a failed sweep or in T-D balancing); on T-D cases
  ``s_T`` likewise for the transmission loads. Charged ``VOLL x shed MWh`` as in the env.
* **EVs** (single feeder, or with V2G): one variable per connected (EV, step) with its own
  limits, capacity and unmet energy ``u_i >= e_req - e_D``
  (:func:`env.formulations.dispatch_model.ev_session_block`): the exact set of individual
  schedules, which contains whatever the env's must-run / least-laxity split delivers
  (must-run is not imposed: dropping a constraint relaxes). On T-D cases (default
  ``ev_model="auto"``) the stations' outer approximation of the day
  (:func:`env.formulations.dispatch_model.ev_day_aggregate_block`: sums of the individual
  cumulative bounds, the unreachable energy charged as a constant, a per-station shortfall
  at the unmet price): it contains every sum of individual schedules, is ~8x faster to solve
  there, and gave the same bound to 4e-5 on t30d2 (0.4 % weaker than per-EV on d33).
* **Storage**: charge/discharge parts ``p^c, p^d`` with the exact energy balance and limits;
  degradation on ``p^c + p^d`` (= ``|p|`` at the env's points).
* **Renewables**: used output in ``[0, available]``; renewable cost and curtailment penalty exact.
* **Compensators**: ``q`` per step in ``[q_min, q_max]``, decision variables.
* **Voltage penalty**: the env charges ``sum_buses max(0, vmin - |V|, |V| - vmax) dt price``.
  In ``v = |V|^2`` the lower part ``max(0, vmin - sqrt(v))`` is convex and used exactly; the
  upper part is replaced by the chord of ``sqrt`` between ``vmax^2`` and ``v_ub``
  (a convex minorant), with ``v_ub = V_slack^2 + 2 (R p_max + X q_max)`` the LinDistFlow
  voltage at the largest possible injections (every AC solution has ``v <= v_hat``, Gan et
  al. 2015, Lemma 1, and ``v_hat`` is monotone in the injections since R, X >= 0).
* **Energy bought/sold** (single feeder): exact ``dt max(pb h, ps h)`` where ``pb >= ps``;
  where the buy price is below the sell price the env's ``pb h^+ - ps h^-`` is concave, and
  its convex minorant ``dt (pb y + (ps - pb) min(y_lo, 0)) - ps sigma dt`` is used with
  ``y = h + sigma`` the head power plus the shed MW (``f(h) >= f(y) - ps sigma dt`` by
  Lipschitz continuity) and ``y_lo = load - DER available - storage/V2G discharge``, a
  lower bound of ``y`` (losses and charging are >= 0): exact whenever ``y_lo >= 0``.
* **T-D, thermal units**: setpoints and reserves inside the env's projection set (limits,
  ramps from the previous setpoint, reserve limits) exactly; the *actual* output ``G`` is
  what fuel is charged on (exact convex quadratic). Non-reference units:
  ``P - r_dn - b <= G <= P + r_up`` and ``G >= p_min`` (deployment within the cleared
  reserves; ``b >= 0`` is back-off below ``P - r_dn``, charged as curtailment as in the env).
  The reference unit also takes the env's residual (``residual = unbalanced + loss2 - loss1``:
  the loss change of the feeders re-solved after balancing, plus what balancing could not
  cover), which has no a-priori bound, so it is relaxed to
  ``G_ref <= P_ref + r_up_ref + sum_f loss_f + U+ s_T`` (``loss2 - loss1 <= loss2``, the model's
  own losses; an unbalanced deficit needs all transmission load shed, ``s_T = 1``, and is at
  most ``U+`` = EV ratings + storage + ``L_bar``) and
  ``G_ref >= max(P_ref - r_dn_ref - b_ref, p_min_ref) - L_bar - sum_f L_f s_f - U- kappa``
  (``L_bar`` a crude but valid bound on the first-pass losses from ``|V| >= 0.3`` p.u., the
  env's collapse threshold: every bus current is at most its largest apparent power / 0.3;
  a re-solve can shed more load; an unbalanced surplus needs every DER curtailed,
  ``kappa <= curtailed share``, and is at most ``U-`` = sum p_min + storage (+ V2G)). On t30d2
  ``L_bar`` is ~15 MW, yet the bound moves by ~6 $ of ~13 000 $ against the same model
  without the residual (:attr:`plan_objective`). The transmission balance
  ``sum G + wind used = (1 - s_T) load_T + sum heads`` holds exactly (the residual closes it
  in the env). DC line flows carry no cost in the env and are left out.
* **T-D, boundary**: station setpoints ``P_set in [0 (or -rated with V2G), rated]`` with the
  cleared EV reserves ``r_up <= P_set - floor``, ``r_dn <= rated - P_set`` (the env's limits
  use the must-run floor and the headroom, which are tighter), the delivered power
  ``P - P_set in [-r_up, r_dn]`` per station (TSO and balancing deployment stay within the
  reserves), the delivered boundary call ``d_b in [-sum r_dn, sum r_up]`` and the penalty on
  ``|req - d|`` exactly; reserve costs exact.

Numerics: the reported bound is the solver's *dual* objective when it is below the primal
one (an ``optimal_inaccurate`` solve is accepted only with a relative primal-dual gap below
``max_gap_rel``; :attr:`gap`), so solver tolerance does not push it above the optimum.

The plan :meth:`act` plays: on single feeders, the bound's own solution; on T-D cases the
solution of the same model with the reference unit's residual allowance removed (a plan that
leaned on that slack would set thermal setpoints the env then has to back off).

Solve time on d33 for a full day is a few seconds (vectorized; no per-step Python loops).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np

from env.dispatch import Dispatch, DispatchSizes
from env.formulations.dispatch_model import (
    GridIndex,
    der_block,
    ev_day_aggregate_block,
    ev_session_block,
    network_block,
    storage_block,
    thermal_block,
    voltage_penalty,
)
from env.formulations.distflow import radial_topology
from env.hydro import spill_cost_per_h
from env.network import Grid
from env.observation import Observation
from env.settings import StrictKwargs
from env.simulator import GridModel, GridSimulator, SimulatorSettings

__all__ = ["PerfectInformation", "PerfectInformationSettings", "PI_TERMS"]

SOLVERS = ("CLARABEL", "ECOS")
_V_FLOOR_PU = 0.3  # the env's sweep rejects |V| below this (collapse) and sheds instead

#: Cost pieces of the model; ``"energy"`` is the env's ``energy_bought + energy_sold``.
PI_TERMS: tuple[str, ...] = (
    "energy", "thermal_fuel", "water_spillage", "reserves", "ev_revenue", "ev_subsidy", "renewable_generation",
    "storage_degradation", "curtailment", "load_shed", "ev_unmet", "voltage_violation", "boundary_violation",
)


@dataclass(frozen=True)
class PerfectInformationSettings(StrictKwargs):
    """Settings of the perfect-information yardstick.

    Attributes:
        solver: conic solver, ``"CLARABEL"`` or ``"ECOS"`` (the other one is the fallback).
        objective_scale: the objective is divided by this in the solver (conditioning); the
            bound is reported unscaled.
        ev_model: ``"per_ev"`` (exact individual sets), ``"aggregate"`` (the stations' outer
            approximation, :func:`env.formulations.dispatch_model.ev_day_aggregate_block`; no V2G)
            or ``"auto"``: per-EV on single feeders and with V2G, aggregate on T-D grids.
        max_gap_rel: an ``optimal_inaccurate`` solve is accepted when the solver's relative
            primal-dual gap is below this; the bound is then the dual objective.
        compensators: plan the compensator setpoints (and play them); ``False`` fixes them at 0,
            as in a loop run with the reactive SOCP off (``gridroll ... --no-reactive``), so the
            bound is the clairvoyant optimum of that setting (tighter there, still a lower bound).
    """

    solver: str = "CLARABEL"
    objective_scale: float = 1000.0
    ev_model: str = "auto"
    max_gap_rel: float = 1e-5
    compensators: bool = True

    def __post_init__(self) -> None:
        self.check_types()   # every field by its annotation (env.settings.check_field_types)
        if self.ev_model not in ("auto", "per_ev", "aggregate"):
            raise ValueError(f"PerfectInformationSettings.ev_model: 'auto', 'per_ev' or 'aggregate', "
                             f"got {self.ev_model!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"PerfectInformationSettings.solver: one of {list(SOLVERS)}, got {self.solver!r}")
        if not (np.isfinite(self.objective_scale) and self.objective_scale > 0):
            raise ValueError("PerfectInformationSettings.objective_scale: must be finite and > 0")
        if not (np.isfinite(self.max_gap_rel) and 0 < self.max_gap_rel < 1):
            raise ValueError("PerfectInformationSettings.max_gap_rel: must be in (0, 1)")



class ClairvoyantDispatch:
    """The perfect-information plan's *active* dispatch, with the compensators left to the loop.

    Played through :class:`controller.loop.RollingController`, its executed cost is what the
    clairvoyant dispatch costs under the loop's own reactive controller. Against the bound
    (:class:`PerfectInformation`, which also plans the compensators) it splits a policy's regret:
    ``C_pi - C_PI = (C_pi - C_PI_dispatch) + (C_PI_dispatch - C_PI)``, the first part being what
    the policy's dispatch leaves on the table under the same reactive control. Not a bound (it
    has no ``bound`` attribute): its ``total_cost`` is the executed one.
    """

    name = "perfect_information_dispatch"

    def __init__(self, grid: Grid, settings: PerfectInformationSettings = PerfectInformationSettings(),
                 simulator_settings: SimulatorSettings | None = None) -> None:
        self.plan = PerfectInformation(grid, settings, simulator_settings)

    def reset(self, seed: int | None = None) -> None:
        self.plan.reset(seed)

    def observe_day(self, scenario: Any) -> None:
        """Solve the clairvoyant model of the realized day (see :meth:`PerfectInformation.observe_day`)."""
        self.plan.observe_day(scenario)

    def act(self, obs: Observation, forecast: Any = None) -> Dispatch:
        """The plan's dispatch of step ``obs.step`` without compensator setpoints."""
        return self.plan.act(obs, forecast).replace(q_comp_mvar=None)


class PerfectInformation:
    """The clairvoyant plan of a sampled day and its lower bound (see the module docstring).

    Args:
        grid: the grid.
        settings: solver settings.
        simulator_settings: the env's :class:`SimulatorSettings` (V2G, EV reserve price);
            must match the env the bound is compared with (default settings otherwise).

    Attributes:
        bound: optimal objective of the last day (``C_PI``, tariff currency; the dual objective
            when below the primal one), None before :meth:`observe_day`.
        terms: the bound model's optimal objective split into :data:`PI_TERMS` (primal values).
        gap: the bound solve's primal minus dual objective (currency).
        plan_objective: optimum of the plan's model (= bound's primal value on single feeders).
        model_name: which model the bound comes from.
        status, solver_used: of the bound's solve; solve_s: compilation + solver time of the
            day's solves; build_s: model construction time.
    """

    name = "perfect_information"

    def __init__(self, grid: Grid, settings: PerfectInformationSettings = PerfectInformationSettings(),
                 simulator_settings: SimulatorSettings | None = None) -> None:
        self.grid = grid
        self.settings = settings
        self.sim_settings = simulator_settings or SimulatorSettings()
        self.model = GridModel(grid)
        self.index = GridIndex.from_model(self.model)
        self.sizes = DispatchSizes.from_grid(grid, reactive=True)
        self.is_td = grid.transmission is not None
        if self._ev_model_for() == "aggregate" and self.sim_settings.v2g:
            raise ValueError("PerfectInformation: the aggregate EV model has no V2G; use ev_model='per_ev'")
        ev = "per-EV LP" if self._ev_model_for() == "per_ev" else "station-aggregate EV LP"
        self.model_name = f"DistFlow-SOC + {ev}" + (" + relaxed thermal residual/boundary" if self.is_td else "")
        self._topology = [radial_topology(f) for f in grid.feeders]
        self._r_x = [t.lin_voltage_matrices() for t in self._topology]
        self._subtree = [t.subtree for t in self._topology]
        self.bound: float | None = None
        self.terms: dict[str, float] = {}
        self.status = ""
        self.solver_used = ""
        self.solve_s = float("nan")
        self.build_s = float("nan")
        self.plan_objective = float("nan")
        self.gap = float("nan")
        self._plan: dict[str, np.ndarray] | None = None
        self._scenario: Any = None

    # ------------------------------------------------------------------ Policy protocol
    def reset(self, seed: int | None = None) -> None:
        """Forget the last day (the plan needs :meth:`observe_day`)."""
        self._plan = None
        self._scenario = None
        self.bound = None
        self.terms = {}

    def observe_day(self, scenario: Any) -> None:
        """Build and solve the clairvoyant model of the realized day ``scenario``.

        The bound comes from the relaxed model. On T-D cases the plan that :meth:`act` plays
        comes from a second solve of the same model without the reference unit's residual
        allowance (a plan leaning on that slack would not execute well); its optimum is
        :attr:`plan_objective` (>= :attr:`bound`).

        Raises:
            RuntimeError: when no solver returns an optimal solution (the bound would not be valid).
        """
        self.reset()
        t0 = time.perf_counter()
        sim = GridSimulator(self.grid, scenario, self.sim_settings, model=self.model)
        self._sim = sim
        self.n_steps, self.dt_h = sim.n_steps, sim.dt_h
        relaxed = self._build(scenario, sim, relaxed=True)
        self.build_s = time.perf_counter() - t0
        self.status, self.solver_used, self.solve_s = self._solve(relaxed)
        self.bound = float(relaxed.problem.value) * self.settings.objective_scale - relaxed.gap
        self.gap = relaxed.gap
        self.terms = relaxed.term_values()
        self._relaxed = relaxed
        plan_model = relaxed
        if self.is_td:
            plan_model = self._build(scenario, sim, relaxed=False)
            _, _, s2 = self._solve(plan_model)
            self.solve_s += s2
        self.plan_objective = float(plan_model.problem.value) * self.settings.objective_scale
        self._plan = self._extract_plan(plan_model)
        self._scenario = scenario

    def act(self, obs: Observation, forecast: Any = None) -> Dispatch:
        """The plan's dispatch of step ``obs.step`` (compensator setpoints included).

        Raises:
            RuntimeError: :meth:`observe_day` was not called for this day.
            ValueError: the observation does not belong to the observed day.
        """
        if self._plan is None:
            raise RuntimeError("PerfectInformation.act: call observe_day(scenario) first (the rolling "
                               "controller does it after reset)")
        t = int(obs.step)
        if not 0 <= t < self.n_steps:
            raise ValueError(f"PerfectInformation.act: step {t} outside the day's 0..{self.n_steps - 1}")
        if not np.allclose(obs.load_p_mw, self._sim.load_p[t], rtol=1e-12, atol=1e-12):
            raise ValueError("PerfectInformation.act: the observation is not from the observed day")
        p = self._plan
        return Dispatch(
            ev_p_mw=p["ev_set_mw"][:, t], storage_p_mw=p["storage_mw"][:, t],
            der_curtail_frac=p["curtail_frac"][:, t], thermal_p_mw=p["thermal_p_mw"][:, t],
            thermal_r_up_mw=p["thermal_r_up_mw"][:, t], thermal_r_dn_mw=p["thermal_r_dn_mw"][:, t],
            ev_r_up_mw=p["ev_r_up_mw"][:, t], ev_r_dn_mw=p["ev_r_dn_mw"][:, t],
            q_comp_mvar=p["q_comp_mvar"][:, t],
        )

    # ------------------------------------------------------------------ the model
    def _build(self, scenario: Any, sim: GridSimulator, relaxed: bool = True) -> "_DayModel":
        """Variables, constraints and the objective pieces of the day (numpy constants).

        ``relaxed=False`` (T-D only) drops the reference unit's residual allowance: the plan's model.
        """
        m, ix = self.model, self.index
        T, dt = sim.n_steps, sim.dt_h
        tar = self.grid.tariff
        sz = m.sizes
        v2g = self.sim_settings.v2g
        nf = m.n_feeder
        cons: list[cp.Constraint] = []
        acct: dict[str, Any] = {}

        # ---- data
        load_p, load_q = sim.load_p.T, sim.load_q.T                           # (n_load, T)
        avail = np.asarray(sim.der_avail).T                                    # (n_der, T)
        lp_bus = [ix.load_bus[k] @ load_p for k in range(nf)]                  # MW (n_bus, T)
        lq_bus = [ix.load_bus[k] @ load_q for k in range(nf)]
        load_f = np.stack([b.sum(axis=0) for b in lp_bus])                     # (n_feeder, T)

        # ---- decisions
        s_f = cp.Variable((nf, T), name="shed_share_feeder")
        cons += [s_f >= 0, s_f <= 1]
        acct["shed_share_f"] = s_f
        keep = 1 - s_f
        lp = [cp.multiply(lp_bus[k], keep[k:k + 1, :]) for k in range(nf)]
        lq = [cp.multiply(lq_bus[k], keep[k:k + 1, :]) for k in range(nf)]
        used, c = der_block(avail, sz.n_der, T)
        cons += c
        acct["der_used_mw"] = used
        st = storage_block(m.st_p_max, m.st_e_max, m.st_eta_c, m.st_eta_d, m.st_e_init, T, dt)
        cons += st.constraints
        acct["storage_charge_mw"], acct["storage_discharge_mw"] = st.p_charge_mw, st.p_discharge_mw
        free_q = sz.n_comp > 0 and self.settings.compensators
        q = cp.Variable((sz.n_comp, T), name="q_comp_mvar") if free_q else np.zeros((sz.n_comp, T))
        if free_q:
            cons += [q >= m.q_min[:, None], q <= m.q_max[:, None]]
        if self._ev_model_for() == "per_ev":
            evb = ev_session_block(scenario.ev, sz.n_evcs, T, dt, v2g=v2g)
            cons += evb.constraints
            ev_act = cp.Variable((sz.n_evcs, T), name="ev_station_mw")
            cons.append(ev_act == evb.station_mw)
            acct["ev_station_mw"], acct["unmet_kwh"] = ev_act, evb.unmet_kwh
            unmet_kwh = cp.sum(evb.unmet_kwh)
        else:
            evb = ev_day_aggregate_block(scenario.ev, sz.n_evcs, T, dt)
            cons += evb.constraints
            ev_act = evb.station_mw
            acct["ev_station_mw"], acct["shortfall_kwh"] = ev_act, evb.shortfall_kwh
            eta_min = float(np.min(scenario.ev.efficiency)) if len(scenario.ev) else 1.0
            unmet_kwh = evb.unmet_floor_kwh + eta_min * cp.sum(evb.shortfall_kwh)
        net = network_block(ix, "soc", T, lp, lq, ev_act, st.net_mw, used, q)
        cons += net.constraints
        head = cp.Variable((nf, T), name="head_mw")
        cons.append(head == cp.vstack(net.head_mw))
        acct["head_mw"] = head
        for k, v in enumerate(net.v):
            acct[f"v_{k}"] = v
        loss_total = cp.sum(cp.vstack(net.loss_mw), axis=0)                   # (T,)

        # ---- costs shared by all cases
        price = np.asarray(sim.price_buy, dtype=float)
        terms: dict[str, cp.Expression] = {}
        ev_mwh = dt * cp.sum(ev_act)
        terms["ev_revenue"] = -tar.ev_charging_price_per_mwh * ev_mwh
        terms["ev_subsidy"] = tar.ev_subsidy_per_mwh * ev_mwh
        terms["renewable_generation"] = dt * cp.sum(m.der_cost @ used) if sz.n_der else cp.Constant(0.0)
        terms["storage_degradation"] = (tar.storage_cost_per_mwh * dt * cp.sum(st.throughput_mw)
                                        if sz.n_storage else cp.Constant(0.0))
        terms["ev_unmet"] = tar.penalty_ev_unmet_per_mwh * 1e-3 * unmet_kwh
        viol = 0
        for k, f in enumerate(self.grid.feeders):
            viol = viol + voltage_penalty(net.v[k], net.v[k], f.bus.vmin_pu, f.bus.vmax_pu, "minorant",
                                          v_ub=self._v_upper_bound(k, avail, evb.rated_kw, lp_bus, lq_bus))
        terms["voltage_violation"] = tar.penalty_voltage_per_puh * dt * viol
        shed_mwh = dt * cp.sum(cp.multiply(load_f, s_f))
        curtailed = dt * (float(avail.sum()) - cp.sum(used)) if sz.n_der else cp.Constant(0.0)

        ev_set, ev_ru, ev_rd = ev_act, np.zeros((0, T)), np.zeros((0, T))
        th = None
        if not self.is_td:
            sigma = cp.sum(cp.multiply(load_f, s_f), axis=0)                   # shed MW (T,)
            terms["energy"] = self._energy_term(cp.sum(head, axis=0), sigma, price, avail, evb.rated_kw,
                                                lp_bus, dt, float(sim.price_sell))
            terms["thermal_fuel"] = terms["water_spillage"] = terms["reserves"] = cp.Constant(0.0)
            terms["boundary_violation"] = cp.Constant(0.0)
            terms["load_shed"] = tar.penalty_load_shed_per_mwh * shed_mwh
            terms["curtailment"] = tar.penalty_curtailment_per_mwh * curtailed
        else:
            th, ev_set, ev_ru, ev_rd, c, td_terms = self._td_part(
                sim, T, dt, head, ev_act, evb.rated_kw, used, avail, s_f, load_f, loss_total, acct, relaxed)
            cons += c
            terms["energy"] = cp.Constant(0.0)
            terms["thermal_fuel"] = td_terms["thermal_fuel"]
            terms["water_spillage"] = td_terms["water_spillage"]
            terms["reserves"] = td_terms["reserves"]
            terms["boundary_violation"] = td_terms["boundary_violation"]
            terms["load_shed"] = tar.penalty_load_shed_per_mwh * (shed_mwh + td_terms["shed_t_mwh"])
            terms["curtailment"] = tar.penalty_curtailment_per_mwh * (curtailed + td_terms["backoff_mwh"])
        terms_expr = {k: terms[k] for k in PI_TERMS}
        total = sum(terms_expr.values())
        problem = cp.Problem(cp.Minimize(total / self.settings.objective_scale), cons)
        plan_vars = {"used": used, "st": st, "q": q, "ev_set": ev_set, "ev_ru": ev_ru, "ev_rd": ev_rd,
                     "th": th, "avail": avail}
        return _DayModel(problem, terms_expr, acct, plan_vars, net)

    def _v_upper_bound(self, k: int, avail: np.ndarray, rated_kw: np.ndarray, lp_bus: list[np.ndarray],
                       lq_bus: list[np.ndarray]) -> np.ndarray:
        """(n_bus, T) upper bound of ``v`` over everything the env can do at each step.

        ``V_slack^2 + 2 (R p_max + X q_max) / base`` with the largest injections: all DER
        available, storage and (V2G) EVs discharging at full power, loads fully shed (a
        negative load counts), compensators at ``q_max``.
        """
        ix, m = self.index, self.model
        net = self.grid.feeders[k]
        p_max = ix.der_bus[k] @ avail + ix.storage_bus[k] @ np.broadcast_to(m.st_p_max[:, None], (m.st_p_max.shape[0],
                                                                                                   avail.shape[1]))
        p_max = p_max + np.maximum(-lp_bus[k], 0.0)
        if self.sim_settings.v2g:
            p_max = p_max + ix.ev_bus[k] @ (rated_kw * 1e-3)
        q_max = ix.comp_bus[k] @ np.broadcast_to(np.maximum(m.q_max, 0.0)[:, None], (m.q_max.shape[0],
                                                                                    avail.shape[1]))
        q_max = q_max + np.maximum(-lq_bus[k], 0.0)
        r_mat, x_mat = self._r_x[k]
        return net.v_slack_pu**2 + 2.0 * (r_mat @ p_max + x_mat @ q_max) / net.base_mva

    def _energy_term(self, h: cp.Expression, sigma: cp.Expression, price: np.ndarray, avail: np.ndarray,
                     rated_kw: np.ndarray, lp_bus: list[np.ndarray], dt: float, ps: float) -> cp.Expression:
        """Buy/sell cost of a single-feeder grid (exact where ``pb >= ps``, else the minorant)."""
        m = self.model
        convex = price >= ps
        y_lo = sum(b.sum(axis=0) for b in lp_bus) - avail.sum(axis=0) - m.st_p_max.sum()
        if self.sim_settings.v2g:
            y_lo = y_lo - rated_kw.sum(axis=0) * 1e-3
        a = np.where(convex, price, 0.0)
        b = np.where(convex, ps, 0.0)
        exact = dt * cp.sum(cp.maximum(cp.multiply(a, h), cp.multiply(b, h)))
        lin = np.where(convex, 0.0, price)
        const = float(np.where(convex, 0.0, (ps - price) * np.minimum(y_lo, 0.0)).sum())
        minorant = dt * (lin @ h + (lin - np.where(convex, 0.0, ps)) @ sigma + const)
        return exact + minorant

    def _td_part(self, sim: GridSimulator, T: int, dt: float, head: cp.Variable, ev_act: cp.Variable,
                 rated_kw: np.ndarray, used: cp.Expression, avail: np.ndarray, s_f: cp.Variable,
                 load_f: np.ndarray, loss_total: cp.Expression, acct: dict[str, Any], relaxed: bool
                 ) -> tuple[Any, ...]:
        """Thermal units, the transmission balance and the boundary (see the module docstring)."""
        m, ix, tar = self.model, self.index, self.grid.tariff
        sz = m.sizes
        v2g = self.sim_settings.v2g
        cons: list[cp.Constraint] = []
        n_gen, nb, ns = sz.n_gen, m.n_boundary, sz.n_evcs
        rated = rated_kw * 1e-3                                                # (n_station, T) MW
        # boundary: setpoints, reserves, delivered call
        ev_set = cp.Variable((ns, T), name="ev_setpoint_mw")
        ev_ru = cp.Variable((ns, T), nonneg=True, name="ev_r_up_mw")
        ev_rd = cp.Variable((ns, T), nonneg=True, name="ev_r_dn_mw")
        floor = -rated if v2g else np.zeros_like(rated)
        cons += [ev_set >= floor, ev_set <= rated, ev_ru <= ev_set - floor, ev_rd <= rated - ev_set,
                 ev_act - ev_set >= -ev_ru, ev_act - ev_set <= ev_rd]
        deliv = cp.Variable((nb, T), name="delivered_mw")
        fev = ix.station_feeder
        cons += [deliv <= fev @ ev_ru, deliv >= -(fev @ ev_rd)]
        req = np.asarray(sim.tso, dtype=float).T                               # (nb, T)
        acct.update(ev_r_up_mw=ev_ru, ev_r_dn_mw=ev_rd, delivered_mw=deliv)
        # thermal units
        th = thermal_block(m.g_p_min, m.g_p_max, m.g_ramp, sim.thermal_p_last_mw, T, dt)
        cons += th.constraints
        G = cp.Variable((n_gen, T), name="thermal_actual_mw")
        back = cp.Variable((n_gen, T), nonneg=True, name="backoff_mw")
        acct.update(thermal_mw=G, thermal_r_up_mw=th.r_up_mw, thermal_r_dn_mw=th.r_dn_mw, backoff_mw=back)
        ref = m.ref_unit
        other = np.array([g for g in range(n_gen) if g != ref], dtype=int)
        # deployment within the cleared reserves, back-off (charged as curtailment) below P - r_dn
        if other.size:
            cons += [G[other] <= th.p_mw[other] + th.r_up_mw[other],
                     G[other] >= th.p_mw[other] - th.r_dn_mw[other] - back[other],
                     G[other] >= m.g_p_min[other][:, None]]
        # transmission balance with shedding of the transmission loads
        s_t = cp.Variable(T, name="shed_share_t")
        acct["shed_share_t"] = s_t
        load_t = np.asarray(sim.load_p[:, m.n_load_f:]).sum(axis=1)            # (T,)
        wind_t = cp.sum(used[ix.n_der_f:], axis=0) if sz.n_der > ix.n_der_f else np.zeros(T)
        cons += [s_t >= 0, s_t <= 1,
                 cp.sum(G, axis=0) + wind_t == load_t - cp.multiply(load_t, s_t) + cp.sum(head, axis=0)]
        # the reference unit: its setpoint + deployment + (relaxed) the env's residual
        up = th.p_mw[ref] + th.r_up_mw[ref]
        down = [th.p_mw[ref] - th.r_dn_mw[ref] - back[ref], m.g_p_min[ref] * np.ones(T)]
        if relaxed:
            l_bar = self._loss_bound(sim, avail, rated_kw)                      # (T,) MW
            u_plus = rated.sum(axis=0) + m.st_p_max.sum() + l_bar + max(0.0, -float(m.g_p_min.sum()))
            u_minus = float(m.g_p_min.sum() + m.st_p_max.sum()) + (rated.sum(axis=0) if v2g else 0.0)
            up = up + loss_total + cp.multiply(u_plus, s_t)
            slack = l_bar + cp.sum(cp.multiply(load_f, s_f), axis=0)
            if np.any(np.asarray(u_minus) > 0):
                kappa = cp.Variable(T, nonneg=True, name="all_curtailed_share")
                total_avail = avail.sum(axis=0)
                cons += [kappa <= 1, cp.multiply(kappa, total_avail) <= total_avail - cp.sum(used, axis=0)]
                slack = slack + cp.multiply(u_minus, kappa)
            down = [d - slack for d in down]
            self._l_bar = l_bar
        cons += [G[ref] <= up] + [G[ref] >= d for d in down]
        # costs
        fuel = dt * (cp.sum(cp.multiply(m.g_c2[:, None], cp.square(G))) + cp.sum(m.g_c1 @ G))
        reserves = dt * (cp.sum(m.g_cr @ (th.r_up_mw + th.r_dn_mw)) + sim.ev_reserve_price * cp.sum(ev_ru + ev_rd))
        td_terms = {
            "thermal_fuel": fuel, "reserves": reserves,
            "water_spillage": dt * cp.sum(spill_cost_per_h(m.gen, G, cp.pos)) if m.g_spill else cp.Constant(0.0),
            "boundary_violation": tar.penalty_boundary_per_mwh * dt * cp.sum(cp.abs(req - deliv)),
            "shed_t_mwh": dt * (load_t @ s_t),
            "backoff_mwh": dt * cp.sum(back),
        }
        return th, ev_set, ev_ru, ev_rd, cons, td_terms

    def _loss_bound(self, sim: GridSimulator, avail: np.ndarray, rated_kw: np.ndarray) -> np.ndarray:
        """(T,) a crude but valid bound on the feeders' total series losses (MW) at each step.

        Every bus current is ``|S_j| / |V_j| <= |S_j|_max / 0.3`` (the env sheds load rather
        than accept ``|V| < 0.3`` p.u.), a branch carries the sum over its subtree, and the
        losses are ``sum_k r_k |I_k|^2``. ``|S_j|_max <= |p_j|_max + |q_j|_max`` over loads,
        EV ratings, storage, available DER and compensator limits.
        """
        ix, m = self.index, self.model
        T = avail.shape[1]
        load_p, load_q = np.abs(sim.load_p.T), np.abs(sim.load_q.T)
        st = np.broadcast_to(m.st_p_max[:, None], (m.st_p_max.shape[0], T))
        qc = np.broadcast_to(np.maximum(np.abs(m.q_min), np.abs(m.q_max))[:, None], (m.q_max.shape[0], T))
        total = np.zeros(T)
        for k, net in enumerate(self.grid.feeders):
            cons_p = ix.load_bus[k] @ load_p + ix.ev_bus[k] @ (rated_kw * 1e-3) + ix.storage_bus[k] @ st
            gen_p = ix.der_bus[k] @ avail + ix.storage_bus[k] @ st + ix.ev_bus[k] @ (rated_kw * 1e-3)
            s_max = (np.maximum(cons_p, gen_p) + ix.load_bus[k] @ load_q + ix.comp_bus[k] @ qc) / net.base_mva
            i_max = (self._subtree[k] @ s_max) / _V_FLOOR_PU
            total += (self._topology[k].r_pu @ (i_max**2)) * net.base_mva
        return total

    # ------------------------------------------------------------------ solving
    def _solve(self, model: "_DayModel") -> tuple[str, str, float]:
        """Solve with the configured solver, then the other one; returns (status, solver, seconds).

        Accepted: ``optimal``, or ``optimal_inaccurate`` with a relative primal-dual gap below
        ``settings.max_gap_rel``. ``model.gap`` is the solver's primal minus dual objective
        (currency, >= 0), subtracted from the primal value so that the reported bound is the
        dual objective whenever the two differ.
        """
        first = self.settings.solver
        order = [first] + [s for s in SOLVERS if s != first]
        failures = []
        t0 = time.perf_counter()
        for solver in order:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    data, chain, inverse = model.problem.get_problem_data(solver, solver_opts={})
                    raw = chain.solve_via_data(model.problem, data, warm_start=False, verbose=False, solver_opts={})
                    model.problem.unpack_results(raw, chain, inverse)
                status = model.problem.status
                gap = _primal_dual_gap(raw) * self.settings.objective_scale
            except (cp.error.SolverError, ValueError, KeyError, AttributeError, TypeError) as exc:
                status, gap = f"error: {exc}", float("nan")
            value = model.problem.value
            ok = status == cp.OPTIMAL or (status == cp.OPTIMAL_INACCURATE and np.isfinite(gap) and value is not None
                                          and gap <= self.settings.max_gap_rel * max(1.0, abs(float(value))
                                                                                     * self.settings.objective_scale))
            if ok:
                model.gap = max(gap, 0.0) if np.isfinite(gap) else 0.0
                return status, solver, time.perf_counter() - t0
            failures.append(f"{solver}: {status}" + (f" (gap {gap:.3g})" if np.isfinite(gap) else ""))
        raise RuntimeError(f"PerfectInformation: no optimal solution ({'; '.join(failures)}); "
                           "no valid bound for this day")

    def _extract_plan(self, model: "_DayModel") -> dict[str, np.ndarray]:
        """The plan as numpy arrays in dispatch order, (n_item, T)."""
        v, m, T = model.plan_vars, self.model, self.n_steps
        val = lambda x: np.zeros(x.shape) if isinstance(x, np.ndarray) else np.asarray(x.value, dtype=float)  # noqa: E731
        avail = v["avail"]
        used = val(v["used"])
        frac = np.divide(avail - used, avail, out=np.zeros_like(avail), where=avail > 1e-12)
        st = v["st"]
        plan = {
            "ev_set_mw": val(v["ev_set"]), "storage_mw": val(st.p_charge_mw) - val(st.p_discharge_mw),
            "curtail_frac": np.clip(frac, 0.0, 1.0), "q_comp_mvar": np.clip(val(v["q"]), m.q_min[:, None],
                                                                            m.q_max[:, None]),
            "ev_r_up_mw": np.maximum(val(v["ev_ru"]), 0.0), "ev_r_dn_mw": np.maximum(val(v["ev_rd"]), 0.0),
        }
        th = v["th"]
        if th is None:
            z = np.zeros((0, T))
            plan.update(thermal_p_mw=z, thermal_r_up_mw=z, thermal_r_dn_mw=z)
        else:
            plan.update(thermal_p_mw=val(th.p_mw), thermal_r_up_mw=np.maximum(val(th.r_up_mw), 0.0),
                        thermal_r_dn_mw=np.maximum(val(th.r_dn_mw), 0.0))
        return plan

    # ------------------------------------------------------------------ accounting check
    @property
    def accounting_variables(self) -> tuple[str, ...]:
        """Names of the variables the cost pieces depend on (see :meth:`evaluate_terms`)."""
        return tuple(self._relaxed.acct)

    def evaluate_terms(self, values: dict[str, np.ndarray]) -> dict[str, float]:
        """The bound model's cost pieces at a fixed point (the same cvxpy expressions as its objective).

        Args:
            values: a value for every name of :attr:`accounting_variables` (``head_mw``
                (n_feeder, T), ``v_k`` (n_bus, T) squared voltages, ``ev_station_mw``,
                ``unmet_kwh`` (per session; per-EV model) or ``shortfall_kwh`` (per station;
                aggregate model), ``der_used_mw``, ``storage_charge_mw``, ``storage_discharge_mw``,
                ``shed_share_f``; T-D: ``thermal_mw``, ``thermal_r_up_mw``, ``thermal_r_dn_mw``,
                ``ev_r_up_mw``, ``ev_r_dn_mw``, ``delivered_mw``, ``backoff_mw``, ``shed_share_t``).

        Overwrites those variables' values (the plan is kept separately; :meth:`act` is unaffected).
        """
        if self._plan is None:
            raise RuntimeError("PerfectInformation.evaluate_terms: call observe_day(scenario) first")
        return self._relaxed.evaluate(values)

    def _ev_model_for(self) -> str:
        """The EV model in use: ``settings.ev_model``, or for ``"auto"`` per-EV on single-feeder
        grids and with V2G, the day aggregate on T-D grids (its solve is ~8x faster there)."""
        if self.settings.ev_model != "auto":
            return self.settings.ev_model
        return "per_ev" if (not self.is_td or self.sim_settings.v2g) else "aggregate"


def _primal_dual_gap(raw: Any) -> float:
    """Primal minus dual objective of a raw Clarabel or ECOS solution (solver units; NaN if unknown)."""
    if hasattr(raw, "obj_val_dual"):                   # Clarabel
        return float(raw.obj_val) - float(raw.obj_val_dual)
    if isinstance(raw, dict) and "info" in raw:        # ECOS
        return float(raw["info"]["pcost"]) - float(raw["info"]["dcost"])
    return float("nan")


@dataclass(eq=False)
class _DayModel:
    """One built model of a day: the problem, its cost pieces and the variables behind them."""

    problem: cp.Problem
    terms: dict[str, cp.Expression]
    acct: dict[str, Any]
    plan_vars: dict[str, Any]
    net: Any
    gap: float = 0.0

    def term_values(self) -> dict[str, float]:
        return {k: float(np.asarray(e.value)) for k, e in self.terms.items()}

    def evaluate(self, values: dict[str, np.ndarray]) -> dict[str, float]:
        missing = sorted(set(self.acct) - set(values))
        if missing:
            raise ValueError(f"PerfectInformation.evaluate_terms: missing values {missing}")
        for name, var in self.acct.items():
            if isinstance(var, np.ndarray):
                continue
            arr = np.asarray(values[name], dtype=float)
            if arr.shape != var.shape:
                raise ValueError(f"evaluate_terms: {name} expected shape {var.shape}, got {arr.shape}")
            var.value = arr
        return self.term_values()
