"""``gridroll run``: closed-loop days of one policy on one case, with outputs on disk.

The output folder: ``--out`` is created if needed and must be a writable folder. If it holds
the results of an earlier run (``steps.parquet``, ``summary.parquet``, ``run.json``, or a
compare sweep's ``config.json``), ``run`` replaces them only when the earlier run had the same
arguments (``run.json`` records them: the same days come out again, so the README's main-job
line can be run twice) or with ``--overwrite``; otherwise it stops with an error before
running anything. A policy with a clairvoyant bound (``perfect_information``) reports the
bound as ``total_cost`` and what executing its plan cost as ``executed_cost``, as ``compare``
does.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

RUN_FILE = "run.json"
_RESULT_FILES = ("steps.parquet", "summary.parquet", RUN_FILE, "config.json")
_PLOT_FILES = ("voltage.png", "dispatch.png", "ev_storage.png", "costs.png")

_KPIS = ("total_cost", "executed_cost", "energy_imported_mwh", "ev_charged_mwh", "ev_unmet_mwh", "curtailment_mwh",
         "load_shed_mwh", "voltage_violation_puh", "v_min_pu", "v_max_pu", "losses_mwh", "max_line_loading",
         "boundary_violation_mw", "decision_ms_mean", "socp_ms_mean", "socp_relaxation_gap_max_pu",
         "socp_v_ac_dev_max_pu", "socp_fallbacks", "fallback_steps", "aro_reserve_exceedance_share")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from policies import policy_names
    from scenarios.regimes import regime_names

    p = sub.add_parser("run", help="run the closed loop (policy + reactive SOCP) for some days")
    p.add_argument("--case", default="d33", help="case name (see `gridroll cases`)")
    p.add_argument("--policy", default="heuristic",
                   help=f"one of: {', '.join(policy_names())}; or sb3:FOLDER, a trained agent saved by "
                        "policies.sb3.save_agent (docs/rl.md)")
    p.add_argument("--regime", default="cloudy", help=f"one of: {', '.join(regime_names())}")
    p.add_argument("--seed", type=int, default=1, help="day k uses seed + k")
    p.add_argument("--days", type=int, default=1)
    p.add_argument("--dt-minutes", type=int, default=15, choices=(5, 15, 60))
    p.add_argument("--out", default="runs/demo",
                   help="output folder (parquet tables and PNG plots); earlier results of a run with other "
                        "arguments are replaced only with --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier run with other arguments in --out")
    p.add_argument("--no-reactive", action="store_true", help="keep the compensators at 0 (no SOCP)")
    p.add_argument("--scenarios", type=int, default=10, help="SOCP scenarios S after reduction")
    p.add_argument("--solver", default="ECOS", choices=("ECOS", "CLARABEL"), help="SOCP solver")
    p.add_argument("--reactive-method", default="socp", choices=("socp", "fast"),
                   help="reactive control: the scenario SOCP, or the same objective on the AC flow by "
                        "sequential QPs (5-10x faster per step)")
    p.add_argument("--no-plots", action="store_true")
    add_profile_arguments(p)
    p.set_defaults(func=run)


def add_profile_arguments(p: argparse.ArgumentParser) -> None:
    """``--profiles FILE --date D``: measured days instead of sampled ones (docs/data.md)."""
    p.add_argument("--profiles", default=None,
                   help="CSV or parquet of load / pv / wind per-unit profiles with a timestamp: day k is the "
                        "measured date D + k, forecasts carry the regime's errors (drawn from seed + k)")
    p.add_argument("--date", default=None, help="first day's date (YYYY-MM-DD) in --profiles, or in the case's "
                                                "own profiles (SimBench cases: a date of 2016)")
    p.add_argument("--ev-sessions", default=None,
                   help="CSV or parquet of measured EV sessions (station, arrival, departure, energies, "
                        "p_max_kw) replacing the sampled EVs on the measured days (docs/data.md)")


def profile_env_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The env keywords of ``--profiles`` / ``--date`` (none without them).

    Raises:
        ValueError: one of the two without the other.
    """
    from env.simbench import has_profiles

    if args.profiles is not None and args.date is None:
        raise ValueError("--profiles needs --date (the first day's date)")
    if args.date is None:
        if args.ev_sessions is not None:
            raise ValueError("--ev-sessions needs --date (measured days)")
        return {}
    if args.profiles is None and not has_profiles(args.case):
        raise ValueError(f"--date needs --profiles: case {args.case!r} has no profiles of its own")
    return {**({"profiles": args.profiles} if args.profiles else {}), "profile_date": args.date,
            "profile_first_seed": args.seed, **({"ev_sessions": args.ev_sessions} if args.ev_sessions else {})}


