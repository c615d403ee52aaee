"""Scenario-based reactive compensation: a two-stage SOCP per feeder (seed 003, stage 2).

docs/math.md §1 (two-stage scenario SOCP) and §10 (pricing a decision as the env prices it).
For one feeder and S scenarios of the coming interval (net loads ``p_s``, ``q_s``,
probabilities ``pi_s``) the compensator setpoints ``q^c`` are here-and-now (shared by all
scenarios) and every scenario has its own DistFlow-SOC (or LinDistFlow) block. The default
objective (``objective="env_cost"``) is the env's own expected cost of the step:

    min  sum_s pi_s dt [ c_s P_s + c_V sum_j (o_js + n_js) ]  +  r ||q^c||^2
    s.t. q_min <= q^c <= q_max
         DistFlow block of scenario s with injections (-p_s, -q_s + C q^c)
         P_s = head power of scenario s (MW, losses included)
         o_js >= (u_js - vmax_j^2) / (2 vmax_j),  o >= 0   (over-voltage, p.u.)
         n_js >= (vmin_j^2 - v_js) / (2 vmin_j),  n >= 0   (under-voltage, p.u.)

with ``c_s`` the price on the side the scenario's head settles (buy when its net consumption is
positive, sell otherwise; buy = sell = the reference unit's marginal fuel cost on T–D cases,
:mod:`env.pricing`), so ``dt c_s P_s`` is the energy the env settles at the head (exact unless
losses flip the head's sign) and ``dt c_V (o + n)`` its voltage penalty per p.u.-hour
outside ``[vmin, vmax]``. The voltage pieces are ``|V| - vmax`` and ``vmin - |V|`` written on
the squared voltage ``v = |V|^2`` linearized at the limit (tangent of ``sqrt`` there): exact
at the limit, over-estimating over-voltage and under-estimating under-voltage by a
second-order term (``(|V| - vmax)^2 / (2 vmax)``). ``r`` is a tiny regularizer that makes
the setpoint unique where the cost is flat.

``objective="proxy"`` keeps the earlier, seed-003-style objective for comparison:
``sum_s pi_s [c_loss losses_s + w_V sum_j d_js + M sum_j sigma_js]`` with
``d >= u - 1, d >= 1 - v`` and soft limits ``vmin^2 - sigma <= v, u <= vmax^2 + sigma``.

The upper side ``u`` is either ``v`` itself (``upper_voltage="soc"``) or the LinDistFlow
voltage ``v_hat >= v`` of the same injections (``"lin"``, the default: Gan, Li, Topcu & Low
2015's modified OPF). Rewarding low ``v`` lets the SOC relaxation invent losses to pull
voltages down, so with ``"soc"`` the relaxation is badly inexact whenever the upper side
binds; ``v_hat`` does not depend on ``l`` and keeps it exact under their condition C1, at
the price of a slightly conservative upper side. (Raising a low ``v`` never pays by
inventing losses: more ``l`` lowers downstream ``v``.)

The problem is built once with cvxpy Parameters (loads, probability-weighted prices; DPP: no
Parameter multiplies another) and re-solved each call. Fewer scenarios than ``n_scenarios``
are padded by repeating the given ones with probability zero, so nothing recompiles. A solve
that ends ``optimal_inaccurate`` is accepted when its voltages match an AC sweep at its own
setpoint within ``inaccurate_tol_pu``; any other status or solver exception is a failure: the
configured solver falls back to the other one (ECOS <-> CLARABEL), then to the last good
setpoint (zeros projected to the limits the first time); ``ReactiveResult.fallback`` says
which and why.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from controller.reactive_cost import EnvCostTerms, ProxyTerms
from env.formulations import FeederVars, get_formulation, relaxation_gap
from env.network import Grid, Network
from env.physics.sweep import PowerFlowError, RadialSweep
from env.pricing import StepPrices

SOLVERS = ("ECOS", "CLARABEL")
FAST_SOLVER = "fast_ac"  # solver_used of controller.reactive_fast (SQP on the AC sweep)
NO_COMPENSATORS = "none"  # solver_used (and status "no_compensators") of a feeder with nothing to set
METHODS = ("socp", "fast")
OBJECTIVES = ("env_cost", "proxy")
_FALLBACK_SOLVER = {"ECOS": "CLARABEL", "CLARABEL": "ECOS"}
_PROB_TOL = 1e-6


@dataclass(frozen=True)
class ReactiveSettings:
    """Settings of the reactive SOCP.

    Attributes:
        n_scenarios: S, the number of scenario columns compiled (fewer may be given).
        solver: ``"ECOS"`` or ``"CLARABEL"`` (the other is the fallback).
        objective: ``"env_cost"`` (the env's expected cost of the step; needs the step's
            :class:`env.pricing.StepPrices`) or ``"proxy"`` (losses + voltage deviation).
        q_regularizer: ``r`` of the env-cost objective, currency per MVAr^2 of setpoint.
        c_loss: proxy: weight on expected active losses ``sum_k r_k l_k`` (per pu of losses).
        w_voltage: proxy: weight on ``sum_j d_j``, ``d_j >= u_j - 1, d_j >= 1 - v_j``.
        slack_penalty: proxy: M, weight on the soft voltage-limit slack (per pu of ``v``),
            probability-weighted like the other terms.
        formulation: ``"soc"`` (DistFlow-SOC) or ``"lin"`` (LinDistFlow, with the
            quadratic loss estimate).
        upper_voltage: which voltage the upper limit uses: ``"lin"`` (LinDistFlow ``v_hat``,
            keeps the relaxation exact) or ``"soc"`` (the relaxed ``v``).
        inaccurate_tol_pu: an ``optimal_inaccurate`` solve is accepted when its voltages are
            within this of an AC sweep at its setpoint (every scenario with ``pi > 0``).
    """

    n_scenarios: int = 10
    solver: str = "ECOS"
    objective: str = "env_cost"
    q_regularizer: float = 1e-3
    c_loss: float = 1.0
    w_voltage: float = 0.1
    slack_penalty: float = 1000.0
    formulation: str = "soc"
    upper_voltage: str = "lin"
    inaccurate_tol_pu: float = 1e-3

    def __post_init__(self) -> None:
        from env.settings import check_field_types

        check_field_types(self)
        if isinstance(self.n_scenarios, bool) or not isinstance(self.n_scenarios, (int, np.integer)):
            raise ValueError(f"ReactiveSettings.n_scenarios must be an int, got {self.n_scenarios!r}")
        if self.n_scenarios < 1:
            raise ValueError(f"ReactiveSettings.n_scenarios must be >= 1, got {self.n_scenarios}")
        if not isinstance(self.solver, str):
            raise ValueError(f"ReactiveSettings.solver must be one of {SOLVERS}, got {self.solver!r}")
        object.__setattr__(self, "solver", self.solver.upper())
        if self.solver not in SOLVERS:
            raise ValueError(f"ReactiveSettings.solver must be one of {SOLVERS}, got {self.solver!r}")
        for name, allowed in (("objective", OBJECTIVES), ("formulation", ("soc", "lin")),
                              ("upper_voltage", ("soc", "lin"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"ReactiveSettings.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("c_loss", "w_voltage", "q_regularizer"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                    or not (np.isfinite(value) and value >= 0):
                raise ValueError(f"ReactiveSettings.{name} must be a finite number >= 0, got {value!r}")
        for name in ("slack_penalty", "inaccurate_tol_pu"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                    or not (np.isfinite(value) and value > 0):
                raise ValueError(f"ReactiveSettings.{name} must be a finite number > 0, got {value!r}")
        if self.objective == "proxy" and self.c_loss == 0 and self.w_voltage == 0:
            raise ValueError("ReactiveSettings: c_loss and w_voltage cannot both be 0")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ReactiveSettings:
        """Build from a mapping (e.g. a TOML table); unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"ReactiveSettings: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**dict(values))


