"""DC power flow through power transfer distribution factors (PTDF).

docs/math.md section 2. With the branch-bus incidence ``A`` (+1 at the from bus,
-1 at the to bus), series susceptances ``b = 1 / (x tap)``, ``B_f = diag(b) A``
and ``B = A^T diag(b) A``, the PTDF over the non-slack buses ``ns`` is

    PTDF[:, ns] = B_f[:, ns] B[ns, ns]^-1,   PTDF[:, slack] = 0.

Phase shifters enter as in MATPOWER's ``makeBdc`` (and pandapower's
``rundcpp``): a branch with shift angle ``theta`` carries the extra flow
``P_f,inj = -b theta`` and injects ``P_bus,inj = A^T P_f,inj`` at its ends, so

    f = B_f angle + P_f,inj,   B angle = p - P_bus,inj
    =>  f = PTDF (p - P_bus,inj) + P_f,inj = PTDF p + f_shift.

The slack column is zero, so the slack absorbs any injection mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order

__all__ = ["DCModel"]


def _branch_index(values: np.ndarray, what: str, n_bus: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"DCModel.build: {what} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"DCModel.build: {what} must hold integer bus indices")
    arr = arr.astype(np.intp)
    bad = np.flatnonzero((arr < 0) | (arr >= n_bus))
    if bad.size:
        raise ValueError(f"DCModel.build: {what}[{bad[0]}] = {arr[bad[0]]} is not a bus index in [0, {n_bus})")
    return arr


def _branch_values(values: np.ndarray | None, what: str, n_branch: int, default: float) -> np.ndarray:
    if values is None:
        return np.full(n_branch, default)
    arr = np.array(values, dtype=float)
    if arr.shape != (n_branch,):
        raise ValueError(f"DCModel.build: {what} must have shape ({n_branch},), got {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"DCModel.build: {what}[{bad[0]}] = {arr[bad[0]]} is not finite")
    return arr


def _check_connected(from_bus: np.ndarray, to_bus: np.ndarray, n_bus: int, slack_bus: int) -> None:
    """Raise ValueError naming the first bus not reachable from the slack."""
    graph = coo_matrix((np.ones(from_bus.size), (from_bus, to_bus)), shape=(n_bus, n_bus)).tocsr()
    reached = breadth_first_order(graph, slack_bus, directed=False, return_predecessors=False)
    seen = np.zeros(n_bus, dtype=bool)
    seen[reached] = True
    if not seen.all():
        raise ValueError(f"DCModel.build: bus {int(np.flatnonzero(~seen)[0])} is disconnected from the slack")


@dataclass(frozen=True, eq=False)
class DCModel:
    """Linear (DC) power flow model of a meshed network, per unit on its base.

    Attributes:
        ptdf: (n_branch, n_bus) flow on each branch per unit injection at each
            bus, withdrawn at the slack; the slack column is zero.
        b_pu: (n_branch,) series susceptance ``1 / (x tap)``.
        p_shift_branch_pu: (n_branch,) phase-shifter flow ``-b theta`` (MATPOWER's Pfinj).
        p_shift_bus_pu: (n_bus,) phase-shifter bus injections ``A^T P_f,inj`` (MATPOWER's Pbusinj).
        f_shift_pu: (n_branch,) flows at zero injection, ``P_f,inj - PTDF P_bus,inj``.
        from_bus, to_bus: (n_branch,) 0-based branch ends.
        slack_bus: 0-based slack bus.
    """

    ptdf: np.ndarray
    b_pu: np.ndarray
    p_shift_branch_pu: np.ndarray
    p_shift_bus_pu: np.ndarray
    f_shift_pu: np.ndarray
    from_bus: np.ndarray
    to_bus: np.ndarray
    slack_bus: int

    def __post_init__(self) -> None:
        if self.ptdf.ndim != 2:
            raise ValueError(f"DCModel.ptdf: expected a 2-D (n_branch, n_bus) array, got shape {self.ptdf.shape}")
        n_branch, n_bus = self.ptdf.shape
        for name, shape in (
            ("b_pu", (n_branch,)), ("p_shift_branch_pu", (n_branch,)), ("p_shift_bus_pu", (n_bus,)),
            ("f_shift_pu", (n_branch,)), ("from_bus", (n_branch,)), ("to_bus", (n_branch,)),
        ):
            arr = getattr(self, name)
            if arr.shape != shape:
                raise ValueError(f"DCModel.{name}: expected shape {shape}, got {arr.shape}")
        if not 0 <= self.slack_bus < n_bus:
            raise ValueError(f"DCModel.slack_bus: {self.slack_bus} is not a bus index in [0, {n_bus})")
        if not np.all(np.isfinite(self.ptdf)):
            raise ValueError("DCModel.ptdf: contains non-finite entries")
        if np.any(self.ptdf[:, self.slack_bus] != 0):
            raise ValueError("DCModel.ptdf: the slack column must be zero")
        for name in ("ptdf", "b_pu", "p_shift_branch_pu", "p_shift_bus_pu", "f_shift_pu", "from_bus", "to_bus"):
            getattr(self, name).setflags(write=False)

    @property
    def n_bus(self) -> int:
        """Number of buses."""
        return int(self.ptdf.shape[1])

    @property
    def n_branch(self) -> int:
        """Number of branches."""
        return int(self.ptdf.shape[0])

    @classmethod
    def build(
        cls,
        from_bus: np.ndarray,
        to_bus: np.ndarray,
        x_pu: np.ndarray,
        tap: np.ndarray | None = None,
        shift_rad: np.ndarray | None = None,
        *,
        n_bus: int,
        slack_bus: int = 0,
    ) -> "DCModel":
        """Build the PTDF ``B_f[:, ns] B[ns, ns]^-1`` and phase-shifter terms.

        Args:
            from_bus, to_bus: 0-based ends of the in-service branches.
            x_pu: series reactance per branch (non-zero), per unit.
            tap: off-nominal ratio per branch (> 0; None = 1, as MATPOWER's TAP = 0).
            shift_rad: phase-shift angle per branch in radians (None = 0).
            n_bus: number of buses.
            slack_bus: 0-based reference bus.

        Raises:
            ValueError: bad shapes or values (naming the branch), or a bus
                disconnected from the slack.
        """
        n_bus = int(n_bus)
        slack_bus = int(slack_bus)
        if n_bus < 1:
            raise ValueError(f"DCModel.build: n_bus must be >= 1, got {n_bus}")
        if not 0 <= slack_bus < n_bus:
            raise ValueError(f"DCModel.build: slack_bus {slack_bus} is not a bus index in [0, {n_bus})")
        f = _branch_index(from_bus, "from_bus", n_bus)
        t = _branch_index(to_bus, "to_bus", n_bus)
        if f.shape != t.shape:
            raise ValueError(f"DCModel.build: from_bus has {f.size} branches but to_bus has {t.size}")
        loops = np.flatnonzero(f == t)
        if loops.size:
            raise ValueError(f"DCModel.build: branch {loops[0]} connects bus {f[loops[0]]} to itself")
        x = _branch_values(x_pu, "x_pu", f.size, np.nan)
        tap_ = _branch_values(tap, "tap", f.size, 1.0)
        shift = _branch_values(shift_rad, "shift_rad", f.size, 0.0)
        if np.any(x == 0):
            raise ValueError(f"DCModel.build: x_pu[{np.flatnonzero(x == 0)[0]}] is zero (infinite susceptance)")
        if np.any(tap_ <= 0):
            raise ValueError(f"DCModel.build: tap[{np.flatnonzero(tap_ <= 0)[0]}] must be > 0")
        _check_connected(f, t, n_bus, slack_bus)

        b = 1.0 / (x * tap_)
        rows = np.arange(f.size)
        incidence = np.zeros((f.size, n_bus))
        np.add.at(incidence, (rows, f), 1.0)
        np.add.at(incidence, (rows, t), -1.0)
        b_f = b[:, None] * incidence
        b_bus = incidence.T @ b_f
        ns = np.delete(np.arange(n_bus), slack_bus)
        ptdf = np.zeros((f.size, n_bus))
        if ns.size:
            # B[ns, ns] is symmetric: PTDF[:, ns] = (B[ns, ns]^-1 B_f[:, ns]^T)^T
            ptdf[:, ns] = np.linalg.solve(b_bus[np.ix_(ns, ns)], b_f[:, ns].T).T
        p_shift_branch = -b * shift
        p_shift_bus = incidence.T @ p_shift_branch
        return cls(
            ptdf=ptdf,
            b_pu=b,
            p_shift_branch_pu=p_shift_branch,
            p_shift_bus_pu=p_shift_bus,
            f_shift_pu=p_shift_branch - ptdf @ p_shift_bus,
            from_bus=f,
            to_bus=t,
            slack_bus=slack_bus,
        )

    def flows_pu(self, p_inj_pu: np.ndarray) -> np.ndarray:
        """Branch flows ``f = PTDF p + f_shift`` (from -> to), per unit.

        Args:
            p_inj_pu: net injection (generation - load) per bus, shape (n_bus,)
                or (n_bus, K); the slack balances whatever does not sum to zero.

        Returns:
            Flows of shape (n_branch,) or (n_branch, K), matching the input.
        """
        p = np.asarray(p_inj_pu, dtype=float)
        if p.ndim not in (1, 2) or p.shape[0] != self.n_bus:
            raise ValueError(
                f"DCModel.flows_pu: p_inj_pu must have shape ({self.n_bus},) or ({self.n_bus}, K), got {p.shape}"
            )
        if not np.isfinite(p.sum()):
            raise ValueError("DCModel.flows_pu: p_inj_pu contains non-finite entries")
        flows = self.ptdf @ p
        if p.ndim == 1:
            return flows + self.f_shift_pu
        return flows + self.f_shift_pu[:, None]
