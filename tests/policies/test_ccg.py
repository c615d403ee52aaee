"""C&CG and the DRO/ARO reformulations of the day-ahead plan, checked by brute force (small instances)."""

from __future__ import annotations

import dataclasses
import itertools

import cvxpy as cp
import numpy as np
import pytest
from scipy.optimize import linprog

import env
from env.formulations.dc import incidence
from env.formulations.distflow import LinDistFlow
from env.physics.grid_flow import per_bus
from policies.planning.ccg import DSOModel, DSOSolver, EnumerationOracle, WorstCaseMILP, build_feeder_recourse
from policies.planning.first_stage import (
    FirstStagePlan,
    PlanningSettings,
    TSOModel,
    build_planning_data,
    restrict_periods,
)
from scenarios import BudgetSet, sample_day

SOLVER = "HIGHS"


@pytest.fixture(scope="module")
def grid() -> env.Grid:
    return env.load_case("t30d2")


@pytest.fixture(scope="module")
def day_ahead(grid: env.Grid):
    return sample_day(grid, "cloudy", 1).day_ahead


def small(grid, day_ahead, periods=slice(16, 20), gamma=2.0, **settings):
    """A few evening periods of t30d2 (EV flexibility and a nonzero nominal requirement)."""
    s = PlanningSettings(**{"n_samples": 2, "ccg_tol": 1e-7, **settings})
    data = restrict_periods(build_planning_data(grid, day_ahead, s), periods)
    f0 = data.feeders[0]
    req = BudgetSet(f0.requirement.nominal, f0.requirement.deviation, min(gamma, data.n_periods))
    return dataclasses.replace(data, feeders=(dataclasses.replace(f0, requirement=req),) + data.feeders[1:])


def block_value(rec, t, x, u, xi) -> float:
    return float(rec.solve_blocks(np.array([t]), x, np.array([u]), np.array([xi]))[0])


# ----------------------------------------------------------------------------- recourse model


def test_recourse_matrix_form_matches_lindistflow_builder(grid, day_ahead) -> None:
    """The period recourse LP in matrix form (dense LinDistFlow sensitivities around the AC baseline)
    equals the same recourse written with the LinDistFlow branch-flow builder."""
    data = build_planning_data(grid, day_ahead, PlanningSettings(n_samples=2))
    fd = data.feeders[0]
    rec = build_feeder_recourse(fd, grid.tariff, data.dt_h)
    net, tar = fd.net, grid.tariff
    rng = np.random.default_rng(3)
    for t, u, xi in [(18, 0.35, -0.6), (3, -0.2, 0.8), (13, 0.0, 0.0)]:
        x = np.vstack([fd.ev.r_up_max_mw.T, fd.ev.r_dn_max_mw.T]) * rng.uniform(0.3, 1.0, (2 * fd.n_station, 1))
        got = block_value(rec, t, x, u, xi)
        # the same LP from the branch-flow builder
        S, nd = fd.n_station, len(fd.der_bus)
        du, dd, w = cp.Variable(S, nonneg=True), cp.Variable(S, nonneg=True), cp.Variable(nd, nonneg=True)
        shed, vp, vm = cp.Variable(nonneg=True), cp.Variable(nonneg=True), cp.Variable(nonneg=True)
        qc = cp.Variable(len(fd.comp_bus))
        sl, sh = cp.Variable(net.n_bus, nonneg=True), cp.Variable(net.n_bus, nonneg=True)
        L = fd.load_mw[t]
        fc = fd.der_fc_mw[t]
        p0 = -fd.load_frac_p * L - per_bus(net, fd.station_bus, fd.ev.p0_mw[t]) + per_bus(net, fd.der_bus, fc)
        q0 = -fd.load_frac_q * L
        A_st = incidence(net.n_bus, fd.station_bus)
        A_w = incidence(net.n_bus, fd.der_bus)
        A_c = incidence(net.n_bus, fd.comp_bus)
        p = p0 + A_st @ (du - dd) + A_w @ (w - fc) + fd.load_frac_p * shed
        q = q0 + fd.load_frac_q * shed + A_c @ qc
        b = net.base_mva
        fv = LinDistFlow().build(net, 1, cp.reshape(p / b, (net.n_bus, 1), order="F"),
                                 cp.reshape(q / b, (net.n_bus, 1), order="F"))
        base = LinDistFlow().build(net, 1, (p0 / b)[:, None], (q0 / b)[:, None])
        cp.Problem(cp.Minimize(0), base.constraints).solve(solver=SOLVER)
        offset = fd.v0_pu2[t] - base.v.value[:, 0]           # AC baseline minus LinDistFlow baseline
        v = fv.v[:, 0] + offset
        ns = np.delete(np.arange(net.n_bus), net.slack_bus)
        cons = fv.constraints + [
            du <= x[:S, t], dd <= x[S:, t], w <= fc + fd.der_share[t] * xi, shed <= L,
            qc >= fd.q_min_mvar, qc <= fd.q_max_mvar,
            (fv.p_head[0] - base.p_head.value[0]) * b == -u + vp - vm,
            v[ns] + sl[ns] >= fd.vmin_pu2[ns], v[ns] - sh[ns] <= fd.vmax_pu2[ns]]
        cost = (tar.penalty_curtailment_per_mwh * (cp.sum(fc) + xi - cp.sum(w)) + tar.wind_cost_per_mwh * cp.sum(w)
                + tar.penalty_load_shed_per_mwh * shed + tar.penalty_boundary_per_mwh * (vp + vm)
                + tar.penalty_voltage_per_puh / 2 * cp.sum(sl[ns] + sh[ns]))
        prob = cp.Problem(cp.Minimize(cost), cons)
        prob.solve(solver=SOLVER)
        assert prob.status == cp.OPTIMAL
        assert got == pytest.approx(prob.value, rel=1e-6, abs=1e-6)


