"""The flat action layout: which dispatch field sits where in the flat action vector.

:class:`DispatchSizes` counts the entries of every :class:`env.dispatch.Dispatch` field for a
grid; :class:`ActionCodec` (``sizes.codec``) is the layout those counts imply: the fields in
:data:`FIELDS` order, each a contiguous slice, ``q_comp_mvar`` last and only when the reactive
setpoints are part of the action, and the sign of each entry's encoding (``-1`` where the
action maps decreasingly: ``a = -1`` is all curtailed). The table of fields and their ranges
is in ``env/dispatch.py``'s module docstring and docs/design.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from env.network import Grid

__all__ = ["FIELDS", "ActionCodec", "DispatchSizes"]

#: Field names in array-layout order.
FIELDS: tuple[str, ...] = (
    "ev_p_mw", "storage_p_mw", "der_curtail_frac", "thermal_p_mw", "thermal_r_up_mw",
    "thermal_r_dn_mw", "ev_r_up_mw", "ev_r_dn_mw", "tie_p_mw", "q_comp_mvar",
)
# fields whose action maps decreasingly (a = -1 -> the upper end of the range)
_DECREASING = frozenset({"der_curtail_frac"})


@dataclass(frozen=True)
class DispatchSizes:
    """Number of entries of every :class:`~env.dispatch.Dispatch` field.

    Attributes:
        n_evcs: EV stations (all feeders).
        n_storage: batteries (all feeders).
        n_der: PV and wind units (feeders, then transmission).
        n_gen: thermal units (0 without transmission).
        n_ev_reserve: stations offering boundary reserve (= n_evcs on T-D cases, else 0).
        n_comp: compensators (all feeders).
        reactive: whether ``q_comp_mvar`` is part of the action.
        n_tie: tie lines between feeders (``Grid.tie_lines``).
    """

    n_evcs: int
    n_storage: int
    n_der: int
    n_gen: int
    n_ev_reserve: int
    n_comp: int
    reactive: bool = False
    n_tie: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "reactive":
                if not isinstance(value, (bool, np.bool_)):
                    raise ValueError(f"DispatchSizes.reactive: must be a bool, got {value!r}")
                object.__setattr__(self, f.name, bool(value))
            elif isinstance(value, (bool, np.bool_)) or int(value) != value or value < 0:
                raise ValueError(f"DispatchSizes.{f.name}: must be an integer >= 0, got {value!r}")
            else:
                object.__setattr__(self, f.name, int(value))
        if self.n_ev_reserve not in (0, self.n_evcs):
            raise ValueError(f"DispatchSizes.n_ev_reserve: must be 0 or n_evcs={self.n_evcs}")

    @classmethod
    def from_grid(cls, grid: "Grid", reactive: bool = False) -> "DispatchSizes":
        """Sizes of ``grid``'s dispatch (see the module table in ``env/dispatch.py``)."""
        feeders = grid.feeders
        n_evcs = sum(len(f.evcs) for f in feeders)
        t = grid.transmission
        return cls(
            n_evcs=n_evcs,
            n_storage=sum(len(f.storage) for f in feeders),
            n_der=sum(len(f.der) for f in feeders) + (len(t.der) if t is not None else 0),
            n_gen=len(t.gen) if t is not None else 0,
            n_ev_reserve=n_evcs if t is not None else 0,
            n_comp=sum(len(f.compensator) for f in feeders),
            reactive=reactive,
            n_tie=len(grid.tie_lines),
        )

    @property
    def codec(self) -> "ActionCodec":
        """The flat action layout of these sizes (one shared instance per distinct sizes)."""
        return _codec(self)

    def field_size(self, name: str) -> int:
        """Number of entries of field ``name`` (0 for ``q_comp_mvar`` when not reactive)."""
        return self.codec.field_size(name)

    def layout(self) -> list[tuple[str, slice]]:
        """``(field, slice)`` of every field present in the flat action, in order."""
        return list(self.codec.layout)

    @property
    def n_action(self) -> int:
        """Length of the flat action vector."""
        return self.codec.n_action

    def where(self, index: int) -> str:
        """``"field[i]"`` for a flat action index (for error messages)."""
        return self.codec.where(index)


