"""Backward/forward sweep AC power flow for radial feeders, batched over operating points.

The feeder is a tree rooted at the slack (substation) bus. With the
bus-injection-to-branch-current matrix ``T`` (BIBC: ``T[b, j] = 1`` when bus
``j`` lies downstream of branch ``b``, the branch's own far end included) and
the branch impedances ``z = r + jx``, the branch currents and bus voltages are

    I_branch = T I_bus,        V = V0 - T^T diag(z) T I_bus = V0 - DLF I_bus,

and constant-power loads give ``I_bus = conj(S / V)``. The sweep is the
fixed-point iteration (docs/math.md section 1)

    V^{k+1} = V0 - DLF conj(S / V^k),

run on all K operating points at once (one column each, one complex GEMM per
iteration). It stops when ``||V^{k+1} - V^k||_2 < tol`` over all buses and points.

:func:`fixed_point` is the one sweep kernel of the project: :class:`RadialSweep` (flat
start), the simulator's step (warm start from the previous step) and the Rollout's
surrogate all iterate with it, with this one stopping rule; :data:`V_COLLAPSE_PU` is the
one collapse threshold.

Everything that depends on the topology only (orientation, BIBC, DLF) is
computed once in :meth:`RadialSweep.build`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["V_COLLAPSE_PU", "PowerFlowError", "RadialSweep", "SweepResult", "fixed_point", "slack_power_pu"]

V_COLLAPSE_PU = 0.3
"""Below this voltage magnitude (p.u.) a sweep "solution" is a voltage collapse, not an operating point."""


class PowerFlowError(RuntimeError):
    """The AC power flow has no acceptable solution for an operating point.

    Attributes:
        network: name of the network.
        point: 0-based index of the first failing operating point (column).
        reason: what went wrong (no convergence, voltage collapse, non-finite).
    """

    def __init__(self, network: str, point: int, reason: str) -> None:
        self.network = network
        self.point = int(point)
        self.reason = reason
        super().__init__(f"power flow of {network!r} failed at operating point {self.point}: {reason}")


@dataclass(frozen=True, eq=False)
class SweepResult:
    """Solution of a batched radial power flow (all quantities per unit, K columns).

    Attributes:
        v_pu: complex (n_bus, K) bus voltages, slack included, in bus order.
        i_branch_pu: complex (n_branch, K) branch currents flowing from
            ``from_bus`` to ``to_bus`` as the branches were given to ``build``.
        s_from_pu: complex (n_branch, K) power entering each branch at its
            ``from_bus`` end, ``S_from = V_from conj(I_branch)``.
        loss_pu: complex (K,) total series losses ``sum_b z_b |I_b|^2``.
        s_slack_pu: complex (K,) power delivered by the slack,
            ``V0 conj(sum_j I_j)`` = sum of non-slack net loads + losses.
        iterations: number of sweep iterations performed.
    """

    v_pu: np.ndarray
    i_branch_pu: np.ndarray
    s_from_pu: np.ndarray
    loss_pu: np.ndarray
    s_slack_pu: np.ndarray
    iterations: int

    def __post_init__(self) -> None:
        if self.v_pu.ndim != 2:
            raise ValueError(f"SweepResult.v_pu: expected a 2-D (n_bus, K) array, got shape {self.v_pu.shape}")
        k = self.v_pu.shape[1]
        n_branch = self.i_branch_pu.shape[0]
        for name, arr, shape in (
            ("i_branch_pu", self.i_branch_pu, (n_branch, k)),
            ("s_from_pu", self.s_from_pu, (n_branch, k)),
            ("loss_pu", self.loss_pu, (k,)),
            ("s_slack_pu", self.s_slack_pu, (k,)),
        ):
            if arr.shape != shape:
                raise ValueError(f"SweepResult.{name}: expected shape {shape}, got {arr.shape}")
        if self.iterations < 0:
            raise ValueError(f"SweepResult.iterations: must be >= 0, got {self.iterations}")

    @property
    def vm_pu(self) -> np.ndarray:
        """Voltage magnitudes |V| (n_bus, K)."""
        return np.abs(self.v_pu)


def _as_index_array(values: np.ndarray, what: str, name: str, n_bus: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"feeder {name}: {what} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"feeder {name}: {what} must hold integer bus indices")
    arr = arr.astype(np.intp)
    bad = np.flatnonzero((arr < 0) | (arr >= n_bus))
    if bad.size:
        raise ValueError(f"feeder {name}: {what}[{bad[0]}] = {arr[bad[0]]} is not a bus index in [0, {n_bus})")
    return arr


def _orient_tree(
    from_bus: np.ndarray, to_bus: np.ndarray, n_bus: int, slack_bus: int, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orient a spanning tree away from the slack by breadth-first search.

    Returns:
        (parent_bus, child_bus, order): per branch (given order) its end closer
        to the slack and its far end, and the branches in BFS order (parents
        before children).

    Raises:
        ValueError: a bus is unreachable from the slack, or the branch set has a loop.
    """
    n_branch = from_bus.size
    adjacency: list[list[tuple[int, int]]] = [[] for _ in range(n_bus)]
    for b in range(n_branch):
        i, j = int(from_bus[b]), int(to_bus[b])
        adjacency[i].append((j, b))
        adjacency[j].append((i, b))
    seen = np.zeros(n_bus, dtype=bool)
    seen[slack_bus] = True
    parent = np.full(n_branch, -1, dtype=np.intp)
    child = np.full(n_branch, -1, dtype=np.intp)
    order: list[int] = []
    queue = [slack_bus]
    head = 0
    while head < len(queue):
        bus = queue[head]
        head += 1
        for nb, b in adjacency[bus]:
            if parent[b] >= 0:
                continue  # the branch we arrived by
            if seen[nb]:
                raise ValueError(
                    f"feeder {name} is not radial: branch {b} ({from_bus[b]}-{to_bus[b]}) closes a loop"
                )
            seen[nb] = True
            parent[b], child[b] = bus, nb
            order.append(b)
            queue.append(nb)
    missing = np.flatnonzero(~seen)
    if missing.size:
        raise ValueError(
            f"feeder {name} is not radial: bus {missing[0]} is disconnected from the slack bus {slack_bus}"
        )
    return parent, child, np.asarray(order, dtype=np.intp)


