"""Env steps per second through the routes an RL user takes (docs/rl.md), random actions:

* ``env``: the bare ``TDGridEnv`` (``gym.make``);
* ``dummy+vecnorm``: SB3 ``make_vec_env`` (``DummyVecEnv``, ``render_mode="rgb_array"`` recording
  on, as ``make_vec_env`` asks) under ``VecNormalize``;
* ``subproc(spawn)+vecnorm``: the same on ``--envs`` spawned ``SubprocVecEnv`` workers
  (the id ``env:gridroll/<CASE>-v0``; start-up time excluded);
* ``residual``: the bare env in the residual action mode (the heuristic's act every step).

With ``--reactive`` it measures reactive control in the env instead
(``ReactiveCompensationWrapper``, the loop's settings: 30 draws reduced to 10 scenarios):
``none`` (the bare env, the baseline), ``socp`` (the scenario SOCP) and ``fast``
(:mod:`controller.reactive_fast`), for random actions and for PPO training
(``model.learn``, MultiInputPolicy, ``n_steps=256``). The routes are run in turn
``--repeats`` times (alternated, so a change in the machine's load hits them alike) and the
median steps/s of each is printed next to the baseline.

    python benchmarks/rl_steps.py --case d33 --steps 2000 --envs 2
    python benchmarks/rl_steps.py --case d33 --reactive --steps 300 --repeats 3

Needs the ``rl`` extra. Prints one line per route; figures depend on the machine's load.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# run as a script, this folder is sys.path[0]; its sibling scripts (e.g. scenarios.py)
# would shadow the packages
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402


def _rate(step, n: int) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    done = step(n)
    return done / (time.perf_counter() - t0)


def _random_steps(e, rng: np.random.Generator, seed: int):  # noqa: ANN001, ANN202
    """A ``run(n)`` that plays ``n`` uniformly random actions in ``e`` from ``reset(seed)``,
    resetting at day ends; returns ``n`` (for :func:`_rate`)."""
    def run(n: int) -> int:
        e.reset(seed=seed)
        for _ in range(n):
            _, _, term, trunc, _ = e.step(rng.uniform(-1, 1, e.action_space.shape).astype(np.float32))
            if term or trunc:
                e.reset()
        return n
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="d33")
    parser.add_argument("--steps", type=int, default=2000, help="env steps per route (all envs together)")
    parser.add_argument("--envs", type=int, default=2, help="SubprocVecEnv workers")
    parser.add_argument("--reactive", action="store_true", help="reactive control in the env: none/socp/fast")
    parser.add_argument("--repeats", type=int, default=3, help="--reactive: alternated runs per route")
    args = parser.parse_args()
    if args.reactive:
        _reactive(args.case, args.steps, args.repeats)
        return

    import gymnasium as gym
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv, VecNormalize

    import env  # noqa: F401
    from env.registration import case_env_id
    from policies.residual import ResidualActionWrapper

    env_id = case_env_id(args.case)
    rng = np.random.default_rng(0)

    def single(e):  # noqa: ANN001, ANN202
        return _random_steps(e, rng, seed=1)

    def vec(v):  # noqa: ANN001, ANN202
        def run(n: int) -> int:
            v.reset()
            k = n // v.num_envs
            for _ in range(k):
                v.step(rng.uniform(-1, 1, (v.num_envs, v.action_space.shape[0])))
            return k * v.num_envs
        return run

    print(f"{args.case}: env steps per second, random actions, {args.steps} steps per route")
    print(f"  env                     {_rate(single(gym.make(env_id)), args.steps):8.0f}")
    dummy = VecNormalize(make_vec_env(env_id, n_envs=1, seed=1))
    print(f"  dummy+vecnorm           {_rate(vec(dummy), args.steps):8.0f}")
    dummy.close()
    t0 = time.perf_counter()
    sub = VecNormalize(make_vec_env("env:" + env_id, n_envs=args.envs, seed=1, vec_env_cls=SubprocVecEnv,
                                    vec_env_kwargs={"start_method": "spawn"}))
    sub.reset()
    start_s = time.perf_counter() - t0
    print(f"  subproc(spawn)+vecnorm  {_rate(vec(sub), args.steps):8.0f}   ({args.envs} workers, "
          f"start-up {start_s:.1f} s)")
    sub.close()
    print(f"  residual                {_rate(single(ResidualActionWrapper(gym.make(env_id))), args.steps):8.0f}")


def _reactive(case: str, steps: int, repeats: int) -> None:
    """Medians of alternated runs: random-action steps and PPO training steps per second,
    reactive control none / socp / fast."""
    import gymnasium as gym
    from stable_baselines3 import PPO

    import env  # noqa: F401
    from controller.wrappers import ReactiveCompensationWrapper
    from env.registration import case_env_id

    def make(method: str) -> gym.Env:
        e = gym.make(case_env_id(case))
        return e if method == "none" else ReactiveCompensationWrapper(e, method=method)

    methods = ("none", "socp", "fast")
    rng = np.random.default_rng(0)

    def random_steps(method: str) -> float:
        return _rate(_random_steps(make(method), rng, seed=8300), steps)

    def ppo_steps(method: str) -> float:
        model = PPO("MultiInputPolicy", make(method), n_steps=256, batch_size=64, n_epochs=2, seed=8300,
                    device="cpu", verbose=0)

        def run(n: int) -> int:
            model.learn(total_timesteps=n)
            return model.num_timesteps
        return _rate(run, max(256, steps // 256 * 256))

    print(f"{case}: steps per second with reactive control in the env, median of {repeats} alternated runs "
          f"of {steps} steps")
    for label, measure in (("random actions", random_steps), ("PPO training", ppo_steps)):
        rates: dict[str, list[float]] = {m: [] for m in methods}
        for _ in range(repeats):
            for m in methods:
                rates[m].append(measure(m))
        med = {m: float(np.median(rates[m])) for m in methods}
        print(f"  {label:15s} none {med['none']:8.0f}   socp {med['socp']:7.1f} ({med['none'] / med['socp']:5.1f}x "
              f"slower)   fast {med['fast']:7.1f} ({med['none'] / med['fast']:5.1f}x slower)   "
              f"fast/socp {med['fast'] / med['socp']:5.1f}x")
        print(f"  {'':15s} runs: " + "; ".join(f"{m} " + ", ".join(f"{r:.0f}" for r in rates[m]) for m in methods))


if __name__ == "__main__":
    main()
