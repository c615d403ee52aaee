"""The STVS stress case (seed 002 Figure 8) on t14d2: flex_coordinated without / with the STVS terms.

    nice -n 5 python examples/stvs_stress.py --seeds 8402 8403 8400 --plot docs/stvs_stress.png

Regime ``stvs_stress`` (scenarios/regimes.py), hourly days; each schedule's three stress hours
(largest transmission PV output without STVS) simulated in ANDES (fault at bus 4, 0.2 s -> 0.4 s).
Prints, per seed and schedule: cost, the largest pre-fault / settled post-fault / transient
voltage over the 14 transmission buses, TVCI, VDSI, the band VDSI and the feeders' largest
steady-state voltage (docs/stvs.md "Stress case"). The plot is the first seed's.
"""

from __future__ import annotations

import argparse

import pandas as pd

from controller.stvs_stress import compare, plot, summary_row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[8402])
    ap.add_argument("--risk", type=float, default=2000.0, help="stvs_risk_per_h of the STVS-aware schedule")
    ap.add_argument("--deviation", type=float, default=20000.0,
                    help="stvs_deviation_per_h (price per hour of one unit of band VDSI)")
    ap.add_argument("--steps", type=int, default=3, help="stress hours simulated per schedule")
    ap.add_argument("--plot", default=None, help="PNG of both schedules' bus voltages (first seed)")
    a = ap.parse_args()
    rows = []
    for i, seed in enumerate(a.seeds):
        pair = compare(seed, a.risk, a.deviation, n_steps=a.steps)
        rows += [summary_row(seed, s) for s in pair]
        if a.plot and i == 0:
            plot(seed, pair, a.plot)
            print(f"wrote {a.plot}")
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format", "{:.4f}".format):
        print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
