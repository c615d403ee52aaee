"""flex_coordinated (seed 002 §4): the plan honours the flexibility balance and the boundary limits."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import env  # noqa: F401  (registers the envs)
from policies import make_policy
from policies.flex_coordinated import FlexSettings


def _first_window(name: str, seed: int = 4, **flex):  # noqa: ANN202
    e = gym.make("gridroll/TDGrid-v0", case="t14d2", regime="cloudy")
    base = e.unwrapped
    policy = make_policy(name, base.grid, flex=FlexSettings(**flex)) if flex else make_policy(name, base.grid)
    obs, _ = e.reset(seed=seed, options={"scenario_seed": seed})
    policy.reset(seed)
    o = base.simulator.observe()
    dispatch = policy.act(o)
    assert policy.fallback_log == []
    (window,) = policy._windows.values()
    return policy, window, dispatch


@pytest.fixture(scope="module")
def planned():
    return _first_window("flex_coordinated", boundary_p_max_mw=4.0)


def test_plan_meets_the_flexibility_balance(planned) -> None:  # noqa: ANN001
    policy, w, dispatch = planned
    K = w.K
    up = w.th.r_up_mw.value.sum(axis=0)
    short = w.short_up.value
    need = w.margin_up.value + w.ev_rd.value.sum(axis=0)
    cons_up = [c for c in w.problem.constraints if "feeder_flex_up" in str(c)]
    assert cons_up                                        # the feeders' flexibility is in the problem
    fu = next(v for v in w.problem.variables() if v.name() == "feeder_flex_up").value
    assert np.all(up + fu.sum(axis=0) + short >= need - 1e-5)
    assert np.allclose(w.margin_up.value[:K], policy.demand_up_mw[:K])
    assert dispatch.thermal_r_up_mw.sum() == pytest.approx(up[0], abs=1e-6)
    assert policy.demand_up_mw.min() > 0 and policy.demand_down_mw.min() > 0


def test_plan_respects_the_boundary_flexibility_limits(planned) -> None:  # noqa: ANN001
    _, w, _ = planned
    var = {v.name(): v.value for v in w.problem.variables()}
    head, fu, fd = var["head_per_feeder"], var["feeder_flex_up"], var["feeder_flex_dn"]
    p_b = 4.0
    assert np.all(fu <= p_b + head + 1e-6) and np.all(fd <= p_b - head + 1e-6)
    assert np.all(fu >= -1e-9) and np.all(fd >= -1e-9)
    heads = np.vstack([h.value for h in w.net.head_mw])
    assert np.allclose(head, heads, atol=1e-6)


def test_economic_dispatch_only_clears_no_flexibility() -> None:
    policy, w, dispatch = _first_window("flex_coordinated_ed")
    assert policy.name == "flex_coordinated_ed" and policy.demand_up_mw.min() > 0     # sized, not enforced
    stats = policy.day_stats()
    assert stats["flex_shortfall_h"] == pytest.approx(0.25)                # the step it planned is short
    assert np.all(w.margin_up.value == 0) and np.all(w.margin_dn.value == 0)
    assert dispatch.thermal_r_up_mw.sum() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_removing_the_flexibility_balance_sheds_load_on_day_8600() -> None:
    """Seed 8600 (cloudy, the comparison's day 0): economic dispatch only clears no reserve and sheds
    load when the realized net load exceeds the plan; the p-box balance holds enough not to (~60 s)."""
    from controller.loop import LoopSettings, RollingController

    out = {}
    for name in ("flex_coordinated", "flex_coordinated_ed"):
        e = gym.make("gridroll/TDGrid-v0", case="t14d2", regime="cloudy")
        policy = make_policy(name, e.unwrapped.grid)
        out[name] = RollingController(e, policy, settings=LoopSettings(reactive=False)).run_day(8600).summary
        assert out[name]["fallback_steps"] == 0
    assert out["flex_coordinated"]["load_shed_mwh"] == 0.0
    assert out["flex_coordinated_ed"]["load_shed_mwh"] > 0.01
    assert out["flex_coordinated"]["flex_shortfall_h"] < out["flex_coordinated_ed"]["flex_shortfall_h"]


def _run(policy, steps: int, seed: int = 4) -> list:  # noqa: ANN001
    e = gym.make("gridroll/TDGrid-v0", case="t14d2", regime="cloudy")
    e.reset(seed=seed, options={"scenario_seed": seed})
    sim = e.unwrapped.simulator
    policy.reset(seed)
    played = []
    for _ in range(steps):
        o = sim.observe()
        d = policy.act(o)
        played.append((o, d))
        sim.step(d)
    return played


def test_replans_exactly_at_the_interval_and_plays_the_plan_between() -> None:
    """Hourly re-planning on 15-min steps: the window is solved at steps 0, 4, 8; steps 1-3 and
    5-7 play the stored plan's columns with the recourse (thermal moved within its cleared reserves)."""
    e = gym.make("gridroll/TDGrid-v0", case="t14d2", regime="cloudy")
    policy = make_policy("flex_coordinated", e.unwrapped.grid, flex=FlexSettings(replan_every_h=1.0))
    played = _run(policy, 9)
    assert played[0][0].dt_h == 0.25
    assert policy.replan_steps == [0, 4, 8]
    assert policy.statuses == ["optimal"] * 3 and policy.fallback_log == []
    assert policy.ev_forecaster.replay_failures == 0      # the EV replay follows the steps played in between
    assert len(policy.shortfall_mw) == 9
    g = e.unwrapped.grid.transmission.gen
    for o, d in played:                         # the recourse stays inside the units' limits and the cleared band
        assert np.all(d.thermal_p_mw >= g.p_min_mw - 1e-6) and np.all(d.thermal_p_mw <= g.p_max_mw + 1e-6)
        assert np.all(d.thermal_r_up_mw >= -1e-9) and np.all(d.thermal_r_dn_mw >= -1e-9)
    every = make_policy("flex_coordinated", e.unwrapped.grid, flex=FlexSettings(replan_every_h=0.25))
    _run(every, 3)
    assert every.replan_steps == [0, 1, 2]


def test_recourse_moves_thermal_by_the_net_load_deviation_within_reserves() -> None:
    """Between re-plans, a step whose observed load exceeds the plan's by x MW raises the thermal
    setpoints by min(x, cleared up-reserve), pro rata, and takes that out of the reserve."""
    e = gym.make("gridroll/TDGrid-v0", case="t14d2", regime="cloudy")
    policy = make_policy("flex_coordinated", e.unwrapped.grid)
    (o0, _), = _run(policy, 1)
    w = policy._plan
    plain = policy._first_step(w, o0, col=1)
    for extra in (3.0, 1e4):
        plan_load = float(w.load_t.value[1]) + sum(float(lp.value[:, 1].sum()) for lp in w.lp)
        load = np.asarray(o0.load_p_mw, dtype=float) * (plan_load + extra) / float(np.sum(o0.load_p_mw))
        used = np.asarray(w.used.value)[:, 1]
        fake = _Obs(load_p_mw=load, der_avail_mw=np.maximum(used, np.asarray(o0.der_avail_mw)))
        d = policy._recourse(w, fake, 1)
        move = d.thermal_p_mw - plain.thermal_p_mw
        r_up = plain.thermal_r_up_mw
        assert r_up.sum() > 3.0                      # the plan cleared up-reserve to move within
        assert move.sum() == pytest.approx(min(extra, r_up.sum()), rel=1e-6, abs=1e-6)
        assert np.all(move <= r_up + 1e-9)
        assert np.allclose(d.thermal_r_up_mw, r_up - move)


class _Obs:
    def __init__(self, **kw) -> None:  # noqa: ANN003
        self.__dict__.update(kw)


def test_a_failed_replan_is_recorded_and_retried_next_step(monkeypatch) -> None:  # noqa: ANN001
    e = gym.make("gridroll/TDGrid-v0", case="t14d2", regime="cloudy")
    policy = make_policy("flex_coordinated", e.unwrapped.grid)
    real = policy._solve
    calls = {"n": 0}

    def failing(w):  # noqa: ANN001, ANN202
        calls["n"] += 1
        return ("", "CLARABEL: infeasible (forced)") if calls["n"] == 2 else real(w)

    monkeypatch.setattr(policy, "_solve", failing)
    _run(policy, 7)
    assert policy.fallback_log == [(4, "CLARABEL: infeasible (forced)")]
    assert policy.replan_steps == [0, 4, 5]
    assert policy.fallbacks == 1 and policy.day_stats()["mpc_fallbacks"] == 1.0


def test_plan_moves_power_over_the_tie_within_its_limit(planned) -> None:  # noqa: ANN001
    """The tie's planned transfer enters both feeders' bus balances (DS1 consumes it at its
    node, DS2 receives it), stays within 1 MW, and the dispatch hands the first step to the env."""
    policy, w, dispatch = planned
    x = w.tie.value
    assert x.shape == (1, w.K) and np.all(np.abs(x) <= 1.0 + 1e-6)
    assert dispatch.tie_p_mw.shape == (1,) and dispatch.tie_p_mw[0] == pytest.approx(x[0, 0], abs=1e-9)
    # the LinDistFlow heads carry the transfer: head_k = (the feeder's own net load) +/- x
    ix = policy.index
    used, ev, st = w.used.value, w.ev.p_mw.value, w.st.net_mw.value
    heads = np.vstack([h.value for h in w.net.head_mw])
    for k, sign in ((0, 1.0), (1, -1.0)):
        own = (w.lp[k].value.sum(axis=0) - (ix.der_bus[k] @ used).sum(axis=0) + (ix.ev_bus[k] @ ev).sum(axis=0)
               + (ix.storage_bus[k] @ st).sum(axis=0))
        assert np.allclose(heads[k], own + sign * x[0], atol=1e-5)
