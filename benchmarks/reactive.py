"""Reactive SOCP speed: compile once, re-solve with changing loads (seed 003, stage 2).

For S = 1, 5, 10, 20 scenarios and each solver (ECOS, Clarabel) prints the
compile time (building the cvxpy problem and its DPP parameter program) and
the median re-solve time over ``--runs`` solves with new loads and DER output,
next to the solver's own time; the rest is cvxpy (parameter stuffing and
unpacking) plus our validation and gap computation. Target: S = 10 re-solve
<= 30 ms on d33.

Run: ``python benchmarks/reactive.py [--case d33] [--runs 15] [--upper lin|soc] [--profile]``
(one BLAS thread).
"""

from __future__ import annotations

import os
import sys

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# This script's folder is sys.path[0]; a benchmarks/<package>.py (e.g. scenarios.py) would shadow
# the project package of the same name, so drop it.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import env  # noqa: E402
from controller.reactive import FeederReactiveSOCP, ReactiveResult, ReactiveSettings  # noqa: E402
from env.interop import base_injection  # noqa: E402
from env.network import Network  # noqa: E402

threadpool_limits(1)

SCENARIO_COUNTS = (1, 5, 10, 20)
SOLVERS = ("ECOS", "CLARABEL")


def _draws(net: Network, s: int, runs: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``runs`` scenario sets: per-scenario load scale in [0.3, 1.3], DER output in [0, 1] x p_max."""
    rng = np.random.default_rng(seed)
    p, q = base_injection(net)
    out = []
    for _ in range(runs):
        scale = rng.uniform(0.3, 1.3, size=(s, 1))
        p_mw = p[None, :] * scale
        der = rng.uniform(0.0, 1.0, size=(s, len(net.der))) * net.der.p_max_mw
        for k, bus in enumerate(net.der.bus):
            p_mw[:, bus] -= der[:, k]
        out.append((p_mw, q[None, :] * scale, np.full(s, 1.0 / s)))
    return out


def _run(net: Network, settings: ReactiveSettings, runs: int) -> tuple[float, list[ReactiveResult]]:
    t0 = time.perf_counter()
    model = FeederReactiveSOCP(net, settings)
    build_ms = (time.perf_counter() - t0) * 1e3
    draws = _draws(net, settings.n_scenarios, runs + 1)
    model.solve(*draws[0])  # first solve (still no recompile; warms caches)
    return build_ms, [model.solve(*d) for d in draws[1:]]


def _row(s: int, solver: str, build_ms: float, results: list[ReactiveResult]) -> str:
    solve = np.median([r.solve_ms for r in results])
    own = np.median([r.solver_ms for r in results])
    rest = np.median([r.solve_ms - r.solver_ms for r in results])
    gap = np.nanmax([r.relaxation_gap_pu for r in results])
    fallbacks = sum(r.fallback is not None for r in results)
    return (f"{s:>3d} {solver:<9s} {build_ms:>11.1f} {solve:>11.2f} {own:>10.2f} {rest:>11.2f} "
            f"{gap:>10.1e} {fallbacks:>4d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="d33")
    parser.add_argument("--runs", type=int, default=15, help="re-solves per configuration (>= 7)")
    parser.add_argument("--upper", default="lin", choices=("lin", "soc"), help="ReactiveSettings.upper_voltage")
    parser.add_argument("--formulation", default="soc", choices=("soc", "lin"))
    parser.add_argument("--profile", action="store_true", help="cProfile the S=10 ECOS re-solves")
    args = parser.parse_args()
    if args.runs < 7:
        parser.error("--runs must be >= 7")
    net = env.load_case(args.case).feeders[0]
    print(f"benchmark: reactive SOCP on {args.case} ({net.n_bus} buses, {len(net.compensator)} compensators), "
          f"formulation={args.formulation}, upper_voltage={args.upper}, median of {args.runs} re-solves, 1 BLAS thread")
    print("  S solver     build_ms  resolve_ms  solver_ms  cvxpy+ours    max_gap  fb")
    for s in SCENARIO_COUNTS:
        for solver in SOLVERS:
            settings = ReactiveSettings(n_scenarios=s, solver=solver, upper_voltage=args.upper,
                                        formulation=args.formulation)
            build_ms, results = _run(net, settings, args.runs)
            print(_row(s, solver, build_ms, results))
    print("(build_ms: construct + compile for both solvers; resolve_ms: wall per solve() call; solver_ms:"
          " solver_stats.solve_time; cvxpy+ours: median of the per-call difference; fb: calls that fell back;"
          " target: S=10 resolve <= 30 ms on d33)")
    if args.profile:
        _profile(net, args)


def _profile(net: Network, args: argparse.Namespace) -> None:
    settings = ReactiveSettings(n_scenarios=10, upper_voltage=args.upper, formulation=args.formulation)
    model = FeederReactiveSOCP(net, settings)
    draws = _draws(net, 10, args.runs)
    profiler = cProfile.Profile()
    profiler.enable()
    for d in draws:
        model.solve(*d)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(15)


if __name__ == "__main__":
    main()
