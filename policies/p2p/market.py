"""The DSO-led bilevel P2P market (one MISOCP by KKT) and the TSO-led yardstick (docs/p2p.md §4).

**DSO-led** (seed 001): the DSOs decide first (upper level: every ADN's devices, the intra-ADN
pools and the cross-ADN trades ``y_kj >= 0`` through the TN, one direction per pair and period by
a binary ``d``: ``y_kj <= M d``, ``y_jk <= M (1 - d)``), anticipating the TSO's DC-OPF (lower
level) through its KKT conditions (:func:`policies.p2p.tso.tso_kkt`)::

    min  sum_k cost_k + sum_t dt sum_k pi_{b_k} h_k [linearized] + c_N dt sum_{k != j} y_kj
    s.t. ADN blocks (policies.p2p.adn), KKT(h)

**TSO-led** (conventional top-down): the TSO clears first on the ADNs' passive forecast (storage
idle, all DER output, no exchange), publishing its LMPs; each DSO then minimizes its own cost
at those prices, alone (no cross-ADN trades); the TSO finally re-dispatches on the DSOs' schedules.

Both are evaluated alike (:func:`evaluate`): the TSO's DC-OPF on the final boundary schedules
gives the dispatch and the LMPs at which every DSO settles ``pi h``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import combinations

import cvxpy as cp
import numpy as np

from env.network import Grid
from policies.p2p.adn import ADNBlock, adn_block
from policies.p2p.data import P2PDay, P2PSettings
from policies.p2p.tso import DCOPFResult, TSOData, dc_opf, tso_kkt

__all__ = ["SOLVED_STATUSES", "TIME_LIMITED", "MarketResult", "SolveInfo", "evaluate", "solve_dso_led",
           "solve_tso_led"]


@dataclass(frozen=True)
class SolveInfo:
    """Size and outcome of one optimization (or the sum over a scheme's solves).

    Attributes:
        status: SCIP's status(es), comma-joined over a scheme's solves (:data:`SOLVED_STATUSES`,
            :data:`TIME_LIMITED`); ``solve_s``: wall time of the solves (s);
        n_variables, n_constraints (scalar rows), n_binaries; ``mip_gap``: SCIP's final relative gap.
    """

    status: str
    solve_s: float
    n_variables: int
    n_constraints: int
    n_binaries: int
    mip_gap: float

    @property
    def optimal(self) -> bool:
        """Every solve reached the optimum or the set gap (:data:`SOLVED_STATUSES`); False when one
        stopped at the time limit (the solution is feasible, its gap is :attr:`mip_gap`)."""
        return all(st in SOLVED_STATUSES for st in self.status.split(","))


@dataclass(frozen=True, eq=False)
class MarketResult:
    """A scheme's schedule and its evaluation (MW per period unless stated; (T,) or (K, T)).

    Attributes:
        scheme: ``"dso_led"`` or ``"tso_led"``; ``dt_h``.
        h_mw, g_mw, s_mw: (K, T) boundary draw, bought from / sold to the TSO.
        ch_mw, dis_mw: per ADN (n_storage, T); ``e_mwh`` per ADN (n_storage, T + 1).
        der_mw, der_avail_mw: per ADN (n_der, T).
        x_in_mw: (K, T) intra-ADN pool volume; ``y_mw``: (K, K, T) cross-ADN trades (row sells).
        losses_mw: (K, T); ``opf``: the TSO's DC-OPF on ``h``.
        info: solve statistics; ``kkt``: (DSO-led) complementarity residual and dual-bound check.
    """

    scheme: str
    dt_h: float
    h_mw: np.ndarray
    g_mw: np.ndarray
    s_mw: np.ndarray
    ch_mw: tuple
    dis_mw: tuple
    e_mwh: tuple
    der_mw: tuple
    der_avail_mw: tuple
    x_in_mw: np.ndarray
    y_mw: np.ndarray
    losses_mw: np.ndarray
    opf: DCOPFResult
    info: SolveInfo
    boundary_bus: np.ndarray
    voltage_viol_puh: np.ndarray
    objective: float = float("nan")
    kkt: dict = field(default_factory=dict)


def _size(prob: cp.Problem) -> tuple[int, int, int]:
    n_var = sum(v.size for v in prob.variables())
    n_bin = sum(v.size for v in prob.variables() if v.attributes.get("boolean"))
    n_con = sum(c.size for c in prob.constraints)
    return n_var, n_con, n_bin


#: SCIP's NLP-based heuristics (they call Ipopt) are off: with them SCIP 10 / pyscipopt 6.3 aborted
#: the process (glibc heap corruption) on the t30d5 ADN MISOCPs, and without them those solve faster
#: (measured: 9.7 s instead of 21 s for one ADN over 24 h); the MISOCP is solved by LP outer
#: approximation of the cones and branch-and-bound all the same.
SCIP_PARAMS = {"heuristics/subnlp/freq": -1, "heuristics/nlpdiving/freq": -1, "heuristics/mpec/freq": -1,
               "heuristics/multistart/freq": -1, "heuristics/undercover/freq": -1, "propagating/nlobbt/freq": -1,
               "display/verblevel": 0}


#: SCIP's final statuses (``Model.getStatus``) taken as solved: the optimum, or the relative gap
#: within :attr:`P2PSettings.mip_gap` (SCIP's ``gaplimit``; cvxpy calls both kinds of stop
#: ``optimal_inaccurate`` alike, so the status is read from SCIP itself).
SOLVED_STATUSES = ("optimal", "gaplimit")
#: A stop at :attr:`P2PSettings.time_limit_s` with a feasible incumbent: used, but not optimal
#: (:attr:`SolveInfo.optimal` False; the policies log it, ``gridroll p2p`` prints it). Any other
#: stop (node / memory limits, interrupts, no incumbent) raises.
TIME_LIMITED = "timelimit"


def _solve_scip(prob: cp.Problem, settings: P2PSettings) -> tuple[str, float, float]:
    """Solve by SCIP within the settings' time limit and gap; ``(status, seconds, gap)`` with
    ``status`` SCIP's own (one of :data:`SOLVED_STATUSES` or :data:`TIME_LIMITED`).

    Raises:
        RuntimeError: no feasible solution (infeasible, or none found in the time limit), or any
            other stop of SCIP (cvxpy's ``optimal_inaccurate`` is not accepted blindly).
    """
    t0 = time.perf_counter()
    try:
        prob.solve(solver="SCIP", scip_params={"limits/time": settings.time_limit_s, "limits/gap": settings.mip_gap,
                                               **SCIP_PARAMS})
    except cp.error.SolverError as exc:    # e.g. the time limit without an incumbent
        raise RuntimeError(f"P2P market: SCIP failed after {time.perf_counter() - t0:.1f} s ({exc})") from None
    seconds = time.perf_counter() - t0
    stats = prob.solver_stats.extra_stats or {}
    model = stats.pop("model", None)     # drop cvxpy's handle on the SCIP model once its gap is read
    gap = float(model.getGap()) if model is not None else float("nan")
    raw = str(model.getStatus()) if model is not None else str(prob.status)
    del model
    if prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or prob.value is None or not np.isfinite(prob.value) \
            or raw not in (*SOLVED_STATUSES, TIME_LIMITED):
        raise RuntimeError(f"P2P market: SCIP status {raw} (cvxpy {prob.status}) after {seconds:.1f} s")
    if raw == "gaplimit" and not gap <= settings.mip_gap * (1 + 1e-9):
        raise RuntimeError(f"P2P market: SCIP stopped at its gap limit with gap {gap:.3g} > {settings.mip_gap:g}")
    return raw, seconds, gap


def _adns(grid: Grid, day: P2PSettings | P2PDay, settings: P2PSettings, K: int, y_in=None, y_out=None,  # noqa: ANN001
          **kw) -> list[ADNBlock]:
    return [adn_block(grid.feeders[k], day.load_p_mw[k], day.load_q_mvar[k], day.der_avail_mw[k], day.e_init_mwh[k],
                      grid.tariff, settings, y_in=0.0 if y_in is None else y_in[k],
                      y_out=0.0 if y_out is None else y_out[k], tag=f"_{k}", **kw) for k in range(K)]


def solve_dso_led(grid: Grid, day: P2PDay, settings: P2PSettings, n_adn: int | None = None) -> MarketResult:
    """The DSO-led bilevel model as one MISOCP (module docstring), solved by SCIP and evaluated.

    Args:
        n_adn: model only the first ``n_adn`` ADNs (the scaling study); default all.

    Raises:
        RuntimeError: SCIP finds no feasible solution within the time limit.
    """
    K = len(grid.feeders) if n_adn is None else int(n_adn)
    T, dt = day.n_periods, settings.dt_h
    pairs = list(combinations(range(K), 2))
    y = {(i, j): cp.Variable(T, nonneg=True, name=f"y_{i}_{j}") for i in range(K) for j in range(K) if i != j}
    d = {p: cp.Variable(T, boolean=True, name=f"d_{p[0]}_{p[1]}") for p in pairs}
    zero = np.zeros(T)
    y_in = [sum((y[(j, k)] for j in range(K) if j != k), zero) for k in range(K)]
    y_out = [sum((y[(k, j)] for j in range(K) if j != k), zero) for k in range(K)]
    adns = _adns(grid, day, settings, K, y_in, y_out)
    tso = TSOData.build(grid, day.t_load_mw, day.t_wind_mw, settings, n_adn=K)
    h = cp.vstack([a.h_mw for a in adns]).T if K else np.zeros((T, 0))            # (T, K)
    h_lo = np.stack([a.h_lo_mw for a in adns], axis=1)
    h_hi = np.stack([a.h_hi_mw for a in adns], axis=1)
    kkt = tso_kkt(tso, h, dt, settings, h_lo, h_hi)
    cons = [c for a in adns for c in a.constraints] + kkt.constraints
    for (i, j), dij in d.items():
        m = min(h_hi[:, j].max() + h_hi[:, i].max(), -h_lo[:, i].min() - h_lo[:, j].min())
        cons += [y[(i, j)] <= m * dij, y[(j, i)] <= m * (1 - dij)]
    p2p_charge = settings.p2p_network_charge_per_mwh * dt * sum((cp.sum(v) for v in y.values()), 0.0)
    objective = sum(a.cost for a in adns) + kkt.payment + p2p_charge
    prob = cp.Problem(cp.Minimize(objective), cons)
    n_var, n_con, n_bin = _size(prob)
    status, seconds, gap = _solve_scip(prob, settings)
    y_val = np.zeros((K, K, T))
    for (i, j), v in y.items():
        y_val[i, j] = v.value
    info = SolveInfo(status, seconds, n_var, n_con, n_bin, gap)
    res = _result("dso_led", grid, tso, adns, y_val, info, dt, float(prob.value))
    res.kkt.update(complementarity_max=kkt.complementarity_max(), dual_bound_active=kkt.dual_bound_active(),
                   lines_kept=len(kkt.lines), ll_p_mw=np.asarray(kkt.p_mw.value), ll_lmp=np.asarray(kkt.lmp.value),
                   payment=float(kkt.payment.value))
    return res


def solve_tso_led(grid: Grid, day: P2PDay, settings: P2PSettings, n_adn: int | None = None) -> MarketResult:
    """The TSO-led scheme (module docstring): passive forecast -> TSO's LMPs -> each DSO's own
    MISOCP at those prices (no cross-ADN trades) -> the TSO's re-dispatch.

    Raises:
        RuntimeError: a DSO's MISOCP finds no feasible solution; the DC-OPF fails.
    """
    K = len(grid.feeders) if n_adn is None else int(n_adn)
    dt = settings.dt_h
    tso = TSOData.build(grid, day.t_load_mw, day.t_wind_mw, settings, n_adn=K)
    passive = _adns(grid, day, settings, K, passive=True)
    prob = cp.Problem(cp.Minimize(sum(a.cost for a in passive)), [c for a in passive for c in a.constraints])
    status0, t_passive, _ = _solve_scip(prob, settings)
    h0 = np.stack([a.h_mw.value for a in passive], axis=1)
    first = dc_opf(tso, h0, dt)
    price = first.lmp[:, tso.boundary_bus]                                          # (T, K)
    adns, statuses, seconds, sizes, gaps = [], [status0], t_passive, np.zeros(3, dtype=int), []
    for k in range(K):
        (a,) = [adn_block(grid.feeders[k], day.load_p_mw[k], day.load_q_mvar[k], day.der_avail_mw[k],
                          day.e_init_mwh[k], grid.tariff, settings, tag=f"_{k}")]
        p = cp.Problem(cp.Minimize(a.cost + dt * price[:, k] @ a.h_mw), a.constraints)
        sizes += np.array(_size(p))
        st, sec, gap = _solve_scip(p, settings)
        statuses.append(st)
        seconds += sec
        gaps.append(gap)
        adns.append(a)
    info = SolveInfo(",".join(sorted(set(statuses))), seconds, int(sizes[0]), int(sizes[1]), int(sizes[2]),
                     float(np.nanmax(gaps)) if gaps else 0.0)
    res = _result("tso_led", grid, tso, adns, np.zeros((K, K, day.n_periods)), info, dt)
    res.kkt.update(first_lmp=first.lmp, passive_h_mw=h0)
    return res


def _result(scheme: str, grid: Grid, tso: TSOData, adns: list[ADNBlock], y: np.ndarray, info: SolveInfo,
            dt: float, objective: float = float("nan")) -> MarketResult:
    val = lambda x: np.asarray(x.value, dtype=float)  # noqa: E731
    h = np.stack([val(a.h_mw) for a in adns]) if adns else np.zeros((0, y.shape[-1]))
    opf = dc_opf(tso, h.T, dt)
    return MarketResult(
        scheme=scheme, dt_h=dt, h_mw=h, g_mw=np.stack([val(a.g_mw) for a in adns]),
        s_mw=np.stack([val(a.s_mw) for a in adns]), ch_mw=tuple(val(a.ch_mw) for a in adns),
        dis_mw=tuple(val(a.dis_mw) for a in adns), e_mwh=tuple(val(a.e_mwh) for a in adns),
        der_mw=tuple(val(a.der_mw) for a in adns),
        der_avail_mw=tuple(a.avail_mw for a in adns),
        x_in_mw=np.stack([val(a.x_in_mw) for a in adns]), y_mw=y,
        losses_mw=np.stack([val(a.fv.losses) * a.net.base_mva for a in adns]), opf=opf, info=info,
        boundary_bus=tso.boundary_bus, objective=objective,
        voltage_viol_puh=np.array([float(np.sum(val(a.viol))) * dt for a in adns]))


def evaluate(res: MarketResult, grid: Grid, settings: P2PSettings) -> dict:
    """The figures of a scheme (docs/p2p.md §6): storage throughput and cycles, self-consumption,
    TN imports, P2P volumes, costs per DSO (settled at the final LMPs) and of the TSO."""
    dt, K = res.dt_h, res.h_mw.shape[0]
    tariff = grid.tariff
    price = res.opf.lmp[:, res.boundary_bus].T                                      # (K, T)
    e_max = sum(float(np.sum(f.storage.e_max_mwh)) for f in grid.feeders[:K])
    throughput = sum(float(np.sum(c + d)) for c, d in zip(res.ch_mw, res.dis_mw)) * dt
    der = np.array([float(np.sum(x)) for x in res.der_mw]) * dt
    exported = (res.s_mw.sum(axis=1) + res.y_mw.sum(axis=(1, 2))) * dt
    dso = []
    for k in range(K):
        f = grid.feeders[k]
        kind_cost = np.where(np.asarray(f.der.kind) == "pv", tariff.pv_cost_per_mwh, tariff.wind_cost_per_mwh)
        energy = float(price[k] @ res.h_mw[k]) * dt
        p2p_sold = float(np.sum(res.y_mw[k] * price[k][None, :])) * dt            # seller's LMP
        p2p_bought = float(np.sum(res.y_mw[:, k] * price[:, :])) * dt
        charges = dt * (settings.tn_charge_per_mwh * float(np.sum(res.g_mw[k] + res.s_mw[k]))
                        + settings.p2p_network_charge_per_mwh / 2 * float(np.sum(res.y_mw[k]) + np.sum(res.y_mw[:, k])))
        own = dt * (tariff.storage_cost_per_mwh * float(np.sum(res.ch_mw[k] + res.dis_mw[k]))
                    + float(kind_cost @ res.der_mw[k].sum(axis=1))
                    + tariff.penalty_curtailment_per_mwh * float(np.sum(res.der_avail_mw[k] - res.der_mw[k])))
        own += tariff.penalty_voltage_per_puh * float(res.voltage_viol_puh[k])
        dso.append({"energy": energy, "p2p_paid": p2p_bought, "p2p_received": p2p_sold, "charges": charges,
                    "own": own, "total": energy + charges + own})
    tso_revenue = sum(d["energy"] + d["charges"] for d in dso)
    return {
        "bess_throughput_mwh": throughput,
        "bess_cycles": throughput / (2 * e_max) if e_max > 0 else 0.0,
        "self_consumption": 1.0 - float(exported.sum() / der.sum()) if der.sum() > 0 else float("nan"),
        "tn_imports_mwh": float(res.g_mw.sum() * dt),
        "tn_exports_mwh": float(res.s_mw.sum() * dt),
        "p2p_intra_mwh": float(res.x_in_mw.sum() * dt),
        "p2p_cross_mwh": float(res.y_mw.sum() * dt),
        "dso_cost": [d["total"] for d in dso],
        "dso_detail": dso,
        "dso_cost_total": float(sum(d["total"] for d in dso)),
        "tso_generation_cost": res.opf.cost,
        "tso_revenue": float(tso_revenue),
        "tso_net_cost": res.opf.cost - float(tso_revenue),
        "system_cost": float(res.opf.cost + sum(d["own"] for d in dso)),
        "solve_s": res.info.solve_s,
        "mip_gap": res.info.mip_gap,
    }
