"""The connected EVs as a policy may know them, and the base rule's EV charging on them.

A policy sees the sessions that plugged in before step ``t`` (``forecast.known_ev``), the
station totals of step ``t`` (``obs.ev``) and its own station setpoints. :class:`EVTracker`
rebuilds every known EV's energy by replaying the setpoints through the env fleet's split
(:class:`EVSplit`, the functions :class:`env.ev_fleet.EVFleet` runs) and pools the EVs plugging
in at ``t`` into one pseudo-EV per station (:class:`ConnectedEVs`). :func:`ev_asap` is the
base rule's charging of those EVs for the rest of the day, as-soon-as-possible (optionally
after a must-run deferral), in closed form (docs/math.md section 3 and section 7).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from env.evcs import (EVCSBounds, battery_gain_kwh, ev_rows, fill_stage, interval_power_kw, laxity_order, split_kw,
                      station_sums, step_limits, unmet_kwh)
from scenarios import EVSessions
from scenarios.ev_sessions import set_ev_columns

__all__ = ["ConnectedEVs", "EVSplit", "EVTracker", "defer_key", "ev_asap", "ev_limits", "ev_split"]


@dataclass(frozen=True)
class ConnectedEVs:
    """The EVs connected at a step, one entry each (kW / kWh, 0-based station index).

    ``deadline_step = min(departure_step, n_steps)``: the EV charges during steps
    ``< deadline_step`` and its unmet energy is counted when it leaves.
    """

    station: np.ndarray
    e_kwh: np.ndarray
    e_capacity_kwh: np.ndarray
    e_request_kwh: np.ndarray
    p_max_kw: np.ndarray
    efficiency: np.ndarray
    deadline_step: np.ndarray

    def __post_init__(self) -> None:
        set_ev_columns(self, tuple(f.name for f in fields(self)), ("station", "deadline_step"), np.intp,
                       read_only=False)

    def __len__(self) -> int:
        return int(self.station.shape[0])

    @classmethod
    def empty(cls) -> "ConnectedEVs":
        z = np.zeros(0)
        return cls(z, z, z, z, z, z, z)

    @classmethod
    def from_sessions(cls, s: EVSessions, e_kwh: np.ndarray, n_steps: int) -> "ConnectedEVs":
        return cls(s.station, e_kwh, s.e_capacity_kwh, s.e_request_kwh, s.p_max_kw, s.efficiency,
                   np.minimum(s.departure_step, n_steps))

    def rows(self, dt_h: float, e_kwh: np.ndarray | None = None) -> np.ndarray:
        """The env fleet's compact state of these EVs (:func:`env.evcs.ev_rows`), at energies
        ``e_kwh`` (default: their own)."""
        return ev_rows(self.station, self.e_kwh if e_kwh is None else e_kwh, self.e_request_kwh,
                       self.e_capacity_kwh, self.p_max_kw, self.efficiency, self.deadline_step, dt_h)

    def concat(self, other: "ConnectedEVs") -> "ConnectedEVs":
        return ConnectedEVs(**{f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)])
                               for f in fields(self)})


def ev_limits(ev: ConnectedEVs, e_kwh: np.ndarray, t: int, dt_h: float) -> tuple[np.ndarray, np.ndarray]:
    """(must-run ``p_lo``, headroom) per EV in kW at energies ``e_kwh`` (n_ev,): the env
    fleet's (:func:`env.evcs.step_limits`, docs/math.md §3)."""
    p_lo, head = step_limits(ev.rows(dt_h, e_kwh), t, dt_h)
    return p_lo, head


class EVSplit:
    """The env fleet's split (:class:`env.ev_fleet.EVFleet`, no V2G, must-run enforced) of station
    setpoints among the EVs ``ev`` connected at step ``t``; what does not depend on the
    setpoints (limits, laxity order, fill stages) is computed once, for any number of calls:
    ``P_s = clip(P_set_s, sum p_lo, sum head)``; every EV gets its must-run ``p_lo``, the rest
    ``P_s - sum p_lo`` goes by least laxity up to each headroom (:func:`env.evcs.laxity_order`,
    :func:`env.evcs.fill_stage`, :func:`env.evcs.split_kw`).
    """

    def __init__(self, ev: ConnectedEVs, t: int, dt_h: float, n_station: int) -> None:
        self.n_ev = len(ev)
        if self.n_ev == 0:
            return
        s = ev.rows(dt_h)
        self.p_lo, head = step_limits(s, t, dt_h)
        self.lo_sum = station_sums(ev.station, self.p_lo, n_station)
        self.head_sum = station_sums(ev.station, head, n_station)
        self.order, self.station_o, first_o = laxity_order(s, ev.station)
        self.before_o, self.cap_o = fill_stage(head - self.p_lo, self.order, first_o)

    def __call__(self, target_kw: np.ndarray) -> np.ndarray:
        """Per-EV powers (C, n_ev) kW of station setpoints ``target_kw`` (C, n_station)."""
        target = np.atleast_2d(np.asarray(target_kw, dtype=float))
        if self.n_ev == 0:
            return np.zeros((target.shape[0], 0))
        extra = np.minimum(np.maximum(target, self.lo_sum), self.head_sum) - self.lo_sum    # (C, n_station)
        p = np.broadcast_to(self.p_lo, (target.shape[0], self.n_ev)).copy()
        p[:, self.order] += split_kw(extra, self.station_o, self.before_o, self.cap_o)
        return p


