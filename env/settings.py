"""Validation shared by the frozen settings dataclasses: unknown keys raise, every field is
checked by type on construction, ranges are checked with one helper.

* :meth:`StrictKwargs.from_kwargs` builds from keywords and rejects unknown ones.
* :func:`check_field_types` checks every field against its annotation: ``bool`` fields take
  only ``True`` / ``False`` (``"no"`` is not false), ``int`` fields only integers (not
  ``2.5``, not ``True``), ``float`` fields only finite real numbers (not ``"0.3"``, NaN or
  inf), ``str`` fields strings, ``Literal[...]`` fields one of the listed values,
  ``X | None`` fields ``None`` or an ``X``, ``tuple[X, ...]`` fields a tuple or list of
  ``X``, any other class an instance of it.
* :func:`check_range` checks a numeric field against an interval.

Errors are :class:`ValueError` naming ``Class.field``, the accepted type or range and the
value given.
"""

from __future__ import annotations

import math
import numbers
import types
import typing
from dataclasses import fields
from typing import Any, Literal, Self, Union

__all__ = ["StrictKwargs", "check_field_types", "check_range"]

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(float(value)))


def _describe(tp: Any) -> str:
    """The accepted values of annotation ``tp`` in words."""
    origin = typing.get_origin(tp)
    if tp is bool:
        return "a bool (True or False)"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a finite number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = " or ".join(_describe(a) for a in args)
        return f"None or {inner}" if len(args) < len(typing.get_args(tp)) else inner
    if origin is tuple:
        return f"a tuple with each item {_describe(typing.get_args(tp)[0])}"
    if isinstance(tp, type):
        return f"a {tp.__name__}"
    return str(tp)


def _matches(tp: Any, value: Any) -> bool:
    """Whether ``value`` is acceptable for annotation ``tp`` (unknown annotations accept anything)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return _is_int(value)
    if tp is float:
        return _is_real(value)
    if tp is str:
        return isinstance(value, str)
    if tp is type(None):
        return value is None
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return any(_matches(a, value) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(args[0], v) for v in value)
        return len(args) == len(value) and all(_matches(a, v) for a, v in zip(args, value))
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def check_field_types(obj: Any) -> None:
    """Check every field of the dataclass instance ``obj`` against its annotation (see the module
    docstring for the rules).

    Raises:
        ValueError: ``Class.field: must be <accepted>, got <value>`` for the first mismatch.
    """
    cls = type(obj)
    hints = _hints(cls)
    for f in fields(obj):
        tp = hints.get(f.name, Any)
        value = getattr(obj, f.name)
        if not _matches(tp, value):
            raise ValueError(f"{cls.__name__}.{f.name}: must be {_describe(tp)}, got {value!r}")


def check_range(obj: Any, name: str, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False) -> None:
    """Check the numeric field ``name`` of ``obj`` lies in the interval (``None`` = unbounded;
    ``*_open`` excludes the end point). A ``None`` value passes (optional fields).

    Raises:
        ValueError: ``Class.field: must be in <interval>, got <value>``.
    """
    value = getattr(obj, name)
    if value is None:
        return
    ok = _is_real(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ValueError(f"{type(obj).__name__}.{name}: must be in {interval}, got {value!r}")


class StrictKwargs:
    """Adds :meth:`from_kwargs` (unknown keys raise) and :meth:`check_types` to a dataclass
    (the pandapower lesson: no silently ignored keywords, no silently coerced values)."""

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Self:
        """Build from keyword arguments.

        Raises:
            ValueError: unknown keys (the message lists the valid ones), or a field's own check.
        """
        valid = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown keys {unknown}; valid keys: {valid}")
        return cls(**kwargs)

    def check_types(self) -> None:
        """:func:`check_field_types` of this instance (call it first in ``__post_init__``)."""
        check_field_types(self)

    def check_range(self, name: str, low: float | None = None, high: float | None = None, *,
                    low_open: bool = False, high_open: bool = False) -> None:
        """:func:`check_range` of field ``name``."""
        check_range(self, name, low, high, low_open=low_open, high_open=high_open)
