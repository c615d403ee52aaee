"""The reference unit stays within its limits or the excess is recorded and priced (issue 12, item 3)."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest

import env
from env.balancing import settle_reference
from env.dispatch import Dispatch
from env.simulator import GridModel, GridSimulator
from scenarios.day import sample_day

TOL_MW = 1e-6


def _within_limits_or_recorded(model: GridModel, info: dict, thermal: np.ndarray) -> None:
    below = np.maximum(model.g_p_min - thermal, 0.0)
    above = np.maximum(thermal - model.g_p_max, 0.0)
    outside = float(max(below.max(), above.max()))
    recorded = info["violations"]["ref_unit_limit_mw"]
    assert outside == pytest.approx(recorded, abs=TOL_MW), (thermal, recorded)
    if recorded:
        assert info["cost"]["unit_limit"] > 0


@pytest.mark.parametrize("seed", [1, 3])
def test_random_extreme_actions_keep_thermal_units_within_limits_on_t30d2(seed: int) -> None:
    """Bang-bang random actions (each entry -1 or +1) on t30d2: on the code before this fix the
    reference unit went below p_min (to -0.026 MW) on some steps with nothing recorded."""
    e = gym.make("gridroll/T30D2-v0")
    model = e.unwrapped.model
    rng = np.random.default_rng(seed)
    e.reset(seed=seed)
    done, n = False, 0
    n_der_f = sum(len(f.der) for f in e.unwrapped.grid.feeders)
    n_load_f = sum(len(f.load) for f in e.unwrapped.grid.feeders)
    while not done:
        a = rng.choice([-1.0, 1.0], e.action_space.shape)
        _, reward, done, _, info = e.step(a)
        out = e.unwrapped.last_outcome
        _within_limits_or_recorded(model, info, out.thermal_p_mw)
        gen = out.thermal_p_mw.sum() + out.der_used_mw[n_der_f:].sum()
        use = out.load_served_mw[n_load_f:].sum() + out.head_p_mw.sum()
        assert gen == pytest.approx(use, abs=TOL_MW)
        assert reward == pytest.approx(-info["cost"]["total"])
        n += 1
    assert n == 96


def test_an_excess_nobody_can_take_is_recorded_and_priced() -> None:
    """No other unit has room and there is no wind to spill: the reference unit ends below
    p_min by the residual, which is recorded as ``ref_unit_limit_mw`` and priced."""
    grid = env.load_case("t30d2")
    model = GridModel(grid)
    k = model.ref_unit
    thermal = model.g_p_min.copy() + 0.0
    thermal[k] -= 0.2                                     # the residual took it 0.2 MW below p_min
    der_used = np.zeros(model.n_der_f + 3)
    shed_t, left = settle_reference(model, thermal, der_used, np.ones(4), 0.0)
    assert left == pytest.approx(0.2) and shed_t == 0.0
    assert thermal[k] == pytest.approx(model.g_p_min[k] - 0.2)


def test_a_surplus_goes_to_the_other_units_then_to_wind() -> None:
    grid = env.load_case("t30d2")
    model = GridModel(grid)
    k = model.ref_unit
    thermal = model.g_p_min.copy() + 0.1                  # the others have 0.1 MW of room each
    thermal[k] = model.g_p_min[k] - 0.5
    n_t_wind = len(grid.transmission.der)
    der_used = np.concatenate([np.zeros(model.n_der_f), np.full(n_t_wind, 1.0)])
    before = thermal.sum() + der_used.sum()
    shed_t, left = settle_reference(model, thermal, der_used, np.ones(4), 0.0)
    assert left == 0.0 and shed_t == 0.0
    assert thermal[k] == pytest.approx(model.g_p_min[k])
    assert np.all(thermal >= model.g_p_min - 1e-12)
    others = [i for i in range(len(thermal)) if i != k]
    np.testing.assert_allclose(thermal[others], model.g_p_min[others])          # all their room used
    assert der_used.sum() == pytest.approx(n_t_wind - (0.5 - 0.1 * len(others)))  # the rest spilled
    assert thermal.sum() + der_used.sum() == pytest.approx(before)   # generation total unchanged


def test_a_deficit_goes_to_the_other_units_then_to_shedding() -> None:
    grid = env.load_case("t30d2")
    model = GridModel(grid)
    k = model.ref_unit
    thermal = model.g_p_max.copy()
    thermal[k] += 0.3                                     # nobody has room
    load_t = np.full(4, 10.0)
    shed_t, left = settle_reference(model, thermal, np.zeros(model.n_der_f), load_t, 0.0)
    assert left == 0.0 and thermal[k] == pytest.approx(model.g_p_max[k])
    assert shed_t * load_t.sum() == pytest.approx(0.3)


def test_step_outcome_carries_the_new_keys() -> None:
    grid = env.load_case("d33")
    sim = GridSimulator(grid, sample_day(grid, "cloudy", 11))
    out = sim.step(Dispatch.zeros(grid))
    assert out.violations["ref_unit_limit_mw"] == 0.0 and out.cost["unit_limit"] == 0.0
    assert dataclasses.is_dataclass(out)
