"""Power-flow speed: sweep per feeder, batched sweep, coupled T-D solve, pandapower reference.

Run: ``python benchmarks/powerflow.py`` (median of several runs, one BLAS thread).
"""

from __future__ import annotations

import _timing  # noqa: F401  (pins BLAS to one thread before numpy work)
import numpy as np
import pandapower as pp

import env
from env.interop import grid_to_pandapower
from env.physics.grid_flow import GridPhysics, base_feeder_injection, base_transmission_injection


def main() -> None:
    print("benchmark: power flow (median of runs, 1 BLAS thread)")
    for name in ("d33", "d69"):
        grid = env.load_case(name)
        physics = GridPhysics(grid)
        p, q = base_feeder_injection(grid.feeders[0])
        _timing.report(f"{name}: one sweep (base point)", _timing.median_time(lambda: physics.solve_feeder(0, p, q), inner=200), "us")

    grid = env.load_case("d33")
    physics = GridPhysics(grid)
    p, q = base_feeder_injection(grid.feeders[0])
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.5, 1.3, size=(1, 1000))
    pk, qk = p[:, None] * scale, q[:, None] * scale
    _timing.report("d33: 1000 operating points, one batched call", _timing.median_time(lambda: physics.solve_feeder(0, pk, qk), runs=9), "ms", "(target <= 5 ms)")

    for name in ("t30d2", "t118d10"):
        grid = env.load_case(name)
        physics = GridPhysics(grid)
        pq = [base_feeder_injection(f) for f in grid.feeders]
        ps, qs = [x[0] for x in pq], [x[1] for x in pq]
        inj = base_transmission_injection(grid, physics)
        _timing.report(f"{name}: one coupled solve (feeder sweeps + DC)", _timing.median_time(lambda: physics.solve(ps, qs, inj), inner=50), "us")

    net = grid_to_pandapower(env.load_case("d33"))
    _timing.report("d33: pandapower runpp (numba off), same point", _timing.median_time(lambda: pp.runpp(net, numba=False), runs=5), "ms", "(reference)")


if __name__ == "__main__":
    main()
