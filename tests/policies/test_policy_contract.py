"""Contract every registered policy must pass, on a feeder case and a T-D case."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import env  # noqa: F401  (registers the envs)
from env.dispatch import Dispatch
from policies import Policy, make_policy, policy_names


def _play(case: str, name: str, seed: int, n_steps: int) -> list[np.ndarray]:
    e = gym.make("gridroll/TDGrid-v0", case=case, regime="cloudy")
    base = e.unwrapped
    policy = make_policy(name, base.grid)
    e.reset(seed=seed, options={"scenario_seed": seed})
    policy.reset(seed)
    if hasattr(policy, "observe_day"):  # clairvoyant yardstick: the controller hands it the day
        policy.observe_day(base.simulator.scenario)
    actions = []
    for _ in range(n_steps):
        obs = base.observation_typed
        d = policy.act(obs, obs.forecast)
        assert isinstance(d, Dispatch)
        d.check_sizes(base.model.sizes)
        assert all(np.isfinite(getattr(d, f)).all() for f, _ in base.dispatch_layout())
        base.step_dispatch(d)
        out = base.last_outcome
        assert np.isfinite(out.cost["total"])
        actions.append(d.to_flat())
    return actions


@pytest.mark.parametrize("case", ["d33", "t30d2"])
@pytest.mark.parametrize("name", policy_names())
def test_policy_satisfies_protocol_and_is_deterministic(case: str, name: str) -> None:
    policy = make_policy(name, env.load_case(case))
    assert isinstance(policy, Policy)
    first = _play(case, name, seed=3, n_steps=12)
    again = _play(case, name, seed=3, n_steps=12)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", policy_names())
def test_policy_runs_a_whole_day_on_d33(name: str) -> None:
    _play("d33", name, seed=5, n_steps=96)


def test_unknown_policy_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown policy 'greedy'.*heuristic"):
        make_policy("greedy", env.load_case("d33"))
