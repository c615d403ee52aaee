"""Seed 000's plan-level Cases 1-7 (policies.planning.study) and ``gridroll plan --study``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import env
import policies.planning.study as study
from controller.cli import main
from policies.planning import DSOModel, PlanningSettings, build_planning_data, solve_centralized
from scenarios import sample_day

SMALL = PlanningSettings(n_samples=2, ev_samples=5, seed=3)


@pytest.fixture(scope="module")
def t30d2_day() -> tuple:
    grid = env.load_case("t30d2")
    return grid, sample_day(grid, "cloudy", 3).day_ahead


def test_cases_are_judged_alike_and_case_4_is_case_1(t30d2_day: tuple) -> None:
    grid, da = t30d2_day
    table = study.run_cases(grid, da, SMALL, method="centralized", cases=(1, 3, 4), n_paths=40).set_index("case")
    assert list(table.index) == [1, 3, 4]
    num = table.select_dtypes("number").drop(columns=["first_stage_s"])
    pd.testing.assert_series_equal(num.loc[1], num.loc[4], check_names=False)
    np.testing.assert_allclose(table["tso_cost"] + table["dso_cost"], table["total_cost"])
    for kind in ("curtailment", "shed"):
        assert (table[f"expected_{kind}_mwh"] <= table[f"worst_{kind}_mwh"] + 1e-9).all()
    assert (table["worst_boundary_violation_mwh"] >= 0).all() and table["converged"].all()
    # case 3: the stations serve nobody, so no boundary reserve is cleared
    assert table.at[3, "boundary_r_up_mwh"] == 0 and table.at[3, "boundary_r_dn_mwh"] == 0
    assert table.at[1, "boundary_r_up_mwh"] > 0
    with pytest.raises(ValueError, match="unknown cases"):
        study.run_cases(grid, da, SMALL, cases=(8,))


def test_boundary_violation_is_read_off_the_worst_case_recourse(t30d2_day: tuple) -> None:
    grid, da = t30d2_day
    data = build_planning_data(grid, da, SMALL)
    plan = solve_centralized(data).plan
    total = study.boundary_violation_mwh(plan, data)
    # rebuild feeder 0's worst case: the primal recourse prices to the oracle's value
    model = DSOModel(data, 0)
    S = data.feeders[0].n_station
    x = np.vstack([plan.ev_r_up_mw[:, :S].T, plan.ev_r_dn_mw[:, :S].T])
    worst = max(model.worst_cases(x, 0.0), key=lambda r: r.value)
    T = data.n_periods
    values, y = model.rec.solve_blocks(np.arange(T), x, worst.u, worst.xi, primal=True)
    assert values.sum() == pytest.approx(worst.value, rel=1e-9)
    assert y @ model.rec.c + model.rec.constant(np.arange(T), worst.xi) == pytest.approx(values, rel=1e-7, abs=1e-6)
    G, h = model.rec.G, model.rec.rhs(np.arange(T), x, worst.u, worst.xi)
    assert (G @ y.T >= h - 1e-6).all() and (y >= -1e-9).all()          # a feasible recourse
    cols = model.rec.cols
    own = float((y[:, cols["vp"]] + y[:, cols["vm"]]).sum() * data.dt_h)
    assert 0 <= own <= total + 1e-9


def test_paper_table_marks_each_direction() -> None:
    rows = []
    for case, total in ((1, 90.0), (2, 100.0), (3, 80.0), (4, 90.0), (5, 100.0), (6, 90.0), (7, 95.0)):
        rows.append({"case": case, "total_cost": total, "tso_cost": total, "expected_curtailment_mwh": 1.0,
                     "expected_shed_mwh": 1.0, "worst_curtailment_mwh": 1.0, "worst_shed_mwh": 1.0,
                     "worst_boundary_violation_mwh": 2.0, "boundary_r_up_mwh": 1.0, "boundary_r_dn_mwh": 1.0})
    paper = study.paper_table("t30d2", pd.DataFrame(rows)).set_index(["figure", "case", "vs"])
    assert paper.at[("total_cost", 1, 2), "ours"] == pytest.approx(-10.0)            # % of case 2
    assert paper.at[("total_cost", 1, 2), "direction"] == "holds"
    assert paper.at[("total_cost", 1, 3), "direction"] == "fails"                    # 90 > 80
    assert paper.at[("total_cost", 4, 5), "direction"] == "holds"
    assert paper.at[("worst_shed_mwh", 4, 6), "direction"] == "fails"                # equal is not a reduction
    assert len(study.paper_table("d33", pd.DataFrame(rows))) == 0


def test_plan_study_cli_prints_the_cases_next_to_the_paper(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    seen = {}

    def fake(grid, day_ahead, settings, method, progress):  # noqa: ANN001, ANN202
        seen.update(method=method, samples=settings.n_samples)
        rows = [{"case": c, "policy": study.CASES[c][0], **study.CASES[c][1], "method": method,
                 "total_cost": 100.0 - c, "tso_cost": 50.0, "dso_cost": 50.0 - c,
                 "expected_curtailment_mwh": 1.0, "worst_curtailment_mwh": 2.0, "expected_shed_mwh": 0.5,
                 "worst_shed_mwh": 1.0, "boundary_r_up_mwh": 3.0, "boundary_r_dn_mwh": 1.0,
                 "worst_boundary_violation_mwh": 0.0, "iterations": 7, "converged": True, "first_stage_s": 1.5}
                for c in study.CASES]
        return pd.DataFrame(rows)

    monkeypatch.setattr(study, "run_cases", fake)
    assert main(["plan", "--case", "t30d2", "--study", "--method", "centralized", "--samples", "3",
                 "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert seen == {"method": "centralized", "samples": 3}
    assert "evcs_dso_only" in text and "seed 000's figures" in text and "-13.95" in text and "1480 s" in text
    assert len(pd.read_csv(tmp_path / "cases.csv")) == 7 and (tmp_path / "cases_paper.csv").exists()
