"""Closed-loop speed on d33: the reactive SOCP's scenario building and re-solve per step, and a
whole day of the heuristic and of the rollout (median of several runs).

    OPENBLAS_NUM_THREADS=1 python benchmarks/loop_day.py --runs 3

To compare two versions side by side, run the same script from each checkout, alternating
(the machine is shared: compare alternated runs, not absolute times):

    for i in 1 2 3; do (cd ../old && python benchmarks/loop_day.py --runs 1); python benchmarks/loop_day.py --runs 1; done

It touches only APIs both the old and the new loop have (``RollingController``, its
``builder`` and ``compensator``), so it runs on earlier checkouts too.
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import env  # noqa: E402
from controller.loop import LoopSettings, RollingController  # noqa: E402
from policies import make_policy  # noqa: E402


def _timed_parts(ctl: RollingController) -> dict[str, list[float]]:
    """Wrap the controller's builder and compensator to time each call (ms)."""
    times: dict[str, list[float]] = {"build_ms": [], "solve_ms": []}
    build, solve = ctl.builder.build, ctl.compensator.solve

    def timed_build(*a, **k):  # noqa: ANN002, ANN003, ANN202
        t0 = time.perf_counter()
        out = build(*a, **k)
        times["build_ms"].append((time.perf_counter() - t0) * 1e3)
        return out

    def timed_solve(*a, **k):  # noqa: ANN002, ANN003, ANN202
        t0 = time.perf_counter()
        out = solve(*a, **k)
        times["solve_ms"].append((time.perf_counter() - t0) * 1e3)
        return out

    ctl.builder.build, ctl.compensator.solve = timed_build, timed_solve
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="days per policy (medians are printed)")
    parser.add_argument("--seed", type=int, default=8300)
    parser.add_argument("--label", default=os.path.basename(os.getcwd()), help="label printed with the figures")
    args = parser.parse_args()
    e = env.TDGridEnv(case="d33", regime="cloudy")
    for name in ("heuristic", "rollout"):
        ctl = RollingController(e, make_policy(name, e.grid), settings=LoopSettings())
        parts = _timed_parts(ctl)
        days, costs = [], []
        for k in range(args.runs):
            t0 = time.perf_counter()
            day = ctl.run_day(args.seed + k)
            days.append(time.perf_counter() - t0)
            costs.append(day.summary["total_cost"])
        print(f"[{args.label}] d33 {name:9s} day {statistics.median(days):6.2f} s (median of {args.runs}); "
              f"SOCP scenario build {np.median(parts['build_ms']):6.2f} ms/step, SOCP solve "
              f"{np.median(parts['solve_ms']):6.2f} ms/step; mean cost {np.mean(costs):,.1f}", flush=True)
    sig = inspect.signature(ctl.compensator.solve)
    print(f"[{args.label}] (compensator.solve{sig})")


if __name__ == "__main__":
    main()
