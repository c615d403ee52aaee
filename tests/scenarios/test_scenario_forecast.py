"""Forecast: non-anticipativity, lead-time error growth, calibration, ScenarioSet validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenarios import EVSessions, Forecast, Layout, Observed, Scenario, ScenarioSet, get_regime, sample_day

_SAMPLE_FIELDS = ("load_pu", "pv_pu", "wind_pu", "tso_requirement_mw", "ev_arrivals", "ev_connected",
                  "probabilities")
_POINT_FIELDS = ("load_pu", "pv_pu", "wind_pu", "wind_speed_ms", "tso_requirement_mw", "ev_rate_per_h",
                 "ev_connected_known")


def _tamper_after(sc: Scenario, other: Scenario, t: int) -> Scenario:
    """sc with every realized value after step t replaced by other's (EV sessions arriving after t too)."""
    def splice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([a[:t + 1], b[t + 1:]])
    ev = EVSessions(**{k: np.concatenate([sc.ev.select(sc.ev.arrival_step <= t).to_dict()[k],
                                          other.ev.select(other.ev.arrival_step > t).to_dict()[k]])
                       for k in sc.ev.to_dict()})
    return dataclasses.replace(
        sc, load_pu=splice(sc.load_pu, other.load_pu), pv_pu=splice(sc.pv_pu, other.pv_pu),
        wind_speed_ms=splice(sc.wind_speed_ms, other.wind_speed_ms), wind_pu=splice(sc.wind_pu, other.wind_pu),
        tso_requirement_mw=splice(sc.tso_requirement_mw, 3.0 * other.tso_requirement_mw), ev=ev,
        ev_balked=other.ev_balked, ev_rate_multiplier=other.ev_rate_multiplier,
        wind_ramp_start_h=other.wind_ramp_start_h)


def _assert_same_forecast(f1: Forecast, f2: Forecast, n: int, seed: int) -> None:
    for name in _POINT_FIELDS:
        assert np.array_equal(getattr(f1, name), getattr(f2, name)), name
    s1, s2 = f1.sample(n, np.random.default_rng(seed)), f2.sample(n, np.random.default_rng(seed))
    for name in _SAMPLE_FIELDS:
        assert np.array_equal(getattr(s1, name), getattr(s2, name)), name
    assert len(s1.ev_sessions) == len(s2.ev_sessions) == n
    for e1, e2 in zip(s1.ev_sessions, s2.ev_sessions):
        for k, v in e1.to_dict().items():
            assert np.array_equal(v, e2.to_dict()[k]), k


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.integers(-1, 94),
       regime=st.sampled_from(["cloudy", "highly_fluctuating", "wind_ramp", "ev_surge"]))
def test_forecast_is_non_anticipative(td: Layout, seed: int, t: int, regime: str) -> None:
    sc = sample_day(td, regime, seed)
    other = sample_day(td, regime, seed + 1)
    tampered = _tamper_after(sc, other, t)
    assert not np.array_equal(tampered.load_pu, sc.load_pu) or t == 94
    _assert_same_forecast(sc.forecast(t), tampered.forecast(t), n=4, seed=seed)


def test_forecast_depends_on_the_past(d33: Layout) -> None:
    """The non-anticipativity test could fail: the forecast does react to values at steps <= t."""
    sc = sample_day(d33, "cloudy", 4)
    t = 50
    bumped = dataclasses.replace(sc, load_pu=sc.load_pu * np.where(np.arange(96) == t, 1.1, 1.0)[:, None],
                                 pv_pu=sc.pv_pu * np.where(np.arange(96) == t, 0.5, 1.0)[:, None])
    f1, f2 = sc.forecast(t), bumped.forecast(t)
    assert not np.array_equal(f1.load_pu, f2.load_pu)
    assert not np.array_equal(f1.pv_pu, f2.pv_pu)
    s1, s2 = f1.sample(3, np.random.default_rng(0)), f2.sample(3, np.random.default_rng(0))
    assert not np.array_equal(s1.load_pu, s2.load_pu)
    fewer = dataclasses.replace(sc, ev=sc.ev.select(sc.ev.arrival_step != t))
    assert fewer.forecast(t).ev_rate_multiplier < f1.ev_rate_multiplier


