"""The centralized solve of the same T-D planning model (the yardstick of ADMM's gap).

One problem holds the TSO (:class:`~policies.planning.first_stage.TSOModel`) and every DSO
master (:class:`~policies.planning.ccg.DSOModel`) with the consensus equalities
``(Pd, Rup, Rdn)_TSO = (Pd, Rup, Rdn)_DSO`` per feeder, and is solved by C&CG (docs/math.md §5): the
joint master (an LP with the tangent fuel model) gives a lower bound; each DSO's worst-case
oracle at the master's first stage gives the upper bound
``UB = f_T(x_T) + sum_d [c_d^T x_d + lambda_d eps + sum_i w_i phi_di]``; the worst scenarios
are added until ``(UB - LB) / |UB| <= ccg_tol``. Violated voltage rows of the masters are added
lazily before each oracle call (as in the stand-alone DSO solver).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import cvxpy as cp
import numpy as np

from policies.planning.ccg import CCGTrace, DSOModel, DSOPieces
from policies.planning.first_stage import (
    FirstStagePlan,
    PlanningData,
    SolveRecord,
    TSOModel,
    TSOPieces,
    assemble_plan,
    solve_problem,
)

__all__ = ["CentralizedResult", "solve_centralized"]


@dataclass
class CentralizedResult:
    """Outcome of :func:`solve_centralized`."""

    plan: FirstStagePlan
    trace: CCGTrace
    time_s: float

    @property
    def objective(self) -> float:
        return float(self.plan.objective["total"])

    @property
    def iterations(self) -> int:
        return self.trace.iterations


def solve_centralized(data: PlanningData) -> CentralizedResult:
    """Solve the joint TSO + DSOs model by C&CG (see the module docstring)."""
    s = data.settings
    t0 = time.perf_counter()
    models = [DSOModel(data, k) for k in range(data.n_feeder)]
    tso_model = TSOModel(data)
    solver = s.solver if s.fuel_segments is not None else (s.qp_solver or s.solver)
    record = SolveRecord("centralized_master")
    trace = CCGTrace()
    key: tuple = ()
    problem: cp.Problem | None = None
    tso: TSOPieces | None = None
    dsos: list[DSOPieces] = []
    values: list[tuple[float, float]] = []
    for _ in range(s.ccg_max_iter):
        while True:                                   # master with lazy voltage rows
            new_key = tuple((m.n_blocks, len(m.scenarios), len(m.mon_lo), len(m.mon_hi)) for m in models)
            if problem is None or new_key != key:
                tso = tso_model.build()
                dsos = [m.build() for m in models]
                cons = list(tso.constraints)
                for k, d in enumerate(dsos):
                    cons += d.constraints + [tso.consensus[k] == d.consensus]
                obj = tso.cost + sum(d.first_cost + d.risk for d in dsos)
                problem, key = cp.Problem(cp.Minimize(obj), cons), new_key
            lb = solve_problem(problem, solver, record)
            if sum(m.add_violated_rows(d.y.value, DSOModel.first_stage(d)) for m, d in zip(models, dsos)) == 0:
                break
        assert tso is not None
        ub = float(tso.cost.value)
        values, results = [], []
        for m, d in zip(models, dsos):
            lam = float(d.lam.value) if d.lam is not None else 0.0
            first = float(d.first_cost.value)
            res = m.worst_cases(DSOModel.first_stage(d), lam)
            ub_d = m.upper_bound(first, lam, res)
            values.append((first, ub_d - first))
            results.append(res)
            ub += ub_d
        trace.lower.append(lb)
        trace.upper.append(ub)
        trace.n_scenarios.append(sum(len(m.scenarios) for m in models))
        if (ub - lb) / max(abs(ub), 1e-9) <= s.ccg_tol:
            break
        added = sum(m.add_worst(r, np.asarray(d.s.value), 1e-6 * max(abs(ub), 1.0))
                    for m, r, d in zip(models, results, dsos))
        if added == 0:
            break
    elapsed = time.perf_counter() - t0
    trace.time_s = elapsed
    records = [record] + [r for m in models for r in m.records]
    info = {"iterations": trace.iterations, "ccg_gap": trace.gap, "time_s": elapsed,
            "lower": trace.lower, "upper": trace.upper,
            "solves": {r.name: {"n": r.n_solves, "time_s": round(r.time_s, 3), "failures": r.failures}
                       for r in records},
            "settings": asdict(s)}
    assert tso is not None
    plan = assemble_plan(data, "centralized", tso, dsos, values, info)
    return CentralizedResult(plan, trace, elapsed)
