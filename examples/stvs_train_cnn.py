"""Train the seed's CNN STVS surrogate (env/stvs/cnn.py; needs torch) and print Table 4 next to
the numpy surrogate's on the same held-out split.

    python examples/stvs_train_cnn.py --data out/stvs_band_t14d2.npz out/stvs_fill_t14d2.npz \
        out/stvs_wind_t14d2.npz --seed 8441 --weights env/stvs/data/cnn_t14d2.pt \
        --test-out tests/env/data/stvs_cnn_t14d2_test.npz

The data sets are ``examples/stvs_dataset.py`` outputs (ANDES-labelled t14d2 operating points,
features with the T renewables per bus); the labels are the seed's TVCI and VDSI. Split 6:2:2
(seed 002 §2.2); early stopping on the validation split; the test split gives Table 4.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from env.stvs.cnn import StvsCNN
from env.stvs.indices import EPS_DEVIATION
from env.stvs.surrogate import StvsSurrogate, split_indices, table4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--seed", type=int, default=8441)
    ap.add_argument("--weights", default="env/stvs/data/cnn_t14d2.pt")
    ap.add_argument("--test-out", default="tests/env/data/stvs_cnn_t14d2_test.npz", help="the held-out split")
    a = ap.parse_args()
    files = [np.load(f) for f in a.data]
    x, tv, vd, ok = (np.concatenate([d[k] for d in files]) for k in ("x", "tvci", "vdsi", "ok"))
    ok = ok == 1
    x, tv, vd = x[ok], tv[ok].astype(float), vd[ok]
    tr, va, te = split_indices(len(x), a.seed)
    cnn, report = StvsCNN.fit(x[tr], tv[tr], vd[tr], x[va], tv[va], vd[va], seed=a.seed)
    cnn.save(a.weights)
    np.savez(a.test_out, x=x[te], tvci=tv[te], vdsi=vd[te])
    t0 = time.perf_counter()
    for row in x[te]:
        cnn.predict(row)
    eval_ms = (time.perf_counter() - t0) / len(te) * 1e3
    light = StvsSurrogate.fit(x[tr], tv[tr], vd[tr], l2=1.0, der_per_bus=True, eps=EPS_DEVIATION)
    print(f"data: {len(x)} labelled ({int((tv == 0).sum())} unstable); split {len(tr)}/{len(va)}/{len(te)}; "
          f"CNN: {report.epochs} epochs, {report.seconds:.1f} s, best validation loss {report.best_val_loss:.4f}; "
          f"{eval_ms:.3f} ms per evaluation")
    print("CNN\n" + table4(cnn, x[te], tv[te], vd[te]).to_string())
    print("numpy surrogate (same split)\n" + table4(light, x[te], tv[te], vd[te]).to_string())


if __name__ == "__main__":
    main()
