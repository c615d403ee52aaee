"""Yardstick speed: MPC solve time per step and the perfect-information solve per day.

For each case (default d33 and t30d2) prints
* MPC (LinDistFlow + HiGHS, rest-of-day window): the median and max decision time per step
  over a whole day (parameter update + EV replay + solve; the first call of each window size
  also compiles it, so the max includes compilation), the number of compiled windows and
  fallbacks;
* optionally (``--soc``) the same for MPC with DistFlow-SOC over the first ``--soc-steps`` steps;
* perfect information: build and solve time of the day (on T-D cases the bound's model and the
  plan's model are both solved), the bound, and which model it is.

Run: ``python benchmarks/yardsticks.py [--cases d33 t30d2] [--seed 1] [--soc] [--soc-steps 8]``
(one BLAS thread; the env runs without the reactive SOCP: only the policies are timed).
"""

from __future__ import annotations

import argparse
import time

import _timing  # noqa: F401  (one BLAS thread, benchmarks folder off sys.path)
import gymnasium as gym
import numpy as np

import env  # noqa: F401  (registers the envs)
from policies.mpc import MPCPolicy
from policies.perfect_information import PerfectInformation
from _timing import report


def _mpc_day(case: str, seed: int, formulation: str, n_steps: int | None) -> None:
    e = gym.make("gridroll/TDGrid-v0", case=case, regime="cloudy")
    base = e.unwrapped
    e.reset(seed=seed, options={"scenario_seed": seed})
    policy = MPCPolicy(base.grid, formulation=formulation)
    policy.reset(seed)
    steps = base.n_steps if n_steps is None else n_steps
    t0 = time.perf_counter()
    for _ in range(steps):
        obs = base.observation_typed
        base.step_dispatch(policy.act(obs, obs.forecast))
    wall = time.perf_counter() - t0
    ms = np.asarray(policy.solve_ms) * 1e-3
    tag = f"{case} MPC {formulation}"
    report(f"{tag}: median decision per step", float(np.median(ms)), "ms",
           f"({steps} steps, {policy.n_compiled} windows compiled, {policy.fallbacks} fallbacks)")
    report(f"{tag}: max decision per step (incl. compile)", float(ms.max()), "ms")
    report(f"{tag}: whole run", wall, "s")


def _pi_day(case: str, seed: int) -> None:
    e = gym.make("gridroll/TDGrid-v0", case=case, regime="cloudy")
    base = e.unwrapped
    e.reset(seed=seed, options={"scenario_seed": seed})
    pi = PerfectInformation(base.grid)
    t0 = time.perf_counter()
    pi.observe_day(base.simulator.scenario)
    wall = time.perf_counter() - t0
    report(f"{case} perfect information: build + solve per day", wall, "s",
           f"(solver {pi.solve_s:.2f} s, {pi.solver_used}, {pi.status}; bound {pi.bound:.1f} "
           f"{base.grid.tariff.currency}; {pi.model_name})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["d33", "t30d2"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--soc", action="store_true", help="also time MPC with DistFlow-SOC")
    parser.add_argument("--soc-steps", type=int, default=8)
    args = parser.parse_args()
    for case in args.cases:
        _pi_day(case, args.seed)
        _mpc_day(case, args.seed, "lin", None)
        if args.soc:
            _mpc_day(case, args.seed, "soc", args.soc_steps)


if __name__ == "__main__":
    main()
