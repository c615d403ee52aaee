"""The extension point every dispatch rule implements: :class:`Policy`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from env.dispatch import Dispatch
from env.network import Grid
from env.observation import Observation


@runtime_checkable
class Policy(Protocol):
    """A dispatch rule: ``reset`` at the start of a day, ``act`` once per step.

    ``act`` sees only the typed :class:`~env.observation.Observation` of step ``t``
    and the non-anticipative ``forecast`` of the rest of the day (may be ``None``),
    and returns the active-power :class:`~env.dispatch.Dispatch` in physical units.

    A clairvoyant yardstick (perfect information) may also define
    ``observe_day(scenario)``; the controller then hands it the realized day after
    ``reset``. Ordinary policies must not.

    **Fallbacks** (one mechanism for every policy): a policy that can play something other
    than its own rule (a solver failed, no plan, ...) exposes ``fallback_log: list[tuple[int,
    str]]``, one ``(step, reason)`` per event, appended during ``act`` and cleared by ``reset``.
    The rolling loop reads the entries each ``act`` added (:func:`new_fallbacks`) and records
    them per step (``policy_fallback``) and per day (``fallback_steps``, ``fallback_reason``);
    nothing is dropped silently. A policy without the attribute never falls back.
    """

    name: str

    def reset(self, seed: int | None = None) -> None: ...

    def act(self, obs: Observation, forecast: Any) -> Dispatch: ...


def fallback_log(policy: Any) -> list[tuple[int, str]]:
    """The policy's ``fallback_log`` (``[]`` for a policy without one)."""
    log = getattr(policy, "fallback_log", None)
    return list(log) if log is not None else []


def new_fallbacks(policy: Any, seen: int) -> tuple[str, int]:
    """The reasons logged since the first ``seen`` entries (joined by ``"; "``, ``""`` if none)
    and the new length of the log. A log shorter than ``seen`` was reset: all of it is new."""
    log = fallback_log(policy)
    start = seen if len(log) >= seen else 0
    reasons = list(dict.fromkeys(str(r) for _, r in log[start:]))
    return "; ".join(reasons), len(log)


@dataclass(frozen=True)
class FeederIndex:
    """Which entries of the flat observation/dispatch arrays belong to each feeder.

    Loads follow ``grid.layout`` order, DER/storage/EVCS/compensators the dispatch
    order (feeders in order, transmission items after); all 0-based.
    """

    loads: tuple[slice, ...]
    der: tuple[slice, ...]
    storage: tuple[slice, ...]
    evcs: tuple[slice, ...]
    load_bus: tuple[np.ndarray, ...]
    der_bus: tuple[np.ndarray, ...]
    evcs_bus: tuple[np.ndarray, ...]
    t_loads: slice
    t_der: slice

    @classmethod
    def from_grid(cls, grid: Grid) -> "FeederIndex":
        def slices(sizes: list[int]) -> tuple[slice, ...]:
            edges = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
            return tuple(slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]))

        feeders = grid.feeders
        loads = slices([len(f.load) for f in feeders])
        der = slices([len(f.der) for f in feeders])
        n_load = loads[-1].stop
        n_der = der[-1].stop
        t = grid.transmission
        return cls(
            loads=loads, der=der,
            storage=slices([len(f.storage) for f in feeders]),
            evcs=slices([len(f.evcs) for f in feeders]),
            load_bus=tuple(f.load.bus for f in feeders),
            der_bus=tuple(f.der.bus for f in feeders),
            evcs_bus=tuple(f.evcs.bus for f in feeders),
            t_loads=slice(n_load, n_load + (len(t.load) if t is not None else 0)),
            t_der=slice(n_der, n_der + (len(t.der) if t is not None else 0)),
        )