@dataclass(frozen=True, eq=False)
class ReactiveResult:
    """Outcome of one reactive solve for one feeder.

    Attributes:
        q_mvar: (n_comp,) compensator setpoints, + = injecting.
        status: cvxpy status of the solve that produced ``q_mvar`` (``optimal``, or
            ``optimal_inaccurate`` when it passed the AC check), or
            ``"solver_failed"`` when a stored setpoint was used.
        solver_used: ``"ECOS"``, ``"CLARABEL"``, ``"fast_ac"`` (:mod:`controller.reactive_fast`),
            ``"last_good"``, ``"default"`` or ``"none"`` (a feeder without compensators: status
            ``"no_compensators"``, nothing solved).
        fallback: why a fallback was used (every failed attempt), else ``None``.
        v_pred_pu: (S_given, n_bus) predicted voltage magnitudes ``sqrt(v)``; NaN
            rows for zero-probability scenarios and when no solver succeeded.
        relaxation_gap_pu: ``max (l v_i - P^2 - Q^2)`` over the scenarios with
            positive probability (NaN for LinDistFlow or without a solution).
        relaxation_gap_rel: the same relative to ``max l v_i``.
        objective: optimal value (NaN without a solution).
        expected_loss_mw: ``sum_s pi_s losses_s`` in MW (NaN without a solution).
        max_violation_pu: largest voltage-limit violation the solution pays for (env cost:
            p.u. of ``|V|``; proxy: the soft-limit slack in ``v = |V|^2`` units).
        solve_ms: wall time of the whole call (validation, every attempt).
        solver_ms: the successful solver's own time (``solver_stats.solve_time``).
    """

    q_mvar: np.ndarray
    status: str
    solver_used: str
    fallback: str | None
    v_pred_pu: np.ndarray
    relaxation_gap_pu: float
    relaxation_gap_rel: float
    objective: float
    expected_loss_mw: float
    max_violation_pu: float
    solve_ms: float
    solver_ms: float

    def __post_init__(self) -> None:
        q = np.array(self.q_mvar, dtype=float).reshape(-1)
        if not np.all(np.isfinite(q)):
            raise ValueError(f"ReactiveResult.q_mvar must be finite, got {q}")
        v = np.array(self.v_pred_pu, dtype=float)
        if v.ndim != 2:
            raise ValueError(f"ReactiveResult.v_pred_pu must be 2-D (S, n_bus), got shape {v.shape}")
        if self.solver_used not in (*SOLVERS, FAST_SOLVER, NO_COMPENSATORS, "last_good", "default"):
            raise ValueError(f"ReactiveResult.solver_used: unknown value {self.solver_used!r}")
        if (self.solver_used in (*SOLVERS, FAST_SOLVER)) != (self.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)):
            raise ValueError(f"ReactiveResult: status {self.status!r} inconsistent with {self.solver_used!r}")
        if (self.solver_used == NO_COMPENSATORS) != (self.status == "no_compensators") or \
                (self.solver_used == NO_COMPENSATORS and q.size):
            raise ValueError(f"ReactiveResult: status {self.status!r} inconsistent with {self.solver_used!r}")
        for arr in (q, v):
            arr.setflags(write=False)
        object.__setattr__(self, "q_mvar", q)
        object.__setattr__(self, "v_pred_pu", v)


