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
    for table in (steps, summary):   # every table says what it is a result of
        assert set(table.case) == {"d33"} and set(table.policy) == {"heuristic"} and set(table.regime) == {"sunny"}
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


def test_run_title_names_the_run_and_all_its_days() -> None:
    from controller.report import run_title

    steps = pd.DataFrame({"case": "d33", "policy": "mpc", "regime": "sunny", "day": [0, 0, 1, 1],
                          "seed": [3, 3, 4, 4], "time_h": [0.0, 1.0, 0.0, 1.0]})
    assert run_title(steps, "dispatch") == "dispatch: d33 / mpc / sunny, days 0-1 (2 days), seeds 3-4"
    assert run_title(steps[steps.day == 1], "dispatch") == "dispatch: d33 / mpc / sunny, day 1, seed 4"


def test_help_shows_defaults_and_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    for command in ("cases", "scenarios", "run", "compare", "stress", "plan", "flex", "p2p"):
        assert f"    {command}" in top
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: d33)" in text and "--days DAYS days (default: 1)" in text and "(default: ECOS)" in text


def test_highs_banner_is_kept_out_of_stdout() -> None:
    import subprocess
    import sys

    code = ("from policies.solver_quiet import quiet_highs; quiet_highs(); import highspy; "
            "highspy.Highs(); print('done')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "done\n"


def test_fast_reactive_controller_prints_no_banner() -> None:
    """The fast reactive controller builds its own Highs object: no banner reaches stdout."""
    import subprocess
    import sys

    code = ("import env; from controller.reactive import ReactiveCompensator; "
            "ReactiveCompensator(env.load_case('d33'), method='fast'); print('done')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "done\n"


def test_run_with_the_fast_reactive_method(tmp_path: Path) -> None:
    """``--reactive-method fast`` plays the day with the fast controller (its solver shows in the
    feeder rows) and records the choice in run.json; the default stays the SOCP."""
    out = tmp_path / "fast"
    assert main(["run", "--case", "d33", "--policy", "heuristic", "--regime", "cloudy", "--seed", "8330",
                 "--dt-minutes", "60", "--scenarios", "3", "--reactive-method", "fast", "--no-plots",
                 "--out", str(out)]) == 0
    feeder = pd.read_parquet(out / "steps.parquet").query("area == 'f0'")
    assert set(feeder.socp_solver) <= {"fast_ac", "CLARABEL"} and "fast_ac" in set(feeder.socp_solver)
    assert '"reactive_method": "fast"' in (out / "run.json").read_text()
