"""Gymnasium registration of the gridroll environments (done on ``import env``).

| id                          | kwargs                                   |
|-----------------------------|------------------------------------------|
| ``gridroll/TDGrid-v0``      | any (``TDGridEnv`` defaults: case d33)   |
| ``gridroll/<CASE>-v0``      | ``case=<case>``, one id per ``env.case_names()`` entry, the name upper-cased: ``gridroll/D33-v0``, ``gridroll/D69-v0``, ``gridroll/T30D2-v0``, ``gridroll/T118D10-v0``, ... |

A case id is its case: passing another ``case`` raises (it would otherwise silently return
that case under the fixed id). Every other keyword (``regime``, ``reward_scale``,
``render_mode``, settings) is checked by :class:`env.gym_env.TDGridEnv`.

Processes that never ran ``import env`` (a ``SubprocVecEnv`` started with ``spawn`` or
``forkserver`` from a script that imports gridroll only inside a function) do not know the
``gridroll`` namespace: Gymnasium >= 1.0 loads no plugins (its ``gymnasium.envs`` entry-point
loader was removed in 1.0). Use the module-qualified id, which makes ``gym.make`` import
``env`` first: ``gym.make("env:gridroll/D33-v0")`` or
``make_vec_env("env:gridroll/D33-v0", vec_env_cls=SubprocVecEnv, ...)`` (docs/rl.md).

``max_episode_steps`` is the number of steps of a day at the default 15-minute step (96);
with another ``dt_minutes`` pass ``max_episode_steps=1440 // dt_minutes`` to ``gymnasium.make``
(the env itself terminates at the day's end either way).

Every id also has a ``vector_entry_point``: ``gym.make_vec(id, num_envs=N)`` (or with
``vectorization_mode="vector_entry_point"``) returns the native batched
:class:`env.vector_env.TDGridVectorEnv`; ``vectorization_mode="sync"`` / ``"async"`` give
Gymnasium's vector envs of single envs.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

__all__ = ["ENV_IDS", "case_env_id", "make_case", "register_envs"]

_ENTRY_POINT = "env.gym_env:TDGridEnv"
_VECTOR_ENTRY_POINT = "env.vector_env:TDGridVectorEnv"
_STEPS_PER_DAY = 1440 // 15


def case_env_id(case: str) -> str:
    """The registered id of a case: ``gridroll/<CASE upper-cased>-v0``."""
    return f"gridroll/{case.upper()}-v0"


def _env_ids() -> dict[str, dict[str, object]]:
    from env.cases import case_names

    return {"gridroll/TDGrid-v0": {}, **{case_env_id(name): {"case": name} for name in case_names()}}


#: Registered ids and their fixed keyword arguments (every case of ``env.case_names()``).
ENV_IDS: dict[str, dict[str, object]] = _env_ids()


def make_case(_case: str, **kwargs: Any) -> Any:
    """Entry point of the case ids: ``TDGridEnv(case=_case, **kwargs)``; a different ``case``
    keyword raises (the id is its case)."""
    from env.gym_env import TDGridEnv

    env_id = case_env_id(_case)
    case = kwargs.pop("case", _case)
    if case != _case:
        raise ValueError(f"{env_id} is the {_case!r} case, got case={case!r}; use "
                         f"gym.make('gridroll/TDGrid-v0', case={case!r}) for another case")
    return TDGridEnv(case=_case, **kwargs)


def register_envs() -> None:
    """Register every id of :data:`ENV_IDS` (idempotent)."""
    for env_id, kwargs in ENV_IDS.items():
        if env_id in gym.registry:
            continue
        if "case" in kwargs:
            gym.register(id=env_id, entry_point="env.registration:make_case",
                         vector_entry_point="env.vector_env:make_case_vector",
                         kwargs={"_case": kwargs["case"]}, max_episode_steps=_STEPS_PER_DAY)
        else:
            gym.register(id=env_id, entry_point=_ENTRY_POINT, vector_entry_point=_VECTOR_ENTRY_POINT,
                         kwargs={}, max_episode_steps=_STEPS_PER_DAY)
