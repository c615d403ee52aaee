"""Env steps per second on D33 and T30D2 with random valid actions.

Run: ``python benchmarks/env_step.py [--days N] [--repeats R] [--profile] [--digest]``.
BLAS is pinned to one thread (small matrices; more threads only add overhead). Each
figure is the median over ``repeats`` runs of ``days`` episodes (reset excluded), printed
together with the simulator-only rate (no gym encoding) and, with ``--profile``, the
functions that take the time. The machine's load skews the rates: compare runs made
under the same load, several times.

``--digest`` prints a SHA-256 of seeded trajectories instead (every observation array,
reward, termination flag and ``info`` value, byte for byte, for random actions on a few
days of D33 and T30D2): an optimization that leaves the env's behaviour unchanged leaves
the digest unchanged. Compare with an older checkout by running this script with its
packages first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import pstats
import statistics
import sys
import time
from pathlib import Path

# run as a script, this folder is sys.path[0]; its sibling scripts (e.g. scenarios.py)
# would shadow the packages of the same name
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import env  # noqa: E402, F401  (registers the ids)
from env.dispatch import Dispatch  # noqa: E402


def _episode_env(e: gym.Env, rng: np.random.Generator, actions: np.ndarray,
                 prof: cProfile.Profile | None = None) -> tuple[int, float]:
    """One day through the gym API; returns (steps, seconds spent in step()). ``prof`` (if
    given) profiles the step() calls only."""
    e.reset(seed=int(rng.integers(1 << 30)))
    steps, spent, done = 0, 0.0, False
    while not done:
        a = actions[steps % len(actions)]
        if prof is not None:
            prof.enable()
        t0 = time.perf_counter()
        _, _, terminated, truncated, _ = e.step(a)
        spent += time.perf_counter() - t0
        if prof is not None:
            prof.disable()
        steps += 1
        done = terminated or truncated
    return steps, spent


def _episode_sim(e: gym.Env, rng: np.random.Generator, actions: np.ndarray) -> tuple[int, float]:
    """One day on the bare simulator (limits + decode + step + typed observation)."""
    u = e.unwrapped
    u.reset(seed=int(rng.integers(1 << 30)))
    sim = u.simulator
    steps, t0 = 0, time.perf_counter()
    while not sim.done:
        sim.step(Dispatch.from_array(actions[steps % len(actions)], sim.limits()))
        sim.observe()
        steps += 1
    return steps, time.perf_counter() - t0


def measure(env_id: str, days: int, repeats: int, runner) -> float:  # noqa: ANN001
    e = gym.make(env_id)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1.0, 1.0, size=(512,) + e.action_space.shape).astype(np.float32)
    runner(e, rng, actions)  # warm-up (imports, caches)
    rates = []
    for _ in range(repeats):
        n, spent = 0, 0.0
        for _ in range(days):
            k, s = runner(e, rng, actions)
            n, spent = n + k, spent + s
        rates.append(n / spent)
    return statistics.median(rates)


def profile(env_id: str, days: int) -> str:
    e = gym.make(env_id)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1.0, 1.0, size=(512,) + e.action_space.shape).astype(np.float32)
    _episode_env(e, rng, actions)
    prof = cProfile.Profile()
    for _ in range(days):
        _episode_env(e, rng, actions, prof)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(18)
    return out.getvalue()


def _feed(h: "hashlib._Hash", value: object) -> None:  # noqa: ANN401
    """Hash a nested value byte for byte (arrays: dtype, shape and raw bytes; floats: IEEE bits).

    Zeros are hashed without their sign (``x + 0.0``): the sign of an exact zero from BLAS
    can change with memory alignment from one process to the next, even for the same code.
    """
    if isinstance(value, dict):
        for key in sorted(value):
            h.update(str(key).encode())
            _feed(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(b"[%d" % len(value))
        for item in value:
            _feed(h, item)
    elif isinstance(value, np.ndarray):
        h.update(f"{value.dtype.str}{value.shape}".encode())
        if value.dtype.kind in "fc":
            value = value + value.dtype.type(0)
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (float, np.floating)):
        h.update(np.float64(value + 0.0).tobytes())
    else:
        h.update(repr(value).encode())


def digest(env_id: str, days: int) -> str:
    """SHA-256 of ``days`` seeded days with seeded random actions (see the module docstring)."""
    e = gym.make(env_id)
    h = hashlib.sha256()
    for day in range(days):
        rng = np.random.default_rng(1000 + day)
        obs, info = e.reset(seed=day)
        _feed(h, (obs, info))
        done = False
        while not done:
            obs, reward, terminated, truncated, info = e.step(
                rng.uniform(-1.0, 1.0, e.action_space.shape).astype(np.float32))
            _feed(h, (obs, reward, terminated, truncated, info))
            done = terminated or truncated
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--digest", action="store_true", help="print trajectory digests, no timing")
    args = parser.parse_args()
    if args.digest:
        with threadpool_limits(limits=1):
            for env_id in ("gridroll/D33-v0", "gridroll/T30D2-v0"):
                print(f"{env_id:22s} {digest(env_id, args.days)}")
        return
    with threadpool_limits(limits=1):
        print(f"{'env':22s} {'env.step/s':>11s} {'simulator/s':>12s}  (median of {args.repeats} x {args.days} days)")
        for env_id in ("gridroll/D33-v0", "gridroll/T30D2-v0"):
            rate_env = measure(env_id, args.days, args.repeats, _episode_env)
            rate_sim = measure(env_id, args.days, args.repeats, _episode_sim)
            print(f"{env_id:22s} {rate_env:11.0f} {rate_sim:12.0f}")
        if args.profile:
            for env_id in ("gridroll/D33-v0", "gridroll/T30D2-v0"):
                print(f"\n--- profile of env.step, {env_id} ---")
                print(profile(env_id, args.days))


if __name__ == "__main__":
    main()
