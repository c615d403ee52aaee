"""Branch-flow (DistFlow) formulations of one radial feeder for S scenarios at once.

docs/math.md §1 (Baran–Wu 1989; Farivar–Low 2013; Gan–Li–Topcu–Low 2015). Every
formulation adds variables and constraints for a whole ``branches x scenarios``
block in a handful of vectorized cvxpy constraints (no loop over scenarios),
so a problem written once against :class:`FeederVars` can be built in either
formulation (PowerModels.jl's data / formulation / problem split):

* :class:`DistFlowSOC` — the branch flow model with the SOC relaxation
  ``P^2 + Q^2 <= l v_i``;
* :class:`LinDistFlow` — the linearization that drops the loss terms ``l``.

Edges are oriented away from the slack bus here (the data's branch direction
is not trusted). Everything is per unit on the feeder's ``base_mva``; squared
voltage magnitudes ``v = |V|^2`` and squared currents ``l = |I|^2``.
Injections are positive for generation into a bus.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from env.network import Network

Injection = cp.Expression | np.ndarray


@dataclass(frozen=True, eq=False)
class RadialTopology:
    """A radial feeder with every edge oriented away from the slack bus.

    Oriented edge ``k`` runs ``parent_bus[k] -> child_bus[k]``; edges are in
    breadth-first order (a parent's edge comes before its children's).

    Attributes:
        n_bus: number of buses.
        slack_bus: 0-based root.
        parent_bus, child_bus: (n_branch,) bus indices of each oriented edge.
        branch_index: (n_branch,) row of ``net.branch`` each edge comes from.
        r_pu, x_pu: (n_branch,) series impedance of each edge, per unit.
        i_max_pu: (n_branch,) current limit in pu (``inf`` if unrated), from
            ``rate_mva / base_mva`` at 1 p.u. voltage.
    """

    n_bus: int
    slack_bus: int
    parent_bus: np.ndarray
    child_bus: np.ndarray
    branch_index: np.ndarray
    r_pu: np.ndarray
    x_pu: np.ndarray
    i_max_pu: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.parent_bus)
        for name in ("child_bus", "branch_index", "r_pu", "x_pu", "i_max_pu"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"RadialTopology.{name}: expected {n} entries")
        if n != self.n_bus - 1:
            raise ValueError(f"RadialTopology: {n} edges for {self.n_bus} buses is not a tree")
        if np.any(self.r_pu < 0) or np.any(self.x_pu < 0):
            raise ValueError("RadialTopology: DistFlow needs r_pu >= 0 and x_pu >= 0")

    @property
    def n_branch(self) -> int:
        return len(self.parent_bus)

    @property
    def non_slack(self) -> np.ndarray:
        """Indices of the buses other than the slack."""
        return np.delete(np.arange(self.n_bus), self.slack_bus)

    @property
    def subtree(self) -> sp.csr_matrix:
        """(n_branch, n_bus) BIBC matrix: 1 at (k, j) when bus j is at or below ``child_bus[k]``."""
        edge_into = np.full(self.n_bus, -1)
        edge_into[self.child_bus] = np.arange(self.n_branch)
        rows: list[int] = []
        cols: list[int] = []
        for j in range(self.n_bus):
            k = edge_into[j]
            while k >= 0:
                rows.append(int(k))
                cols.append(j)
                k = edge_into[self.parent_bus[k]]
        return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(self.n_branch, self.n_bus))

    def lin_voltage_matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """``R = T^T diag(r) T`` and ``X = T^T diag(x) T`` (T = :attr:`subtree`), dense (n_bus, n_bus).

        LinDistFlow voltages are ``v_hat = V_slack^2 + 2 (R p + X q)`` for injections p, q.
        """
        t = self.subtree
        return (t.T @ sp.diags(self.r_pu) @ t).toarray(), (t.T @ sp.diags(self.x_pu) @ t).toarray()

    @property
    def a_parent(self) -> sp.csr_matrix:
        """(n_bus, n_branch) with 1 at (parent_bus[k], k)."""
        return _selector(self.parent_bus, self.n_bus)

    @property
    def a_child(self) -> sp.csr_matrix:
        """(n_bus, n_branch) with 1 at (child_bus[k], k)."""
        return _selector(self.child_bus, self.n_bus)


def _selector(bus: np.ndarray, n_bus: int) -> sp.csr_matrix:
    n = len(bus)
    return sp.csr_matrix((np.ones(n), (bus, np.arange(n))), shape=(n_bus, n))


def radial_topology(net: Network) -> RadialTopology:
    """Orient the feeder's branches away from ``net.slack_bus`` by breadth-first search.

    Raises:
        ValueError: if ``net`` is not a feeder, or has off-nominal taps or phase
            shifts (DistFlow here models plain series impedances).
    """
    if net.kind != "feeder":
        raise ValueError(f"{net.name}: DistFlow needs a radial feeder, got a {net.kind} network")
    br = net.branch
    if np.any(br.tap != 1.0) or np.any(br.shift_rad != 0.0):
        raise ValueError(f"{net.name}: DistFlow does not model off-nominal taps or phase shifts")
    adjacency: list[list[tuple[int, int]]] = [[] for _ in range(net.n_bus)]
    for k, (f, t) in enumerate(zip(br.from_bus.tolist(), br.to_bus.tolist())):
        adjacency[f].append((t, k))
        adjacency[t].append((f, k))
    parent, child, index = _bfs_edges(adjacency, net.slack_bus)
    idx = np.array(index, dtype=int)
    return RadialTopology(
        n_bus=net.n_bus,
        slack_bus=net.slack_bus,
        parent_bus=np.array(parent, dtype=int),
        child_bus=np.array(child, dtype=int),
        branch_index=idx,
        r_pu=np.asarray(br.r_pu)[idx].astype(float),
        x_pu=np.asarray(br.x_pu)[idx].astype(float),
        i_max_pu=np.asarray(br.rate_mva)[idx] / net.base_mva,
    )


def _bfs_edges(adjacency: list[list[tuple[int, int]]], root: int) -> tuple[list[int], list[int], list[int]]:
    seen = {root}
    queue = deque([root])
    parent: list[int] = []
    child: list[int] = []
    index: list[int] = []
    while queue:
        bus = queue.popleft()
        for nb, k in adjacency[bus]:
            if nb not in seen:
                seen.add(nb)
                queue.append(nb)
                parent.append(bus)
                child.append(nb)
                index.append(k)
    return parent, child, index


@dataclass(frozen=True, eq=False)
class FeederVars:
    """Variables, constraints and derived expressions of one feeder for S scenarios.

    Attributes:
        formulation: ``"soc"`` or ``"lin"``.
        topology: the oriented feeder (rows of P, Q, l are its edges).
        P, Q: (n_branch, S) sending-end flows on each oriented edge, pu.
        l: (n_branch, S) squared current magnitudes, pu; ``None`` for LinDistFlow.
        v: (n_bus, S) squared voltage magnitudes, pu.
        v_hat: (n_bus, S) LinDistFlow voltages of the same injections,
            ``V_slack^2 + 2 (R p + X q)``: affine in the injections, independent of
            ``l``, and an upper bound on ``v`` (Gan et al. 2015, Lemma 1). Bounding
            ``v_hat`` instead of ``v`` from above is their modified OPF whose SOC
            relaxation stays exact under condition C1. For LinDistFlow it is ``v``.
        constraints: everything the formulation requires.
        losses: (S,) active losses per scenario, pu: ``sum_k r_k l_k`` (SOC) or
            the convex estimate ``sum_k r_k (P_k^2 + Q_k^2) / v_0`` (Lin).
        p_head, q_head: (S,) power imported at the slack bus, pu.
    """

    formulation: str
    topology: RadialTopology
    P: cp.Variable
    Q: cp.Variable
    l: cp.Variable | None
    v: cp.Variable
    v_hat: cp.Expression
    constraints: list[cp.Constraint]
    losses: cp.Expression
    p_head: cp.Expression
    q_head: cp.Expression

    @property
    def n_scenarios(self) -> int:
        return int(self.v.shape[1])

    def voltage_pu(self) -> np.ndarray:
        """(n_bus, S) voltage magnitudes ``sqrt(v)`` of the last solve."""
        if self.v.value is None:
            raise ValueError("FeederVars.voltage_pu: the problem has not been solved")
        return np.sqrt(np.maximum(self.v.value, 0.0))


class FeederFormulation(Protocol):
    """What a problem needs from a formulation: a name and ``build``."""

    name: str

    def build(self, net: Network, n_scenarios: int, p_inj: Injection, q_inj: Injection) -> FeederVars:
        """Add the feeder's variables and constraints for ``n_scenarios`` scenarios."""
        ...


