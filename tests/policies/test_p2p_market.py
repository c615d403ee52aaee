"""The P2P market models (policies.p2p, docs/p2p.md): the KKT reformulation against the bilevel
optimum found by enumeration on a tiny instance, complementarity, trade balances, binaries,
LMPs against finite differences, and the DSO-led optimum against the TSO-led schedule."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

from env.cases.feeders import load_tariff
from env.network import (BranchTable, BusTable, DERTable, GenTable, Grid, LoadTable, Network, StorageTable)
from policies.p2p.adn import adn_block
from policies.p2p.data import P2PDay, P2PSettings
from policies.p2p.market import evaluate, solve_dso_led, solve_tso_led
from policies.p2p.tso import DCOPF, TSOData, dc_opf


def _tiny_grid(n_feeders: int = 1) -> Grid:
    """3-bus transmission (gens at buses 0 and 1, congestible line 0-2) and 3-bus feeders at bus 2
    with PV at bus 1 and a 1 MW / 2 MWh battery at bus 2."""
    t = Network(
        name="tiny/t", kind="transmission", base_mva=100.0, base_kv=132.0, slack_bus=0,
        bus=BusTable(label=[1, 2, 3], vmin_pu=[0.9] * 3, vmax_pu=[1.1] * 3),
        branch=BranchTable(from_bus=[0, 1, 0], to_bus=[1, 2, 2], r_pu=[0.0] * 3, x_pu=[0.1, 0.1, 0.1],
                           rate_mva=[np.inf, np.inf, 6.0], tap=[1.0] * 3, shift_rad=[0.0] * 3),
        load=LoadTable(bus=[2], p_mw=[10.0], q_mvar=[0.0]),
        gen=GenTable(bus=[0, 1], p_min_mw=[0.0, 0.0], p_max_mw=[30.0, 30.0], ramp_mw_per_h=[30.0, 30.0],
                     cost_c1_per_mwh=[20.0, 30.0], cost_c2_per_mw2h=[2.0, 1.0], cost_reserve_per_mwh=[0.0, 0.0]),
    )
    feeder = Network(
        name="tiny/f", kind="feeder", base_mva=10.0, base_kv=12.66, slack_bus=0,
        bus=BusTable(label=[1, 2, 3], vmin_pu=[0.9] * 3, vmax_pu=[1.1] * 3),
        branch=BranchTable(from_bus=[0, 1], to_bus=[1, 2], r_pu=[0.01, 0.01], x_pu=[0.01, 0.01],
                           rate_mva=[np.inf] * 2, tap=[1.0] * 2, shift_rad=[0.0] * 2),
        load=LoadTable(bus=[1, 2], p_mw=[1.0, 1.0], q_mvar=[0.3, 0.3]),
        der=DERTable(name=["pv2"], bus=[1], kind=["pv"], p_max_mw=[1.0]),
        storage=StorageTable(bus=[2], e_max_mwh=[2.0], p_max_mw=[1.0], eta_charge=[0.95], eta_discharge=[0.95],
                             e_init_mwh=[1.0]),
    )
    return Grid(name="tiny", feeders=(feeder,) * n_feeders, transmission=t, boundary_bus=(2,) * n_feeders,
                tariff=load_tariff("tariff_tso.toml"))


# two periods: a light and a heavy transmission load, PV in the first (the battery's choice is
# when to hold its energy; the DSO anticipates its own effect on the LMP)
_T_LOAD = np.array([[6.0], [12.0]])
_SETTINGS = P2PSettings(period_minutes=60, time_limit_s=60.0, mip_gap=1e-6)


def _tiny_day(n: int = 1, pv: tuple[float, float] = (0.6, 0.0)) -> P2PDay:
    load = np.array([[0.8, 0.8], [1.0, 1.0]])
    return P2PDay(dt_h=1.0, load_p_mw=(load,) * n, load_q_mvar=(0.3 * load,) * n,
                  der_avail_mw=(np.array([[pv[0]], [pv[1]]]),) * n, e_init_mwh=(np.array([1.0]),) * n,
                  t_load_mw=_T_LOAD, t_wind_mw=np.zeros((2, 0)))


@pytest.fixture(scope="module")
def tiny_dso_led():
    grid = _tiny_grid()
    return grid, solve_dso_led(grid, _tiny_day(), _SETTINGS)


def _upper_cost_at(grid: Grid, day: P2PDay, discharge_1: float) -> float:
    """The upper level's cost when the battery discharges ``discharge_1`` MW in period 1 (charges
    if negative) and restores its energy in period 2, the TSO answering optimally (its DC-OPF)."""
    f = grid.feeders[0]
    eta = 0.95
    if discharge_1 >= 0:
        ch, dis = np.array([[0.0, discharge_1 / eta / eta]]), np.array([[discharge_1, 0.0]])
    else:
        ch, dis = np.array([[-discharge_1, 0.0]]), np.array([[0.0, -discharge_1 * eta * eta]])
    if np.max(ch) > 1.0 + 1e-9 or np.max(dis) > 1.0 + 1e-9:
        return np.inf
    a = adn_block(f, day.load_p_mw[0], day.load_q_mvar[0], day.der_avail_mw[0], day.e_init_mwh[0], grid.tariff,
                  _SETTINGS, integer=False, passive=False)
    cons = a.constraints + [a.ch_mw == ch, a.dis_mw == dis, a.der_mw == a.avail_mw]
    prob = cp.Problem(cp.Minimize(a.cost + 1e3 * cp.sum(a.h_mw)), cons)   # tight relaxation: least import
    prob.solve(solver="CLARABEL")
    assert prob.status == cp.OPTIMAL
    h = np.asarray(a.h_mw.value)
    g, s = np.maximum(h, 0), np.maximum(-h, 0)      # one direction per period (the binary)
    tso = TSOData.build(grid, day.t_load_mw, day.t_wind_mw, _SETTINGS)
    opf = dc_opf(tso, h[:, None], 1.0)
    own = float(a.cost.value) - _SETTINGS.tn_charge_per_mwh * float(np.sum(a.g_mw.value + a.s_mw.value))
    return own + _SETTINGS.tn_charge_per_mwh * float(np.sum(g + s)) + float(opf.lmp[:, 2] @ h)


def test_kkt_misocp_equals_bilevel_optimum_by_enumeration(tiny_dso_led) -> None:  # noqa: ANN001
    grid, res = tiny_dso_led
    day = _tiny_day()
    coarse = np.linspace(-1.0, 1.0, 41)
    costs = np.array([_upper_cost_at(grid, day, b) for b in coarse])
    best = coarse[int(np.argmin(costs))]
    fine = np.linspace(best - 0.05, best + 0.05, 26)
    fine_costs = np.array([_upper_cost_at(grid, day, b) for b in fine])
    enum_best = min(costs.min(), fine_costs.min())
    b_star = float(res.dis_mw[0][0, 0] - res.ch_mw[0][0, 0])
    # the MISOCP's objective is the bilevel value of its own schedule ...
    assert res.objective == pytest.approx(_upper_cost_at(grid, day, b_star), abs=1e-2)
    # ... and no enumerated schedule beats it, while it is within the grid's resolution of the best
    assert res.objective <= enum_best + 1e-2
    assert res.objective >= enum_best - 0.05
    assert abs(b_star - fine[int(np.argmin(fine_costs))]) <= 0.01
    assert abs(b_star) <= 1.0 + 1e-6


def test_complementarity_and_lower_level_is_the_tsos_optimum(tiny_dso_led) -> None:  # noqa: ANN001
    _, res = tiny_dso_led
    assert res.kkt["complementarity_max"] < 1e-5
    assert not res.kkt["dual_bound_active"]
    np.testing.assert_allclose(res.kkt["ll_p_mw"], res.opf.p_mw, atol=1e-4)
    np.testing.assert_allclose(res.kkt["ll_lmp"], res.opf.lmp, atol=1e-3)
    # strong duality: the linearized payment is sum_t pi h dt
    assert res.kkt["payment"] == pytest.approx(float(np.sum(res.opf.lmp[:, 2] * res.h_mw[0])), abs=1e-3)


def test_lmp_is_the_marginal_cost_of_load() -> None:
    grid = _tiny_grid()
    tso = TSOData.build(grid, _T_LOAD, np.zeros((2, 0)), _SETTINGS)
    h = np.array([[1.0], [2.0]])
    base = dc_opf(tso, h, 1.0)
    eps = 1e-3
    bumped = dc_opf(tso, h + eps, 1.0)
    np.testing.assert_allclose((bumped.cost - base.cost) / eps, base.lmp[:, 2].sum(), rtol=1e-3, atol=1e-2)
    assert base.lmp[1, 2] > base.lmp[1, 0] + 1.0     # the 6 MW line 0-2 congests in the heavy period


def test_dc_opf_is_built_once_dpp_and_resolves_identically() -> None:
    """The DC-OPF is one DPP problem per TSOData, re-solved with h as a Parameter: re-solving in any
    order gives what a freshly built problem gives, and cvxpy warns of nothing (no DPP warning)."""
    import warnings

    grid = _tiny_grid()
    tso = TSOData.build(grid, _T_LOAD, np.zeros((2, 0)), _SETTINGS)
    hs = [np.array([[1.0], [2.0]]), np.array([[-0.5], [0.3]]), np.array([[1.0], [2.0]])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runs = [dc_opf(tso, h, 1.0) for h in hs]
    assert tso.opf is tso.opf and tso.opf.problem.is_dpp()
    for h, r in zip(hs, runs):
        fresh = DCOPF(TSOData.build(grid, _T_LOAD, np.zeros((2, 0)), _SETTINGS)).solve(h, 1.0)
        np.testing.assert_allclose(r.p_mw, fresh.p_mw, atol=1e-7)
        np.testing.assert_allclose(r.lmp, fresh.lmp, atol=1e-6)
        assert r.cost == pytest.approx(fresh.cost, abs=1e-7)
    np.testing.assert_allclose(runs[0].lmp, runs[2].lmp, atol=1e-6)
    assert runs[0].cost != pytest.approx(runs[1].cost)      # h really changed the problem


@pytest.fixture(scope="module")
def two_adns():
    grid = _tiny_grid(2)
    day = P2PDay(dt_h=1.0, load_p_mw=(np.full((2, 2), 0.4), np.full((2, 2), 1.0)),
                 load_q_mvar=(np.full((2, 2), 0.1), np.full((2, 2), 0.3)),
                 der_avail_mw=(np.array([[1.0], [0.9]]), np.array([[0.0], [0.0]])),
                 e_init_mwh=(np.array([1.0]), np.array([1.0])), t_load_mw=_T_LOAD, t_wind_mw=np.zeros((2, 0)))
    return grid, day, solve_dso_led(grid, day, _SETTINGS), solve_tso_led(grid, day, _SETTINGS)


def test_trades_balance_and_binaries_hold(two_adns) -> None:  # noqa: ANN001
    grid, day, res, _ = two_adns
    y = res.y_mw
    assert y.sum() > 0.1                               # the surplus ADN sells to the deficit one
    assert np.all(np.minimum(y, np.swapaxes(y, 0, 1)) <= 1e-6)     # one direction per pair
    assert np.all(np.minimum(res.g_mw, res.s_mw) <= 1e-6)          # buy or sell at the boundary
    for ch, dis in zip(res.ch_mw, res.dis_mw):
        assert np.all(np.minimum(ch, dis) <= 1e-6)                 # no simultaneous charge/discharge
    np.testing.assert_allclose(res.h_mw, res.g_mw - res.s_mw + y.sum(axis=0) - y.sum(axis=1), atol=1e-6)
    # the network charge is accounted: what the DSOs pay on top of energy is c_T + c_N/2 per side
    s = _SETTINGS
    ev = evaluate(res, grid, s)
    charges = sum(d["charges"] for d in ev["dso_detail"])
    expected = s.tn_charge_per_mwh * (res.g_mw.sum() + res.s_mw.sum()) + s.p2p_network_charge_per_mwh * y.sum()
    assert charges == pytest.approx(expected, rel=1e-9)
    # P2P payments balance: each trade is paid by its buyer and received by its seller
    paid = sum(d["p2p_paid"] for d in ev["dso_detail"])
    received = sum(d["p2p_received"] for d in ev["dso_detail"])
    assert paid == pytest.approx(received, rel=1e-9)
    # intra-ADN pool: sellers' sales = local volume + exports; buyers' purchases + losses = local + imports
    assert np.all(res.x_in_mw >= -1e-6)


def test_dso_led_optimum_no_worse_than_the_tso_led_schedule(two_adns) -> None:  # noqa: ANN001
    grid, _, dso, tso = two_adns
    assert np.all(tso.y_mw == 0)
    ev = evaluate(tso, grid, _SETTINGS)
    # the TSO-led schedule is feasible for the DSO-led upper level and evaluated at the same LMPs
    assert dso.objective <= ev["dso_cost_total"] + 1e-3
    assert evaluate(dso, grid, _SETTINGS)["tn_imports_mwh"] <= ev["tn_imports_mwh"] + 1e-6