def test_observed_rejects_future_information(d33: Layout) -> None:
    sc = sample_day(d33, "sunny", 0)
    obs = sc.observed(10)
    assert obs.load_pu.shape == (11, 32) and np.all(obs.ev.arrival_step <= 10)
    with pytest.raises(ValueError, match="Observed.load_pu: expected 11 rows"):
        dataclasses.replace(obs, load_pu=sc.load_pu[:12])
    with pytest.raises(ValueError, match="Observed.ev: contains sessions arriving after t=10"):
        dataclasses.replace(obs, ev=sc.ev)
    with pytest.raises(ValueError, match="t must be in"):
        sc.observed(96)


def test_forecast_before_the_day_is_the_day_ahead(d33: Layout) -> None:
    sc = sample_day(d33, "cloudy", 2)
    f = sc.forecast(-1)
    assert f.horizon == 96 and f.steps[0] == 0
    np.testing.assert_array_equal(f.load_pu, sc.load_pu_da)
    np.testing.assert_allclose(f.pv_pu, sc.pv_pu_da)
    np.testing.assert_allclose(f.wind_pu, sc.wind_pu_da)
    assert f.ev_rate_multiplier == 1.0
    ss = f.sample(5, np.random.default_rng(0))
    assert ss.horizon == 96 and ss.start_step == 0


def test_point_forecast_decays_to_day_ahead_and_spread_grows(td: Layout) -> None:
    sc = sample_day(td, "cloudy", 11)
    t = 40
    f = sc.forecast(t)
    gap = np.abs(f.load_pu - sc.load_pu_da[t + 1:])
    assert np.all(np.diff(gap.mean(axis=1)) <= 1e-12)                  # phi^h decay, monotone
    ss = f.sample(800, np.random.default_rng(1), ev_sessions=False)
    rel = ss.load_pu / sc.load_pu_da[t + 1:] - 1.0                      # relative error paths
    sd = rel.std(axis=0).mean(axis=1)
    p = get_regime("cloudy")
    phi = np.exp(-0.25 / p.load_err_tau_h)
    h = np.arange(1, f.horizon + 1)
    np.testing.assert_allclose(sd, p.load_err_sd * np.sqrt(1 - phi ** (2 * h)), rtol=0.1)
    assert sd[0] < sd[1] < sd[3] < sd[7] and sd[40] > 0.9 * p.load_err_sd   # grows, saturates at the sd
    np.testing.assert_allclose(ss.load_pu.mean(axis=0), f.load_pu, rtol=4 * 0.04 / np.sqrt(800 * 0.6))
    wind_sd = ss.wind_pu.std(axis=0).mean(axis=1)
    assert wind_sd[0] < wind_sd[8] < wind_sd[30]


def test_forecast_intervals_are_calibrated(d33: Layout) -> None:
    """The realized value falls in the forecast's 5-95 % band about 90 % of the time."""
    hits = []
    for s in range(30):
        sc = sample_day(d33, "cloudy", 100 + s)
        t = 20 + 2 * s
        ss = sc.forecast(t).sample(100, np.random.default_rng(s), ev_sessions=False)
        for h in (1, 4, 16):
            for field, real in (("load_pu", sc.load_pu), ("wind_pu", sc.wind_pu)):
                lo, hi = np.quantile(getattr(ss, field)[:, h - 1], [0.05, 0.95], axis=0)
                x = real[t + h]
                hits.extend(((x >= lo - 1e-12) & (x <= hi + 1e-12)).tolist())
    assert 0.83 < np.mean(hits) < 0.96


