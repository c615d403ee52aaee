"""``gridroll run``: closed-loop days of one policy on one case, with outputs on disk."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

_KPIS = ("total_cost", "energy_imported_mwh", "ev_charged_mwh", "ev_unmet_mwh", "curtailment_mwh",
         "load_shed_mwh", "voltage_violation_puh", "v_min_pu", "v_max_pu", "losses_mwh", "max_line_loading",
         "boundary_violation_mw", "decision_ms_mean", "socp_ms_mean", "socp_relaxation_gap_max_pu",
         "socp_v_ac_dev_max_pu", "socp_fallbacks", "fallback_steps", "aro_reserve_exceedance_share")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from policies import policy_names
    from scenarios.regimes import regime_names

    p = sub.add_parser("run", help="run the closed loop (policy + reactive SOCP) for some days")
    p.add_argument("--case", default="d33", help="case name (see `gridroll cases`)")
    p.add_argument("--policy", default="heuristic", help=f"one of: {', '.join(policy_names())}")
    p.add_argument("--regime", default="cloudy", help=f"one of: {', '.join(regime_names())}")
    p.add_argument("--seed", type=int, default=1, help="day k uses seed + k")
    p.add_argument("--days", type=int, default=1)
    p.add_argument("--dt-minutes", type=int, default=15, choices=(5, 15, 60))
    p.add_argument("--out", default="runs/demo", help="output folder (parquet tables and PNG plots)")
    p.add_argument("--no-reactive", action="store_true", help="keep the compensators at 0 (no SOCP)")
    p.add_argument("--scenarios", type=int, default=10, help="SOCP scenarios S after reduction")
    p.add_argument("--solver", default="ECOS", choices=("ECOS", "CLARABEL"), help="SOCP solver")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import gymnasium as gym
    from tqdm import tqdm

    import env  # noqa: F401  (registers the envs)
    from controller.io import write_parquet_atomic
    from controller.loop import LoopSettings, RollingController
    from controller.reactive import ReactiveSettings
    from policies import make_policy

    if args.days < 1:
        raise ValueError(f"--days must be >= 1, got {args.days}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    environment = gym.make("gridroll/TDGrid-v0", case=args.case, regime=args.regime, dt_minutes=args.dt_minutes)
    policy = make_policy(args.policy, environment.unwrapped.grid, compensators=not args.no_reactive)
    settings = LoopSettings(reactive=not args.no_reactive, n_scenarios=args.scenarios,
                            n_samples=max(30, args.scenarios), socp=ReactiveSettings(solver=args.solver,
                                                                                   n_scenarios=args.scenarios))
    controller = RollingController(environment, policy, settings=settings)
    n_steps = environment.unwrapped.n_steps
    steps, summaries = [], []
    with tqdm(total=args.days * n_steps, desc=f"{args.case}/{args.policy}/{args.regime}", unit="step") as bar:
        for day in range(args.days):
            seed = args.seed + day
            result = controller.run_day(seed, on_step=lambda t, n: bar.update(1))
            steps.append(result.steps.assign(day=day, seed=seed))
            summaries.append({"case": args.case, "policy": policy.name, "regime": args.regime, "day": day,
                              "seed": seed, **result.summary})
    steps_df, summary_df = pd.concat(steps, ignore_index=True), pd.DataFrame(summaries)
    write_parquet_atomic(steps_df, out / "steps.parquet")
    write_parquet_atomic(summary_df, out / "summary.parquet")
    print_summary(summary_df)
    written = [out / "steps.parquet", out / "summary.parquet"]
    if not args.no_plots:
        from controller.report import write_run_plots

        written += write_run_plots(steps_df, summary_df, out)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def print_summary(summary: pd.DataFrame) -> None:
    """Print the KPIs of the run (one column per day, and the mean)."""
    kpis = [k for k in _KPIS if k in summary]
    table = summary.set_index("day")[kpis].T
    if len(summary) > 1:
        table["mean"] = table.mean(axis=1)
    currency = summary["currency"].iloc[0]
    print(f"\nKPIs ({currency} for costs; one column per day)")
    with pd.option_context("display.float_format", "{:,.4g}".format, "display.width", 160):
        print(table.to_string())
    if "fallback_steps" in summary:
        for _, row in summary[summary.fallback_steps > 0].iterrows():
            print(f"WARNING: day {row['day']}: the policy fell back on {int(row['fallback_steps'])} steps; "
                  f"first reason: {row['fallback_reason']}")
