"""The gridroll command line: cases table, scenarios plot, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.cli import cases_table, main


def test_cases_table_lists_every_case_with_its_devices() -> None:
    table = cases_table()
    from env.cases import case_names

    assert list(table.index) == list(case_names())      # the SimBench cases too when the extra is installed
    assert list(table.index)[:6] == ["d33", "d69", "t30d2", "t30d5", "t118d10", "t14d2"]
    d33 = table.loc["d33"]
    assert (d33.buses, d33.branches, d33.feeders, d33.evcs, d33.compensators) == (33, 32, 1, 11, 3)
    assert d33.pv_mw == pytest.approx(0.9) and d33.storage_mwh == pytest.approx(1.2)
    t30 = table.loc["t30d2"]
    assert (t30.feeders, t30.thermal_units, t30.evcs) == (2, 3, 22)
    assert t30.buses == 30 + 2 * 33
    assert table.loc["t118d10"].feeders == 10
    t14 = table.loc["t14d2"]
    assert (t14.buses, t14.feeders, t14.thermal_units) == (14 + 2 * 13, 2, 4)


def test_cases_command_prints_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cases"]) == 0
    out = capsys.readouterr().out
    assert "t118d10" in out and "evcs" in out


def test_scenarios_command_writes_plot_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png, csv = tmp_path / "day.png", tmp_path / "day.csv"
    assert main(["scenarios", "--case", "d33", "--regime", "cloudy", "--seed", "1",
                 "--plot", str(png), "--csv", str(csv)]) == 0
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert len(csv.read_text().splitlines()) == 97  # header + 96 steps
    assert "EV sessions" in capsys.readouterr().out


def test_unknown_regime_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios", "--regime", "foggy"]) == 2
    err = capsys.readouterr().err
    assert "unknown regime 'foggy'" in err and "highly_fluctuating" in err
