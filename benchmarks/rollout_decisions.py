"""Rollout decisions and decision times on fixed days: record them, or compare with a record.

Run: ``python benchmarks/rollout_decisions.py --save before.npz`` on one commit, then
``python benchmarks/rollout_decisions.py --compare before.npz`` on another: per case, how many
steps' dispatches differ (and by how much), the day's cost, and the median decision time of
both runs. The days are closed-loop days of :class:`policies.rollout.RolloutPolicy` (``M = 8``,
reactive control off, common random numbers: the same day seed and policy seed), cut after
``--steps`` steps on the slow cases. BLAS is pinned to one thread.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import env  # noqa: E402,F401  (registers the ids)
from policies.rollout import RolloutPolicy  # noqa: E402

#: case -> steps played (None: the whole day)
DEFAULT_CASES = {"d33": None, "t30d2": 32, "t118d10": 4}


def play(case: str, seed: int, n_steps: int | None, n_sims: int = 8) -> dict[str, np.ndarray]:
    """The rollout's dispatches (steps, n_action), decision times (ms) and step costs."""
    e = gym.make("gridroll/TDGrid-v0", case=case, regime="cloudy").unwrapped
    e.reset(seed=seed, options={"scenario_seed": seed})
    policy = RolloutPolicy(e.grid, n_sims=n_sims)
    policy.reset(seed)
    flats, ms, costs = [], [], []
    done, t = False, 0
    while not done and (n_steps is None or t < n_steps):
        obs = e.observation_typed
        t0 = time.perf_counter()
        d = policy.act(obs, obs.forecast)
        ms.append((time.perf_counter() - t0) * 1e3)
        flats.append(np.concatenate([np.atleast_1d(np.asarray(getattr(d, k), dtype=float)).ravel()
                                     for k in ("ev_p_mw", "storage_p_mw", "der_curtail_frac", "thermal_p_mw",
                                               "thermal_r_up_mw", "thermal_r_dn_mw")]))
        _, _, term, trunc, _ = e.step_dispatch(d)
        costs.append(e.last_outcome.cost["total"])
        done, t = term or trunc, t + 1
    return {"dispatch": np.array(flats), "ms": np.array(ms), "cost": np.array(costs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--save", help="write the record here (.npz)")
    ap.add_argument("--compare", help="compare with this record (.npz)")
    ap.add_argument("--seed", type=int, default=8140)
    ap.add_argument("--cases", nargs="*", default=list(DEFAULT_CASES))
    args = ap.parse_args()
    threadpool_limits(1)
    old = dict(np.load(args.compare)) if args.compare else {}
    rec: dict[str, np.ndarray] = {}
    print(f"load average {os.getloadavg()[0]:.1f}; day {args.seed}, rollout M = 8, reactive off")
    for case in args.cases:
        r = play(case, args.seed, DEFAULT_CASES.get(case))
        for k, v in r.items():
            rec[f"{case}/{k}"] = v
        line = (f"{case:8s} {len(r['ms']):3d} steps  cost {r['cost'].sum():13,.2f}  "
                f"decision median {np.median(r['ms']):8.1f} ms")
        if f"{case}/dispatch" in old:
            d_old, d_new = old[f"{case}/dispatch"], r["dispatch"]
            n = min(len(d_old), len(d_new))
            diff = np.abs(d_old[:n] - d_new[:n]).max(axis=1)
            line += (f"  | before: cost {old[f'{case}/cost'][:n].sum():13,.2f}  decision median "
                     f"{np.median(old[f'{case}/ms']):8.1f} ms  | steps differing (>1e-9 MW) {int((diff > 1e-9).sum())}"
                     f" of {n}, largest {diff.max():.3g}")
        print(line, flush=True)
    if args.save:
        np.savez(args.save, **rec)
        print(f"wrote {args.save}")


if __name__ == "__main__":
    main()
