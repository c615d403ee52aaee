"""PTDF DC power flow and pandapower transmission arrays against pandapower's rundcpp."""

from __future__ import annotations

import copy
import functools
import warnings

import numpy as np
import pytest

from env.cases.transmission import TransmissionArrays, transmission_arrays
from env.physics.dc import DCModel

pp = pytest.importorskip("pandapower")
pn = pytest.importorskip("pandapower.networks")

CASES = {"case30": (30, 41), "case118": (118, 186)}


@functools.lru_cache(maxsize=None)
def _pristine(name: str):  # noqa: ANN202 - pandapower net
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(pn, name)()


def _net(name: str):  # noqa: ANN202 - pandapower net
    """A fresh copy of a bundled case (loading one from pandapower takes ~1 s)."""
    return copy.deepcopy(_pristine(name))


def _model(arr: TransmissionArrays) -> DCModel:
    return DCModel.build(arr.from_bus, arr.to_bus, arr.x_pu, arr.tap, arr.shift_rad,
                         n_bus=arr.bus_label.size, slack_bus=arr.slack_bus)


def _rundcpp_flows_mw(net, arr: TransmissionArrays) -> np.ndarray:  # noqa: ANN001
    """pandapower DC flows at each branch's from end, in our branch order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.rundcpp(net, calculate_voltage_angles=True)
    line = net.res_line.p_from_mw.reindex(arr.element_index).to_numpy()
    trafo = net.res_trafo.p_hv_mw.reindex(arr.element_index).to_numpy() if len(net.trafo) else line
    return np.where(arr.element == "line", line, trafo)


def _injections_from_tables_pu(net, base_mva: float) -> np.ndarray:  # noqa: ANN001
    """Generation - load per bus from the element tables (setpoints; slack entry arbitrary), p.u."""
    p = np.zeros(len(net.bus))
    for table, sign in (("gen", 1.0), ("sgen", 1.0), ("load", -1.0)):
        t = net[table][net[table].in_service]
        np.add.at(p, t.bus.to_numpy(), sign * (t.p_mw * t.scaling).to_numpy())
    sh = net.shunt[net.shunt.in_service]
    np.add.at(p, sh.bus.to_numpy(), -(sh.p_mw * sh.step).to_numpy())
    return p / base_mva


@pytest.mark.parametrize("name", list(CASES))
def test_transmission_arrays_shape_and_labels(name: str) -> None:
    net = _net(name)
    arr = transmission_arrays(net)
    n_bus, n_branch = CASES[name]
    assert arr.bus_label.tolist() == list(range(1, n_bus + 1))
    assert arr.from_bus.shape == (n_branch,) and arr.base_mva == 100.0
    assert set(arr.element.tolist()) <= {"line", "trafo"}
    assert np.all(arr.x_pu > 0) and np.all(arr.tap > 0)
    assert net.line.equals(_net(name).line)  # the input net is not modified


def test_transmission_arrays_known_values() -> None:
    a30 = transmission_arrays(_net("case30"))
    assert a30.bus_label[a30.slack_bus] == 1
    # MATPOWER case30 branch 1-2: r = 0.02, x = 0.06, rateA = 130 MVA
    assert (a30.from_bus[0], a30.to_bus[0]) == (0, 1)
    assert a30.r_pu[0] == pytest.approx(0.02) and a30.x_pu[0] == pytest.approx(0.06)
    assert a30.rate_mva[0] == pytest.approx(130.0)
    assert np.all(np.isfinite(a30.rate_mva))
    a118 = transmission_arrays(_net("case118"))
    assert a118.bus_label[a118.slack_bus] == 69
    assert np.all(np.isinf(a118.rate_mva))  # 9900 MVA placeholder = no limit
    trafo = a118.element == "trafo"
    assert trafo.sum() == 13 and np.any(a118.tap[trafo] != 1.0)
    assert np.all(a118.tap[~trafo] == 1.0)


def test_out_of_service_branches_are_dropped() -> None:
    net = _net("case118")
    net.line.loc[3, "in_service"] = False
    net.trafo.loc[0, "in_service"] = False
    arr = transmission_arrays(net)
    assert arr.from_bus.size == 186 - 2
    assert 3 not in arr.element_index[arr.element == "line"]
    assert 0 not in arr.element_index[arr.element == "trafo"]
    flows = _model(arr).flows_pu(_injections_from_tables_pu(net, arr.base_mva)) * arr.base_mva
    assert np.abs(flows - _rundcpp_flows_mw(net, arr)).max() < 1e-6


@pytest.mark.parametrize("name", list(CASES))
def test_flows_match_rundcpp(name: str) -> None:
    net = _net(name)
    arr = transmission_arrays(net)
    model = _model(arr)
    ref = _rundcpp_flows_mw(net, arr)
    from_res_bus = model.flows_pu(-net.res_bus.p_mw.to_numpy() / arr.base_mva) * arr.base_mva
    assert np.abs(from_res_bus - ref).max() < 1e-6
    from_tables = model.flows_pu(_injections_from_tables_pu(net, arr.base_mva)) * arr.base_mva
    assert np.abs(from_tables - ref).max() < 1e-6
    assert np.abs(ref).max() > 10.0  # a non-trivial comparison


def test_phase_shifter_and_taps_match_rundcpp() -> None:
    net = _net("case118")
    net.trafo.loc[2, "shift_degree"] = 8.0
    net.trafo.loc[11, "shift_degree"] = -5.0
    net.trafo.loc[0, "tap_pos"] = 3.0
    arr = transmission_arrays(net)
    assert np.count_nonzero(arr.shift_rad) == 2
    model = _model(arr)
    assert np.count_nonzero(model.f_shift_pu) > 2  # a shifter moves flows all around its loop
    flows = model.flows_pu(_injections_from_tables_pu(net, arr.base_mva)) * arr.base_mva
    assert np.abs(flows - _rundcpp_flows_mw(net, arr)).max() < 1e-6


def test_impedance_elements_match_rundcpp() -> None:
    net = _net("case30")
    pp.create_impedance(net, 3, 11, rft_pu=0.01, xft_pu=0.05, sn_mva=100.0)
    pp.create_impedance(net, 5, 20, rft_pu=0.01, xft_pu=0.08, rtf_pu=0.01, xtf_pu=0.08, sn_mva=50.0)
    arr = transmission_arrays(net)
    imp = arr.element == "impedance"
    assert imp.sum() == 2 and np.all(np.isinf(arr.rate_mva[imp]))
    assert arr.x_pu[imp] == pytest.approx([0.05, 0.16])  # per unit on 100 MVA
    flows = _model(arr).flows_pu(_injections_from_tables_pu(net, arr.base_mva)) * arr.base_mva
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.rundcpp(net, calculate_voltage_angles=True)
    ref = np.where(imp, net.res_impedance.p_from_mw.reindex(arr.element_index).to_numpy(),
                   net.res_line.p_from_mw.reindex(arr.element_index).to_numpy())
    assert np.abs(flows - ref).max() < 1e-6


@pytest.mark.parametrize("name", list(CASES))
def test_ptdf_columns_satisfy_kcl(name: str) -> None:
    arr = transmission_arrays(_net(name))
    model = _model(arr)
    n_bus = arr.bus_label.size
    assert np.all(model.ptdf[:, arr.slack_bus] == 0)
    incidence = np.zeros((arr.from_bus.size, n_bus))
    incidence[np.arange(arr.from_bus.size), arr.from_bus] += 1.0
    incidence[np.arange(arr.from_bus.size), arr.to_bus] -= 1.0
    # injecting 1 p.u. at bus j and withdrawing it at the slack: net outflow 1 at j, -1 at the slack
    net_outflow = incidence.T @ model.ptdf
    expected = np.eye(n_bus)
    expected[arr.slack_bus, :] -= 1.0
    expected[:, arr.slack_bus] = 0.0
    assert np.abs(net_outflow - expected).max() < 1e-9
    # so every non-slack column's outflows sum to zero over all buses
    assert np.abs(net_outflow.sum(axis=0)).max() < 1e-9


def test_batched_flows_and_slack_absorbs_mismatch() -> None:
    arr = transmission_arrays(_net("case30"))
    model = _model(arr)
    rng = np.random.default_rng(1)
    p = rng.normal(0.0, 0.3, (arr.bus_label.size, 6))
    flows = model.flows_pu(p)
    assert flows.shape == (arr.from_bus.size, 6)
    for k in range(6):
        assert np.allclose(flows[:, k], model.flows_pu(p[:, k]), atol=1e-13)
    p2 = p[:, 0].copy()
    p2[arr.slack_bus] += 7.0
    assert np.allclose(model.flows_pu(p2), flows[:, 0], atol=1e-13)


def test_disconnected_bus_is_rejected() -> None:
    f = np.array([0, 1, 2, 3, 4])
    t = np.array([1, 2, 0, 4, 0])
    x = np.full(5, 0.1)
    with pytest.raises(ValueError, match="bus 5 is disconnected from the slack"):
        DCModel.build(f, t, x, n_bus=6)
    with pytest.raises(ValueError, match="bus 0 is disconnected from the slack"):
        DCModel.build(f[:3] + 1, t[:3] + 1, x[:3], n_bus=4, slack_bus=3)
    assert DCModel.build(f, t, x, n_bus=5).ptdf.shape == (5, 5)


def test_bad_inputs_are_rejected() -> None:
    f, t = np.array([0, 1]), np.array([1, 2])
    with pytest.raises(ValueError, match=r"x_pu\[1\] is zero"):
        DCModel.build(f, t, np.array([0.1, 0.0]), n_bus=3)
    with pytest.raises(ValueError, match=r"tap\[0\] must be > 0"):
        DCModel.build(f, t, np.array([0.1, 0.2]), tap=np.array([0.0, 1.0]), n_bus=3)
    with pytest.raises(ValueError, match="to_bus"):
        DCModel.build(f, np.array([1, 3]), np.array([0.1, 0.2]), n_bus=3)
    model = DCModel.build(f, t, np.array([0.1, 0.2]), n_bus=3)
    with pytest.raises(ValueError, match="p_inj_pu must have shape"):
        model.flows_pu(np.zeros(4))
    with pytest.raises(ValueError, match="non-finite"):
        model.flows_pu(np.array([0.0, np.nan, 1.0]))
    # a radial 3-bus chain: injection at bus 2 flows back over both branches
    assert np.allclose(model.flows_pu(np.array([0.0, 0.0, 1.0])), [-1.0, -1.0])


def test_transmission_arrays_rejects_unsupported_nets() -> None:
    net = _net("case30")
    pp.create_bus(net, 135.0, name=31)
    with pytest.raises(ValueError, match="bus index 30 is not supplied"):
        transmission_arrays(net)
    net = _net("case30")
    net.bus.loc[29, "in_service"] = False
    with pytest.raises(ValueError, match="out-of-service buses"):
        transmission_arrays(net)
    net = _net("case30")
    pp.create_transformer3w(net, 0, 1, 2, std_type="63/25/38 MVA 110/20/10 kV")
    with pytest.raises(ValueError, match="auxiliary buses"):
        transmission_arrays(net)
