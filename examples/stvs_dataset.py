"""Label Monte Carlo operating points of t14d2 by ANDES time-domain simulation (docs/stvs.md).

    nice -n 5 python examples/stvs_dataset.py --n 500 --workers 2 --seed 8400 --out out/stvs_t14d2.npz

Each sample: the surrogate's features (StvsOperatingPoint.features), TVCI, VDSI and the wall
time of its simulation. A point whose pre-fault power flow fails is recorded with ok = 0.
"""

from __future__ import annotations

import argparse
import os
import time
from multiprocessing import Pool

import numpy as np


def _label(args: tuple[int, int]) -> tuple[np.ndarray, int, float, float, int]:
    from env.cases import load_case
    from env.stvs.andes_sim import FaultSpec, simulate
    from env.stvs.sampling import sample_operating_point
    from env.stvs.surrogate import feature_vector

    seed, i = args
    grid = load_case("t14d2")
    op = sample_operating_point(grid, np.random.default_rng([seed, i]))
    x = feature_vector(grid, op)
    try:
        run = simulate(op, FaultSpec())
    except RuntimeError:
        return x, -1, np.nan, np.nan, 0
    return x, run.tvci, run.vdsi, run.wall_s, 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=8400)
    ap.add_argument("--out", default="out/stvs_t14d2.npz")
    a = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    t0 = time.perf_counter()
    with Pool(a.workers) as pool:
        rows = pool.map(_label, [(a.seed, i) for i in range(a.n)], chunksize=4)
    x, tv, vd, wall, ok = (np.array(c) for c in zip(*rows))
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    np.savez(a.out, x=x, tvci=tv, vdsi=vd, wall_s=wall, ok=ok, seed=a.seed,
             elapsed_s=time.perf_counter() - t0, workers=a.workers)
    print(f"{a.n} samples ({int(ok.sum())} ok, {int((tv == 0).sum())} unstable) in "
          f"{time.perf_counter() - t0:.0f} s with {a.workers} workers; {np.nanmean(wall):.2f} s per simulation")


if __name__ == "__main__":
    main()