def _bibc(parent: np.ndarray, child: np.ndarray, order: np.ndarray, n_bus: int) -> np.ndarray:
    """Bus-injection-to-branch-current matrix over all buses.

    ``T[b, j] = 1`` iff bus j is in the subtree hanging below branch b (its
    child end included); built leaf-to-root so each row is its child's row
    plus the rows of the branches leaving that child.
    """
    n_branch = parent.size
    t = np.zeros((n_branch, n_bus))
    branch_into = np.full(n_bus, -1, dtype=np.intp)
    branch_into[child] = np.arange(n_branch)
    for b in order[::-1]:
        t[b, child[b]] = 1.0
        up = branch_into[parent[b]]
        if up >= 0:
            t[up] += t[b]
    return t


@dataclass(frozen=True, eq=False)
class RadialSweep:
    """A radial feeder prepared for batched backward/forward sweeps.

    Construct with :meth:`build` (or directly with the same arguments); all
    topology checks and precomputation happen at construction.

    Attributes:
        from_bus, to_bus: (n_branch,) 0-based branch ends as given.
        r_pu, x_pu: (n_branch,) series resistance (> 0) and reactance (>= 0), per unit.
        n_bus: number of buses, slack included.
        slack_bus: 0-based index of the slack (root) bus.
        name: network name used in error messages.
        parent_bus, child_bus: (n_branch,) each branch's end towards / away from the slack.
        direction: (n_branch,) +1 when ``from_bus`` is the parent end, -1 when the
            branch was given pointing towards the slack.
        bibc: (n_branch, n_bus) BIBC matrix ``T`` (parent -> child; slack column zero).
        dlf: complex (n_bus, n_bus) ``T^T diag(r + jx) T`` (slack row and column zero).
    """

    from_bus: np.ndarray
    to_bus: np.ndarray
    r_pu: np.ndarray
    x_pu: np.ndarray
    n_bus: int
    slack_bus: int = 0
    name: str = "feeder"
    parent_bus: np.ndarray = field(init=False, repr=False)
    child_bus: np.ndarray = field(init=False, repr=False)
    direction: np.ndarray = field(init=False, repr=False)
    bibc: np.ndarray = field(init=False, repr=False)
    dlf: np.ndarray = field(init=False, repr=False)
    _bibc_given: np.ndarray = field(init=False, repr=False)
    _z_pu: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        name = str(self.name)
        n_bus = int(self.n_bus)
        if n_bus < 2:
            raise ValueError(f"feeder {name}: n_bus must be >= 2, got {self.n_bus}")
        slack = int(self.slack_bus)
        if not 0 <= slack < n_bus:
            raise ValueError(f"feeder {name}: slack_bus {self.slack_bus} is not a bus index in [0, {n_bus})")
        f = _as_index_array(self.from_bus, "from_bus", name, n_bus)
        t = _as_index_array(self.to_bus, "to_bus", name, n_bus)
        if f.shape != t.shape:
            raise ValueError(f"feeder {name}: from_bus has {f.size} branches but to_bus has {t.size}")
        r = np.array(self.r_pu, dtype=float)
        x = np.array(self.x_pu, dtype=float)
        for what, arr in (("r_pu", r), ("x_pu", x)):
            if arr.shape != f.shape:
                raise ValueError(f"feeder {name}: {what} has shape {arr.shape}, expected ({f.size},) like from_bus")
        self_loop = np.flatnonzero(f == t)
        if self_loop.size:
            b = self_loop[0]
            raise ValueError(f"feeder {name} is not radial: branch {b} connects bus {f[b]} to itself")
        bad = np.flatnonzero(~np.isfinite(r) | (r <= 0) | ~np.isfinite(x) | (x < 0))
        if bad.size:
            b = bad[0]
            raise ValueError(
                f"feeder {name}: branch {b} ({f[b]}-{t[b]}) needs finite r_pu > 0 and x_pu >= 0, "
                f"got r_pu={r[b]!r}, x_pu={x[b]!r}"
            )
        parent, child, order = _orient_tree(f, t, n_bus, slack, name)
        bibc = _bibc(parent, child, order, n_bus)
        direction = np.where(parent == f, 1.0, -1.0)
        dlf = np.ascontiguousarray(bibc.T @ ((r + 1j * x)[:, None] * bibc))
        derived = {
            "from_bus": f, "to_bus": t, "r_pu": r, "x_pu": x,
            "parent_bus": parent, "child_bus": child, "direction": direction,
            "bibc": bibc, "dlf": dlf, "_bibc_given": direction[:, None] * bibc, "_z_pu": r + 1j * x,
        }
        for attr, value in derived.items():
            value.setflags(write=False)
            object.__setattr__(self, attr, value)
        object.__setattr__(self, "n_bus", n_bus)
        object.__setattr__(self, "slack_bus", slack)
        object.__setattr__(self, "name", name)

    @classmethod
    def build(
        cls,
        from_bus: np.ndarray,
        to_bus: np.ndarray,
        r_pu: np.ndarray,
        x_pu: np.ndarray,
        n_bus: int,
        slack_bus: int = 0,
        name: str = "feeder",
    ) -> "RadialSweep":
        """Validate a radial feeder and precompute its BIBC and DLF matrices.

        ``T[b, j] = 1`` iff bus j is downstream of branch b; ``DLF = T^T diag(z) T``.

        Args:
            from_bus, to_bus: 0-based ends of the n_bus - 1 branches, any order
                and orientation (they are oriented away from the slack here).
            r_pu, x_pu: series resistance (> 0) and reactance (>= 0) per branch, per unit.
            n_bus: number of buses, slack included.
            slack_bus: the root (substation) bus.
            name: used in error messages.

        Raises:
            ValueError: the branches do not form a spanning tree of the buses
                ("feeder <name> is not radial: ..."), or an impedance is invalid.
        """
        return cls(
            from_bus=np.asarray(from_bus),
            to_bus=np.asarray(to_bus),
            r_pu=np.asarray(r_pu, dtype=float),
            x_pu=np.asarray(x_pu, dtype=float),
            n_bus=int(n_bus),
            slack_bus=int(slack_bus),
            name=str(name),
        )

    @property
    def n_branch(self) -> int:
        """Number of branches (n_bus - 1)."""
        return int(self.from_bus.size)

    def _conj_loads(self, s_load_pu: np.ndarray) -> np.ndarray:
        """``conj(S)`` as a new complex (n_bus, K) array with the slack row zeroed."""
        s = np.asarray(s_load_pu)
        if s.ndim == 1:
            s = s[:, None]
        if s.ndim != 2 or s.shape[0] != self.n_bus or s.shape[1] == 0:
            raise ValueError(
                f"feeder {self.name}: s_load_pu must have shape ({self.n_bus},) or ({self.n_bus}, K) "
                f"with K >= 1, got {np.shape(s_load_pu)}"
            )
        s_conj = np.conjugate(s, dtype=complex, order="C")
        s_conj[self.slack_bus] = 0.0
        if not np.isfinite(s_conj.view(float).sum()):  # fast screen; locate the culprit only on failure
            bad = ~np.isfinite(s_conj).all(axis=0)
            if bad.any():
                raise ValueError(
                    f"feeder {self.name}: s_load_pu has a non-finite entry at operating point {_first(bad)}"
                )
            raise ValueError(f"feeder {self.name}: s_load_pu has entries too large to be a load (overflow)")
        return s_conj

    def _slack_voltage(self, v_slack_pu: complex | np.ndarray, k: int) -> np.ndarray:
        """Slack voltage as a complex (1, K) row, or (1, 1) for a scalar (broadcast)."""
        if isinstance(v_slack_pu, (int, float, complex)) and not isinstance(v_slack_pu, bool):
            if not V_COLLAPSE_PU <= abs(v_slack_pu) < np.inf:
                raise ValueError(f"feeder {self.name}: v_slack_pu must be finite with |V| >= {V_COLLAPSE_PU}")
            return np.full((1, 1), v_slack_pu, dtype=complex)
        v0 = np.asarray(v_slack_pu, dtype=complex)
        if v0.ndim == 0:
            v0 = v0.reshape(1)
        elif v0.shape != (k,):
            raise ValueError(f"feeder {self.name}: v_slack_pu must be a scalar or shape ({k},), got {v0.shape}")
        vm_sq = _abs_sq(v0)
        if not vm_sq.min() >= V_COLLAPSE_PU**2 or not vm_sq.max() < np.inf:
            raise ValueError(f"feeder {self.name}: v_slack_pu must be finite with |V| >= {V_COLLAPSE_PU}")
        return v0[None, :]

    def solve(
        self,
        s_load_pu: np.ndarray,
        v_slack_pu: complex | np.ndarray = 1.0,
        tol: float = 1e-10,
        max_iter: int = 100,
    ) -> SweepResult:
        """Solve the AC power flow for K operating points with constant-power loads.

        Iterates ``V^{k+1} = V0 - DLF conj(S / V^k)`` from a flat start (:func:`fixed_point`)
        until ``||V^{k+1} - V^k||_2 < tol`` over all buses and points, then returns
        ``I_branch = T conj(S / V)``, ``S_from = V_from conj(I_branch)``,
        ``loss = sum_b z_b |I_b|^2`` and ``S_slack = V0 conj(sum_j conj(S_j / V_j))``.

        Args:
            s_load_pu: complex net consumption per bus (load - generation,
                + = consumption), shape (n_bus,) or (n_bus, K); the slack entry is ignored.
            v_slack_pu: slack voltage phasor, scalar or shape (K,).
            tol: convergence tolerance on the voltage update (p.u.).
            max_iter: iteration limit.

        Returns:
            A :class:`SweepResult` with 2-D (.., K) arrays.

        Raises:
            ValueError: bad shapes or non-finite inputs.
            PowerFlowError: no convergence within ``max_iter``, a non-finite
                iterate, or a voltage magnitude below 0.3 p.u.; names the first
                failing operating point.
        """
        if not tol > 0:
            raise ValueError(f"feeder {self.name}: tol must be > 0, got {tol}")
        if int(max_iter) < 1:
            raise ValueError(f"feeder {self.name}: max_iter must be >= 1, got {max_iter}")
        s_conj = self._conj_loads(s_load_pu)
        v0 = self._slack_voltage(v_slack_pu, s_conj.shape[1])
        k = s_conj.shape[1]
        if k == 1:  # 1-D vectors: fewer, cheaper numpy calls for the single operating point
            v_start = np.full(self.n_bus, v0[0, 0])
            v, i_bus, iterations = fixed_point(self.dlf.dot, v0[0, 0], s_conj[:, 0], v_start, float(tol),
                                               int(max_iter), self.name)
            return self._result(v[:, None], i_bus[:, None], v0, iterations)
        v_start = np.empty_like(s_conj)
        v_start[...] = v0
        v, i_bus, iterations = fixed_point(self.dlf.dot, v0, s_conj, v_start, float(tol), int(max_iter),
                                           self.name)
        return self._result(v, i_bus, v0, iterations)

    def _result(self, v: np.ndarray, i_bus: np.ndarray, v0: np.ndarray, iterations: int) -> SweepResult:
        """Branch currents, flows, losses and slack power from the converged sweep.

        ``I_branch = T I_bus`` (signed to the given orientation),
        ``S_from = V_from conj(I_branch)``, ``loss = sum_b (r_b + j x_b) |I_b|^2``,
        ``S_slack = V0 conj(sum_j I_j)``.
        """
        vm_sq_min = _abs_sq(v).min(axis=0)
        if vm_sq_min.min() < V_COLLAPSE_PU**2:
            k = _first(vm_sq_min < V_COLLAPSE_PU**2)
            raise PowerFlowError(
                self.name, k, f"voltage collapse: min |V| = {np.sqrt(vm_sq_min[k]):.4f} p.u. < {V_COLLAPSE_PU}"
            )
        k = v.shape[1]
        # real matrix times complex columns, as one real GEMM on the interleaved view
        i_branch = (self._bibc_given @ i_bus.view(float)).view(complex)
        loss = self._z_pu @ _abs_sq(i_branch)
        s_from = v[self.from_bus]
        s_from *= np.conjugate(i_branch)
        s_slack = slack_power_pu(v0[0], i_bus)
        if s_slack.shape != (k,):
            s_slack = np.broadcast_to(s_slack, (k,)).copy()
        return SweepResult(
            v_pu=v,
            i_branch_pu=i_branch,
            s_from_pu=s_from,
            loss_pu=loss,
            s_slack_pu=s_slack,
            iterations=iterations,
        )


