"""Gymnasium conventions RL tooling relies on (issue 14, docs/rl.md): an id per case,
``render_mode``, the reward scale, ``reset(seed=s)`` = ``run_day(s)``'s day, the neutral action,
and the module-qualified id a spawned process resolves without ``import env``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import env
from controller.loop import LoopSettings, RollingController
from env import Dispatch, case_names
from env.registration import case_env_id
from policies import make_policy

ROOT = Path(__file__).parents[2]


def test_every_case_has_an_id_and_the_id_is_its_case() -> None:
    assert set(env.ENV_IDS) == {"gridroll/TDGrid-v0", *(case_env_id(c) for c in case_names())}
    assert {"gridroll/D33-v0", "gridroll/D69-v0", "gridroll/T30D2-v0", "gridroll/T118D10-v0"} <= set(env.ENV_IDS)
    e = gym.make("gridroll/D69-v0", render_mode=None)
    assert e.unwrapped.case == "d69" and e.spec.max_episode_steps == 96 and e.unwrapped.render_mode is None
    with pytest.raises(ValueError, match="is the 'd69' case"):
        gym.make("gridroll/D69-v0", case="d33")


def test_render_rgb_array_draws_the_day_so_far() -> None:
    e = gym.make("gridroll/D33-v0", render_mode="rgb_array")
    e.reset(seed=2)
    empty = e.render()
    for _ in range(8):
        e.step(e.unwrapped.neutral_action())
    img = e.render()
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.shape == empty.shape
    assert not np.array_equal(img, empty)              # the curves of the 8 steps were drawn
    none = gym.make("gridroll/D33-v0")
    none.reset(seed=2)
    assert none.render() is None
    with pytest.raises(ValueError, match="render_mode must be None or one of"):
        gym.make("gridroll/D33-v0", render_mode="human_eyes")


def test_reward_scale_scales_the_reward_only() -> None:
    plain, scaled = gym.make("gridroll/D33-v0"), gym.make("gridroll/D33-v0", reward_scale=1e-4)
    plain.reset(seed=3)
    scaled.reset(seed=3)
    a = np.full(plain.action_space.shape, 0.3, dtype=np.float32)
    for _ in range(4):
        _, r1, *_, i1 = plain.step(a)
        _, r2, *_, i2 = scaled.step(a)
        assert i1["cost"] == i2["cost"] and r1 == -i1["cost"]["total"] and r2 == -1e-4 * i2["cost"]["total"]
    for bad in (0, -1.0, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="reward_scale"):
            gym.make("gridroll/D33-v0", reward_scale=bad)


def test_reset_seed_plays_the_day_run_day_plays() -> None:
    e = gym.make("gridroll/D33-v0")
    policy = make_policy("heuristic", e.unwrapped.grid)
    day = RollingController(e, policy, settings=LoopSettings(reactive=False)).run_day(5)
    cost = day.steps[day.steps.area == "system"].cost_total.to_numpy()
    g = gym.make("gridroll/D33-v0")
    _, info = g.reset(seed=5)
    assert info["scenario_seed"] == 5
    rewards, done = [], False
    while not done:
        obs = g.unwrapped.observation_typed
        _, r, terminated, truncated, _ = g.step(policy.act(obs, obs.forecast))
        rewards.append(r)
        done = terminated or truncated
    np.testing.assert_array_equal(-np.array(rewards), cost)
    # an unseeded reset then draws fresh days from the seeded stream, reproducibly
    nxt = [g.reset()[1]["scenario_seed"] for _ in range(2)]
    g.reset(seed=5)
    assert [g.reset()[1]["scenario_seed"] for _ in range(2)] == nxt and 5 not in nxt


@pytest.mark.parametrize("env_id", ["gridroll/D33-v0", "gridroll/T30D2-v0"])
def test_neutral_action_spills_nothing_and_leaves_the_batteries_alone(env_id: str) -> None:
    e = gym.make(env_id).unwrapped
    e.reset(seed=1)
    for _ in range(40):                                # into the day: EVs connected
        obs = e.observation_typed
        a = e.neutral_action()
        assert e.action_space.contains(a)
        d = Dispatch.from_array(a, e.limits)
        np.testing.assert_allclose(d.der_curtail_frac, 0.0, atol=1e-12)
        np.testing.assert_allclose(d.storage_p_mw, 0.0, atol=1e-6)      # float32 encoding of 0
        np.testing.assert_allclose(d.ev_p_mw, obs.ev.p_max_kw / 1e3, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(d.thermal_p_mw, obs.thermal_p_last_mw, rtol=1e-6, atol=1e-6)
        e.step(a)
    zero = Dispatch.from_array(np.zeros(e.action_space.shape), e.limits)
    assert (zero.der_curtail_frac == 0.5).all()        # why 0 is not "do nothing"


def test_module_qualified_id_resolves_in_a_fresh_process() -> None:
    """A spawned worker has not imported ``env``: ``env:gridroll/...`` makes gym.make import it."""
    code = ("import sys, gymnasium as gym; assert 'env' not in sys.modules; "
            "e = gym.make('env:gridroll/T30D2-v0'); print(e.unwrapped.case, e.spec.id)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["t30d2", "gridroll/T30D2-v0"]
