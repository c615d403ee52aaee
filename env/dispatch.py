"""The active-power action of the env in physical units, and its Box(-1, 1) encoding.

A :class:`Dispatch` holds one array per controllable quantity, sized by the grid.
Components are concatenated over the feeders in feeder order; the transmission
network's DER (wind farms) come after all feeders' DER:

=====================  ===========  ==============================================  =====================
field                  size         meaning                                          a = -1 .. a = +1
=====================  ===========  ==============================================  =====================
``ev_p_mw``            n_evcs       aggregate charging power of each station         p_min .. p_max now
``storage_p_mw``       n_storage    battery power, + = charging (grid side)          -p_max .. +p_max
``der_curtail_frac``   n_der        share of available PV/wind output spilled       1 (all) .. 0 (none)
``thermal_p_mw``       n_gen        thermal setpoints (T-D cases only)               p_min .. p_max
``thermal_r_up_mw``    n_gen        cleared up-reserve                               0 .. ramp dt
``thermal_r_dn_mw``    n_gen        cleared down-reserve                             0 .. ramp dt
``ev_r_up_mw``         n_evcs*      station up-regulation (charge less) offered      0 .. p_max - p_min now
``ev_r_dn_mw``         n_evcs*      station down-regulation (charge more) offered    0 .. p_max - p_min now
``tie_p_mw``           n_tie***     feeder tie-line transfer, + = from_feeder's bus  -p_max .. +p_max
                                    to to_feeder's bus (``Grid.tie_lines``)
``q_comp_mvar``        n_comp**     compensator setpoints, + = injecting             q_min .. q_max
=====================  ===========  ==============================================  =====================

``*`` zero-length on single-feeder cases (no boundary to offer reserve to), like the
thermal fields. ``**`` present only when the reactive setpoints are part of the action
(``reactive="action"``); otherwise ``q_comp_mvar`` is ``None``. ``***`` zero-length on grids
without tie lines; a :class:`Dispatch` built without it (``tie_p_mw=None``) moves nothing over
the ties (the field is then empty and the simulator plays 0 MW).

Each action entry ``a`` in ``[-1, 1]`` maps linearly onto the field's range at this step,
``x = x(-1) + (a + 1) / 2 * (x(+1) - x(-1))`` (the ranges come from
:class:`ActionLimits`, built by the simulator per step). Entries outside ``[-1, 1]``
extrapolate linearly; the simulator then projects the dispatch onto the feasible set
and reports what it moved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from env.action_codec import FIELDS, ActionCodec, DispatchSizes
from env.fastpath import unchecked

if TYPE_CHECKING:
    from env.network import Grid

__all__ = ["ActionCodec", "ActionLimits", "Dispatch", "DispatchSizes", "FIELDS", "POINT_RANGE_TOL",
           "neutral_dispatch"]

#: An action range narrower than this (MW, or a fraction) is a single point: it encodes as 0.
POINT_RANGE_TOL = 1e-12

GridOrSizes = Union["Grid", DispatchSizes]


def _sizes(grid_or_sizes: GridOrSizes, reactive: bool) -> DispatchSizes:
    if isinstance(grid_or_sizes, DispatchSizes):
        return grid_or_sizes
    return DispatchSizes.from_grid(grid_or_sizes, reactive=reactive)


def _ro(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


_ONE = np.ones(())  # 0-d one: ufuncs take it faster than a Python float


def decoding_vectors(sizes: DispatchSizes, low: np.ndarray, high: np.ndarray) -> dict[str, np.ndarray]:
    """``at_minus = where(sign > 0, low, high)``, ``span = sign (high - low)``, ``half_span =
    span / 2`` of the decoding ``x = (a + 1) half_span + at_minus`` (``sign`` of the layout)."""
    sign = sizes.codec.sign
    span = sign * (high - low)
    return {"at_minus": np.where(sign > 0, low, high), "span": span, "half_span": 0.5 * span}


@dataclass(frozen=True)
class ActionLimits:
    """Ranges of every dispatch field at one step, flat in the action layout (physical units).

    ``low[i] <= high[i]``. Action ``a = -1`` maps to ``low`` and ``+1`` to ``high``, except
    for ``der_curtail_frac`` where ``a = -1`` means 1 (all curtailed) and ``+1`` means 0.
    These are the ranges of the *encoding*; the simulator's projection may be tighter
    (storage energy, thermal ramp from the last setpoint, reserve headroom).

    Attributes:
        sizes: sizes of the dispatch.
        low, high: (n_action,) lower and upper end of each entry's range.
        step: the step these limits belong to.
        at_minus, span, half_span: derived, the decoding ``x = (a + 1) half_span + at_minus``:
            ``at_minus = x(-1)`` (``low``, or ``high`` where the sign is -1), ``span = x(+1) -
            x(-1)`` (signed), ``half_span = span / 2``.
    """

    sizes: DispatchSizes
    low: np.ndarray
    high: np.ndarray
    step: int = 0
    at_minus: np.ndarray = field(init=False, repr=False, compare=False)
    span: np.ndarray = field(init=False, repr=False, compare=False)
    half_span: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = self.sizes.n_action
        for name in ("low", "high"):
            arr = np.array(getattr(self, name), dtype=float)
            if arr.shape != (n,):
                raise ValueError(f"ActionLimits.{name}: expected shape ({n},), got {arr.shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"ActionLimits.{name}: values must be finite")
            object.__setattr__(self, name, _ro(arr))
        bad = np.flatnonzero(self.low > self.high + 1e-12)
        if bad.size:
            raise ValueError(f"ActionLimits: low > high at {self.sizes.where(int(bad[0]))}")
        for name, value in decoding_vectors(self.sizes, self.low, self.high).items():
            object.__setattr__(self, name, value)

    def bounds(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` of field ``name`` (views)."""
        for fname, sl in self.sizes.layout():
            if fname == name:
                return self.low[sl], self.high[sl]
        raise ValueError(f"ActionLimits: unknown or absent field {name!r}; present: "
                         f"{[f for f, _ in self.sizes.layout()]}")

    def decode(self, a: np.ndarray) -> np.ndarray:
        """Flat physical values of a flat action: ``x(-1) + (a + 1)/2 (x(+1) - x(-1))``.

        Computed as ``(a + 1) (span / 2) + x(-1)``: halving is exact, so this is bit-identical
        to ``x(-1) + ((a + 1) / 2) span``.
        """
        if getattr(a, "dtype", None) != np.float64:
            return self.at_minus + (a + 1.0) * 0.5 * self.span
        x = np.add(a, _ONE)
        x *= self.half_span
        x += self.at_minus
        return x

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`decode`, clipped to [-1, 1]; 0 where a range is a single point (width
        <= 1e-12, e.g. a station whose connected EVs must all charge at full power: its bounds agree
        up to rounding, and dividing by the rounding noise would return noise)."""
        span = self.span
        live = np.abs(span) > POINT_RANGE_TOL
        safe = np.where(live, span, 1.0)
        a = np.where(live, 2.0 * (x - self.at_minus) / safe - 1.0, 0.0)
        return np.clip(a, -1.0, 1.0)


def real_array(value: Any, where: str) -> np.ndarray:
    """``value`` as a new float64 array; complex, boolean, string and other non-real data raise
    (``np.array(x, dtype=float)`` would drop an imaginary part with only a warning and parse
    strings). Integers and floats of any width are accepted.

    Raises:
        ValueError: naming ``where`` and the dtype.
    """
    try:
        a = np.asarray(value)
    except ValueError as exc:  # ragged nested sequences
        raise ValueError(f"{where}: must be an array of real numbers ({exc})") from None
    kind = a.dtype.kind
    if kind in "fiu":
        return np.array(a, dtype=np.float64)
    if kind == "O" and all(isinstance(v, (int, float, np.integer, np.floating))
                           and not isinstance(v, (bool, np.bool_)) for v in a.ravel()):
        return a.astype(np.float64)
    what = "complex values are not truncated" if kind == "c" else "not a real number type"
    raise ValueError(f"{where}: must hold real numbers, got dtype {a.dtype} ({what})")


@dataclass(frozen=True)
class Dispatch:
    """Active-power dispatch of one step in physical units (see the module docstring).

    All fields are read-only 1-D float arrays; ``q_comp_mvar`` is ``None`` unless the
    reactive setpoints are part of the action. Construction checks that each field is
    1-D and finite; the sizes against a grid are checked by :meth:`check_sizes`.

    ``flat`` and ``sizes`` are set (not None) on a dispatch decoded from a flat vector
    (:meth:`from_array`, :meth:`zeros`): its fields are then views of ``flat``, laid out by
    ``sizes.codec``, and the simulator uses it as is instead of concatenating the fields.
    """

    ev_p_mw: np.ndarray
    storage_p_mw: np.ndarray
    der_curtail_frac: np.ndarray
    thermal_p_mw: np.ndarray
    thermal_r_up_mw: np.ndarray
    thermal_r_dn_mw: np.ndarray
    ev_r_up_mw: np.ndarray
    ev_r_dn_mw: np.ndarray
    q_comp_mvar: np.ndarray | None = None
    tie_p_mw: np.ndarray | None = None
    flat: np.ndarray | None = field(init=False, repr=False, compare=False)
    sizes: DispatchSizes | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "flat", None)
        object.__setattr__(self, "sizes", None)
        for name in FIELDS:
            value = getattr(self, name)
            if value is None and name == "q_comp_mvar":
                continue
            if value is None and name == "tie_p_mw":     # no transfer over the tie lines
                value = np.zeros(0)
            arr = real_array(value, f"Dispatch.{name}")
            if arr.ndim != 1:
                raise ValueError(f"Dispatch.{name}: expected a 1-D array, got shape {arr.shape}")
            bad = np.flatnonzero(~np.isfinite(arr))
            if bad.size:
                raise ValueError(f"Dispatch.{name}[{bad[0]}] is {arr[bad[0]]} (values must be finite)")
            object.__setattr__(self, name, _ro(arr))

    # ------------------------------------------------------------------ construction
    @classmethod
    def of_flat(cls, flat: np.ndarray, sizes: DispatchSizes) -> "Dispatch":
        """The dispatch whose fields are views of ``flat`` (finite float64 physical values of
        length ``sizes.n_action``, made read-only here), laid out by ``sizes.codec``; the caller
        vouches for the values (the decoders below, the simulator)."""
        flat.setflags(write=False)
        values: dict[str, Any] = {name: flat[sl] for name, sl in sizes.codec.layout}
        if not sizes.reactive:
            values["q_comp_mvar"] = None
        values["flat"], values["sizes"] = flat, sizes
        return unchecked(cls, values)

    @classmethod
    def from_array(cls, a: np.ndarray, limits: ActionLimits) -> "Dispatch":
        """Decode a flat action (layout of :meth:`layout`) with this step's ``limits``.

        Raises:
            ValueError: wrong shape, non-real data (complex, bool, str), a NaN/inf entry, or an
                entry whose physical value overflows (|a| ~ 1e308; the message names the field).
        """
        sizes = limits.sizes
        arr = a if type(a) is np.ndarray and a.dtype == np.float64 else real_array(a, "Dispatch.from_array: the action")
        n = sizes.n_action
        if arr.shape != (n,):
            lay = ", ".join(f"{f}[{s.start}:{s.stop}]" for f, s in sizes.layout())
            raise ValueError(f"Dispatch.from_array: expected an action of shape ({n},) "
                             f"laid out as {lay}; got shape {arr.shape}")
        with np.errstate(over="ignore", invalid="ignore"):
            if not (math.isfinite(np.add.reduce(arr)) or np.isfinite(arr).all()):
                i = int(np.flatnonzero(~np.isfinite(arr))[0])
                raise ValueError(f"Dispatch.from_array: action[{i}] ({sizes.where(i)}) is {arr[i]}; "
                                 "actions must be finite")
            x = limits.decode(arr)
        if not np.isfinite(x).all():   # an entry so large (~1e308) that its physical value overflows
            i = int(np.flatnonzero(~np.isfinite(x))[0])
            raise ValueError(f"Dispatch.from_array: action[{i}] ({sizes.where(i)}) = {arr[i]} decodes to "
                             f"{x[i]} MW; the action space is [-1, 1] (values beyond it are projected, but "
                             "their physical value must be finite)")
        return cls.of_flat(x, sizes)

    @classmethod
    def zeros(cls, grid_or_sizes: GridOrSizes, reactive: bool = False) -> "Dispatch":
        """All-zero dispatch of a grid (or of given sizes)."""
        sizes = _sizes(grid_or_sizes, reactive)
        return cls.of_flat(np.zeros(sizes.n_action), sizes)

    @classmethod
    def from_flat(cls, x: np.ndarray, grid_or_sizes: GridOrSizes, reactive: bool = False) -> "Dispatch":
        """Build from a flat vector of *physical* values in the layout order (validated)."""
        sizes = _sizes(grid_or_sizes, reactive)
        arr = np.array(x, dtype=float)
        if arr.shape != (sizes.n_action,):
            raise ValueError(f"Dispatch.from_flat: expected shape ({sizes.n_action},), got {arr.shape}")
        parts = {name: arr[sl] for name, sl in sizes.layout()}
        return cls(**parts)

    @staticmethod
    def layout(grid_or_sizes: GridOrSizes, reactive: bool = False) -> list[tuple[str, slice]]:
        """``(field, slice)`` pairs of the flat action of a grid, in order."""
        return _sizes(grid_or_sizes, reactive).layout()

    # ------------------------------------------------------------------ views
    def to_flat(self, sizes: DispatchSizes | None = None) -> np.ndarray:
        """Physical values concatenated in the layout order; with ``sizes``, an empty ``tie_p_mw``
        (built without it) is laid out as zeros (no transfer)."""
        parts = [self.tie_or_zeros(sizes.n_tie) if n == "tie_p_mw" and sizes is not None else getattr(self, n)
                 for n in FIELDS if getattr(self, n) is not None]
        return np.concatenate(parts)

    def tie_or_zeros(self, n_tie: int) -> np.ndarray:
        """``tie_p_mw``, or ``n_tie`` zeros when the dispatch was built without it."""
        return self.tie_p_mw if self.tie_p_mw.shape[0] or not n_tie else np.zeros(n_tie)

    def to_array(self, limits: ActionLimits) -> np.ndarray:
        """Encode as a float32 action in [-1, 1] (inverse of :meth:`from_array` within range)."""
        self.check_sizes(limits.sizes)
        return limits.encode(self.to_flat(limits.sizes)).astype(np.float32)

    def check_sizes(self, sizes: DispatchSizes) -> None:
        """Raise ValueError naming the first field whose length does not match ``sizes``."""
        for name in FIELDS:
            value = getattr(self, name)
            if name == "q_comp_mvar":
                if value is None:
                    continue
                want = sizes.n_comp
            else:
                want = sizes.field_size(name)
                if name == "tie_p_mw" and value.shape == (0,):
                    continue                             # built without it: no transfer
            if value.shape != (want,):
                raise ValueError(f"Dispatch.{name}: expected shape ({want},) for this grid, got {value.shape}")

    def replace(self, **changes: np.ndarray | None) -> "Dispatch":
        """A copy with some fields replaced (validated); unknown names raise listing the fields."""
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise ValueError(f"Dispatch.replace: unknown fields {unknown}; valid: {list(FIELDS)}")
        values = {name: getattr(self, name) for name in FIELDS}
        values.update(changes)
        return Dispatch(**values)


def neutral_dispatch(obs: Any, sizes: DispatchSizes) -> Dispatch:
    """The plain mode's neutral ("do nothing") dispatch of step ``obs.step`` (docs/rl.md):
    EV stations at their largest deliverable power now (charge as soon as possible, like
    seed 003's base rule; every station idles when none is connected), storage idle, no
    renewable curtailed, thermal units at their last setpoint, no reserve offered, compensators
    at 0 MVAr when they are part of the action.

    Args:
        obs: the step's :class:`env.observation.Observation`.
        sizes: the dispatch sizes (``limits.sizes``).
    """
    ev = obs.ev.p_max_kw / 1e3 if obs.ev is not None else np.zeros(sizes.n_evcs)
    zero_gen, zero_res = np.zeros(sizes.n_gen), np.zeros(sizes.n_ev_reserve)
    return Dispatch(ev_p_mw=ev, storage_p_mw=np.zeros(sizes.n_storage), der_curtail_frac=np.zeros(sizes.n_der),
                    thermal_p_mw=np.asarray(obs.thermal_p_last_mw, dtype=float), thermal_r_up_mw=zero_gen,
                    thermal_r_dn_mw=zero_gen, ev_r_up_mw=zero_res, ev_r_dn_mw=zero_res,
                    q_comp_mvar=np.zeros(sizes.n_comp) if sizes.reactive else None, tie_p_mw=np.zeros(sizes.n_tie))
