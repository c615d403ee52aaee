"""sample_day: determinism, shapes, errors, regime statistics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from scenarios import REGIMES, Layout, Scenario, get_regime, sample_day
from scenarios.day import ramp_factor, sample_days
from scenarios.profiles import power_curve_pu


def _arrays(sc: Scenario) -> dict[str, np.ndarray]:
    out = {name: getattr(sc, name) for name in ("load_pu", "pv_pu", "wind_speed_ms", "wind_pu",
                                                "tso_requirement_mw", "ev_balked")}
    out.update({f"da_{k}": getattr(sc.day_ahead, k) for k in ("load_pu_da", "pv_k_da", "wind_speed_ms_da",
                                                              "tso_nominal_mw", "ev_rate_per_h_da")})
    out.update({f"ev_{k}": v for k, v in sc.ev.to_dict().items()})
    return out


@pytest.mark.parametrize("regime", list(REGIMES))
def test_same_seed_same_day_bit_for_bit(td: Layout, regime: str) -> None:
    a, b = sample_day(td, regime, 42), sample_day(td, regime, 42)
    for name, arr in _arrays(a).items():
        other = _arrays(b)[name]
        assert arr.dtype == other.dtype and np.array_equal(arr, other), name
        assert arr.tobytes() == other.tobytes(), name
    assert a.ev_rate_multiplier == b.ev_rate_multiplier
    assert np.array_equal(a.wind_ramp_start_h, b.wind_ramp_start_h, equal_nan=True)


@pytest.mark.parametrize("regime", list(REGIMES))
def test_days_sampled_together_are_the_days_sampled_alone(td: Layout, regime: str) -> None:
    """sample_days runs the formulas on a day axis; every day stays sample_day's, bit for bit.
    Nine days of two boundaries: the TSO recursion runs on arrays, a day alone on floats."""
    seeds = [8010, 3, 8011, 123456, 8012, 8013, 8014, 8015, 8016]
    for seed, together in zip(seeds, sample_days(td, regime, seeds)):
        alone = sample_day(td, regime, seed)
        for name, arr in _arrays(alone).items():
            assert arr.dtype == _arrays(together)[name].dtype and arr.tobytes() == _arrays(together)[name].tobytes(), name
        assert together.seed == seed and together.ev_rate_multiplier == alone.ev_rate_multiplier
        assert np.array_equal(together.wind_ramp_start_h, alone.wind_ramp_start_h, equal_nan=True)
    with pytest.raises(ValueError, match="at least one seed"):
        sample_days(td, regime, [])


def test_days_in_ev_table_groups_are_the_days_sampled_alone(td: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    """With EV tables of two days (td: ~660 arrivals a day), five days make groups of 2, 2, 1;
    each day is still sample_day's."""
    import scenarios.ev_ports as ev_ports

    monkeypatch.setattr(ev_ports, "EV_TABLE_ROWS", 1400)
    seeds = [5, 6, 7, 8, 9]
    for seed, together in zip(seeds, sample_days(td, "ev_surge", seeds)):
        alone = sample_day(td, "ev_surge", seed)
        assert together.ev_rate_multiplier == alone.ev_rate_multiplier
        for name, arr in _arrays(together).items():
            assert arr.dtype == _arrays(alone)[name].dtype and arr.tobytes() == _arrays(alone)[name].tobytes(), name


def test_generator_seed_is_reproducible(d33: Layout) -> None:
    a = sample_day(d33, "cloudy", np.random.default_rng(7))
    b = sample_day(d33, "cloudy", np.random.default_rng(7))
    assert all(np.array_equal(x, _arrays(b)[k]) for k, x in _arrays(a).items())
    assert a.seed is None and sample_day(d33, "cloudy", 7).seed == 7


def test_different_seeds_differ(d33: Layout) -> None:
    a, b = sample_day(d33, "cloudy", 1), sample_day(d33, "cloudy", 2)
    for name in ("load_pu", "pv_pu", "wind_speed_ms"):
        assert not np.array_equal(getattr(a, name), getattr(b, name)), name
    assert not np.array_equal(a.ev.to_dict()["e_arrival_kwh"][:5], b.ev.to_dict()["e_arrival_kwh"][:5])


