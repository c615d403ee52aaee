"""gridroll run end to end: tables, plots, KPI print-out, clear errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from controller.cli import main


def test_run_writes_tables_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["run", "--case", "d33", "--policy", "heuristic", "--regime", "sunny", "--seed", "3",
                 "--days", "2", "--scenarios", "3", "--out", str(out)]) == 0
    steps = pd.read_parquet(out / "steps.parquet")
    summary = pd.read_parquet(out / "summary.parquet")
    assert len(summary) == 2 and summary.seed.tolist() == [3, 4] and summary.day.tolist() == [0, 1]
    assert {"policy", "regime", "total_cost", "voltage_violation_puh", "ev_unmet_mwh", "losses_mwh"} <= set(summary)
    assert len(steps) == 2 * 96 * 2  # days x steps x (system + one feeder)
    for day, rows in steps[steps.area == "system"].groupby("day"):
        assert rows.cost_total.sum() == pytest.approx(summary.total_cost[day])
    for name in ("voltage.png", "dispatch.png", "ev_storage.png", "costs.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "total_cost" in printed and "mean" in printed


def test_run_rejects_unknown_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--policy", "greedy", "--no-plots"]) == 2
    assert "unknown policy 'greedy'" in capsys.readouterr().err


def test_run_rejects_unknown_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--case", "ieee13"]) == 2
    assert "unknown case 'ieee13'" in capsys.readouterr().err
