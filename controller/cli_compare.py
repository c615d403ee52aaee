"""``gridroll compare`` and ``gridroll stress``: policies x regimes x days on common random numbers.

Both run the resumable sweep of :mod:`controller.experiments`, write
``summary.parquet`` (one row per policy x regime x day), ``steps.parquet``,
``comparison.parquet`` (the per-regime table) and PNG plots, and print a table
per regime: KPI means, paired 95% CIs of each policy's cost minus the
baseline's, regret against the perfect-information bound and the gap closed, and
the fallbacks (days/steps a policy played something other than its rule, SOCP
fallbacks), with a warning line per policy that fell back.
``stress`` runs the stress regimes and adds the worst day of each KPI.
"""

from __future__ import annotations

import argparse

import pandas as pd

COMPARE_REGIMES = ("sunny", "cloudy", "highly_fluctuating")
STRESS_REGIMES = ("wind_ramp", "ev_surge", "high_penetration")
_PRINT_KPIS = ("curtailment_mwh", "load_shed_mwh", "ev_unmet_mwh", "voltage_violation_puh", "losses_mwh",
               "max_line_loading", "boundary_violation_mw", "decision_ms_mean")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``compare`` and ``stress``."""
    p = sub.add_parser("compare", help="compare policies on the same sampled days (paired statistics, regret)")
    _add_arguments(p, COMPARE_REGIMES, "runs/compare")
    p.set_defaults(func=compare, worst=False)
    p = sub.add_parser("stress", help="compare policies under the stress regimes, with worst-day KPIs")
    _add_arguments(p, STRESS_REGIMES, "runs/stress")
    p.set_defaults(func=compare, worst=True)


def _add_arguments(p: argparse.ArgumentParser, regimes: tuple[str, ...], out: str) -> None:
    p.add_argument("--case", default="d33", help="case name (see `gridroll cases`)")
    p.add_argument("--policies", default=None,
                   help="comma-separated policy names (default: every registered policy the case supports); "
                        "sb3:FOLDER is a trained agent saved by policies.sb3.save_agent (docs/rl.md)")
    p.add_argument("--regimes", default=",".join(regimes), help="comma-separated regime names")
    p.add_argument("--days", type=int, default=20, help="days per regime; day k uses seed + k for every policy")
    p.add_argument("--seed", type=int, default=1, help="seed of day 0")
    p.add_argument("--dt-minutes", type=int, default=15, choices=(5, 15, 60))
    p.add_argument("--out", default=out, help="output folder; an interrupted sweep resumes from it")
    p.add_argument("--workers", type=int, default=1, help="parallel workers (processes or Ray actors)")
    p.add_argument("--backend", default="local", choices=("local", "ray"))
    p.add_argument("--ray-address", default=None, help="connect to this Ray cluster (else a local Ray)")
    p.add_argument("--no-reactive", action="store_true", help="keep the compensators at 0 (no SOCP)")
    p.add_argument("--scenarios", type=int, default=10, help="SOCP scenarios S after reduction")
    p.add_argument("--solver", default="ECOS", choices=("ECOS", "CLARABEL"), help="SOCP solver")
    p.add_argument("--reactive-method", default="socp", choices=("socp", "fast"),
                   help="reactive control: the scenario SOCP, or the same objective on the AC flow by "
                        "sequential QPs (5-10x faster per step)")
    p.add_argument("--baseline", default="heuristic", help="policy the paired differences are taken against")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence level of the paired intervals")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from controller.cli_run import add_profile_arguments

    add_profile_arguments(p)


def _policies(text: str | None, case: str) -> tuple[str, ...]:
    """``--policies``, or every registered policy that runs on ``case``."""
    if text is not None:
        return _names(text, "--policies")
    import env
    from policies import policy_names, policy_supports

    grid = env.load_case(case)
    return tuple(n for n in policy_names() if policy_supports(n, grid))


def split_agents(names: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """``names`` with every ``sb3:FOLDER`` replaced by its agent's name
    (:func:`policies.sb3.agent_label`), and the ``(name, folder)`` pairs of those agents.

    Raises:
        ValueError: a folder that is not an agent folder.
    """
    from policies.sb3 import AGENT_PREFIX, agent_label

    out, agents = [], []
    for name in names:
        if name.startswith(AGENT_PREFIX):
            folder = name[len(AGENT_PREFIX):]
            label = agent_label(folder)
            agents.append((label, folder))
            name = label
        out.append(name)
    return tuple(out), tuple(agents)


def _names(text: str, flag: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise ValueError(f"{flag} is empty")
    return names


def compare(args: argparse.Namespace) -> int:
    """Run (or resume) the sweep, write the tables and plots, print the comparison."""
    from controller.experiments import RunStore, SweepConfig, run_sweep
    from controller.io import write_parquet_atomic
    from controller.stats import COMPARE_WORST_KPIS, KEY_KPIS, WORST_KPIS, compare_policies, find_bound_policy

    from pathlib import Path

    from policies import policy_names

    if not 0.0 < args.confidence < 1.0:
        raise ValueError(f"--confidence must be in (0, 1), got {args.confidence}")
    if args.baseline not in policy_names():
        raise ValueError(f"--baseline: unknown policy {args.baseline!r}; known: {', '.join(policy_names())}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file, not a folder")
    policies, agents = split_agents(_policies(args.policies, args.case))
    config = SweepConfig(case=args.case, policies=policies,
                         regimes=_names(args.regimes, "--regimes"), days=args.days, seed=args.seed,
                         dt_minutes=args.dt_minutes, reactive=not args.no_reactive, n_scenarios=args.scenarios,
                         solver=args.solver, reactive_method=args.reactive_method, agents=agents,
                         profiles=args.profiles, profile_date=args.date, ev_sessions=args.ev_sessions)
    result = run_sweep(config, args.out, workers=args.workers, backend=args.backend, progress=not args.no_progress,
                       ray_address=args.ray_address)
    out = result.out
    table = compare_policies(result.summary, baseline=args.baseline, kpis=KEY_KPIS,
                             worst=WORST_KPIS if args.worst else COMPARE_WORST_KPIS, confidence=args.confidence)
    written = [write_parquet_atomic(result.summary, out / "summary.parquet"),
               write_parquet_atomic(table, out / "comparison.parquet")]
    written.append(write_parquet_atomic(RunStore(out).steps(config.specs()), out / "steps.parquet"))
    print(f"\n{result.n_ran} runs done, {result.n_reused} reused from {out} ({result.wall_s:.1f} s)")
    print_comparison(table, result.summary, baseline=args.baseline, confidence=args.confidence)
    if not args.no_plots:
        from controller.compare_report import write_comparison_plots

        written += write_comparison_plots(result.summary, table, out, baseline=args.baseline,
                                          bound_policy=find_bound_policy(result.summary))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _ci(mean: float, lo: float, hi: float) -> str:
    if pd.isna(mean):
        return ""
    if pd.isna(lo):
        return f"{mean:+,.1f}"
    return f"{mean:+,.1f} [{lo:+,.1f}, {hi:+,.1f}]"


def format_regime_table(table: pd.DataFrame, regime: str, baseline: str
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The printed tables of one regime: costs (one row per policy, CIs as text) and KPIs
    (one row per KPI, one column per policy; ``(mean)`` and ``(worst)`` rows for the KPIs whose
    worst day the table has)."""
    rows = table[table.regime == regime].set_index("policy")
    costs = pd.DataFrame(index=rows.index)
    costs["days"] = rows.n_days
    costs["cost"] = rows.total_cost.map("{:,.1f}".format)
    diff = f"diff_vs_{baseline}"
    if diff in rows:
        costs[f"cost - {baseline} [CI]"] = [_ci(*v) for v in rows[[diff, f"{diff}_lo", f"{diff}_hi"]].to_numpy()]
    if "regret" in rows:
        costs["regret [CI]"] = [_ci(*v) for v in rows[["regret", "regret_lo", "regret_hi"]].to_numpy()]
        costs["gap closed"] = rows.gap_closed.map(lambda g: "" if pd.isna(g) else f"{g:.0%}")
    if "dispatch_gap_closed" in rows:
        costs["dispatch regret [CI]"] = [_ci(*v) for v in
                                         rows[["dispatch_regret", "dispatch_regret_lo", "dispatch_regret_hi"]].to_numpy()]
        costs["dispatch gap closed"] = rows.dispatch_gap_closed.map(lambda g: "" if pd.isna(g) else f"{g:.0%}")
    if "worst_total_cost" in rows:
        costs["worst cost"] = rows.worst_total_cost.map("{:,.1f}".format)
    if "fallback_steps" in rows:   # the policy's own fallbacks: days with one / steps
        costs["fallbacks d/steps"] = [("" if pd.isna(d) else f"{int(d)}/{int(st)}")
                                      for d, st in rows[["fallback_days", "fallback_steps"]].to_numpy()]
    if "socp_fallbacks" in rows:
        costs["SOCP fallbacks"] = rows.socp_fallbacks.map(lambda v: "" if pd.isna(v) else f"{int(v)}")
    kpis = {}
    for kpi in _PRINT_KPIS:
        if kpi in rows:
            has_worst = f"worst_{kpi}" in rows
            kpis[f"{kpi} (mean)" if has_worst else kpi] = rows[kpi]
            if has_worst:
                kpis[f"{kpi} (worst)"] = rows[f"worst_{kpi}"]
    return costs, pd.DataFrame(kpis).T


