"""The Gymnasium env: API conformance, determinism, vector envs, errors, physical-unit control."""

from __future__ import annotations

import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import env
from env import Dispatch, TDGridEnv

IDS = sorted(env.ENV_IDS)


@pytest.mark.parametrize("env_id", IDS)
def test_check_env(env_id):
    e = gym.make(env_id)
    assert e.spec.max_episode_steps == 96
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(e.unwrapped)
    complaints = [str(w.message) for w in caught if "gymnasium" in w.filename]
    assert not complaints, complaints


def _trajectory(env_id: str, seed: int, n_steps: int) -> tuple[list[dict], list[float], list[bool]]:
    e = gym.make(env_id)
    e.action_space.seed(seed)
    obs, _ = e.reset(seed=seed)
    observations, rewards, dones = [obs], [], []
    for _ in range(n_steps):
        obs, reward, terminated, truncated, _ = e.step(e.action_space.sample())
        observations.append(obs)
        rewards.append(reward)
        dones.append(terminated or truncated)
        if terminated or truncated:
            break
    return observations, rewards, dones


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_trajectory(env_id):
    a = _trajectory(env_id, seed=7, n_steps=96)
    b = _trajectory(env_id, seed=7, n_steps=96)
    assert len(a[1]) == len(b[1]) == 96 and a[2][-1] and not any(a[2][:-1])
    assert a[1] == b[1]
    for oa, ob in zip(a[0], b[0]):
        for key in oa:
            np.testing.assert_array_equal(oa[key], ob[key])
    c = _trajectory(env_id, seed=8, n_steps=5)
    assert c[1] != a[1][:5]


def test_scenario_seed_option_picks_the_day():
    e = TDGridEnv()
    o1, info1 = e.reset(seed=1, options={"scenario_seed": 123})
    o2, info2 = e.reset(seed=2, options={"scenario_seed": 123})
    assert info1["scenario_seed"] == info2["scenario_seed"] == 123
    for key in o1:
        np.testing.assert_array_equal(o1[key], o2[key])
    with pytest.raises(ValueError, match=r"unknown options \['day'\].*scenario_seed"):
        e.reset(options={"day": 3})


def test_sync_vector_env_steps():
    venv = gym.vector.SyncVectorEnv([lambda: gym.make("gridroll/D33-v0") for _ in range(2)])
    obs, _ = venv.reset(seed=[3, 4])
    assert obs["load"].shape == (2, 32) and obs["ev"].shape == (2, 11, 4)
    assert not np.array_equal(obs["load"][0], obs["load"][1])
    venv.action_space.seed(0)
    ends = 0
    for _ in range(100):                     # crosses the end of the day (96 steps) and autoresets
        obs, reward, terminated, truncated, info = venv.step(venv.action_space.sample())
        assert reward.shape == (2,) and np.isfinite(reward).all()
        assert venv.single_observation_space.contains({k: v[0] for k, v in obs.items()})
        ends += int(terminated.sum())
    assert ends == 2
    venv.close()


def test_step_info_and_termination():
    e = gym.make("gridroll/T30D2-v0")
    e.reset(seed=0)
    u = e.unwrapped
    for t in range(96):
        obs, reward, terminated, truncated, info = e.step(e.action_space.sample())
        # the env terminates at the day's end; only the TimeLimit wrapper (96 steps) truncates
        assert terminated == (t == 95) and truncated == (t == 95)
    assert reward == -info["cost"]["total"]
    u.reset(seed=0)
    results = [u.step(u.action_space.sample()) for _ in range(96)]
    assert [r[2] for r in results] == [False] * 95 + [True] and not any(r[3] for r in results)
    for key in ("cost", "violations", "projection", "v_min_pu", "v_max_pu", "losses_mw", "import_mw"):
        assert key in info
    assert info["v_min_pu"].shape == (2,) and info["losses_mw"] > 0
    assert set(info["projection"]) >= {"ev_p_mw", "thermal_p_mw", "q_comp_mvar"}
    with pytest.raises(RuntimeError, match="over"):
        u.step(e.action_space.sample())