def slack_power_pu(v0: Any, i_bus: np.ndarray) -> np.ndarray:
    """The power the slack bus delivers, ``S_slack = V0 conj(sum_j I_j)`` (p.u.; per column of the
    bus currents ``conj(S / V)``; its real part is the feeder's head power)."""
    return v0 * np.conjugate(i_bus.sum(axis=0))


def _abs_sq(z: np.ndarray) -> np.ndarray:
    """Elementwise ``|z|^2`` of a complex array."""
    return z.real * z.real + z.imag * z.imag


def _first(mask: np.ndarray) -> int:
    """Index of the first True entry (the first failing operating point)."""
    return int(np.flatnonzero(mask)[0])


def _update(dlf_dot: Any, v0: Any, s_conj: np.ndarray, v: np.ndarray, v_new: np.ndarray, i_bus: np.ndarray,
            d: np.ndarray) -> None:
    """One sweep iteration into preallocated arrays: ``I = conj(S) / conj(V)``,
    ``V_new = V0 - DLF I``, ``d = V_new - V``."""
    np.conjugate(v, i_bus)
    np.divide(s_conj, i_bus, i_bus)
    dlf_dot(i_bus, v_new)
    np.subtract(v0, v_new, v_new)
    np.subtract(v_new, v, d)


def fixed_point(dlf_dot: Any, v0: Any, s_conj: np.ndarray, v: np.ndarray, tol: float, max_iter: int,
                name: str = "feeder") -> tuple[np.ndarray, np.ndarray, int]:
    """The backward/forward sweep, ``V <- V0 - DLF conj(S / V)`` (docs/math.md section 1).

    Iterates from ``v`` (a warm or flat start, overwritten) until the update's 2-norm over all
    buses and operating points is below ``tol``, ``||V_new - V||_2 < tol``, and returns
    ``(V, I_bus = conj(S / V) at the returned V, iterations)``. Works on one operating point
    (1-D vectors) or K columns at once; ``dlf_dot(i, out)`` computes ``DLF i`` into ``out``
    (``dlf.dot``: one BLAS zgemv / zgemm per iteration).

    Args:
        dlf_dot: ``DLF`` product with an ``out`` argument, e.g. ``dlf.dot``.
        v0: slack voltage, scalar or broadcastable to ``v``.
        s_conj: ``conj(S)`` (net consumption per unit, slack rows zeroed), shaped like ``v``.
        v: start voltages, (n,) or (n, K); overwritten.
        tol: tolerance on the update's 2-norm (p.u.).
        max_iter: iteration limit.
        name: network name for error messages.

    Raises:
        PowerFlowError: non-finite voltages or no convergence within ``max_iter`` iterations;
            ``point`` is the failing column (the first non-finite one, or the one whose last
            update was largest).
    """
    v, i_bus, d, iteration, status = _iterate(dlf_dot, v0, s_conj, v, tol, max_iter)
    if status == _NON_FINITE:
        bad = ~np.isfinite(d.reshape(d.shape[0], -1)).all(axis=0)
        raise PowerFlowError(name, _first(bad), "the sweep produced non-finite voltages")
    if status == _NO_CONVERGENCE:
        per_point = _abs_sq(d.reshape(d.shape[0], -1)).sum(axis=0)
        worst = int(np.argmax(per_point))
        raise PowerFlowError(name, worst, f"no convergence within {max_iter} iterations "
                             f"(last voltage update {np.sqrt(per_point[worst]):.3g} p.u.)")
    return v, i_bus, iteration


