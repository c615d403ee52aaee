"""Unchecked construction of the env's frozen records: the simulator's one speed shim.

The records (:class:`~env.dispatch.Dispatch`, :class:`~env.dispatch.ActionLimits`,
:class:`~env.observation.Observation`, :class:`~env.simulator.StepOutcome` and the EV fleet's
per-step results) validate their inputs on construction. On the env's hot path their values
come from the simulator itself, valid by construction, and the checks would cost more than the
step's physics. :func:`unchecked` builds such a record from a complete ``{field: value}`` map
without running ``__init__`` / ``__post_init__``; it is the only place in the project that
writes a frozen dataclass's ``__dict__``. Every value it is given is the record's declared
field; the bit-for-bit digest (``python benchmarks/env_step.py --digest``) and the tests that
compare the fast records with the validating constructors keep it honest.
"""

from __future__ import annotations

from dataclasses import fields
from functools import lru_cache
from typing import Any, TypeVar

__all__ = ["unchecked"]

T = TypeVar("T")


@lru_cache(maxsize=64)
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


def unchecked(cls: type[T], values: dict[str, Any]) -> T:
    """A ``cls`` record holding ``values`` (every declared field, nothing else), unvalidated.

    Raises:
        AssertionError (under ``python -O`` not checked): a key that is not a declared field,
            or a declared field missing.
    """
    assert values.keys() == _field_names(cls), (cls.__name__, sorted(values.keys() ^ _field_names(cls)))
    obj = object.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    return obj
