"""PNG plots of a closed-loop run (matplotlib, Agg canvas, no pyplot state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


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
        line = ax.plot(rows.time_h, rows.v_max_pu, lw=1.2, label=f"{area} max")[0]
        ax.plot(rows.time_h, rows.v_min_pu, lw=1.2, ls="--", color=line.get_color(), label=f"{area} min")
        if "socp_v_pred_min_pu" in rows:
            ax.plot(rows.time_h, rows.socp_v_pred_min_pu, lw=0.8, ls=":", color=line.get_color(),
                    label=f"{area} min (SOCP expected)")
    ax.axhspan(vmin_pu, vmax_pu, color="green", alpha=0.06, label="limits")
    ax.set(xlabel="time (h)", ylabel="|V| (p.u.)", title="voltage envelope")
    ax.legend(fontsize=7, ncol=3)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_dispatch(steps: pd.DataFrame, path: Path) -> Path:
    """Supply stack (import, thermal, PV, wind, storage discharge) against demand."""
    s = steps[steps.area == "system"]
    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    supply = {
        "import / boundary": s.import_mw.clip(lower=0) if s.thermal_p_mw.abs().sum() == 0 else 0 * s.import_mw,
        "thermal": s.thermal_p_mw,
        "PV used": s.pv_used_mw,
        "wind used": s.wind_used_mw,
        "storage discharge": (-s.storage_p_mw).clip(lower=0),
    }
    supply = {k: v for k, v in supply.items() if np.abs(v).sum() > 0}
    ax.stackplot(s.time_h, *supply.values(), labels=list(supply), alpha=0.8)
    ax.plot(s.time_h, s.load_served_mw, color="k", lw=1.2, label="load served")
    ax.plot(s.time_h, s.load_served_mw + s.ev_p_mw + s.storage_p_mw.clip(lower=0), color="k", lw=1.0, ls="--",
            label="load + EV + storage charge")
    ax.set(xlabel="time (h)", ylabel="MW", title="dispatch")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_ev_storage(steps: pd.DataFrame, path: Path) -> Path:
    """EV charging power and connected EVs; storage energy."""
    s = steps[steps.area == "system"]
    fig = Figure(figsize=(9, 5))
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    ax1.plot(s.time_h, s.ev_p_mw, label="EV charging (MW)")
    twin = ax1.twinx()
    twin.plot(s.time_h, s.ev_connected, color="tab:orange", lw=0.8, label="EVs connected")
    ax1.set(ylabel="MW", title="EV stations")
    twin.set_ylabel("EVs")
    ax1.legend(loc="upper left", fontsize=7)
    twin.legend(loc="upper right", fontsize=7)
    ax2.plot(s.time_h, s.storage_e_mwh, color="tab:green")
    ax2.set(xlabel="time (h)", ylabel="MWh", title="storage energy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
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
    ax.set(xlabel=f"cost per day ({currency})", title=f"cost breakdown (total {summary.total_cost.mean():.1f})")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def write_run_plots(steps: pd.DataFrame, summary: pd.DataFrame, out: Path) -> list[Path]:
    """The four plots of ``gridroll run`` (time series of the first day)."""
    first = steps[steps.day == steps.day.min()]
    return [
        plot_voltage_envelope(first, out / "voltage.png"),
        plot_dispatch(first, out / "dispatch.png"),
        plot_ev_storage(first, out / "ev_storage.png"),
        plot_cost_breakdown(summary, out / "costs.png"),
    ]
