"""EV charging ports: the queue that turns arrivals into charging sessions.

Port model (simpy, one process per station, FIFO queue): an EV that finds all
ports busy waits for at most ``min(patience_min, dwell / 2)``; if no port frees
up by then it leaves unserved (``balked``). Its departure time is fixed by its
schedule (arrival + dwell), whether or not it waited. On the step grid an EV
occupies its port for whole steps: it is connected during steps
``a = floor(t_plug / dt) <= k < d = ceil(t_depart / dt)`` and its port is released at
``d dt``, so the connected count never exceeds the number of ports in any step.
The requested energy is capped to what the charger can deliver while connected,
``e_req <= e0 + eta p_max dt (d - a)``. Stations start the day empty; an EV still
queued at midnight is dropped (counted as balked), so every session plugs in
during the day (``arrival_step < T``); departures may fall after the day's end.

:func:`sessions_each` is the whole path from arrival draws to sessions for many days at once
(the day sampler's days, the forecast's paths, the planner's sampled days).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import simpy

from scenarios.ev_arrivals import ArrivalTable, EVArrivalParams, expected_arrivals_per_day, sample_arrivals_each
from scenarios.ev_sessions import EVSessions

EV_TABLE_ROWS = 16384
"""Expected arrivals per table of :func:`sessions_each`: days are grouped so that a table
holds about this many (one day at least). Larger tables stop paying, their sorts and counts
leave the cache: t118d10 (~11,500 arrivals a day) samples 64 days at ~5.3-6.4 ms per day in
tables of one day, ~7.9 in one table; d33 (~165 a day, ~99 days a table) and t30d2 (~2,300,
7 days a table) are as fast as in one table (``benchmarks/env_reset.py``, 2026-12-07)."""


@dataclass(frozen=True)
class PortResult:
    """Outcome of the port model: which arrivals were served, and their step interval.

    ``served`` indexes the :class:`ArrivalTable`; ``arrival_step``/``departure_step``
    are aligned with ``served``; ``balked`` counts unserved EVs per station (no port
    within their patience, or none before the day ended).
    """

    served: np.ndarray
    arrival_step: np.ndarray
    departure_step: np.ndarray
    balked: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))


def _deadlines(table: ArrivalTable, patience_min: float) -> np.ndarray:
    """Latest plug-in time: ``t_arrival + min(patience, dwell / 2)``."""
    return table.t_arrival_min + np.minimum(patience_min, table.dwell_min / 2.0)


def _initial_release(busy_until_min: list[np.ndarray] | None, n_ports: np.ndarray) -> list[list[float]]:
    """Release times of occupied ports per station; with more EVs than ports, a port frees when
    enough have left (keep the ``n_ports`` latest releases)."""
    if busy_until_min is None:
        return [[] for _ in range(len(n_ports))]
    out = []
    for s, p in enumerate(np.asarray(n_ports, dtype=int)):
        rel = sorted(float(x) for x in busy_until_min[s])
        out.append(rel[len(rel) - p:] if len(rel) > p else rel)
    return out


def simulate_ports_simpy(table: ArrivalTable, n_ports: np.ndarray, dt_minutes: int, patience_min: float,
                         busy_until_min: list[np.ndarray] | None = None) -> PortResult:
    """Serve arrivals with one simpy process per station (FIFO ports, impatient EVs); see module doc."""
    env = simpy.Environment()
    ports = [simpy.Resource(env, capacity=int(p)) for p in n_ports]
    deadline = _deadlines(table, patience_min)
    t_dep = table.t_departure_min
    served: list[tuple[int, int, int]] = []
    balked = np.zeros(len(ports), dtype=int)

    def occupied(res: simpy.Resource, until: float):
        req = res.request()
        yield req
        yield env.timeout(until - env.now)
        res.release(req)

    def ev(i: int, res: simpy.Resource):
        req = res.request()
        if req.triggered:                  # a port was free: no need for a patience timer
            yield req
        else:
            yield req | env.timeout(deadline[i] - env.now)
        if not req.triggered:
            req.cancel()
            balked[table.station[i]] += 1
            return
        a = math.floor(env.now / dt_minutes)
        d = math.ceil(t_dep[i] / dt_minutes)
        served.append((i, a, d))
        yield env.timeout(d * dt_minutes - env.now)
        res.release(req)

    def station(s: int, idx: np.ndarray):
        for i in idx:
            yield env.timeout(table.t_arrival_min[i] - env.now)
            env.process(ev(int(i), ports[s]))

    for s, releases in enumerate(_initial_release(busy_until_min, n_ports)):
        for until in releases:
            env.process(occupied(ports[s], until))
        env.process(station(s, np.flatnonzero(table.station == s)))
    env.run()
    return _port_result(served, balked, table.station, dt_minutes)


def simulate_ports_fast(table: ArrivalTable, n_ports: np.ndarray, dt_minutes: int, patience_min: float,
                        busy_until_min: list[np.ndarray] | None = None) -> PortResult:
    """The same FIFO/impatient port model without simpy (a heap of port release times per station).

    Serving EVs in arrival order, EV i plugs in at ``max(t_arrival, earliest release)``
    if that is not after its deadline; this is what the simpy model does (FIFO), and a
    test checks both give identical results. Used for the many sampled forecast paths.
    """
    releases = _initial_release(busy_until_min, n_ports)
    free = _never_queued(table, np.asarray(n_ports, dtype=int), dt_minutes, releases)
    # stations whose EVs all plug in on arrival: no queue to play
    i_free = np.flatnonzero(free[table.station])
    a_free = np.floor(table.t_arrival_min[i_free] / dt_minutes).astype(int)
    d_free = np.ceil(table.t_departure_min[i_free] / dt_minutes).astype(int)
    served: list[tuple[int, int, int]] = []
    ports = np.asarray(n_ports, dtype=int).tolist()
    heaps: dict[int, list[float]] = {}         # port release times of the stations with a queue
    balked = np.zeros(len(ports), dtype=int)
    queued = np.flatnonzero(~free[table.station])
    rows = (queued.tolist(), table.station[queued].tolist(), table.t_arrival_min[queued].tolist(),
            _deadlines(table, patience_min)[queued].tolist(), table.t_departure_min[queued].tolist())
    for i, s, t_a, deadline, t_dep in zip(*rows):
        h = heaps.get(s)
        if h is None:
            h = heaps[s] = list(releases[s]) + [-np.inf] * (ports[s] - len(releases[s]))
            heapq.heapify(h)
        t_plug = max(t_a, h[0])
        if t_plug > deadline:
            balked[s] += 1
            continue
        a = math.floor(t_plug / dt_minutes)
        d = math.ceil(t_dep / dt_minutes)
        heapq.heapreplace(h, float(d * dt_minutes))
        served.append((i, a, d))
    queue = np.array(served, dtype=int).reshape(-1, 3)
    i_all = np.concatenate((i_free, queue[:, 0]))
    order = np.argsort(i_all, kind="stable")
    arr = np.stack((i_all, np.concatenate((a_free, queue[:, 1])), np.concatenate((d_free, queue[:, 2]))), axis=1)
    return _port_result(arr[order], balked, table.station, dt_minutes)


def _never_queued(table: ArrivalTable, n_ports: np.ndarray, dt_minutes: int,
                  releases: list[list[float]]) -> np.ndarray:
    """Per station: True if every EV finds a free port on arrival (no wait, no balking), so the
    FIFO queue of :func:`simulate_ports_fast` would plug each in at its arrival.

    If EVs ``j < i`` of a station all plugged in on arrival, the ports busy when EV ``i``
    arrives are those of the ``j`` released after ``t_a,i`` (release ``r_j = ceil(t_dep,j / dt) dt``
    > ``t_a,j``), i.e. ``i - #{j : r_j <= t_a,i}`` of them (every ``j >= i`` has
    ``r_j > t_a,j >= t_a,i``); EV ``i`` plugs in on arrival iff that is below the station's
    ports. Stations with ports busy before the first arrival are left to the queue."""
    st = np.asarray(table.station, dtype=np.int64)
    n_ev, n_st = st.shape[0], n_ports.shape[0]
    if n_ev == 0:
        return np.array([len(r) == 0 for r in releases], dtype=bool)
    # integer steps: r_j = k_rel,j dt <= t_a,i  <=>  k_rel,j <= k_arr,i, the last step start at
    # or before t_a,i (floor, corrected so k dt <= t_a < (k + 1) dt holds in floating point)
    t_a = table.t_arrival_min
    k_rel = np.ceil(table.t_departure_min / dt_minutes).astype(np.int64)
    k_arr = np.floor(t_a / dt_minutes).astype(np.int64)
    k_arr += (k_arr + 1) * dt_minutes <= t_a
    k_arr -= k_arr * dt_minutes > t_a
    span = int(max(k_rel.max(), k_arr.max())) + 2          # keys station * span + step, per station apart
    # EVs of the station released by each arrival: #{j : key_j <= key_i}, a cumulative count of
    # the integer keys (no sort, no binary search)
    released = np.cumsum(np.bincount(st * span + k_rel, minlength=n_st * span))[st * span + k_arr]
    by_st = np.argsort(_small_int(st), kind="stable")       # per station, in arrival order
    start = np.searchsorted(st[by_st], np.arange(n_st + 1))
    rank = np.empty(n_ev, dtype=np.int64)                   # EV i's position among its station's
    rank[by_st] = np.arange(n_ev) - start[st[by_st]]
    busy = rank - (released - start[st])                    # ports busy when EV i arrives
    full = np.bincount(st[busy >= n_ports[st]], minlength=n_st) > 0
    return np.array([len(r) == 0 for r in releases], dtype=bool) & ~full


def _port_result(served: list[tuple[int, int, int]] | np.ndarray, balked: np.ndarray, station: np.ndarray,
                 dt_minutes: int) -> PortResult:
    """Collect served EVs; one that would plug in only after the day ends (queued past midnight)
    is dropped and counted with the balked ones. Later EVs of that station plug in even later
    (FIFO), so dropping after the simulation is exact."""
    # (EV, plug-in step, departure step) rows by EV (an array comes sorted)
    arr = served if isinstance(served, np.ndarray) else np.array(sorted(served), dtype=int).reshape(-1, 3)
    late = arr[:, 1] >= 1440 // dt_minutes
    balked = balked + np.bincount(station[arr[late, 0]], minlength=balked.shape[0])
    arr = arr[~late]
    return PortResult(served=arr[:, 0], arrival_step=arr[:, 1], departure_step=arr[:, 2], balked=balked)


def to_sessions(table: ArrivalTable, ports: PortResult, dt_minutes: int, battery_kwh: float,
                charger_kw: float, efficiency: float) -> EVSessions:
    """Build :class:`EVSessions` of the served EVs, sorted by arrival step, station, arrival (table) index.

    Requested energy: ``e_req = min(e_target, e0 + eta p_max dt (d - a), E_cap)`` (reachable).
    One day of :func:`to_sessions_each`.
    """
    n_station = int(table.station[ports.served].max()) + 1 if len(ports.served) else 1
    return to_sessions_each(table, ports, 1, n_station, dt_minutes, battery_kwh, charger_kw, efficiency)[0]


def to_sessions_each(table: ArrivalTable, ports: PortResult, n_days: int, n_station: int, dt_minutes: int,
                     battery_kwh: float, charger_kw: float, efficiency: float) -> list[EVSessions]:
    """:func:`to_sessions` of the days of a table of :func:`sample_arrivals_each` (station
    ``d n_station + s`` is day ``d``'s station ``s``): one :class:`EVSessions` per day, each
    with its own station indices, sorted by (arrival step, station, arrival index)."""
    i, a, d = ports.served, ports.arrival_step, ports.departure_step
    e0 = table.e_arrival_kwh[i]
    reach = e0 + efficiency * charger_kw * (dt_minutes / 60.0) * (d - a)
    e_req = np.maximum(np.minimum(np.minimum(table.e_target_kwh[i], reach), battery_kwh), e0)
    day, st = np.divmod(table.station[i], n_station)
    n = len(i)
    if n and (np.diff(i) > 0).all():      # served EVs come by index: one stable sort by (day, a, station)
        key = (day * (int(a.max()) + 1) + a.astype(np.int64)) * n_station + st
        order = np.argsort(_small_int(key), kind="stable")
    else:
        order = np.lexsort((i, st, a, day))
    cols = (st[order], a[order], d[order], e0[order], e_req[order])
    ends = np.cumsum(np.bincount(day, minlength=n_days)).tolist()
    out = []
    for lo, hi in zip([0] + ends[:-1], ends):
        station, arr, dep, e_arr, e_request = (c[lo:hi] for c in cols)
        out.append(EVSessions(station=station, arrival_step=arr, departure_step=dep, e_arrival_kwh=e_arr,
                              e_request_kwh=e_request, e_capacity_kwh=np.full(hi - lo, battery_kwh),
                              p_max_kw=np.full(hi - lo, charger_kw), efficiency=np.full(hi - lo, efficiency)))
    return out


def _small_int(keys: np.ndarray) -> np.ndarray:
    """Integer sort keys as int16 when they fit (numpy's stable sort is then a radix sort: the
    same order, several times faster than on int64)."""
    if keys.size and keys.min() >= 0 and keys.max() < 2**15:
        return keys.astype(np.int16)
    return keys


PortModel = Callable[..., PortResult]


def sessions_each(rngs: Sequence[np.random.Generator], params: EVArrivalParams, n_ports: np.ndarray,
                  multipliers: Sequence[float], dt_minutes: int, battery_kwh: float, charger_kw: float,
                  efficiency: float, start_min: float = 0.0, busy_until_min: list[np.ndarray] | None = None,
                  port_model: PortModel = simulate_ports_fast) -> list[tuple[EVSessions, np.ndarray]]:
    """Each day's EV sessions and balked EVs per station, for days with one generator and rate
    multiplier each (a generator may repeat: it draws the days in turn, as day by day): the
    arrivals (:func:`scenarios.ev_arrivals.sample_arrivals_each`), the port queue
    (``port_model``, every day starting with the stations' ``busy_until_min``) and the sessions
    of a group of days as one table, in groups of about :data:`EV_TABLE_ROWS` expected arrivals.
    """
    n_st = len(n_ports)
    per_day = float(expected_arrivals_per_day(params, n_ports).sum())      # at M = 1
    group = max(1, int(EV_TABLE_ROWS // max(per_day, 1.0)))
    out: list[tuple[EVSessions, np.ndarray]] = []
    for lo in range(0, len(rngs), group):
        gens, mults = rngs[lo:lo + group], multipliers[lo:lo + group]
        table, _ = sample_arrivals_each(gens, params, n_ports, mults, battery_kwh, start_min)
        ports = port_model(table, np.tile(n_ports, len(gens)), dt_minutes, params.patience_min,
                           None if busy_until_min is None else list(busy_until_min) * len(gens))
        sessions = to_sessions_each(table, ports, len(gens), max(n_st, 1), dt_minutes, battery_kwh, charger_kw,
                                    efficiency)
        out.extend(zip(sessions, ports.balked.reshape(len(gens), n_st)))
    return out
