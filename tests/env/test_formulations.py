"""DistFlow-SOC and LinDistFlow formulations against pandapower's AC power flow."""

from __future__ import annotations

import dataclasses

import cvxpy as cp
import numpy as np
import pandapower as pp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import env
from env.formulations import (
    DistFlowSOC,
    FeederVars,
    LinDistFlow,
    get_formulation,
    radial_topology,
    relaxation_gap,
)
from env.interop import base_injection, feeder_to_pandapower
from env.network import BranchTable, Network


@pytest.fixture(scope="module")
def d33() -> Network:
    return env.load_case("d33").feeders[0]


@pytest.fixture(scope="module")
def d69() -> Network:
    return env.load_case("d69").feeders[0]


def _injections(net: Network, scales: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """(n_bus, S) pu injections = -(base load) x scale per column."""
    p, q = base_injection(net)
    s = np.asarray(scales)[None, :]
    return -p[:, None] * s / net.base_mva, -q[:, None] * s / net.base_mva


def _solve_min_losses(net: Network, p_inj: np.ndarray, q_inj: np.ndarray, form: str = "soc") -> FeederVars:
    fv = get_formulation(form).build(net, p_inj.shape[1], p_inj, q_inj)
    objective = cp.sum(fv.losses) if form == "soc" else cp.Constant(0.0)
    problem = cp.Problem(cp.Minimize(objective), fv.constraints)
    problem.solve(solver="ECOS")
    assert problem.status == cp.OPTIMAL
    return fv


def _ac_voltages(net: Network, scale: float) -> tuple[np.ndarray, float]:
    p, q = base_injection(net)
    pnet = feeder_to_pandapower(net, p * scale, q * scale)
    pp.runpp(pnet, tolerance_mva=1e-11, numba=False)
    return pnet.res_bus.vm_pu.to_numpy(), float(pnet.res_line.pl_mw.sum())


def test_topology_orients_every_edge_away_from_the_slack(d33: Network) -> None:
    topo = radial_topology(d33)
    depth = np.full(d33.n_bus, -1)
    depth[topo.slack_bus] = 0
    for parent, child in zip(topo.parent_bus, topo.child_bus):  # BFS order: parent already seen
        assert depth[parent] >= 0
        depth[child] = depth[parent] + 1
    assert np.all(depth >= 0)
    assert sorted(topo.child_bus.tolist()) == sorted(set(range(d33.n_bus)) - {d33.slack_bus})


def test_reversed_branch_data_gives_the_same_solution(d33: Network) -> None:
    br = d33.branch
    flip = np.arange(len(br)) % 2 == 1
    flipped = dataclasses.replace(br, from_bus=np.where(flip, br.to_bus, br.from_bus),
                                  to_bus=np.where(flip, br.from_bus, br.to_bus))
    net2 = dataclasses.replace(d33, branch=BranchTable(**{f.name: getattr(flipped, f.name)
                                                          for f in dataclasses.fields(BranchTable)}))
    p, q = _injections(d33, [1.0])
    v1 = _solve_min_losses(d33, p, q).voltage_pu()
    v2 = _solve_min_losses(net2, p, q).voltage_pu()
    np.testing.assert_allclose(v1, v2, atol=1e-8)


def test_slack_inside_the_feeder_matches_ac(d33: Network) -> None:
    """Rooted at bus 6 (index 5) the data's from->to order is wrong for half the tree: still exact."""
    net = dataclasses.replace(d33, slack_bus=5)
    fv = _solve_min_losses(net, *_injections(net, [1.0]))
    assert relaxation_gap(fv).abs_pu < 1e-6
    v_ac, _ = _ac_voltages(net, 1.0)
    np.testing.assert_allclose(fv.voltage_pu()[:, 0], v_ac, atol=1e-4)


@pytest.mark.parametrize("case", ["d33", "d69"])
def test_soc_is_exact_and_matches_ac_power_flow(case: str, request: pytest.FixtureRequest) -> None:
    net = request.getfixturevalue(case)
    scales = [0.5, 1.0, 1.3]
    fv = _solve_min_losses(net, *_injections(net, scales))
    gap = relaxation_gap(fv)
    assert gap.abs_pu < 1e-6 and gap.rel < 1e-6
    v_socp = fv.voltage_pu()
    for s, scale in enumerate(scales):
        v_ac, loss_mw = _ac_voltages(net, scale)
        np.testing.assert_allclose(v_socp[:, s], v_ac, atol=1e-4)
        assert abs(fv.losses.value[s] * net.base_mva - loss_mw) < 1e-4


def test_scenario_columns_are_independent(d33: Network) -> None:
    p, q = _injections(d33, [0.8, 1.2])
    both = _solve_min_losses(d33, p, q).voltage_pu()
    alone = _solve_min_losses(d33, p[:, [1]], q[:, [1]]).voltage_pu()
    np.testing.assert_allclose(both[:, [1]], alone, atol=1e-7)


def test_head_power_balances_load_and_losses(d33: Network) -> None:
    p, q = _injections(d33, [1.0])
    fv = _solve_min_losses(d33, p, q)
    assert fv.p_head.value[0] == pytest.approx(-p.sum() + fv.losses.value[0], abs=1e-7)


def test_lindistflow_voltages_bound_soc_voltages_from_above(d33: Network) -> None:
    p, q = _injections(d33, [0.5, 1.0, 1.4])
    v_soc = _solve_min_losses(d33, p, q, "soc").voltage_pu()
    v_lin = _solve_min_losses(d33, p, q, "lin").voltage_pu()
    assert np.all(v_lin >= v_soc - 1e-9)
    assert np.max(v_lin - v_soc) > 1e-3  # the loss terms matter at these loads


def test_v_hat_is_the_lindistflow_voltage_and_bounds_soc(d33: Network) -> None:
    """``v_hat = V0^2 + 2 (R p + X q)`` (closed form) equals LinDistFlow's v and is >= the SOC v."""
    p, q = _injections(d33, [0.4, 1.2])
    p[17, 0] += 0.15  # some reverse flow in the first column
    soc = _solve_min_losses(d33, p, q, "soc")
    lin = _solve_min_losses(d33, p, q, "lin")
    np.testing.assert_allclose(soc.v_hat.value, lin.v.value, atol=1e-8)
    assert np.all(soc.v_hat.value >= soc.v.value - 1e-9)
    topo = radial_topology(d33)
    np.testing.assert_allclose(-(topo.subtree @ p), lin.P.value, atol=1e-8)  # lossless flows


def test_lindistflow_loss_estimate_is_close_to_true_losses(d33: Network) -> None:
    p, q = _injections(d33, [1.0])
    fv = LinDistFlow().build(d33, 1, p, q)
    problem = cp.Problem(cp.Minimize(0), fv.constraints)
    problem.solve(solver="ECOS")
    _, loss_mw = _ac_voltages(d33, 1.0)
    assert fv.losses.value[0] * d33.base_mva == pytest.approx(loss_mw, rel=0.15)


def test_relaxation_gap_detects_an_inexact_solution(d33: Network) -> None:
    """Rewarding low voltages makes fake losses attractive: the gap must show it."""
    p, q = _injections(d33, [1.0])
    fv = DistFlowSOC().build(d33, 1, p, q)
    problem = cp.Problem(cp.Minimize(cp.sum(fv.v)), fv.constraints + [fv.v >= 0.8**2])
    problem.solve(solver="ECOS")
    assert problem.status == cp.OPTIMAL
    assert relaxation_gap(fv).abs_pu > 1e-3


def test_relaxation_gap_refuses_lindistflow(d33: Network) -> None:
    p, q = _injections(d33, [1.0])
    fv = _solve_min_losses(d33, p, q, "lin")
    with pytest.raises(ValueError, match="LinDistFlow"):
        relaxation_gap(fv)


def test_bad_injection_shape_is_named(d33: Network) -> None:
    p, q = _injections(d33, [1.0, 1.0])
    with pytest.raises(ValueError, match="q_inj"):
        DistFlowSOC().build(d33, 2, p, q[:, :1])
    with pytest.raises(ValueError, match="n_scenarios"):
        LinDistFlow().build(d33, 0, p, q)
    with pytest.raises(ValueError, match="unknown formulation"):
        get_formulation("acp")


@dataclasses.dataclass(frozen=True)
class _Pair:
    """SOC and Lin problems of d33 with 3 scenario columns, sharing injection Parameters."""

    p: cp.Parameter
    q: cp.Parameter
    soc: FeederVars
    lin: FeederVars
    problem_soc: cp.Problem
    problem_lin: cp.Problem


@pytest.fixture(scope="module")
def pair(d33: Network) -> _Pair:
    p = cp.Parameter((d33.n_bus, 3))
    q = cp.Parameter((d33.n_bus, 3))
    soc, lin = DistFlowSOC().build(d33, 3, p, q), LinDistFlow().build(d33, 3, p, q)
    return _Pair(p, q, soc, lin, cp.Problem(cp.Minimize(cp.sum(soc.losses)), soc.constraints),
                 cp.Problem(cp.Minimize(0), lin.constraints))


@settings(max_examples=15, deadline=None)
@given(scales=st.lists(st.floats(0.0, 1.5), min_size=3, max_size=3), pv_mw=st.floats(0.0, 1.0))
def test_random_loads_soc_exact_and_below_lin(pair: _Pair, d33: Network, scales: list[float], pv_mw: float) -> None:
    """Random load levels plus PV at bus 18: SOC stays exact under loss minimization, Lin >= SOC."""
    p, q = _injections(d33, scales)
    p[17] += pv_mw / d33.base_mva
    pair.p.value, pair.q.value = p, q
    pair.problem_soc.solve(solver="ECOS")
    pair.problem_lin.solve(solver="ECOS")
    assert pair.problem_soc.status == pair.problem_lin.status == cp.OPTIMAL
    assert pair.problem_soc.is_dcp(dpp=True)
    assert relaxation_gap(pair.soc).abs_pu < 1e-6
    assert np.all(pair.lin.voltage_pu() >= pair.soc.voltage_pu() - 1e-7)
