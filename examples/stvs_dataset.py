"""Label Monte Carlo operating points of t14d2 by ANDES time-domain simulation (docs/stvs.md).

    nice -n 5 python examples/stvs_dataset.py --n 500 --workers 2 --seed 8400 --out out/stvs_t14d2.npz
    nice -n 5 python examples/stvs_dataset.py --stress --n 300 --workers 1 --seed 8440 --out out/stvs_band_t14d2.npz
    nice -n 5 python examples/stvs_dataset.py --stress --fill --n 300 --workers 1 --seed 8442 --out out/stvs_fill_t14d2.npz
    nice -n 5 python examples/stvs_dataset.py --stress --fill --der-max 200 60 --n 150 --workers 1 --seed 8443 \
        --out out/stvs_wind_t14d2.npz

Each sample: the surrogate's features (StvsOperatingPoint.features), TVCI, VDSI and the wall
time of its simulation, and for the stress case (docs/stvs.md "Stress case") the band VDSI
(the VDSI formula at the 0.05 threshold over all 14 buses), the largest settled post-fault
voltage and the largest pre-fault voltage. ``--stress``: each transmission renewable drawn in
U[0, STRESS_DER_MAX_MW] (``--fill``: they take what the units leave, split at random) and the
features keep them per bus. A point whose pre-fault power
flow fails is recorded with ok = 0.
"""

from __future__ import annotations

import argparse
import os
import time
from multiprocessing import Pool

import numpy as np


STRESS_DER_MAX_MW = 200.0   # per T renewable site: covers the stress days' used output (chosen)


def _label(args: tuple[int, int, bool, bool, tuple[float, ...] | None]) -> tuple[np.ndarray, int, float, float, int, float, float, float]:
    from env.cases import load_case
    from env.stvs.andes_sim import FaultSpec, simulate
    from env.stvs.indices import EPS_BAND, settled_voltage, vdsi
    from env.stvs.sampling import sample_operating_point
    from env.stvs.surrogate import feature_vector

    seed, i, stress, fill, caps = args
    grid = load_case("t14d2")
    der_max = (np.asarray(caps, dtype=float) if caps else np.full(len(grid.transmission.der), STRESS_DER_MAX_MW)
               ) if stress else None
    op = sample_operating_point(grid, np.random.default_rng([seed, i]), der_max_mw=der_max, der_fill=fill)
    x = feature_vector(grid, op, der_per_bus=stress)
    try:
        run = simulate(op, FaultSpec())
    except RuntimeError:
        return x, -1, np.nan, np.nan, 0, np.nan, np.nan, np.nan
    f = run.fault
    band = vdsi(run.t_s, run.v_all_pu, f.t_clear_s, f.t_end_s, eps=EPS_BAND)
    settled = float(settled_voltage(run.t_s, run.v_all_pu, f.t_end_s).max()) if run.tvci else np.nan
    pre = float(run.v_all_pu[run.t_s < f.t_fault_s].max())
    return x, run.tvci, run.vdsi, run.wall_s, 1, band, settled, pre


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=8400)
    ap.add_argument("--out", default="out/stvs_t14d2.npz")
    ap.add_argument("--stress", action="store_true", help="stress sampling, per-bus renewables (module doc)")
    ap.add_argument("--fill", action="store_true", help="with --stress: renewables fill the balance")
    ap.add_argument("--der-max", type=float, nargs="+", default=None,
                    help="with --stress: cap per T renewable (MW, grid order; default STRESS_DER_MAX_MW each)")
    a = ap.parse_args()
    if (a.fill or a.der_max) and not a.stress:
        ap.error("--fill and --der-max need --stress")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    t0 = time.perf_counter()
    with Pool(a.workers) as pool:
        rows = pool.map(_label, [(a.seed, i, a.stress, a.fill, tuple(a.der_max or ())) for i in range(a.n)], chunksize=4)
    x, tv, vd, wall, ok, band, settled, pre = (np.array(c) for c in zip(*rows))
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    np.savez(a.out, x=x, tvci=tv, vdsi=vd, wall_s=wall, ok=ok, seed=a.seed, stress=a.stress, fill=a.fill, vdsi_band=band,
             v_settled_max_pu=settled, v_prefault_max_pu=pre,
             elapsed_s=time.perf_counter() - t0, workers=a.workers)
    print(f"{a.n} samples ({int(ok.sum())} ok, {int((tv == 0).sum())} unstable) in "
          f"{time.perf_counter() - t0:.0f} s with {a.workers} workers; {np.nanmean(wall):.2f} s per simulation")


if __name__ == "__main__":
    main()
