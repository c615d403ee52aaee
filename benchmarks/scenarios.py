"""Speed of the scenario layer: prints the median wall time of several runs.

Run: ``.venv/bin/python benchmarks/scenarios.py [--repeats 7]``

- ``sample_day`` on a d33-like layout (32 loads, 3 PV, 3 wind, 11 EVCS x 20 ports)
  and on a T-D-like layout (2 d33 feeders behind 2 boundaries, 3 wind farms);
- ``forecast(t).sample(100)`` at noon on both;
- one simpy station day with about 500 EVs (target <= 50 ms);
- ``reduce`` 100 -> 10 paths, Wasserstein worst case (N = 100, d = 10, K = 3).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Run as a script, this file's folder is sys.path[0] and its name would shadow the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from scenarios import Layout, WassersteinBall, reduce, sample_day  # noqa: E402
from scenarios.ev_arrivals import EVArrivalParams, sample_arrivals  # noqa: E402
from scenarios.ev_ports import simulate_ports_simpy, to_sessions  # noqa: E402

# IEEE 33-bus loads (kW), buses 2..33, scaled by seed 003's 0.9333.
_IEEE33_P_KW = np.array([100, 90, 120, 60, 60, 200, 200, 60, 60, 45, 60, 60, 120, 60, 60, 60,
                         90, 90, 90, 90, 90, 90, 420, 420, 60, 60, 60, 120, 200, 150, 210, 60], dtype=float)
_EVCS_BUSES = (6, 9, 12, 15, 17, 20, 22, 23, 28, 30, 32)


def _feeder(k: int) -> tuple[tuple[str, ...], np.ndarray]:
    return tuple(f"f{k}_b{b}" for b in range(2, 34)), _IEEE33_P_KW * 0.9333 / 1000.0


def d33_layout() -> Layout:
    names, p = _feeder(0)
    return Layout("d33", names, p, ("f0_pv14", "f0_pv25", "f0_pv30"), np.full(3, 0.5),
                  ("f0_w17", "f0_w24", "f0_w32"), np.full(3, 0.4),
                  tuple(f"f0_ev{b}" for b in _EVCS_BUSES), np.full(11, 20))


def td_layout() -> Layout:
    f0, p0 = _feeder(0)
    f1, p1 = _feeder(1)
    t_names = tuple(f"t_b{b}" for b in range(1, 21))
    return Layout("t30d2", t_names + f0 + f1, np.concatenate([np.full(20, 9.46), p0, p1]),
                  wind_names=("t_w7", "t_w11", "t_w14"), wind_p_max_mw=np.full(3, 40.0),
                  evcs_names=tuple(f"f{k}_ev{b}" for k in (0, 1) for b in _EVCS_BUSES),
                  evcs_n_ports=np.full(22, 20), boundary_names=("t15_f0", "t23_f1"))


def median_ms(fn: Callable[[int], object], repeats: int) -> float:
    """Median wall time (ms) of ``fn(i)`` over ``repeats`` runs after one warm-up."""
    fn(repeats)  # warm-up (its own seed)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    r = args.repeats
    d33, td = d33_layout(), td_layout()
    rows = []
    for name, lay in (("d33", d33), ("t30d2-like", td)):
        rows.append((f"sample_day {name} cloudy dt=15", median_ms(lambda i: sample_day(lay, "cloudy", 1000 + i), r)))
        rows.append((f"sample_day {name} ev_surge dt=5", median_ms(
            lambda i: sample_day(lay, "ev_surge", 1000 + i, dt_minutes=5), r)))
        fc = sample_day(lay, "highly_fluctuating", 7).forecast(47)
        rows.append((f"forecast(t=47).sample(100) {name}",
                     median_ms(lambda i: fc.sample(100, np.random.default_rng(i)), r)))
        rows.append((f"forecast(t=47).sample(100, ev_sessions=False) {name}",
                     median_ms(lambda i: fc.sample(100, np.random.default_rng(i), ev_sessions=False), r)))
    params = EVArrivalParams(arrivals_per_port_day=500 / 220)   # 11 stations x 20 ports -> ~500 EVs
    ports = np.full(11, 20)
    n_evs = []

    def simpy_day(i: int) -> None:
        rng = np.random.default_rng(i + 10)
        table = sample_arrivals(rng, params, ports, 1.0, 66.0)
        res = simulate_ports_simpy(table, ports, 15, params.patience_min)
        n_evs.append(len(to_sessions(table, res, 15, 66.0, 6.6, 0.9)))

    rows.append(("simpy station day (~500 EVs, arrivals + ports + sessions)", median_ms(simpy_day, r)))
    ss = sample_day(d33, "cloudy", 3).forecast(40).sample(100, np.random.default_rng(0))
    rows.append(("reduce 100 -> 10 paths (d33)", median_ms(lambda i: reduce(ss, 10), r)))
    rng = np.random.default_rng(0)
    ball = WassersteinBall(rng.normal(size=(100, 10)), np.ones(10), 0.5, -4.0 * np.ones(10), 4.0 * np.ones(10))
    a, b = rng.normal(size=(3, 10)), rng.normal(size=3)
    rows.append(("Wasserstein worst case LP (N=100, d=10, K=3, box)",
                 median_ms(lambda i: ball.worst_case_expectation(a, b), r)))
    width = max(len(k) for k, _ in rows)
    print(f"median of {r} runs (ms); simpy day had {int(np.median(n_evs))} EVs")
    for label, ms in rows:
        print(f"  {label:<{width}}  {ms:9.2f}")


if __name__ == "__main__":
    main()
