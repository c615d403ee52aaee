"""Rollout speed: decision time per step for M = 1, 8, 32, and closed-loop day wall times.

Run: ``python benchmarks/rollout.py [--sims 1 8 32] [--decision-cases d33 t118d10] [--seed 1]
[--days-cases d33 t30d2] [--profile]``.
BLAS is pinned to one thread. The decision time is measured in a closed-loop day of each
``--decision-cases`` case (default d33; reactive off): the median (and p90, max) over the day's steps of ``policy.act`` (sampling the M paths,
rebuilding the EVs, the reference sweeps and every candidate round). The day wall times are
whole ``RollingController.run_day`` calls for the heuristic and the rollout (M = 8), with the
reactive SOCP off and on. The machine's load average is printed: other jobs inflate the figures.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# run as a script, this folder is sys.path[0]; its sibling scripts (e.g. scenarios.py)
# would shadow the packages of the same name
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import time  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import env  # noqa: E402, F401  (registers the ids)
from controller.loop import LoopSettings, RollingController  # noqa: E402
from policies.heuristic import HeuristicPolicy  # noqa: E402
from policies.rollout import RolloutPolicy  # noqa: E402


def decision_times(n_sims: int, seed: int, profile: bool = False, case: str = "d33") -> np.ndarray:
    """Per-step decision times (ms) of the rollout over one closed-loop day of ``case``."""
    e = gym.make("gridroll/TDGrid-v0", case=case, regime="cloudy")
    policy = RolloutPolicy(e.unwrapped.grid, n_sims=n_sims)
    ctl = RollingController(e, policy, settings=LoopSettings(reactive=False))
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    day = ctl.run_day(seed)
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(18)
    s = day.steps
    return s[s.area == "system"].decision_ms.to_numpy()


def day_wall(case: str, policy: str, reactive: bool, seed: int) -> tuple[float, float]:
    """(wall seconds, total cost) of one closed-loop day."""
    e = gym.make("gridroll/TDGrid-v0", case=case, regime="cloudy")
    grid = e.unwrapped.grid
    pol = HeuristicPolicy(grid) if policy == "heuristic" else RolloutPolicy(grid, n_sims=8)
    ctl = RollingController(e, pol, settings=LoopSettings(reactive=reactive))
    t0 = time.perf_counter()
    out = ctl.run_day(seed)
    return time.perf_counter() - t0, float(out.summary["total_cost"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--decision-cases", nargs="+", default=["d33"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--days-cases", nargs="*", default=["d33", "t30d2"])
    ap.add_argument("--profile", action="store_true", help="profile the decisions of the largest M")
    args = ap.parse_args()
    threadpool_limits(1)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (BLAS: 1 thread)")
    for case in args.decision_cases:
        print(f"rollout decision time per step, {case} cloudy, closed loop (reactive off):")
        for m in args.sims:
            ms = decision_times(m, args.seed, profile=args.profile and m == max(args.sims), case=case)
            print(f"  M={m:<3d} median {np.median(ms):7.1f} ms   p90 {np.percentile(ms, 90):7.1f} ms   "
                  f"max {ms.max():7.1f} ms   ({ms.size} steps)")
    print("closed-loop day wall time (seed %d):" % args.seed)
    for case in args.days_cases:
        for reactive in (False, True):
            for policy in ("heuristic", "rollout"):
                wall, cost = day_wall(case, policy, reactive, args.seed)
                name = f"{policy} (M=8)" if policy == "rollout" else policy
                label = f"{case} {name} reactive={'on' if reactive else 'off'}"
                print(f"  {label:<40s} {wall:8.2f} s   total cost {cost:12.1f}")


if __name__ == "__main__":
    main()
