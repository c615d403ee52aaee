"""The DRO-ARO policy on t30d2: plan time, recourse LP time, closed-loop days against the heuristic.

Prints (one BLAS thread, reactive SOCP off):

* the day-ahead plan at the start of a day by ADMM and centrally (wall time, iterations);
* per policy and day seed: total cost, shed MWh, curtailment MWh, boundary violation MWh, the
  day's wall time and (DRO-ARO policies) the median recourse LP time per step and the plans made.

Policies are registry names, optionally with AroDroSettings overrides after a colon, e.g.
``aro_dro:redispatch_price_per_mwh=50`` or ``aro_dro:replan_every_h=4,planner=centralized``.

Run: ``python benchmarks/aro_dro.py [--seeds 1 2 3] [--regime cloudy]
[--policies heuristic aro_dro aro_so] [--no-plan-timing]``.
"""

from __future__ import annotations

import _timing  # noqa: F401  (one BLAS thread; drops this folder from sys.path)

import argparse  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402

import env  # noqa: E402
from controller.loop import LoopSettings, RollingController  # noqa: E402
from policies.planning import PlanningSettings, build_planning_data, solve_admm, solve_centralized  # noqa: E402
from policies import TD_ONLY_POLICIES, make_policy  # noqa: E402
from policies.aro_dro import AroDroSettings  # noqa: E402
from scenarios import sample_day  # noqa: E402

CASE = "t30d2"


def plan_timing(regime: str, seed: int) -> None:
    """Wall time of the day-ahead plan at the start of a day (ADMM and centralized)."""
    grid = env.load_case(CASE)
    t0 = time.perf_counter()
    data = build_planning_data(grid, sample_day(grid, regime, seed).day_ahead, PlanningSettings())
    t_data = time.perf_counter() - t0
    res = solve_admm(data)
    cen = solve_centralized(data)
    print(f"plan day {seed}: data {t_data:.2f} s; ADMM {res.time_s:.1f} s ({res.iterations} it, "
          f"converged {res.converged}); centralized {cen.time_s:.1f} s ({cen.iterations} C&CG it); "
          f"objective gap {100 * (res.objective - cen.objective) / abs(cen.objective):+.2f} %")


def build(spec: str, grid: Any) -> tuple[str, Any]:
    """``name[:key=value,...]`` -> (label, policy)."""
    name, _, opts = spec.partition(":")
    if not opts:
        return name, make_policy(name, grid)
    if name not in TD_ONLY_POLICIES:
        raise SystemExit(f"options only for the DRO-ARO variants, got {spec!r}")
    kw: dict[str, Any] = {}
    for item in opts.split(","):
        key, _, value = item.partition("=")
        kw[key] = value if key == "planner" else (None if value == "none" else float(value))
    return spec, make_policy(name, grid, settings=AroDroSettings.from_kwargs(**kw))


def day(spec: str, regime: str, seed: int) -> None:
    """One closed-loop day of one policy; prints its KPIs."""
    e = gym.make("gridroll/TDGrid-v0", case=CASE, regime=regime)
    label, policy = build(spec, e.unwrapped.grid)
    t0 = time.perf_counter()
    s = RollingController(e, policy, settings=LoopSettings(reactive=False)).run_day(seed).summary
    wall = time.perf_counter() - t0
    extra = ""
    if hasattr(policy, "day_stats"):
        st = policy.day_stats()
        if "aro_solve_ms_median" in st:
            plans = [(r.get("step"), r.get("method"), round(r.get("time_s", 0.0), 1)) for r in policy.plan_log]
            extra = (f"  LP median {st['aro_solve_ms_median']:.1f} ms, max {st['aro_solve_ms_max']:.0f} ms, "
                     f"fallbacks {policy.fallbacks}, plans {plans}")
    print(f"{label:40s} day {seed}: cost {s['total_cost']:9.0f}  shed {s['load_shed_mwh']:6.2f} MWh  "
          f"curt {s['curtailment_mwh']:7.2f} MWh  boundary {s['boundary_violation_mwh']:5.2f} MWh  "
          f"wall {wall:5.1f} s{extra}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--regime", default="cloudy")
    p.add_argument("--policies", nargs="+", default=["heuristic", "aro_dro", "aro_so"])
    p.add_argument("--no-plan-timing", action="store_true")
    args = p.parse_args()
    if not args.no_plan_timing:
        plan_timing(args.regime, args.seeds[0])
    for seed in args.seeds:
        for spec in args.policies:
            day(spec, args.regime, seed)


if __name__ == "__main__":
    main()