def run(args: argparse.Namespace) -> int:
    import gymnasium as gym
    from tqdm import tqdm

    import env  # noqa: F401  (registers the envs)
    from controller.io import write_parquet_atomic
    from controller.loop import LoopSettings, RollingController
    from controller.reactive import ReactiveSettings
    from policies import make_policy

    from controller.experiments import bound_columns

    if args.days < 1:
        raise ValueError(f"--days must be >= 1, got {args.days}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.scenarios < 1:
        raise ValueError(f"--scenarios must be >= 1, got {args.scenarios}")
    identity = run_identity(args)
    out = prepare_out(Path(args.out), identity, overwrite=args.overwrite)
    environment = gym.make("gridroll/TDGrid-v0", case=args.case, regime=args.regime, dt_minutes=args.dt_minutes,
                           **profile_env_kwargs(args))
    policy = make_policy(args.policy, environment.unwrapped.grid, compensators=not args.no_reactive)
    settings = LoopSettings(reactive=not args.no_reactive, n_scenarios=args.scenarios,
                            n_samples=max(30, args.scenarios), reactive_method=args.reactive_method,
                            socp=ReactiveSettings(solver=args.solver, n_scenarios=args.scenarios))
    controller = RollingController(environment, policy, settings=settings)
    n_steps = environment.unwrapped.n_steps
    steps, summaries = [], []
    with tqdm(total=args.days * n_steps, desc=f"{args.case}/{args.policy}/{args.regime}", unit="step") as bar:
        for day in range(args.days):
            seed = args.seed + day
            result = controller.run_day(seed, on_step=lambda t, n: bar.update(1))
            steps.append(result.steps.assign(case=args.case, policy=policy.name, regime=args.regime,
                                             day=day, seed=seed))
            row = {"case": args.case, "policy": policy.name, "regime": args.regime, "day": day,
                   "seed": seed, **result.summary}
            row.update(bound_columns(policy, f"{policy.name}/{args.regime}/day{day}", row["total_cost"]))
            summaries.append(row)
    steps_df, summary_df = pd.concat(steps, ignore_index=True), pd.DataFrame(summaries)
    write_parquet_atomic(steps_df, out / "steps.parquet")
    write_parquet_atomic(summary_df, out / "summary.parquet")
    print_summary(summary_df)
    written = [out / "steps.parquet", out / "summary.parquet"]
    if not args.no_plots:
        from controller.report import write_run_plots

        written += write_run_plots(steps_df, summary_df, out)
    else:                                   # no stale plots of an earlier run next to these tables
        for name in _PLOT_FILES:
            (out / name).unlink(missing_ok=True)
    _write_json_atomic(out / RUN_FILE, identity)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def run_identity(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments that determine a run's results (stored in ``run.json``)."""
    return {"case": args.case, "policy": args.policy, "regime": args.regime, "seed": args.seed, "days": args.days,
            "dt_minutes": args.dt_minutes, "reactive": not args.no_reactive, "scenarios": args.scenarios,
            "solver": args.solver,
            **({"reactive_method": args.reactive_method} if args.reactive_method != "socp" else {}),
            **({"profiles": args.profiles} if args.profiles else {}), **({"date": args.date} if args.date else {}),
            **({"ev_sessions": args.ev_sessions} if args.ev_sessions else {})}


def prepare_out(out: Path, identity: dict[str, Any], *, overwrite: bool) -> Path:
    """Create ``out`` and check it can take this run's results (see the module docstring).

    Raises:
        ValueError: ``out`` is a file or not writable, or holds earlier results of a run with
            other arguments and ``overwrite`` is false.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"--out {out} is not a writable folder ({exc.strerror or exc})") from None
    earlier = [name for name in _RESULT_FILES if (out / name).exists()]
    if not earlier or overwrite:
        return out
    try:
        same = json.loads((out / RUN_FILE).read_text()) == identity
    except (OSError, ValueError):
        same = False
    if not same:
        raise ValueError(f"{out} holds earlier results ({', '.join(earlier)}) of a run with other arguments; "
                         "pass --overwrite to replace them, or choose another --out")
    return out


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def print_summary(summary: pd.DataFrame) -> None:
    """Print the KPIs of the run (one column per day, and the mean); for a policy with a
    clairvoyant bound, ``total_cost`` is the bound and ``executed_cost`` is printed too."""
    models = sorted({m for m in summary.get("bound_model", pd.Series(dtype=str)) if m})
    kpis = [k for k in _KPIS if k in summary and (k != "executed_cost" or models)]
    table = summary.set_index("day")[kpis].T
    if len(summary) > 1:
        table["mean"] = table.mean(axis=1)
    currency = summary["currency"].iloc[0]
    print(f"\nKPIs ({currency} for costs; one column per day)")
    if models:
        print(f"total_cost is the clairvoyant bound (model: {', '.join(models)}); executed_cost is what "
              "executing the policy's plan cost in the env")
    with pd.option_context("display.float_format", "{:,.4g}".format, "display.width", 160):
        print(table.to_string())
    if "fallback_steps" in summary:
        for _, row in summary[summary.fallback_steps > 0].iterrows():
            print(f"WARNING: day {row['day']}: the policy fell back on {int(row['fallback_steps'])} steps; "
                  f"first reason: {row['fallback_reason']}")
