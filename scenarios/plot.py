"""A PNG overview of a sampled day and of the forecast fan at one hour (matplotlib, Agg canvas).

Uses ``matplotlib.figure.Figure`` with the Agg canvas directly (no pyplot, no global
backend switch), so it is safe in headless runs and worker processes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from scenarios.day import Scenario


def forecast_step(scenario: Scenario, forecast_hour: float) -> int:
    """The last observed step when forecasting at ``forecast_hour``: ``round(hour * 60 / dt) - 1``
    (everything before that hour is known), clipped to [-1, T - 2]."""
    if not 0 <= forecast_hour <= 24:
        raise ValueError(f"forecast_hour must be in [0, 24], got {forecast_hour}")
    t = int(round(forecast_hour * 60 / scenario.dt_minutes)) - 1
    return int(np.clip(t, -1, scenario.n_steps - 2))


def _panel(ax, time_h, realized, day_ahead, fan_time, fan, t_h, ylabel: str) -> None:
    if fan is not None and fan.shape[1]:
        ax.plot(fan_time, fan.T, color="tab:blue", alpha=0.12, lw=0.7)
        lo, hi = np.quantile(fan, [0.05, 0.95], axis=0)
        ax.fill_between(fan_time, lo, hi, color="tab:blue", alpha=0.15, lw=0, label="forecast 5-95 %")
    if day_ahead is not None:
        ax.plot(time_h, day_ahead, color="tab:orange", ls="--", lw=1.2, label="day-ahead")
    ax.plot(time_h, realized, color="black", lw=1.3, label="realized")
    ax.axvline(t_h, color="tab:red", lw=1.0, ls=":")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def plot_day(scenario: Scenario, forecast_hour: float, path: str | Path, n_fan: int = 50, seed: int = 0) -> Path:
    """Write a PNG: load, PV, wind (MW), connected EVs, TSO requirement (if any boundary) and net load,
    each with the realized day, the day-ahead forecast, and ``n_fan`` paths sampled by the forecast
    made at ``forecast_hour`` (``scenario.forecast(t).sample(n_fan, default_rng(seed))``).

    Returns:
        the path written.
    """
    t = forecast_step(scenario, forecast_hour)
    fc = scenario.forecast(t)
    fan = fc.sample(n_fan, np.random.default_rng(seed), ev_sessions=False)
    time_h = scenario.time_h
    fan_t = time_h[t + 1:]
    t_h = (t + 1) * scenario.dt_minutes / 60.0
    da = scenario.day_ahead
    lay = scenario.layout
    load_da = (da.load_pu_da * lay.load_p_mw).sum(1)
    pv_da = (da.pv_pu_da * da.pv_p_max_mw).sum(1)
    wind_da = (da.wind_pu_da * da.wind_p_max_mw).sum(1)
    panels = [
        ("load (MW)", scenario.load_p_mw.sum(1), load_da, fan.load_p_mw.sum(-1)),
        ("PV (MW)", scenario.pv_p_mw.sum(1), pv_da, fan.pv_p_mw.sum(-1)),
        ("wind (MW)", scenario.wind_p_mw.sum(1), wind_da, fan.wind_p_mw.sum(-1)),
        ("EVs connected", scenario.ev_connected.sum(1), None, fan.ev_connected.sum(-1)),
    ]
    if lay.boundary_names:
        panels.append(("TSO requirement (MW)", scenario.tso_requirement_mw.sum(1),
                       da.tso_nominal_mw.sum(1), fan.tso_requirement_mw.sum(-1)))
    panels.append(("net load (MW)", scenario.load_p_mw.sum(1) - scenario.pv_p_mw.sum(1) - scenario.wind_p_mw.sum(1),
                   load_da - pv_da - wind_da, fan.net_load_mw))
    fig = Figure(figsize=(9, 2.0 * len(panels)), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True)
    for ax, (label, realized, day_ahead, paths) in zip(axes, panels):
        _panel(ax, time_h, realized, day_ahead, fan_t, paths, t_h, label)
    axes[0].legend(loc="upper left", fontsize=8, ncols=3)
    axes[-1].set_xlabel("time (h)")
    axes[-1].set_xlim(0, 24)
    fig.suptitle(f"{lay.case}: regime {scenario.regime}, seed {scenario.seed}, "
                 f"forecast at {t_h:.2f} h ({n_fan} paths)")
    out = Path(path)
    fig.savefig(out, dpi=110)
    return out
