"""Feeder power flow of one step: the AC sweeps of all feeders, warm-started, with load
shedding where a sweep has no solution (docs/design.md "Physics truth", item 3).

The simulator (:mod:`env.batched`) sweeps all days' feeders at once with
:func:`env.physics.sweep.fixed_point_blocks`; from here it takes :func:`head_and_losses`,
:func:`voltage_violation_pu` and :func:`shed_group` (a failed day's feeders solved alone, by
:func:`sweep`, shedding load). The update itself is :func:`env.physics.sweep.fixed_point`'s
(docs/math.md section 1).
"""

from __future__ import annotations

import numpy as np

from env.grid_model import _SweepGroup
from env.physics.sweep import V_COLLAPSE_PU, PowerFlowError, fixed_point

__all__ = ["SHED_BISECTIONS", "head_and_losses", "shed_group", "sweep", "voltage_violation_pu"]

SHED_BISECTIONS = 14  # shed share resolution 2^-14 ~ 6e-5
_ZERO = np.zeros(())   # a 0-d zero: ufuncs take it faster than a Python float
_add_reduce = np.add.reduce


def voltage_violation_pu(vm_pu: np.ndarray, vmin_pu: np.ndarray, vmax_pu: np.ndarray) -> np.ndarray:
    """Each bus's distance outside its voltage band, ``max(vmin - |V|, |V| - vmax, 0)`` (p.u.;
    any leading batch axis; a new array). The step's voltage penalty prices its sum times dt."""
    viol = np.subtract(vmin_pu, vm_pu)
    np.maximum(viol, np.subtract(vm_pu, vmax_pu), out=viol)
    np.maximum(viol, _ZERO, out=viol)
    return viol


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
