"""EV arrivals: session validity (hypothesis), port limits, simpy vs heap model, statistics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenarios import EVArrivalParams, Layout, get_regime, sample_day
from scenarios.ev_arrivals import (
    DEFAULT_COMPONENTS,
    ArrivalTable,
    arrival_counts,
    component_rates_per_port_h,
    connected_counts,
    expected_arrivals_per_day,
    expected_dwell_h,
    sample_arrivals,
    sample_arrivals_each,
)
from scenarios.ev_ports import simulate_ports_fast, simulate_ports_simpy, to_sessions, to_sessions_each


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_ports=st.lists(st.integers(1, 6), min_size=1, max_size=4),
       per_port=st.floats(0.0, 8.0), dt=st.sampled_from([5, 15, 60]), patience=st.floats(0.0, 120.0),
       surge=st.floats(0.5, 3.0))
def test_sessions_always_valid(seed: int, n_ports: list[int], per_port: float, dt: int, patience: float,
                               surge: float) -> None:
    params = EVArrivalParams(arrivals_per_port_day=per_port, surge_factor=surge, patience_min=patience)
    ports = np.array(n_ports)
    table = sample_arrivals(np.random.default_rng(seed), params, ports, 1.0, 66.0)
    res = simulate_ports_simpy(table, ports, dt, patience)
    ev = to_sessions(table, res, dt, 66.0, 6.6, 0.9)           # EVSessions validates its invariants
    T = 1440 // dt
    assert len(ev) + res.balked.sum() == len(table)
    assert np.all(ev.arrival_step < T) and np.all(ev.departure_step > ev.arrival_step)
    reach = ev.e_arrival_kwh + ev.efficiency * ev.p_max_kw * dt / 60 * (ev.departure_step - ev.arrival_step)
    assert np.all(ev.e_request_kwh <= reach + 1e-9)
    assert np.all(ev.e_request_kwh <= ev.e_capacity_kwh + 1e-12)
    horizon = int(ev.departure_step.max(initial=T))
    assert np.all(connected_counts(ev, horizon, len(ports)) <= ports[None, :])
    order = np.lexsort((ev.station, ev.arrival_step))
    assert np.array_equal(order, np.arange(len(ev)))            # sorted by arrival step, then station
    # the EV's step interval covers its real stay from plug-in to scheduled departure
    served_dep = table.t_departure_min[res.served]
    assert np.all(res.departure_step * dt >= served_dep - 1e-9)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_ports=st.lists(st.integers(1, 40), min_size=1, max_size=6),
       per_port=st.floats(0.0, 8.0), dt=st.sampled_from([5, 15, 60]))
def test_sessions_come_by_arrival_step_station_and_index_in_any_served_order(seed: int, n_ports: list[int],
                                                                             per_port: float, dt: int) -> None:
    """to_sessions sorts by (plug-in step, station, arrival index), whether the port result lists
    the served EVs by index (as the port models do) or in any order."""
    params = EVArrivalParams(arrivals_per_port_day=per_port)
    ports = np.array(n_ports)
    table = sample_arrivals(np.random.default_rng(seed), params, ports, 1.0, 66.0)
    res = simulate_ports_fast(table, ports, dt, params.patience_min)
    perm = np.random.default_rng(seed + 1).permutation(len(res.served))
    shuffled = dataclasses.replace(res, served=res.served[perm], arrival_step=res.arrival_step[perm],
                                   departure_step=res.departure_step[perm])
    a, b = to_sessions(table, res, dt, 66.0, 6.6, 0.9), to_sessions(table, shuffled, dt, 66.0, 6.6, 0.9)
    for name, arr in a.to_dict().items():
        assert np.array_equal(arr, getattr(b, name)), name
    i = res.served[np.lexsort((res.served, table.station[res.served], res.arrival_step))]
    assert np.array_equal(a.e_arrival_kwh, table.e_arrival_kwh[i])
    assert np.array_equal(a.station, table.station[i])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_ports=st.lists(st.integers(1, 4), min_size=1, max_size=3),
       per_port=st.floats(0.5, 10.0), dt=st.sampled_from([5, 15, 60]), patience=st.floats(0.0, 90.0),
       start_step=st.integers(0, 20), n_busy=st.integers(0, 6))
def test_simpy_and_heap_port_models_agree(seed: int, n_ports: list[int], per_port: float, dt: int,
                                          patience: float, start_step: int, n_busy: int) -> None:
    rng = np.random.default_rng(seed)
    params = EVArrivalParams(arrivals_per_port_day=per_port)
    ports = np.array(n_ports)
    start_min = (start_step * dt) % 1440
    table = sample_arrivals(rng, params, ports, 1.0, 66.0, start_min=start_min)
    busy = [start_min + dt * rng.integers(1, 40, size=n_busy).astype(float) for _ in n_ports] if n_busy else None
    a = simulate_ports_simpy(table, ports, dt, patience, busy)
    b = simulate_ports_fast(table, ports, dt, patience, busy)
    for name in ("served", "arrival_step", "departure_step", "balked"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    if len(a.served):
        assert a.arrival_step.min() >= start_min // dt


def _plain_arrivals(rng: np.random.Generator, params: EVArrivalParams, ports: np.ndarray, mult: float,
                   first: int) -> ArrivalTable:
    """The arrival table of one day written plainly (Poisson counts per cell, ``nonzero`` and
    ``repeat``, a two-key sort by time and station): the oracle of the batched sampler."""
    mean = mult * component_rates_per_port_h(params)[first:][:, None, :] * ports[None, :, None] * 5 / 60.0
    counts = rng.poisson(mean)
    b, s, c = (np.repeat(x, counts[counts > 0]) for x in np.nonzero(counts))
    t = (first + b + rng.random(b.size)) * 5
    mu = np.log([k.dwell_median_h for k in params.components])[c]
    sig = np.array([k.dwell_sigma for k in params.components])[c]
    dwell = np.clip(np.exp(mu + sig * rng.standard_normal(b.size)), params.dwell_min_h, params.dwell_max_h)
    soc0 = rng.beta(*params.soc_arrival_beta, size=b.size)
    req = rng.uniform(*params.soc_request_range, size=b.size)
    o = np.lexsort((s, t))
    return ArrivalTable(station=s[o], t_arrival_min=t[o], dwell_min=dwell[o] * 60.0, component=c[o],
                        e_arrival_kwh=soc0[o] * 66.0, e_target_kwh=np.maximum(req, soc0)[o] * 66.0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_ports=st.lists(st.integers(1, 5), min_size=1, max_size=4),
       per_port=st.floats(0.0, 8.0), dt=st.sampled_from([5, 15, 60]), start_step=st.integers(0, 30),
       n_days=st.integers(1, 4), shared=st.booleans())
def test_days_sampled_together_are_each_day_alone(seed: int, n_ports: list[int], per_port: float, dt: int,
                                                  start_step: int, n_days: int, shared: bool) -> None:
    """sample_arrivals_each / to_sessions_each over several days (their own generators, or one
    generator drawing the days in turn) equal the plain one-day table and the port queue and
    sessions of each day alone, bit for bit; day d's station s is station d S + s."""
    params = EVArrivalParams(arrivals_per_port_day=per_port)
    ports, n_st = np.array(n_ports), len(n_ports)
    start_min = (start_step * dt) % 1440
    mults = np.random.default_rng(seed).uniform(0.5, 1.5, n_days).tolist()
    gens = ([np.random.default_rng(seed)] * n_days if shared
            else [np.random.default_rng([seed, d]) for d in range(n_days)])
    table, rows = sample_arrivals_each(gens, params, ports, mults, 66.0, start_min)
    ref_gens = ([np.random.default_rng(seed)] * n_days if shared
                else [np.random.default_rng([seed, d]) for d in range(n_days)])
    alone = [_plain_arrivals(g, params, ports, m, start_min // 5) for g, m in zip(ref_gens, mults)]
    assert rows.tolist() == [len(a) for a in alone]
    lo = 0
    for d, ref in enumerate(alone):
        for name in ("t_arrival_min", "dwell_min", "component", "e_arrival_kwh", "e_target_kwh"):
            assert np.array_equal(getattr(table, name)[lo:lo + len(ref)], getattr(ref, name)), name
        assert np.array_equal(table.station[lo:lo + len(ref)], ref.station + d * n_st)
        lo += len(ref)
    res = simulate_ports_fast(table, np.tile(ports, n_days), dt, params.patience_min)
    sessions = to_sessions_each(table, res, n_days, n_st, dt, 66.0, 6.6, 0.9)
    for d, ref in enumerate(alone):
        res_d = simulate_ports_fast(ref, ports, dt, params.patience_min)
        assert np.array_equal(res.balked[d * n_st:(d + 1) * n_st], res_d.balked)
        one = to_sessions(ref, res_d, dt, 66.0, 6.6, 0.9)
        for name, arr in one.to_dict().items():
            assert arr.dtype == getattr(sessions[d], name).dtype, name
            assert np.array_equal(arr, getattr(sessions[d], name)), name


def test_port_limit_makes_evs_balk_or_wait(d33: Layout) -> None:
    tiny = dataclasses.replace(d33, evcs_n_ports=np.ones(11, dtype=int))
    sc = sample_day(tiny, "ev_surge", 3)
    assert sc.ev_balked.sum() > 0
    assert sc.ev_connected.max() <= 1
    relaxed = get_regime("ev_surge", ev=dataclasses.replace(get_regime("ev_surge").ev, patience_min=0.0))
    impatient = sample_day(tiny, relaxed, 3)
    assert impatient.ev_balked.sum() >= sc.ev_balked.sum()


def test_rate_profile_two_peaks_and_integral() -> None:
    params = EVArrivalParams()
    rate = component_rates_per_port_h(params).sum(axis=1)
    hours = (np.arange(288) + 0.5) / 12
    assert 7.5 < hours[np.argmax(np.where(hours < 13, rate, 0))] < 9.5
    assert 17.5 < hours[np.argmax(np.where(hours > 13, rate, 0))] < 19.5
    assert rate[np.argmin(np.abs(hours - 3))] < 0.3 * rate.max()
    np.testing.assert_allclose(expected_arrivals_per_day(params, np.array([20, 10])), [30.0, 15.0])
    surge = EVArrivalParams(surge_factor=2.5)
    np.testing.assert_allclose(expected_arrivals_per_day(surge, np.array([1])), 1.5 * (1 + 1.5 * 0.40))
    with pytest.raises(ValueError, match="surge_component"):
        EVArrivalParams(surge_component="night")
    with pytest.raises(ValueError, match="share"):
        dataclasses.replace(DEFAULT_COMPONENTS[0], share=0.0)


def _roomy(layout: Layout, regime: str, factor: int) -> tuple[Layout, object]:
    """factor x the ports at 1/factor the arrivals per port: same EVs, (almost) never a full station."""
    base = get_regime(regime)
    ev = dataclasses.replace(base.ev, arrivals_per_port_day=base.ev.arrivals_per_port_day / factor)
    return dataclasses.replace(layout, evcs_n_ports=layout.evcs_n_ports * factor), get_regime(base, ev=ev)


def test_mean_arrivals_and_dwell_match_configuration(d33: Layout) -> None:
    roomy, regime = _roomy(d33, "cloudy", 10)
    p = regime.ev
    expected = expected_arrivals_per_day(p, roomy.evcs_n_ports).sum()       # integral of the rate profile
    counts, dwell_steps = [], []
    for s in range(120):
        sc = sample_day(roomy, regime, s, dt_minutes=5)
        assert sc.ev_balked.sum() == 0
        counts.append(len(sc.ev))
        dwell_steps.append(sc.ev.departure_step - sc.ev.arrival_step)
    # daily count ~ Poisson(M Lambda), M ~ Gamma(mean 1, cv 0.15): sd of the mean of 120 days
    sd_mean = np.sqrt(expected + (p.day_rate_cv * expected) ** 2) / np.sqrt(len(counts))
    assert abs(np.mean(counts) - expected) < 4 * sd_mean
    # session dwell = planned dwell rounded out to whole 5-min steps (+ ~1 step on average)
    mean_dwell_h = np.mean(np.concatenate(dwell_steps)) * 5 / 60
    assert abs(mean_dwell_h - (expected_dwell_h(p) + 5 / 60)) < 0.1
    # the raw arrival table matches the configured dwell law closely
    rng = np.random.default_rng(0)
    table = sample_arrivals(rng, p, np.full(11, 2000), 1.0, 66.0)
    assert abs(table.dwell_min.mean() / 60 - expected_dwell_h(p)) < 0.03 * expected_dwell_h(p)
    soc = table.e_arrival_kwh / 66.0
    assert abs(soc.mean() - 0.4) < 0.01                                       # Beta(2, 3)


def test_ev_surge_multiplies_evening_arrivals(d33: Layout) -> None:
    def evening(name: str) -> float:
        roomy, regime = _roomy(d33, name, 10)
        out = []
        for s in range(60):
            sc = sample_day(roomy, regime, s, dt_minutes=60)
            assert sc.ev_balked.sum() == 0
            out.append(sc.ev_arrivals[17:21].sum())
        return float(np.mean(out))

    ratio = evening("ev_surge") / evening("sunny")
    rate = component_rates_per_port_h(get_regime("ev_surge").ev)
    base = component_rates_per_port_h(get_regime("sunny").ev)
    window = slice(17 * 12, 21 * 12)
    assert abs(ratio - rate[window].sum() / base[window].sum()) < 0.15
    assert 3.2 < ratio < 4.2


def test_counts_helpers() -> None:
    from scenarios import EVSessions
    ev = EVSessions(station=[0, 1, 0], arrival_step=[0, 2, 3], departure_step=[2, 5, 4],
                    e_arrival_kwh=[1, 1, 1], e_request_kwh=[2, 2, 2], e_capacity_kwh=[66] * 3,
                    p_max_kw=[6.6] * 3, efficiency=[0.9] * 3)
    np.testing.assert_array_equal(connected_counts(ev, 6, 2), [[1, 0], [1, 0], [0, 1], [1, 1], [0, 1], [0, 0]])
    np.testing.assert_array_equal(arrival_counts(ev, 6, 2)[:, 0], [1, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(connected_counts(ev, 3, 2, start_step=2), [[0, 1], [1, 1], [0, 1]])