@pytest.mark.parametrize("dt", [5, 15, 60])
def test_shapes_ranges_and_frame(td: Layout, dt: int) -> None:
    sc = sample_day(td, "highly_fluctuating", 3, dt_minutes=dt)
    T = 1440 // dt
    assert sc.n_steps == T
    assert sc.load_pu.shape == (T, len(td.load_names)) == sc.load_pu_da.shape
    assert sc.pv_pu.shape == (T, 0) and sc.wind_pu.shape == (T, len(td.wind_names))
    assert sc.tso_requirement_mw.shape == (T, 2)
    assert np.all((sc.wind_pu >= 0) & (sc.wind_pu <= 1)) and np.all(sc.load_pu >= 0)
    np.testing.assert_array_equal(sc.wind_pu, power_curve_pu(sc.wind_speed_ms))
    np.testing.assert_allclose(sc.load_p_mw, sc.load_pu * td.load_p_mw)
    df = sc.to_frame()
    assert len(df) == T and list(df["step"]) == list(range(T))
    for col in ("time_h", "load_f0_b18", "wind_t_w7", "ev_connected_f1_ev9", "ev_arrivals_f0_ev6", "tso_req_t15_f0"):
        assert col in df.columns
    np.testing.assert_allclose(df["load_f0_b18"], sc.load_p_mw[:, td.load_names.index("f0_b18")])
    assert df.filter(like="ev_arrivals_").to_numpy().sum() == len(sc.ev)
    assert df.filter(like="ev_connected_").to_numpy().max() <= td.evcs_n_ports.max()


def test_pv_in_unit_interval_and_zero_at_night(d33: Layout) -> None:
    sc = sample_day(d33, "highly_fluctuating", 5)
    assert np.all((sc.pv_pu >= 0) & (sc.pv_pu <= 1))
    night = (sc.time_h < 5) | (sc.time_h >= 20)
    assert np.all(sc.pv_pu[night] == 0)
    assert sc.pv_pu.max() > 0.3


def test_bad_dt_regime_grid_seed_raise_clear_errors(d33: Layout) -> None:
    with pytest.raises(ValueError, match=r"dt_minutes must be one of \(5, 15, 60\)"):
        sample_day(d33, "sunny", 0, dt_minutes=10)
    with pytest.raises(ValueError, match="unknown regime 'foggy'.*sunny, cloudy, highly_fluctuating"):
        sample_day(d33, "foggy", 0)
    with pytest.raises(ValueError, match="Layout"):
        sample_day(object(), "sunny", 0)
    with pytest.raises(ValueError, match="seed"):
        sample_day(d33, "sunny", 1.5)
    with pytest.raises(ValueError, match="unknown RegimeParams field.*valid fields"):
        get_regime("sunny", pv_k_meen=0.3)


def test_grid_object_with_layout(d33: Layout) -> None:
    class FakeGrid:
        layout = d33

    a, b = sample_day(FakeGrid(), "sunny", 9), sample_day(d33, "sunny", 9)
    np.testing.assert_array_equal(a.load_pu, b.load_pu)


def test_regime_overrides_and_scaling(d33: Layout) -> None:
    doubled = get_regime("high_penetration", pv_penetration=0.0, wind_penetration=0.0)
    hp = sample_day(d33, doubled, 0)
    np.testing.assert_allclose(hp.day_ahead.pv_p_max_mw, 2 * d33.pv_p_max_mw)
    np.testing.assert_allclose(hp.day_ahead.wind_p_max_mw, 2 * d33.wind_p_max_mw)
    np.testing.assert_allclose(hp.pv_p_mw, hp.pv_pu * 2 * d33.pv_p_max_mw)
    quiet = sample_day(d33, get_regime("cloudy", load_err_sd=0.0), 0)
    np.testing.assert_allclose(quiet.load_pu, quiet.load_pu_da)


def test_scenario_validation_names_the_field(d33: Layout) -> None:
    sc = sample_day(d33, "sunny", 0)
    with pytest.raises(ValueError, match="Scenario.load_pu"):
        dataclasses.replace(sc, load_pu=sc.load_pu[:-1])
    with pytest.raises(ValueError, match="Scenario.pv_pu"):
        dataclasses.replace(sc, pv_pu=sc.pv_pu + 2.0)
    with pytest.raises(TypeError):
        Scenario(day_ahead=sc.day_ahead, regme="x")  # unknown keyword


