"""The reward measured against the heuristic on the same day (policies.baseline_reward)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import env  # noqa: F401  (registers the envs)
from controller.wrappers import ReactiveCompensationWrapper
from policies.baseline_reward import BaselineRewardWrapper
from policies.heuristic import HeuristicPolicy
from policies.residual import ResidualActionWrapper


def _stack(reactive: bool) -> gym.Env:
    e = gym.make("gridroll/D33-v0")
    return ReactiveCompensationWrapper(e, n_samples=8, n_scenarios=4, method="fast") if reactive else e


def test_the_base_policy_as_the_agent_earns_exactly_zero_with_reactive_control_on() -> None:
    """The agent playing the heuristic (a zero residual) is the twin: every reward is 0."""
    e = BaselineRewardWrapper(ResidualActionWrapper(_stack(True)), _stack(True))
    e.reset(seed=8310)
    zero = np.zeros(e.action_space.shape, dtype=np.float32)
    for _ in range(6):
        _, r, _, _, info = e.step(zero)
        assert r == 0.0 and info["reward_env"] == info["reward_base"] != 0.0


def test_a_days_return_is_the_env_return_minus_the_heuristics_day() -> None:
    """Random actions over a whole day: the wrapped return equals the env's return minus the
    heuristic's return on the same day, played separately."""
    e = BaselineRewardWrapper(ResidualActionWrapper(_stack(False)), _stack(False))
    _, info = e.reset(seed=8311)
    day = e.unwrapped.scenario_seed
    rng = np.random.default_rng(0)
    total = total_env = 0.0
    done = False
    while not done:
        _, r, term, trunc, info = e.step(rng.uniform(-1, 1, e.action_space.shape).astype(np.float32))
        total += r
        total_env += info["reward_env"]
        done = term or trunc
    alone = _stack(False)
    alone.reset(options={"scenario_seed": day})
    policy = HeuristicPolicy(alone.unwrapped.grid)
    base_return, done = 0.0, False
    while not done:
        obs = alone.unwrapped.observation_typed
        _, r, term, trunc, _ = alone.step(policy.act(obs, obs.forecast))
        base_return += r
        done = term or trunc
    assert total == pytest.approx(total_env - base_return, rel=1e-12, abs=1e-6)
    assert abs(total_env - base_return) > 1.0           # random actions do cost something


def test_the_twin_follows_drawn_and_chosen_days_and_misuse_raises() -> None:
    e = BaselineRewardWrapper(ResidualActionWrapper(_stack(False)), _stack(False))
    with pytest.raises(RuntimeError, match="reset"):
        e.step(np.zeros(e.action_space.shape, dtype=np.float32))
    for kwargs in ({"seed": 8312}, {}, {"options": {"scenario_seed": 8313}}):
        e.reset(**kwargs)
        assert e.twin.unwrapped.scenario_seed == e.unwrapped.scenario_seed
    with pytest.raises(ValueError, match="twin"):
        BaselineRewardWrapper(gym.make("gridroll/D33-v0"), gym.make("gridroll/T30D2-v0"))
