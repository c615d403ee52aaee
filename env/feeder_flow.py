"""Feeder power flow of one step: the AC sweeps of all feeders, warm-started, with load
shedding where a sweep has no solution (docs/design.md "Physics truth", item 3).

``solve_feeders`` is what :class:`env.simulator.GridSimulator` calls each step; the batched
simulator (:mod:`env.batched`) sweeps many days at once with
:func:`env.physics.sweep.fixed_point_blocks` and calls :func:`shed_group` and
:func:`head_and_losses` from here for the parts it shares. The sweep itself is
:func:`env.physics.sweep.fixed_point` (docs/math.md section 1).
"""

from __future__ import annotations

import numpy as np

from env.grid_model import GridModel, _FeederSolution, _SweepGroup
from env.physics.sweep import V_COLLAPSE_PU, PowerFlowError, fixed_point

__all__ = ["SHED_BISECTIONS", "head_and_losses", "shed_group", "solve_feeders", "sweep", "sweep_stacked",
           "voltage_violation_pu"]

SHED_BISECTIONS = 14  # shed share resolution 2^-14 ~ 6e-5
_ZERO = np.zeros(())   # a 0-d zero: ufuncs take it faster than a Python float
_add_reduce = np.add.reduce
_min_reduce = np.minimum.reduce
_max_reduce = np.maximum.reduce


def voltage_violation_pu(vm_pu: np.ndarray, vmin_pu: np.ndarray, vmax_pu: np.ndarray) -> np.ndarray:
    """Each bus's distance outside its voltage band, ``max(vmin - |V|, |V| - vmax, 0)`` (p.u.;
    any leading batch axis; a new array). The step's voltage penalty prices its sum times dt."""
    viol = np.subtract(vmin_pu, vm_pu)
    np.maximum(viol, np.subtract(vm_pu, vmax_pu), out=viol)
    np.maximum(viol, _ZERO, out=viol)
    return viol


def solve_feeders(model: GridModel, v_start: list[np.ndarray], s_pu: np.ndarray, tol: float, max_iter: int,
                  load_pu: np.ndarray | None = None, shed_f: np.ndarray | None = None) -> _FeederSolution:
    """AC sweeps of all feeders (groups batched, warm-started); sheds load where a sweep fails.

    ``s_pu`` (N_fb,) is modified in place when shedding (``load_pu`` = the load part, and
    ``shed_f`` (n_feeder,) receives the shed shares). Per group with bus currents ``I``:
    ``S_head = V0 conj(sum I)``, ``loss = sum_b (r_b + j x_b) |T I|_b^2`` (times S_base).
    """
    m = model
    groups = m.groups
    if len(groups) == 1 and groups[0].stacked:      # one group, its columns are the stacked vector
        g = groups[0]
        try:
            v_ns, i_bus, vm, minmax = sweep_stacked(g, s_pu, v_start[0], tol, max_iter)
        except PowerFlowError:
            v_ns, i_bus = shed_group(g, s_pu, load_pu, shed_f, tol, max_iter)
            vm, minmax = np.abs(v_ns.T).ravel(), None
        s_head, lp, lq = head_and_losses(g, i_bus)
        return _FeederSolution(vm, [v_ns], s_head.real.copy(), s_head.imag.copy(), lp, lq, minmax)
    vm = np.empty(m.n_fb)
    hp, hq, lp, lq = (np.empty(m.n_feeder) for _ in range(4))
    v_ns_all = []
    for gi, g in enumerate(groups):
        try:
            v_ns, i_bus = sweep(g, s_pu[g.idx_cov], v_start[gi], tol, max_iter)
        except PowerFlowError:
            v_ns, i_bus = shed_group(g, s_pu, load_pu, shed_f, tol, max_iter)
        v_ns_all.append(v_ns)
        if g.stacked:                       # the group's columns are the stacked vector, in order
            vm[:] = np.abs(v_ns.T).ravel()
        else:
            if g.slack_row < 0:
                vm[g.idx] = abs(g.v0)
            vm[g.idx_cov] = np.abs(v_ns)
        s_head, lp_g, lq_g = head_and_losses(g, i_bus)
        hp[g.feeders], hq[g.feeders] = s_head.real, s_head.imag
        lp[g.feeders], lq[g.feeders] = lp_g, lq_g
    return _FeederSolution(vm, v_ns_all, hp, hq, lp, lq)


