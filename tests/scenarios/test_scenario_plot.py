"""plot_day writes a PNG."""

from __future__ import annotations

from pathlib import Path

from scenarios import Layout, sample_day
from scenarios.plot import forecast_step, plot_day


def test_plot_day_writes_png(td: Layout, tmp_path: Path) -> None:
    sc = sample_day(td, "wind_ramp", 0)
    out = plot_day(sc, 13.0, tmp_path / "day.png", n_fan=10, seed=1)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert forecast_step(sc, 0) == -1 and forecast_step(sc, 24) == sc.n_steps - 2 and forecast_step(sc, 12) == 47