# ----------------------------------------------------------------------------- C&CG vs brute force


def brute_force_aro(data, k: int = 0) -> float:
    """``min_x c^T x + sum_i w_i max_{u in vert U} sum_t Q_t(x_t, u_t, xi_it)``: all budget-set
    vertices enumerated (BudgetSet.vertices), one recourse copy per (sample, vertex, period)."""
    fd = data.feeders[k]
    rec = build_feeder_recourse(fd, data.grid.tariff, data.dt_h)
    T, S = data.n_periods, fd.n_station
    verts = fd.requirement.vertices()                            # (V, T)
    unc = fd.uncertainty
    r_up, r_dn = cp.Variable((T, S), nonneg=True), cp.Variable((T, S), nonneg=True)
    X = cp.vstack([r_up.T, r_dn.T])
    eta = cp.Variable(unc.n_centers)
    cons = [r_up <= fd.ev.r_up_max_mw, r_dn <= fd.ev.r_dn_max_mw]
    t_idx, u_b, xi_b, owner, vid = [], [], [], [], []
    for i in range(unc.n_centers):
        for v in range(len(verts)):
            for t in range(T):
                t_idx.append(t), u_b.append(verts[v, t]), xi_b.append(unc.centers[i, t]), owner.append(i), vid.append(v)
    t_idx, u_b, xi_b = np.array(t_idx), np.array(u_b), np.array(xi_b)
    B = len(t_idx)
    Y = cp.Variable((rec.n_col, B), nonneg=True)
    sel = np.zeros((T, B))
    sel[t_idx, np.arange(B)] = 1.0
    H0 = rec.rhs(t_idx, np.zeros((rec.n_x, T)), u_b, xi_b)
    cons.append(rec.G @ Y >= H0 + rec.hx @ (X @ sel))
    cost = rec.c @ Y + rec.constant(t_idx, xi_b)
    groups = np.array(owner) * len(verts) + np.array(vid)
    M = np.zeros((unc.n_centers * len(verts), B))
    M[groups, np.arange(B)] = 1.0
    cons.append(np.kron(np.eye(unc.n_centers), np.ones((len(verts), 1))) @ eta >= M @ cost)
    obj = data.dt_h * (data.ev_price_up * cp.sum(r_up) + data.ev_price_dn * cp.sum(r_dn)) + unc.weights @ eta
    prob = cp.Problem(cp.Minimize(obj), cons)
    prob.solve(solver=SOLVER)
    assert prob.status == cp.OPTIMAL
    return float(prob.value)


