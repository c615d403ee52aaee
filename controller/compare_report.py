"""PNG plots of a policy comparison (matplotlib, Agg canvas, no pyplot state)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_BAR_KPIS: tuple[str, ...] = ("total_cost", "curtailment_mwh", "load_shed_mwh", "ev_unmet_mwh",
                              "voltage_violation_puh", "losses_mwh", "boundary_violation_mw", "decision_ms_mean")


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _currency(frame: pd.DataFrame) -> str:
    """The currency of the costs in ``frame`` (its ``currency`` column), or ``""``."""
    if "currency" not in frame or not len(frame):
        return ""
    return " / ".join(str(c) for c in _ordered(frame["currency"].dropna()))


def _label(kpi: str, currency: str) -> str:
    """An axis label: cost columns carry their currency."""
    is_cost = kpi in ("total_cost", "executed_cost", "regret") or kpi.startswith(("cost", "diff_vs_"))
    return f"{kpi} ({currency})" if is_cost and currency else kpi


def _ordered(values: pd.Series) -> list[str]:
    return list(dict.fromkeys(values.tolist()))


def plot_cost_distributions(summary: pd.DataFrame, path: Path, value: str = "total_cost",
                            currency: str | None = None) -> Path:
    """Daily cost of each policy, one panel per regime: box plot with the days as points,
    each day's points joined by a thin line (the days are paired across policies)."""
    currency = _currency(summary) if currency is None else currency
    regimes, policies = _ordered(summary.regime), _ordered(summary.policy)
    fig = Figure(figsize=(max(4.5, 1.2 * len(policies)) * len(regimes), 4.2))
    for i, regime in enumerate(regimes):
        ax = fig.add_subplot(1, len(regimes), i + 1)
        block = summary[summary.regime == regime].pivot(index="day", columns="policy", values=value)
        block = block[[p for p in policies if p in block]]
        x = np.arange(1, block.shape[1] + 1)
        ax.boxplot([block[p].dropna().to_numpy() for p in block], widths=0.5, showfliers=False)
        ax.plot(x, block.to_numpy().T, color="grey", lw=0.5, alpha=0.5)
        for k, p in enumerate(block):
            ax.scatter(np.full(len(block), x[k]), block[p], s=12, alpha=0.8, zorder=3)
        ax.set_xticks(x, list(block), rotation=25, ha="right", fontsize=8)
        ax.set(title=f"{value} per day: {regime}", ylabel=_label(value, currency) if i == 0 else None)
        ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_paired_differences(table: pd.DataFrame, path: Path, baseline: str = "heuristic",
                            bound_policy: str | None = None, currency: str = "") -> Path:
    """Mean paired cost difference vs the baseline (and regret vs the bound) with their CIs.

    The baseline (and the bound policy) are left out of their own panels (0 by construction).
    """
    panels = [(f"diff_vs_{baseline}", f"cost - {baseline}", baseline),
              ("regret", "regret (cost - bound)", bound_policy)]
    panels = [p for p in panels if p[0] in table and table[p[0]].notna().any()]
    if not panels:
        raise ValueError(f"plot_paired_differences: table has no diff_vs_{baseline} or regret column")
    regimes = _ordered(table.regime)
    fig = Figure(figsize=(4.5 * len(regimes), 1.2 + len(panels) * (0.8 + 0.45 * table.policy.nunique())))
    for r, (col, label, itself) in enumerate(panels):
        for i, regime in enumerate(regimes):
            ax = fig.add_subplot(len(panels), len(regimes), r * len(regimes) + i + 1)
            rows = table[(table.regime == regime) & (table.policy != itself)].reset_index(drop=True)
            y = np.arange(len(rows))[::-1]
            err = np.vstack([rows[col] - rows[f"{col}_lo"], rows[f"{col}_hi"] - rows[col]])
            ax.errorbar(rows[col], y, xerr=np.nan_to_num(err), fmt="o", capsize=4)
            ax.axvline(0.0, color="k", lw=0.8)
            ax.set_yticks(y, rows.policy, fontsize=8)
            ax.set_ylim(-0.6, len(rows) - 0.4)
            ax.set(xlabel=f"{label} ({currency})" if currency else label,
                   title=f"mean paired difference: {regime}" if r == 0 else None)
            ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def plot_kpi_bars(table: pd.DataFrame, path: Path, kpis: Sequence[str] = _BAR_KPIS, currency: str = "") -> Path:
    """Mean KPIs per regime and policy as grouped bars; worst days as markers when present."""
    kpis = [k for k in kpis if k in table]
    regimes, policies = _ordered(table.regime), _ordered(table.policy)
    ncols = min(4, len(kpis))
    nrows = int(np.ceil(len(kpis) / ncols))
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows))
    width = 0.8 / len(policies)
    x = np.arange(len(regimes))
    for i, kpi in enumerate(kpis):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for j, policy in enumerate(policies):
            rows = table[table.policy == policy].set_index("regime").reindex(regimes)
            pos = x - 0.4 + width * (j + 0.5)
            ax.bar(pos, rows[kpi], width, label=policy)
            if f"worst_{kpi}" in rows:
                ax.scatter(pos, rows[f"worst_{kpi}"], marker="_", s=120, color="k", zorder=3,
                           label="worst day" if j == 0 else None)
        ax.set_xticks(x, regimes, fontsize=8)
        ax.set_title(f"mean {_label(kpi, currency)}", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        if i == 0:
            ax.legend(fontsize=7)
    return _save(fig, path)


def write_comparison_plots(summary: pd.DataFrame, table: pd.DataFrame, out: Path,
                           baseline: str = "heuristic", bound_policy: str | None = None) -> list[Path]:
    """The comparison's PNGs in ``out``: cost distributions, paired differences, KPI bars."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    currency = _currency(summary)
    written = [plot_cost_distributions(summary, out / "cost_distributions.png", currency=currency)]
    if any(c in table and table[c].notna().any() for c in (f"diff_vs_{baseline}", "regret")):
        written.append(plot_paired_differences(table, out / "paired_differences.png", baseline,
                                               bound_policy, currency))
    written.append(plot_kpi_bars(table, out / "kpis.png", currency=currency))
    return written
