"""Power flow of a whole :class:`~env.network.Grid`: AC sweeps on the feeders,
DC (PTDF) on the transmission network, coupled through the feeder heads.

Coupling (docs/design.md "Physics truth"): each feeder's head power
P_head = sum(net load) + losses is a load at its boundary T-bus, so

    p_inj[T] = C_g P_g + W - D - C_b P_head,   f = PTDF p_inj,

with the reference bus absorbing any mismatch 1^T p_inj.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from env.network import Grid, Network
from env.physics.dc import DCModel
from env.physics.sweep import PowerFlowError, RadialSweep

__all__ = ["FeederFlow", "GridFlow", "GridPhysics", "PowerFlowError", "base_transmission_injection", "power_flow"]


@dataclass(frozen=True)
class FeederFlow:
    """AC result of one feeder for K operating points (columns)."""

    name: str
    v_pu: np.ndarray          # (n_bus, K) voltage magnitudes
    loss_mw: np.ndarray       # (K,)
    loss_mvar: np.ndarray     # (K,)
    head_p_mw: np.ndarray     # (K,) power drawn from the root (+ = import)
    head_q_mvar: np.ndarray   # (K,)
    branch_p_mw: np.ndarray   # (n_branch, K) sending-end active flow
    iterations: int


@dataclass(frozen=True)
class GridFlow:
    """Coupled result. ``v_pu`` is the feeders' voltage magnitudes stacked in
    feeder order, each in its own bus order (for a single feeder: its buses)."""

    feeders: tuple[FeederFlow, ...]
    line_p_mw: np.ndarray | None       # (n_line, K) transmission flows
    line_loading: np.ndarray | None    # (n_line, K) |flow| / rating (0 where unrated)
    slack_p_mw: np.ndarray | None      # (K,) mismatch taken by the reference bus

    @property
    def v_pu(self) -> np.ndarray:
        v = np.concatenate([f.v_pu for f in self.feeders], axis=0)
        return v[:, 0] if v.shape[1] == 1 else v

    @property
    def loss_mw(self) -> np.ndarray:
        return sum(f.loss_mw for f in self.feeders)  # type: ignore[return-value]


def per_bus(net: Network, bus: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Sum ``values`` (n_items,) or (n_items, K) onto buses -> (n_bus,) or (n_bus, K)."""
    out = np.zeros((net.n_bus,) + values.shape[1:])
    np.add.at(out, bus, values)
    return out