@pytest.mark.parametrize("oracle", ["enumerate", "milp"])
def test_ccg_reaches_the_robust_optimum_of_vertex_enumeration(grid, day_ahead, oracle: str) -> None:
    data = small(grid, day_ahead, uncertainty="so", subproblem=oracle)
    assert data.feeders[0].requirement.gamma == 2.0
    solver = DSOSolver(data, 0)
    trace = solver.solve()
    exact = brute_force_aro(data)
    assert trace.gap <= 1e-6
    assert trace.iterations >= 2                                # the nominal scenario alone is not enough
    assert solver.value_ub == pytest.approx(exact, rel=1e-6)
    assert trace.lower[-1] <= exact * (1 + 1e-7)


def test_milp_and_enumeration_oracles_agree_on_dro_aro(grid, day_ahead) -> None:
    """The dual MILP with McCormick (xi and u binaries) equals exact enumeration of the choices."""
    data = small(grid, day_ahead, periods=slice(17, 20), uncertainty="dro")
    m = DSOModel(data, 0)
    fd = data.feeders[0]
    x = np.vstack([fd.ev.r_up_max_mw.T, fd.ev.r_dn_max_mw.T]) * 0.5
    milp = WorstCaseMILP(m.rec, m.unc, m.req)
    enum = EnumerationOracle(m.rec, m.unc, m.req).solve_all(x, 150.0)
    for i in range(m.unc.n_centers):
        r = milp.solve(x, 150.0, m.unc.centers[i])
        assert r.value == pytest.approx(enum[i].value, rel=1e-6, abs=1e-6)
        # the reported scenario attains the value
        q = m.rec.solve_blocks(np.arange(data.n_periods), x, r.u, r.xi)
        assert q.sum() - 150.0 * np.abs(r.xi - m.unc.centers[i]).sum() == pytest.approx(r.value, rel=1e-6, abs=1e-6)
        assert fd.requirement.contains(r.u)


# ----------------------------------------------------------------------------- Wasserstein


def transport_worst_case(samples: np.ndarray, support: np.ndarray, loss: np.ndarray, eps: float) -> float:
    """``max sum_j p_j L_j`` over distributions on ``support`` within W1 (1-norm) ``eps`` of the
    empirical distribution: the transport LP ``pi_ij >= 0, sum_j pi_ij = 1/N, sum pi_ij d_ij <= eps``."""
    n, m = len(samples), len(support)
    d = np.abs(samples[:, None, :] - support[None, :, :]).sum(axis=2)
    a_eq = np.kron(np.eye(n), np.ones((1, m)))
    res = linprog(-np.tile(loss, n), A_ub=d.reshape(1, -1), b_ub=[eps], A_eq=a_eq, b_eq=np.full(n, 1.0 / n),
                  bounds=(0, None), method="highs")
    assert res.status == 0
    return -float(res.fun)


def tso_period_recourse(data, x: dict, t: int, xi: float) -> float:
    """The TSO's recourse of one period written independently (scipy LP): deploy thermal reserves,
    boundary reserves, use wind, shed load to balance the wind error ``xi``."""
    tar, tso = data.grid.tariff, data.tso
    c1 = tso.net.gen.cost_c1_per_mwh
    ng, nb = len(c1), data.n_feeder
    fc, load, W = tso.wind_fc_mw[t].sum(), tso.load_bus_mw[t].sum(), x["W"][t].sum()
    # variables: a (ng), b (ng), y (nb), w, sh
    c = np.concatenate([c1, -c1, np.zeros(nb), [tar.wind_cost_per_mwh - tar.penalty_curtailment_per_mwh],
                        [tar.penalty_load_shed_per_mwh]]) * data.dt_h
    a_eq = np.concatenate([np.ones(ng), -np.ones(ng), np.ones(nb), [1.0, 1.0]])[None, :]
    bounds = ([(0, r) for r in x["Ru"][t]] + [(0, r) for r in x["Rd"][t]]
              + [(-lo, hi) for lo, hi in zip(x["Rdn"][t], x["Rup"][t])] + [(0, fc + xi), (0, load)])
    res = linprog(c, A_eq=a_eq, b_eq=[W], bounds=bounds, method="highs")
    assert res.status == 0
    const = (tar.penalty_curtailment_per_mwh * (fc + xi) - tar.wind_cost_per_mwh * W) * data.dt_h
    return float(res.fun + const)