def print_comparison(table: pd.DataFrame, summary: pd.DataFrame, *, baseline: str, confidence: float) -> None:
    """Print the cost and KPI tables of each regime, and which model the bound comes from."""
    from controller.stats import DISPATCH_YARDSTICK, fallback_warnings, find_bound_policy

    currency = str(summary["currency"].iloc[0]) if "currency" in summary else ""
    print(f"\nMeans over days ({currency} for costs); [CI] = {confidence:.0%} paired t-interval over days"
          + "; (worst) = max over days")
    if baseline not in set(summary.policy):
        print(f"(baseline {baseline!r} not among the policies: no paired differences)")
    bound = find_bound_policy(summary)
    if bound is not None:
        models = ", ".join(sorted(set(summary.loc[summary.policy == bound, "bound_model"])))
        print(f"regret and gap closed are against {bound}'s clairvoyant bound (model: {models}); its cost is the "
              "bound (its executed cost is summary.parquet's executed_cost). The bound is a lower bound only if "
              "that model relaxes the env's physics, so per-day regret can be negative.")
    if DISPATCH_YARDSTICK in set(summary.policy):
        print(f"dispatch regret and dispatch gap closed are against {DISPATCH_YARDSTICK}: the clairvoyant active "
              "dispatch played with the loop's own reactive control (the rest of the regret is reactive control).")
    with pd.option_context("display.width", 250, "display.max_columns", 60, "display.float_format", "{:.4g}".format):
        for regime in list(dict.fromkeys(table.regime)):
            costs, kpis = format_regime_table(table, regime, baseline)
            print(f"\n== {regime} ==")
            print(costs.to_string())
            print(kpis.to_string())
    warnings = fallback_warnings(summary)
    if warnings:
        print()
        print("\n".join(warnings))
