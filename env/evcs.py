"""EV charging stations as virtual storage (docs/math.md §3, docs/design.md "EV charging stations").

A station's connected EVs are aggregated into a virtual storage: per step a power range
and cumulative grid-side energy bounds (an outer approximation of the Minkowski sum of the
EVs' feasible sets). Policies dispatch the aggregate; :class:`env.ev_fleet.EVFleet` splits each
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

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from scenarios import EVSessions

__all__ = ["EVCSBounds", "EVCSHorizon", "EVStepResult", "asap_profile", "ev_rows", "fill_stage",
           "battery_gain_kwh", "horizon_bounds", "interval_power_kw", "laxity_order", "limits_into", "split_kw",
           "station_sums", "step_limits", "unmet_kwh"]

TOL_KWH = 1e-9  # unmet energy below this is rounding, reported as 0

# rows of EVFleet's compact state of the connected EVs (one column per EV). The first
# N_SUM rows are summed per station in one bincount every step: the per-step headroom and
# must-run floor (work rows, rewritten by _limits), then session data and the state
# (grid energy, battery); then per-EV constants precomputed once (dt fixed).
(ROW_HEAD, ROW_PLO, ROW_PMAX, ROW_X, ROW_E, ROW_EREQ, ROW_ECAP,
 ROW_ETA, ROW_DEAD, ROW_INV_EDT, ROW_GAIN, ROW_NEED0, ROW_LAXKEY0, ROW_INV_EP) = range(14)
N_ROWS = 14
N_SUM = 7  # rows ROW_HEAD..ROW_ECAP: hi_sum, lo_sum, p_rated, x, e, e_target, e_capacity


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
            steps ahead see :meth:`env.ev_fleet.EVFleet.bounds_horizon`.
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
    """Outcome of one :meth:`env.ev_fleet.EVFleet.step`, per station (arrays of shape ``(n_station,)``).

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
    return np.where(miss < TOL_KWH, 0.0, miss)


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
    """The compact state of EVs (rows ``ROW_HEAD..ROW_INV_EP``, one column per EV) at energies ``e_kwh``.

    ``GAIN = eta pmax dt`` (battery kWh per full-power step), ``INV_EDT = 1/(eta dt)``,
    ``NEED0 = e_req - GAIN (D - 1)`` so that the must-run battery energy of step ``t`` is
    ``need = NEED0 + GAIN t - e``; ``INV_EP = 1/(eta pmax)`` and
    ``LAXKEY0 = D dt - e_req INV_EP + W station`` so that the sort key
    ``LAXKEY0 + e INV_EP = LAX + t dt + W station`` orders EVs by station, then laxity
    (``W`` exceeds the span of any laxity, so one stable argsort does it). Rows ``ROW_HEAD``,
    ``ROW_PLO`` and ``ROW_X`` start at 0.
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
    """Write each EV's headroom and must-run power of step ``t`` into rows ``ROW_HEAD``, ``ROW_PLO``
    of the compact state ``s`` (kW); returns the V2G floor (None without V2G).

    ``head = min(pmax, max(E_cap - e, 0) / (eta dt))`` (V2G: ``max(E_cap - e, 0)`` unclipped
    below by the floor); ``p_lo = min(max(need, 0) / (eta dt), head)`` with
    ``need = e_req - e - eta pmax dt (D - 1 - t)`` (V2G: ``need eta / dt`` if negative, and
    ``p_lo >= floor = -min(pmax, eta e / dt)``).
    """
    e = s[ROW_E]
    head, p_lo = s[ROW_HEAD], s[ROW_PLO]
    head[:] = s[ROW_ECAP]
    np.multiply(s[ROW_GAIN], t, out=p_lo)
    p_lo += s[ROW_NEED0]
    work = s[:2]                      # rows head, p_lo: E_cap - e and need
    work -= e
    floor = None
    if v2g:
        np.maximum(head, 0.0, out=head)
        head *= s[ROW_INV_EDT]
        floor = -np.minimum(s[ROW_PMAX], s[ROW_ETA] * e / dt_h)
        np.maximum(_grid_energy(p_lo, s[ROW_ETA]) / dt_h, floor, out=p_lo)
    else:
        np.maximum(work, _ZERO, out=work)
        work *= s[ROW_INV_EDT]
    np.minimum(head, s[ROW_PMAX], out=head)
    np.minimum(p_lo, head, out=p_lo)
    return floor


def step_limits(s: np.ndarray, t: int, dt_h: float) -> tuple[np.ndarray, np.ndarray]:
    """``(p_lo, head)`` per EV of step ``t`` without V2G (:func:`limits_into`; views of ``s``)."""
    limits_into(s, t, dt_h)
    return s[ROW_PLO], s[ROW_HEAD]


def laxity_order(s: np.ndarray, station: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EVs sorted by station, then least laxity ``LAX = (D - t) dt - (e_req - e)/(eta pmax)``
    (stable): ``(order, station in that order, first sorted position of each EV's station)``."""
    key = s[ROW_E] * s[ROW_INV_EP]
    key += s[ROW_LAXKEY0]
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


_ZERO = np.zeros(())  # 0-d zero: ufuncs take it faster than a Python float