def test_tso_wasserstein_reformulation_equals_transport_lp_brute_force(grid, day_ahead) -> None:
    """At a fixed first stage, the TSO's DRO term (three candidates per period, lambda dual) equals the
    worst case over distributions on a fine support grid (product over 2 periods) by the transport LP."""
    data = restrict_periods(build_planning_data(grid, day_ahead, PlanningSettings(n_samples=3, radius_tso_mw=5.0)),
                            slice(17, 19))
    p = TSOModel(data).build()
    prob = cp.Problem(cp.Minimize(p.cost), p.constraints)
    prob.solve(solver=SOLVER)
    x = {"Ru": p.thermal.r_up_mw.value, "Rd": p.thermal.r_dn_mw.value, "W": p.wind.value,
         "Rup": np.maximum(p.Rup.value, 0), "Rdn": np.maximum(p.Rdn.value, 0)}
    # scale the reserves down so that the worst case bites, then fix the first stage
    x["Ru"], x["Rd"] = 0.3 * x["Ru"], 0.3 * x["Rd"]
    x["Rup"], x["Rdn"] = np.full_like(x["Rup"], 0.5), np.full_like(x["Rdn"], 0.5)
    fixed = p.constraints + [p.thermal.r_up_mw == x["Ru"], p.thermal.r_dn_mw == x["Rd"], p.wind == x["W"],
                             p.Rup == x["Rup"], p.Rdn == x["Rdn"]]
    prob = cp.Problem(cp.Minimize(p.risk), fixed)
    prob.solve(solver=SOLVER)
    unc = data.tso.uncertainty
    grids = [np.unique(np.r_[np.linspace(unc.dn[t], unc.up[t], 9), unc.centers[:, t]]) for t in range(2)]
    support = np.array(list(itertools.product(*grids)))
    q = [{v: tso_period_recourse(data, x, t, v) for v in grids[t]} for t in range(2)]
    loss = np.array([q[0][a] + q[1][b] for a, b in support])
    brute = transport_worst_case(unc.centers, support, loss, unc.radius)
    assert prob.value == pytest.approx(brute, rel=1e-6)
    # and the ball matters: larger than the sample average
    saa = np.mean([q[0][a] + q[1][b] for a, b in unc.centers])
    assert brute > saa + 1.0


def test_dso_nested_worst_case_equals_transport_lp_brute_force(grid, day_ahead) -> None:
    """DRO + ARO at a fixed first stage (no station regulation): C&CG's value equals the transport LP
    over a support grid with the loss ``max_{u in vert U} sum_t Q_t(xi_t, u_t)``."""
    data = small(grid, day_ahead, periods=slice(17, 19), gamma=1.0, n_samples=3, radius_dso_mw=0.3)
    f0 = data.feeders[0]
    ev = dataclasses.replace(f0.ev, r_up_max_mw=np.zeros_like(f0.ev.r_up_max_mw),
                             r_dn_max_mw=np.zeros_like(f0.ev.r_dn_max_mw))
    data = dataclasses.replace(data, feeders=(dataclasses.replace(f0, ev=ev),) + data.feeders[1:])
    assert np.all(f0.requirement.deviation > 0) and f0.requirement.gamma == 1.0
    solver = DSOSolver(data, 0)
    solver.solve()
    m = solver.model
    unc, req = m.unc, m.req
    x = np.zeros((m.rec.n_x, 2))
    grids = [np.unique(np.r_[np.linspace(unc.dn[t], unc.up[t], 7), unc.centers[:, t]]) for t in range(2)]
    support = np.array(list(itertools.product(*grids)))
    verts = req.vertices()
    q = {}
    for t in range(2):
        for v in grids[t]:
            for u in np.unique(verts[:, t]):
                q[t, v, u] = block_value(m.rec, t, x, u, v)
    loss = np.array([max(q[0, a, u0] + q[1, b, u1] for u0, u1 in verts) for a, b in support])
    brute = transport_worst_case(unc.centers, support, loss, unc.radius)
    assert solver.value_ub == pytest.approx(brute, rel=1e-5)
    # both uncertainties matter: more than the nominal-requirement DRO and than the SAA with ARO
    nominal_only = transport_worst_case(unc.centers, support, np.array(
        [q[0, a, req.nominal[0]] + q[1, b, req.nominal[1]] for a, b in support]), unc.radius)
    saa_aro = np.mean([max(q[0, a, u0] + q[1, b, u1] for u0, u1 in verts) for a, b in unc.centers])
    assert brute > nominal_only + 1.0 and brute > saa_aro + 1.0
    assert solver.trace.gap <= 1e-6


