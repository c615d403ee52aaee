"""The EVs of a day at their stations: who is connected when, their state, and the split.

:class:`EVFleet` holds every EV of one episode in one compact ``(quantity, EV)`` array (the
row layout :data:`env.evcs.N_ROWS`, built by :func:`env.evcs.ev_rows`), aggregates the
connected ones per station into the virtual-storage bounds (:class:`env.evcs.EVCSBounds`,
:class:`env.evcs.EVCSHorizon`), splits each station's setpoint back to its EVs (must-run
first, then least laxity: :func:`env.evcs.limits_into`, :func:`env.evcs.laxity_order`,
:func:`env.evcs.fill_stage`, :func:`env.evcs.split_kw`) and is the arbiter of what is
delivered and what each departing EV leaves without (docs/math.md section 3, docs/design.md
"EV charging stations"). The conventions (steps, deadlines, signs, relative energy bounds)
are :mod:`env.evcs`'s.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import numpy as np

from env.evcs import (N_ROWS, N_SUM, ROW_DEAD, ROW_E, ROW_ECAP, ROW_EREQ, ROW_ETA, ROW_HEAD, ROW_PLO, ROW_PMAX, ROW_X,
                      TOL_KWH, EVCSBounds, EVCSHorizon, EVStepResult, battery_gain_kwh, ev_rows, fill_stage,
                      horizon_bounds, laxity_order, limits_into, split_kw, station_sums, unmet_kwh)
from env.fastpath import unchecked
from scenarios import EVSessions

__all__ = ["EVFleet"]


class _Prep:
    """Per-step quantities of the connected EVs (computed once per step, shared by bounds/step).

    ``head`` / ``p_lo`` are views of the fleet's work rows; ``sums`` holds the per-station sums
    of rows ``ROW_HEAD..ROW_ECAP`` (read-only); ``counts`` the EVs per station.
    """

    __slots__ = ("t", "head", "p_lo", "floor", "lo_sum", "hi_sum", "floor_sum", "o", "st_o",
                 "stages", "sums", "counts")


class _Membership:
    """Who is connected when: it depends on the sessions only, not on the setpoints.

    The compact state's columns at step ``t`` are the admitted sessions (``0 <= a < n_steps``,
    admitted at ``t = a``) in admission order (arrival step, then session index) that have not
    left; an EV leaves at the end of step ``d - 1``, ``d = min(D, n_steps)``. Kept per session and
    per step, never per (step, EV) pair: the fleet carries the ids of its connected EVs
    (``(2, n)``: sessions, stations) from step to step, appending each step's arrivals
    (:meth:`admit`) and dropping the leavers with its state. Memory and set-up are
    ``O(sessions + steps x stations)``, which matters for the batched simulator's merged fleet
    (millions of sessions).
    """

    def __init__(self, arrival: np.ndarray, deadline: np.ndarray, station: np.ndarray,
                 order: np.ndarray, arr_start: np.ndarray, n_steps: int, n_station: int) -> None:
        ns = n_station
        adm = order[arr_start[0]:arr_start[n_steps]]             # admission order
        # admitted: a < n_steps, so a < d = min(D, n_steps) <= n_steps (EVSessions has D > a)
        a, d, s = np.asarray(arrival)[adm], np.asarray(deadline)[adm], np.asarray(station)[adm]
        # per step and station, connected EVs: arrivals minus departures so far
        delta = (np.bincount(a * ns + s, minlength=(n_steps + 1) * ns)
                 - np.bincount(d * ns + s, minlength=(n_steps + 1) * ns))
        self._counts = np.cumsum(delta.reshape(n_steps + 1, ns)[:n_steps], axis=0)
        self._departed = np.bincount((d - 1) * ns + s, minlength=n_steps * ns).reshape(n_steps, ns)
        # arrivals' (session, station) in arrival order: positions are those of EVFleet._arr_start,
        # as no session arrives before step 0 (EVSessions has a >= 0)
        self._ids = np.stack((adm, s)).astype(np.intp)
        # bincount key of the stacked per-station sums (rows r: st + ns r), built per step
        self._rows = ns * np.arange(N_SUM, dtype=np.intp)[:, None]
        for arr in vars(self).values():
            arr.setflags(write=False)
        self._any_gone = (self._departed.sum(axis=1) > 0).tolist()

    def admit(self, ids: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """The connected EVs' ``(2, n)`` ids (sessions, stations) with the arrivals of one step
        appended: those at positions ``lo:hi`` of the arrival order (``EVFleet._arr_start``)."""
        return np.concatenate((ids, self._ids[:, lo:hi]), axis=1)

    def key(self, st: np.ndarray) -> np.ndarray:
        """The bincount key of the per-station sums of rows ``0..N_SUM-1`` (read-only)."""
        key = (st + self._rows).reshape(-1)
        key.setflags(write=False)
        return key

    def counts(self, t: int) -> np.ndarray:
        """EVs per station connected during step ``t`` (read-only)."""
        return self._counts[t]

    def departed(self, t: int) -> np.ndarray | None:
        """EVs per station leaving at the end of step ``t`` (read-only); None if none."""
        return self._departed[t] if self._any_gone[t] else None


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
        self._station = sessions.station.astype(np.intp)
        order = np.argsort(sessions.arrival_step, kind="stable")
        self._arr_start = np.searchsorted(sessions.arrival_step[order], np.arange(n_steps + 1))
        # per-session records (energies of connected EVs synced lazily, see _sync)
        self._e = sessions.e_arrival_kwh.astype(float).copy()
        self._x = np.zeros(len(sessions))
        self._unmet = np.full(len(sessions), np.nan)
        self._pending: list[tuple[np.ndarray, ...]] = []  # departures not yet written to _e/_x/_unmet
        # connected EVs: compact state, rows ROW_HEAD..ROW_INV_EP, one column per EV (in admission order)
        self._s = np.zeros((N_ROWS, 0))
        self._init_arr = self._initial_state(sessions, self._deadline, self.dt_h, order)
        self._members = _Membership(sessions.arrival_step, self._deadline, self._station, order,
                                    self._arr_start, self.n_steps, self.n_station)
        # the connected EVs' (session, station) ids, in the compact state's column order
        self._ids = np.zeros((2, 0), dtype=np.intp)
        self._act, self._st = self._ids
        self._t = 0
        self._admitted = 0  # arrivals of steps < _admitted are in the compact state
        self._prep: _Prep | None = None
        self._last: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.intp), np.zeros(0))
        self._zeros_ro = _ro(np.zeros(n_station))
        self._zeros_int_ro = _ro(np.zeros(n_station, dtype=np.intp))

    @staticmethod
    def _initial_state(sessions: EVSessions, deadline: np.ndarray, dt_h: float,
                       order: np.ndarray) -> np.ndarray:
        """The compact state of every session at arrival (:func:`ev_rows`), columns in ``order``."""
        s = sessions
        return ev_rows(*(np.take(x, order) for x in (s.station, s.e_arrival_kwh, s.e_request_kwh, s.e_capacity_kwh,
                                                    s.p_max_kw, s.efficiency, deadline)), dt_h)

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
        return e_max >= s.e_request_kwh - TOL_KWH

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
        self._e[self._act] = self._s[ROW_E]
        self._x[self._act] = self._s[ROW_X]

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
        ``= bounds(t).p_max_kw``; following it every step reproduces :func:`env.evcs.asap_profile`) or
        the request (``upto="request"``; the split still spreads the power by least laxity,
        so single EVs may go past their request).
        """
        pr = self._prepare(t)
        if upto == "capacity":
            return pr.hi_sum.copy()
        if upto != "request":
            raise ValueError(f"EVFleet.asap_power upto: 'capacity' or 'request', got {upto!r}")
        s = self._s
        p = np.minimum(pr.head, np.maximum(s[ROW_EREQ] - s[ROW_E], 0.0) / (s[ROW_ETA] * self.dt_h))
        return station_sums(self._st, np.maximum(p, pr.p_lo), self.n_station)

    def bounds_horizon(self, t: int, h: int) -> EVCSHorizon:
        """Look-ahead bounds for steps ``t .. t+h-1`` of the EVs connected at ``t``.

        See :func:`horizon_bounds` (arrivals after ``t`` are unknown and not included).
        """
        self._prepare(t)
        s = self._s
        return horizon_bounds(s[ROW_E], self._st, s[ROW_PMAX], s[ROW_ETA], s[ROW_EREQ], s[ROW_ECAP], s[ROW_DEAD],
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
        battery_gain_kwh(p, s[ROW_ETA], dt, self.v2g, out=gain)
        s[ROW_E] += gain
        s[ROW_X] += p * dt
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
        departed = self._members.departed(t)
        if departed is None:
            return self._zeros_ro, self._zeros_int_ro
        leave = self._s[ROW_DEAD] == t + 1
        gone, keep = np.flatnonzero(leave), ~leave
        cols = self._s[:, gone]
        gone_ids, st_gone = self._ids[:, gone]
        e_gone = cols[ROW_E]
        unmet = unmet_kwh(cols[ROW_EREQ], e_gone)
        self._pending.append((gone_ids, e_gone, cols[ROW_X], unmet))
        self._s = self._s.compress(keep, axis=1)
        self._ids = self._ids.compress(keep, axis=1)
        self._act, self._st = self._ids
        return station_sums(st_gone, unmet, self.n_station), departed

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
                self._ids = self._members.admit(self._ids, lo, hi)
                self._act, self._st = self._ids
            self._admitted = t + 1
        self._key = self._members.key(self._st)
        pr = _Prep()
        pr.t = t
        pr.counts = self._members.counts(t)
        pr.o = None  # laxity order: computed by _split only when a station is strictly inside
        self._limits(pr)
        self._prep = pr
        return pr

    def _limits(self, pr: _Prep) -> None:
        """Headroom ``min(pmax, (E_cap - e)/(eta dt))``, must-run ``p_lo`` and free floor per EV,
        and the per-station sums of rows ``ROW_HEAD..ROW_ECAP`` (one bincount).

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
        pr.head, pr.p_lo = s[ROW_HEAD], s[ROW_PLO]
        if self.enforce_must_run:
            pr.floor = pr.p_lo
        sums = np.bincount(self._key, weights=s[:N_SUM].reshape(-1), minlength=N_SUM * ns)
        sums = sums.reshape(N_SUM, ns)
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