_CONVERGED, _NON_FINITE, _NO_CONVERGENCE = 0, 1, 2


def _iterate(dlf_dot: Any, v0: Any, s_conj: np.ndarray, v: np.ndarray, tol: float,
             max_iter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """The loop of :func:`fixed_point`: :func:`_update` until ``||V_new - V||_2 < tol`` over all
    of ``v`` (one BLAS ddot per iteration), a non-finite update, or ``max_iter`` iterations.
    Returns ``(V, I_bus = conj(S / V) at V, the last update, iterations, status)`` with status
    ``_CONVERGED``, ``_NON_FINITE`` or ``_NO_CONVERGENCE``."""
    v_new = np.empty_like(v)
    i_bus = np.empty_like(v)
    d = np.empty_like(v)
    d_flat = d.reshape(-1).view(float)
    tol2 = tol * tol
    d_dot = d_flat.dot
    status, iteration = _NO_CONVERGENCE, max_iter
    for iteration in range(1, max_iter + 1):
        _update(dlf_dot, v0, s_conj, v, v_new, i_bus, d)
        v, v_new = v_new, v
        step2 = d_dot(d_flat)
        if step2 < tol2:
            status = _CONVERGED
            break
        if not step2 < np.inf:
            status = _NON_FINITE
            break
    np.conjugate(v, i_bus)
    np.divide(s_conj, i_bus, i_bus)
    return v, i_bus, d, iteration, status


def fixed_point_blocks(dlf_dot: Any, v0: Any, s_conj: np.ndarray, v: np.ndarray, tol: float, max_iter: int,
                       block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`fixed_point` on ``G`` independent blocks of ``block`` columns each (the batched
    simulator's days), each block stopping on its own rule ``||V_new - V||_2 < tol`` over its
    columns: a block's returned ``V`` is the iterate at which it converged, as if it had been
    iterated alone (the same update ``V <- V0 - DLF conj(S / V)``; docs/math.md section 1).

    Args:
        dlf_dot, v0, s_conj, tol, max_iter: as :func:`fixed_point` (``v`` is (n, G block)).
        v: start voltages, (n, G block), block-major columns; overwritten.
        block: columns per block.

    Returns:
        ``(V, I_bus at V, ok)`` with ``ok`` (G,) False for a block that produced non-finite
        voltages or did not converge within ``max_iter`` (its columns hold the last iterate);
        nothing raises, the caller sheds load on the failed blocks.
    """
    v = np.ascontiguousarray(v)
    n, k_all = v.shape
    n_block = k_all // block
    if n_block == 1:                             # one block: fixed_point's own loop
        with np.errstate(all="ignore"):
            v, i_bus, _, _, status = _iterate(dlf_dot, v0, s_conj, v, tol, max_iter)
        return v, i_bus, np.array([status == _CONVERGED])
    out, v_new, i_bus, d = (np.empty(v.shape, dtype=v.dtype) for _ in range(4))
    tol2 = tol * tol
    settled = np.zeros(n_block, dtype=bool)      # converged or failed: out holds its final columns
    ok = np.zeros(n_block, dtype=bool)
    with np.errstate(all="ignore"):
        for _ in range(max_iter):
            _update(dlf_dot, v0, s_conj, v, v_new, i_bus, d)
            v, v_new = v_new, v
            step2 = _abs_sq(d).reshape(n, n_block, block).sum(axis=(0, 2))
            conv = step2 < tol2
            new = ~settled & (conv | ~(step2 < np.inf))
            if new.any():
                cols = np.repeat(new, block)
                out[:, cols] = v[:, cols]
                ok |= new & conv
                settled |= new
                if settled.all():
                    break
        if not settled.all():
            cols = np.repeat(~settled, block)
            out[:, cols] = v[:, cols]
        np.conjugate(out, i_bus)
        np.divide(s_conj, i_bus, i_bus)
    return out, i_bus, ok