def _check_injection(value: Injection, n_bus: int, n_scenarios: int, name: str) -> None:
    shape = tuple(value.shape)
    if shape != (n_bus, n_scenarios):
        raise ValueError(f"{name}: expected shape (n_bus, S) = {(n_bus, n_scenarios)}, got {shape}")


def _check_scenarios(n_scenarios: int) -> int:
    if isinstance(n_scenarios, bool) or not isinstance(n_scenarios, (int, np.integer)) or n_scenarios < 1:
        raise ValueError(f"n_scenarios must be an int >= 1, got {n_scenarios!r}")
    return int(n_scenarios)


@dataclass(frozen=True, eq=False)
class _Common:
    """The parts shared by both formulations (flows, voltages, balances)."""

    topo: RadialTopology
    P: cp.Variable
    Q: cp.Variable
    v: cp.Variable
    v_from: cp.Expression
    v_to: cp.Expression


def _common(net: Network, n_scenarios: int, p_inj: Injection, q_inj: Injection) -> _Common:
    s = _check_scenarios(n_scenarios)
    _check_injection(p_inj, net.n_bus, s, "p_inj")
    _check_injection(q_inj, net.n_bus, s, "q_inj")
    topo = radial_topology(net)
    P = cp.Variable((topo.n_branch, s), name="P_pu")
    Q = cp.Variable((topo.n_branch, s), name="Q_pu")
    v = cp.Variable((topo.n_bus, s), name="v_pu2")
    return _Common(topo, P, Q, v, topo.a_parent.T @ v, topo.a_child.T @ v)


