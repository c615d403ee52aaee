"""Env steps per second: one env (with and without resets), Gymnasium's vector env, and
Grid2Op + lightsim2grid as the outside yardstick when it is importable (this script installs
nothing).

Run: ``python benchmarks/vector_env.py [--cases d33,t30d2,t118d10] [--steps 2000] [--repeats 3]
[--num-envs 1,16,256,1024] [--sync-envs 16]``. Every figure is the median of ``repeats`` runs,
the variants alternated within each repeat so machine load hits them alike. Actions are random
(``action_space.sample``, seeded); "with resets" counts the time of the resets at day ends (a
day is 96 steps).

The native vector env (``gym.make_vec(id, num_envs=N)``, :mod:`env.vector_env`) steps N days in
one batched call; its aggregate rate (env steps/s over a whole day of N days, without and with
the step that autoresets them to N fresh days) is printed next to Gymnasium's ``SyncVectorEnv``
of single envs (``vectorization_mode="sync"``), which steps the copies one after another.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import _timing  # noqa: F401  (pins BLAS to one thread before numpy work)

# this folder's scripts (e.g. scenarios.py) would shadow the packages of the same name
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import env  # noqa: E402,F401  (registers the ids)
from env.registration import case_env_id  # noqa: E402


def _single_rate(env_id: str, steps: int, with_resets: bool) -> float:
    e = gym.make(env_id)
    e.action_space.seed(8003)
    e.reset(seed=8003)
    seed, elapsed, done_steps = 8004, 0.0, 0
    t0 = time.perf_counter()
    while done_steps < steps:
        _, _, terminated, truncated, _ = e.step(e.action_space.sample())
        done_steps += 1
        if terminated or truncated:
            if not with_resets:
                elapsed += time.perf_counter() - t0
            e.reset(seed=seed)
            seed += 1
            if not with_resets:
                t0 = time.perf_counter()
    elapsed += time.perf_counter() - t0
    e.close()
    return done_steps / elapsed


def _vector_rate(env_id: str, steps: int, num_envs: int, mode: str = "sync") -> float:
    v = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode)
    v.action_space.seed(8005)
    v.reset(seed=8005)
    n_calls = max(1, steps // num_envs)
    t0 = time.perf_counter()
    for _ in range(n_calls):
        v.step(v.action_space.sample())       # autoreset at day ends (Gymnasium 1.x next-step mode)
    elapsed = time.perf_counter() - t0
    v.close()
    return n_calls * num_envs / elapsed


def _native_rates(env_id: str, num_envs: int) -> tuple[float, float]:
    """(env steps/s over a day's steps, env steps/s counting the day's autoreset) of the native
    vector env: a whole day of ``num_envs`` days, then the step that resets them."""
    v = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
    v.action_space.seed(8005)
    v.reset(seed=8005)
    n_steps = v.unwrapped.simulator.n_steps
    actions = [v.action_space.sample() for _ in range(n_steps + 1)]
    t0 = time.perf_counter()
    for a in actions[:n_steps]:
        v.step(a)
    t_steps = time.perf_counter() - t0
    t0 = time.perf_counter()
    v.step(actions[-1])                       # the autoreset: N fresh days
    t_reset = time.perf_counter() - t0
    v.close()
    return n_steps * num_envs / t_steps, n_steps * num_envs / (t_steps + t_reset)


def _grid2op_rate(steps: int) -> float | None:
    try:
        import grid2op
        from grid2op.gym_compat import GymEnv
        from lightsim2grid import LightSimBackend
    except ImportError:
        return None
    g = grid2op.make("l2rpn_case14_sandbox", backend=LightSimBackend(), test=True)
    ge = GymEnv(g)
    ge.reset(seed=8006)
    sample = ge.action_space.sample()          # a Dict space: all-zero entries change nothing
    do_nothing = {k: np.zeros_like(v) for k, v in sample.items()}
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = ge.step(do_nothing)
        if terminated or truncated:
            ge.reset()
    return steps / (time.perf_counter() - t0)


def _ev_table_gb(case: str, num_envs: int) -> float:
    """Memory of the EV tables of ``num_envs`` days, estimated from one sampled day of the case:
    the merged fleet's sessions, initial state and membership, plus its state at the day's
    peak of connected EVs (rows and ids, twice: a step's copy holds old and new)."""
    from env.cases import load_case
    from env.ev_fleet import EVFleet
    from env.evcs import N_ROWS
    from scenarios.day import sample_day

    grid = load_case(case)
    fleet = EVFleet(sample_day(grid, "cloudy", 8005).ev, len(grid.layout.evcs_names), 0.25, 96)
    per_day = sum(a.nbytes for obj in (fleet, fleet._members, fleet.sessions)
                  for a in vars(obj).values() if isinstance(a, np.ndarray))
    per_day += 2 * (N_ROWS + 2) * 8 * int(fleet._members._counts.sum(axis=1).max())
    return num_envs * per_day / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--cases", default="d33,t30d2,t118d10")
    ap.add_argument("--steps", type=int, default=2000, help="env steps per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-envs", default="1,16,256,1024", help="native vector env sizes")
    ap.add_argument("--sync-envs", default="16", help="SyncVectorEnv sizes (empty: none)")
    ap.add_argument("--max-gb", type=float, default=6.0,
                    help="skip a native vector env whose EV tables would exceed this (GB)")
    args = ap.parse_args()
    num_envs = [int(n) for n in args.num_envs.split(",") if n]
    sync_envs = [int(n) for n in args.sync_envs.split(",") if n]
    rates: dict[str, list[float]] = {}
    skipped: dict[str, float] = {}
    rows: list[tuple[str, str]] = [("grid2op", "Grid2Op + lightsim2grid GymEnv case14, do-nothing")]
    for case in args.cases.split(","):
        env_id = case_env_id(case)
        rows += [(f"{case}/single", f"{env_id} single env, no resets"),
                 (f"{case}/single+reset", f"{env_id} single env, with resets")]
        rows += [(f"{case}/sync{n}", f"{env_id} SyncVectorEnv N={n} (aggregate)") for n in sync_envs]
        for n in num_envs:
            rows += [(f"{case}/native{n}", f"{env_id} native vector N={n}, no resets"),
                     (f"{case}/native{n}+reset", f"{env_id} native vector N={n}, with resets")]
    for _ in range(args.repeats):
        g2o = _grid2op_rate(args.steps)
        if g2o is not None:
            rates.setdefault("grid2op", []).append(g2o)
        for case in args.cases.split(","):
            env_id = case_env_id(case)
            rates.setdefault(f"{case}/single", []).append(_single_rate(env_id, args.steps, False))
            rates.setdefault(f"{case}/single+reset", []).append(_single_rate(env_id, args.steps, True))
            for n in sync_envs:
                rates.setdefault(f"{case}/sync{n}", []).append(_vector_rate(env_id, args.steps, n))
            for n in num_envs:
                if _ev_table_gb(case, n) > args.max_gb:
                    skipped[f"{case}/native{n}"] = _ev_table_gb(case, n)
                    continue
                steps_only, with_reset = _native_rates(env_id, n)
                rates.setdefault(f"{case}/native{n}", []).append(steps_only)
                rates.setdefault(f"{case}/native{n}+reset", []).append(with_reset)
    ref = statistics.median(rates["grid2op"]) if "grid2op" in rates else None
    print(f"{'variant':<62s} {'steps/s':>10s} {'x Grid2Op':>10s}   (median of {args.repeats})")
    for key, label in rows:
        if key.removesuffix("+reset") in skipped:
            key = key.removesuffix("+reset")
            print(f"{label:<62s} {'skipped':>10s}   (EV tables ~{skipped[key]:.0f} GB > --max-gb)")
            continue
        if key not in rates:
            print(f"{label:<62s} {'n/a':>10s}   (not importable; this script installs nothing)")
            continue
        med = statistics.median(rates[key])
        ratio = f"{med / ref:9.2f}x" if ref else f"{'-':>10s}"
        print(f"{label:<62s} {med:10.0f} {ratio}")


if __name__ == "__main__":
    main()
