"""``gridroll scenarios``: sample a day, print its summary, draw it."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from scenarios.regimes import regime_names

    p = sub.add_parser("scenarios", help="sample one stochastic day and plot it")
    p.add_argument("--case", default="d33", help="case name (see `gridroll cases`)")
    p.add_argument("--regime", default="cloudy", help=f"one of: {', '.join(regime_names())}")
    p.add_argument("--seed", type=int, default=1, help="day seed (same seed, same day)")
    p.add_argument("--dt-minutes", type=int, default=15, choices=(5, 15, 60))
    p.add_argument("--plot", default=None, help="PNG path for the day plot")
    p.add_argument("--forecast-hour", type=float, default=12.0, help="hour of the forecast fan in the plot")
    p.add_argument("--csv", default=None, help="write the tidy day frame (one row per step) to this CSV")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import env
    from scenarios import sample_day

    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    grid = env.load_case(args.case)
    day = sample_day(grid, args.regime, args.seed, dt_minutes=args.dt_minutes)
    frame = day.to_frame()
    print(f"{args.case} / {args.regime} / seed {args.seed}: {len(frame)} steps of {args.dt_minutes} min")
    dt_h = args.dt_minutes / 60.0
    print(f"  load energy {day.load_p_mw.sum() * dt_h:10.2f} MWh   peak {day.load_p_mw.sum(1).max():8.3f} MW")
    print(f"  PV energy   {day.pv_p_mw.sum() * dt_h:10.2f} MWh   wind energy {day.wind_p_mw.sum() * dt_h:8.2f} MWh")
    print(f"  EV sessions {len(day.ev):6d}   peak connected {int(day.ev_connected.sum(1).max())}")
    if args.csv:
        frame.to_csv(args.csv, index=False)
        print(f"  wrote {args.csv}")
    if args.plot:
        from scenarios import plot_day

        path = plot_day(day, args.forecast_hour, args.plot)
        print(f"  wrote {path}")
    return 0
