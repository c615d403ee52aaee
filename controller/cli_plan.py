"""``gridroll plan``: seed 000's day-ahead TSO-DSO plan (DRO + ARO, C&CG, ADMM) for a T-D case.

Example::

    gridroll plan --case t30d2 --method admm --compare-centralized --seed 1 --out runs/plan

prints the ADMM iterations (rho, primal/dual residuals and tolerances, objective, DSO C&CG gaps),
the gap to the centralized solve of the same model, the times, and writes ``DIR/plan.json``
(``iterations``, ``gap``, ``time_s``, ``objective``, the cost parts, the per-iteration residuals
and the plan arrays of :class:`policies.planning.first_stage.FirstStagePlan`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    from scenarios.regimes import regime_names

    p = sub.add_parser("plan", help="day-ahead TSO-DSO plan (DRO + ARO by C&CG, ADMM coordination)")
    p.add_argument("--case", default="t30d2", help="a T-D case: t30d2 or t118d10")
    p.add_argument("--method", default="admm", choices=("admm", "centralized"))
    p.add_argument("--compare-centralized", action="store_true",
                   help="with --method admm: also solve the centralized model and report the gap")
    p.add_argument("--regime", default="cloudy", help=f"one of: {', '.join(regime_names())}")
    p.add_argument("--seed", type=int, default=1, help="day seed (the day-ahead information)")
    p.add_argument("--uncertainty", default="dro", choices=("dro", "ro", "so"))
    p.add_argument("--requirement", default="aro", choices=("aro", "none"))
    p.add_argument("--service", default="both", choices=("both", "dso_only", "none"), help="EVCS service")
    p.add_argument("--samples", type=int, default=10, help="N sampled forecast-error paths")
    p.add_argument("--rho", type=float, default=None, help="ADMM penalty (default 15 for <= 2 feeders, else 20)")
    p.add_argument("--max-iter", type=int, default=100, help="ADMM iteration limit")
    p.add_argument("--subproblem", default="enumerate", choices=("enumerate", "milp"),
                   help="C&CG worst-case oracle of the DSOs")
    p.add_argument("--quiet", action="store_true", help="print a summary instead of every iteration")
    p.add_argument("--study", action="store_true",
                   help="seed 000's Cases 1-7 on this day (EVCS service, uncertainty and requirement variants), "
                        "judged alike and printed next to the paper's figures; ignores --uncertainty, "
                        "--requirement, --service")
    p.add_argument("--out", default=None, help="directory for plan.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Solve and print; a failed solve ends with one line on stderr (day, stage, status) and code 2."""
    from policies.planning import PlanningError

    try:
        return _run(args)
    except PlanningError as exc:
        import sys

        print(f"gridroll plan: error: {args.case} / {args.regime} / seed {args.seed}: stage {exc.stage}: "
              f"status {exc.status}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import env
    from policies.planning.admm import solve_admm
    from policies.planning.centralized import solve_centralized
    from policies.planning.first_stage import PlanningSettings, build_planning_data
    from scenarios import sample_day

    if args.case not in env.case_names():
        raise ValueError(f"unknown case {args.case!r}; choose one of {list(env.case_names())}")
    grid = env.load_case(args.case)
    if not grid.is_td:
        raise ValueError(f"case {args.case} has no transmission network; plan needs a T-D case (t30d2, t118d10)")
    if args.study:
        return _study(args, grid)
    settings = PlanningSettings(uncertainty=args.uncertainty, requirement=args.requirement,
                                evcs_service=args.service, n_samples=args.samples, admm_rho=args.rho,
                                admm_max_iter=args.max_iter, subproblem=args.subproblem, seed=args.seed)
    t0 = time.perf_counter()
    day = sample_day(grid, args.regime, args.seed)
    data = build_planning_data(grid, day.day_ahead, settings)
    t_data = time.perf_counter() - t0
    print(f"{args.case} / {args.regime} / seed {args.seed}: {data.n_periods} periods of "
          f"{settings.period_minutes} min, {data.n_feeder} feeders, uncertainty {settings.uncertainty}, "
          f"requirement {settings.requirement}, EVCS service {settings.evcs_service} (data {t_data:.1f} s)")
    out: dict[str, Any] = {"case": args.case, "regime": args.regime, "seed": args.seed, "method": args.method}
    residuals: list[dict[str, Any]] = []
    gap = None
    if args.method == "admm":
        if not args.quiet:
            print(f"{'it':>3} {'rho':>7} {'|r|':>9} {'eps_pri':>8} {'|s|':>9} {'eps_dual':>8} "
                  f"{'objective':>12} {'max DSO gap':>11} {'s':>6}")

        def show(r: Any) -> None:
            residuals.append({"k": r.k, "rho": r.rho, "r_norm": r.r_norm, "s_norm": r.s_norm,
                              "eps_pri": r.eps_pri, "eps_dual": r.eps_dual, "objective": r.objective,
                              "dso_gaps": list(r.dso_gaps), "time_s": r.time_s})
            if not args.quiet:
                print(f"{r.k:3d} {r.rho:7.2f} {r.r_norm:9.4f} {r.eps_pri:8.4f} {r.s_norm:9.4f} {r.eps_dual:8.4f} "
                      f"{r.objective:12.2f} {max(r.dso_gaps):11.2e} {r.time_s:6.2f}")

        res = solve_admm(data, callback=show)
        plan, iterations, elapsed = res.plan, res.iterations, res.time_s
        status = "converged" if res.converged else "NOT converged (iteration limit)"
        print(f"ADMM {status} in {iterations} iterations, {elapsed:.1f} s; "
              f"final |r| = {res.history[-1].r_norm:.4f} MW, |s| = {res.history[-1].s_norm:.4f} MW")
        out["converged"] = res.converged
    else:
        res_c = solve_centralized(data)
        plan, iterations, elapsed = res_c.plan, res_c.iterations, res_c.time_s
        print(f"centralized C&CG: {iterations} iterations, gap {res_c.trace.gap:.2e}, {elapsed:.1f} s")
        out["converged"] = res_c.trace.gap <= settings.ccg_tol
    objective = float(plan.objective["total"])
    if args.method == "admm" and args.compare_centralized:
        cen = solve_centralized(data)
        gap = (objective - cen.objective) / abs(cen.objective)
        out["centralized"] = {"objective": cen.objective, "time_s": cen.time_s, "iterations": cen.iterations,
                              "ccg_gap": cen.trace.gap}
        print(f"centralized: objective {cen.objective:.2f} in {cen.time_s:.1f} s ({cen.iterations} C&CG iterations)")
        print(f"gap (ADMM - centralized) / centralized = {100 * gap:+.3f} %")
    parts = ", ".join(f"{k} {v:.1f}" for k, v in plan.objective.items() if not k.startswith("dso_f"))
    print(f"objective {objective:.2f} ({parts})")
    print(f"expected transmission load shedding {plan.shed_expected_mwh:.2f} MWh "
          f"(planned {plan.info['shed_planned_mwh']:.2f} MWh)")
    print(f"time {elapsed:.1f} s")
    out.update({"iterations": iterations, "gap": gap, "time_s": elapsed, "objective": objective,
                "objective_parts": plan.objective, "residuals": residuals, "plan": plan.to_dict()})
    if args.out:
        path = Path(args.out)
        path.mkdir(parents=True, exist_ok=True)
        (path / "plan.json").write_text(json.dumps(out, indent=1, default=_json_default))
        print(f"wrote {path / 'plan.json'}")
    return 0


def _study(args: argparse.Namespace, grid: Any) -> int:
    """``--study``: Cases 1-7 on one day (:mod:`policies.planning.study`), printed next to the paper."""
    import pandas as pd

    from policies.planning.first_stage import PlanningSettings
    from policies.planning.study import PAPER_TIMES_S, paper_table, run_cases
    from scenarios import sample_day

    settings = PlanningSettings(n_samples=args.samples, admm_rho=args.rho, admm_max_iter=args.max_iter,
                                subproblem=args.subproblem, seed=args.seed)
    day = sample_day(grid, args.regime, args.seed)
    print(f"{args.case} / {args.regime} / seed {args.seed}: seed 000's Cases 1-7, first stage by {args.method}")
    table = run_cases(grid, day.day_ahead, settings, method=args.method, progress=lambda m: print("  " + m, flush=True))
    cols = ["case", "policy", "total_cost", "tso_cost", "dso_cost", "expected_curtailment_mwh", "worst_curtailment_mwh",
            "expected_shed_mwh", "worst_shed_mwh", "boundary_r_up_mwh", "boundary_r_dn_mwh",
            "worst_boundary_violation_mwh", "iterations", "converged", "first_stage_s"]
    paper = paper_table(args.case, table)
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format", "{:,.2f}".format):
        print(table[cols].to_string(index=False))
        if len(paper):
            print("\nseed 000's figures (case minus vs; % relative to vs; the paper's MW of curtailment, "
                  "shedding and violation are daily sums, our MWh):")
            print(paper.to_string(index=False))
    t_paper, it_paper = PAPER_TIMES_S.get(args.case, (float("nan"), 0))
    solved = table.drop_duplicates("policy")
    print(f"first stage: {solved['first_stage_s'].sum():.0f} s for {len(solved)} plans "
          f"(median {solved['first_stage_s'].median():.1f} s, {args.method}, {solved['iterations'].max()} iterations at most); "
          f"paper: {t_paper:.0f} s per plan, {it_paper} ADMM iterations")
    if args.out:
        path = Path(args.out)
        path.mkdir(parents=True, exist_ok=True)
        table.to_csv(path / "cases.csv", index=False)
        paper.to_csv(path / "cases_paper.csv", index=False)
        print(f"wrote {path / 'cases.csv'} and {path / 'cases_paper.csv'}")
    return 0


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
