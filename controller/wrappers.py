"""Gymnasium wrappers that put controller pieces inside the env (for RL agents)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from controller.reactive import ReactiveCompensator, ReactiveSettings
from controller.reactive_inputs import ReactiveScenarioBuilder
from env.dispatch import Dispatch


class ReactiveCompensationWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Runs the scenario SOCP before every step, so an agent acts on active power only
    and the compensators follow the same rule as in :class:`controller.loop.RollingController`.

    ``info["reactive"]`` carries the setpoints, solver status and fallback of the step. ``step``
    takes a flat action or a :class:`~env.dispatch.Dispatch` (what
    :class:`policies.residual.ResidualActionWrapper` passes down).

    Args:
        env: a ``TDGridEnv`` (or wrapper) with ``reactive="none"``.
        settings: the SOCP's settings.
        n_samples, n_scenarios: forecast paths drawn, and kept after reduction.
        method: ``"socp"`` (the loop's default) or ``"fast"`` (the same objective on the AC
            sweep, :mod:`controller.reactive_fast`; docs/rl.md has how closely they agree).
    """

    def __init__(self, env: gym.Env, settings: ReactiveSettings = ReactiveSettings(),
                 n_samples: int = 30, n_scenarios: int = 10, method: str = "socp") -> None:
        gym.utils.RecordConstructorArgs.__init__(self, settings=settings, n_samples=n_samples,
                                                 n_scenarios=n_scenarios, method=method)
        gym.Wrapper.__init__(self, env)
        base = env.unwrapped
        if getattr(base, "reactive", None) != "none":
            raise ValueError("ReactiveCompensationWrapper: wrap a TDGridEnv with reactive='none'")
        self.compensator = ReactiveCompensator(base.grid, settings, method=method)
        self.builder = ReactiveScenarioBuilder(base.model, n_samples, n_scenarios)
        self._rng = np.random.default_rng(0)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.compensator.reset()
        self._rng = np.random.default_rng([self.env.unwrapped.scenario_seed, 2])
        return obs, info

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        base = self.env.unwrapped
        requested = action if isinstance(action, Dispatch) else Dispatch.from_array(action, base.limits)
        applied = base.project_dispatch(requested)  # as the env will play it
        inputs = self.builder.build(base.observation_typed, applied, self._rng)
        results = self.compensator.solve(inputs.per_feeder, inputs.prices)
        base.set_reactive(np.concatenate([r.q_mvar for r in results]))
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["reactive"] = {
            "q_mvar": np.concatenate([r.q_mvar for r in results]),
            "status": [r.status for r in results],
            "fallback": [r.fallback for r in results],
        }
        return obs, reward, terminated, truncated, info
