"""Paired statistics of a policy comparison (docs/math.md §9).

All policies are run on the same days (common random numbers), so each policy's
cost is compared with another's day by day: the paired differences
``d_k = C_pi(w_k) - C_other(w_k)`` and a Student-t interval on their mean,
``mean(d) +- t_{(1+c)/2, n-1} * sd(d) / sqrt(n)``. Regret against the
perfect-information bound is the same interval with ``C_PI`` as the other; the
gap closed is ``(E C_base - E C_pi) / (E C_base - E C_PI)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

KEY_KPIS: tuple[str, ...] = ("total_cost", "curtailment_mwh", "load_shed_mwh", "ev_unmet_mwh",
                             "voltage_violation_puh", "losses_mwh", "max_line_loading", "boundary_violation_mw",
                             "decision_ms_mean")
"""KPIs whose means the comparison table reports."""

WORST_KPIS: tuple[str, ...] = ("total_cost", "curtailment_mwh", "load_shed_mwh", "ev_unmet_mwh",
                               "voltage_violation_puh", "boundary_violation_mw")
"""KPIs whose worst day (max over days) the stress table reports."""

#: The policy whose executed cost is the dispatch-only target (the clairvoyant active dispatch
#: played with the loop's reactive controller, :class:`policies.perfect_information.ClairvoyantDispatch`).
DISPATCH_YARDSTICK = "perfect_information_dispatch"

COMPARE_WORST_KPIS: tuple[str, ...] = ("curtailment_mwh", "load_shed_mwh", "boundary_violation_mw")
"""KPIs whose worst day the compare table reports next to the mean (seed 000 judges the
robust policies by their worst-case curtailment, shedding and boundary violation)."""


@dataclass(frozen=True)
class PairedCI:
    """Mean of paired differences ``x - y`` with a two-sided t confidence interval.

    Attributes:
        mean: mean difference.
        lo: lower end of the interval (NaN with fewer than two pairs).
        hi: upper end of the interval (NaN with fewer than two pairs).
        n: number of pairs.
        sd: sample standard deviation of the differences (ddof=1; NaN if n < 2).
        confidence: the interval's confidence level.
    """

    mean: float
    lo: float
    hi: float
    n: int
    sd: float
    confidence: float

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2.0


def _as_vector(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has NaN or infinite values at {np.flatnonzero(~np.isfinite(arr)).tolist()}")
    return arr


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def paired_ci(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
              confidence: float = 0.95) -> PairedCI:
    """The t-interval on the mean of the paired differences ``x - y``.

    Args:
        x: one value per day (e.g. a policy's daily cost).
        y: the same days' values of the other (e.g. the heuristic's, or the bound).
        confidence: two-sided confidence level.

    Raises:
        ValueError: shapes differ, not 1-D, empty, NaN/inf, or confidence not in (0, 1).
    """
    _check_confidence(confidence)
    xa, ya = _as_vector(x, "x"), _as_vector(y, "y")
    if xa.shape != ya.shape:
        raise ValueError(f"paired_ci: x and y must pair up, got {xa.size} and {ya.size} values")
    if xa.size == 0:
        raise ValueError("paired_ci: no pairs")
    d = xa - ya
    n = d.size
    mean = float(d.mean())
    if n < 2:
        return PairedCI(mean, float("nan"), float("nan"), n, float("nan"), confidence)
    sd = float(d.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2.0, df=n - 1)) * sd / np.sqrt(n)
    return PairedCI(mean, mean - half, mean + half, n, sd, confidence)


def gap_closed(base: Sequence[float] | np.ndarray, policy: Sequence[float] | np.ndarray,
               bound: Sequence[float] | np.ndarray) -> float:
    """Share of the base-to-bound gap a policy closes: ``(E C_base - E C_pi) / (E C_base - E C_PI)``.

    1 means the policy reaches the bound, 0 means no better than the base,
    negative means worse than the base. NaN when the base is not above the
    bound on average (no gap to close).

    Raises:
        ValueError: the three do not pair up (same days), or hold NaN/inf.
    """
    b, p, pi = _as_vector(base, "base"), _as_vector(policy, "policy"), _as_vector(bound, "bound")
    if not b.size or b.shape != p.shape or b.shape != pi.shape:
        raise ValueError(f"gap_closed: base, policy and bound must pair up, got {b.size}, {p.size}, {pi.size} values")
    gap = float(b.mean() - pi.mean())
    if gap <= 0.0:
        return float("nan")
    return float(b.mean() - p.mean()) / gap


def find_bound_policy(summary: pd.DataFrame) -> str | None:
    """The policy whose rows carry a perfect-information bound (``bound_model`` set), if any.

    Raises:
        ValueError: more than one such policy.
    """
    if "bound_model" not in summary:
        return None
    marked = summary.loc[summary.bound_model.fillna("").astype(str) != "", "policy"].unique().tolist()
    if len(marked) > 1:
        raise ValueError(f"several policies report a bound ({', '.join(marked)}); name one")
    return marked[0] if marked else None


def _paired_costs(rows: pd.DataFrame, value: str = "total_cost") -> pd.DataFrame:
    """Days x policies of one regime's ``value`` (rows must not repeat a (policy, day))."""
    dup = rows.duplicated(["policy", "day"])
    if dup.any():
        raise ValueError(f"summary repeats (policy, day): {rows.loc[dup, ['policy', 'day']].values.tolist()}")
    return rows.pivot(index="day", columns="policy", values=value)


