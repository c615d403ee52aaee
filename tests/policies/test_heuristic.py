"""Seed 003's base rule, checked step by step against its definition."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest

import env  # noqa: F401
from env.physics.grid_flow import merit_order
from policies.heuristic import HeuristicPolicy, storage_rule


def _env(case: str = "d33", seed: int = 2):  # noqa: ANN202
    e = gym.make("gridroll/TDGrid-v0", case=case, regime="sunny")
    e.reset(seed=seed, options={"scenario_seed": seed})
    return e.unwrapped


def _advance_to(base, hour: float, policy: HeuristicPolicy):  # noqa: ANN001, ANN202
    while base.observation_typed.time_h < hour:
        base.step_dispatch(policy.act(base.observation_typed))
    return base.observation_typed


def test_evs_charge_as_soon_as_possible() -> None:
    base = _env()
    policy = HeuristicPolicy(base.grid)
    obs = _advance_to(base, 9.0, policy)
    d = policy.act(obs)
    np.testing.assert_allclose(d.ev_p_mw, obs.ev.p_max_kw / 1e3)
    assert d.ev_p_mw.sum() > 0


def test_storage_covers_deficit_at_night_and_never_curtails() -> None:
    base = _env()
    policy = HeuristicPolicy(base.grid)
    obs = base.observation_typed  # midnight: load, no PV -> deficit
    d = policy.act(obs)
    p_max = base.grid.feeders[0].storage.p_max_mw
    np.testing.assert_allclose(d.storage_p_mw, -p_max)  # 0.3 MW deficit share is far below the deficit
    np.testing.assert_array_equal(d.der_curtail_frac, 0.0)


def test_storage_absorbs_a_surplus() -> None:
    base = _env()
    grid = base.grid
    big_pv = dataclasses.replace(grid.feeders[0].der, p_max_mw=grid.feeders[0].der.p_max_mw * 20)
    feeder = dataclasses.replace(grid.feeders[0], der=big_pv)
    policy = HeuristicPolicy(dataclasses.replace(grid, feeders=(feeder,)))
    obs = _advance_to(base, 12.0, HeuristicPolicy(grid))
    obs20 = dataclasses.replace(obs, der_avail_mw=obs.der_avail_mw * 20)
    surplus = obs20.der_avail_mw.sum() - obs20.load_p_mw.sum() - obs20.ev.p_max_kw.sum() / 1e3
    assert surplus > 0
    d = policy.act(obs20)
    room = (feeder.storage.e_max_mwh - obs.storage_e_mwh) / (feeder.storage.eta_charge * obs.dt_h)
    np.testing.assert_allclose(d.storage_p_mw, np.minimum(np.minimum(surplus, feeder.storage.p_max_mw), room))


def test_no_exchange_curtails_exports_only() -> None:
    base = _env()
    policy = HeuristicPolicy(base.grid, no_exchange=True)
    obs = _advance_to(base, 12.5, HeuristicPolicy(base.grid))
    d = policy.act(obs)
    net = base.grid.feeders[0]
    demand = np.bincount(net.load.bus, weights=obs.load_p_mw, minlength=net.n_bus)
    demand += np.bincount(net.evcs.bus, weights=d.ev_p_mw, minlength=net.n_bus)
    used = obs.der_avail_mw * (1 - d.der_curtail_frac)
    used_bus = np.bincount(net.der.bus, weights=used, minlength=net.n_bus)
    assert np.all(used_bus <= demand + 1e-12)  # no node exports
    avail_bus = np.bincount(net.der.bus, weights=obs.der_avail_mw, minlength=net.n_bus)
    np.testing.assert_allclose(used_bus, np.minimum(avail_bus, demand))  # and it keeps all it can use


def test_td_thermal_follows_merit_order_within_ramps_with_reserve_margin() -> None:
    base = _env("t30d2")
    policy = HeuristicPolicy(base.grid, reserve_margin=0.1)
    obs = base.observation_typed
    d = policy.act(obs)
    g = base.grid.transmission.gen
    ramp = g.ramp_mw_per_h * obs.dt_h
    assert np.all(np.abs(d.thermal_p_mw - obs.thermal_p_last_mw) <= ramp + 1e-9)
    lo = np.maximum(g.p_min_mw, obs.thermal_p_last_mw - ramp)
    hi = np.minimum(g.p_max_mw, obs.thermal_p_last_mw + ramp)
    expected = merit_order(lo, hi, g.cost_c1_per_mwh, d.thermal_p_mw.sum())
    np.testing.assert_allclose(d.thermal_p_mw, expected, atol=1e-9)
    assert d.thermal_r_up_mw.sum() == pytest.approx(min(0.1 * d.thermal_p_mw.sum(),
                                                        np.minimum(g.p_max_mw - d.thermal_p_mw, ramp).sum()), rel=0.05)
    assert np.all(d.thermal_r_up_mw <= np.minimum(g.p_max_mw - d.thermal_p_mw, ramp) + 1e-9)


def test_merit_order_fills_cheapest_first() -> None:
    p = merit_order(np.zeros(3), np.array([50.0, 50.0, 50.0]), np.array([3.0, 1.0, 2.0]), 80.0)
    np.testing.assert_allclose(p, [0.0, 50.0, 30.0])


def _merit_order_one(lo: np.ndarray, hi: np.ndarray, c1: np.ndarray, demand: float) -> np.ndarray:
    """The definition, unit by unit: cheapest first, each up to its limit while demand remains."""
    p, rest = lo.copy(), demand - lo.sum()
    for g in sorted(range(len(c1)), key=lambda i: (c1[i], i)):
        step = min(max(rest, 0.0), max(hi[g] - lo[g], 0.0))
        p[g] += step
        rest -= step
    return p


def test_merit_order_on_a_batch_equals_each_row_by_its_definition() -> None:
    rng = np.random.default_rng(8160)
    lo = rng.uniform(0, 20, (40, 5))
    hi = lo + rng.uniform(0, 30, (40, 5))
    c1 = np.array([3.0, 1.0, 2.0, 1.0, 5.0])                     # a tie: unit order decides
    demand = rng.uniform(-10, 200, 40)
    batch = merit_order(lo, hi, c1, demand)
    for i in range(40):
        np.testing.assert_allclose(batch[i], _merit_order_one(lo[i], hi[i], c1, demand[i]), atol=1e-9)
    shared = merit_order(lo[0], hi[0], c1, demand)                 # one set of limits, a batch of demands
    for i in range(40):
        np.testing.assert_allclose(shared[i], _merit_order_one(lo[0], hi[0], c1, demand[i]), atol=1e-9)


def test_storage_rule_absorbs_the_net_within_its_range_and_never_stores_without_exchange() -> None:
    net = np.array([-0.5, -0.1, 0.0, 0.1, 0.5])                  # - = surplus
    lo, hi = np.full(5, -0.3), np.full(5, 0.2)
    np.testing.assert_allclose(storage_rule(net, lo, hi, no_exchange=False), [0.2, 0.1, 0.0, -0.1, -0.3])
    np.testing.assert_allclose(storage_rule(net, lo, hi, no_exchange=True), [0.0, 0.0, 0.0, -0.1, -0.3])


def test_bad_reserve_margin_raises() -> None:
    with pytest.raises(ValueError, match="reserve_margin"):
        HeuristicPolicy(env.load_case("d33"), reserve_margin=1.5)
