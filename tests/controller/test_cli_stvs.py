"""``gridroll stvs``: a time-domain run at one step of a t14d2 day (docs/stvs.md)."""

import pytest

from controller.cli import main


def test_stvs_rejects_a_step_outside_the_day(capsys):
    assert main(["stvs", "--case", "t14d2", "--seed", "8430", "--step", "500"]) == 2
    assert "outside the day" in capsys.readouterr().err


def test_stvs_rejects_a_feeder_case(capsys):
    assert main(["stvs", "--case", "d33", "--seed", "8430"]) == 2
    assert "T-D case" in capsys.readouterr().err


def test_stvs_runs_and_plots(tmp_path, capsys):
    pytest.importorskip("andes")
    png = tmp_path / "v.png"
    assert main(["stvs", "--case", "t14d2", "--seed", "8401", "--step", "48", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "time-domain TVCI 1" in out and "surrogate: TVCI 1" in out
    assert png.stat().st_size > 10_000
