"""Benchmark of the EV fleet hot path: ``bounds(t)`` + ``step(t, p)`` per env step.

11 stations, a day of 96 x 15-min steps with ~500 sessions (~20 EVs connected per station
at the busiest steps): a synthetic day, and a day from the scenario layer's arrival process
(11 stations x 20 ports) when available. Prints the median µs per call pair for three
setpoint patterns (random inside the bounds: needs the laxity sort; as soon as possible;
must-run only), plus ``bounds_horizon``.

Run: ``.venv/bin/python benchmarks/evcs.py``.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

# run as a script, this folder comes first on sys.path and its modules (e.g.
# benchmarks/scenarios.py) would shadow the packages of the same name: drop it
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

from env.ev_fleet import EVFleet  # noqa: E402
from scenarios import EVSessions  # noqa: E402

N_STATION, N_STEPS, DT_H, N_SESSIONS = 11, 96, 0.25, 500


def make_sessions(seed: int = 0, n: int = N_SESSIONS) -> EVSessions:
    """A synthetic day: arrivals spread over the day, dwell 4-17 h, 7/11/22 kW chargers."""
    rng = np.random.default_rng(seed)
    arrival = rng.integers(0, N_STEPS - 8, n)
    departure = arrival + rng.integers(16, 68, n)
    cap = rng.uniform(40.0, 90.0, n)
    e0 = rng.uniform(0.1, 0.6, n) * cap
    req = np.minimum(cap, e0 + rng.uniform(5.0, 40.0, n))
    order = np.argsort(arrival, kind="stable")
    return EVSessions(rng.integers(0, N_STATION, n), arrival, departure, e0, req, cap,
                      rng.choice([7.0, 11.0, 22.0], n), rng.uniform(0.88, 0.95, n)).select(order)


def simpy_sessions(seed: int = 10) -> EVSessions | None:
    """A day of the scenario layer's arrival process (11 stations x 20 ports, ~500 EVs)."""
    try:
        from scenarios.ev_arrivals import EVArrivalParams, sample_arrivals
        from scenarios.ev_ports import simulate_ports_simpy, to_sessions
        params = EVArrivalParams(arrivals_per_port_day=500 / 220)
        ports = np.full(N_STATION, 20)
        rng = np.random.default_rng(seed)
        table = sample_arrivals(rng, params, ports, 1.0, 66.0)
        res = simulate_ports_simpy(table, ports, 15, params.patience_min)
        return to_sessions(table, res, 15, 66.0, 6.6, 0.9)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:  # API still moving
        print(f"(scenario-layer sessions unavailable: {exc!r})")
        return None


def run_day(sessions: EVSessions, mode: str,
            rng: np.random.Generator) -> tuple[list[float], list[int]]:
    """Time bounds(t) + step(t, p) over one day; return (µs per step, EVs connected)."""
    fleet = EVFleet(sessions, N_STATION, DT_H, N_STEPS)
    times, connected = [], []
    u = rng.uniform(0.0, 1.0, (N_STEPS, N_STATION))
    for t in range(N_STEPS):
        t0 = time.perf_counter()
        b = fleet.bounds(t)
        if mode == "random":
            p = b.p_min_kw + u[t] * (b.p_max_kw - b.p_min_kw)
        elif mode == "asap":
            p = b.p_asap_kw
        else:
            p = b.p_must_kw
        fleet.step(t, p)
        times.append((time.perf_counter() - t0) * 1e6)
        connected.append(int(b.n_connected.sum()))
    return times, connected


def time_horizon(sessions: EVSessions, h: int = 16, reps: int = 200) -> float:
    """Median µs of bounds_horizon(t, h) at midday."""
    fleet = EVFleet(sessions, N_STATION, DT_H, N_STEPS)
    for t in range(N_STEPS // 2):
        fleet.step(t, fleet.bounds(t).p_asap_kw)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fleet.bounds_horizon(N_STEPS // 2, h)
        out.append((time.perf_counter() - t0) * 1e6)
    return float(np.median(out))


def bench(label: str, sessions: EVSessions) -> None:
    """Print the median µs per bounds(t) + step(t, p) over 20 days, per setpoint pattern."""
    rng = np.random.default_rng(1)
    print(f"{label}: {len(sessions)} sessions, {N_STATION} stations, {N_STEPS} steps")
    for mode in ("random", "asap", "must"):
        run_day(sessions, mode, rng)  # warm-up
        times, conn = [], []
        for _ in range(20):
            t_, c_ = run_day(sessions, mode, rng)
            times += t_
            conn += c_
        busy = np.array(conn) >= 0.8 * max(conn)
        print(f"  {mode:>6}: median {np.median(times):6.1f} µs per bounds+step "
              f"(p90 {np.percentile(times, 90):6.1f}; busiest steps median "
              f"{np.median(np.array(times)[busy]):6.1f}); EVs connected mean {np.mean(conn):.0f}, "
              f"max {max(conn)}")
    print(f"  bounds_horizon(t, 16) at midday: median {time_horizon(sessions):6.1f} µs")


def main() -> None:
    bench("synthetic day", make_sessions())
    real = simpy_sessions()
    if real is not None:
        bench("scenario-layer day (simpy ports)", real)


if __name__ == "__main__":
    main()