def head_and_losses(g: _SweepGroup, i_bus: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(complex head power MVA, loss MW, loss MVAr) per column of a group's (n, K) bus currents."""
    s_head = np.conjugate(_add_reduce(i_bus, 0))
    s_head *= g.head_scale
    i_br = g.bibc.dot(i_bus.view(float))                 # real T times complex I, (n_branch, 2K)
    i_br *= i_br
    i_sq = np.add(i_br[:, 0::2], i_br[:, 1::2])         # |T I|^2 = re^2 + im^2
    lp = g.r.dot(i_sq)
    lp *= g.base0
    lq = g.x.dot(i_sq)
    lq *= g.base0
    return s_head, lp, lq


def sweep_stacked(g: _SweepGroup, s_pu: np.ndarray, v_start: np.ndarray, tol: float,
                   max_iter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`sweep` of a stacked group on the stacked vector itself (no gather), on 1-D
    vectors for a single column; the same arithmetic, so the same bits. Returns
    (V (n, K), I_bus (n, K), |V| in stacked order, (2, K) read-only min and max of |V|
    per feeder)."""
    n, k = g.n_cov, g.k
    if k == 1:
        s_conj = np.conjugate(s_pu)
        v = v_start.reshape(n).copy()
    else:
        s_conj = np.conjugate(s_pu.reshape(k, n).T)
        v = v_start.copy()
    s_conj[g.slack_row] = 0.0
    # g.dlf.dot: the same BLAS call (zgemv / zgemm) as np.matmul, cheaper
    v, i_bus, _ = fixed_point(g.dlf.dot, g.v0_vec, s_conj, v, tol, max_iter, g.name)
    vm = np.abs(v)
    # per feeder (column) min and max of |V|; the min screens the exact collapse test of
    # _sweep (|V|^2 < 0.09 implies |V| < 0.3 + 1e-9)
    minmax = np.empty((2, k))
    vm2 = vm.reshape(n, k)
    _min_reduce(vm2, 0, out=minmax[0])
    _max_reduce(vm2, 0, out=minmax[1])
    if min(minmax[0].tolist()) < V_COLLAPSE_PU + 1e-9 and \
            (v.real * v.real + v.imag * v.imag).min() < V_COLLAPSE_PU ** 2:
        raise PowerFlowError(g.name, 0, f"voltage collapse (|V| < {V_COLLAPSE_PU} p.u.)")
    minmax.setflags(write=False)
    if k == 1:
        return v.reshape(n, 1), i_bus.reshape(n, 1), vm, minmax
    return v, i_bus, vm.T.ravel(), minmax


def sweep(g: _SweepGroup, s_cov: np.ndarray, v_start: np.ndarray, tol: float,
           max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed point ``V = V0 - DLF conj(S / V)`` from ``v_start`` over the covered buses
    (the slack's injection is ignored) until ``||V_new - V||_2 < tol`` over all buses and
    columns (stricter than the kernel's max-norm test); returns (V, I_bus) on those buses,
    ``I_bus = conj(S / V)`` evaluated at the returned V."""
    s_conj = np.conjugate(s_cov)
    if g.slack_row >= 0:
        s_conj[g.slack_row] = 0.0
    v, i_bus, _ = fixed_point(g.dlf.dot, g.v0, s_conj, v_start.copy(), tol, max_iter, g.name)
    if (v.real * v.real + v.imag * v.imag).min() < V_COLLAPSE_PU ** 2:
        raise PowerFlowError(g.name, 0, f"voltage collapse (|V| < {V_COLLAPSE_PU} p.u.)")
    return v, i_bus


def shed_group(g: _SweepGroup, s_pu: np.ndarray, load_pu: np.ndarray | None, shed_f: np.ndarray | None,
               tol: float, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Solve each feeder of a failed group alone, shedding its loads by bisection if needed."""
    if load_pu is None or shed_f is None:
        raise PowerFlowError(g.name, 0, "no solution and no load to shed")
    v_cols, i_cols = [], []
    for j, k in enumerate(g.feeders):
        idx = g.idx_cov[:, j]
        base, load = s_pu[idx] - load_pu[idx], load_pu[idx]
        flat = np.full((idx.shape[0], 1), g.v0, dtype=complex)

        def solve(keep: float) -> tuple[np.ndarray, np.ndarray]:
            s = (base + keep * load)[:, None]
            return sweep(g, s, flat, tol, max_iter)

        try:
            v, i = solve(1.0)
            lam = 0.0
        except PowerFlowError:
            lo, hi = 0.0, 1.0                           # shed share: lo fails, hi must work
            v, i = solve(0.0)
            for _ in range(SHED_BISECTIONS):
                mid = 0.5 * (lo + hi)
                try:
                    v, i = solve(1.0 - mid)
                    hi = mid
                except PowerFlowError:
                    lo = mid
            v, i = solve(1.0 - hi)
            lam = hi
        shed_f[k] = 1.0 - (1.0 - shed_f[k]) * (1.0 - lam)   # on top of any earlier shedding
        s_pu[idx] = base + (1.0 - lam) * load
        v_cols.append(v)
        i_cols.append(i)
    return np.hstack(v_cols), np.hstack(i_cols)
