"""Seed 000's plan-level case study: Cases 1-7 on one day, with the paper's figures beside ours.

| case | EVCS service | uncertainty | requirement | registry name |
|------|--------------|-------------|-------------|---------------|
| 1    | both         | DRO         | ARO         | aro_dro       |
| 2    | DSO only     | DRO         | ARO         | evcs_dso_only |
| 3    | none         | DRO         | ARO         | evcs_none     |
| 4    | both         | DRO         | ARO         | aro_dro (= case 1) |
| 5    | both         | RO          | ARO         | aro_ro        |
| 6    | both         | SO          | ARO         | aro_so        |
| 7    | both         | DRO         | none        | dro_only      |

Every plan is judged by the same yardsticks, whatever model produced it:

* costs: the plan's own objective parts (total, TSO = thermal + reserve + wind + shedding +
  recourse, DSO = total - TSO);
* transmission curtailment and shedding: the plan's reserves against ``M`` fresh day-ahead
  forecast paths of the wind error (:func:`policies.planning.calibration.reserve_shortfalls`:
  the part of the deviation the cleared reserves cannot absorb is shed or curtailed), expected =
  mean of the daily sums over the paths, worst = the largest daily sum (MWh);
* boundary violation: each DSO's recourse at the plan's station reserves under the worst
  case of **case 4's** uncertainty and requirement sets (seed 000 evaluates case 7 the same way),
  ``sum_t (vp_t + vm_t) dt`` summed over the feeders (MWh); worst over the scenario set's
  support (the Wasserstein transport cost set to 0);
* boundary reserves: ``sum_t sum_d R_up/dn`` (MW summed over the hours, MWh);
* ADMM iterations (or C&CG iterations of the centralized solve) and the first-stage wall time.

See docs/math.md §4-§6.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Literal

import numpy as np
import pandas as pd

from env.network import Grid
from policies.planning.admm import solve_admm
from policies.planning.calibration import out_of_sample_errors, reserve_shortfalls
from policies.planning.ccg import DSOModel
from policies.planning.centralized import solve_centralized
from policies.planning.first_stage import FirstStagePlan, PlanningData, PlanningSettings, build_planning_data

__all__ = ["CASES", "PAPER_FIGURES", "PAPER_TIMES_S", "boundary_violation_mwh", "paper_table", "run_cases"]

#: case -> (registry name, PlanningSettings fields)
CASES: dict[int, tuple[str, dict[str, str]]] = {
    1: ("aro_dro", {"uncertainty": "dro", "requirement": "aro", "evcs_service": "both"}),
    2: ("evcs_dso_only", {"uncertainty": "dro", "requirement": "aro", "evcs_service": "dso_only"}),
    3: ("evcs_none", {"uncertainty": "dro", "requirement": "aro", "evcs_service": "none"}),
    4: ("aro_dro", {"uncertainty": "dro", "requirement": "aro", "evcs_service": "both"}),
    5: ("aro_ro", {"uncertainty": "ro", "requirement": "aro", "evcs_service": "both"}),
    6: ("aro_so", {"uncertainty": "so", "requirement": "aro", "evcs_service": "both"}),
    7: ("dro_only", {"uncertainty": "dro", "requirement": "none", "evcs_service": "both"}),
}

#: Seed 000's reported differences (case a minus case b; "%" relative to b), section "Numerical
#: results" (T30D2) and Appendix Tables A1-A4 (T118D10). Its "MW" of curtailment, shedding and
#: violation are daily sums, compared here with our MWh.
PAPER_FIGURES: dict[str, tuple[tuple[str, int, int, float, str], ...]] = {
    "t30d2": (
        ("tso_cost", 1, 2, -19.87, "%"), ("total_cost", 1, 2, -13.95, "%"), ("total_cost", 1, 3, -20.63, "%"),
        ("expected_curtailment_mwh", 1, 2, -22.54, "MW"), ("expected_curtailment_mwh", 1, 3, -31.64, "MW"),
        ("expected_shed_mwh", 1, 2, -8.96, "MW"), ("expected_shed_mwh", 1, 3, -15.02, "MW"),
        ("total_cost", 4, 5, -10.11, "%"),
        ("worst_curtailment_mwh", 4, 6, -11.75, "MW"), ("worst_shed_mwh", 4, 6, -8.93, "MW"),
        ("worst_boundary_violation_mwh", 4, 6, -50.12, "%"),
        ("boundary_r_up_mwh", 7, 4, 11.59, "MW"), ("boundary_r_dn_mwh", 7, 4, 9.28, "MW"),
        ("worst_boundary_violation_mwh", 7, 4, 10.89, "MW"),
    ),
    "t118d10": (
        ("tso_cost", 1, 2, -6.66, "%"), ("total_cost", 1, 2, -60280.0, "$"), ("total_cost", 1, 3, -89344.0, "$"),
        ("expected_curtailment_mwh", 1, 2, -132.20, "MW"), ("expected_curtailment_mwh", 1, 3, -159.45, "MW"),
        ("expected_shed_mwh", 1, 2, -12.37, "MW"), ("expected_shed_mwh", 1, 3, -21.39, "MW"),
        ("total_cost", 4, 5, -13.09, "%"),
        ("worst_curtailment_mwh", 4, 6, -45.18, "MW"), ("worst_shed_mwh", 4, 6, -25.84, "MW"),
        ("worst_boundary_violation_mwh", 4, 6, -49.26, "%"),
    ),
}

#: Seed 000's total computation time (no parallel DSOs; s) and ADMM iterations.
PAPER_TIMES_S = {"t30d2": (1480.0, 17), "t118d10": (9613.0, 20)}


def boundary_violation_mwh(plan: FirstStagePlan, reference: PlanningData) -> float:
    """``sum_d sum_t (vp + vm) dt`` of every DSO's recourse at the plan's station reserves, in the
    worst case of ``reference``'s uncertainty and requirement sets (transport cost 0; see the
    module docstring)."""
    total, start = 0.0, 0
    T = reference.n_periods
    for k, fd in enumerate(reference.feeders):
        sl = slice(start, start + fd.n_station)
        start += fd.n_station
        model = DSOModel(reference, k)
        x = np.vstack([plan.ev_r_up_mw[:, sl].T, plan.ev_r_dn_mw[:, sl].T])
        worst = max(model.worst_cases(x, 0.0), key=lambda r: r.value)
        _, y = model.rec.solve_blocks(np.arange(T), x, worst.u, worst.xi, primal=True)
        cols = model.rec.cols
        total += float((y[:, cols["vp"]] + y[:, cols["vm"]]).sum() * reference.dt_h)
    return total


def _plan(data: PlanningData, method: str) -> tuple[FirstStagePlan, int, bool, float]:
    t0 = time.perf_counter()
    if method == "admm":
        res = solve_admm(data)
        return res.plan, res.iterations, res.converged, time.perf_counter() - t0
    cen = solve_centralized(data)
    return cen.plan, cen.iterations, cen.trace.gap <= data.settings.ccg_tol, time.perf_counter() - t0


def run_cases(grid: Grid, day_ahead: object, settings: PlanningSettings | None = None,
              method: Literal["admm", "centralized"] = "admm", cases: tuple[int, ...] = tuple(CASES),
              n_paths: int = 200, progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Plan every case of ``cases`` on one day and judge the plans alike (see the module doc).

    Case 4 reuses case 1's plan (the same model). Returns one row per case.
    """
    base = settings or PlanningSettings()
    unknown = set(cases) - set(CASES)
    if unknown:
        raise ValueError(f"run_cases: unknown cases {sorted(unknown)}; known: {sorted(CASES)}")
    reference = build_planning_data(grid, day_ahead, replace(base, **CASES[4][1]))
    errors = out_of_sample_errors(day_ahead, reference, n_paths, seed=base.seed)
    solved: dict[tuple[tuple[str, str], ...], dict] = {}
    rows = []
    for case in cases:
        name, fields = CASES[case]
        key = tuple(sorted(fields.items()))
        if key not in solved:
            if progress is not None:
                progress(f"case {case} ({name}): planning by {method}")
            data = build_planning_data(grid, day_ahead, replace(base, **fields))
            plan, iterations, converged, t_s = _plan(data, method)
            short, surplus = reserve_shortfalls(plan, data, errors)
            shed_d, curt_d = short.sum(axis=1) * data.dt_h, surplus.sum(axis=1) * data.dt_h
            obj = plan.objective
            solved[key] = {
                "total_cost": obj["total"], "tso_cost": obj["tso"], "dso_cost": obj["total"] - obj["tso"],
                "expected_curtailment_mwh": float(curt_d.mean()), "worst_curtailment_mwh": float(curt_d.max()),
                "expected_shed_mwh": float(shed_d.mean()), "worst_shed_mwh": float(shed_d.max()),
                "boundary_r_up_mwh": float(plan.boundary_r_up_mw.sum() * data.dt_h),
                "boundary_r_dn_mwh": float(plan.boundary_r_dn_mw.sum() * data.dt_h),
                "worst_boundary_violation_mwh": boundary_violation_mwh(plan, reference),
                "iterations": iterations, "converged": converged, "first_stage_s": t_s}
        rows.append({"case": case, "policy": name, **fields, "method": method, **solved[key]})
    return pd.DataFrame(rows)


def paper_table(case_name: str, table: pd.DataFrame) -> pd.DataFrame:
    """Our differences next to seed 000's, with whether the paper's direction holds."""
    rows = table.set_index("case")
    out = []
    for kpi, a, b, paper, unit in PAPER_FIGURES.get(case_name, ()):
        if a not in rows.index or b not in rows.index:
            continue
        va, vb = float(rows.at[a, kpi]), float(rows.at[b, kpi])
        diff = va - vb
        ours = 100.0 * diff / abs(vb) if unit == "%" and vb else diff
        holds = (diff < -1e-9) if paper < 0 else (diff > 1e-9)
        out.append({"figure": kpi, "case": a, "vs": b, "ours_a": va, "ours_b": vb,
                    "ours": ours, "paper": paper, "unit": "MWh" if unit == "MW" else unit,
                    "direction": "holds" if holds else "fails"})
    return pd.DataFrame(out)