class GridPhysics:
    """Solvers of a grid, built once (topology factorizations are reused)."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.sweeps = tuple(
            RadialSweep.build(f.branch.from_bus, f.branch.to_bus, f.branch.r_pu, f.branch.x_pu,
                              f.n_bus, f.slack_bus, name=f.name)
            for f in grid.feeders
        )
        t = grid.transmission
        self.dc = None if t is None else DCModel.build(
            t.branch.from_bus, t.branch.to_bus, t.branch.x_pu, t.branch.tap, t.branch.shift_rad,
            n_bus=t.n_bus, slack_bus=t.slack_bus,
        )

    def solve_feeder(self, k: int, p_mw: np.ndarray, q_mvar: np.ndarray) -> FeederFlow:
        """AC sweep of feeder ``k`` with per-bus net consumption (n_bus,) or (n_bus, K) in MW/MVAr."""
        net = self.grid.feeders[k]
        s_pu = (np.asarray(p_mw) + 1j * np.asarray(q_mvar)) / net.base_mva
        res = self.sweeps[k].solve(s_pu, v_slack_pu=net.v_slack_pu)
        return FeederFlow(
            name=net.name, v_pu=np.abs(res.v_pu),
            loss_mw=res.loss_pu.real * net.base_mva, loss_mvar=res.loss_pu.imag * net.base_mva,
            head_p_mw=res.s_slack_pu.real * net.base_mva, head_q_mvar=res.s_slack_pu.imag * net.base_mva,
            branch_p_mw=res.s_from_pu.real * net.base_mva, iterations=res.iterations,
        )

    def solve(self, feeder_p_mw: list[np.ndarray], feeder_q_mvar: list[np.ndarray],
              transmission_p_inj_mw: np.ndarray | None = None) -> GridFlow:
        """Coupled solve: feeders first, their head power then loads the T-buses.

        Args:
            feeder_p_mw, feeder_q_mvar: per feeder, net consumption per bus.
            transmission_p_inj_mw: (n_bus,) or (n_bus, K) injections at the T-buses
                excluding the feeders (generation - load); required on T-D grids.
        """
        flows = tuple(self.solve_feeder(k, p, q) for k, (p, q) in enumerate(zip(feeder_p_mw, feeder_q_mvar)))
        t = self.grid.transmission
        if t is None or self.dc is None:
            return GridFlow(flows, None, None, None)
        if transmission_p_inj_mw is None:
            raise ValueError(f"grid {self.grid.name}: transmission_p_inj_mw is required on a T-D grid")
        p_inj = np.array(transmission_p_inj_mw, dtype=float)
        p_inj = p_inj[:, None] if p_inj.ndim == 1 else p_inj
        heads = np.stack([f.head_p_mw for f in flows])          # (n_feeder, K)
        np.subtract.at(p_inj, np.array(self.grid.boundary_bus), heads)
        slack = -p_inj.sum(axis=0)
        line_p = self.dc.flows_pu(p_inj / t.base_mva) * t.base_mva
        rate = t.branch.rate_mva[:, None]
        loading = np.where(np.isfinite(rate), np.abs(line_p) / rate, 0.0)
        return GridFlow(flows, line_p, loading, slack)


def base_feeder_injection(net: Network) -> tuple[np.ndarray, np.ndarray]:
    """Per-bus net consumption (MW, MVAr) at the base operating point: loads only."""
    return per_bus(net, net.load.bus, net.load.p_mw), per_bus(net, net.load.bus, net.load.q_mvar)


def merit_order(gen_p_min: np.ndarray, gen_p_max: np.ndarray, c1: np.ndarray, demand_mw: Any) -> np.ndarray:
    """Dispatch units cheapest-first (by ``c1``, ties in unit order) from ``p_min`` up to ``p_max``
    to cover ``demand_mw``; any leading batch axis (limits (..., n_gen), demand (...)).

    With the units in merit order ``o`` and ``room = max(p_max - p_min, 0)``:
    ``P_o(i) = p_min_o(i) + clip(D - sum p_min - sum_{j < i} room_o(j), 0, room_o(i))``.
    """
    lo, hi = np.asarray(gen_p_min, dtype=float), np.asarray(gen_p_max, dtype=float)
    demand = np.asarray(demand_mw, dtype=float)
    o = np.argsort(c1, kind="stable")
    room = np.take(hi - lo, o, axis=-1)                    # in merit order
    np.maximum(room, 0.0, out=room)
    shape = np.broadcast_shapes(room.shape, demand.shape + lo.shape[-1:])
    if room.shape != shape:                                # (demand may carry the batch)
        room = np.broadcast_to(room, shape)
    rest = demand - lo.sum(axis=-1)
    give = np.cumsum(room, axis=-1)
    give -= room                                   # room of the cheaper units
    np.subtract(rest[..., None], give, out=give)
    np.maximum(give, 0.0, out=give)
    np.minimum(give, room, out=give)
    return lo + np.take(give, np.argsort(o), axis=-1)      # back to unit order


def base_transmission_injection(grid: Grid, physics: GridPhysics | None = None) -> np.ndarray:
    """T-bus injections (MW, generation - load) at the base point, *excluding* the feeders:
    thermal units in merit order cover the T loads plus the feeders' base head power;
    wind at 0. (``GridPhysics.solve`` then subtracts the solved head power.)"""
    t = grid.transmission
    if t is None:
        raise ValueError(f"grid {grid.name} has no transmission network")
    physics = physics or GridPhysics(grid)
    heads = [physics.solve_feeder(k, *base_feeder_injection(f)).head_p_mw[0] for k, f in enumerate(grid.feeders)]
    p_gen = merit_order(t.gen.p_min_mw, t.gen.p_max_mw, t.gen.cost_c1_per_mwh, float(t.load.p_mw.sum() + sum(heads)))
    return per_bus(t, t.gen.bus, p_gen) - per_bus(t, t.load.bus, t.load.p_mw)


def power_flow(grid: Grid) -> GridFlow:
    """Solve the grid at its base operating point (loads, DER and devices at 0)."""
    physics = GridPhysics(grid)
    p, q = zip(*(base_feeder_injection(f) for f in grid.feeders))
    p_inj = base_transmission_injection(grid, physics) if grid.is_td else None
    return physics.solve(list(p), list(q), p_inj)
