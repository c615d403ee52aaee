"""Expected user errors of the CLI end in one line on stderr and exit code 2; ``run --out``
never silently replaces another run's results; resume repairs a corrupted step file; the
sweep's lock does not need ``fcntl``; ``run`` reports a bound like ``compare`` (issue 12, items 5, 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from controller.cli import main
from controller.experiments import RunStore, SweepConfig, run_sweep

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--case", "d33", "--policy", "heuristic", "--regime", "sunny", "--days", "1", "--dt-minutes", "60",
        "--no-reactive", "--no-plots"]


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("gridroll ") and ": error: " in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_run_negative_seed_is_a_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["run", *FAST, "--seed", "-5", "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "--seed must be >= 0, got -5")


def test_scenarios_negative_seed_and_bad_csv_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["scenarios", "--seed", "-5"]) == 2
    _one_line_error(capsys, "--seed must be >= 0, got -5")
    assert main(["scenarios", "--csv", str(tmp_path / "missing" / "day.csv")]) == 2
    _one_line_error(capsys, "missing")


def test_run_out_is_a_file_is_a_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "a_file"
    target.write_text("x")
    assert main(["run", *FAST, "--out", str(target)]) == 2
    _one_line_error(capsys, "is a file, not a folder")


def test_run_out_unwritable_is_a_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("x")
    assert main(["run", *FAST, "--out", str(tmp_path / "a_file" / "sub")]) == 2   # under a file: not creatable
    _one_line_error(capsys, "is not a writable folder")


def test_run_out_with_other_results_needs_overwrite(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["run", *FAST, "--seed", "1", "--out", str(out)]) == 0
    first = pd.read_parquet(out / "summary.parquet")
    # the same arguments again (the README's main-job line run twice): fine, the same day again
    assert main(["run", *FAST, "--seed", "1", "--out", str(out)]) == 0
    again = pd.read_parquet(out / "summary.parquet")
    assert first.total_cost.tolist() == again.total_cost.tolist()
    capsys.readouterr()
    # other arguments: refused before running, the earlier results untouched
    before = (out / "summary.parquet").stat().st_mtime_ns
    assert main(["run", *FAST, "--seed", "2", "--out", str(out)]) == 2
    _one_line_error(capsys, "holds earlier results", "--overwrite")
    assert (out / "summary.parquet").stat().st_mtime_ns == before
    assert json.loads((out / "run.json").read_text())["seed"] == 1
    # with --overwrite: replaced
    assert main(["run", *FAST, "--seed", "2", "--out", str(out), "--overwrite"]) == 0
    assert pd.read_parquet(out / "summary.parquet").seed.tolist() == [2]
    assert json.loads((out / "run.json").read_text())["seed"] == 2


def test_run_into_a_compare_folder_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert main(["run", *FAST, "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, "config.json")


def test_compare_unknown_baseline_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["compare", "--case", "d33", "--policies", "heuristic", "--regimes", "sunny", "--days", "1",
                 "--baseline", "foo", "--out", str(tmp_path / "c"), "--no-plots", "--no-progress"]) == 2
    _one_line_error(capsys, "--baseline: unknown policy 'foo'")


def test_compare_out_is_a_file_is_a_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert main(["compare", "--policies", "heuristic", "--days", "1", "--out", str(tmp_path / "f")]) == 2
    _one_line_error(capsys, "is a file, not a folder")


def test_console_script_exit_code_and_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "controller.cli", "run", *FAST, "--seed", "-5",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "gridroll run: error: --seed must be >= 0, got -5"


def test_resume_reruns_a_corrupted_step_file_and_names_it(tmp_path: Path) -> None:
    config = SweepConfig(case="d33", policies=("heuristic",), regimes=("sunny",), days=2, seed=5, dt_minutes=60,
                         reactive=False)
    first = run_sweep(config, tmp_path, progress=False).summary
    store = RunStore(tmp_path)
    steps_path = store.paths(config.specs()[1])[1]
    steps_path.write_bytes(steps_path.read_bytes()[:200])        # truncated: summary intact
    with pytest.warns(UserWarning, match=rf"{steps_path.name} is missing or unreadable.*running heuristic/sunny/day1"):
        result = run_sweep(config, tmp_path, progress=False)
    assert (result.n_ran, result.n_reused) == (1, 1)
    assert result.summary.total_cost.tolist() == first.total_cost.tolist()
    assert len(store.steps(config.specs())) == 2 * 24 * 2


def test_unreadable_step_file_is_named_when_collecting(tmp_path: Path) -> None:
    config = SweepConfig(case="d33", policies=("heuristic",), regimes=("sunny",), days=1, seed=5, dt_minutes=60,
                         reactive=False)
    run_sweep(config, tmp_path, progress=False)
    store = RunStore(tmp_path)
    steps_path = store.paths(config.specs()[0])[1]
    steps_path.write_bytes(b"not parquet")
    with pytest.raises(ValueError, match=rf"{steps_path.name} is unreadable"):
        store.steps(config.specs())


def test_experiments_imports_without_fcntl() -> None:
    """compare must import where ``fcntl`` does not exist (Windows): the lock is ``filelock``'s."""
    code = "import sys; sys.modules['fcntl'] = None; import controller.experiments"
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr


def test_sweep_config_fields_are_type_checked() -> None:
    with pytest.raises(ValueError, match=r"SweepConfig\.reactive: must be a bool"):
        SweepConfig(case="d33", policies=("heuristic",), regimes=("sunny",), days=1, reactive="no")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"SweepConfig\.n_scenarios: must be an integer"):
        SweepConfig(case="d33", policies=("heuristic",), regimes=("sunny",), days=1, n_scenarios=2.5)  # type: ignore[arg-type]


def test_run_reports_the_bound_as_total_cost_like_compare(capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:
    out = tmp_path / "pi"
    args = ["run", "--case", "d33", "--policy", "perfect_information", "--regime", "sunny", "--seed", "3",
            "--days", "1", "--dt-minutes", "60", "--no-reactive", "--no-plots", "--out", str(out)]
    assert main(args) == 0
    summary = pd.read_parquet(out / "summary.parquet")
    steps = pd.read_parquet(out / "steps.parquet")
    executed = steps[steps.area == "system"].cost_total.sum()
    row = summary.iloc[0]
    assert row.executed_cost == pytest.approx(executed)
    assert row.bound_model != "" and row.total_cost != pytest.approx(executed)
    assert row.total_cost <= row.executed_cost        # a lower bound of what the plan cost
    assert "clairvoyant bound" in capsys.readouterr().out