@dataclass(frozen=True)
class ActionCodec:
    """The flat action layout of one :class:`DispatchSizes`.

    Attributes:
        sizes: the sizes it lays out.
        layout: ``(field, slice)`` of every field present, in :data:`FIELDS` order.
        n_action: length of the flat vector.
        sign: (n_action,) read-only, ``+1`` where ``a = -1`` maps to the range's low end,
            ``-1`` where it maps to the high end (``der_curtail_frac``).
    """

    sizes: DispatchSizes
    layout: tuple[tuple[str, slice], ...] = field(init=False)
    n_action: int = field(init=False)
    sign: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.sizes, DispatchSizes):
            raise ValueError(f"ActionCodec.sizes: expected DispatchSizes, got {type(self.sizes).__name__}")
        layout, start = [], 0
        for name in FIELDS:
            n = self._count(name)
            if name == "q_comp_mvar" and not self.sizes.reactive:
                continue
            layout.append((name, slice(start, start + n)))
            start += n
        sign = np.ones(start)
        for name, sl in layout:
            if name in _DECREASING:
                sign[sl] = -1.0
        sign.flags.writeable = False
        object.__setattr__(self, "layout", tuple(layout))
        object.__setattr__(self, "n_action", start)
        object.__setattr__(self, "sign", sign)

    def _count(self, name: str) -> int:
        z = self.sizes
        return {"ev_p_mw": z.n_evcs, "storage_p_mw": z.n_storage, "der_curtail_frac": z.n_der,
                "thermal_p_mw": z.n_gen, "thermal_r_up_mw": z.n_gen, "thermal_r_dn_mw": z.n_gen,
                "ev_r_up_mw": z.n_ev_reserve, "ev_r_dn_mw": z.n_ev_reserve, "tie_p_mw": z.n_tie,
                "q_comp_mvar": z.n_comp if z.reactive else 0}[name]

    def field_size(self, name: str) -> int:
        """Number of entries of field ``name`` (0 for ``q_comp_mvar`` when not reactive)."""
        if name not in FIELDS:
            raise ValueError(f"DispatchSizes: unknown field {name!r}; valid: {list(FIELDS)}")
        return self._count(name)

    def field_slice(self, name: str) -> slice:
        """Where field ``name`` sits in the flat vector.

        Raises:
            ValueError: an unknown field, or one absent from this layout.
        """
        for fname, sl in self.layout:
            if fname == name:
                return sl
        raise ValueError(f"ActionCodec: unknown or absent field {name!r}; present: {[f for f, _ in self.layout]}")

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """The fields of a flat vector as views, by name (``q_comp_mvar`` only when present)."""
        if np.shape(flat) != (self.n_action,):
            raise ValueError(f"ActionCodec.split: expected shape ({self.n_action},), got {np.shape(flat)}")
        return {name: flat[sl] for name, sl in self.layout}

    def join(self, values: dict[str, np.ndarray]) -> np.ndarray:
        """The flat vector of the fields in ``values`` (every field of the layout, by name)."""
        missing = [name for name, _ in self.layout if name not in values]
        if missing:
            raise ValueError(f"ActionCodec.join: missing fields {missing}")
        return np.concatenate([np.asarray(values[name], dtype=float) for name, _ in self.layout])

    def where(self, index: int) -> str:
        """``"field[i]"`` for a flat action index (for error messages)."""
        for name, sl in self.layout:
            if sl.start <= index < sl.stop:
                return f"{name}[{index - sl.start}]"
        raise IndexError(f"action index {index} outside 0..{self.n_action - 1}")


@lru_cache(maxsize=256)
def _codec(sizes: DispatchSizes) -> ActionCodec:
    return ActionCodec(sizes)
