"""A fast reactive controller: the SOCP's env-cost objective minimized on the AC power flow.

The same problem as :class:`controller.reactive.FeederReactiveSOCP` with
``objective="env_cost"`` (docs/math.md §1, §10): for one feeder and S scenarios of the coming
step, the here-and-now compensator setpoints ``q`` (MVAr) minimize

    f(q) = sum_s [ w_s P_s(q) + w_V_s sum_j (max(0, |V_js(q)| - vmax_j) + max(0, vmin_j - |V_js(q)|)) ]
           + r ||q||^2,      q_min <= q <= q_max

with the weights of :func:`controller.reactive_cost.env_cost_weights` (``w_s = pi_s dt c_s``,
``w_V_s = pi_s dt c_V``). Instead of a DistFlow-SOC relaxation, ``P_s`` (head power, losses
included) and ``|V_js|`` are the AC values of the radial sweep (:class:`env.physics.sweep.RadialSweep`,
the env's own power flow), so the voltage penalty is exactly the env's (no tangent on ``v = |V|^2``,
no conservative LinDistFlow upper side).

It is solved by sequential quadratic programming: at the iterate ``q_k`` one batched sweep of
the S scenarios at ``q_k`` and at ``q_k +- h e_i`` gives ``f``, the voltage Jacobian and the head
power's gradient (central differences); the losses' Hessian is ``2 R / base`` (``R`` the
common-path resistance of the compensator buses, from the sweep's ``T^T diag(z) T``). The
step ``d`` solves the QP

    min  (1/2) d^T H d + g^T d + sum_rows w_row t_row
    s.t. t_row >= b_row + J_row d,  t >= 0,   q_min - q_k <= d <= q_max - q_k

(HiGHS), whose rows are the voltage pieces that can become positive inside the box (the others
are dropped: exact for the linear model). A step that does not lower the true ``f`` is halved;
the iteration stops when ``max |d| < tol_mvar``. It starts at the last setpoint of the day.

A sweep or QP failure is a recorded fallback (the last good setpoint, as the SOCP's);
iterations running out end with status ``optimal_inaccurate``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import highspy
import numpy as np

from controller.reactive import (FAST_SOLVER, ReactiveResult, ReactiveSettings, stored_result,
                                 validate_scenarios)
from controller.reactive_cost import env_cost_weights
from env.network import Network
from env.physics.sweep import PowerFlowError, RadialSweep
from env.pricing import StepPrices

_FD_STEP_MVAR = 1e-2
_TOL_MVAR = 1e-4
_MAX_ITER = 8
_MAX_HALVINGS = 6


@dataclass(frozen=True)
class _Point:
    """``f`` and its local model at one setpoint."""

    q_mvar: np.ndarray
    f: float
    vm: np.ndarray            # (n_bus, S) |V| at q
    loss_mw: np.ndarray       # (S,)
    grad: np.ndarray          # (n,) gradient of the smooth part (head energy + regularizer)
    jac: np.ndarray           # (n_ns, S, n) d|V|/dq of the non-slack buses


class FastFeederReactive:
    """The env-cost reactive problem of one feeder, solved on the AC sweep (module docstring).

    Same ``solve`` signature and :class:`ReactiveResult` as
    :class:`controller.reactive.FeederReactiveSOCP`; ``solver_used`` is ``"fast_ac"``,
    ``relaxation_gap_*`` are NaN (nothing is relaxed) and ``v_pred_pu`` are AC voltages.
    """

    def __init__(self, net: Network, settings: ReactiveSettings = ReactiveSettings()) -> None:
        if net.kind != "feeder":
            raise ValueError(f"FastFeederReactive: {net.name} is not a feeder")
        if settings.objective != "env_cost":
            raise ValueError("FastFeederReactive minimizes the env's cost: needs objective='env_cost', "
                             f"got {settings.objective!r}")
        self.net = net
        self.settings = settings
        self._q_min_mvar = np.asarray(net.compensator.q_min_mvar, dtype=float)
        self._q_max_mvar = np.asarray(net.compensator.q_max_mvar, dtype=float)
        self._bus = np.asarray(net.compensator.bus, dtype=np.intp)
        br = net.branch
        self._sweep = RadialSweep.build(br.from_bus, br.to_bus, br.r_pu, br.x_pu, net.n_bus, net.slack_bus,
                                        name=net.name)
        self._ns = np.flatnonzero(np.arange(net.n_bus) != net.slack_bus)
        self._vmin = np.asarray(net.bus.vmin_pu, dtype=float)[self._ns]
        self._vmax = np.asarray(net.bus.vmax_pu, dtype=float)[self._ns]
        r_common = self._sweep.dlf.real[np.ix_(self._bus, self._bus)]
        self._loss_hess = 2.0 * r_common / net.base_mva      # MW per MVAr^2, d^2 losses / dq^2
        self._highs = highspy.Highs()
        self._highs.setOptionValue("output_flag", False)
        self._last_good_mvar: np.ndarray | None = None

    @property
    def n_comp(self) -> int:
        return len(self._q_min_mvar)

    def reset(self) -> None:
        """Forget the last setpoint (the next solve starts from zeros projected to the limits)."""
        self._last_good_mvar = None

    # ---- the AC objective ------------------------------------------------

    def _flows(self, q_cols: np.ndarray, p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, ...]:
        """|V| (n_bus, S, K), head MW (S, K), losses MW (S, K) at K setpoint columns (n, K)."""
        n_bus, base = self.net.n_bus, self.net.base_mva
        k = q_cols.shape[1]
        q_bus = np.zeros((n_bus, k))
        np.add.at(q_bus, self._bus, q_cols)
        s_mva = p.T[:, :, None] + 1j * (q.T[:, :, None] - q_bus[:, None, :])
        res = self._sweep.solve(s_mva.reshape(n_bus, -1) / base, v_slack_pu=self.net.v_slack_pu)
        s = p.shape[0]
        return (np.abs(res.v_pu).reshape(n_bus, s, k), res.s_slack_pu.real.reshape(s, k) * base,
                res.loss_pu.real.reshape(s, k) * base)

    def _violation(self, vm_ns: np.ndarray) -> np.ndarray:
        """``max(0, |V| - vmax) + max(0, vmin - |V|)`` per non-slack bus (the env's measure)."""
        lim = (slice(None),) + (None,) * (vm_ns.ndim - 1)
        return np.maximum(vm_ns - self._vmax[lim], 0.0) + np.maximum(self._vmin[lim] - vm_ns, 0.0)

    def _point(self, q_mvar: np.ndarray, p: np.ndarray, q: np.ndarray, w_head: np.ndarray,
               w_volt: np.ndarray) -> _Point:
        n, h = self.n_comp, _FD_STEP_MVAR
        cols = np.concatenate([q_mvar[:, None], q_mvar[:, None] + h * np.eye(n),
                               q_mvar[:, None] - h * np.eye(n)], axis=1)
        vm, head, loss = self._flows(cols, p, q)
        r = self.settings.q_regularizer
        f = float(w_head @ head[:, 0] + w_volt @ self._violation(vm[self._ns, :, 0]).sum(axis=0)
                  + r * q_mvar @ q_mvar)
        grad = w_head @ ((head[:, 1:n + 1] - head[:, n + 1:]) / (2 * h)) + 2 * r * q_mvar
        jac = (vm[self._ns][:, :, 1:n + 1] - vm[self._ns][:, :, n + 1:]) / (2 * h)
        return _Point(q_mvar, f, vm[:, :, 0], loss[:, 0], grad, jac)

    # ---- the QP step -------------------------------------------------------

    def _qp_step(self, pt: _Point, w_head: np.ndarray, w_volt: np.ndarray) -> tuple[np.ndarray, float]:
        """The step ``d`` of the local QP (module docstring) and HiGHS's time (ms)."""
        n = self.n_comp
        lo, hi = self._q_min_mvar - pt.q_mvar, self._q_max_mvar - pt.q_mvar
        v0 = pt.vm[self._ns]
        b = np.concatenate([(v0 - self._vmax[:, None]).ravel(), (self._vmin[:, None] - v0).ravel()])
        slope = np.concatenate([pt.jac.reshape(-1, n), -pt.jac.reshape(-1, n)])
        w = np.tile(np.broadcast_to(w_volt, v0.shape).ravel(), 2)
        reach = b + np.maximum(slope * lo, slope * hi).sum(axis=1)
        keep = (reach > 0) & (w > 0)
        b, slope, w = b[keep], slope[keep], w[keep]
        m = len(b)
        hess = np.clip(w_head, 0.0, None).sum() * self._loss_hess + 2 * self.settings.q_regularizer * np.eye(n)
        hess = 0.5 * (hess + hess.T)

        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = n + m, m
        lp.col_cost_ = np.concatenate([pt.grad, w])
        lp.col_lower_ = np.concatenate([lo, np.zeros(m)])
        lp.col_upper_ = np.concatenate([hi, np.full(m, highspy.kHighsInf)])
        lp.row_lower_ = b
        lp.row_upper_ = np.full(m, highspy.kHighsInf)
        a = np.hstack([-slope, np.eye(m)]) if m else np.zeros((0, n))     # t - J d >= b
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        nz = a != 0
        lp.a_matrix_.start_ = np.concatenate([[0], np.cumsum(nz.sum(axis=0))]).astype(np.int32)
        lp.a_matrix_.index_ = np.nonzero(nz.T)[1].astype(np.int32)
        lp.a_matrix_.value_ = a.T[nz.T]
        hs = highspy.HessianFormat.kTriangular
        hes = highspy.HighsHessian()
        hes.dim_, hes.format_ = n, hs
        low = np.tril(np.ones((n, n), dtype=bool))
        hes.start_ = np.concatenate([[0], np.cumsum(low.sum(axis=0))]).astype(np.int32)
        hes.index_ = np.nonzero(low.T)[1].astype(np.int32)
        hes.value_ = hess.T[low.T]
        model = highspy.HighsModel()
        model.lp_, model.hessian_ = lp, hes
        t0 = time.perf_counter()
        self._highs.clearModel()
        self._highs.passModel(model)
        self._highs.run()
        ms = (time.perf_counter() - t0) * 1e3
        status = self._highs.getModelStatus()
        if status != highspy.HighsModelStatus.kOptimal:
            raise _QPFailed(f"HiGHS QP status {self._highs.modelStatusToString(status)}")
        d = np.asarray(self._highs.getSolution().col_value[:n], dtype=float)
        return np.clip(d, lo, hi), ms

    # ---- solving -------------------------------------------------------------

    def solve(self, p_net_mw: np.ndarray, q_net_mvar: np.ndarray, probabilities: np.ndarray,
              prices: StepPrices | None = None) -> ReactiveResult:
        """Setpoints minimizing the env's expected step cost on the AC sweep (arguments as
        :meth:`controller.reactive.FeederReactiveSOCP.solve`; ``prices`` required)."""
        t0 = time.perf_counter()
        p, q, pi = validate_scenarios(self.net.n_bus, self.settings.n_scenarios, p_net_mw, q_net_mvar,
                                      probabilities)
        w_head, w_volt = env_cost_weights(pi, prices, p.sum(axis=1))
        start = (self._last_good_mvar if self._last_good_mvar is not None
                 else np.zeros(self.n_comp))
        start = np.clip(start, self._q_min_mvar, self._q_max_mvar)
        try:
            pt = self._point(start, p, q, w_head, w_volt)
        except PowerFlowError as err:
            return stored_result(self._last_good_mvar, self._q_min_mvar, self._q_max_mvar, self.net.n_bus, pi,
                                 [f"{FAST_SOLVER} failed (PowerFlowError: {err})"], t0)
        solver_ms, status, note = 0.0, "optimal_inaccurate", None
        for _ in range(_MAX_ITER if self.n_comp else 0):
            try:
                d, ms = self._qp_step(pt, w_head, w_volt)
            except _QPFailed as err:
                note = f"{err}; kept the iterate of f = {pt.f:.6g}"
                break
            solver_ms += ms
            if np.max(np.abs(d), initial=0.0) < _TOL_MVAR:
                status = "optimal"
                break
            new = self._descend(pt, d, p, q, w_head, w_volt)
            if new is None:           # no step along d lowers f: stationary within the model's accuracy
                status = "optimal"
                break
            pt = new
        else:
            status = "optimal" if self.n_comp == 0 else "optimal_inaccurate"
        self._last_good_mvar = pt.q_mvar
        v = pt.vm.T.copy()
        v[pi <= 0] = np.nan
        live = pi > 0
        return ReactiveResult(
            q_mvar=pt.q_mvar, status=status, solver_used=FAST_SOLVER, fallback=note,
            v_pred_pu=v, relaxation_gap_pu=np.nan, relaxation_gap_rel=np.nan, objective=pt.f,
            expected_loss_mw=float(pi @ pt.loss_mw),
            max_violation_pu=float(np.max(self._violation(pt.vm[self._ns][:, live]), initial=0.0)),
            solve_ms=(time.perf_counter() - t0) * 1e3, solver_ms=solver_ms,
        )

    def _descend(self, pt: _Point, d: np.ndarray, p: np.ndarray, q: np.ndarray, w_head: np.ndarray,
                 w_volt: np.ndarray) -> _Point | None:
        """The first of ``q + d, q + d/2, ...`` that lowers ``f``; ``None`` when none does."""
        for _ in range(_MAX_HALVINGS):
            try:
                new = self._point(np.clip(pt.q_mvar + d, self._q_min_mvar, self._q_max_mvar), p, q, w_head, w_volt)
            except PowerFlowError:
                new = None
            if new is not None and new.f < pt.f - 1e-12 * (1.0 + abs(pt.f)):
                return new
            d = 0.5 * d
            if np.max(np.abs(d)) < _TOL_MVAR:
                return None
        return None


class _QPFailed(RuntimeError):
    """HiGHS did not solve the step's QP to optimality."""
