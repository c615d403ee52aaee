"""``gridroll plan``: prints the ADMM run and writes plan.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.cli import main


def test_plan_admm_with_centralized_comparison_writes_plan_json(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan"
    assert main(["plan", "--case", "t30d2", "--method", "admm", "--compare-centralized", "--seed", "1",
                 "--samples", "2", "--max-iter", "4", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "|r|" in text and "gap (ADMM - centralized)" in text and "wrote" in text
    doc = json.loads((out / "plan.json").read_text())
    for key in ("iterations", "gap", "time_s", "objective", "objective_parts", "residuals", "plan"):
        assert key in doc
    assert doc["iterations"] == len(doc["residuals"]) <= 4
    assert isinstance(doc["gap"], float) and doc["time_s"] > 0
    plan = doc["plan"]
    assert len(plan["thermal_r_up_mw"]) == 24 and len(plan["ev_r_up_mw"][0]) == 22
    assert len(plan["boundary_r_up_mw"][0]) == 2
    assert doc["objective"] == pytest.approx(plan["objective"]["total"])


def test_plan_centralized_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--case", "t30d2", "--method", "centralized", "--samples", "2", "--uncertainty", "so",
                 "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "plan.json").read_text())
    assert doc["method"] == "centralized" and doc["gap"] is None and doc["converged"]


def test_plan_rejects_a_distribution_only_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--case", "d33"]) == 2
    assert "T-D case" in capsys.readouterr().err


def test_a_failed_plan_is_a_one_line_error_with_day_stage_and_status(monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The first stage without priced shedding (the old model) on a day whose peak the units cannot
    reach: ``gridroll plan`` names the day, the stage and the status, exits 2, no traceback."""
    from policies.planning import first_stage

    real_build = first_stage.TSOModel.build

    def unpriced(self: first_stage.TSOModel) -> first_stage.TSOPieces:
        pieces = real_build(self)
        pieces.constraints.append(pieces.shed == 0)
        return pieces

    monkeypatch.setattr(first_stage.TSOModel, "build", unpriced)
    assert main(["plan", "--case", "t30d2", "--method", "centralized", "--seed", "9", "--samples", "2",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "gridroll plan: error: t30d2 / cloudy / seed 9: stage centralized_master: status infeasible"
