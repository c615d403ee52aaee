"""Env reset time per case: the day sampler's heap port queue (default) against the simpy
process model (the baseline; both give the same day, see tests/scenarios), alternated in one run.

Run: ``python benchmarks/env_reset.py [--repeats R] [--cases d33,t30d2,t118d10] [--days N]``.
Prints the median reset time in ms of each variant over ``repeats`` alternated rounds of 5
resets each (seeds differ per reset, as in training), and, alternated with them, the day
sampler alone: ``sample_day`` in a loop over ``N`` days against ``sample_days`` of the same
``N`` days at once (what the native vector env's resets call), in ms per day.
"""

from __future__ import annotations

import argparse
import statistics
import time

import _timing  # noqa: F401  (pins BLAS to one thread before numpy work)
import gymnasium as gym

import env  # noqa: F401  (registers the ids)
import scenarios.day as day
from scenarios.ev_ports import simulate_ports_fast, simulate_ports_simpy


def _resets_ms(e: gym.Env, seeds: range) -> float:
    t0 = time.perf_counter()
    for s in seeds:
        e.reset(seed=s)
    return (time.perf_counter() - t0) / len(seeds) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cases", default="d33,t30d2,t118d10")
    ap.add_argument("--days", type=int, default=64, help="days per sample_days call")
    args = ap.parse_args()
    print(f"{'case':<10s} {'simpy queue ms':>15s} {'heap queue ms':>14s} {'speed-up':>9s}"
          f" {'sample_day ms/day':>18s} {'sample_days ms/day':>19s}")
    for case in args.cases.split(","):
        e = gym.make("gridroll/TDGrid-v0", case=case)
        e.reset(seed=0)
        times: dict[str, list[float]] = {"simpy": [], "heap": [], "loop": [], "batch": []}
        grid, regime, dt = e.unwrapped.grid, e.unwrapped.regime, e.unwrapped.dt_minutes
        for r in range(args.repeats):
            seeds = list(range(1000 * (r + 1), 1000 * (r + 1) + args.days))
            t0 = time.perf_counter()
            for s in seeds:
                day.sample_day(grid, regime, s, dt)
            t1 = time.perf_counter()
            day.sample_days(grid, regime, seeds, dt)
            times["loop"].append((t1 - t0) / args.days * 1e3)
            times["batch"].append((time.perf_counter() - t1) / args.days * 1e3)
            for model, fn in (("simpy", simulate_ports_simpy), ("heap", simulate_ports_fast)):
                day.EV_PORT_MODELS["heap"] = fn          # the sampler's default entry, swapped
                try:
                    times[model].append(_resets_ms(e, range(100 + 5 * r, 105 + 5 * r)))
                finally:
                    day.EV_PORT_MODELS["heap"] = simulate_ports_fast
        old, new = statistics.median(times["simpy"]), statistics.median(times["heap"])
        loop, batch = statistics.median(times["loop"]), statistics.median(times["batch"])
        print(f"{case:<10s} {old:15.1f} {new:14.1f} {old / new:8.1f}x {loop:18.2f} {batch:19.2f}")


if __name__ == "__main__":
    main()