# ----------------------------------------------------------------------------- statistics


def test_pv_energy_sunny_above_cloudy_and_fluctuating_most_variable(d33: Layout) -> None:
    stats = {}
    for regime in ("sunny", "cloudy", "highly_fluctuating"):
        days = [sample_day(d33, regime, s) for s in range(30)]
        energy = np.mean([d.pv_pu.sum() for d in days])
        step_var = np.mean([np.mean(np.diff(d.pv_pu, axis=0) ** 2) for d in days])
        stats[regime] = (energy, step_var)
    assert stats["sunny"][0] > 1.5 * stats["cloudy"][0]
    assert stats["highly_fluctuating"][1] > 3 * max(stats["sunny"][1], stats["cloudy"][1])


def test_wind_ramp_event_drops_speed_and_is_not_forecast(d33: Layout) -> None:
    p = get_regime("wind_ramp")
    ratios, da_ratios = [], []
    for s in range(20):
        sc = sample_day(d33, "wind_ramp", s)
        t0 = sc.wind_ramp_start_h
        assert p.ramp_window_h[0] <= t0 <= p.ramp_window_h[1]
        mid = sc.time_h + sc.dt_minutes / 120
        bottom = (mid > t0 + p.ramp_down_h) & (mid < t0 + p.ramp_down_h + p.ramp_hold_h)
        before = (mid > t0 - 3) & (mid < t0)
        ratios.append(sc.wind_speed_ms[bottom].mean() / sc.wind_speed_ms[before].mean())
        da = sc.day_ahead.wind_speed_ms_da
        da_ratios.append(da[bottom].mean() / da[before].mean())
    assert np.median(ratios) < 0.3                      # ~ 1 - depth = 0.15
    assert 0.8 < np.median(da_ratios) < 1.2             # the day-ahead forecast does not see it
    assert np.all(np.isnan([sample_day(d33, "sunny", s).wind_ramp_start_h for s in range(3)]))


def test_ramp_factor_trapezoid() -> None:
    p = get_regime("wind_ramp")
    h = np.array([9.0, 10.0, 10.25, 10.5, 11.5, 12.5, 13.25, 14.0, 20.0])
    f = ramp_factor(h, 10.0, p)
    np.testing.assert_allclose(f, [1, 1, 1 - p.ramp_depth / 2, 1 - p.ramp_depth, 1 - p.ramp_depth,
                                   1 - p.ramp_depth, 1 - p.ramp_depth / 2, 1, 1])


def test_tso_requirement_stays_in_budget_set(td: Layout) -> None:
    for s in range(10):
        sc = sample_day(td, "cloudy", s)
        for j in range(2):
            budget = sc.day_ahead.tso_budget_set(j)
            assert budget.contains(sc.tso_requirement_mw[:, j])
            assert budget.gamma == 16.0
    days = [sample_day(td, "cloudy", s) for s in range(10)]
    devs = np.concatenate([d.tso_requirement_mw - d.tso_requirement_mw_da for d in days])
    assert np.mean(devs != 0) > 0.05                    # calls do happen


@pytest.mark.parametrize("regime", ["cloudy", "ev_surge"])
def test_heap_and_simpy_port_models_sample_the_same_day(td: Layout, regime: str) -> None:
    """The day sampler's default port queue (a heap of release times) and the simpy process
    model give the same EV sessions and balking, so the faster one can be the default."""
    seeds = list(range(8100, 8106))
    together = sample_days(td, regime, seeds, ev_port_model="simpy")    # simpy over the days' merged stations
    for seed, c in zip(seeds, together):
        a = sample_day(td, regime, seed, ev_port_model="heap")
        b = sample_day(td, regime, seed, ev_port_model="simpy")
        for other in (b, c):
            assert a.ev_balked.tolist() == other.ev_balked.tolist()
            for name in ("station", "arrival_step", "departure_step", "e_arrival_kwh", "e_request_kwh"):
                assert np.array_equal(getattr(a.ev, name), getattr(other.ev, name)), name


def test_unknown_port_model_is_rejected(d33: Layout) -> None:
    with pytest.raises(ValueError, match="ev_port_model must be one of"):
        sample_day(d33, "cloudy", 1, ev_port_model="queue")
