"""Day-ahead planning speed (seed 000): first-stage wall time of ADMM and of the centralized solve.

For each case (t30d2, t118d10) builds the planning data of one sampled day, runs the ADMM
coordination (TSO + DSOs, DSO problems by C&CG) and the centralized C&CG of the same model,
and prints: data time, ADMM wall time and iterations, centralized time and C&CG iterations, the
relative objective gap (ADMM - centralized) / centralized, and the time per solver (from the
solve records). Target: t30d2 ADMM <= 120 s (one process, one BLAS thread, no parallel DSOs).

Run: ``python benchmarks/planning.py [--cases t30d2 t118d10] [--seed 1] [--regime cloudy]
[--samples 10] [--no-centralized]``.
"""

from __future__ import annotations

import _timing  # noqa: F401  (one BLAS thread; drops this folder from sys.path)

import argparse  # noqa: E402
import time  # noqa: E402

import env  # noqa: E402
from policies.planning.admm import solve_admm  # noqa: E402
from policies.planning.centralized import solve_centralized  # noqa: E402
from policies.planning.first_stage import PlanningSettings, build_planning_data  # noqa: E402
from scenarios import sample_day  # noqa: E402


def bench(case: str, regime: str, seed: int, samples: int, centralized: bool) -> None:
    grid = env.load_case(case)
    t0 = time.perf_counter()
    data = build_planning_data(grid, sample_day(grid, regime, seed).day_ahead,
                               PlanningSettings(n_samples=samples, seed=seed))
    t_data = time.perf_counter() - t0
    _timing.report(f"{case}: planning data (N = {samples})", t_data, "s")
    res = solve_admm(data)
    status = "converged" if res.converged else "NOT converged"
    _timing.report(f"{case}: ADMM first stage", res.time_s, "s",
                   f"{res.iterations} iterations, {status}, rho {data.settings.rho_for(data.n_feeder):g}"
                   f" -> {res.history[-1].rho:g}")
    for name, rec in res.plan.info["solves"].items():
        _timing.report(f"    {name} ({rec['n']} solves)", rec["time_s"], "s")
    if centralized:
        cen = solve_centralized(data)
        _timing.report(f"{case}: centralized C&CG", cen.time_s, "s",
                       f"{cen.iterations} iterations, gap {cen.trace.gap:.1e}")
        gap = (res.objective - cen.objective) / abs(cen.objective)
        print(f"{case}: objective ADMM {res.objective:.1f}, centralized {cen.objective:.1f}, gap {100 * gap:+.3f} %")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=["t30d2", "t118d10"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--regime", default="cloudy")
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--no-centralized", action="store_true")
    args = p.parse_args()
    for case in args.cases:
        bench(case, args.regime, args.seed, args.samples, not args.no_centralized)


if __name__ == "__main__":
    main()
