"""``gridroll flex``: the 24 h flexibility demand and each source's margins (seed 002 Fig. 9, Table 5)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from scenarios.regimes import regime_names

    p = sub.add_parser("flex", help="p-box flexibility demand and supply margins of one day (T-D cases)")
    p.add_argument("--case", default="t14d2", help="a T-D case (see `gridroll cases`)")
    p.add_argument("--regime", default="cloudy", help=f"one of: {', '.join(regime_names())}")
    p.add_argument("--seed", type=int, default=1, help="day seed (same seed, same day)")
    p.add_argument("--beta", type=float, default=0.95, help="confidence level of the truncation (seed: 0.95)")
    p.add_argument("--samples", type=int, default=400, help="forecast error samples per step")
    p.add_argument("--policy", default="heuristic", help="policy that plays the day (the operating point)")
    p.add_argument("--plot", default=None, help="PNG path for the figure")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from controller.flex_report import flex_day, plot_flex

    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if not 0 < args.beta < 1:
        raise ValueError(f"--beta must be in (0, 1), got {args.beta}")
    if args.samples < 20:
        raise ValueError(f"--samples must be >= 20, got {args.samples}")
    day = flex_day(args.case, args.seed, args.regime, args.beta, args.samples, args.policy)
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format", "{:.2f}".format):
        print(f"{args.case} / {args.regime} / seed {args.seed}: hourly flexibility (MW; down < 0)")
        print(day.frame.to_string(index=False))
        print("\nTable 5 (max up / down by source, MW): seed 002 vs ours")
        print(day.table5.to_string())
        print(f"\nflexibility shortfall hours: {day.margins.shortfall_steps}")
        print("\nover-estimation of the demand against held-out realized days (MW summed over the day):")
        print(day.over_estimation.to_string())
    if args.plot:
        print(f"wrote {plot_flex(day, args.plot)}")
    return 0