@dataclass(frozen=True)
class _Attempt:
    ok: bool
    reason: str
    solver_ms: float
    status: str = ""


class FeederReactiveSOCP:
    """The two-stage scenario SOCP of one feeder, compiled once and re-solved.

    Args:
        net: a radial feeder with its compensator table.
        settings: weights, solver, formulation and the compiled scenario count.

    Attributes:
        compile_ms: time to compile the problem for both solvers (in ``__init__``).
        vars: the formulation's :class:`FeederVars` (values of the last solve).
    """

    def __init__(self, net: Network, settings: ReactiveSettings = ReactiveSettings()) -> None:
        if net.kind != "feeder":
            raise ValueError(f"FeederReactiveSOCP: {net.name} is not a feeder")
        self.net = net
        self.settings = settings
        self._q_min_mvar = np.asarray(net.compensator.q_min_mvar, dtype=float)
        self._q_max_mvar = np.asarray(net.compensator.q_max_mvar, dtype=float)
        br = net.branch
        self._sweep = RadialSweep.build(br.from_bus, br.to_bus, br.r_pu, br.x_pu, net.n_bus, net.slack_bus,
                                        name=net.name)  # checks an inaccurate solve against the AC flow
        self._build()
        self._problems: dict[str, cp.Problem] = {}
        self._last_good_mvar: np.ndarray | None = None
        t0 = time.perf_counter()
        for solver in (settings.solver, _FALLBACK_SOLVER[settings.solver]):
            self._problem_for(solver)  # both compiled now: a fallback never compiles mid-run
        self.compile_ms = (time.perf_counter() - t0) * 1e3

    @property
    def n_comp(self) -> int:
        return len(self._q_min_mvar)

    def reset(self) -> None:
        """Forget the last good setpoint (the next total failure uses the default)."""
        self._last_good_mvar = None

    # ---- building -------------------------------------------------------

    def _build(self) -> None:
        """Create Parameters, the formulation block and the objective terms (once)."""
        net, st = self.net, self.settings
        n_bus, s = net.n_bus, st.n_scenarios
        self._p_inj = cp.Parameter((n_bus, s), name="p_inj_pu")
        self._q_inj = cp.Parameter((n_bus, s), name="q_inj_pu")
        self._pi = cp.Parameter(s, nonneg=True, name="probability")
        q_inj, comp_cons = self._compensated_q()
        self.vars: FeederVars = get_formulation(st.formulation).build(net, s, self._p_inj, q_inj)
        ns = self.vars.topology.non_slack  # v at the slack bus is fixed: no limit, no deviation
        upper = self.vars.v_hat[ns] if st.upper_voltage == "lin" else self.vars.v[ns]
        q_c_mvar = None if self._q_c is None else self._q_c * net.base_mva
        if st.objective == "env_cost":
            self.terms: EnvCostTerms | ProxyTerms = EnvCostTerms(net, self.vars, ns, upper, q_c_mvar,
                                                                 st.q_regularizer)
        else:
            self.terms = ProxyTerms(net, self.vars, ns, upper, self._pi, st.c_loss, st.w_voltage,
                                    st.slack_penalty)
        self._constraints = self.vars.constraints + comp_cons + self.terms.constraints
        self._objective = cp.Minimize(self.terms.objective)

    def _compensated_q(self) -> tuple[cp.Expression, list[cp.Constraint]]:
        """``q_inj + C q^c`` broadcast over scenarios, with ``q_min <= q^c <= q_max`` (pu)."""
        if self.n_comp == 0:
            self._q_c = None
            return self._q_inj, []
        base = self.net.base_mva
        n_bus = self.net.n_bus
        c = sp.csr_matrix((np.ones(self.n_comp), (self.net.compensator.bus, np.arange(self.n_comp))),
                          shape=(n_bus, self.n_comp))
        self._q_c = cp.Variable(self.n_comp, name="q_comp_pu")
        bounds = [self._q_c >= self._q_min_mvar / base, self._q_c <= self._q_max_mvar / base]
        return self._q_inj + (c @ self._q_c)[:, None], bounds

    def _problem_for(self, solver: str) -> cp.Problem:
        """One cp.Problem per solver (sharing variables and Parameters), compiled on first request.

        Separate problems keep cvxpy's per-problem compilation cache valid when
        the fallback solver is used, so switching back does not recompile.
        """
        if solver not in self._problems:
            problem = cp.Problem(self._objective, self._constraints)
            if not problem.is_dcp(dpp=True):
                raise RuntimeError("reactive SOCP is not DPP; it would recompile every solve")
            self._set_default_parameters()
            problem.get_problem_data(solver=solver, enforce_dpp=True)
            self._problems[solver] = problem
        return self._problems[solver]

    def _set_default_parameters(self) -> None:
        if self._p_inj.value is None:
            s = self.settings.n_scenarios
            self._p_inj.value = np.zeros(self._p_inj.shape)
            self._q_inj.value = np.zeros(self._q_inj.shape)
            self._pi.value = np.full(s, 1.0 / s)

    # ---- solving --------------------------------------------------------

    def solve(self, p_net_mw: np.ndarray, q_net_mvar: np.ndarray, probabilities: np.ndarray,
              prices: StepPrices | None = None) -> ReactiveResult:
        """Set the scenario Parameters, solve with fallbacks, return the setpoints.

        Args:
            p_net_mw: (S, n_bus) net active consumption (load - generation), MW.
            q_net_mvar: (S, n_bus) net reactive consumption without compensators, MVAr.
            probabilities: (S,) scenario probabilities, >= 0, summing to 1.
            prices: the step's prices (:func:`env.pricing.step_prices`); required by the
                env-cost objective, ignored by the proxy.

        Raises:
            ValueError: for a bad shape, NaN/inf, probabilities not summing to 1, or missing prices.
        """
        t0 = time.perf_counter()
        p, q, pi = self._validate(p_net_mw, q_net_mvar, probabilities)
        self._set_parameters(p, q, pi, prices)
        failures: list[str] = []
        primary = self.settings.solver
        for solver in (primary, _FALLBACK_SOLVER[primary]):
            attempt = self._attempt(solver, p, q, pi)
            if attempt.ok:
                return self._solved_result(solver, attempt.status, pi, failures, t0, attempt.solver_ms)
            failures.append(f"{solver} failed ({attempt.reason})")
        return self._stored_result(pi, failures, t0)

    def _validate(self, p: np.ndarray, q: np.ndarray, pi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return validate_scenarios(self.net.n_bus, self.settings.n_scenarios, p, q, pi)

    def _set_parameters(self, p: np.ndarray, q: np.ndarray, pi: np.ndarray, prices: StepPrices | None) -> None:
        """Parameters in pu, injections = -consumption; pad by repetition with pi = 0."""
        s_max, s = self.settings.n_scenarios, len(pi)
        cols = np.arange(s_max) % s
        base = self.net.base_mva
        pi_full = np.concatenate([pi, np.zeros(s_max - s)])
        self.terms.set_prices(pi_full, prices, p[cols].sum(axis=1))
        self._p_inj.value = -p[cols].T / base
        self._q_inj.value = -q[cols].T / base
        self._pi.value = pi_full

    def _attempt(self, solver: str, p: np.ndarray, q: np.ndarray, pi: np.ndarray) -> _Attempt:
        """One solve. ``optimal`` is accepted; ``optimal_inaccurate`` when :meth:`_ac_deviation_pu`
        is within ``inaccurate_tol_pu``; any other status or exception is a failure (recorded)."""
        problem = self._problem_for(solver)
        try:
            with warnings.catch_warnings():  # an inaccurate solve is checked below, not a warning
                warnings.simplefilter("ignore", UserWarning)
                problem.solve(solver=solver, enforce_dpp=True)
        except Exception as err:  # noqa: BLE001 - every solver error is a recorded failure, then a fallback
            return _Attempt(False, f"{type(err).__name__}: {err}", np.nan)
        status = problem.status
        if status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            return _Attempt(False, f"status {status}", np.nan)
        if self._q_c is not None and (self._q_c.value is None or not np.all(np.isfinite(self._q_c.value))):
            return _Attempt(False, f"status {status} without a finite setpoint", np.nan)
        if status == cp.OPTIMAL_INACCURATE:
            dev = self._ac_deviation_pu(p, q, pi)
            if not dev <= self.settings.inaccurate_tol_pu:
                return _Attempt(False, f"status {status}, voltages {dev:.2g} pu off the AC sweep "
                                       f"(tolerance {self.settings.inaccurate_tol_pu:g})", np.nan)
        stats = problem.solver_stats
        solver_ms = stats.solve_time * 1e3 if stats is not None and stats.solve_time is not None else np.nan
        return _Attempt(True, "", solver_ms, status)

    def _ac_deviation_pu(self, p: np.ndarray, q: np.ndarray, pi: np.ndarray) -> float:
        """``max |V_socp - V_ac|`` over the scenarios with ``pi > 0``, the AC sweep run at the
        solution's setpoint (inf when the solution has no finite voltages or the sweep fails)."""
        live = pi > 0
        v_socp = self.vars.voltage_pu()[:, :len(pi)][:, live]
        if not np.all(np.isfinite(v_socp)):
            return float("inf")
        q_bus = np.zeros(self.net.n_bus)
        np.add.at(q_bus, self.net.compensator.bus, self._setpoint_mvar())
        s_pu = (p[live] + 1j * (q[live] - q_bus)).T / self.net.base_mva
        try:
            v_ac = np.abs(self._sweep.solve(s_pu, v_slack_pu=self.net.v_slack_pu).v_pu)
        except PowerFlowError:
            return float("inf")
        return float(np.max(np.abs(v_socp - v_ac)))

    def _setpoint_mvar(self) -> np.ndarray:
        if self._q_c is None:
            return np.zeros(0)
        q = self._q_c.value * self.net.base_mva
        return np.clip(q, self._q_min_mvar, self._q_max_mvar)

    def _solved_result(self, solver: str, status: str, pi: np.ndarray, failures: list[str], t0: float,
                       solver_ms: float) -> ReactiveResult:
        s = len(pi)
        q = self._setpoint_mvar()
        self._last_good_mvar = q
        v = self.vars.voltage_pu()[:, :s].T.copy()
        v[pi <= 0] = np.nan
        gap, gap_rel = self._gap(pi)
        pi_full = self._pi.value
        return ReactiveResult(
            q_mvar=q, status=status, solver_used=solver,
            fallback=f"{'; '.join(failures)}; solved with {solver}" if failures else None,
            v_pred_pu=v, relaxation_gap_pu=gap, relaxation_gap_rel=gap_rel,
            objective=float(self._problems[solver].value),
            expected_loss_mw=float(pi_full @ self.vars.losses.value) * self.net.base_mva,
            max_violation_pu=self.terms.max_violation_pu(np.flatnonzero(pi > 0)),
            solve_ms=(time.perf_counter() - t0) * 1e3, solver_ms=solver_ms,
        )

    def _gap(self, pi: np.ndarray) -> tuple[float, float]:
        if self.vars.l is None:
            return np.nan, np.nan
        gap = relaxation_gap(self.vars, scenarios=np.flatnonzero(pi > 0))
        return gap.abs_pu, gap.rel

    def _stored_result(self, pi: np.ndarray, failures: list[str], t0: float) -> ReactiveResult:
        return stored_result(self._last_good_mvar, self._q_min_mvar, self._q_max_mvar, self.net.n_bus, pi,
                             failures, t0)


def stored_result(last_good_mvar: np.ndarray | None, q_min_mvar: np.ndarray, q_max_mvar: np.ndarray, n_bus: int,
                  pi: np.ndarray, failures: list[str], t0: float) -> ReactiveResult:
    """The result of a step no solver solved: the last good setpoint, else zeros projected to the limits."""
    if last_good_mvar is not None:
        q, used, what = last_good_mvar, "last_good", "using the last good setpoint"
    else:
        q = np.clip(np.zeros(len(q_min_mvar)), q_min_mvar, q_max_mvar)
        used, what = "default", "no previous solution: using zeros projected to the limits"
    return ReactiveResult(
        q_mvar=q, status="solver_failed", solver_used=used, fallback=f"{'; '.join(failures)}; {what}",
        v_pred_pu=np.full((len(pi), n_bus), np.nan), relaxation_gap_pu=np.nan,
        relaxation_gap_rel=np.nan, objective=np.nan, expected_loss_mw=np.nan, max_violation_pu=np.nan,
        solve_ms=(time.perf_counter() - t0) * 1e3, solver_ms=np.nan,
    )


def validate_scenarios(n_bus: int, s_max: int, p: np.ndarray, q: np.ndarray, pi: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked ``(p (S, n_bus), q (S, n_bus), pi (S,))`` of a reactive solve, ``pi`` renormalized.

    Raises:
        ValueError: for a bad shape, NaN/inf, or probabilities not >= 0 summing to 1.
    """
    p = _finite_array(p, "p_net_mw", ndim=2)
    q = _finite_array(q, "q_net_mvar", ndim=2)
    pi = _finite_array(pi, "probabilities", ndim=1)
    s = p.shape[0]
    if p.shape[1] != n_bus or not 1 <= s <= s_max:
        raise ValueError(f"p_net_mw: expected shape (S, {n_bus}) with 1 <= S <= {s_max}, got {p.shape}")
    if q.shape != p.shape:
        raise ValueError(f"q_net_mvar: expected shape {p.shape} like p_net_mw, got {q.shape}")
    if pi.shape != (s,):
        raise ValueError(f"probabilities: expected shape ({s},), got {pi.shape}")
    if np.any(pi < 0) or abs(pi.sum() - 1.0) > _PROB_TOL:
        raise ValueError(f"probabilities: must be >= 0 and sum to 1, got sum {pi.sum():.9g}")
    return p, q, pi / pi.sum()


def _finite_array(value: Any, name: str, ndim: int) -> np.ndarray:
    try:
        arr = np.array(value, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: not a numeric array ({err})") from None
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or inf")
    return arr


ScenarioInput = tuple[np.ndarray, np.ndarray, np.ndarray]


def _nothing_to_set(item: ScenarioInput) -> ReactiveResult:
    """The result of a feeder without compensators: nothing to decide, so nothing is solved (the
    SOCP would only predict voltages; status ``no_compensators``, diagnostics NaN)."""
    nan = float("nan")
    return ReactiveResult(q_mvar=np.zeros(0), status="no_compensators", solver_used=NO_COMPENSATORS, fallback=None,
                          v_pred_pu=np.full(np.shape(item[0]), nan), relaxation_gap_pu=nan, relaxation_gap_rel=nan,
                          objective=nan, expected_loss_mw=nan, max_violation_pu=nan, solve_ms=0.0, solver_ms=0.0)


class ReactiveCompensator:
    """One reactive controller per feeder (of a ``Grid`` or a list of feeders).

    Args:
        feeders: the feeders, or a ``Grid`` (its ``feeders`` are used).
        settings: shared by every feeder's problem.
        method: ``"socp"`` (:class:`FeederReactiveSOCP`, the default) or ``"fast"``
            (:class:`controller.reactive_fast.FastFeederReactive`: the same env-cost objective
            minimized on the AC sweep by sequential QPs, 5-10x faster per step; docs/rl.md).
    """

    def __init__(self, feeders: Sequence[Network] | Grid, settings: ReactiveSettings = ReactiveSettings(),
                 method: str = "socp") -> None:
        nets = feeders.feeders if isinstance(feeders, Grid) else tuple(feeders)
        if not nets:
            raise ValueError("ReactiveCompensator: no feeders")
        if method not in METHODS:
            raise ValueError(f"ReactiveCompensator.method must be one of {METHODS}, got {method!r}")
        self.settings = settings
        self.method = method
        if method == "fast":
            from controller.reactive_fast import FastFeederReactive  # it builds on this module

            self.models: tuple[Any, ...] = tuple(FastFeederReactive(net, settings) for net in nets)
        else:
            self.models = tuple(FeederReactiveSOCP(net, settings) for net in nets)
        self._has_compensators = tuple(len(net.compensator) > 0 for net in nets)

    def solve(self, inputs: Sequence[ScenarioInput], prices: StepPrices | None = None) -> list[ReactiveResult]:
        """Solve every feeder; ``inputs[k] = (p_net_mw, q_net_mvar, probabilities)`` of feeder k,
        ``prices`` the step's (shared by the feeders; required by the env-cost objective)."""
        if len(inputs) != len(self.models):
            raise ValueError(f"inputs: expected one (p, q, probabilities) per feeder ({len(self.models)}), "
                             f"got {len(inputs)}")
        return [model.solve(*item, prices=prices) if has_q else _nothing_to_set(item)
                for model, item, has_q in zip(self.models, inputs, self._has_compensators)]

    def reset(self) -> None:
        """Forget every feeder's last good setpoint (start of a new day)."""
        for model in self.models:
            model.reset()
