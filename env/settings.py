"""A mixin for the frozen settings dataclasses: build from keywords, unknown keys raise."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Self

__all__ = ["StrictKwargs"]


class StrictKwargs:
    """Adds :meth:`from_kwargs` to a dataclass (the pandapower lesson: no silently ignored keywords)."""

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Self:
        """Build from keyword arguments.

        Raises:
            ValueError: unknown keys (the message lists the valid ones).
        """
        valid = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown keys {unknown}; valid keys: {valid}")
        return cls(**kwargs)
