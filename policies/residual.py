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

Two options narrow and change what the agent decides (:class:`ResidualMode`; both off by
default, which is the mode above):

* ``entries``: the action groups (dispatch fields, :data:`env.action_codec.FIELDS`) the agent
  controls, e.g. ``("storage_p_mw",)``. The agent's action holds only their entries, in the
  env's layout order; every other entry is the base policy's value, untouched.
* ``absolute``: groups (among ``entries``) whose entries *replace* the base's value instead of
  correcting it: ``x = limits.decode(a)`` there, the plain mode's mapping onto the entry's full
  range at this step (``a = -1`` the range's low end, ``+1`` its high end; reversed for
  ``der_curtail_frac``), ``scale`` not applied. So ``a = 0`` is the range's midpoint: for
  ``storage_p_mw`` (range ``-p_max .. +p_max``) the battery idles; for ``ev_p_mw`` a station
  charges at the middle of its deliverable power; for ``der_curtail_frac`` half is curtailed.
  With an absolute group, ``a = 0`` is no longer the base's dispatch.

:class:`ResidualActionWrapper` exposes the mode to an agent in training;
:class:`policies.sb3.SB3Policy` with ``action_mode="residual"`` plays it in the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import gymnasium as gym
import numpy as np

from env.action_codec import FIELDS, DispatchSizes
from env.dispatch import ActionLimits, Dispatch, real_array

__all__ = ["DEFAULT_RESIDUAL_SCALE", "ResidualActionWrapper", "ResidualMode", "check_residual_scale",
           "residual_dispatch"]

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


