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
the iteration stops when ``max |d| < tol_mvar``, or when a full step inside the trust region
lowered ``f`` by what the QP predicted (within ``1e-7 (1 + |f|)``: the local model is exact
there, so its optimum is ``f``'s). Steps are kept within a trust region ``|d_i| <= radius``
(0.05 MVAr, x4 whenever a step reaches it), which also drops the voltage rows out of reach. It starts at the last setpoint of the day.

A QP HiGHS does not solve (its QP solver sometimes ends in "Solve error" on these) is solved
by Clarabel, and ``fallback`` says so. A sweep failure is a recorded fallback (the last good
setpoint, as the SOCP's); a QP neither solves, or iterations running out, end the iteration at
the current iterate with status ``optimal_inaccurate`` (the reason in ``fallback``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import clarabel
import highspy
import numpy as np
import scipy.sparse as sp

from controller.reactive import (FAST_SOLVER, ReactiveResult, ReactiveSettings, stored_result,
                                 validate_scenarios)
from controller.reactive_cost import env_cost_weights
from policies.solver_quiet import quiet_highs
from env.network import Network
from env.physics.sweep import PowerFlowError, RadialSweep
from env.pricing import StepPrices

_FD_STEP_MVAR = 1e-2
_TOL_MVAR = 1e-3
_MAX_ITER = 8
_MAX_HALVINGS = 6
_MODEL_TOL = 1e-7    # a full step whose decrease the QP predicted within this (x (1 + |f|)) ends the iteration
_RADIUS0_MVAR = 0.05  # first trust-region radius (x4 each time a step reaches it)


@dataclass(frozen=True)
class _Point:
    """``f`` and its local model at one setpoint."""

    q_mvar: np.ndarray
    f: float
    vm: np.ndarray            # (n_bus, S) |V| at q
    loss_mw: np.ndarray       # (S,)
    grad: np.ndarray          # (n,) gradient of the smooth part (head energy + regularizer)
    curv: np.ndarray          # (n,) its second derivatives along each setpoint (head energy only)
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
        quiet_highs()                       # the process's first Highs object prints a banner
        self._highs = highspy.Highs()
        self._highs.setOptionValue("output_flag", False)
        self._last_good_mvar: np.ndarray | None = None
        self.qp_fallbacks: list[str] = []   # the current solve's QP steps HiGHS failed on

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
        curv = np.clip(w_head, 0.0, None) @ ((head[:, 1:n + 1] + head[:, n + 1:] - 2 * head[:, :1]) / h**2)
        jac = (vm[self._ns][:, :, 1:n + 1] - vm[self._ns][:, :, n + 1:]) / (2 * h)
        return _Point(q_mvar, f, vm[:, :, 0], loss[:, 0], grad, curv, jac)

    # ---- the QP step -------------------------------------------------------

    def _hessian(self, pt: _Point, w_head: np.ndarray) -> np.ndarray:
        """The smooth part's Hessian: ``sum_s w_s 2 R / base`` (the losses' common-path resistance)
        rescaled to the measured diagonal ``pt.curv`` (the AC losses' curvature at ``q_k``), plus
        ``2 r I``."""
        model = np.clip(w_head, 0.0, None).sum() * self._loss_hess
        diag = np.diag(model)
        ok = (diag > 0) & (pt.curv > 0)
        scale = np.where(ok, np.sqrt(np.divide(pt.curv, diag, out=np.ones_like(diag), where=ok)), 1.0)
        hess = scale[:, None] * model * scale[None, :] + 2 * self.settings.q_regularizer * np.eye(self.n_comp)
        return 0.5 * (hess + hess.T)

    def _qp_step(self, pt: _Point, w_head: np.ndarray, w_volt: np.ndarray, radius: float
                 ) -> tuple[np.ndarray, float, float]:
        """The step ``d`` of the local QP (module docstring) within the trust region
        ``|d| <= radius``, the decrease of ``f`` the QP predicts for it, and HiGHS's time (ms)."""
        n = self.n_comp
        lo = np.maximum(self._q_min_mvar - pt.q_mvar, -radius)
        hi = np.minimum(self._q_max_mvar - pt.q_mvar, radius)
        v0 = pt.vm[self._ns]
        b = np.concatenate([(v0 - self._vmax[:, None]).ravel(), (self._vmin[:, None] - v0).ravel()])
        slope = np.concatenate([pt.jac.reshape(-1, n), -pt.jac.reshape(-1, n)])
        w = np.tile(np.broadcast_to(w_volt, v0.shape).ravel(), 2)
        reach = b + np.maximum(slope * lo, slope * hi).sum(axis=1)
        keep = (reach > 0) & (w > 0)
        b, slope, w = b[keep], slope[keep], w[keep]
        m = len(b)
        hess = self._hessian(pt, w_head)

        def decrease(d: np.ndarray) -> float:
            return float(-(0.5 * d @ hess @ d + pt.grad @ d)
                         - w @ (np.maximum(b + slope @ d, 0.0) - np.maximum(b, 0.0)))

        if m == 0:
            d = _box_qp(hess, pt.grad, lo, hi)
            return d, decrease(d), 0.0
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = n + m, m
        lp.col_cost_ = np.concatenate([pt.grad, w])
        lp.col_lower_ = np.concatenate([lo, np.zeros(m)])
        lp.col_upper_ = np.concatenate([hi, np.full(m, highspy.kHighsInf)])
        lp.row_lower_ = b
        lp.row_upper_ = np.full(m, highspy.kHighsInf)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise      # t - J d >= b: n dense columns, then I
        lp.a_matrix_.start_ = np.concatenate([np.arange(n) * m, n * m + np.arange(m + 1)]).astype(np.int32)
        lp.a_matrix_.index_ = np.concatenate([np.tile(np.arange(m), n), np.arange(m)]).astype(np.int32)
        lp.a_matrix_.value_ = np.concatenate([-slope.T.ravel(), np.ones(m)])
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
        status = self._highs.getModelStatus()
        if status == highspy.HighsModelStatus.kOptimal:
            d = np.asarray(self._highs.getSolution().col_value[:n], dtype=float)
        else:       # HiGHS's QP solver sometimes ends in "Solve error" on these; Clarabel then
            failed = f"HiGHS QP status {self._highs.modelStatusToString(status)}"
            d = _clarabel_qp(hess, pt.grad, lo, hi, b, slope, w, failed)
            self.qp_fallbacks.append(f"{failed}; solved by CLARABEL")
        d = np.clip(d, lo, hi)
        return d, decrease(d), (time.perf_counter() - t0) * 1e3

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
        solver_ms, status, note, radius = 0.0, "optimal_inaccurate", None, _RADIUS0_MVAR
        self.qp_fallbacks = []
        for _ in range(_MAX_ITER if self.n_comp else 0):
            try:
                d, predicted, ms = self._qp_step(pt, w_head, w_volt, radius)
            except _QPFailed as err:
                note = f"{err}; kept the iterate of f = {pt.f:.6g}"
                break
            solver_ms += ms
            step = np.max(np.abs(d), initial=0.0)
            inside = step < 0.999 * radius
            if step < _TOL_MVAR:
                status = "optimal"
                break
            new, full = self._descend(pt, d, p, q, w_head, w_volt)
            if new is None:           # no step along d lowers f: stationary within the model's accuracy
                status = "optimal"
                break
            exact = full and abs((pt.f - new.f) - predicted) <= _MODEL_TOL * (1.0 + abs(pt.f))
            pt = new
            if exact and inside:      # the model's minimizer over the box, and f agrees with the model there
                status = "optimal"
                break
            radius = radius * 4.0 if not inside else max(radius, 4.0 * step)
        else:
            status = "optimal" if self.n_comp == 0 else "optimal_inaccurate"
        if self.qp_fallbacks:
            note = "; ".join(filter(None, [note, *self.qp_fallbacks]))
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
                 w_volt: np.ndarray) -> tuple[_Point | None, bool]:
        """The first of ``q + d, q + d/2, ...`` that lowers ``f`` (``None`` when none does), and
        whether it is the full step."""
        for k in range(_MAX_HALVINGS):
            try:
                new = self._point(np.clip(pt.q_mvar + d, self._q_min_mvar, self._q_max_mvar), p, q, w_head, w_volt)
            except PowerFlowError:
                new = None
            if new is not None and new.f < pt.f - 1e-12 * (1.0 + abs(pt.f)):
                return new, k == 0
            d = 0.5 * d
            if np.max(np.abs(d)) < _TOL_MVAR:
                return None, False
        return None, False


def _box_qp(hess: np.ndarray, grad: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``argmin (1/2) d^T H d + g^T d`` over ``lo <= d <= hi`` (H positive definite, small):
    the unconstrained minimizer when inside, else projected Newton on the free set."""
    d = np.clip(np.linalg.solve(hess, -grad), lo, hi)
    for _ in range(50):
        gd = hess @ d + grad
        free = ~(((d <= lo) & (gd > 0)) | ((d >= hi) & (gd < 0)))
        new = d.copy()
        if free.any():
            f = np.flatnonzero(free)
            new[f] = np.linalg.solve(hess[np.ix_(f, f)], -(grad[f] + hess[np.ix_(f, ~free)] @ d[~free]))
        new = np.clip(new, lo, hi)
        if np.max(np.abs(new - d), initial=0.0) < 1e-12:
            return new
        d = new
    return d


def _clarabel_qp(hess: np.ndarray, grad: np.ndarray, lo: np.ndarray, hi: np.ndarray, b: np.ndarray,
                 slope: np.ndarray, w: np.ndarray, failed: str) -> np.ndarray:
    """The step's QP (variables ``d``, ``t``) by Clarabel; raises :class:`_QPFailed` unless solved."""
    n, m = len(grad), len(b)
    i_m, i_n = sp.identity(m, format="csc"), sp.identity(n, format="csc")
    p = sp.block_diag([sp.triu(sp.csc_matrix(hess)), sp.csc_matrix((m, m))], format="csc")
    a = sp.vstack([sp.hstack([sp.csc_matrix(slope), -i_m]), sp.hstack([sp.csc_matrix((m, n)), -i_m]),
                   sp.hstack([i_n, sp.csc_matrix((n, m))]), sp.hstack([-i_n, sp.csc_matrix((n, m))])], format="csc")
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    sol = clarabel.DefaultSolver(p, np.concatenate([grad, w]), a, np.concatenate([-b, np.zeros(m), hi, -lo]),
                                 [clarabel.NonnegativeConeT(2 * m + 2 * n)], settings).solve()
    if str(sol.status) != "Solved":
        raise _QPFailed(f"{failed}; CLARABEL status {sol.status}")
    return np.asarray(sol.x[:n], dtype=float)


class _QPFailed(RuntimeError):
    """HiGHS did not solve the step's QP to optimality."""
