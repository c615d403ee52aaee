"""Any object with ``predict(obs, deterministic=True)`` (a Stable-Baselines3 model)
as a :class:`~policies.base.Policy`, so RL agents run through the same controller."""

from __future__ import annotations

from typing import Any, Protocol

from env.dispatch import Dispatch
from env.observation import Observation


class Predictor(Protocol):
    def predict(self, observation: Any, deterministic: bool = True) -> tuple[Any, Any]: ...


class SB3Policy:
    """Wraps a trained agent. It acts in the env it was trained on: the env provides the
    gym encoding of the observation and this step's action limits.

    Args:
        model: an SB3 model (or anything with ``predict``).
        env: the ``TDGridEnv`` (or a wrapper of it) the controller steps.
        deterministic: use the agent's deterministic action.
    """

    name = "rl"

    def __init__(self, model: Predictor, env: Any, deterministic: bool = True) -> None:
        self.model = model
        self.env = env.unwrapped
        self.deterministic = deterministic

    def reset(self, seed: int | None = None) -> None:
        """Stateless (a recurrent agent would reset its state here)."""

    def act(self, obs: Observation, forecast: Any = None) -> Dispatch:
        """Encode ``obs`` as the agent saw it in training, predict, decode with this step's limits."""
        encoded = self.env.encode_observation(obs)
        action, _ = self.model.predict(encoded, deterministic=self.deterministic)
        return Dispatch.from_array(action, self.env.limits)
