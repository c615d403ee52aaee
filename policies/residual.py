"""The residual action mode: the agent corrects a base policy's dispatch (docs/rl.md).

With a base dispatch ``x_base`` (physical units, by default the heuristic's: seed 003's base
rule, :class:`policies.heuristic.HeuristicPolicy`) and an agent action ``a`` in ``[-1, 1]``
(the env's action layout), the dispatch played is

    x = x_base + scale * a * half_span

entry by entry, where ``half_span`` is half the entry's range at this step in the env's
encoding (:class:`env.dispatch.ActionLimits`; negative for ``der_curtail_frac``, so ``a > 0``
means "less curtailed" in both modes). So ``a = 0`` plays the base dispatch itself (bit for
bit: no encoding round trip) and a correction moves an entry by at most ``scale`` times half
its range. Entries of ``a`` outside ``[-1, 1]`` are clipped first (the corrections stay
bounded); what ``x`` asks beyond the feasible set is projected by the env and reported in
``info["projection"]``, as for any dispatch.

:class:`ResidualActionWrapper` exposes the mode to an agent in training;
:class:`policies.sb3.SB3Policy` with ``action_mode="residual"`` plays it in the loop.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from env.dispatch import ActionLimits, Dispatch, real_array

__all__ = ["DEFAULT_RESIDUAL_SCALE", "ResidualActionWrapper", "check_residual_scale", "residual_dispatch"]

#: Default largest correction, as a share of half an entry's range (chosen: 0.5, so the agent
#: can move any entry from the base value by a quarter of its full range).
DEFAULT_RESIDUAL_SCALE = 0.5


def check_residual_scale(scale: Any) -> float:
    """``scale`` as a float in (0, 1].

    Raises:
        ValueError: not a finite number in (0, 1].
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)) \
            or not np.isfinite(scale) or not 0 < scale <= 1:
        raise ValueError(f"residual_scale must be a number in (0, 1], got {scale!r}")
    return float(scale)


def residual_dispatch(base: Dispatch, action: Any, limits: ActionLimits, scale: float) -> Dispatch:
    """``base`` corrected by the agent's ``action`` (see the module docstring).

    Raises:
        ValueError: ``action`` of the wrong shape, non-real or non-finite.
    """
    a = real_array(action, "residual action")
    n = limits.sizes.n_action
    if a.shape != (n,):
        raise ValueError(f"residual action: expected shape ({n},), got {np.shape(action)}")
    if not np.isfinite(a).all():
        raise ValueError("residual action: entries must be finite")
    if not a.any():
        return base                                     # the base dispatch, untouched
    base.check_sizes(limits.sizes)
    delta = np.clip(a, -1.0, 1.0) * (scale * limits.half_span)
    return Dispatch.from_flat(base.to_flat(limits.sizes) + delta, limits.sizes)


class ResidualActionWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """The env in the residual action mode: ``step(a)`` plays the base policy's dispatch of the
    current observation corrected by ``a`` (:func:`residual_dispatch`); ``a = 0`` plays the base
    policy's day. The action space is unchanged (``Box(-1, 1)``, the env's layout).

    Wrap it around the whole stack (e.g. around
    :class:`controller.wrappers.ReactiveCompensationWrapper`): the inner env receives a
    :class:`~env.dispatch.Dispatch`, which :meth:`env.gym_env.TDGridEnv.step` accepts.

    Args:
        env: a ``TDGridEnv`` or a wrapper of one.
        base_policy: any :class:`policies.base.Policy`; ``None`` = the heuristic of the env's grid.
        scale: largest correction as a share of half an entry's range, in (0, 1].
    """

    def __init__(self, env: gym.Env, base_policy: Any = None, scale: float = DEFAULT_RESIDUAL_SCALE) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, base_policy=base_policy, scale=scale)
        gym.Wrapper.__init__(self, env)
        self.scale = check_residual_scale(scale)
        if base_policy is None:
            from policies.heuristic import HeuristicPolicy

            base_policy = HeuristicPolicy(env.unwrapped.grid)
        self.base_policy = base_policy

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.base_policy.reset(self.env.unwrapped.scenario_seed)
        return obs, info

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        base_env = self.env.unwrapped
        obs = base_env.observation_typed
        dispatch = residual_dispatch(self.base_policy.act(obs, obs.forecast), action, base_env.limits, self.scale)
        return self.env.step(dispatch)
