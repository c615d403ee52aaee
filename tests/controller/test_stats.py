"""Paired statistics: t-intervals on paired differences, regret, gap closed, the comparison table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from controller.stats import compare_policies, find_bound_policy, gap_closed, paired_ci

_costs = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=40)


def test_known_interval_by_hand() -> None:
    # d = 1..5: mean 3, sd sqrt(2.5), t_{0.975, 4} = 2.7764451052 -> 3 -+ 1.9632
    ci = paired_ci([2, 4, 6, 8, 10], [1, 2, 3, 4, 5])
    assert (ci.mean, ci.n) == (3.0, 5)
    assert ci.sd == pytest.approx(math.sqrt(2.5))
    assert ci.lo == pytest.approx(1.036756, abs=1e-6) and ci.hi == pytest.approx(4.963244, abs=1e-6)


def test_matches_scipy_t_and_ttest_rel() -> None:
    x = np.array([10.2, 11.5, 9.8, 12.1, 10.9, 11.7])
    y = np.array([9.9, 11.0, 10.1, 11.2, 10.0, 11.9])
    for confidence in (0.9, 0.95, 0.99):
        ci = paired_ci(x, y, confidence)
        d = x - y
        half = sps.t.ppf((1 + confidence) / 2, df=d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
        assert (ci.lo, ci.hi) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-12)
        ref = sps.ttest_rel(x, y).confidence_interval(confidence)
        assert (ci.lo, ci.hi) == pytest.approx((ref.low, ref.high), rel=1e-10)


@given(_costs)
def test_identical_inputs_give_zero_interval(x: list[float]) -> None:
    ci = paired_ci(x, x)
    assert (ci.mean, ci.lo, ci.hi, ci.sd) == (0.0, 0.0, 0.0, 0.0)


@settings(max_examples=200)
@given(st.data())
def test_interval_contains_mean_and_is_antisymmetric(data: st.DataObject) -> None:
    x = data.draw(_costs)
    y = data.draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=len(x), max_size=len(x)))
    ci = paired_ci(x, y)
    assert ci.lo <= ci.mean <= ci.hi
    flipped = paired_ci(y, x)
    assert flipped.mean == pytest.approx(-ci.mean, abs=1e-6)
    assert (flipped.lo, flipped.hi) == pytest.approx((-ci.hi, -ci.lo), abs=1e-6)
    assert paired_ci(x, y, 0.99).half_width >= ci.half_width >= paired_ci(x, y, 0.5).half_width


@given(_costs, st.floats(-1e4, 1e4, allow_nan=False))
def test_common_shift_cancels(x: list[float], shift: float) -> None:
    y = [v * 0.5 for v in x]
    a, b = paired_ci(x, y), paired_ci([v + shift for v in x], [v + shift for v in y])
    assert (b.mean, b.lo, b.hi) == pytest.approx((a.mean, a.lo, a.hi), abs=1e-6)


def test_single_pair_has_no_interval() -> None:
    ci = paired_ci([5.0], [3.0])
    assert ci.mean == 2.0 and math.isnan(ci.lo) and math.isnan(ci.hi)


@pytest.mark.parametrize(("x", "y", "confidence", "match"), [
    ([1, 2], [1, 2, 3], 0.95, "pair up"),
    ([1, float("nan")], [1, 2], 0.95, "NaN"),
    ([[1, 2]], [[1, 2]], 0.95, "1-D"),
    ([], [], 0.95, "no pairs"),
    ([1, 2], [1, 2], 1.0, "confidence"),
])
def test_bad_input_is_a_clear_error(x: list, y: list, confidence: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        paired_ci(x, y, confidence)


def test_gap_closed_known_answers() -> None:
    base, bound = [10.0, 12.0], [6.0, 8.0]
    assert gap_closed(base, [8.0, 10.0], bound) == pytest.approx(0.5)  # (11 - 9) / (11 - 7)
    assert gap_closed(base, bound, bound) == pytest.approx(1.0)
    assert gap_closed(base, base, bound) == pytest.approx(0.0)
    assert gap_closed(base, [12.0, 14.0], bound) == pytest.approx(-0.5)
    assert math.isnan(gap_closed(base, [8.0, 9.0], base))  # no gap to close
    with pytest.raises(ValueError, match="pair up"):
        gap_closed(base, [1.0], bound)


def _summary() -> pd.DataFrame:
    """Three days; heuristic, a better policy and a perfect-information bound."""
    costs = {"heuristic": [100.0, 110.0, 120.0], "better": [96.0, 104.0, 117.0],
             "perfect_information": [90.0, 99.0, 111.0]}
    rows = [{"policy": p, "regime": "sunny", "day": d, "seed": 1 + d, "total_cost": c,
             "curtailment_mwh": float(d), "bound_model": "socp" if p == "perfect_information" else ""}
            for p, cs in costs.items() for d, c in enumerate(cs)]
    return pd.DataFrame(rows)


def test_comparison_table_known_answers() -> None:
    table = compare_policies(_summary(), worst=("total_cost", "curtailment_mwh")).set_index("policy")
    better, pi, base = table.loc["better"], table.loc["perfect_information"], table.loc["heuristic"]
    assert better.total_cost == pytest.approx(317 / 3) and better.n_days == 3
    ref = paired_ci([96, 104, 117], [100, 110, 120])
    assert (better.diff_vs_heuristic, better.diff_vs_heuristic_lo, better.diff_vs_heuristic_hi) == pytest.approx(
        (ref.mean, ref.lo, ref.hi))
    reg = paired_ci([96, 104, 117], [90, 99, 111])
    assert (better.regret, better.regret_lo, better.regret_hi) == pytest.approx((reg.mean, reg.lo, reg.hi))
    assert better.gap_closed == pytest.approx((110 - 317 / 3) / (110 - 100))
    assert (pi.regret, pi.gap_closed, base.gap_closed) == pytest.approx((0.0, 1.0, 0.0))
    assert (base.diff_vs_heuristic_lo, base.diff_vs_heuristic_hi) == (0.0, 0.0)
    assert better.worst_total_cost == 117.0 and better.worst_curtailment_mwh == 2.0


def test_comparison_pairs_only_common_days() -> None:
    summary = _summary()
    summary = summary[~((summary.policy == "better") & (summary.day == 2))]
    row = compare_policies(summary).set_index("policy").loc["better"]
    assert row.n_days == 2
    assert row.diff_vs_heuristic == pytest.approx(paired_ci([96, 104], [100, 110]).mean)


def test_comparison_without_baseline_or_bound() -> None:
    summary = _summary()
    summary = summary[summary.policy == "better"].assign(bound_model="")
    table = compare_policies(summary)
    assert "diff_vs_heuristic" not in table and "regret" not in table and len(table) == 1


def test_bound_policy_detection_and_errors() -> None:
    summary = _summary()
    assert find_bound_policy(summary) == "perfect_information"
    assert find_bound_policy(summary.drop(columns="bound_model")) is None
    two = summary.assign(bound_model=np.where(summary.policy == "heuristic", "lp", summary.bound_model))
    with pytest.raises(ValueError, match="several policies report a bound"):
        find_bound_policy(two)
    with pytest.raises(ValueError, match="repeats"):
        compare_policies(pd.concat([summary, summary.iloc[:1]]))
    with pytest.raises(ValueError, match="bound policy 'oracle'"):
        compare_policies(summary, bound_policy="oracle")
    with pytest.raises(ValueError, match="lacks columns"):
        compare_policies(summary.drop(columns="day"))
