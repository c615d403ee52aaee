"""Rewards measured against a base policy on the same day: a control variate for training.

:class:`BaselineRewardWrapper` plays, next to the agent's env, a twin of it in which a base
policy (by default the heuristic) plays the same day; each step's reward becomes

    r_t = -(c_t - c_t^base)

the agent's step cost minus the base policy's on the same day and step. The base policy's
costs do not depend on the agent's actions, so each day's return changes by a constant and
the best policy is the same: the objective is still the env's own cost (what ``gridroll
compare`` judges). What goes is the variance the day itself brings (load, sun and EV arrivals:
about +-900 CNY per d33 step against tens of CNY that the battery can change), which
otherwise drowns the advantage estimates (docs/rl.md, "A worked example"). The twin costs a
second env step per step.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

__all__ = ["BaselineRewardWrapper"]


class BaselineRewardWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """``reward = env reward - base policy's reward on the same day and step`` (module docstring).

    Args:
        env: the agent's env (any wrapper stack around a ``TDGridEnv``).
        twin: a second env of the same case and settings (e.g. the same reactive control), which
            accepts a :class:`~env.dispatch.Dispatch`; the base policy plays it. It is reset to
            the agent's day (``options={"scenario_seed": day}``) whenever the agent's env resets.
        base_policy: any :class:`policies.base.Policy`; ``None`` = the heuristic of the grid.

    ``info["reward_env"]`` keeps the env's own reward and ``info["reward_base"]`` the base policy's.
    """

    def __init__(self, env: gym.Env, twin: gym.Env, base_policy: Any = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, base_policy=base_policy)
        gym.Wrapper.__init__(self, env)
        if twin.unwrapped.grid.name != env.unwrapped.grid.name:
            raise ValueError(f"BaselineRewardWrapper: the twin plays {twin.unwrapped.grid.name!r}, "
                             f"the env {env.unwrapped.grid.name!r}")
        if base_policy is None:
            from policies.heuristic import HeuristicPolicy

            base_policy = HeuristicPolicy(twin.unwrapped.grid)
        self.twin, self.base_policy = twin, base_policy
        self._twin_done = True

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        day = int(self.env.unwrapped.scenario_seed)
        self.twin.reset(options={"scenario_seed": day})
        self.base_policy.reset(day)
        self._twin_done = False
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._twin_done:
            raise RuntimeError("BaselineRewardWrapper: call reset() before step()")
        obs, reward, terminated, truncated, info = self.env.step(action)
        base = self.twin.unwrapped
        b_obs = base.observation_typed
        _, r_base, b_term, b_trunc, _ = self.twin.step(self.base_policy.act(b_obs, b_obs.forecast))
        self._twin_done = bool(b_term or b_trunc)
        info = {**info, "reward_env": float(reward), "reward_base": float(r_base)}
        return obs, float(reward) - float(r_base), terminated, truncated, info
