"""Speed of the physics kernels: radial sweep (IEEE 33) and PTDF DC flows (IEEE 118).

Run: ``python benchmarks/powerflow_kernels.py [--repeats 9]``. BLAS is pinned
to one thread (set before numpy is imported; 2 threads were 7-10x slower
for batched sweeps here). Each figure is the median over ``--repeats`` runs.
"""

from __future__ import annotations

import os
import sys

# Running this file puts benchmarks/ first on sys.path, where sibling scripts
# (e.g. benchmarks/scenarios.py) would shadow the project's packages.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from env.cases.transmission import transmission_arrays  # noqa: E402
from env.physics.dc import DCModel  # noqa: E402
from env.physics.sweep import RadialSweep  # noqa: E402

S_BASE_MVA = 10.0
Z_BASE_OHM = 12.66**2 / S_BASE_MVA


def median_seconds(fn: Callable[[], object], calls: int, repeats: int) -> float:
    """Median over ``repeats`` runs of the mean time of ``calls`` calls to ``fn`` (seconds)."""
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - start) / calls)
    return statistics.median(runs)


def ieee33():  # noqa: ANN201 - (pandapower net, sweep, net load p.u.)
    import pandapower.networks as pn

    net = pn.case33bw()
    lines = net.line[net.line.in_service]
    sweep = RadialSweep.build(
        lines.from_bus.to_numpy(), lines.to_bus.to_numpy(),
        (lines.r_ohm_per_km * lines.length_km).to_numpy() / Z_BASE_OHM,
        (lines.x_ohm_per_km * lines.length_km).to_numpy() / Z_BASE_OHM,
        n_bus=len(net.bus), name="ieee33",
    )
    s = np.zeros(len(net.bus), dtype=complex)
    np.add.at(s, net.load.bus.to_numpy(), (net.load.p_mw + 1j * net.load.q_mvar).to_numpy() / S_BASE_MVA)
    return net, sweep, s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="runs per figure (median reported, >= 7)")
    parser.add_argument("--points", type=int, default=1000, help="operating points in the batched sweep")
    args = parser.parse_args()
    repeats = max(7, args.repeats)
    warnings.simplefilter("ignore")
    logging.getLogger("pandapower").setLevel(logging.ERROR)  # "numba cannot be imported" on every runpp
    import pandapower as pp
    import pandapower.networks as pn

    with threadpool_limits(1):
        net, sweep, s = ieee33()
        rng = np.random.default_rng(0)
        batch = s[:, None] * rng.uniform(0.0, 1.5, (s.size, args.points))
        one = median_seconds(lambda: sweep.solve(s), calls=2000, repeats=repeats)
        many = median_seconds(lambda: sweep.solve(batch), calls=5, repeats=repeats)
        nr = median_seconds(lambda: pp.runpp(net, tolerance_mva=1e-10, numba=False), calls=3, repeats=repeats)

        net118 = pn.case118()
        arr = transmission_arrays(net118)
        model = DCModel.build(arr.from_bus, arr.to_bus, arr.x_pu, arr.tap, arr.shift_rad,
                              n_bus=arr.bus_label.size, slack_bus=arr.slack_bus)
        pp.rundcpp(net118)
        p = -net118.res_bus.p_mw.to_numpy() / arr.base_mva
        p_batch = p[:, None] * rng.uniform(0.8, 1.2, (p.size, args.points))
        dc_one = median_seconds(lambda: model.flows_pu(p), calls=5000, repeats=repeats)
        dc_many = median_seconds(lambda: model.flows_pu(p_batch), calls=20, repeats=repeats)
        dc_pp = median_seconds(lambda: pp.rundcpp(net118), calls=3, repeats=repeats)

    print(f"median of {repeats} runs, BLAS threads pinned to 1")
    print(f"sweep IEEE 33, 1 point                 : {one * 1e6:8.1f} us  ({sweep.solve(s).iterations} iterations)")
    print(f"sweep IEEE 33, {args.points} points batched     : {many * 1e3:8.2f} ms  "
          f"({sweep.solve(batch).iterations} iterations)")
    print(f"pandapower runpp IEEE 33, 1 point      : {nr * 1e3:8.2f} ms")
    print(f"DC flows IEEE 118 (PTDF), 1 point      : {dc_one * 1e6:8.1f} us")
    print(f"DC flows IEEE 118 (PTDF), {args.points} points  : {dc_many * 1e3:8.2f} ms")
    print(f"pandapower rundcpp IEEE 118, 1 point   : {dc_pp * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
