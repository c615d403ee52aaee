"""PNG plots of a closed-loop run (matplotlib, Agg canvas, no pyplot state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _hours(rows: pd.DataFrame) -> pd.Series:
    """Hours since the start of the run's first day (days side by side on one axis)."""
    if "day" not in rows:
        return rows.time_h
    return rows.time_h + 24.0 * (rows.day - rows.day.min())


def _mark_days(ax, steps: pd.DataFrame) -> None:
    """Vertical lines between the days of a multi-day run."""
    if "day" in steps:
        for k in range(1, steps.day.nunique()):
            ax.axvline(24.0 * k, color="grey", lw=0.8, ls=":")


def run_title(steps: pd.DataFrame, what: str) -> str:
    """``what`` with the run's case / policy / regime and the days shown (all of them)."""
    parts = [str(steps[c].iloc[0]) for c in ("case", "policy", "regime") if c in steps and len(steps)]
    if "day" in steps and len(steps):
        days = sorted(steps.day.unique())
        span = f"day {days[0]}" if len(days) == 1 else f"days {days[0]}-{days[-1]} ({len(days)} days)"
        if "seed" in steps:
            seeds = sorted(steps.seed.unique())
            span += f", seed {seeds[0]}" if len(seeds) == 1 else f", seeds {seeds[0]}-{seeds[-1]}"
        parts.append(span)
    return what + (f": {' / '.join(parts[:3])}" if parts[:3] else "") + (f", {parts[3]}" if len(parts) > 3 else "")


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_voltage_envelope(steps: pd.DataFrame, path: Path, vmin_pu: float = 0.95, vmax_pu: float = 1.05) -> Path:
    """Min and max bus voltage of every feeder over the day, with the limits."""
    fig = Figure(figsize=(9, 4))
    ax = fig.add_subplot()
    for area, rows in steps[steps.area != "system"].groupby("area"):
        hours = _hours(rows)
        line = ax.plot(hours, rows.v_max_pu, lw=1.2, label=f"{area} max")[0]
        ax.plot(hours, rows.v_min_pu, lw=1.2, ls="--", color=line.get_color(), label=f"{area} min")
        if "socp_v_pred_min_pu" in rows:
            ax.plot(hours, rows.socp_v_pred_min_pu, lw=0.8, ls=":", color=line.get_color(),
                    label=f"{area} min (SOCP expected)")
    ax.axhspan(vmin_pu, vmax_pu, color="green", alpha=0.06, label="limits")
    _mark_days(ax, steps)
    ax.set(xlabel="time (h)", ylabel="|V| (p.u.)", title=run_title(steps, "voltage envelope"))
    ax.legend(fontsize=7, ncol=3)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_dispatch(steps: pd.DataFrame, path: Path) -> Path:
    """Supply stack (import, thermal, PV, wind, storage discharge) against demand, with the
    load shed (demand not served, hatched) and the network losses (MW, lower panel)."""
    s = steps[steps.area == "system"]
    hours = _hours(s)
    fig = Figure(figsize=(9, 6))
    ax, ax_loss = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    supply = {
        "import / boundary": s.import_mw.clip(lower=0) if s.thermal_p_mw.abs().sum() == 0 else 0 * s.import_mw,
        "thermal": s.thermal_p_mw,
        "PV used": s.pv_used_mw,
        "wind used": s.wind_used_mw,
        "storage discharge": (-s.storage_p_mw).clip(lower=0),
    }
    supply = {k: v for k, v in supply.items() if np.abs(v).sum() > 0}
    ax.stackplot(hours, *supply.values(), labels=list(supply), alpha=0.8)
    ax.plot(hours, s.load_served_mw, color="k", lw=1.2, label="load served")
    shed_mw = (s.load_mw - s.load_served_mw).clip(lower=0)
    ax.fill_between(hours, s.load_served_mw, s.load_served_mw + shed_mw, color="none", edgecolor="tab:red",
                    hatch="////", lw=0.0, label=f"load shed ({float(shed_mw.sum() * _dt_h(s)):.3g} MWh)")
    ax.plot(hours, s.load_served_mw + s.ev_p_mw + s.storage_p_mw.clip(lower=0), color="k", lw=1.0, ls="--",
            label="load + EV + storage charge")
    _mark_days(ax, s)
    ax.set(ylabel="MW", title=run_title(s, "dispatch"))
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    ax_loss.plot(hours, s.losses_mw, color="tab:purple",
                 label=f"network losses ({float(s.losses_mw.sum() * _dt_h(s)):.3g} MWh)")
    _mark_days(ax_loss, s)
    ax_loss.set(xlabel="time (h)", ylabel="losses (MW)")
    ax_loss.legend(fontsize=7, loc="upper left")
    ax_loss.grid(alpha=0.3)
    return _save(fig, path)


def _dt_h(s: pd.DataFrame) -> float:
    """The step length in hours of one day's system rows."""
    times = np.unique(s.time_h.to_numpy())
    return float(times[1] - times[0]) if len(times) > 1 else 1.0


def plot_ev_storage(steps: pd.DataFrame, path: Path) -> Path:
    """EV charging power and connected EVs; storage energy."""
    s = steps[steps.area == "system"]
    fig = Figure(figsize=(9, 5))
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    hours = _hours(s)
    ax1.plot(hours, s.ev_p_mw, label="EV charging (MW)")
    twin = ax1.twinx()
    twin.plot(hours, s.ev_connected, color="tab:orange", lw=0.8, label="EVs connected")
    ax1.set(ylabel="MW", title=run_title(s, "EV stations"))
    twin.set_ylabel("EVs")
    ax1.legend(loc="upper left", fontsize=7)
    twin.legend(loc="upper right", fontsize=7)
    ax2.plot(hours, s.storage_e_mwh, color="tab:green")
    ax2.set(xlabel="time (h)", ylabel="MWh", title="storage energy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        _mark_days(ax, s)
    return _save(fig, path)


def plot_cost_breakdown(summary: pd.DataFrame, path: Path) -> Path:
    """Mean cost per component over the days (horizontal bars; negative = revenue)."""
    cols = [c for c in summary.columns if c.startswith("cost_") and c != "cost_boundary_energy"]
    means = summary[cols].mean().rename(lambda c: c.removeprefix("cost_"))
    means = means[means.abs() > 1e-9].sort_values()
    currency = summary["currency"].iloc[0] if "currency" in summary else ""
    fig = Figure(figsize=(8, 0.4 * len(means) + 1.5))
    ax = fig.add_subplot()
    ax.barh(means.index, means.values, color=np.where(means.values < 0, "tab:green", "tab:red"))
    days = f"mean of {len(summary)} days" if len(summary) > 1 else "one day"
    who = " / ".join(str(summary[c].iloc[0]) for c in ("case", "policy", "regime") if c in summary)
    ax.set(xlabel=f"cost per day ({currency})",
           title=f"cost breakdown{': ' + who if who else ''} ({days}; total {summary.total_cost.mean():,.1f} {currency})")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def write_run_plots(steps: pd.DataFrame, summary: pd.DataFrame, out: Path) -> list[Path]:
    """The four plots of ``gridroll run``; the time series show all the run's days side by side
    (hours since the first day's start, a dotted line between days)."""
    return [
        plot_voltage_envelope(steps, out / "voltage.png"),
        plot_dispatch(steps, out / "dispatch.png"),
        plot_ev_storage(steps, out / "ev_storage.png"),
        plot_cost_breakdown(summary, out / "costs.png"),
    ]
