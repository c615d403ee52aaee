"""Gymnasium registration of the gridroll environments (done on ``import env``).

| id                     | kwargs                                   |
|------------------------|------------------------------------------|
| ``gridroll/TDGrid-v0`` | any (``TDGridEnv`` defaults: case d33)   |
| ``gridroll/D33-v0``    | ``case="d33"``                           |
| ``gridroll/T30D2-v0``  | ``case="t30d2"``                         |

``gridroll/D33-v0`` and ``gridroll/T30D2-v0`` are their case: passing another ``case`` raises
(it would otherwise silently return that case under the fixed id). Every other keyword is
checked by :class:`env.gym_env.TDGridEnv` (unknown keys, types and ranges raise).

``max_episode_steps`` is the number of steps of a day at the default 15-minute step (96);
with another ``dt_minutes`` pass ``max_episode_steps=1440 // dt_minutes`` to ``gymnasium.make``
(the env itself terminates at the day's end either way).
"""

from __future__ import annotations

import gymnasium as gym

from typing import Any

__all__ = ["ENV_IDS", "make_d33", "make_t30d2", "register_envs"]

_ENTRY_POINT = "env.gym_env:TDGridEnv"
_FIXED_ENTRY_POINTS = {"gridroll/D33-v0": "env.registration:make_d33",
                       "gridroll/T30D2-v0": "env.registration:make_t30d2"}
_STEPS_PER_DAY = 1440 // 15

#: Registered ids and their fixed keyword arguments.
ENV_IDS: dict[str, dict[str, object]] = {
    "gridroll/TDGrid-v0": {},
    "gridroll/D33-v0": {"case": "d33"},
    "gridroll/T30D2-v0": {"case": "t30d2"},
}


def _fixed_case(env_id: str, case_name: str, kwargs: dict[str, Any]) -> Any:
    from env.gym_env import TDGridEnv

    case = kwargs.pop("case", case_name)
    if case != case_name:
        raise ValueError(f"{env_id} is the {case_name!r} case, got case={case!r}; use "
                         f"gym.make('gridroll/TDGrid-v0', case={case!r}) for another case")
    return TDGridEnv(case=case_name, **kwargs)


def make_d33(**kwargs: Any) -> Any:
    """Entry point of ``gridroll/D33-v0``: ``TDGridEnv(case="d33", **kwargs)``; another ``case`` raises."""
    return _fixed_case("gridroll/D33-v0", "d33", kwargs)


def make_t30d2(**kwargs: Any) -> Any:
    """Entry point of ``gridroll/T30D2-v0``: ``TDGridEnv(case="t30d2", **kwargs)``; another ``case`` raises."""
    return _fixed_case("gridroll/T30D2-v0", "t30d2", kwargs)


def register_envs() -> None:
    """Register every id of :data:`ENV_IDS` (idempotent)."""
    for env_id, kwargs in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=_FIXED_ENTRY_POINTS.get(env_id, _ENTRY_POINT),
                         kwargs=dict(kwargs), max_episode_steps=_STEPS_PER_DAY)