def test_radius_zero_gives_the_sample_average(grid, day_ahead) -> None:
    """Wasserstein DRO with radius 0 (kept as a DRO model: lambda free) = the SO (sample average) plan,
    for the TSO problem and for a DSO's C&CG."""
    base = build_planning_data(grid, day_ahead, PlanningSettings(n_samples=3, radius_tso_mw=0.0, radius_dso_mw=0.0))
    assert base.tso.uncertainty.mode == "wasserstein" and base.tso.uncertainty.radius == 0.0
    so = build_planning_data(grid, day_ahead, PlanningSettings(n_samples=3, uncertainty="so"))
    values = []
    for data in (base, so):
        p = TSOModel(data).build()
        prob = cp.Problem(cp.Minimize(p.cost), p.constraints)
        prob.solve(solver=SOLVER)
        values.append(prob.value)
    assert values[0] == pytest.approx(values[1], rel=1e-7)
    dso = []
    for data in (base, so):
        d = restrict_periods(data, slice(15, 21))
        s = DSOSolver(d, 0)
        s.solve(tol=1e-7)
        dso.append(s.value_ub)
    assert dso[0] == pytest.approx(dso[1], rel=1e-6)
    # a positive radius costs more
    pos = restrict_periods(build_planning_data(grid, day_ahead, PlanningSettings(n_samples=3)), slice(15, 21))
    s = DSOSolver(pos, 0)
    s.solve(tol=1e-7)
    assert s.value_ub > dso[1] * (1 + 1e-4)


# ----------------------------------------------------------------------------- settings and plan


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        PlanningSettings.from_kwargs(radius=3.0)
    with pytest.raises(ValueError, match="uncertainty"):
        PlanningSettings(uncertainty="bayes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ccg_tol"):
        PlanningSettings(ccg_tol=0.0)
    assert PlanningSettings().rho_for(2) == 15.0 and PlanningSettings().rho_for(10) == 20.0


def test_plan_maps_onto_env_dispatch(grid, day_ahead) -> None:
    from env.dispatch import DispatchSizes

    sizes = DispatchSizes.from_grid(grid)
    T, ng, ns, nf = 24, sizes.n_gen, sizes.n_evcs, len(grid.feeders)
    rng = np.random.default_rng(0)
    arr = lambda n: rng.uniform(0, 1, (T, n))  # noqa: E731
    plan = FirstStagePlan("t30d2", "test", 60, arr(ng), arr(ng), arr(ng), arr(3), arr(nf), arr(nf), arr(nf),
                          arr(ns), arr(ns), arr(ns), arr(ns), arr(ns), {"total": 1.0}, {})
    d = plan.to_dispatch(37, 15, sizes=sizes)                    # step 37 of 15 min = hour 9
    assert plan.period_of(37, 15) == 9
    np.testing.assert_allclose(d.thermal_r_up_mw, plan.thermal_r_up_mw[9])
    np.testing.assert_allclose(d.ev_r_dn_mw, plan.ev_r_dn_mw[9])
    np.testing.assert_allclose(d.ev_p_mw, plan.ev_p_mw[9])
    assert d.der_curtail_frac.shape == (sizes.n_der,)
    base = d.replace(ev_p_mw=np.zeros(ns))
    d2 = plan.to_dispatch(95, 15, base=base)
    np.testing.assert_allclose(d2.thermal_p_mw, plan.thermal_p_mw[23])
    assert np.all(d2.ev_p_mw == 0)
    with pytest.raises(ValueError, match="outside the day"):
        plan.period_of(96, 15)
