"""Measured profiles as the realized day (scenarios.measured, gridroll run --profiles --date)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import env
from controller.cli import main
from scenarios.measured import day_of, profile_day, read_ev_sessions, read_profiles, wind_speed_for_output
from scenarios.profiles import power_curve_pu


def _profiles(path: Path, freq: str = "15min", days: int = 2) -> pd.DataFrame:
    n = {"15min": 96, "h": 24}[freq] * days
    t = np.arange(n) / (n / days) * 24.0                         # hours since the first midnight
    frame = pd.DataFrame({
        "timestamp": pd.date_range("2024-06-01", periods=n, freq=freq),
        "load": 0.55 + 0.35 * np.sin(np.pi * (t % 24) / 24) ** 2 + 0.05 * (t >= 24),
        "pv": 0.8 * np.clip(np.sin(np.pi * ((t % 24) - 6) / 12), 0, 1),
        "wind": np.full(n, 0.35),
    })
    frame.to_csv(path, index=False)
    return frame


def test_csv_profile_day_reproduces_its_loads_in_steps(tmp_path: Path) -> None:
    frame = _profiles(tmp_path / "p.csv", freq="h")
    out = tmp_path / "run"
    assert main(["run", "--case", "d33", "--profiles", str(tmp_path / "p.csv"), "--date", "2024-06-02",
                 "--dt-minutes", "60", "--no-reactive", "--no-plots", "--out", str(out)]) == 0
    system = pd.read_parquet(out / "steps.parquet").query("area == 'system'")
    peak = env.load_case("d33").feeders[0].load.p_mw.sum()
    np.testing.assert_allclose(system.load_mw.to_numpy(), peak * frame.load.to_numpy()[24:], rtol=1e-12)


def test_profile_day_keeps_measurements_and_forecast_errors_grow_with_lead(tmp_path: Path) -> None:
    _profiles(tmp_path / "p.csv")
    profiles = read_profiles(tmp_path / "p.csv")
    grid = env.load_case("d33")
    measured = day_of(profiles, "2024-06-01", 15)
    near, far = [], []
    for seed in range(8500, 8530):
        day = profile_day(grid, profiles, "2024-06-01", "cloudy", seed, 15)
        np.testing.assert_allclose(day.load_pu, np.repeat(measured[["load"]].to_numpy(), day.load_pu.shape[1], 1))
        np.testing.assert_allclose(day.pv_pu[:, 0], measured.pv.to_numpy())
        np.testing.assert_allclose(day.wind_pu[:, 0], measured.wind.to_numpy())
        forecast = day.forecast(10).load_pu                      # steps 11..95
        err = np.abs(forecast - day.load_pu[11:]) / day.load_pu[11:]
        near.append(err[0].mean())
        far.append(err[40].mean())
    assert 0 < np.mean(near) < 0.5 * np.mean(far)


def test_wind_speed_inverts_the_power_curve() -> None:
    pu = np.array([0.0, 0.1, 0.5, 0.99, 1.0])
    np.testing.assert_allclose(power_curve_pu(wind_speed_for_output(pu)), pu, atol=1e-12)


def test_uncovered_day_and_bad_columns_are_clear_errors(tmp_path: Path) -> None:
    _profiles(tmp_path / "p.csv")
    profiles = read_profiles(tmp_path / "p.csv")
    with pytest.raises(ValueError, match="do not cover 2024-06-05"):
        day_of(profiles, "2024-06-05", 15)
    (tmp_path / "bad.csv").write_text("timestamp,temperature\n2024-06-01 00:00,3\n")
    with pytest.raises(ValueError, match="no column named load"):
        read_profiles(tmp_path / "bad.csv")
    assert main(["run", "--profiles", str(tmp_path / "p.csv"), "--no-plots", "--out", str(tmp_path / "x")]) == 2


def _sessions(path: Path, rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame([{"station": s, "arrival": a, "departure": d, "e_arrival_kwh": 20.0, "e_request_kwh": 40.0,
                           "e_capacity_kwh": 66.0, "p_max_kw": 7.0} for s, a, d in rows])
    frame.to_csv(path, index=False)
    return frame


def test_ev_sessions_from_a_file_replace_the_sampled_ones(tmp_path: Path) -> None:
    _profiles(tmp_path / "p.csv")
    _sessions(tmp_path / "ev.csv", [("f0_evcs6", "2024-06-02 07:10", "2024-06-02 16:50"),
                                    ("f0_evcs6", "2024-06-02 08:00", "2024-06-02 08:05"),
                                    ("f0_evcs32", "2024-06-02 22:00", "2024-06-03 06:00"),
                                    ("f0_evcs9", "2024-06-01 12:00", "2024-06-01 13:00")])     # another day: left out
    out = tmp_path / "run"
    assert main(["run", "--case", "d33", "--profiles", str(tmp_path / "p.csv"), "--date", "2024-06-02",
                 "--ev-sessions", str(tmp_path / "ev.csv"), "--no-reactive", "--no-plots", "--out", str(out)]) == 0
    day = profile_day(env.load_case("d33"), read_profiles(tmp_path / "p.csv"), "2024-06-02", "cloudy", 1, 15,
                      ev_sessions=read_ev_sessions(tmp_path / "ev.csv"))
    assert day.ev.station.tolist() == [0, 0, 10]
    assert day.ev.arrival_step.tolist() == [28, 32, 88]          # floor(07:10 / 15 min) = 28
    assert day.ev.departure_step.tolist() == [68, 33, 120]       # ceil(16:50 / 15 min) = 68; at least one step
    assert day.ev.efficiency.tolist() == [0.9] * 3 and day.ev_balked.sum() == 0
    steps = pd.read_parquet(out / "steps.parquet").query("area == 'system'")
    expected = day.ev_connected.sum(axis=1)
    np.testing.assert_array_equal(steps.ev_connected.to_numpy(), expected)
    assert expected.max() == 2


def test_ev_sessions_errors(tmp_path: Path) -> None:
    _profiles(tmp_path / "p.csv")
    profiles = read_profiles(tmp_path / "p.csv")
    grid = env.load_case("d33")
    _sessions(tmp_path / "bad.csv", [("ev99", "2024-06-02 07:00", "2024-06-02 09:00")])
    with pytest.raises(ValueError, match="unknown stations"):
        profile_day(grid, profiles, "2024-06-02", "cloudy", 1, ev_sessions=read_ev_sessions(tmp_path / "bad.csv"))
    _sessions(tmp_path / "full.csv", [("f0_evcs6", "2024-06-02 07:00", "2024-06-02 09:00")] * 11)   # 10 ports
    with pytest.raises(ValueError, match="more EVs connected than ports"):
        profile_day(grid, profiles, "2024-06-02", "cloudy", 1, ev_sessions=read_ev_sessions(tmp_path / "full.csv"))
    (tmp_path / "cols.csv").write_text("station,arrival\nf0_evcs6,2024-06-02 07:00\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_ev_sessions(tmp_path / "cols.csv")
    assert main(["run", "--ev-sessions", str(tmp_path / "full.csv"), "--no-plots", "--out", str(tmp_path / "x")]) == 2