def ev_split(ev: ConnectedEVs, t: int, dt_h: float, target_kw: np.ndarray, n_station: int) -> np.ndarray:
    """Per-EV powers (C, n_ev) kW of station setpoints ``target_kw`` (C, n_station) by the env
    fleet's split (:class:`EVSplit`), for all ``C`` setpoints at once."""
    return EVSplit(ev, t, dt_h, n_station)(target_kw)


def ev_asap(ev: ConnectedEVs, e_kwh: np.ndarray, t_from: int, n_rows: int, dt_h: float, n_station: int,
            defer_steps: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """ASAP charging (to capacity) of connected EVs from the start of step ``t_from``.

    With ``e_kwh`` (C, n_ev) at that time and ``gain = eta pmax dt``, the battery after ``k``
    steps is ``b_k = min(E_cap, e + gain k)`` and the grid power in step ``t_from + k`` is
    ``(b_{k+1} - b_k)/(eta dt)`` while ``t_from + k < D``. With ``defer_steps`` (C, n_station)
    ``= s``, the EVs of that station first take only their must-run power for ``d = s - 1``
    rows (the env's must-run: ``b_k = min(E_cap, e + gain k, max(e, e_req - gain (D - t_from - k)))``),
    then charge ASAP from ``b_d``.

    Both are full power over intervals of rows (:func:`env.evcs.interval_power_kw`): with
    ``L = D - t_from`` rows left, ``K = (E_cap - e)/gain`` and ``R = (e_req - e)/gain``, the
    must-run part is ``[a, min(a + K, L, d))`` from ``a = max(L - R, 0)``, and the ASAP part
    ``[min(d, L), min(d, L) + min(K - x_d, L - min(d, L)))`` where ``x_d`` is the must-run part's
    length (no deferral: ``d = 0``, the ASAP part alone, ``[0, min(K, L))``).

    Returns:
        power (n_rows, C, n_station) in MW, and unmet energy (n_rows, C) in kWh counted on the
        row where each EV leaves (``D - 1 - t_from``; EVs leaving after the rows are dropped).
    """
    e = np.atleast_2d(e_kwh)
    C = e.shape[0]
    if len(ev) == 0 or n_rows <= 0:
        return np.zeros((max(n_rows, 0), C, n_station)), np.zeros((max(n_rows, 0), C))
    gain = ev.efficiency * ev.p_max_kw * dt_h
    steps_left = np.maximum(ev.deadline_step - t_from, 0)                      # (n_ev,)
    room = np.maximum((ev.e_capacity_kwh - e) / gain, 0.0)                     # K (C, n_ev)
    b_end = np.minimum(ev.e_capacity_kwh, e + gain * steps_left)
    if defer_steps is not None and np.asarray(defer_steps).size and np.any(np.asarray(defer_steps) > 1):
        d = np.maximum(np.asarray(defer_steps, dtype=float)[:, ev.station] - 1.0, 0.0)   # (C, n_ev) rows deferred

        def must_run(j: np.ndarray) -> np.ndarray:
            floor = np.maximum(e, ev.e_request_kwh - gain * np.maximum(steps_left - j, 0.0))
            return np.minimum(np.minimum(ev.e_capacity_kwh, e + gain * np.minimum(j, steps_left)), floor)

        a = np.maximum(steps_left - (ev.e_request_kwh - e) / gain, 0.0)
        stop = np.maximum(np.minimum(np.minimum(a + room, steps_left), d), a)
        d_left = np.minimum(d, steps_left)
        start2 = d_left
        stop2 = d_left + np.maximum(np.minimum(room - (stop - a), steps_left - d_left), 0.0)
        p_kw = (interval_power_kw(a, stop, ev.p_max_kw, ev.station, n_rows, n_station)
                + interval_power_kw(start2, stop2, ev.p_max_kw, ev.station, n_rows, n_station))
        b_d = must_run(d)
        b_end = np.where(steps_left <= d, must_run(steps_left + 0.0 * d),
                         np.minimum(ev.e_capacity_kwh, b_d + gain * (steps_left - d_left)))
    else:
        p_kw = interval_power_kw(np.zeros_like(room), np.minimum(room, steps_left), ev.p_max_kw, ev.station,
                                 n_rows, n_station)
    unmet = unmet_kwh(ev.e_request_kwh, b_end)                                 # (C, n_ev)
    row = ev.deadline_step - 1 - t_from
    ok = (row >= 0) & (row < n_rows)
    key = (row[ok][None, :] * C + np.arange(C)[:, None]).reshape(-1)
    unmet_rows = np.bincount(key, weights=unmet[:, ok].reshape(-1), minlength=n_rows * C).reshape(n_rows, C)
    return p_kw * 1e-3, unmet_rows


def defer_key(defer_steps: np.ndarray, n_station: int) -> np.ndarray:
    """(C, n_station) deferral of each candidate (0 where none) for state comparisons."""
    d = np.asarray(defer_steps, dtype=float)
    return d if d.shape[1] else np.zeros((d.shape[0], n_station))


class EVTracker:
    """Per-EV energies of the connected EVs, rebuilt from what a policy may know.

    A policy sees the sessions that plugged in before ``t`` (``forecast.known_ev``, with their
    declared departure and request), the station totals of step ``t`` (``obs.ev``) and its own
    station setpoints. The env's split is deterministic, so replaying the setpoints through
    :func:`ev_split` reproduces every known EV's energy; the EVs plugging in at ``t`` are known
    only as station totals and become one pseudo-EV per station (``dwell_steps`` long).

    Call :meth:`reset` each day, :meth:`state` at every step, and :meth:`record` with the
    station setpoints sent (MW).
    """

    def __init__(self, n_station: int, n_steps: int, dt_h: float, efficiency: float) -> None:
        self.n_station, self.n_steps, self.dt_h, self.efficiency = int(n_station), int(n_steps), float(dt_h), \
            float(efficiency)
        self.reset()

    def reset(self) -> None:
        """Forget the day."""
        self._setpoints: dict[int, np.ndarray] = {}
        self._t = -1                      # energies below hold at the start of step _t
        self._e = np.zeros(0)             # per known session
        self._n = 0

    def record(self, t: int, ev_p_mw: np.ndarray) -> None:
        """The station setpoints (MW) sent at step ``t``."""
        self._setpoints[int(t)] = np.asarray(ev_p_mw, dtype=float) * 1e3

    def known_state(self, t: int, known: EVSessions) -> ConnectedEVs:
        """The known EVs (arrived before ``t``) still connected at ``t``, with their energies."""
        if len(known) and int(known.arrival_step.max()) >= t:
            raise ValueError(f"EVTracker: sessions arriving at or after t={t} cannot be known")
        n = len(known)
        if self._t == t and n == self._n:
            e = self._e
        elif self._t == t - 1 and n >= self._n and (t - 1) in self._setpoints:
            e = np.concatenate([self._e, known.e_arrival_kwh[self._n:]])
            e = self._play(known, e, t - 1)
        else:                                          # replay the day (first call, or a gap)
            e = known.e_arrival_kwh.astype(float).copy()
            for tau in range(t):
                e = self._play(known, e, tau)
        self._t, self._e, self._n = t, e, n
        dead = np.minimum(known.departure_step, self.n_steps)
        on = dead > t
        return ConnectedEVs.from_sessions(known.select(on), e[on], self.n_steps)

    def _play(self, known: EVSessions, e: np.ndarray, tau: int) -> np.ndarray:
        """Energies after step ``tau`` (EVs connected at ``tau`` split the recorded setpoint)."""
        dead = np.minimum(known.departure_step, self.n_steps)
        on = (known.arrival_step <= tau) & (dead > tau)
        if not on.any():
            return e
        ev = ConnectedEVs.from_sessions(known.select(on), e[on], self.n_steps)
        target = self._setpoints.get(tau, np.full(self.n_station, np.inf))   # unknown: ASAP
        p = ev_split(ev, tau, self.dt_h, target[None, :], self.n_station)[0]
        out = e.copy()
        out[on] = e[on] + battery_gain_kwh(p, ev.efficiency, self.dt_h)
        return out

    def state(self, t: int, known: EVSessions, bounds: EVCSBounds, dwell_steps: np.ndarray | float
              ) -> ConnectedEVs:
        """All EVs connected at ``t``: the known ones plus one pseudo-EV per station for the
        EVs plugging in at ``t`` (station totals of ``bounds`` minus the known EVs')."""
        ev = self.known_state(t, known)
        def total(x: np.ndarray) -> np.ndarray:
            return station_sums(ev.station, x, self.n_station)

        rated = bounds.p_rated_kw - total(ev.p_max_kw)
        new = rated > 1e-9
        if not new.any():
            return ev
        st = np.flatnonzero(new)
        e = np.maximum(bounds.e_kwh - total(ev.e_kwh), 0.0)[st]
        cap = np.maximum(bounds.e_capacity_kwh - total(ev.e_capacity_kwh), 0.0)[st]
        req = np.maximum(bounds.e_target_kwh - total(ev.e_request_kwh), 0.0)[st]
        cap = np.maximum(cap, e)
        req = np.clip(req, e, cap)
        dwell = np.broadcast_to(np.asarray(dwell_steps, dtype=float), (self.n_station,))[st]
        dead = np.minimum(t + np.maximum(np.round(dwell), 1).astype(np.intp), self.n_steps)
        pseudo = ConnectedEVs(st, e, cap, req, rated[st], np.full(st.shape, self.efficiency), dead)
        return ev.concat(pseudo)