def test_sample_paths_are_consistent(td: Layout) -> None:
    sc = sample_day(td, "ev_surge", 5)
    t = 60
    f = sc.forecast(t)
    ss = f.sample(30, np.random.default_rng(3))
    assert len(ss) == 30 and np.isclose(ss.probabilities.sum(), 1.0)
    assert np.all(ss.ev_connected <= td.evcs_n_ports)
    for j, ev in enumerate(ss.ev_sessions):
        assert np.all(ev.arrival_step >= t + 1)
        np.testing.assert_array_equal(ss.ev_arrivals[j].sum(), len(ev))
    np.testing.assert_array_equal(ss.ev_connected.min(axis=0) >= f.ev_connected_known, True)
    # TSO paths (with the observed history) stay inside the day's budget set
    for j in range(30):
        full = np.concatenate([sc.tso_requirement_mw[:t + 1], ss.tso_requirement_mw[j]])
        for b in range(2):
            assert sc.day_ahead.tso_budget_set(b).contains(full[:, b])
    # same rng seed, same set
    again = f.sample(30, np.random.default_rng(3))
    assert np.array_equal(again.load_pu, ss.load_pu) and np.array_equal(again.ev_arrivals, ss.ev_arrivals)
    # last step: nothing left to forecast
    last = sc.forecast(95).sample(2, np.random.default_rng(0))
    assert last.horizon == 0


def test_ev_posterior_learns_the_rate(d33: Layout) -> None:
    busy = [sample_day(d33, "cloudy", s) for s in range(30)]
    pairs = [(d.ev_rate_multiplier, d.forecast(60).ev_rate_multiplier) for d in busy]
    true, post = np.array(pairs).T
    assert np.corrcoef(true, post)[0, 1] > 0.6
    assert np.mean(np.abs(post - true)) < np.mean(np.abs(1.0 - true))


def test_scenario_set_validation(d33: Layout) -> None:
    ss = sample_day(d33, "sunny", 0).forecast(10).sample(4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="probabilities"):
        dataclasses.replace(ss, probabilities=np.array([0.5, 0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="ScenarioSet.pv_pu"):
        dataclasses.replace(ss, pv_pu=ss.pv_pu[:, :-1])
    with pytest.raises(ValueError, match="ScenarioSet.ev_sessions"):
        dataclasses.replace(ss, ev_sessions=ss.ev_sessions[:2])
    with pytest.raises(ValueError, match="n must be a positive integer"):
        sample_day(d33, "sunny", 0).forecast(10).sample(0, np.random.default_rng(0))
    np.testing.assert_allclose(ss.net_load_mw, ss.load_p_mw.sum(-1) - ss.pv_p_mw.sum(-1) - ss.wind_p_mw.sum(-1))


def test_forecast_at_checks_layout_width(d33: Layout, td: Layout) -> None:
    sc = sample_day(d33, "sunny", 0)
    obs = sample_day(td, "sunny", 0).observed(5)
    with pytest.raises(ValueError, match="Observed.load_pu: expected 32 columns"):
        Forecast.at(sc.day_ahead, obs)
    assert isinstance(Forecast.at(sc.day_ahead, sc.observed(5)), Forecast)
    assert isinstance(sc.observed(5), Observed) and isinstance(
        sc.forecast(5).sample(1, np.random.default_rng(0)), ScenarioSet)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 3), st.integers(1, 30), st.integers(1, 4),
       st.floats(0.0, 0.99), st.booleans())
def test_ar1_filter_is_the_plain_recursion_for_any_leading_axes(seed, n_paths, n_time, n_series, phi, start) -> None:
    """``x_k = phi x_{k-1} + sqrt(1 - phi^2) e_k`` (``x_0 = e_0``, or ``x_{-1} = x0``), bit for bit
    the same whether the paths come stacked or one by one."""
    from scenarios.profiles import ar1_filter

    rng = np.random.default_rng(seed)
    e = rng.standard_normal((n_paths, n_time, n_series))
    x0 = rng.standard_normal((n_paths, n_series)) if start else None
    got = ar1_filter(e, phi, x0)
    assert got.shape == e.shape and got.flags.c_contiguous
    for p in range(n_paths):
        one = ar1_filter(e[p], phi, None if x0 is None else x0[p])
        np.testing.assert_array_equal(got[p], one)
        plain = np.empty_like(e[p])
        c = np.sqrt(1.0 - phi**2)
        for k in range(n_time):
            if k == 0 and x0 is None:
                plain[0] = e[p, 0]
            else:
                prev = x0[p] if k == 0 else plain[k - 1]
                plain[k] = c * e[p, k] + phi * prev
        np.testing.assert_allclose(one, plain, rtol=1e-12, atol=1e-12)