def _balance(c: _Common, inj: Injection, flow: cp.Variable, loss: cp.Expression | None) -> cp.Constraint:
    """Nodal balance at every non-slack bus j (docs/math.md §1).

    ``P_ij - r_ij l_ij + p_j = sum_k P_jk`` (``Q`` alike with ``x``); ``loss``
    is the ``(n_branch, S)`` series loss ``r l`` (or ``x l``), ``None`` for Lin.
    """
    ns = c.topo.non_slack
    incidence = (c.topo.a_child - c.topo.a_parent)[ns]
    lhs = incidence @ flow + inj[ns]
    if loss is not None:
        lhs = lhs - c.topo.a_child[ns] @ loss
    return lhs == 0


def _voltage_drop(c: _Common, z2_l: cp.Expression | None) -> cp.Constraint:
    """``v_j = v_i - 2 (r P + x Q) + (r^2 + x^2) l`` on every edge (``l`` term dropped for Lin)."""
    d_r, d_x = sp.diags(c.topo.r_pu), sp.diags(c.topo.x_pu)
    rhs = c.v_from - 2 * (d_r @ c.P + d_x @ c.Q)
    if z2_l is not None:
        rhs = rhs + z2_l
    return c.v_to == rhs


def _head(c: _Common, inj: Injection, flow: cp.Variable) -> cp.Expression:
    """Import at the slack: ``sum of flows out of the slack - injection at the slack``."""
    out = c.topo.a_parent[[c.topo.slack_bus]]
    return cp.reshape(out @ flow - inj[[c.topo.slack_bus]], (flow.shape[1],), order="F")


