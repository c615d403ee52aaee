"""Train the numpy STVS surrogate on the labelled data set and write the shipped weights.

    python examples/stvs_train.py --data out/stvs_t14d2.npz --seed 8401 --weights env/stvs/data/surrogate_t14d2.npz
    python examples/stvs_train.py --band --data out/stvs_band_t14d2.npz out/stvs_fill_t14d2.npz --seed 8441 \
        --weights env/stvs/data/surrogate_band_t14d2.npz --test-out tests/env/data/stvs_band_t14d2_test.npz

``--band``: the stress case's surrogate (docs/stvs.md "Stress case"): the VDSI it learns is the
band VDSI of the stress data sets (threshold 0.05, all buses), the T renewables per bus.
Several ``--data`` files are pooled.

Split 6:2:2 (seed 002 §2.2); the L2 weight is chosen on the validation split; the test split
gives the Table 4 figures (TVCI misclassifications, VDSI absolute and relative error).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from env.stvs.indices import EPS_BAND, EPS_DEVIATION
from env.stvs.surrogate import StvsSurrogate, split_indices, table4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=["out/stvs_t14d2.npz"])
    ap.add_argument("--seed", type=int, default=8401)
    ap.add_argument("--weights", default="env/stvs/data/surrogate_t14d2.npz")
    ap.add_argument("--test-out", default="tests/env/data/stvs_t14d2_test.npz", help="the held-out split")
    ap.add_argument("--band", action="store_true", help="learn the band VDSI of a --stress data set")
    a = ap.parse_args()
    files = [np.load(f) for f in a.data]
    key = "vdsi_band" if a.band else "vdsi"
    x, tv, vd, ok = (np.concatenate([d[k] for d in files]) for k in ("x", "tvci", key, "ok"))
    ok = ok == 1
    x, tv, vd = x[ok], tv[ok], vd[ok]
    eps = EPS_BAND if a.band else EPS_DEVIATION
    tr, va, te = split_indices(len(x), a.seed)
    t0 = time.perf_counter()
    best = None
    for l2 in (0.1, 1.0, 10.0, 100.0):
        m = StvsSurrogate.fit(x[tr], tv[tr], vd[tr], l2=l2, der_per_bus=a.band, eps=eps)
        p_tv, p_vd = m.predict(x[va])
        score = np.mean(p_tv != tv[va]) + np.abs(p_vd - vd[va]).sum() / max(np.abs(vd[va]).sum(), 1e-9)
        if best is None or score < best[0]:
            best = (score, l2, m)
    train_s = time.perf_counter() - t0
    _, l2, m = best
    m.save(a.weights, "t14d2")
    np.savez(a.test_out, x=x[te], tvci=tv[te], vdsi=vd[te])
    t1 = time.perf_counter()
    for row in x[te]:
        m.predict(row)
    eval_ms = (time.perf_counter() - t1) / len(te) * 1e3
    print(f"data: {len(x)} labelled ({int((tv == 0).sum())} unstable); split {len(tr)}/{len(va)}/{len(te)}; "
          f"l2 {l2}; training (4 fits) {train_s:.2f} s; {eval_ms:.3f} ms per surrogate evaluation")
    print(table4(m, x[te], tv[te], vd[te]).to_string())


if __name__ == "__main__":
    main()
