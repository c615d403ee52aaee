"""Column-and-constraint generation (docs/math.md §5) for the DSO's nested DRO + ARO problem (docs/math.md §4-5).

The DSO of feeder d solves the four-level problem of seed 000

    min_x  c^T x + sup_{P in B_eps} E_P [ max_{u in U} min_{y in F(x, u, xi)} q^T y ]

* ``x`` — first stage: station regulation ``r_up``, ``r_dn`` (T, S), boundary reserves
  ``Rup``, ``Rdn`` (T,) backed by them (see :class:`DSOModel`);
* ``xi`` — the feeder's total DER forecast error per period (MW), Wasserstein ball ``B_eps``
  around N samples (1-norm over the periods, box support = DER between 0 and capacity);
* ``u`` — the TSO's requirement at the boundary (MW, + = import less), budget set ``U``;
* ``y`` — intraday recourse per period (:class:`FeederRecourse`): station deviations within
  ``r_up``/``r_dn``, DER use (curtailment), proportional load shedding, compensators, boundary
  violation ``|u - delivered|`` and voltage slacks, under LinDistFlow voltages.

**How it is solved.** The Wasserstein sup is dualized per sample (Mohajerin Esfahani & Kuhn,
docs/math.md §4 (ii)): ``min_{lambda >= 0} lambda eps + (1/N) sum_i sup_{xi, u} [Q(x, u, xi) -
lambda ||xi - xi_i||_1]``. The recourse is separable over periods and convex in ``(u_t, xi_t)``,
so on every orthant around ``xi_i`` the inner function is convex and its sup over the box is
attained with each ``xi_t`` in ``{dn_t, xi_it, up_t}`` (support bounds), and the max over the
budget set at a vertex (``u_t`` in ``{nom, nom +- dev}``, at most Gamma deviations, integer
Gamma). So the inner max-max is a finite max over binary choices per period. C&CG:

* **master** (LP/QP): ``min c^T x + lambda eps + sum_i w_i s_i`` with, for every generated
  scenario l of sample i, ``s_i >= sum_t q^T y_{t,l} - lambda ||xi^l - xi_i||_1`` and fresh
  recourse ``y_{t,l} in F_t(x, u^l_t, xi^l_t)`` (blocks with equal ``(t, xi, u)`` are shared,
  which is exact because the blocks of different periods are independent) -> lower bound;
* **subproblem** per sample (oracle): ``max_{xi, u} sum_t [Q_t - lambda |xi_t - xi_it|]`` at
  ``(x*, lambda*)``: either the dual MILP (``max pi^T h(x, u, xi)`` over ``G^T pi <= q``,
  bilinear ``pi g`` linearized exactly by McCormick for the binary choices with valid dual
  bounds; HiGHS through cvxpy), or exact enumeration (all 9 choices per period by LP, then a
  dynamic program over the budgets) -> upper bound ``c^T x* + lambda* eps + sum_i w_i phi_i``;
* stop when ``(UB - LB) / |UB| <= tol`` (seed 000: 0.5 %).

Both oracles are exact and agree (tests); the default is enumeration: on t30d2 (24 periods,
10 samples) it evaluates all centers in ~0.3-0.5 s, while one dual MILP with the xi and u
binaries takes 5-13 s in HiGHS (its McCormick relaxation is weak: root bound ~3x the optimum);
with ``xi`` fixed at the samples (SO) a u-only MILP takes ~0.5 s.

The master keeps only the voltage rows that can bind (baseline within 0.02 pu^2 of a limit) and
adds any other row a master solution violates (lazy row generation; the oracles always use the
full LP, so the bounds stay valid).

RO (``mode="budget"``): one center (the sample mean), ``xi_t`` in ``{mean, mean +- envelope}``
with its own budget, no ``lambda``. SO (``mode="sample"``): ``xi`` stays at the samples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from policies.planning.first_stage import (
    AreaUncertainty,
    FeederData,
    PlanningData,
    PlanningError,
    ProxPWL,
    SolveRecord,
    solve_problem,
)
from env.formulations.dc import incidence
from env.network import Tariff
from scenarios import BudgetSet

__all__ = ["CCGTrace", "DSOModel", "DSOPieces", "DSOSolver", "EnumerationOracle", "FeederRecourse",
           "OracleResult", "WorstCaseMILP", "build_feeder_recourse"]

_KEY_DECIMALS = 9
_MONITOR_MARGIN_PU2 = 0.02   # voltage rows whose baseline is this close (pu^2) start monitored
_VOLT_TOL_PU2 = 1e-6


# ============================================================================ recourse in matrix form


@dataclass(frozen=True, eq=False)
class FeederRecourse:
    """One period's recourse LP of a feeder, ``min c^T y + const s.t. G y >= h, y >= 0``, with

        h_t(x, u, xi) = h0[:, t] + hx @ x_t + hu u + hxi[:, t] xi,
        const_t(xi)   = const0[t] + const_xi xi,

    ``x_t = (r_up (S), r_dn (S))`` of period t (MW). Columns (MW unless named): ``du``/``dd``
    station up (charge less) / down deviation, ``w`` DER used, ``shed`` load shed (all loads
    pro rata), ``vp``/``vm`` boundary violation, ``qy`` compensator output above ``q_min``
    (MVAr), ``sl``/``sh`` squared-voltage slacks (pu^2) of the non-slack buses. Rows:

    * boundary (two ``>=`` rows of an equality): ``sum du - sum dd + shed + sum w + vp - vm
      = u + sum fc`` — the head moves by ``-u`` (the TSO's requirement) whatever the DER error;
    * ``w_k <= fc_k + a_k xi`` (``a_k`` the unit's share of the total error);
    * ``du <= r_up``, ``dd <= r_dn``, ``shed <= load``, ``qy <= q_max - q_min``;
    * LinDistFlow voltages around the AC baseline ``v0``: ``v = v0 + 2 (R dp + X dq) / S_base``
      with ``vmin^2 <= v + sl`` and ``v - sh <= vmax^2``.

    Costs per period: curtailment ``pen_curt (fc + a xi - w)``, wind ``wind_cost w``, shedding
    ``VOLL shed``, boundary ``pen_boundary (vp + vm)``, voltage ``pen_voltage / 2`` per pu^2
    (``|V| - 1 ~ (v - 1)/2``), station deviation ``deploy_cost`` (default 0).

    Attributes:
        G, c, h0, hx, hu, hxi, const0, const_xi: as above.
        rows, cols: name -> slice.
        pi_max: (n_row,) valid bounds of the duals of the rows multiplied by binaries
            (boundary rows and DER rows; NaN elsewhere); see :func:`build_feeder_recourse`.
        n_x: 2 S, first-stage entries per period.
    """

    G: sp.csr_matrix
    c: np.ndarray
    h0: np.ndarray
    hx: sp.csr_matrix
    hu: np.ndarray
    hxi: np.ndarray
    const0: np.ndarray
    const_xi: float
    rows: dict[str, slice]
    cols: dict[str, slice]
    pi_max: np.ndarray
    n_x: int

    @property
    def n_row(self) -> int:
        return int(self.G.shape[0])

    @property
    def n_col(self) -> int:
        return int(self.G.shape[1])

    @property
    def n_periods(self) -> int:
        return int(self.h0.shape[1])

    def rhs(self, t: np.ndarray, x: np.ndarray, u: np.ndarray, xi: np.ndarray) -> np.ndarray:
        """(n_row, B) right-hand sides of blocks (period t[b], first stage x[:, t[b]], u[b], xi[b])."""
        t = np.asarray(t, dtype=int)
        return self.h0[:, t] + self.hx @ x[:, t] + np.outer(self.hu, u) + self.hxi[:, t] * xi[None, :]

    def constant(self, t: np.ndarray, xi: np.ndarray) -> np.ndarray:
        return self.const0[np.asarray(t, dtype=int)] + self.const_xi * np.asarray(xi, dtype=float)

    def solve_blocks(self, t: np.ndarray, x: np.ndarray, u: np.ndarray, xi: np.ndarray,
                     primal: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Optimal recourse cost (incl. constants) of each block, one hot-started HiGHS LP per block.

        A persistent ``highspy`` model of the period LP is re-solved with new row bounds
        (~0.3 ms per block on a 33-bus feeder); blocks are visited by period so that
        consecutive right-hand sides are close.

        Args:
            t: (B,) periods; x: (n_x, T) first stage; u, xi: (B,) requirement and error.
            primal: also return the optimal recourse ``y`` of every block, (B, n_col).
        """
        import highspy

        t = np.asarray(t, dtype=int)
        u, xi = np.asarray(u, dtype=float), np.asarray(xi, dtype=float)
        h = self.rhs(t, x, u, xi)
        model = self._highs()
        idx = np.arange(self.n_row, dtype=np.int32)
        upper = np.full(self.n_row, highspy.kHighsInf)
        out = np.empty(len(t))
        ys = np.empty((len(t), self.n_col)) if primal else None
        for b in np.argsort(t, kind="stable"):
            model.changeRowsBounds(self.n_row, idx, h[:, b], upper)
            model.run()
            if model.getModelStatus() != highspy.HighsModelStatus.kOptimal:
                status = model.modelStatusToString(model.getModelStatus())
                raise PlanningError("dso_recourse_block", status,
                                    f"FeederRecourse.solve_blocks: block {b} (period {t[b]}) not solved: {status}")
            out[b] = model.getInfo().objective_function_value
            if ys is not None:
                ys[b] = model.getSolution().col_value
        if ys is not None:
            return out + self.constant(t, xi), ys
        return out + self.constant(t, xi)

    def _highs(self):  # noqa: ANN202 - highspy.Highs
        """The persistent period LP (built on first use, cached on the instance)."""
        import highspy

        model = self.__dict__.get("_model")
        if model is None:
            model = highspy.Highs()
            model.setOptionValue("output_flag", False)
            lp = highspy.HighsLp()
            G = sp.csc_matrix(self.G)
            lp.num_col_, lp.num_row_ = self.n_col, self.n_row
            lp.col_cost_ = self.c
            lp.col_lower_ = np.zeros(self.n_col)
            lp.col_upper_ = np.full(self.n_col, highspy.kHighsInf)
            lp.row_lower_ = self.h0[:, 0]
            lp.row_upper_ = np.full(self.n_row, highspy.kHighsInf)
            lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
            lp.a_matrix_.start_ = G.indptr
            lp.a_matrix_.index_ = G.indices
            lp.a_matrix_.value_ = G.data
            model.passModel(lp)
            object.__setattr__(self, "_model", model)
        return model


def build_feeder_recourse(fd: FeederData, tariff: Tariff, dt_h: float,
                          deploy_cost_per_mwh: float = 0.0) -> FeederRecourse:
    """Assemble :class:`FeederRecourse` of one feeder (see its docstring for the model).

    Dual bounds for the McCormick linearization (exact: some optimal dual lies inside):
    the boundary rows' duals are at most ``pen_boundary dt`` (after removing their common part,
    the columns ``vp``/``vm`` bound ``|pi+ - pi-|``); a DER row's dual is at its least optimal
    value ``max(0, sum_{r != k} G_rk pi_r - c_k)`` (its right-hand side is >= 0), bounded by
    ``sum_r max(G_rk, 0) pi_max_r + max(-c_k, 0)`` with the voltage rows' duals at most their
    slack costs.
    """
    net = fd.net
    T = fd.n_periods
    b = net.base_mva
    S, nd, nc = fd.n_station, len(fd.der_bus), len(fd.comp_bus)
    ns = np.delete(np.arange(net.n_bus), net.slack_bus)
    nb = len(ns)
    sens_p = 2.0 / b * fd.R_pu[ns]
    sens_q = 2.0 / b * fd.X_pu[ns]
    A_st = incidence(net.n_bus, fd.station_bus)
    A_w = incidence(net.n_bus, fd.der_bus)
    A_c = incidence(net.n_bus, fd.comp_bus)
    sizes = [("du", S), ("dd", S), ("w", nd), ("shed", 1), ("vp", 1), ("vm", 1), ("qy", nc), ("sl", nb), ("sh", nb)]
    cols, start = {}, 0
    for name, n in sizes:
        cols[name] = slice(start, start + n)
        start += n
    n_col = start
    vcols = np.zeros((nb, n_col))
    vcols[:, cols["du"]] = sens_p @ A_st
    vcols[:, cols["dd"]] = -sens_p @ A_st
    vcols[:, cols["w"]] = sens_p @ A_w
    vcols[:, cols["shed"]] = (sens_p @ fd.load_frac_p + sens_q @ fd.load_frac_q)[:, None]
    vcols[:, cols["qy"]] = sens_q @ A_c
    bal = np.zeros(n_col)
    bal[cols["du"]], bal[cols["dd"]], bal[cols["w"]] = 1.0, -1.0, 1.0
    bal[cols["shed"]], bal[cols["vp"]], bal[cols["vm"]] = 1.0, 1.0, -1.0

    def sel(name: str, sign: float = -1.0) -> np.ndarray:
        m = np.zeros((cols[name].stop - cols[name].start, n_col))
        m[:, cols[name]] = sign * np.eye(m.shape[0])
        return m

    eye_sl, eye_sh = -sel("sl"), -sel("sh")
    blocks = [("bal_p", bal[None, :]), ("bal_m", -bal[None, :]), ("wb", sel("w")), ("dub", sel("du")),
              ("ddb", sel("dd")), ("shedb", sel("shed")), ("qb", sel("qy")), ("vlo", vcols + eye_sl),
              ("vhi", -vcols + eye_sh)]
    rows, start = {}, 0
    for name, m in blocks:
        rows[name] = slice(start, start + m.shape[0])
        start += m.shape[0]
    G = sp.csr_matrix(np.vstack([m for _, m in blocks]))
    G.eliminate_zeros()
    n_row = G.shape[0]
    # right-hand sides
    fc = fd.der_fc_mw                                            # (T, nd)
    fc_tot = fc.sum(axis=1)
    cst = (sens_p @ (-A_w @ fc.T)) + (sens_q @ (A_c @ fd.q_min_mvar))[:, None]   # (nb, T)
    v0 = fd.v0_pu2[:, ns].T                                     # (nb, T)
    h0 = np.zeros((n_row, T))
    h0[rows["bal_p"]] = fc_tot
    h0[rows["bal_m"]] = -fc_tot
    h0[rows["wb"]] = -fc.T
    h0[rows["shedb"]] = -fd.load_mw
    h0[rows["qb"]] = -(fd.q_max_mvar - fd.q_min_mvar)[:, None]
    h0[rows["vlo"]] = fd.vmin_pu2[ns][:, None] - v0 - cst
    h0[rows["vhi"]] = v0 + cst - fd.vmax_pu2[ns][:, None]
    hx = np.zeros((n_row, 2 * S))
    hx[rows["dub"], :S] = -np.eye(S)
    hx[rows["ddb"], S:] = -np.eye(S)
    hu = np.zeros(n_row)
    hu[rows["bal_p"]], hu[rows["bal_m"]] = 1.0, -1.0
    hxi = np.zeros((n_row, T))
    hxi[rows["wb"]] = -fd.der_share.T
    # costs (per period)
    pen_curt = tariff.penalty_curtailment_per_mwh * dt_h
    c = np.zeros(n_col)
    c[cols["du"]] = c[cols["dd"]] = deploy_cost_per_mwh * dt_h
    c[cols["w"]] = -pen_curt + tariff.wind_cost_per_mwh * dt_h
    c[cols["shed"]] = tariff.penalty_load_shed_per_mwh * dt_h
    c[cols["vp"]] = c[cols["vm"]] = tariff.penalty_boundary_per_mwh * dt_h
    c[cols["sl"]] = c[cols["sh"]] = tariff.penalty_voltage_per_puh * dt_h / 2.0
    # dual bounds
    pi_max = np.full(n_row, np.nan)
    p_bal = tariff.penalty_boundary_per_mwh * dt_h
    pi_max[rows["bal_p"]] = pi_max[rows["bal_m"]] = p_bal
    known = np.full(n_row, np.nan)
    known[rows["bal_p"]] = known[rows["bal_m"]] = p_bal
    known[rows["vlo"]] = c[cols["sl"]][0] if nb else 0.0
    known[rows["vhi"]] = c[cols["sh"]][0] if nb else 0.0
    Gd = G.toarray()
    for j, col in enumerate(range(cols["w"].start, cols["w"].stop)):
        r = rows["wb"].start + j
        pos = np.maximum(Gd[:, col], 0.0)
        pos[r] = 0.0
        if np.any((pos > 0) & np.isnan(known)):
            raise ValueError("build_feeder_recourse: a DER column meets a row without a dual bound")
        pi_max[r] = float(np.nansum(pos * known) + max(-c[col], 0.0))
    return FeederRecourse(G=G, c=c, h0=h0, hx=sp.csr_matrix(hx), hu=hu, hxi=hxi,
                          const0=pen_curt * fc_tot, const_xi=pen_curt, rows=rows, cols=cols,
                          pi_max=pi_max, n_x=2 * S)


# ============================================================================ worst-case oracles


@dataclass(frozen=True)
class OracleResult:
    """Worst case of one center: ``phi = max_{xi, u} sum_t [Q_t(x, u_t, xi_t) - lambda |xi_t - c_t|]``.

    Attributes:
        value: phi (cost units).
        xi, u: (T,) the maximizing scenario.
    """

    value: float
    xi: np.ndarray
    u: np.ndarray


def _choices(unc: AreaUncertainty, req: BudgetSet,
             center: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per period: may xi go up / down, may u deviate; and the xi budget (periods)."""
    T = center.shape[0]
    if unc.mode == "sample":
        allow_a = allow_b = np.zeros(T)
    else:
        allow_a = (np.abs(unc.up - center) > 1e-12).astype(float)
        allow_b = (np.abs(unc.dn - center) > 1e-12).astype(float)
    allow_u = (req.deviation > 1e-12).astype(float) if req.gamma > 0 else np.zeros(T)
    if unc.mode == "wasserstein":
        gam_x = float(T)
    else:
        gam_x = float(np.floor(unc.budget + 1e-9)) if unc.mode == "budget" else 0.0
    return allow_a, allow_b, allow_u, np.array(gam_x)


class WorstCaseMILP:
    """The C&CG subproblem of one feeder as a dual MILP, built once with Parameters (DPP).

    For one center ``c`` (a sample, or the RO mean) and fixed ``(x, lambda)``::

        max  sum_t pi_t^T h_t(x, u_t, xi_t) + const_xi xi_t - lambda |xi_t - c_t|
        s.t. G^T pi_t <= q,  pi_t >= 0,
             u_t  = nom_t + dev_t (g+_t - g-_t),   g+ + g- <= 1,  sum (g+ + g-) <= Gamma_u,
             xi_t = c_t + (up_t - c_t) a_t + (dn_t - c_t) b_t,  a + b <= 1,  sum (a + b) <= Gamma_xi,

    binary ``g``, ``a``, ``b``. The products of binaries with the duals of the boundary rows
    (``u``) and the DER rows (``xi``) are replaced by McCormick variables ``z = pi g`` with
    ``0 <= z <= pi_max g``, ``pi - pi_max (1 - g) <= z <= pi`` (exact for binary g).
    """

    def __init__(self, rec: FeederRecourse, unc: AreaUncertainty, req: BudgetSet, solver: str = "HIGHS",
                 name: str = "dso_subproblem_milp") -> None:
        self.rec, self.unc, self.req, self.solver = rec, unc, req, solver
        T, nr = rec.n_periods, rec.n_row
        rb = np.r_[rec.rows["bal_p"].start, rec.rows["bal_m"].start]
        rw = np.arange(rec.rows["wb"].start, rec.rows["wb"].stop)
        nd = len(rw)
        self.Hb = cp.Parameter((nr, T), name="h_base")
        self.dev = cp.Parameter(T, name="u_dev")
        self.coef_a = cp.Parameter((nd, T), name="xi_up_coef")
        self.coef_b = cp.Parameter((nd, T), name="xi_dn_coef")
        self.ca = cp.Parameter(T, name="a_cost")
        self.cb = cp.Parameter(T, name="b_cost")
        self.allow_u = cp.Parameter(T, nonneg=True)
        self.allow_a = cp.Parameter(T, nonneg=True)
        self.allow_b = cp.Parameter(T, nonneg=True)
        self.gam_u = cp.Parameter(nonneg=True)
        self.gam_x = cp.Parameter(nonneg=True)
        Pi = cp.Variable((nr, T), nonneg=True, name="pi")
        gp, gm = cp.Variable(T, boolean=True), cp.Variable(T, boolean=True)
        a, b = cp.Variable(T, boolean=True), cp.Variable(T, boolean=True)
        self.gp, self.gm, self.a, self.b = gp, gm, a, b
        cons = [rec.G.T @ Pi <= rec.c[:, None], gp + gm <= self.allow_u, a <= self.allow_a, b <= self.allow_b,
                a + b <= 1, cp.sum(gp + gm) <= self.gam_u, cp.sum(a + b) <= self.gam_x]
        cons += [Pi[rb] <= rec.pi_max[rb][:, None]]
        if nd:
            cons += [Pi[rw] <= rec.pi_max[rw][:, None]]

        def mccormick(rows: np.ndarray, g: cp.Variable) -> cp.Variable:
            m = rec.pi_max[rows][:, None]
            z = cp.Variable((len(rows), T), nonneg=True)
            gg = cp.reshape(g, (1, T), order="C")
            cons.extend([z <= m @ gg, z <= Pi[rows], z >= Pi[rows] - m @ (1 - gg)])
            return z

        zp, zm = mccormick(rb, gp), mccormick(rb, gm)
        obj = cp.sum(cp.multiply(self.Hb, Pi)) + self.dev @ ((zp[0] - zp[1]) - (zm[0] - zm[1]))
        obj += self.ca @ a + self.cb @ b
        if nd:
            za, zb = mccormick(rw, a), mccormick(rw, b)
            obj += cp.sum(cp.multiply(self.coef_a, za)) + cp.sum(cp.multiply(self.coef_b, zb))
        self.problem = cp.Problem(cp.Maximize(obj), cons)
        self.record = SolveRecord(name)

    def solve(self, x: np.ndarray, lam: float, center: np.ndarray) -> OracleResult:
        """Worst case of ``center`` at first stage ``x`` ((n_x, T)) and transport price ``lam``."""
        rec, unc, req = self.rec, self.unc, self.req
        T = rec.n_periods
        t = np.arange(T)
        self.Hb.value = rec.rhs(t, x, req.nominal, center)
        self.dev.value = req.deviation.astype(float)
        rw = rec.rows["wb"]
        self.coef_a.value = rec.hxi[rw] * (unc.up - center)[None, :]
        self.coef_b.value = rec.hxi[rw] * (unc.dn - center)[None, :]
        tc = lam if unc.mode == "wasserstein" else 0.0
        self.ca.value = (rec.const_xi - tc) * (unc.up - center)
        self.cb.value = (rec.const_xi + tc) * (unc.dn - center)
        allow_a, allow_b, allow_u, gam_x = _choices(unc, req, center)
        self.allow_a.value, self.allow_b.value, self.allow_u.value = allow_a, allow_b, allow_u
        self.gam_u.value = float(np.floor(req.gamma + 1e-9))
        self.gam_x.value = float(gam_x)
        value = solve_problem(self.problem, self.solver, self.record)
        ga = np.round(self.a.value).astype(float)
        gb = np.round(self.b.value).astype(float)
        g = np.round(self.gp.value) - np.round(self.gm.value)
        xi = center + (unc.up - center) * ga + (unc.dn - center) * gb
        u = req.nominal + req.deviation * g
        return OracleResult(value + float(rec.constant(t, center).sum()), xi, u)


class EnumerationOracle:
    """Exact worst case by enumeration, using that the recourse is separable over periods.

    For every period the 3 x 3 choices ``xi_t in {c_t, up_t, dn_t}``, ``u_t in {nom, nom +- dev}``
    are evaluated by LP (one block-diagonal LP for all centers), then a dynamic program over
    the periods picks the best choices within the budgets (``Gamma_u`` deviations of ``u``;
    ``Gamma_xi`` of ``xi`` under RO). Exact for integer budgets.
    """

    def __init__(self, rec: FeederRecourse, unc: AreaUncertainty, req: BudgetSet,
                 name: str = "dso_subproblem_enumerate") -> None:
        self.rec, self.unc, self.req = rec, unc, req
        self.record = SolveRecord(name)

    def solve_all(self, x: np.ndarray, lam: float) -> list[OracleResult]:
        """Worst case of every center at ``(x, lambda)``."""
        rec, unc, req = self.rec, self.unc, self.req
        T = rec.n_periods
        t0 = time.perf_counter()
        # unique (t, xi, u) evaluations
        keys: dict[tuple[int, float, float], int] = {}
        plan = []
        us = np.stack([req.nominal, req.nominal + req.deviation, req.nominal - req.deviation])  # (3, T)
        for i in range(unc.n_centers):
            c = unc.centers[i]
            xis = np.stack([c, unc.up, unc.dn])                                                 # (3, T)
            idx = np.zeros((3, 3, T), dtype=int)
            for a in range(3):
                for m in range(3):
                    for t in range(T):
                        key = (t, round(float(xis[a, t]), _KEY_DECIMALS), round(float(us[m, t]), _KEY_DECIMALS))
                        idx[a, m, t] = keys.setdefault(key, len(keys))
            plan.append((xis, idx))
        kt = np.array([k[0] for k in keys])
        kxi = np.array([k[1] for k in keys])
        ku = np.array([k[2] for k in keys])
        vals = rec.solve_blocks(kt, x, ku, kxi)
        out = []
        gu = int(np.floor(req.gamma + 1e-9))
        for i, (xis, idx) in enumerate(plan):
            c = unc.centers[i]
            allow_a, allow_b, allow_u, gam_x = _choices(unc, req, c)
            tc = lam if unc.mode == "wasserstein" else 0.0
            phi = vals[idx] - tc * np.abs(xis - c[None, :])[:, None, :]          # (3, 3, T)
            ok = np.ones((3, 3, T), dtype=bool)
            ok[1] &= allow_a[None, :] > 0
            ok[2] &= allow_b[None, :] > 0
            ok[:, 1] &= allow_u[None, :] > 0
            ok[:, 2] &= allow_u[None, :] > 0
            choice = _budget_dp(np.where(ok, phi, -np.inf), gu, int(gam_x) if unc.mode == "budget" else T)
            a_idx, m_idx = choice
            xi = xis[a_idx, np.arange(T)]
            u = us[m_idx, np.arange(T)]
            value = float(phi[a_idx, m_idx, np.arange(T)].sum())
            out.append(OracleResult(value, xi, u))
        self.record.n_solves += 1
        self.record.time_s += time.perf_counter() - t0
        return out


def _budget_dp(phi: np.ndarray, gam_u: int, gam_x: int) -> tuple[np.ndarray, np.ndarray]:
    """Maximize ``sum_t phi[a_t, m_t, t]`` with ``#{m != 0} <= gam_u`` and ``#{a != 0} <= gam_x``.

    ``phi`` is (3, 3, T) with ``-inf`` for forbidden choices. Dynamic program over t with state
    (deviations of u used, of xi used), vectorized over the states. Returns (a, m), each (T,).
    """
    _, _, T = phi.shape
    gam_u, gam_x = min(gam_u, T), min(gam_x, T)
    gx = gam_x if gam_x < T else 0          # no xi budget: one xi state
    best = np.full((gam_u + 1, gx + 1), -np.inf)
    best[0, 0] = 0.0
    choice = np.zeros((T, gam_u + 1, gx + 1), dtype=np.int8)
    cand = np.empty((9, gam_u + 1, gx + 1))
    for t in range(T):
        cand.fill(-np.inf)
        for a in range(3):
            dx = int(a != 0 and gam_x < T)
            for m in range(3):
                du = int(m != 0)
                if du > gam_u or dx > gx or not np.isfinite(phi[a, m, t]):
                    continue
                cand[a * 3 + m, du:, dx:] = best[:gam_u + 1 - du, :gx + 1 - dx] + phi[a, m, t]
        choice[t] = np.argmax(cand, axis=0)
        best = cand.max(axis=0)
    ku, kx = np.unravel_index(int(np.argmax(best)), best.shape)
    a_sel, m_sel = np.zeros(T, dtype=int), np.zeros(T, dtype=int)
    for t in range(T - 1, -1, -1):
        a, m = divmod(int(choice[t, ku, kx]), 3)
        a_sel[t], m_sel[t] = a, m
        ku -= int(m != 0)
        kx -= int(a != 0 and gam_x < T)
    return a_sel, m_sel


# ============================================================================ the DSO model


@dataclass
class _Scenario:
    center: int
    xi: np.ndarray
    u: np.ndarray
    blocks: np.ndarray
    distance: float


@dataclass(frozen=True, eq=False)
class DSOPieces:
    """Variables, constraints and objective parts of one DSO master (for composition).

    Attributes:
        r_up, r_dn: (T, S) station regulation; Rup, Rdn: (T,) boundary reserves; Pd: (T,) head.
        lam: Wasserstein multiplier (None unless dro); s: (K,) epigraphs of the centers.
        first_cost: station regulation cost; risk: the worst-case expected recourse term.
        consensus: (3T,) expression ``(Pd, Rup, Rdn)`` shared with the TSO.
        constraints: everything.
        y: the recourse blocks' kept columns (n_kept, B).
    """

    r_up: cp.Variable
    r_dn: cp.Variable
    Rup: cp.Variable
    Rdn: cp.Variable
    Pd: cp.Variable
    lam: cp.Variable | None
    s: cp.Variable
    first_cost: cp.Expression
    risk: cp.Expression
    consensus: cp.Expression
    constraints: list[cp.Constraint]
    y: cp.Variable


class DSOModel:
    """The DSO of one feeder: first stage, recourse blocks, scenarios, oracles (see the module doc).

    First stage per period (MW): ``0 <= r_up <= Rup_max``, ``0 <= r_dn <= Rdn_max`` (declared by
    the stations), boundary reserves ``Rup <= sum r_up``, ``Rdn <= sum r_dn`` (0 unless the service
    is ``"both"``), head ``Pd`` = the baseline, and deliverability of the boundary reserves at the
    forecast (docs/math.md §6: feasible at ``P - Rup`` and ``P + Rdn``): stations deploy ``d <= r`` with
    ``sum d = R`` and some compensator setting keeps the LinDistFlow voltages on the harmful side
    within limits (relaxed to what the baseline can reach when the baseline itself violates).
    Cost: ``price_up sum r_up + price_dn sum r_dn`` (x dt), plus the constant worst-case cost of the
    TSO requirement when the stations do not serve the TSO (rigid boundary, every call violated).
    """

    def __init__(self, data: PlanningData, k: int) -> None:
        self.data, self.k = data, k
        self.fd = fd = data.feeders[k]
        self.settings = data.settings
        self.rec = build_feeder_recourse(fd, data.grid.tariff, data.dt_h)
        self.unc, self.req = fd.uncertainty, fd.requirement
        self.T, self.S = fd.n_periods, fd.n_station
        self._block_key: dict[tuple[int, float, float], int] = {}
        self.block_t: list[int] = []
        self.block_xi: list[float] = []
        self.block_u: list[float] = []
        self.scenarios: list[_Scenario] = []
        self._scenario_keys: set[tuple[int, bytes, bytes]] = set()
        for i in range(self.unc.n_centers):
            self.add_scenario(i, self.unc.centers[i].copy(), self.req.nominal.copy())
        self.milp: WorstCaseMILP | None = None
        self.enum: EnumerationOracle | None = None
        # voltage rows kept in the master (lazy row generation, see reduced)
        lo_gap = self.rec.h0[self.rec.rows["vlo"]].max(axis=1)     # vmin^2 - v0 (max over periods)
        hi_gap = self.rec.h0[self.rec.rows["vhi"]].max(axis=1)     # v0 - vmax^2
        self.mon_lo = set(np.flatnonzero(lo_gap > -_MONITOR_MARGIN_PU2).tolist())
        self.mon_hi = set(np.flatnonzero(hi_gap > -_MONITOR_MARGIN_PU2).tolist())

    # ------------------------------------------------------------------ scenarios
    def _block(self, t: int, xi: float, u: float) -> int:
        key = (t, round(float(xi), _KEY_DECIMALS), round(float(u), _KEY_DECIMALS))
        if key not in self._block_key:
            self._block_key[key] = len(self.block_t)
            self.block_t.append(t)
            self.block_xi.append(float(xi))
            self.block_u.append(float(u))
        return self._block_key[key]

    def add_scenario(self, center: int, xi: np.ndarray, u: np.ndarray) -> bool:
        """Add scenario (xi, u) for ``center``; False if it was already there."""
        key = (center, np.round(xi, _KEY_DECIMALS).tobytes(), np.round(u, _KEY_DECIMALS).tobytes())
        if key in self._scenario_keys:
            return False
        self._scenario_keys.add(key)
        blocks = np.array([self._block(t, xi[t], u[t]) for t in range(self.T)])
        dist = float(np.abs(xi - self.unc.centers[center]).sum()) if self.unc.mode == "wasserstein" else 0.0
        self.scenarios.append(_Scenario(center, xi.copy(), u.copy(), blocks, dist))
        return True

    @property
    def n_blocks(self) -> int:
        return len(self.block_t)

    # ------------------------------------------------------------------ the master pieces
    def reduced(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of the recourse kept in the master: all but the unmonitored voltage rows
        and their slack columns (a relaxation; violated rows are added by :meth:`add_violated_rows`)."""
        rec = self.rec
        vlo, vhi = rec.rows["vlo"], rec.rows["vhi"]
        lo, hi = sorted(self.mon_lo), sorted(self.mon_hi)
        rows = np.r_[np.arange(0, vlo.start), vlo.start + np.array(lo, dtype=int), vhi.start + np.array(hi, dtype=int)]
        sl, sh = rec.cols["sl"], rec.cols["sh"]
        cols = np.r_[np.arange(0, sl.start), sl.start + np.array(lo, dtype=int), sh.start + np.array(hi, dtype=int)]
        return rows.astype(int), cols.astype(int)

    def add_violated_rows(self, y: np.ndarray, x: np.ndarray) -> int:
        """Add the voltage rows (buses) that the master's recourse ``y`` ((n_kept_col, B)) violates."""
        rec = self.rec
        _, cols = self.reduced()
        B = y.shape[1]
        bt = np.array(self.block_t[:B])
        h = rec.rhs(bt, x, np.array(self.block_u[:B]), np.array(self.block_xi[:B]))
        act = rec.G[:, cols] @ y - h
        added = 0
        c_lo, c_hi = self._corner_violations() if self.settings.evcs_service == "both" else (set(), set())
        for name, mon, extra in (("vlo", self.mon_lo, c_lo), ("vhi", self.mon_hi, c_hi)):
            sl = rec.rows[name]
            bad = set(np.flatnonzero((act[sl] < -_VOLT_TOL_PU2).any(axis=1)).tolist()) | extra
            for j in sorted(bad):
                if j not in mon:
                    mon.add(j)
                    added += 1
        return added

    def build(self) -> DSOPieces:
        """Variables and constraints of the master with the current scenarios."""
        fd, rec, T, S = self.fd, self.rec, self.T, self.S
        dt = self.data.dt_h
        r_up = cp.Variable((T, S), nonneg=True, name=f"r_up_f{self.k}")
        r_dn = cp.Variable((T, S), nonneg=True, name=f"r_dn_f{self.k}")
        Rup = cp.Variable(T, nonneg=True, name=f"Rup_f{self.k}")
        Rdn = cp.Variable(T, nonneg=True, name=f"Rdn_f{self.k}")
        Pd = cp.Variable(T, name=f"Pd_f{self.k}")
        cons = [r_up <= fd.ev.r_up_max_mw, r_dn <= fd.ev.r_dn_max_mw, Pd == fd.head0_mw]
        if self.settings.evcs_service == "both":
            cons += [Rup <= cp.sum(r_up, axis=1), Rdn <= cp.sum(r_dn, axis=1)]
            cons += self._corners(r_up, r_dn, Rup, Rdn)
        else:
            cons += [Rup == 0, Rdn == 0]
        first = dt * (self.data.ev_price_up * cp.sum(r_up) + self.data.ev_price_dn * cp.sum(r_dn))
        first = first + fd.unserved_requirement_cost
        # recourse blocks
        B = self.n_blocks
        bt = np.array(self.block_t)
        sel = sp.csr_matrix((np.ones(B), (bt, np.arange(B))), shape=(T, B))
        X = cp.vstack([r_up.T, r_dn.T])                          # (2S, T)
        H0 = rec.rhs(bt, np.zeros((rec.n_x, T)), np.array(self.block_u), np.array(self.block_xi))
        rows, cols = self.reduced()
        Y = cp.Variable((len(cols), B), nonneg=True, name=f"y_f{self.k}")
        cons.append(rec.G[rows][:, cols] @ Y >= H0[rows] + rec.hx[rows] @ (X @ sel))
        block_cost = rec.c[cols] @ Y + rec.constant(bt, np.array(self.block_xi))
        nsc = len(self.scenarios)
        W = sp.csr_matrix((np.ones(nsc * T), (np.repeat(np.arange(nsc), T),
                                              np.concatenate([s.blocks for s in self.scenarios]))),
                          shape=(nsc, B))
        owner = np.array([s.center for s in self.scenarios])
        dist = np.array([s.distance for s in self.scenarios])
        K = self.unc.n_centers
        s_var = cp.Variable(K, name=f"s_f{self.k}")
        O = sp.csr_matrix((np.ones(nsc), (np.arange(nsc), owner)), shape=(nsc, K))
        lam = None
        if self.unc.mode == "wasserstein":
            lam = cp.Variable(nonneg=True, name=f"lambda_f{self.k}")
            cons.append(O @ s_var >= W @ block_cost - lam * dist)
            risk = lam * self.unc.radius + self.unc.weights @ s_var
        else:
            cons.append(O @ s_var >= W @ block_cost)
            risk = self.unc.weights @ s_var
        consensus = cp.hstack([Pd, Rup, Rdn])
        return DSOPieces(r_up, r_dn, Rup, Rdn, Pd, lam, s_var, first, risk, consensus, cons, Y)

    def _corners(self, r_up: cp.Variable, r_dn: cp.Variable, Rup: cp.Variable, Rdn: cp.Variable) -> list[cp.Constraint]:
        """Deliverability of the boundary reserves at the forecast (see the class docstring).

        Only the monitored voltage rows are imposed (up corner: upper limits of ``mon_hi``; down
        corner: lower limits of ``mon_lo``); :meth:`add_violated_rows` adds violated buses.
        """
        fd, T, S = self.fd, self.T, self.S
        net = fd.net
        if S == 0:
            return [Rup == 0, Rdn == 0]
        ns = np.delete(np.arange(net.n_bus), net.slack_bus)
        b = net.base_mva
        sp_st = (2.0 / b * fd.R_pu[np.ix_(ns, fd.station_bus)])          # (nb, S)
        sq_c = (2.0 / b * fd.X_pu[np.ix_(ns, fd.comp_bus)])              # (nb, nc)
        v0 = fd.v0_pu2[:, ns]                                            # (T, nb)
        upper = np.maximum(fd.vmax_pu2[ns][None, :], v0 + (sq_c @ fd.q_min_mvar)[None, :] + 1e-6)
        lower = np.minimum(fd.vmin_pu2[ns][None, :], v0 + (sq_c @ fd.q_max_mvar)[None, :] - 1e-6)
        self._corner_data = (sp_st, sq_c, v0, upper, lower)
        dU = cp.Variable((T, S), nonneg=True)
        dD = cp.Variable((T, S), nonneg=True)
        nc = len(fd.comp_bus)
        qU, qD = cp.Variable((T, nc)), cp.Variable((T, nc))
        self._corner_vars = (dU, dD, qU, qD)
        cons = [dU <= r_up, dD <= r_dn, cp.sum(dU, axis=1) == Rup, cp.sum(dD, axis=1) == Rdn,
                qU >= fd.q_min_mvar[None, :], qU <= fd.q_max_mvar[None, :],
                qD >= fd.q_min_mvar[None, :], qD <= fd.q_max_mvar[None, :]]
        hi, lo = np.array(sorted(self.mon_hi), dtype=int), np.array(sorted(self.mon_lo), dtype=int)
        if hi.size:
            cons.append(v0[:, hi] + dU @ sp_st[hi].T + qU @ sq_c[hi].T <= upper[:, hi])
        if lo.size:
            cons.append(v0[:, lo] - dD @ sp_st[lo].T + qD @ sq_c[lo].T >= lower[:, lo])
        return cons

    def _corner_violations(self) -> tuple[set[int], set[int]]:
        """Buses whose unmonitored corner voltage rows the last master solution violates."""
        if not hasattr(self, "_corner_vars") or self._corner_vars[0].value is None:
            return set(), set()
        sp_st, sq_c, v0, upper, lower = self._corner_data
        dU, dD, qU, qD = (v.value for v in self._corner_vars)
        vu = v0 + dU @ sp_st.T + qU @ sq_c.T
        vd = v0 - dD @ sp_st.T + qD @ sq_c.T
        bad_hi = set(np.flatnonzero((vu > upper + _VOLT_TOL_PU2).any(axis=0)).tolist())
        bad_lo = set(np.flatnonzero((vd < lower - _VOLT_TOL_PU2).any(axis=0)).tolist())
        return bad_lo, bad_hi

    @staticmethod
    def first_stage(p: DSOPieces) -> np.ndarray:
        """(n_x, T) recourse view ``(r_up; r_dn)`` of a solved master."""
        return np.vstack([p.r_up.value.T, p.r_dn.value.T])

    # ------------------------------------------------------------------ oracles
    def worst_cases(self, x: np.ndarray, lam: float) -> list[OracleResult]:
        """The subproblem of every center at ``(x, lambda)`` with the configured oracle."""
        if self.settings.subproblem == "enumerate":
            if self.enum is None:
                self.enum = EnumerationOracle(self.rec, self.unc, self.req, f"dso_subproblem_f{self.k}")
            return self.enum.solve_all(x, lam)
        if self.milp is None:
            self.milp = WorstCaseMILP(self.rec, self.unc, self.req, self.settings.solver, f"dso_subproblem_f{self.k}")
        return [self.milp.solve(x, lam, self.unc.centers[i]) for i in range(self.unc.n_centers)]

    def upper_bound(self, first_cost: float, lam: float, results: list[OracleResult]) -> float:
        """``c^T x + lambda eps + sum_i w_i phi_i`` (the DSO objective at x, an upper bound)."""
        risk = float(self.unc.weights @ np.array([r.value for r in results]))
        if self.unc.mode == "wasserstein":
            risk += lam * self.unc.radius
        return first_cost + risk

    def add_worst(self, results: list[OracleResult], s_values: np.ndarray, tol_abs: float) -> int:
        """Add the worst scenarios that the master under-estimates; returns how many were new."""
        added = 0
        for i, r in enumerate(results):
            if r.value > s_values[i] + tol_abs and self.add_scenario(i, r.xi, r.u):
                added += 1
        return added

    @property
    def records(self) -> list[SolveRecord]:
        return [o.record for o in (self.milp, self.enum) if o is not None]


# ============================================================================ the stand-alone DSO solver


@dataclass
class CCGTrace:
    """History of a C&CG run: bounds per iteration, scenarios and time."""

    lower: list[float] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)
    n_scenarios: list[int] = field(default_factory=list)
    time_s: float = 0.0

    @property
    def gap(self) -> float:
        if not self.upper:
            return float("inf")
        ub, lb = self.upper[-1], self.lower[-1]
        return (ub - lb) / max(abs(ub), 1e-9)

    @property
    def iterations(self) -> int:
        return len(self.lower)


class DSOSolver:
    """One DSO's problem solved by C&CG, with an optional ADMM proximal term (docs/math.md §6).

    The master is ``min c^T x + risk + prox(z_D)`` with ``z_D = (Pd, Rup, Rdn)``. The head ``Pd``
    is fixed (the stations' day-ahead schedule), so only the reserves carry the proximal term,
    modeled by :class:`~policies.planning.first_stage.ProxPWL` (an LP, exact at consensus).
    The problem is rebuilt only when C&CG adds recourse blocks or voltage rows, never for a new
    ADMM iterate (the proximal data are Parameters).
    """

    def __init__(self, data: PlanningData, k: int) -> None:
        self.model = DSOModel(data, k)
        self.settings = data.settings
        T = self.model.T
        self.prox = ProxPWL(2 * T, f"dso{k}")
        self.record = SolveRecord(f"dso_master_f{k}")
        self.solver = data.settings.solver
        self._built_key: tuple[int, ...] = ()
        self.pieces: DSOPieces | None = None
        self.problem: cp.Problem | None = None
        self.trace = CCGTrace()
        self.value_first = 0.0      # station regulation cost at the last x
        self.value_ub = float("nan")  # the DSO objective (no ADMM term) at the last x
        self.x = np.zeros((self.model.rec.n_x, T))
        self.lam = 0.0

    def _ensure_built(self) -> None:
        m = self.model
        key = (m.n_blocks, len(m.scenarios), len(m.mon_lo), len(m.mon_hi))
        if self.problem is not None and self._built_key == key:
            return
        p = m.build()
        tvar, pcons = self.prox.epigraph(cp.hstack([p.Rup, p.Rdn]))
        obj = p.first_cost + p.risk + cp.sum(tvar)
        self.pieces, self.problem = p, cp.Problem(cp.Minimize(obj), p.constraints + pcons)
        self._built_key = key

    def set_proximal(self, rho: float, target: np.ndarray) -> None:
        """ADMM term ``rho/2 ||z_D - target||^2`` (target = z - u, (3T,)); the ``Pd`` part is constant."""
        T = self.model.T
        self.prox.set(rho, np.asarray(target, dtype=float)[T:])

    def consensus_value(self) -> np.ndarray:
        p = self.pieces
        assert p is not None
        return np.concatenate([p.Pd.value, p.Rup.value, p.Rdn.value])

    def solve(self, max_iter: int | None = None, tol: float | None = None) -> CCGTrace:
        """Run C&CG (warm: the scenarios of earlier calls stay) until the gap is below ``tol``."""
        s = self.settings
        max_iter = s.ccg_max_iter if max_iter is None else max_iter
        tol = s.ccg_tol if tol is None else tol
        t0 = time.perf_counter()
        m = self.model
        for _ in range(max_iter):
            lb = self._solve_master()
            p = self.pieces
            assert p is not None
            x = DSOModel.first_stage(p)
            lam = float(p.lam.value) if p.lam is not None else 0.0
            first = float(p.first_cost.value)
            prox = lb - first - float(p.risk.value)
            results = m.worst_cases(x, lam)
            ub_dso = m.upper_bound(first, lam, results)
            ub = ub_dso + prox
            self.trace.lower.append(lb)
            self.trace.upper.append(ub)
            self.trace.n_scenarios.append(len(m.scenarios))
            self.x, self.lam, self.value_first, self.value_ub = x, lam, first, ub_dso
            if (ub - lb) / max(abs(ub), 1e-9) <= tol:
                break
            if m.add_worst(results, np.asarray(p.s.value), tol_abs=1e-6 * max(abs(ub), 1.0)) == 0:
                break
        self.trace.time_s += time.perf_counter() - t0
        return self.trace

    def _solve_master(self) -> float:
        """Solve the master, adding violated voltage rows until none is left (lazy rows)."""
        while True:
            self._ensure_built()
            assert self.problem is not None and self.pieces is not None
            lb = solve_problem(self.problem, self.solver, self.record)
            x = DSOModel.first_stage(self.pieces)
            if self.model.add_violated_rows(self.pieces.y.value, x) == 0:
                return lb

    @property
    def records(self) -> list[SolveRecord]:
        return [self.record] + self.model.records
