"""EV charging stations as virtual storage (docs/math.md §3, docs/design.md "EV charging stations").

A station's connected EVs are aggregated into a virtual storage: per step a power range
and cumulative grid-side energy bounds (an outer approximation of the Minkowski sum of the
EVs' feasible sets). Policies dispatch the aggregate; :class:`EVFleet` splits each
station's setpoint back to its EVs (must-run first, then least laxity) and is the arbiter
of what is actually delivered.

Conventions (all stations of a feeder at once, fully vectorized over all connected EVs):

* Step ``t`` is the interval ``[t dt, (t + 1) dt)``; EV ``i`` is connected during
  ``a_i <= t < D_i`` with the *deadline* ``D_i = min(departure_step_i, n_steps)``: an EV
  still connected at the day's end is checked (and leaves the fleet) there, so every
  must-run / laxity / bound uses ``D_i``.
* Power ``p`` is grid side, kW, ``> 0`` = charging. Battery energy evolves as
  ``e <- e + eta p dt`` when charging and ``e <- e + p dt / eta`` when discharging (V2G).
* Energy bounds ``x_lo_kwh`` / ``x_hi_kwh`` are **relative**: grid-side energy counted
  from the *start of step t* (what has been delivered before ``t`` is excluded). The
  absolute cumulative form of docs/math.md §3 (energy since each connected EV's arrival) is
  ``x_kwh + x_lo_kwh <= X <= x_kwh + x_hi_kwh`` with ``x_kwh`` the energy already
  delivered to the connected EVs (also reported).
* Station index ``s`` is a column of every ``(n_station,)`` array.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from env.fastpath import unchecked
from scenarios import EVSessions

__all__ = ["EVCSBounds", "EVCSHorizon", "EVFleet", "EVStepResult", "asap_profile", "ev_rows", "fill_stage",
           "battery_gain_kwh", "horizon_bounds", "interval_power_kw", "laxity_order", "limits_into", "split_kw",
           "station_sums", "step_limits", "unmet_kwh"]

_TOL_KWH = 1e-9  # unmet energy below this is rounding, reported as 0

# rows of EVFleet's compact state of the connected EVs (one column per EV). The first
# _N_SUM rows are summed per station in one bincount every step: the per-step headroom and
# must-run floor (work rows, rewritten by _limits), then session data and the state
# (grid energy, battery); then per-EV constants precomputed once (dt fixed).
(_HEAD, _PLO, _PMAX, _X, _E, _EREQ, _ECAP,
 _ETA, _DEAD, _INV_EDT, _GAIN, _NEED0, _LAXKEY0, _INV_EP) = range(14)
_N_ROWS = 14
_N_SUM = 7  # rows _HEAD.._ECAP: hi_sum, lo_sum, p_rated, x, e, e_target, e_capacity


def _check_arrays(obj: object, ndim: int) -> None:
    """Validate a dataclass of arrays: one common ``ndim``-d shape, all values finite.

    Kept cheap (it runs every env step): shape checks per field, one finiteness check over
    all fields together; fields are marked read-only. Raises ValueError naming the bad field.
    """
    cls = type(obj)
    names = cls.__dataclass_fields__.keys()  # type: ignore[attr-defined]
    arrays = []
    shape: tuple[int, ...] | None = None
    for name in names:
        arr = getattr(obj, name)
        if not isinstance(arr, np.ndarray):
            arr = np.asarray(arr)
            object.__setattr__(obj, name, arr)
        if shape is None:
            shape = arr.shape
            if arr.ndim != ndim:
                raise ValueError(f"{cls.__name__}.{name}: expected {ndim} dimension(s), "
                                 f"got shape {arr.shape}")
        if arr.shape != shape:
            raise ValueError(f"{cls.__name__}.{name}: expected shape {shape}, got {arr.shape}")
        arr.flags.writeable = False
        arrays.append(arr)
    if not np.isfinite(np.concatenate(arrays, axis=None)).all():
        bad = next(n for n, a in zip(names, arrays) if not np.isfinite(a).all())
        raise ValueError(f"{cls.__name__}.{bad}: values must be finite")


@dataclass(frozen=True)
class EVCSBounds:
    """Aggregate virtual-storage bounds of every station for the current step ``t``.

    All arrays have shape ``(n_station,)``; sums run over the EVs connected during ``t``.

    Attributes:
        p_max_kw: largest deliverable aggregate power now,
            ``sum_i min(pmax_i, (E_cap_i - e_i)/(eta_i dt))`` (setpoints above are clipped).
        p_rated_kw: ``Pmax_t = sum_i pmax_i`` (charger ratings, docs/math.md §3).
        p_must_kw: power that must flow now to keep every EV able to reach its request,
            ``sum_i clip((e_req_i - e_i)/(eta_i dt) - pmax_i (D_i - 1 - t), 0, pmax_i)``.
        p_min_kw: smallest admissible aggregate power (setpoints below are clipped). Equal
            to ``p_must_kw`` without V2G; with V2G each EV may discharge down to
            ``-min(pmax, eta e / dt)`` while keeping its request reachable (can be < 0).
            With ``enforce_must_run=False`` it is the free floor (0, or the V2G discharge
            limit) and requests may then be missed.
        p_asap_kw: as-soon-as-possible aggregate (every EV at ``min(pmax, headroom)``);
            equals ``p_max_kw`` by definition, kept as a separate name for policies.
        x_kwh: grid-side energy already delivered to the connected EVs since their arrival.
        x_lo_kwh, x_hi_kwh: bounds on the grid-side energy of *this step* that keep every
            EV feasible, i.e. the cumulative energy at the end of step ``t`` **relative to its
            start** (``sum_i p_lo_i dt``, = ``p_min_kw dt`` when must-run is enforced, and
            ``p_max_kw dt``); add ``x_kwh`` for the absolute form of docs/math.md §3. For several
            steps ahead see :meth:`EVFleet.bounds_horizon`.
        n_connected: number of connected EVs (int).
        e_kwh: aggregate battery energy now.
        e_target_kwh: sum of the requests of the connected EVs.
        e_capacity_kwh: sum of the battery capacities of the connected EVs.
    """

    p_max_kw: np.ndarray
    p_rated_kw: np.ndarray
    p_must_kw: np.ndarray
    p_min_kw: np.ndarray
    p_asap_kw: np.ndarray
    x_kwh: np.ndarray
    x_lo_kwh: np.ndarray
    x_hi_kwh: np.ndarray
    n_connected: np.ndarray
    e_kwh: np.ndarray
    e_target_kwh: np.ndarray
    e_capacity_kwh: np.ndarray

    def __post_init__(self) -> None:
        _check_arrays(self, ndim=1)
        tol = 1e-9 * (1.0 + np.abs(self.p_max_kw))
        if (self.p_min_kw > self.p_max_kw + tol).any():
            raise ValueError("EVCSBounds.p_min_kw: exceeds p_max_kw")
        if (self.x_lo_kwh > self.x_hi_kwh + tol).any():
            raise ValueError("EVCSBounds.x_lo_kwh: exceeds x_hi_kwh")


@dataclass(frozen=True)
class EVCSHorizon:
    """Look-ahead virtual-storage bounds of the EVs connected at step ``t`` (arrivals unknown).

    Arrays have shape ``(h, n_station)``; row ``k`` is step ``t + k``.

    Attributes:
        p_max_kw: ``sum_i pmax_i 1[t + k < D_i]`` (ratings of the EVs still connected).
        p_min_kw: ``0`` without V2G, ``-p_max_kw`` with V2G.
        x_lo_kwh, x_hi_kwh: bounds on the grid-side energy delivered from the start of step
            ``t`` to the end of step ``t + k`` (relative, see module docstring). Per EV,
            with ``n = min(k + 1, D - t)`` connected steps and ``r = max(0, D - 1 - t - k)``
            steps left after ``t + k``: ``x_hi = min((E_cap - e)/eta, pmax dt n)`` and
            ``x_lo = max(0, (e_req - e)/eta - pmax dt r)`` (docs/math.md §3; the V2G forms allow
            discharge, see :func:`horizon_bounds`), summed per station.
    """

    p_max_kw: np.ndarray
    p_min_kw: np.ndarray
    x_lo_kwh: np.ndarray
    x_hi_kwh: np.ndarray

    def __post_init__(self) -> None:
        _check_arrays(self, ndim=2)
        if (self.x_lo_kwh > self.x_hi_kwh + 1e-9 * (1.0 + np.abs(self.x_hi_kwh))).any():
            raise ValueError("EVCSHorizon.x_lo_kwh: exceeds x_hi_kwh")


@dataclass(frozen=True)
class EVStepResult:
    """Outcome of one :meth:`EVFleet.step`, per station (arrays of shape ``(n_station,)``).

    Attributes:
        p_kw: delivered aggregate power (= sum of the EVs' powers).
        p_clip_kw: setpoint minus delivered (``> 0``: asked more than possible,
            ``< 0``: asked less than the must-run / discharge limit).
        unmet_kwh: ``sum max(0, e_req - e)`` over the EVs leaving at the end of this step
            (departure, or the day's end).
        departed: number of EVs leaving at the end of this step (int).
        charged_kwh: grid-side energy of this step, ``p_kw dt``.
        stored_kwh: battery energy gained this step (``eta p dt`` charging, ``p dt/eta``
            discharging).
    """

    p_kw: np.ndarray
    p_clip_kw: np.ndarray
    unmet_kwh: np.ndarray
    departed: np.ndarray
    charged_kwh: np.ndarray
    stored_kwh: np.ndarray

    def __post_init__(self) -> None:
        _check_arrays(self, ndim=1)
        if (self.unmet_kwh < 0).any():
            raise ValueError("EVStepResult.unmet_kwh: must be >= 0")


def _grid_energy(db_kwh: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Least grid energy changing a battery by ``db``: ``db/eta`` if ``db >= 0`` else ``db eta``."""
    return np.where(db_kwh >= 0, db_kwh / eta, db_kwh * eta)


def station_sums(station: np.ndarray, values: np.ndarray, n_station: int) -> np.ndarray:
    """``out[..., s] = sum_{i: station_i = s} values[..., i]``, values of shape (m, n) or (n,)."""
    if values.ndim == 1:
        return np.bincount(station, weights=values, minlength=n_station)
    m = values.shape[0]
    key = (station[None, :] + n_station * np.arange(m)[:, None]).ravel()
    return np.bincount(key, weights=values.ravel(), minlength=m * n_station).reshape(m, n_station)


def horizon_bounds(e_kwh: np.ndarray, station: np.ndarray, p_max_kw: np.ndarray,
                   efficiency: np.ndarray, e_request_kwh: np.ndarray,
                   e_capacity_kwh: np.ndarray, deadline_step: np.ndarray, t: int, h: int,
                   n_station: int, dt_h: float, v2g: bool = False) -> EVCSHorizon:
    """Look-ahead aggregate bounds (docs/math.md §3) of the EVs connected at step ``t``.

    Per EV, over ``n = clip(D - t, 0, k + 1)`` connected steps up to step ``t + k`` and
    ``r = max(0, D - 1 - t - k)`` steps left after it, the battery at the end of ``t + k`` lies in
    ``[b_lo, b_hi]`` with ``b_hi = min(E_cap, e + eta pmax dt n)`` and
    ``b_lo = max(floor, e_req - eta pmax dt r)`` (``floor = e`` without V2G,
    ``max(0, e - pmax dt n / eta)`` with V2G), ``b_lo <= b_hi``. The grid-side energy from the
    start of ``t`` is then ``x_lo = g(b_lo - e)`` with ``g(db) = db/eta`` (``db >= 0``) or
    ``db eta`` (``db < 0``), and ``x_hi = (b_hi - e)/eta``; with V2G and ``n >= 2`` a
    discharge-recharge cycle can draw more, so ``x_hi = max_{C,D >= 0} C - D`` s.t.
    ``eta C - D/eta <= E_cap - e``, ``C + D <= pmax dt n`` (a 2-variable LP, closed form).

    Args:
        e_kwh, station, p_max_kw, efficiency, e_request_kwh, e_capacity_kwh, deadline_step:
            per connected EV, shape (n_ev,); ``deadline_step`` = ``min(departure, n_steps)``.
        t: current step; h: number of look-ahead steps (>= 1).
        n_station: number of stations; dt_h: step length (h); v2g: allow discharge.
    """
    if h < 1:
        raise ValueError(f"horizon_bounds.h: must be >= 1, got {h}")
    k = np.arange(h)[:, None]
    left = np.asarray(deadline_step, dtype=float) - t  # connected steps from t on
    n = np.clip(left, 0.0, k + 1.0)
    r = np.maximum(left - 1.0 - k, 0.0)
    e, eta, pmax = e_kwh, efficiency, p_max_kw
    reach_kwh = pmax * dt_h * n  # grid energy of n steps at full power
    b_hi = np.minimum(e_capacity_kwh, e + eta * reach_kwh)
    floor = np.maximum(e - reach_kwh / eta, 0.0) if v2g else np.broadcast_to(e, b_hi.shape)
    b_lo = np.minimum(np.maximum(floor, e_request_kwh - eta * pmax * dt_h * r), b_hi)
    x_lo = _grid_energy(b_lo - e, eta)
    x_hi = (b_hi - e) / eta
    if v2g:
        x_hi = np.maximum(x_hi, _cycle_x_hi(e_capacity_kwh - e, eta, reach_kwh, n))
    on = (left > k).astype(float) * pmax
    p_hi = station_sums(station, on, n_station)
    return EVCSHorizon(p_max_kw=p_hi, p_min_kw=-p_hi if v2g else np.zeros_like(p_hi),
                       x_lo_kwh=station_sums(station, x_lo, n_station),
                       x_hi_kwh=station_sums(station, x_hi, n_station))


def _cycle_x_hi(room_kwh: np.ndarray, eta: np.ndarray, reach_kwh: np.ndarray,
                n: np.ndarray) -> np.ndarray:
    """V2G vertex of ``max C - D`` s.t. ``eta C - D/eta = room``, ``C + D = reach``.

    Needs ``n >= 2`` steps (charge and discharge cannot share a step) and ``D >= 0``.

    ``C = (room + reach/eta)/(eta + 1/eta)``, value ``2C - reach``; ``-inf`` where not a vertex.
    """
    c = (room_kwh + reach_kwh / eta) / (eta + 1.0 / eta)
    ok = (n >= 2) & (c <= reach_kwh)
    return np.where(ok, 2.0 * c - reach_kwh, -np.inf)


def asap_profile(sessions: EVSessions, n_station: int, dt_h: float, n_steps: int,
                 upto: Literal["capacity", "request"] = "capacity") -> np.ndarray:
    """As-soon-as-possible aggregate power of every session of the day, shape (n_steps, n_station).

    Each EV charges at full power from arrival until full (``upto="capacity"``) or until
    its request (``upto="request"``): battery after ``k`` steps
    ``b_k = min(E, e0 + eta pmax dt k)``, power in its ``k``-th step
    ``(b_{k+1} - b_k)/(eta dt)``, for ``a <= t < min(d, n_steps)``: that is ``pmax`` over the
    step interval ``[a, a + min((E - e0)/(eta pmax dt), min(d, n_steps) - a))``
    (:func:`interval_power_kw`).
    """
    s = sessions
    e_top = s.e_capacity_kwh if upto == "capacity" else s.e_request_kwh
    gain = s.efficiency * s.p_max_kw * dt_h
    span = np.maximum(np.minimum(s.departure_step, n_steps) - s.arrival_step, 0)
    length = np.minimum(np.maximum(e_top - s.e_arrival_kwh, 0.0) / gain, span)
    start = s.arrival_step.astype(float)
    return interval_power_kw(start, start + length, s.p_max_kw, s.station, n_steps, n_station)


def interval_power_kw(start: np.ndarray, stop: np.ndarray, p_kw: np.ndarray, station: np.ndarray,
                      n_rows: int, n_station: int) -> np.ndarray:
    """Station power of EVs drawing ``p_kw`` over real step intervals ``[start, stop)``.

    Row (step) ``k`` gets ``p |[k, k + 1) n [start, stop)|`` from each EV: full power on the rows
    the interval covers, the covered share on the rows it cuts (an ASAP charge's last, partial
    step), summed per station. With ``a = start``, ``b = stop`` clipped to ``[0, n_rows]``, the
    difference array ``+(fa + 1 - a)`` at ``fa = floor(a)``, ``+(a - fa)`` at ``fa + 1``,
    ``-(1 - (b - fb))`` at ``fb = floor(b)``, ``-(b - fb)`` at ``fb + 1``, then a cumulative sum
    over rows, gives it in ``O(n_ev + n_rows n_station)`` instead of one entry per EV and row.

    Args:
        start, stop: (..., n_ev) interval ends in steps (row 0 = 0); leading axes are batches.
        p_kw: (n_ev,) power while charging.
        station: (n_ev,) station index.

    Returns:
        (n_rows, n_station) for 1-D inputs, else (n_rows, *batch, n_station), kW.
    """
    a = np.clip(start, 0.0, n_rows)
    b = np.clip(stop, a, n_rows)
    batch = a.shape[:-1]
    n_b = int(np.prod(batch))
    a, b = a.reshape(n_b, -1), b.reshape(n_b, -1)
    fa, fb = np.floor(a), np.floor(b)
    ra, rb = a - fa, b - fb
    w = np.concatenate([1.0 - ra, ra, rb - 1.0, -rb], axis=1) * np.tile(p_kw, 4)     # (n_b, 4 n_ev)
    row = np.concatenate([fa, fa + 1.0, fb, fb + 1.0], axis=1).astype(np.intp)
    width = n_rows + 2
    key = (np.arange(n_b)[:, None] * width + row) * n_station + np.tile(station, 4)
    d = np.bincount(key.reshape(-1), weights=w.reshape(-1), minlength=n_b * width * n_station)
    out = np.cumsum(d.reshape(n_b, width, n_station), axis=1)[:, :n_rows]
    return np.moveaxis(out, 0, 1).reshape((n_rows,) + batch + (n_station,))


def unmet_kwh(e_request_kwh: np.ndarray, e_kwh: np.ndarray) -> np.ndarray:
    """Energy an EV leaves without, ``max(0, e_req - e)`` (kWh; below ``1e-9`` it is rounding: 0)."""
    miss = e_request_kwh - e_kwh
    return np.where(miss < _TOL_KWH, 0.0, miss)


def battery_gain_kwh(p_kw: np.ndarray, efficiency: np.ndarray, dt_h: Any, v2g: bool = False,
                     out: np.ndarray | None = None) -> np.ndarray:
    """Battery energy gained in a step at grid power ``p_kw``: ``eta p dt`` (V2G: ``p dt / eta``
    when discharging)."""
    if v2g:
        return np.multiply(np.where(p_kw >= 0.0, efficiency * p_kw, p_kw / efficiency), dt_h, out=out)
    out = np.multiply(efficiency, p_kw, out=out)
    out *= dt_h
    return out


def ev_rows(station: np.ndarray, e_kwh: np.ndarray, e_request_kwh: np.ndarray, e_capacity_kwh: np.ndarray,
            p_max_kw: np.ndarray, efficiency: np.ndarray, deadline_step: np.ndarray, dt_h: float) -> np.ndarray:
    """The compact state of EVs (rows ``_HEAD.._INV_EP``, one column per EV) at energies ``e_kwh``.

    ``GAIN = eta pmax dt`` (battery kWh per full-power step), ``INV_EDT = 1/(eta dt)``,
    ``NEED0 = e_req - GAIN (D - 1)`` so that the must-run battery energy of step ``t`` is
    ``need = NEED0 + GAIN t - e``; ``INV_EP = 1/(eta pmax)`` and
    ``LAXKEY0 = D dt - e_req INV_EP + W station`` so that the sort key
    ``LAXKEY0 + e INV_EP = LAX + t dt + W station`` orders EVs by station, then laxity
    (``W`` exceeds the span of any laxity, so one stable argsort does it). Rows ``_HEAD``,
    ``_PLO`` and ``_X`` start at 0.
    """
    d = np.asarray(deadline_step).astype(float)
    gain = efficiency * p_max_kw * dt_h
    inv_ep = 1.0 / (efficiency * p_max_kw)
    lax0 = d * dt_h - e_request_kwh * inv_ep
    span = np.abs(lax0).max(initial=0.0) + (e_capacity_kwh * inv_ep).max(initial=0.0)
    w = 2.0 ** np.ceil(np.log2(2.0 * span + 2.0))
    zeros = np.zeros(len(d))
    return np.vstack((zeros, zeros, p_max_kw, zeros, e_kwh, e_request_kwh, e_capacity_kwh, efficiency, d,
                      1.0 / (efficiency * dt_h), gain, e_request_kwh - gain * (d - 1.0), lax0 + w * station, inv_ep))


def limits_into(s: np.ndarray, t: int, dt_h: float, v2g: bool = False) -> np.ndarray | None:
    """Write each EV's headroom and must-run power of step ``t`` into rows ``_HEAD``, ``_PLO``
    of the compact state ``s`` (kW); returns the V2G floor (None without V2G).

    ``head = min(pmax, max(E_cap - e, 0) / (eta dt))`` (V2G: ``max(E_cap - e, 0)`` unclipped
    below by the floor); ``p_lo = min(max(need, 0) / (eta dt), head)`` with
    ``need = e_req - e - eta pmax dt (D - 1 - t)`` (V2G: ``need eta / dt`` if negative, and
    ``p_lo >= floor = -min(pmax, eta e / dt)``).
    """
    e = s[_E]
    head, p_lo = s[_HEAD], s[_PLO]
    head[:] = s[_ECAP]
    np.multiply(s[_GAIN], t, out=p_lo)
    p_lo += s[_NEED0]
    work = s[:2]                      # rows head, p_lo: E_cap - e and need
    work -= e
    floor = None
    if v2g:
        np.maximum(head, 0.0, out=head)
        head *= s[_INV_EDT]
        floor = -np.minimum(s[_PMAX], s[_ETA] * e / dt_h)
        np.maximum(_grid_energy(p_lo, s[_ETA]) / dt_h, floor, out=p_lo)
    else:
        np.maximum(work, _ZERO, out=work)
        work *= s[_INV_EDT]
    np.minimum(head, s[_PMAX], out=head)
    np.minimum(p_lo, head, out=p_lo)
    return floor


def step_limits(s: np.ndarray, t: int, dt_h: float) -> tuple[np.ndarray, np.ndarray]:
    """``(p_lo, head)`` per EV of step ``t`` without V2G (:func:`limits_into`; views of ``s``)."""
    limits_into(s, t, dt_h)
    return s[_PLO], s[_HEAD]


def laxity_order(s: np.ndarray, station: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EVs sorted by station, then least laxity ``LAX = (D - t) dt - (e_req - e)/(eta pmax)``
    (stable): ``(order, station in that order, first sorted position of each EV's station)``."""
    key = s[_E] * s[_INV_EP]
    key += s[_LAXKEY0]
    o = key.argsort(kind="stable")
    st_o = station[o]
    n_at = np.bincount(st_o)                   # the first sorted position of station s is the
    return o, st_o, (np.cumsum(n_at) - n_at)[st_o]   # count of EVs at stations before s


def fill_stage(room: np.ndarray, o: np.ndarray, first_o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A fill stage of per-EV ``room``: (room before each EV at its station, room), in the
    order ``o`` of :func:`laxity_order`."""
    cap_o = room[o]
    excl = cap_o.cumsum()
    excl -= cap_o
    excl -= excl[first_o]
    return excl, cap_o


def split_kw(amount_kw: np.ndarray, st_o: np.ndarray, before_o: np.ndarray, cap_o: np.ndarray) -> np.ndarray:
    """Each EV's share of its station's ``amount_kw`` (..., n_station) in a fill stage, in
    sorted order: the EV at sorted position ``j`` of station ``s`` gets
    ``clip(A_s - sum_{i before j in s} c_i, 0, c_j)`` (least laxity first)."""
    a = amount_kw[..., st_o]
    a -= before_o
    np.maximum(a, _ZERO, out=a)
    np.minimum(a, cap_o, out=a)
    return a


class _Prep:
    """Per-step quantities of the connected EVs (computed once per step, shared by bounds/step).

    ``head`` / ``p_lo`` are views of the fleet's work rows; ``sums`` holds the per-station sums
    of rows ``_HEAD.._ECAP`` (read-only); ``counts`` the EVs per station.
    """

    __slots__ = ("t", "head", "p_lo", "floor", "lo_sum", "hi_sum", "floor_sum", "o", "st_o",
                 "stages", "sums", "counts")


class _Membership:
    """Who is connected when: it depends on the sessions only, not on the setpoints.

    The compact state's columns at step ``t`` are the admitted sessions (``0 <= a < n_steps``,
    admitted at ``t = a``) in admission order (arrival step, then session index) that have not
    left; an EV leaves at the end of step ``D - 1`` (never if ``D <= a``). Built for the whole
    day with a few vectorized calls; :meth:`during` and :meth:`gone` hand out read-only slices.
    """

    def __init__(self, arrival: np.ndarray, deadline: np.ndarray, station: np.ndarray,
                 order: np.ndarray, arr_start: np.ndarray, n_steps: int, n_station: int) -> None:
        ns = n_station
        adm = order[arr_start[0]:arr_start[n_steps]]             # admission order
        a, d = np.asarray(arrival)[adm], np.asarray(deadline)[adm]
        end = np.where(d > a, d, n_steps)
        # (step, EV) pairs of the connected EVs, by step, then admission order: each EV's steps
        # a..end-1 in admission order, then a stable sort by step
        dur = np.maximum(end - a, 0)
        n_ev = a.shape[0]
        i_rep = np.repeat(np.arange(n_ev, dtype=np.int32), dur)
        first = np.cumsum(dur) - dur
        small = np.int16 if n_steps < 2**15 else np.int64       # 16-bit keys: numpy's stable sort is a radix sort
        t_rep = np.arange(i_rep.shape[0], dtype=np.int64)
        t_rep += np.repeat((a - first).astype(np.int64), dur)     # a_i + (k - first_i): EV i's k-th pair
        by_step = np.argsort(t_rep.astype(small), kind="stable")
        i_all = i_rep[by_step]
        act = adm[i_all].astype(np.intp)
        st = station[act]
        # per step and station, connected EVs: arrivals minus departures so far (per EV, not per pair)
        inside = dur > 0
        a_in, end_in, s_in = a[inside], end[inside], np.asarray(station)[adm[inside]]
        delta = (np.bincount(a_in * ns + s_in, minlength=(n_steps + 1) * ns)
                 - np.bincount(end_in * ns + s_in, minlength=(n_steps + 1) * ns))
        counts = np.cumsum(delta.reshape(n_steps + 1, ns)[:n_steps], axis=0)
        n_t = counts.sum(axis=1)
        off = np.concatenate(([0], np.cumsum(n_t))).astype(np.intp)
        t_all = np.repeat(np.arange(n_steps), n_t)
        leave = d[i_all] == t_all + 1                              # D = t + 1: leaves after t
        gone = np.flatnonzero(leave)
        t_gone = t_all[gone]
        d_t = np.bincount(t_gone, minlength=n_steps)
        doff = np.concatenate(([0], np.cumsum(d_t))).astype(np.intp)
        departed = np.bincount(t_gone * ns + st[gone], minlength=n_steps * ns).reshape(n_steps, ns)
        self._act, self._st, self._counts = act, st, counts
        # bincount key of the stacked per-station sums (rows r: st + ns r), built per step
        self._rows = ns * np.arange(_N_SUM, dtype=np.intp)[:, None]
        self._keep, self._departed = ~leave, departed
        self._gone_pos, self._gone_ids, self._gone_st = gone - off[t_gone], act[gone], st[gone]
        for arr in vars(self).values():
            arr.setflags(write=False)
        self._off, self._doff = off.tolist(), doff.tolist()
        self._any_gone = (d_t > 0).tolist()

    def during(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(sessions, stations, sum key, EVs per station) of the EVs connected during step ``t``."""
        o0, o1 = self._off[t], self._off[t + 1]
        st = self._st[o0:o1]
        key = (st + self._rows).reshape(-1)
        key.setflags(write=False)
        return self._act[o0:o1], st, key, self._counts[t]

    def gone(self, t: int) -> tuple[np.ndarray, ...] | None:
        """(positions, sessions, stations, count per station, mask of those staying) of the EVs
        leaving at the end of step ``t``; None if none."""
        if not self._any_gone[t]:
            return None
        d0, d1 = self._doff[t], self._doff[t + 1]
        return (self._gone_pos[d0:d1], self._gone_ids[d0:d1], self._gone_st[d0:d1], self._departed[t],
                self._keep[self._off[t]:self._off[t + 1]])


class EVFleet:
    """All EVs of all stations of one episode (day): state, aggregate bounds and the split.

    Stateful but explicit: steps must be played in order ``t = 0, 1, ...``;
    ``bounds(t)`` / ``asap_power(t)`` / ``bounds_horizon(t, h)`` describe the state before
    ``step(t, ...)``. ``copy()`` gives an independent fleet (for look-ahead simulations).
    The connected EVs live in one compact ``(quantity, EV)`` array, so a step costs a fixed
    number of vectorized numpy calls whatever the number of EVs and stations.

    Args:
        sessions: the day's EV sessions (any order).
        n_station: number of stations (``sessions.station < n_station``).
        dt_h: step length in hours.
        n_steps: steps in the day; EVs still connected after step ``n_steps - 1`` are
            checked there.
        v2g: allow discharge, ``p in [-pmax, pmax]`` with battery energy ``>= 0``.
        enforce_must_run: clip setpoints below the must-run (``p_min_kw``) up to it, so every
            reachable request is met whatever the setpoints. If False, a setpoint below it is
            honored (down to 0, or the V2G discharge limit) and the shortfall shows up as unmet
            energy; the must-run part is still served first, by least laxity.
    """

    def __init__(self, sessions: EVSessions, n_station: int, dt_h: float, n_steps: int,
                 v2g: bool = False, enforce_must_run: bool = True) -> None:
        if n_station < 1:
            raise ValueError(f"EVFleet.n_station: must be >= 1, got {n_station}")
        if not dt_h > 0:
            raise ValueError(f"EVFleet.dt_h: must be > 0, got {dt_h}")
        if n_steps < 1:
            raise ValueError(f"EVFleet.n_steps: must be >= 1, got {n_steps}")
        if len(sessions) and sessions.station.max() >= n_station:
            raise ValueError(f"EVFleet.sessions.station: index {sessions.station.max()} "
                             f">= n_station={n_station}")
        self.sessions = sessions
        self.n_station = int(n_station)
        self.dt_h = float(dt_h)
        self.n_steps = int(n_steps)
        self.v2g = bool(v2g)
        self.enforce_must_run = bool(enforce_must_run)
        self._deadline = np.minimum(sessions.departure_step, n_steps)
        self._dt0 = np.full((), self.dt_h)  # 0-d: ufuncs take it faster than a Python float
        self._init = self._initial_state(sessions, self._deadline, self.dt_h, n_station)
        self._station = sessions.station.astype(np.intp)
        order = np.argsort(sessions.arrival_step, kind="stable")
        self._arr_start = np.searchsorted(sessions.arrival_step[order], np.arange(n_steps + 1))
        # per-session records (energies of connected EVs synced lazily, see _sync)
        self._e = sessions.e_arrival_kwh.astype(float).copy()
        self._x = np.zeros(len(sessions))
        self._unmet = np.full(len(sessions), np.nan)
        self._pending: list[tuple[np.ndarray, ...]] = []  # departures not yet written to _e/_x/_unmet
        # connected EVs: compact state, rows _HEAD.._INV_EP, one column per EV (in admission order)
        self._s = np.zeros((_N_ROWS, 0))
        self._init_arr = np.ascontiguousarray(self._init[:, order])   # initial state, arrival order
        self._members = _Membership(sessions.arrival_step, self._deadline, self._station, order,
                                    self._arr_start, self.n_steps, self.n_station)
        self._act = self._st = np.zeros(0, dtype=np.intp)
        self._keep: np.ndarray | None = None  # after a departure: which of _act are still connected
        self._t = 0
        self._admitted = 0  # arrivals of steps < _admitted are in the compact state
        self._prep: _Prep | None = None
        self._last: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.intp), np.zeros(0))
        self._zeros_ro = _ro(np.zeros(n_station))
        self._zeros_int_ro = _ro(np.zeros(n_station, dtype=np.intp))

    @staticmethod
    def _initial_state(sessions: EVSessions, deadline: np.ndarray, dt_h: float,
                       n_station: int) -> np.ndarray:
        """The compact state of every session at arrival (:func:`ev_rows`)."""
        s = sessions
        return ev_rows(s.station, s.e_arrival_kwh, s.e_request_kwh, s.e_capacity_kwh, s.p_max_kw, s.efficiency,
                       deadline, dt_h)

    # ------------------------------------------------------------------ read-only views
    @property
    def t(self) -> int:
        """The next step to play."""
        return self._t

    @property
    def deadline_step(self) -> np.ndarray:
        """Per session ``min(departure_step, n_steps)``: when it leaves the fleet."""
        return _ro(self._deadline)

    @property
    def e_kwh(self) -> np.ndarray:
        """Per-session battery energy now (arrival energy before arrival, final after departure)."""
        self._sync()
        return _ro(self._e)

    @property
    def x_kwh(self) -> np.ndarray:
        """Per-session grid-side energy delivered so far."""
        self._sync()
        return _ro(self._x)

    @property
    def unmet_kwh(self) -> np.ndarray:
        """Per-session ``max(0, e_req - e)`` at departure; NaN until then (or if never arrived)."""
        self._flush()
        return _ro(self._unmet)

    def reachable(self) -> np.ndarray:
        """Per session: request reachable from arrival, ``e0 + eta pmax dt (D - a) >= e_req``."""
        s = self.sessions
        steps = np.maximum(self._deadline - s.arrival_step, 0)
        e_max = s.e_arrival_kwh + s.efficiency * s.p_max_kw * self.dt_h * steps
        return e_max >= s.e_request_kwh - _TOL_KWH

    def connected(self, t: int) -> np.ndarray:
        """Indices (into ``sessions``) of the EVs connected during step ``t``."""
        self._prepare(t)
        return _ro(self._act)

    def last_split(self) -> tuple[np.ndarray, np.ndarray]:
        """(session indices, per-EV power kW) of the last :meth:`step`."""
        return _ro(self._last[0]), _ro(self._last[1])

    def copy(self) -> "EVFleet":
        """Independent copy of the fleet's state (session data shared, read-only)."""
        new = copy.copy(self)
        new._s, new._e, new._x = self._s.copy(), self._e.copy(), self._x.copy()
        new._unmet, new._prep = self._unmet.copy(), None
        new._pending = list(self._pending)
        return new

    def _flush(self) -> None:
        """Write the recorded departures to the per-session arrays."""
        if self._pending:
            for gone, e_gone, x_gone, unmet in self._pending:
                self._unmet[gone] = unmet
                self._e[gone], self._x[gone] = e_gone, x_gone
            self._pending.clear()

    def _sync(self) -> None:
        """Write the departed and the connected EVs' energies to the per-session arrays."""
        self._flush()
        act = self._act if self._keep is None else self._act[self._keep]
        self._e[act] = self._s[_E]
        self._x[act] = self._s[_X]

    # ------------------------------------------------------------------ aggregate bounds
    def bounds(self, t: int) -> EVCSBounds:
        """Aggregate virtual-storage bounds of every station at step ``t`` (docs/math.md §3)."""
        pr = self._prepare(t)
        st, ns, sums = self._st, self.n_station, pr.sums
        lo_sum = sums[1]
        must = lo_sum if not self.v2g else station_sums(st, np.maximum(pr.p_lo, 0.0), ns)
        x_hilo = sums[:2] * self._dt0
        # valid by construction (tests check them against the validating constructor);
        # skipping the checks saves ~15 us per step (env/fastpath.py)
        return unchecked(EVCSBounds, dict(
            p_max_kw=sums[0], p_rated_kw=sums[2], p_must_kw=must,
            p_min_kw=lo_sum if self.enforce_must_run else pr.floor_sum,
            p_asap_kw=sums[0], x_kwh=sums[3], x_lo_kwh=x_hilo[1], x_hi_kwh=x_hilo[0],
            n_connected=pr.counts, e_kwh=sums[4], e_target_kwh=sums[5],
            e_capacity_kwh=sums[6]))

    def _limits_mw(self, t: int) -> np.ndarray:
        """(2, n_station) ``[p_min_kw, p_max_kw] * 1e-3`` of :meth:`bounds` (the simulator's MW
        limits; one multiply when the floor is the must-run)."""
        pr = self._prepare(t)
        if self.enforce_must_run:
            return np.multiply(pr.sums[1::-1], _MILLI)    # rows lo_sum, hi_sum
        out = np.empty((2, self.n_station))
        np.multiply(pr.floor_sum, _MILLI, out=out[0])
        np.multiply(pr.hi_sum, _MILLI, out=out[1])
        return out

    def asap_power(self, t: int, upto: Literal["capacity", "request"] = "capacity") -> np.ndarray:
        """As-soon-as-possible aggregate power at ``t``: ``sum_i max(p_lo_i, min(pmax_i, h_i))``.

        ``h_i = (E_i - e_i)/(eta_i dt)`` with ``E_i`` the capacity (``upto="capacity"``,
        ``= bounds(t).p_max_kw``; following it every step reproduces :func:`asap_profile`) or
        the request (``upto="request"``; the split still spreads the power by least laxity,
        so single EVs may go past their request).
        """
        pr = self._prepare(t)
        if upto == "capacity":
            return pr.hi_sum.copy()
        if upto != "request":
            raise ValueError(f"EVFleet.asap_power upto: 'capacity' or 'request', got {upto!r}")
        s = self._s
        p = np.minimum(pr.head, np.maximum(s[_EREQ] - s[_E], 0.0) / (s[_ETA] * self.dt_h))
        return station_sums(self._st, np.maximum(p, pr.p_lo), self.n_station)

    def bounds_horizon(self, t: int, h: int) -> EVCSHorizon:
        """Look-ahead bounds for steps ``t .. t+h-1`` of the EVs connected at ``t``.

        See :func:`horizon_bounds` (arrivals after ``t`` are unknown and not included).
        """
        self._prepare(t)
        s = self._s
        return horizon_bounds(s[_E], self._st, s[_PMAX], s[_ETA], s[_EREQ], s[_ECAP], s[_DEAD],
                              t, h, self.n_station, self.dt_h, self.v2g)

    # ------------------------------------------------------------------ the step
    def step(self, t: int, p_set_kw: np.ndarray) -> EVStepResult:
        """Apply aggregate setpoints for step ``t``, split them to the EVs and advance.

        ``P_s = clip(P_set_s, P_min_s, P_max_s)``; each EV gets its floor (must-run ``p_lo``),
        the rest ``P_s - sum p_lo`` goes by increasing laxity
        ``LAX = (D - t) dt - (e_req - e)/(eta pmax)`` up to each headroom
        ``min(pmax, (E_cap - e)/(eta dt))``. Then ``e += eta p dt`` (``p dt/eta`` if ``p < 0``);
        EVs with ``D = t + 1`` leave and record ``max(0, e_req - e)``.
        """
        pr = self._prepare(t)
        p_set = np.asarray(p_set_kw, dtype=float)
        if p_set.shape != (self.n_station,):
            raise ValueError(f"EVFleet.step p_set_kw: expected shape ({self.n_station},), "
                             f"got {p_set.shape}")
        if not (math.isfinite(p_set.dot(p_set)) or np.isfinite(p_set).all()):
            raise ValueError("EVFleet.step p_set_kw: values must be finite")
        lo = pr.lo_sum if self.enforce_must_run else pr.floor_sum
        target = np.minimum(np.maximum(p_set, lo), pr.hi_sum)
        pg = np.empty((2, self._s.shape[1]))  # rows: per-EV power, battery gain
        self._split(pr, target, pg[0])
        return self._advance(pr, p_set, pg)

    def _split(self, pr: _Prep, target_kw: np.ndarray, p: np.ndarray) -> None:
        """Per-EV powers into ``p``: floor, then each stage filled in least-laxity order per station."""
        if not _count(target_kw < pr.hi_sum):
            p[:] = pr.head
            return
        if self.enforce_must_run and not _count(target_kw > pr.lo_sum):
            p[:] = pr.p_lo
            return
        if pr.o is None:
            self._order(pr)
        p[:] = pr.floor
        o, st_o = pr.o, pr.st_o
        for base_sum, before_o, cap_o in pr.stages:
            p[o] += split_kw(target_kw - base_sum, st_o, before_o, cap_o)

    def _advance(self, pr: _Prep, p_set: np.ndarray, pg: np.ndarray) -> EVStepResult:
        """Update energies, record departures and return the step's per-station result.

        ``pg`` holds the per-EV powers (row 0); row 1 receives the battery gains, so both are
        summed per station by one bincount.
        """
        s, ns, dt = self._s, self.n_station, self._dt0
        p, gain = pg[0], pg[1]
        battery_gain_kwh(p, s[_ETA], dt, self.v2g, out=gain)
        s[_E] += gain
        s[_X] += p * dt
        sums = np.bincount(self._key[:2 * p.shape[0]], weights=pg.reshape(-1), minlength=2 * ns)
        p_st, stored = sums[:ns], sums[ns:]
        self._last = (self._act, p)
        unmet_st, departed = self._depart(pr.t)
        self._t = pr.t + 1
        self._prep = None
        return unchecked(EVStepResult, dict(p_kw=p_st, p_clip_kw=p_set - p_st, unmet_kwh=unmet_st,
                                            departed=departed, charged_kwh=p_st * dt, stored_kwh=stored))

    def _depart(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Remove EVs with deadline ``t + 1``; record their energies and ``max(0, e_req - e)``."""
        ns = self.n_station
        gone = self._members.gone(t)      # precomputed: those with D = t + 1
        if gone is None:
            return self._zeros_ro, self._zeros_int_ro
        gone_pos, gone_ids, st_gone, departed, self._keep = gone
        keep = self._keep
        cols = self._s[:, gone_pos]
        e_gone = cols[_E]
        unmet = unmet_kwh(cols[_EREQ], e_gone)
        self._pending.append((gone_ids, e_gone, cols[_X], unmet))
        self._s = self._s.compress(keep, axis=1)
        return station_sums(st_gone, unmet, ns), departed

    # ------------------------------------------------------------------ per-step preparation
    def _prepare(self, t: int) -> _Prep:
        """Admit arrivals at ``t`` and compute headroom and must-run floor (cached per step)."""
        pr = self._prep
        if pr is not None and pr.t == t:
            return pr
        if t != self._t or not 0 <= t < self.n_steps:
            raise ValueError(f"EVFleet: step t={t} requested, next step is {self._t} "
                             f"(n_steps={self.n_steps}); steps must be played in order")
        if self._admitted <= t:
            lo, hi = self._arr_start[t], self._arr_start[t + 1]
            if hi > lo:
                # columns of the sessions arriving at t (the initial state is in arrival order)
                self._s = np.concatenate((self._s, self._init_arr[:, lo:hi]), axis=1)
            self._admitted = t + 1
        self._act, self._st, self._key, pr_counts = self._members.during(t)
        self._keep = None
        pr = _Prep()
        pr.t = t
        pr.counts = pr_counts
        pr.o = None  # laxity order: computed by _split only when a station is strictly inside
        self._limits(pr)
        self._prep = pr
        return pr

    def _limits(self, pr: _Prep) -> None:
        """Headroom ``min(pmax, (E_cap - e)/(eta dt))``, must-run ``p_lo`` and free floor per EV,
        and the per-station sums of rows ``_HEAD.._ECAP`` (one bincount).

        ``p_lo = need/(eta dt)`` with ``need = e_req - e - eta pmax dt (D - 1 - t)``
        (``need eta/dt`` if negative, V2G), clipped to ``[floor, headroom]``; ``floor = 0`` or,
        with V2G, ``-min(pmax, eta e/dt)``.
        """
        s, st, ns = self._s, self._st, self.n_station
        floor = limits_into(s, pr.t, self.dt_h, self.v2g)
        if floor is not None:
            pr.floor = floor
            pr.floor_sum = station_sums(st, floor, ns)
            pr.floor_sum.setflags(write=False)
        else:
            pr.floor_sum = self._zeros_ro
            if not self.enforce_must_run:
                pr.floor = np.zeros(s.shape[1])
        pr.head, pr.p_lo = s[_HEAD], s[_PLO]
        if self.enforce_must_run:
            pr.floor = pr.p_lo
        sums = np.bincount(self._key, weights=s[:_N_SUM].reshape(-1), minlength=_N_SUM * ns)
        sums = sums.reshape(_N_SUM, ns)
        sums.setflags(write=False)        # shared with EVCSBounds: keep intact
        pr.sums = sums
        pr.hi_sum, pr.lo_sum = sums[0], sums[1]

    def _order(self, pr: _Prep) -> None:
        """Sort EVs by (station, laxity) and precompute the fill stages of the split.

        ``LAX = (D - t) dt - (e_req - e)/(eta pmax)``. A stage with per-EV room ``c`` and
        station amount ``A_s`` gives the EV at sorted position ``j``
        ``clip(A_s - sum_{i before j in s} c_i, 0, c_j)``.
        """
        pr.o, pr.st_o, first_o = laxity_order(self._s, self._st)
        if self.enforce_must_run:
            rooms = [(pr.lo_sum, pr.head - pr.p_lo)]
        else:
            rooms = [(pr.floor_sum, pr.p_lo - pr.floor), (pr.lo_sum, pr.head - pr.p_lo)]
        pr.stages = [(base_sum, *fill_stage(room, pr.o, first_o)) for base_sum, room in rooms]


_ZERO = np.zeros(())  # 0-d zero: ufuncs take it faster than a Python float
_MILLI = np.full((), 1e-3)
_count = np.count_nonzero


def _ro(a: np.ndarray) -> np.ndarray:
    """Read-only view."""
    v = a.view()
    v.setflags(write=False)
    return v
