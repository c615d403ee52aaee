"""The residual action mode (issue 14, docs/rl.md): action 0 is the heuristic's dispatch,
bit for bit; corrections are bounded by ``scale`` x half an entry's range."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import env  # noqa: F401  (registers the envs)
from controller.loop import LoopSettings, RollingController
from controller.wrappers import ReactiveCompensationWrapper
from env import Dispatch
from policies import make_policy
from policies.residual import ResidualActionWrapper, residual_dispatch
from policies.sb3 import SB3Policy


class _ConstantAgent:
    """Stands in for an SB3 model: always the same action."""

    def __init__(self, action: np.ndarray) -> None:
        self.action = action

    def predict(self, observation: dict, deterministic: bool = True) -> tuple[np.ndarray, None]:
        return self.action, None


def _play(wrapped: gym.Env, seed: int, action: np.ndarray) -> np.ndarray:
    wrapped.reset(seed=seed)
    costs, done = [], False
    while not done:
        _, _, terminated, truncated, info = wrapped.step(action)
        costs.append(info["cost"]["total"])
        done = terminated or truncated
    return np.array(costs)


def _heuristic_day(case: str, seed: int, reactive: bool) -> np.ndarray:
    e = gym.make(f"gridroll/{case.upper()}-v0")
    day = RollingController(e, make_policy("heuristic", e.unwrapped.grid),
                            settings=LoopSettings(reactive=reactive)).run_day(seed)
    return day.steps[day.steps.area == "system"].cost_total.to_numpy()


@pytest.mark.parametrize("case", ["d33", "t30d2"])
def test_zero_residual_action_plays_the_heuristic_day_exactly(case: str) -> None:
    wrapped = ResidualActionWrapper(gym.make(f"gridroll/{case.upper()}-v0"))
    zero = np.zeros(wrapped.action_space.shape, dtype=np.float32)
    np.testing.assert_array_equal(_play(wrapped, 6, zero), _heuristic_day(case, 6, reactive=False))
    # a trained agent in the residual mode that predicts 0 is the heuristic in the loop too
    e = gym.make(f"gridroll/{case.upper()}-v0")
    agent = SB3Policy(_ConstantAgent(zero), action_mode="residual")
    day = RollingController(e, agent, settings=LoopSettings(reactive=False)).run_day(6)
    np.testing.assert_array_equal(day.steps[day.steps.area == "system"].cost_total.to_numpy(),
                                  _heuristic_day(case, 6, reactive=False))


@pytest.mark.slow
def test_zero_residual_action_with_the_reactive_socp_in_the_env_is_the_loops_heuristic_day() -> None:
    wrapped = ResidualActionWrapper(ReactiveCompensationWrapper(gym.make("gridroll/D33-v0")))
    zero = np.zeros(wrapped.action_space.shape, dtype=np.float32)
    np.testing.assert_array_equal(_play(wrapped, 4, zero), _heuristic_day("d33", 4, reactive=True))


def test_corrections_are_bounded_and_move_the_dispatch() -> None:
    e = gym.make("gridroll/T30D2-v0").unwrapped
    e.reset(seed=2)
    for _ in range(30):
        e.step(e.neutral_action())
    obs, limits = e.observation_typed, e.limits
    base = make_policy("heuristic", e.grid).act(obs, obs.forecast)
    half = 0.5 * (limits.high - limits.low)
    for scale in (0.1, 1.0):
        for a in (np.ones(limits.sizes.n_action), -np.ones(limits.sizes.n_action), 7 * np.ones(limits.sizes.n_action)):
            moved = residual_dispatch(base, a, limits, scale).to_flat() - base.to_flat()
            np.testing.assert_allclose(np.abs(moved), scale * half, rtol=1e-12, atol=1e-12)  # |a| > 1 clipped
    plus = residual_dispatch(base, np.ones(limits.sizes.n_action), limits, 0.5)
    assert (plus.ev_p_mw >= base.ev_p_mw).all() and (plus.der_curtail_frac <= base.der_curtail_frac).all()
    assert residual_dispatch(base, np.zeros(limits.sizes.n_action), limits, 0.5) is base
    with pytest.raises(ValueError, match="shape"):
        residual_dispatch(base, np.zeros(3), limits, 0.5)
    with pytest.raises(ValueError, match="finite"):
        residual_dispatch(base, np.full(limits.sizes.n_action, np.nan), limits, 0.5)
    with pytest.raises(ValueError, match="residual_scale"):
        ResidualActionWrapper(gym.make("gridroll/D33-v0"), scale=1.5)
    assert isinstance(plus, Dispatch)