def _groups(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    try:
        names = tuple(value)
    except TypeError:
        raise ValueError(f"ResidualMode.{what}: expected a sequence of field names, got {value!r}") from None
    unknown = [n for n in names if n not in FIELDS]
    if unknown:
        raise ValueError(f"ResidualMode.{what}: unknown action group(s) {unknown}; valid: {list(FIELDS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"ResidualMode.{what}: a group is named twice in {list(names)}")
    return tuple(sorted(names, key=FIELDS.index))            # the env's layout order


@dataclass(frozen=True)
class ResidualMode:
    """What a residual agent decides (see the module docstring).

    Attributes:
        scale: largest correction as a share of half an entry's range, in (0, 1].
        entries: the action groups the agent controls, in layout order; ``None`` = all of them
            (the agent's action is the env's whole action).
        absolute: groups among ``entries`` whose entries replace the base's value
            (``a = 0`` = the range's midpoint); ``()`` = every controlled entry corrects.

    Raises:
        ValueError: a bad scale, an unknown or repeated group, an empty ``entries``, or an
            ``absolute`` group not among ``entries``.
    """

    scale: float = DEFAULT_RESIDUAL_SCALE
    entries: tuple[str, ...] | None = None
    absolute: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", check_residual_scale(self.scale))
        if self.entries is not None:
            entries = _groups(self.entries, "entries")
            if not entries:
                raise ValueError("ResidualMode.entries: name at least one action group (None = all of them)")
            object.__setattr__(self, "entries", entries)
        absolute = _groups(self.absolute, "absolute")
        outside = [g for g in absolute if self.entries is not None and g not in self.entries]
        if outside:
            raise ValueError(f"ResidualMode.absolute: {outside} not among the agent's entries {list(self.entries)}")
        object.__setattr__(self, "absolute", absolute)

    @property
    def is_default(self) -> bool:
        """The whole action, every entry a correction (the mode without options)."""
        return self.entries is None and not self.absolute

    def agent_index(self, sizes: DispatchSizes) -> np.ndarray:
        """Positions in the env's flat action of the agent's entries, in order (read-only).

        Raises:
            ValueError: the groups hold no entry on this grid.
        """
        return _layout(self.entries, self.absolute, sizes)[0]

    def action_space(self, env_space: Any, sizes: DispatchSizes) -> Any:
        """The agent's action space: ``env_space`` itself with every entry, else a
        ``Box(-1, 1)`` over :meth:`agent_index`."""
        if self.entries is None:
            return env_space
        return gym.spaces.Box(-1.0, 1.0, shape=(self.agent_index(sizes).size,), dtype=np.float32)

    def dispatch(self, base: Dispatch, action: Any, limits: ActionLimits) -> Dispatch:
        """``base`` with the agent's ``action`` applied (see the module docstring).

        Raises:
            ValueError: ``action`` of the wrong shape, non-real or non-finite.
        """
        sizes = limits.sizes
        index, absolute = _layout(self.entries, self.absolute, sizes)
        a = real_array(action, "residual action")
        if a.shape != index.shape:
            raise ValueError(f"residual action: expected shape ({index.size},), got {np.shape(action)}")
        if not np.isfinite(a).all():
            raise ValueError("residual action: entries must be finite")
        if absolute is None and not a.any():
            return base                                     # the base dispatch, untouched
        base.check_sizes(sizes)
        full = np.clip(a, -1.0, 1.0)
        if self.entries is not None:
            full = np.zeros(sizes.n_action)
            full[index] = np.clip(a, -1.0, 1.0)
        x = base.to_flat(sizes)
        if absolute is None:
            x = x + full * (self.scale * limits.half_span)
        else:
            x = np.where(absolute, limits.decode(full), x + full * (self.scale * limits.half_span))
        return Dispatch.from_flat(x, sizes)


@lru_cache(maxsize=64)
def _layout(entries: tuple[str, ...] | None, absolute: tuple[str, ...],
            sizes: DispatchSizes) -> tuple[np.ndarray, np.ndarray | None]:
    """(the agent's flat positions, the mask of absolute positions or None) of a mode on ``sizes``."""
    codec = sizes.codec
    present = [name for name, _ in codec.layout]
    if entries is None:
        index = np.arange(sizes.n_action)
    else:
        index = np.concatenate([np.arange(sizes.n_action)[codec.field_slice(g)] for g in entries if g in present]
                               or [np.zeros(0, dtype=int)])
    if index.size == 0:
        raise ValueError(f"ResidualMode: the groups {list(entries or ())} hold no action entry on this grid "
                         f"(entries per group: { {n: codec.field_size(n) for n in present} })")
    mask = None
    if absolute:
        mask = np.zeros(sizes.n_action, dtype=bool)
        for g in absolute:
            if g in present:
                mask[codec.field_slice(g)] = True
        mask.flags.writeable = False
    index.flags.writeable = False
    return index, mask


def residual_dispatch(base: Dispatch, action: Any, limits: ActionLimits, scale: float) -> Dispatch:
    """``base`` corrected by the agent's ``action`` over the whole action (the mode without
    options: :meth:`ResidualMode.dispatch` of ``ResidualMode(scale)``).

    Raises:
        ValueError: ``action`` of the wrong shape, non-real or non-finite.
    """
    return ResidualMode(scale).dispatch(base, action, limits)


class ResidualActionWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """The env in the residual action mode: ``step(a)`` plays the base policy's dispatch of the
    current observation with ``a`` applied (:meth:`ResidualMode.dispatch`); without options
    ``a = 0`` plays the base policy's day and the action space is the env's (``Box(-1, 1)``, its
    layout); with ``entries`` it is ``Box(-1, 1)`` over those groups' entries.

    Wrap it around the whole stack (e.g. around
    :class:`controller.wrappers.ReactiveCompensationWrapper`): the inner env receives a
    :class:`~env.dispatch.Dispatch`, which :meth:`env.gym_env.TDGridEnv.step` accepts.

    Args:
        env: a ``TDGridEnv`` or a wrapper of one.
        base_policy: any :class:`policies.base.Policy`; ``None`` = the heuristic of the env's grid.
        scale: largest correction as a share of half an entry's range, in (0, 1].
        entries, absolute: the options of :class:`ResidualMode` (default: off).

    Raises:
        ValueError: bad options (:class:`ResidualMode`), or ``entries`` holding no entry of
            this env's action.
    """

    def __init__(self, env: gym.Env, base_policy: Any = None, scale: float = DEFAULT_RESIDUAL_SCALE,
                 entries: tuple[str, ...] | None = None, absolute: tuple[str, ...] = ()) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, base_policy=base_policy, scale=scale, entries=entries,
                                                 absolute=absolute)
        gym.Wrapper.__init__(self, env)
        self.mode = ResidualMode(scale, entries, absolute)
        self.scale = self.mode.scale
        self.action_space = self.mode.action_space(env.action_space, env.unwrapped.model.sizes)
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
        dispatch = self.mode.dispatch(self.base_policy.act(obs, obs.forecast), action, base_env.limits)
        return self.env.step(dispatch)
