"""TSO-DSO coordination by scaled-consensus ADMM with residual balancing (docs/math.md §6, seed 000).

The TSO and each DSO solve their own problems and exchange only the boundary quantities
``z_d = (P_d, Rup_d, Rdn_d)`` (MW, per period: 3T numbers per feeder). The TSO holds its copy
``xT_d`` (its boundary load and the boundary reserves it counts on in its recourse), DSO d holds
``xD_d`` (its head schedule and the reserves it backs with its stations). Scaled form::

    xT    <- argmin f_T(xT) + rho/2 sum_d ||xT_d - z_d + uT_d||^2          (TSOSolver)
    xD_d  <- argmin f_d(xD_d) + rho/2 ||xD_d - z_d + uD_d||^2              (DSOSolver: C&CG)
    z_d   <- (xT_d + uT_d + xD_d + uD_d) / 2
    u     <- u + x - z

``z`` starts at the DSOs' stand-alone offers (their problems without proximal term: the boundary
reserves their stations can back). The multipliers start at the TSO's own marginal value of the
boundary quantities at that point (``uT = nu / rho``, ``uD = -uT``, ``nu`` the dual of ``xT = z``,
computed by the TSO alone; ``admm_warm_duals``): the TSO values boundary reserve at up to
hundreds of $/MW (it saves shedding under its worst case), and from ``u = 0`` the multipliers grow
only by ``rho |r|`` per iteration (40-100 iterations at rho = 15 on t30d2; 17-25 with the warm start).

Residuals ``r = (xT - z, xD - z)``, ``||s|| = sqrt(2) rho ||z^{k+1} - z^k||``; stop when
``||r|| <= sqrt(p) eps_abs + eps_rel max(||x||, ||(z, z)||)`` and
``||s|| <= sqrt(n) eps_abs + eps_rel ||rho u||`` (p = n = 2 x 3T x n_feeder) *and* every DSO's
C&CG gap is below ``ccg_tol`` at the last iterate. Residual balancing: ``rho <- 2 rho`` if
``||r|| > 10 ||s||``, ``rho/2`` if ``||s|| > 10 ||r||`` (u rescaled by rho_old / rho_new), for at
most ``admm_balance_changes`` changes, from iteration ``admm_balance_start`` on (default 10:
halving rho during the early transient slowed convergence) and only when the imbalance held
``admm_balance_patience`` consecutive iterations (a change of rho makes the iterates jump, and
the inflated dual residual of the next iteration would undo the change at once). ``z`` and ``u``
enter the subproblems only through Parameters (:class:`~policies.planning.first_stage.ProxPWL`,
an LP model of the quadratic term, exact at consensus), so nothing recompiles per iteration. The boundary power ``P_d`` is the
DSOs' stage-1 submission, fixed on both sides, so its part of ``z`` has zero residual.

The DSO subproblem is solved inexactly while ADMM is far from consensus (``admm_ccg_iter``
C&CG iterations, scenarios kept between iterations); once the residuals meet the tolerances the
DSOs whose gap is above ``ccg_tol`` run C&CG to the tolerance before ADMM may stop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from policies.planning.ccg import DSOSolver
from policies.planning.first_stage import FirstStagePlan, PlanningData, TSOSolver, assemble_plan

__all__ = ["ADMMIteration", "ADMMResult", "solve_admm"]


@dataclass(frozen=True)
class ADMMIteration:
    """One ADMM iteration (norms in MW).

    Attributes:
        k: iteration (1-based); rho: penalty used in it.
        r_norm, s_norm: primal and dual residual norms; eps_pri, eps_dual: their tolerances.
        objective: ``f_T(xT) + sum_d f_d(xD_d)`` (the DSO parts at their C&CG upper bounds).
        dso_gaps: relative C&CG gap of every DSO at this iterate.
        time_s: wall time of the iteration.
    """

    k: int
    rho: float
    r_norm: float
    s_norm: float
    eps_pri: float
    eps_dual: float
    objective: float
    dso_gaps: tuple[float, ...]
    time_s: float


@dataclass
class ADMMResult:
    """Outcome of :func:`solve_admm`."""

    plan: FirstStagePlan
    history: list[ADMMIteration] = field(default_factory=list)
    converged: bool = False
    time_s: float = 0.0
    z: np.ndarray | None = None
    x_tso: np.ndarray | None = None
    x_dso: np.ndarray | None = None

    @property
    def iterations(self) -> int:
        return len(self.history)

    @property
    def objective(self) -> float:
        return float(self.plan.objective["total"])


def solve_admm(data: PlanningData, callback: Callable[[ADMMIteration], None] | None = None) -> ADMMResult:
    """Coordinate the TSO and the DSOs of ``data`` by ADMM (see the module docstring).

    Args:
        data: planning data (settings inside: rho, tolerances, C&CG options).
        callback: called with every :class:`ADMMIteration` (e.g. to print progress).

    Raises:
        RuntimeError: a subproblem failed (status recorded in the solvers' records).
    """
    s = data.settings
    t_start = time.perf_counter()
    T, nb = data.n_periods, data.n_feeder
    tso = TSOSolver(data)
    dsos = [DSOSolver(data, k) for k in range(nb)]
    rho = s.rho_for(nb)
    # z starts at the DSOs' stand-alone offers (no proximal term), u at 0
    for dso in dsos:
        dso.set_proximal(0.0, np.zeros(3 * T))
        dso.solve(max_iter=s.admm_ccg_iter)
    z = np.stack([dso.consensus_value() for dso in dsos])
    if s.admm_warm_duals:
        uT = tso.marginal_values(z) / rho
        uD = -uT
    else:
        uT = np.zeros_like(z)
        uD = np.zeros_like(z)
    history: list[ADMMIteration] = []
    changes, streak, last_signal = 0, 0, 0
    converged = False
    finishing = False
    n = 2 * z.size
    for k in range(1, s.admm_max_iter + 1):
        t0 = time.perf_counter()
        tso.set_proximal(rho, z - uT)
        tso.solve()
        xT = tso.consensus_value()
        xD = np.empty_like(z)
        gaps = []
        for d, dso in enumerate(dsos):
            dso.set_proximal(rho, z[d] - uD[d])
            it = s.ccg_max_iter if finishing else s.admm_ccg_iter
            tr = dso.solve(max_iter=it)
            xD[d] = dso.consensus_value()
            gaps.append(tr.gap)
        z_old = z
        z = 0.5 * (xT + uT + xD + uD)
        uT = uT + xT - z
        uD = uD + xD - z
        r_norm = float(np.sqrt(np.sum((xT - z) ** 2) + np.sum((xD - z) ** 2)))
        s_norm = float(np.sqrt(2.0) * rho * np.linalg.norm(z - z_old))
        x_norm = float(np.sqrt(np.sum(xT**2) + np.sum(xD**2)))
        eps_pri = np.sqrt(n) * s.admm_eps_abs + s.admm_eps_rel * max(x_norm, float(np.sqrt(2.0) * np.linalg.norm(z)))
        eps_dual = np.sqrt(n) * s.admm_eps_abs + s.admm_eps_rel * rho * float(np.sqrt(np.sum(uT**2) + np.sum(uD**2)))
        objective = tso.cost_value() + sum(dso.value_ub for dso in dsos)
        rec = ADMMIteration(k, rho, r_norm, s_norm, float(eps_pri), float(eps_dual), float(objective),
                            tuple(float(g) for g in gaps), time.perf_counter() - t0)
        history.append(rec)
        if callback is not None:
            callback(rec)
        small = r_norm <= eps_pri and s_norm <= eps_dual
        if small and all(g <= s.ccg_tol for g in gaps):
            converged = True
            break
        finishing = small
        signal = 1 if r_norm > 10.0 * s_norm else (-1 if s_norm > 10.0 * r_norm else 0)
        streak = streak + 1 if signal != 0 and signal == last_signal else (1 if signal != 0 else 0)
        last_signal = signal
        if (s.admm_balance and changes < s.admm_balance_changes and k >= s.admm_balance_start
                and streak >= s.admm_balance_patience):
            factor = 2.0 if signal > 0 else 0.5
            rho, uT, uD, changes, streak = rho * factor, uT / factor, uD / factor, changes + 1, 0
    elapsed = time.perf_counter() - t_start
    records = [tso.record] + [r for d in dsos for r in d.records]
    info = {"iterations": len(history), "converged": converged, "time_s": elapsed, "rho_final": rho,
            "dso_gaps": [float(g) for g in history[-1].dso_gaps] if history else [],
            "r_norm": history[-1].r_norm if history else float("nan"),
            "s_norm": history[-1].s_norm if history else float("nan"),
            "solves": {r.name: {"n": r.n_solves, "time_s": round(r.time_s, 3), "failures": r.failures}
                       for r in records},
            "settings": _settings_dict(data)}
    plan = assemble_plan(data, "admm", tso.pieces, [d.pieces for d in dsos],
                         [(d.value_first, d.value_ub - d.value_first) for d in dsos], info)
    return ADMMResult(plan, history, converged, elapsed, z, xT, xD)


def _settings_dict(data: PlanningData) -> dict:
    from dataclasses import asdict

    return asdict(data.settings)