def _slack_voltage(c: _Common, net: Network) -> cp.Constraint:
    """``v_0 = V_slack^2`` in every scenario."""
    return c.v[c.topo.slack_bus] == net.v_slack_pu**2


@dataclass(frozen=True)
class DistFlowSOC:
    """DistFlow with the SOC relaxation (docs/math.md §1).

    Per scenario: nodal balances with series losses ``r l``, ``x l``; voltage
    drop ``v_j = v_i - 2 (r P + x Q) + (r^2 + x^2) l``; ``v_0 = V_slack^2``;
    ``||(2P, 2Q, l - v_i)||_2 <= l + v_i`` (i.e. ``P^2 + Q^2 <= l v_i``); and
    ``l <= Imax^2`` on rated edges when ``current_limits``.
    """

    current_limits: bool = True
    name: str = "soc"

    def build(self, net: Network, n_scenarios: int, p_inj: Injection, q_inj: Injection) -> FeederVars:
        """Add the relaxed branch flow model for ``n_scenarios`` scenarios.

        Args:
            net: a radial feeder.
            n_scenarios: S, the number of columns.
            p_inj, q_inj: (n_bus, S) net injections (generation - load), pu.
        """
        c = _common(net, n_scenarios, p_inj, q_inj)
        t = c.topo
        l = cp.Variable((t.n_branch, c.v.shape[1]), name="l_pu2")
        z2 = sp.diags(t.r_pu**2 + t.x_pu**2)
        cons = [
            _balance(c, p_inj, c.P, sp.diags(t.r_pu) @ l),
            _balance(c, q_inj, c.Q, sp.diags(t.x_pu) @ l),
            _voltage_drop(c, z2 @ l),
            _slack_voltage(c, net),
            _soc(c.P, c.Q, l, c.v_from),
        ]
        cons += _current_limits(t, l) if self.current_limits else []
        return FeederVars(
            formulation=self.name, topology=t, P=c.P, Q=c.Q, l=l, v=c.v, constraints=cons,
            v_hat=_v_hat(t, net, p_inj, q_inj),
            losses=t.r_pu @ l, p_head=_head(c, p_inj, c.P), q_head=_head(c, q_inj, c.Q),
        )


def _v_hat(t: RadialTopology, net: Network, p_inj: Injection, q_inj: Injection) -> cp.Expression:
    """LinDistFlow voltages ``v_hat = V_slack^2 + 2 (R p + X q)`` as an affine expression."""
    r_mat, x_mat = t.lin_voltage_matrices()
    return net.v_slack_pu**2 + 2 * (cp.Constant(r_mat) @ p_inj + cp.Constant(x_mat) @ q_inj)


def _soc(P: cp.Variable, Q: cp.Variable, l: cp.Variable, v_from: cp.Expression) -> cp.Constraint:
    """``||(2P, 2Q, l - v_i)||_2 <= l + v_i`` for every (edge, scenario), one cone block."""
    vec = lambda e: cp.vec(e, order="F")  # noqa: E731
    t = vec(l + v_from)
    x = cp.vstack([vec(2 * P), vec(2 * Q), vec(l - v_from)])
    return cp.SOC(t, x, axis=0)


def _current_limits(t: RadialTopology, l: cp.Variable) -> list[cp.Constraint]:
    rated = np.flatnonzero(np.isfinite(t.i_max_pu))
    if rated.size == 0:
        return []
    return [l[rated] <= (t.i_max_pu[rated] ** 2)[:, None]]


