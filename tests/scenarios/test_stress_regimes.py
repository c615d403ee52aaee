"""The stress regimes bind: each one pushes the cases it is run on past a limit that the normal
regimes leave alone (heuristic days with the compensators at 0, so the binding is the grid's own)."""

from __future__ import annotations

import numpy as np
import pytest

import env
from controller.loop import LoopSettings, RollingController
from policies import make_policy
from scenarios import sample_day
from scenarios.day import der_capacity_mw
from scenarios.regimes import get_regime


def _day(case: str, regime: str, seed: int):  # noqa: ANN202
    e = env.TDGridEnv(case=case, regime=regime)
    return RollingController(e, make_policy("heuristic", e.grid), settings=LoopSettings(reactive=False)).run_day(seed)


def test_der_capacity_is_sized_to_each_networks_peak_load() -> None:
    lay = env.load_case("t30d2").layout
    p = get_regime("high_penetration")
    pv, wind = der_capacity_mw(lay, p)
    assert pv.size == 0                                         # t30d2 has no PV: none is invented
    nets = np.array([n.split("_")[0] for n in lay.wind_names])
    loads = np.array([n.split("_")[0] for n in lay.load_names])
    for g in ("f0", "f1", "t"):
        installed = lay.wind_p_max_mw[nets == g].sum() * p.wind_scale
        want = max(installed, p.wind_penetration * lay.load_p_mw[loads == g].sum())
        assert wind[nets == g].sum() == pytest.approx(want)
    # the normal regimes keep the case's own sizes
    pv0, wind0 = der_capacity_mw(env.load_case("d33").layout, get_regime("cloudy"))
    np.testing.assert_array_equal(pv0, env.load_case("d33").layout.pv_p_max_mw)
    assert sample_day(env.load_case("d33").layout, "high_penetration", 1).day_ahead.pv_p_max_mw.sum() \
        == pytest.approx(2.5 * env.load_case("d33").layout.load_p_mw.sum())


@pytest.mark.parametrize("seed", [1, 2])
def test_high_penetration_reverses_d33_and_lifts_voltage_past_its_limit(seed: int) -> None:
    hp, cloudy = _day("d33", "high_penetration", seed), _day("d33", "cloudy", seed)
    head = hp.steps[hp.steps.area == "f0"].head_p_mw
    assert head.min() < -1.0 and hp.summary["v_max_pu"] > 1.05
    assert cloudy.steps[cloudy.steps.area == "f0"].head_p_mw.min() > 0 and cloudy.summary["v_max_pu"] <= 1.05


def test_wind_ramp_on_t30d2_needs_shedding() -> None:
    ramp, cloudy = _day("t30d2", "wind_ramp", 1), _day("t30d2", "cloudy", 1)
    sys_rows = ramp.steps[ramp.steps.area == "system"]
    assert ramp.summary["load_shed_mwh"] > 1.0
    assert sys_rows.imbalance_mw.max() > 10.0                   # MW short in one step after the drop
    assert ramp.summary["load_shed_mwh"] > cloudy.summary["load_shed_mwh"] + 1.0


def test_ev_surge_pushes_d33_stations_and_voltage() -> None:
    surge, base = _day("d33", "ev_surge", 1), _day("d33", "sunny", 1)
    assert surge.summary["ev_unmet_mwh"] > 3 * base.summary["ev_unmet_mwh"]
    sys_s, sys_b = surge.steps[surge.steps.area == "system"], base.steps[base.steps.area == "system"]
    assert sys_s.ev_p_mw.max() > 1.3 * sys_b.ev_p_mw.max()
    assert surge.summary["v_min_pu"] < base.summary["v_min_pu"] - 0.005
