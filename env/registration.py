"""Gymnasium registration of the gridroll environments (done on ``import env``).

| id                     | kwargs                                   |
|------------------------|------------------------------------------|
| ``gridroll/TDGrid-v0`` | any (``TDGridEnv`` defaults: case d33)   |
| ``gridroll/D33-v0``    | ``case="d33"``                           |
| ``gridroll/T30D2-v0``  | ``case="t30d2"``                         |

``max_episode_steps`` is the number of steps of a day at the default 15-minute step (96);
with another ``dt_minutes`` pass ``max_episode_steps=1440 // dt_minutes`` to ``gymnasium.make``
(the env itself terminates at the day's end either way).
"""

from __future__ import annotations

import gymnasium as gym

__all__ = ["ENV_IDS", "register_envs"]

_ENTRY_POINT = "env.gym_env:TDGridEnv"
_STEPS_PER_DAY = 1440 // 15

#: Registered ids and their fixed keyword arguments.
ENV_IDS: dict[str, dict[str, object]] = {
    "gridroll/TDGrid-v0": {},
    "gridroll/D33-v0": {"case": "d33"},
    "gridroll/T30D2-v0": {"case": "t30d2"},
}


def register_envs() -> None:
    """Register every id of :data:`ENV_IDS` (idempotent)."""
    for env_id, kwargs in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=_ENTRY_POINT, kwargs=dict(kwargs),
                         max_episode_steps=_STEPS_PER_DAY)
