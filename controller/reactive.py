"""Scenario-based reactive compensation: a two-stage SOCP per feeder (seed 003, stage 2).

MATH.md §1 "Volt/VAR objective" and "Two-stage". For one feeder and S
scenarios of the coming interval (net loads ``p_s``, ``q_s``, probabilities
``pi_s``) the compensator setpoints ``q^c`` are here-and-now (shared by all
scenarios) and every scenario has its own DistFlow-SOC (or LinDistFlow) block:

    min_{q^c, (P, Q, l, v, d, sigma)_s}  sum_s pi_s [ c_loss sum_k r_k l_ks
                                                     + w_V sum_j d_js
                                                     + M sum_j sigma_js ]
    s.t.  q_min <= q^c <= q_max
          DistFlow block of scenario s with injections (-p_s, -q_s + C q^c)
          d_js >= u_js - 1,  d_js >= 1 - v_js
          vmin_j^2 - sigma_js <= v_js,  u_js <= vmax_j^2 + sigma_js,  sigma >= 0

over the non-slack buses j, where the upper side ``u`` is either ``v`` itself
(``upper_voltage="soc"``, MATH §1 literally) or the LinDistFlow voltage
``v_hat >= v`` of the same injections (``"lin"``, the default: Gan, Li, Topcu
& Low 2015's modified OPF). Rewarding low ``v`` (over-voltage, reverse flow)
lets the SOC relaxation invent losses to pull voltages down, so with
``"soc"`` the relaxation is badly inexact whenever voltages exceed 1 and the
compensators saturate (a midday PV case of d33: relative gap 0.99);
``v_hat`` does not depend on ``l`` and keeps it exact under their condition
C1, at the price of a slightly conservative upper side (``v_hat - v`` is the
second-order loss term). The slack penalty is probability-weighted (see
:class:`ReactiveSettings`).

The problem is built once with cvxpy Parameters (loads, probabilities; DPP:
no Parameter multiplies another) and re-solved each call. Fewer scenarios
than ``n_scenarios`` are padded by repeating the given ones with probability
zero, so nothing recompiles. On a solver failure the configured solver falls
back to the other one (ECOS <-> CLARABEL), then to the last good setpoint
(zeros projected to the limits the first time); ``ReactiveResult.fallback``
says which and why.
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

from env.formulations import FeederVars, get_formulation, relaxation_gap
from env.network import Grid, Network

SOLVERS = ("ECOS", "CLARABEL")
_FALLBACK_SOLVER = {"ECOS": "CLARABEL", "CLARABEL": "ECOS"}
_PROB_TOL = 1e-6


@dataclass(frozen=True)
class ReactiveSettings:
    """Settings of the reactive SOCP.

    Attributes:
        n_scenarios: S, the number of scenario columns compiled (fewer may be given).
        solver: ``"ECOS"`` or ``"CLARABEL"`` (the other is the fallback).
        c_loss: weight on expected active losses ``sum_k r_k l_k`` (per pu of losses).
        w_voltage: weight on ``sum_j d_j``, ``d_j >= u_j - 1, d_j >= 1 - v_j`` (``|v_j - 1|``
            when ``u = v``; ``v = |V|^2`` in pu, so ``|V| - 1 ~ (v - 1) / 2``).
        slack_penalty: M, weight on the soft voltage-limit slack (per pu of ``v``),
            probability-weighted like the other terms so that zero-probability
            (padding) scenarios cost nothing and duplicated scenarios do not
            change the answer; with S equiprobable scenarios it equals
            ``(M / S) * sum slack``.
        formulation: ``"soc"`` (DistFlow-SOC) or ``"lin"`` (LinDistFlow, with the
            quadratic loss estimate).
        upper_voltage: which voltage the upper limit and the over-voltage
            deviation use: ``"lin"`` (LinDistFlow ``v_hat``, keeps the relaxation
            exact) or ``"soc"`` (the relaxed ``v``; see the module docstring).
    """

    n_scenarios: int = 10
    solver: str = "ECOS"
    c_loss: float = 1.0
    w_voltage: float = 0.1
    slack_penalty: float = 1000.0
    formulation: str = "soc"
    upper_voltage: str = "lin"

    def __post_init__(self) -> None:
        if isinstance(self.n_scenarios, bool) or not isinstance(self.n_scenarios, (int, np.integer)):
            raise ValueError(f"ReactiveSettings.n_scenarios must be an int, got {self.n_scenarios!r}")
        if self.n_scenarios < 1:
            raise ValueError(f"ReactiveSettings.n_scenarios must be >= 1, got {self.n_scenarios}")
        object.__setattr__(self, "solver", str(self.solver).upper())
        if self.solver not in SOLVERS:
            raise ValueError(f"ReactiveSettings.solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.formulation not in ("soc", "lin"):
            raise ValueError(f"ReactiveSettings.formulation must be 'soc' or 'lin', got {self.formulation!r}")
        if self.upper_voltage not in ("soc", "lin"):
            raise ValueError(f"ReactiveSettings.upper_voltage must be 'soc' or 'lin', got {self.upper_voltage!r}")
        for name in ("c_loss", "w_voltage"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"ReactiveSettings.{name} must be finite and >= 0, got {value}")
        if not (np.isfinite(self.slack_penalty) and self.slack_penalty > 0):
            raise ValueError(f"ReactiveSettings.slack_penalty must be finite and > 0, got {self.slack_penalty}")
        if self.c_loss == 0 and self.w_voltage == 0:
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
        status: cvxpy status of the solve that produced ``q_mvar``, or
            ``"solver_failed"`` when a stored setpoint was used.
        solver_used: ``"ECOS"``, ``"CLARABEL"``, ``"last_good"`` or ``"default"``.
        fallback: why a fallback was used (every failed attempt), else ``None``.
        v_pred_pu: (S_given, n_bus) predicted voltage magnitudes ``sqrt(v)``; NaN
            rows for zero-probability scenarios and when no solver succeeded.
        relaxation_gap_pu: ``max (l v_i - P^2 - Q^2)`` over the scenarios with
            positive probability (NaN for LinDistFlow or without a solution).
        relaxation_gap_rel: the same relative to ``max l v_i``.
        objective: optimal value (NaN without a solution).
        expected_loss_mw: ``sum_s pi_s losses_s`` in MW (NaN without a solution).
        max_slack_pu2: largest soft voltage-limit slack used (in ``v`` units).
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
    max_slack_pu2: float
    solve_ms: float
    solver_ms: float

    def __post_init__(self) -> None:
        q = np.array(self.q_mvar, dtype=float).reshape(-1)
        if not np.all(np.isfinite(q)):
            raise ValueError(f"ReactiveResult.q_mvar must be finite, got {q}")
        v = np.array(self.v_pred_pu, dtype=float)
        if v.ndim != 2:
            raise ValueError(f"ReactiveResult.v_pred_pu must be 2-D (S, n_bus), got shape {v.shape}")
        if self.solver_used not in (*SOLVERS, "last_good", "default"):
            raise ValueError(f"ReactiveResult.solver_used: unknown value {self.solver_used!r}")
        if (self.solver_used in SOLVERS) != (self.status == cp.OPTIMAL):
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
        """Create Parameters, the formulation block and the objective (once)."""
        net, st = self.net, self.settings
        n_bus, s = net.n_bus, st.n_scenarios
        self._p_inj = cp.Parameter((n_bus, s), name="p_inj_pu")
        self._q_inj = cp.Parameter((n_bus, s), name="q_inj_pu")
        self._pi = cp.Parameter(s, nonneg=True, name="probability")
        q_inj, comp_cons = self._compensated_q()
        self.vars: FeederVars = get_formulation(st.formulation).build(net, s, self._p_inj, q_inj)
        self._ns = self.vars.topology.non_slack  # v at the slack bus is fixed: no slack, no deviation
        self._constraints = self.vars.constraints + comp_cons + self._voltage_terms()
        self._objective = cp.Minimize(self._pi @ self._scenario_cost())

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

    def _voltage_terms(self) -> list[cp.Constraint]:
        """Soft limits ``vmin^2 - sigma <= v``, ``u <= vmax^2 + sigma`` and ``d >= u - 1, d >= 1 - v``."""
        net, s = self.net, self.settings.n_scenarios
        v = self.vars.v[self._ns]
        upper = self.vars.v_hat[self._ns] if self.settings.upper_voltage == "lin" else v
        self._slack = cp.Variable((len(self._ns), s), nonneg=True, name="v_slack_pu2")
        self._dev = cp.Variable((len(self._ns), s), name="v_dev_pu2")
        v_lo, v_hi = (net.bus.vmin_pu[self._ns] ** 2)[:, None], (net.bus.vmax_pu[self._ns] ** 2)[:, None]
        cons = [v >= v_lo - self._slack, upper <= v_hi + self._slack]
        if self.settings.w_voltage > 0:
            cons += [self._dev >= upper - 1.0, self._dev >= 1.0 - v]
        return cons

    def _scenario_cost(self) -> cp.Expression:
        """(S,) ``c_loss losses_s + w_V sum_j d_js + M sum_j sigma_js`` over non-slack buses j."""
        st = self.settings
        cost = st.slack_penalty * cp.sum(self._slack, axis=0)
        if st.c_loss > 0:
            cost = cost + st.c_loss * self.vars.losses
        if st.w_voltage > 0:
            cost = cost + st.w_voltage * cp.sum(self._dev, axis=0)
        return cost

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

    def solve(self, p_net_mw: np.ndarray, q_net_mvar: np.ndarray, probabilities: np.ndarray) -> ReactiveResult:
        """Set the scenario Parameters, solve with fallbacks, return the setpoints.

        Args:
            p_net_mw: (S, n_bus) net active consumption (load - generation), MW.
            q_net_mvar: (S, n_bus) net reactive consumption without compensators, MVAr.
            probabilities: (S,) scenario probabilities, >= 0, summing to 1.

        Raises:
            ValueError: for a bad shape, NaN/inf, or probabilities not summing to 1.
        """
        t0 = time.perf_counter()
        p, q, pi = self._validate(p_net_mw, q_net_mvar, probabilities)
        self._set_parameters(p, q, pi)
        failures: list[str] = []
        primary = self.settings.solver
        for solver in (primary, _FALLBACK_SOLVER[primary]):
            attempt = self._attempt(solver)
            if attempt.ok:
                return self._solved_result(solver, pi, failures, t0, attempt.solver_ms)
            failures.append(f"{solver} failed ({attempt.reason})")
        return self._stored_result(pi, failures, t0)

    def _validate(self, p: np.ndarray, q: np.ndarray, pi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_bus, s_max = self.net.n_bus, self.settings.n_scenarios
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

    def _set_parameters(self, p: np.ndarray, q: np.ndarray, pi: np.ndarray) -> None:
        """Parameters in pu, injections = -consumption; pad by repetition with pi = 0."""
        s_max, s = self.settings.n_scenarios, len(pi)
        cols = np.arange(s_max) % s
        base = self.net.base_mva
        self._p_inj.value = -p[cols].T / base
        self._q_inj.value = -q[cols].T / base
        self._pi.value = np.concatenate([pi, np.zeros(s_max - s)])

    def _attempt(self, solver: str) -> _Attempt:
        """One solve; any solver exception or non-optimal status is a failure (recorded)."""
        problem = self._problem_for(solver)
        try:
            with warnings.catch_warnings():  # an inaccurate solve is a recorded failure, not a warning
                warnings.simplefilter("ignore", UserWarning)
                problem.solve(solver=solver, enforce_dpp=True)
        except cp.error.SolverError as err:
            return _Attempt(False, f"SolverError: {err}", np.nan)
        if problem.status != cp.OPTIMAL:
            return _Attempt(False, f"status {problem.status}", np.nan)
        if self._q_c is not None and (self._q_c.value is None or not np.all(np.isfinite(self._q_c.value))):
            return _Attempt(False, "no finite setpoint in the solution", np.nan)
        stats = problem.solver_stats
        solver_ms = stats.solve_time * 1e3 if stats is not None and stats.solve_time is not None else np.nan
        return _Attempt(True, "", solver_ms)

    def _setpoint_mvar(self) -> np.ndarray:
        if self._q_c is None:
            return np.zeros(0)
        q = self._q_c.value * self.net.base_mva
        return np.clip(q, self._q_min_mvar, self._q_max_mvar)

    def _solved_result(self, solver: str, pi: np.ndarray, failures: list[str], t0: float,
                       solver_ms: float) -> ReactiveResult:
        s = len(pi)
        q = self._setpoint_mvar()
        self._last_good_mvar = q
        v = self.vars.voltage_pu()[:, :s].T.copy()
        v[pi <= 0] = np.nan
        gap, gap_rel = self._gap(pi)
        pi_full = self._pi.value
        return ReactiveResult(
            q_mvar=q, status=cp.OPTIMAL, solver_used=solver,
            fallback=f"{'; '.join(failures)}; solved with {solver}" if failures else None,
            v_pred_pu=v, relaxation_gap_pu=gap, relaxation_gap_rel=gap_rel,
            objective=float(self._problems[solver].value),
            expected_loss_mw=float(pi_full @ self.vars.losses.value) * self.net.base_mva,
            max_slack_pu2=float(np.max(self._slack.value[:, :s][:, pi > 0])),
            solve_ms=(time.perf_counter() - t0) * 1e3, solver_ms=solver_ms,
        )

    def _gap(self, pi: np.ndarray) -> tuple[float, float]:
        if self.vars.l is None:
            return np.nan, np.nan
        gap = relaxation_gap(self.vars, scenarios=np.flatnonzero(pi > 0))
        return gap.abs_pu, gap.rel

    def _stored_result(self, pi: np.ndarray, failures: list[str], t0: float) -> ReactiveResult:
        if self._last_good_mvar is not None:
            q, used, what = self._last_good_mvar, "last_good", "using the last good setpoint"
        else:
            q = np.clip(np.zeros(self.n_comp), self._q_min_mvar, self._q_max_mvar)
            used, what = "default", "no previous solution: using zeros projected to the limits"
        return ReactiveResult(
            q_mvar=q, status="solver_failed", solver_used=used, fallback=f"{'; '.join(failures)}; {what}",
            v_pred_pu=np.full((len(pi), self.net.n_bus), np.nan), relaxation_gap_pu=np.nan,
            relaxation_gap_rel=np.nan, objective=np.nan, expected_loss_mw=np.nan, max_slack_pu2=np.nan,
            solve_ms=(time.perf_counter() - t0) * 1e3, solver_ms=np.nan,
        )


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


class ReactiveCompensator:
    """One :class:`FeederReactiveSOCP` per feeder (of a ``Grid`` or a list of feeders).

    Args:
        feeders: the feeders, or a ``Grid`` (its ``feeders`` are used).
        settings: shared by every feeder's problem.
    """

    def __init__(self, feeders: Sequence[Network] | Grid, settings: ReactiveSettings = ReactiveSettings()) -> None:
        nets = feeders.feeders if isinstance(feeders, Grid) else tuple(feeders)
        if not nets:
            raise ValueError("ReactiveCompensator: no feeders")
        self.settings = settings
        self.models = tuple(FeederReactiveSOCP(net, settings) for net in nets)

    def solve(self, inputs: Sequence[ScenarioInput]) -> list[ReactiveResult]:
        """Solve every feeder; ``inputs[k] = (p_net_mw, q_net_mvar, probabilities)`` of feeder k."""
        if len(inputs) != len(self.models):
            raise ValueError(f"inputs: expected one (p, q, probabilities) per feeder ({len(self.models)}), "
                             f"got {len(inputs)}")
        return [model.solve(*item) for model, item in zip(self.models, inputs)]

    def reset(self) -> None:
        """Forget every feeder's last good setpoint (start of a new day)."""
        for model in self.models:
            model.reset()
