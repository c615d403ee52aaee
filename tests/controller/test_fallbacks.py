"""Fallbacks are never silent: a policy's fallback_log reaches steps, summary and compare's table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from controller.cli import main
from policies.base import new_fallbacks
from policies.mpc import MPCPolicy


class _Logged:
    fallback_log: list[tuple[int, str]]


def test_new_fallbacks_reads_only_the_new_entries_and_survives_a_reset() -> None:
    p = _Logged()
    p.fallback_log = [(0, "a"), (1, "b")]
    assert new_fallbacks(p, 0) == ("a; b", 2)
    p.fallback_log.append((2, "c"))
    p.fallback_log.append((2, "c"))
    assert new_fallbacks(p, 2) == ("c", 4)            # one reason once per step
    assert new_fallbacks(p, 4) == ("", 4)
    p.fallback_log = [(0, "d")]                       # reset replaced the log
    assert new_fallbacks(p, 4) == ("d", 1)
    assert new_fallbacks(object(), 0) == ("", 0)      # a policy without a log never falls back


def test_forced_solver_failures_show_in_steps_summary_and_compare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    calls = {"n": 0}
    real_solve = MPCPolicy._solve

    def fail_every_third(self: MPCPolicy, window: Any) -> tuple[str, str]:
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            return "", "HIGHS: infeasible (forced)"
        return real_solve(self, window)

    monkeypatch.setattr(MPCPolicy, "_solve", fail_every_third)
    out = tmp_path / "cmp"
    assert main(["compare", "--case", "d33", "--policies", "heuristic,mpc", "--regimes", "cloudy", "--days", "1",
                 "--seed", "2", "--no-reactive", "--no-progress", "--no-plots", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = pd.read_parquet(out / "summary.parquet").set_index("policy")
    assert summary.at["mpc", "fallback_steps"] == 32 and summary.at["heuristic", "fallback_steps"] == 0
    assert summary.at["mpc", "fallback_reason"] == "HIGHS: infeasible (forced)"
    assert summary.at["heuristic", "fallback_reason"] == ""
    steps = pd.read_parquet(out / "steps.parquet")
    mpc = steps[(steps.policy == "mpc") & (steps.area == "system")].set_index("step")
    failed = mpc.index[mpc.policy_fallback != ""].tolist()
    assert failed == list(range(2, 96, 3)) and (mpc.policy_fallback.loc[failed] == "HIGHS: infeasible (forced)").all()
    table = pd.read_parquet(out / "comparison.parquet").set_index("policy")
    assert table.at["mpc", "fallback_days"] == 1 and table.at["mpc", "fallback_steps"] == 32
    assert "fallbacks d/steps" in printed
    mpc_line = next(line for line in printed.splitlines() if line.startswith("mpc "))
    heuristic_line = next(line for line in printed.splitlines() if line.startswith("heuristic "))
    assert " 1/32" in mpc_line and " 0/0" in heuristic_line
    assert ("WARNING: mpc (cloudy) fell back on 1 of 1 days, 32 steps; first reason: HIGHS: infeasible (forced)"
            in printed)
    assert "WARNING: heuristic" not in printed


def test_run_prints_the_fallback_steps_and_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(MPCPolicy, "_solve", lambda self, window: ("", "CLARABEL: solver error (forced)"))
    assert main(["run", "--case", "d33", "--policy", "mpc", "--days", "1", "--no-reactive", "--no-plots",
                 "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "fallback_steps" in printed
    assert "WARNING: day 0: the policy fell back on 96 steps; first reason: CLARABEL: solver error (forced)" in printed
    summary = pd.read_parquet(tmp_path / "summary.parquet")
    assert summary.fallback_steps.tolist() == [96]