def compare_policies(summary: pd.DataFrame, *, baseline: str | None = "heuristic", bound_policy: str | None = None,
                     kpis: Sequence[str] = KEY_KPIS, worst: Sequence[str] = (),
                     confidence: float = 0.95) -> pd.DataFrame:
    """One row per (regime, policy): KPI means, paired CIs vs the baseline and the bound.

    Columns: ``regime, policy, n_days``, ``<kpi>`` (mean over days) for each KPI
    present, ``worst_<kpi>`` (max over days) for each of ``worst``; ``fallback_days``,
    ``fallback_steps`` and ``socp_fallbacks`` (totals over days) when the summary has them; when the
    baseline is present ``diff_vs_<baseline>`` with ``_lo``/``_hi`` (paired
    t-interval of ``C_pi - C_base``); when a bound policy is present (given or
    found by :func:`find_bound_policy`) ``regret`` with ``regret_lo``/``regret_hi``
    (``C_pi - C_PI``) and ``gap_closed``; when :data:`DISPATCH_YARDSTICK` ran too,
    ``dispatch_regret`` (``C_pi - C_PI_dispatch``, with CI) and ``dispatch_gap_closed``: the
    clairvoyant active dispatch under the loop's own reactive controller as the target, so the
    reactive controller's share of the regret is left out. Differences use the days both have.

    Raises:
        ValueError: missing columns, or a named baseline/bound not in the summary.
    """
    missing = {"policy", "regime", "day", "total_cost"} - set(summary)
    if missing:
        raise ValueError(f"compare_policies: summary lacks columns {sorted(missing)}")
    bound_policy = bound_policy if bound_policy is not None else find_bound_policy(summary)
    present = summary.policy.unique().tolist()
    if bound_policy is not None and bound_policy not in present:
        raise ValueError(f"bound policy {bound_policy!r} is not in the summary ({', '.join(present)})")
    if baseline is not None and baseline not in present:
        baseline = None
    rows = []
    for regime, block in summary.groupby("regime", sort=False):
        costs = _paired_costs(block)
        for policy, mine in block.groupby("policy", sort=False):
            row = {"regime": regime, "policy": policy, "n_days": int(len(mine))}
            row.update({k: float(mine[k].mean()) for k in kpis if k in mine})
            row.update({f"worst_{k}": float(mine[k].max()) for k in worst if k in mine})
            row.update(_fallback_columns(mine))
            if baseline is not None:
                row.update(_diff_columns(costs, policy, baseline, f"diff_vs_{baseline}", confidence))
            if bound_policy is not None:
                row.update(_diff_columns(costs, policy, bound_policy, "regret", confidence))
                row["gap_closed"] = _gap_closed_columns(costs, baseline, policy, bound_policy)
            if DISPATCH_YARDSTICK in costs:
                row.update(_diff_columns(costs, policy, DISPATCH_YARDSTICK, "dispatch_regret", confidence))
                row["dispatch_gap_closed"] = _gap_closed_columns(costs, baseline, policy, DISPATCH_YARDSTICK)
            rows.append(row)
    return pd.DataFrame(rows)


def _fallback_columns(mine: pd.DataFrame) -> dict[str, float]:
    """Fallback counts of one policy's days: ``fallback_days`` / ``fallback_steps`` (the policy's
    own, :mod:`policies.base`) and ``socp_fallbacks`` (the reactive SOCP's, feeder-steps); NaN
    when the summary predates the column."""
    out: dict[str, float] = {}
    if "fallback_steps" in mine:
        steps = mine.fallback_steps.fillna(0)
        out["fallback_days"] = float((steps > 0).sum())
        out["fallback_steps"] = float(steps.sum())
    if "socp_fallbacks" in mine:
        out["socp_fallbacks"] = float(mine.socp_fallbacks.fillna(0).sum())
    return out


def fallback_warnings(summary: pd.DataFrame) -> list[str]:
    """One line per (regime, policy) that fell back on some day: how often and the first reason."""
    lines = []
    for (regime, policy), mine in summary.groupby(["regime", "policy"], sort=False):
        if "fallback_steps" in mine:
            bad = mine[mine.fallback_steps.fillna(0) > 0]
            if len(bad):
                reason = next((str(r) for r in bad.get("fallback_reason", []) if str(r)), "")
                lines.append(f"WARNING: {policy} ({regime}) fell back on {len(bad)} of {len(mine)} days, "
                             f"{int(bad.fallback_steps.sum())} steps; first reason: {reason}")
        if "socp_fallbacks" in mine and mine.socp_fallbacks.fillna(0).sum() > 0:
            days = int((mine.socp_fallbacks.fillna(0) > 0).sum())
            lines.append(f"WARNING: {policy} ({regime}): the reactive controller fell back on {days} of {len(mine)} "
                         f"days, {int(mine.socp_fallbacks.fillna(0).sum())} feeder-steps (steps' socp_fallback "
                         "says why)")
    return lines


def _diff_columns(costs: pd.DataFrame, policy: str, other: str, name: str, confidence: float) -> dict[str, float]:
    pair = costs[list(dict.fromkeys([policy, other]))].dropna()
    if pair.empty:
        return {name: np.nan, f"{name}_lo": np.nan, f"{name}_hi": np.nan}
    ci = paired_ci(pair[policy].to_numpy(), pair[other].to_numpy(), confidence)
    return {name: ci.mean, f"{name}_lo": ci.lo, f"{name}_hi": ci.hi}


def _gap_closed_columns(costs: pd.DataFrame, baseline: str | None, policy: str, bound: str) -> float:
    if baseline is None:
        return np.nan
    trio = costs[list(dict.fromkeys([baseline, policy, bound]))].dropna()
    if trio.empty:
        return np.nan
    return gap_closed(trio[baseline].to_numpy(), trio[policy].to_numpy(), trio[bound].to_numpy())
