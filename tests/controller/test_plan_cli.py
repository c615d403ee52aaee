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