@pytest.mark.parametrize("env_id", ["gridroll/D33-v0", "gridroll/T30D2-v0"])
def test_bad_actions_raise_naming_the_field(env_id):
    e = gym.make(env_id).unwrapped
    e.reset(seed=0)
    n = e.action_space.shape[0]
    with pytest.raises(ValueError, match=rf"shape \({n},\).*ev_p_mw\[0:"):
        e.step(np.zeros(n + 1, dtype=np.float32))
    with pytest.raises(ValueError, match=rf"shape \({n},\)"):
        e.step(np.zeros((1, n), dtype=np.float32))
    a = np.zeros(n, dtype=np.float32)
    a[12] = np.nan                                     # d33: der_curtail_frac[0]; t30d2: ev_p_mw[12]
    field = "der_curtail_frac[0]" if env_id.endswith("D33-v0") else "ev_p_mw[12]"
    with pytest.raises(ValueError, match=r"action\[12\] \(" + re.escape(field) + r"\) is nan"):
        e.step(a)
    a[12] = np.inf
    with pytest.raises(ValueError, match="finite"):
        e.step(a)


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"case": "d34"}, r"unknown case 'd34'; valid cases: \['d33', 'd69', 't30d2', 't30d5', 't118d10', 't14d2'"),  # (+ SimBench cases)
    ({"regime": "stormy"}, r"unknown regime 'stormy'; valid regimes: \[.*'sunny'.*'cloudy'"),
    ({"dt_minutes": 10}, r"dt_minutes must be one of \[5, 15, 60\]"),
    ({"reactive": "socp"}, r"reactive must be one of \['none', 'action'\]"),
    ({"colour": "red"}, r"unknown keyword arguments \['colour'\]; valid: \['case', 'regime', .*'v2g'"),
])
def test_bad_constructor_arguments_list_the_valid_ones(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        TDGridEnv(**kwargs)
    with pytest.raises(ValueError, match=pattern):
        gym.make("gridroll/TDGrid-v0", **kwargs)


def test_step_dispatch_projects_and_reports_out_of_range_values():
    e = TDGridEnv(case="d33")
    e.reset(seed=5)
    b = e.observation_typed.ev
    z = Dispatch.zeros(e.grid)
    d = z.replace(ev_p_mw=np.full(11, 50.0), storage_p_mw=np.array([-9.0]), der_curtail_frac=np.full(6, 3.0))
    _, _, _, _, info = e.step_dispatch(d)
    proj = info["projection"]
    np.testing.assert_allclose(proj["ev_p_mw"], b.p_max_kw / 1e3 - 50.0)
    assert proj["storage_p_mw"][0] > 8.0
    np.testing.assert_allclose(proj["der_curtail_frac"], -2.0)
    np.testing.assert_allclose(e.last_outcome.applied.der_curtail_frac, 1.0)
    assert info["violations"]["curtailment_mwh"] > 0 or e.last_outcome.der_avail_mw.sum() == 0


def test_reactive_setpoints_from_the_action_or_the_controller():
    e = TDGridEnv(case="d33", reactive="action")
    assert e.action_space.shape == (18 + 3,)
    assert [f for f, _ in e.dispatch_layout()][-1] == "q_comp_mvar"
    e.reset(seed=0)
    a = np.zeros(21, dtype=np.float32)
    a[-3:] = 1.0
    e.step(a)
    np.testing.assert_allclose(e.last_outcome.applied.q_comp_mvar, 1.0)     # q_max of the case
    v_high = e.last_outcome.v_pu.mean()
    a[-3:] = -1.0
    e.step(a)
    np.testing.assert_allclose(e.last_outcome.applied.q_comp_mvar, -0.2)    # q_min
    assert e.last_outcome.v_pu.mean() < v_high                               # absorbing lowers voltages

    c = TDGridEnv(case="d33")                                                # a controller sets them
    c.reset(seed=0)
    c.set_reactive(np.array([0.5, 0.5, 2.0]))
    _, _, _, _, info = c.step(np.zeros(18, dtype=np.float32))
    np.testing.assert_allclose(c.last_outcome.applied.q_comp_mvar, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(info["projection"]["q_comp_mvar"], [0, 0, -1.0])
    c.step(np.zeros(18, dtype=np.float32))                                   # one step only
    np.testing.assert_allclose(c.last_outcome.applied.q_comp_mvar, 0.0)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        c.set_reactive(np.zeros(2))


def test_typed_observation_for_policies():
    e = gym.make("gridroll/D33-v0")
    e.reset(seed=0)
    u = e.unwrapped
    for _ in range(10):
        e.step(e.action_space.sample())
    obs = u.observation_typed
    assert obs.step == 10 and obs.time_h == pytest.approx(2.5)
    fc = obs.forecast
    assert fc.t == 9 and fc.load_pu.shape == (96 - 10, 32)   # steps 10..95, from what was seen up to 9
    assert u.simulator.t == 10
    lim = u.limits
    d = Dispatch.from_array(np.zeros(lim.sizes.n_action), lim)
    np.testing.assert_allclose(d.ev_p_mw, 0.5 * (obs.ev.p_min_kw + obs.ev.p_max_kw) / 1e3)


def test_intraday_forecast_observation():
    e = TDGridEnv(case="d33", forecast_obs="intraday")
    obs, _ = e.reset(seed=0)
    for _ in range(20):
        obs, *_ = e.step(e.action_space.sample())
    typed = e.observation_typed
    fc = typed.forecast
    load = fc.load_pu[1:16] @ e.grid.layout.load_p_mw
    der = fc.pv_pu[1:16] @ fc.day_ahead.pv_p_max_mw + fc.wind_pu[1:16] @ fc.day_ahead.wind_p_max_mw
    np.testing.assert_allclose(typed.net_load_forecast_mw[0, 1:], load - der, rtol=1e-12)
    assert e.observation_space.contains(obs)


def test_gym_observation_encodes_the_typed_observation():
    e = TDGridEnv(case="t30d2")
    e.reset(seed=3)
    for _ in range(50):
        obs, *_ = e.step(e.action_space.sample())
    typed, spec = e.observation_typed, e._encoder.spec
    np.testing.assert_allclose(obs["time"], [np.sin(2 * np.pi * 12.5 / 24), np.cos(2 * np.pi * 12.5 / 24), 50 / 96],
                               rtol=1e-6)
    np.testing.assert_allclose(obs["load"], typed.load_p_mw / e.grid.layout.load_p_mw, rtol=1e-6)
    np.testing.assert_allclose(obs["voltage"], (np.concatenate(typed.v_pu) - 1) / 0.05, rtol=1e-5, atol=1e-6)
    cap = e.grid.layout.evcs_n_ports * e.grid.layout.ev_charger_kw
    np.testing.assert_allclose(obs["ev"][:, 1], np.clip(typed.ev.p_max_kw / cap, 0, 1), rtol=1e-6)
    np.testing.assert_allclose(obs["ev"][:, 2], typed.ev.n_connected / e.grid.layout.evcs_n_ports, rtol=1e-6)
    scaled = typed.net_load_forecast_mw / spec.forecast_rows_peak_mw[:, None]
    np.testing.assert_allclose(obs["forecast"], np.clip(scaled, -10, 10), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(obs["thermal"], typed.thermal_p_last_mw / e.grid.transmission.gen.p_max_mw, rtol=1e-6)
    np.testing.assert_allclose(obs["line_loading"], np.clip(typed.line_loading, 0, 10), rtol=1e-6)
    price = e.grid.tariff.price_buy_per_mwh
    np.testing.assert_allclose(obs["price"], np.roll(price, -12) / price.max(), rtol=1e-6)
    assert "pv" not in obs and "storage_soc" not in obs                     # no PV / storage on t30d2