@dataclass(frozen=True)
class LinDistFlow:
    """LinDistFlow (docs/math.md §1): DistFlow without the ``l`` terms.

    ``P_ij + p_j = sum_k P_jk``, ``Q`` alike, ``v_j = v_i - 2 (r P + x Q)``,
    ``v_0 = V_slack^2``. Linear; for the same injections its voltages bound the
    relaxed model's from above. ``losses`` is the convex estimate
    ``sum_k r_k (P_k^2 + Q_k^2) / V_slack^2`` (only compiled if used).
    """

    name: str = "lin"

    def build(self, net: Network, n_scenarios: int, p_inj: Injection, q_inj: Injection) -> FeederVars:
        """Add the linear model for ``n_scenarios`` scenarios (see :meth:`DistFlowSOC.build`)."""
        c = _common(net, n_scenarios, p_inj, q_inj)
        t = c.topo
        cons = [
            _balance(c, p_inj, c.P, None),
            _balance(c, q_inj, c.Q, None),
            _voltage_drop(c, None),
            _slack_voltage(c, net),
        ]
        losses = (t.r_pu / net.v_slack_pu**2) @ (cp.square(c.P) + cp.square(c.Q))
        return FeederVars(
            formulation=self.name, topology=t, P=c.P, Q=c.Q, l=None, v=c.v, v_hat=c.v, constraints=cons,
            losses=losses, p_head=_head(c, p_inj, c.P), q_head=_head(c, q_inj, c.Q),
        )


FORMULATIONS: dict[str, FeederFormulation] = {"soc": DistFlowSOC(), "lin": LinDistFlow()}


def get_formulation(name: str) -> FeederFormulation:
    """The formulation called ``name`` (``"soc"`` or ``"lin"``)."""
    try:
        return FORMULATIONS[name]
    except KeyError:
        raise ValueError(f"unknown formulation {name!r}; choose one of {sorted(FORMULATIONS)}") from None


@dataclass(frozen=True)
class RelaxationGap:
    """How far a solved SOC relaxation is from the exact DistFlow equality.

    Attributes:
        abs_pu: ``max_{k,s} (l_ks v_i(k)s - P_ks^2 - Q_ks^2)`` (pu^2, may be a tiny
            negative number within solver tolerance).
        rel: ``abs_pu / max_{k,s} (l_ks v_i(k)s)``, i.e. relative to the largest
            squared apparent flow.
        branch: oriented edge index of the maximum.
        scenario: scenario (column) of the maximum.
    """

    abs_pu: float
    rel: float
    branch: int
    scenario: int


def relaxation_gap(fv: FeederVars, scenarios: np.ndarray | None = None) -> RelaxationGap:
    """Gap ``l v_i - P^2 - Q^2`` of a solved :class:`DistFlowSOC` block.

    Args:
        fv: the feeder variables after a solve.
        scenarios: columns to include (default: all).

    Raises:
        ValueError: for LinDistFlow (no ``l``) or before a solve.
    """
    if fv.l is None:
        raise ValueError("relaxation_gap: LinDistFlow has no l, so no relaxation gap")
    if any(x.value is None for x in (fv.P, fv.Q, fv.l, fv.v)):
        raise ValueError("relaxation_gap: the problem has not been solved")
    cols = np.arange(fv.n_scenarios) if scenarios is None else np.asarray(scenarios, dtype=int)
    if cols.size == 0:
        raise ValueError("relaxation_gap: no scenarios selected")
    v_from = fv.topology.a_parent.T @ fv.v.value[:, cols]
    lv = fv.l.value[:, cols] * v_from
    gap = lv - fv.P.value[:, cols] ** 2 - fv.Q.value[:, cols] ** 2
    k, s = np.unravel_index(int(np.argmax(gap)), gap.shape)
    scale = float(np.max(np.abs(lv)))
    abs_pu = float(gap[k, s])
    return RelaxationGap(abs_pu, abs_pu / scale if scale > 0 else 0.0, int(k), int(cols[s]))
