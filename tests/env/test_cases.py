"""Named cases: they load offline, validate, solve, and agree with pandapower."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandapower as pp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import env
from env.cases import bare_feeder
from env.interop import feeder_to_pandapower, grid_to_pandapower
from env.network import BranchTable, BusTable, Network
from env.physics.grid_flow import GridPhysics, base_feeder_injection, per_bus, power_flow


def _runpp(net) -> None:  # noqa: ANN001
    pp.runpp(net, tolerance_mva=1e-11, numba=False, max_iteration=50)


@pytest.mark.parametrize("name", env.case_names())
def test_every_case_loads_validates_and_solves(name: str) -> None:
    grid = env.load_case(name)
    flow = power_flow(grid)
    assert np.all(np.isfinite(flow.v_pu))
    v_head = max(f.v_slack_pu for f in grid.feeders)     # no DER at the base point: nothing rises above the head
    assert 0.85 < flow.v_pu.min() <= flow.v_pu.max() <= v_head + 1e-12
    for f in flow.feeders:
        assert f.loss_mw[0] > 0
    if grid.is_td:
        assert flow.line_p_mw is not None and np.all(np.isfinite(flow.line_p_mw))
    layout = grid.layout
    assert len(layout.load_names) == sum(len(f.load) for f in grid.feeders) + (
        len(grid.transmission.load) if grid.is_td else 0
    )


def test_unknown_case_lists_known_names() -> None:
    with pytest.raises(ValueError, match="unknown case 'd34'.*d33.*d69.*t30d2.*t118d10"):
        env.load_case("d34")


@pytest.mark.parametrize(
    ("base", "v_min", "bus_label", "loss_kw"),
    [("ieee33", 0.9131, 18, 202.7), ("ieee69", 0.9092, 65, 224.9)],
)
def test_bare_feeder_reproduces_textbook_base_case(base: str, v_min: float, bus_label: int, loss_kw: float) -> None:
    net = bare_feeder(base)
    p, q = base_feeder_injection(net)
    flow = GridPhysics(env.Grid(name=base, feeders=(net,), tariff=env.load_case("d33").tariff)).solve_feeder(0, p, q)
    v = flow.v_pu[:, 0]
    assert net.bus.label[np.argmin(v)] == bus_label
    assert v.min() == pytest.approx(v_min, abs=1e-4)
    assert flow.loss_mw[0] * 1e3 == pytest.approx(loss_kw, abs=0.5)


def test_ieee33_ties_out_of_service_and_seed003_scaling() -> None:
    d33 = env.load_case("d33").feeders[0]
    bare = bare_feeder("ieee33")
    assert len(d33.branch) == 32
    np.testing.assert_allclose(d33.load.p_mw, bare.load.p_mw * 0.9333)
    np.testing.assert_allclose(d33.load.q_mvar, bare.load.q_mvar * 0.8)
    # seed 003's node table: bus 2 carries 93.33 kW / 48 kvar
    assert d33.load.p_mw[d33.load.bus == 1][0] == pytest.approx(0.09333)
    assert d33.load.q_mvar[d33.load.bus == 1][0] == pytest.approx(0.048)


@pytest.mark.parametrize("name", ["d33", "d69"])
def test_base_case_matches_pandapower(name: str) -> None:
    grid = env.load_case(name)
    flow = power_flow(grid)
    net = grid_to_pandapower(grid)
    _runpp(net)
    np.testing.assert_allclose(flow.v_pu, net.res_bus.vm_pu.to_numpy(), atol=1e-6)
    assert flow.feeders[0].loss_mw[0] == pytest.approx(net.res_line.pl_mw.sum(), abs=1e-5)
    assert flow.feeders[0].loss_mvar[0] == pytest.approx(net.res_line.ql_mvar.sum(), abs=1e-5)


def _random_point(name: str, load_scale: list[float], der_share: list[float]) -> tuple[np.ndarray, np.ndarray]:
    net = env.load_case(name).feeders[0]
    scale = np.resize(np.asarray(load_scale), len(net.load))
    p = per_bus(net, net.load.bus, net.load.p_mw * scale)
    q = per_bus(net, net.load.bus, net.load.q_mvar * scale)
    p -= per_bus(net, net.der.bus, net.der.p_max_mw * np.resize(np.asarray(der_share), len(net.der)))
    return p, q


@settings(max_examples=8, deadline=None)
@given(
    name=st.sampled_from(["d33", "d69"]),
    load_scale=st.lists(st.floats(0.0, 1.5), min_size=1, max_size=70),
    der_share=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6),
)
def test_random_operating_points_match_pandapower(name: str, load_scale: list[float], der_share: list[float]) -> None:
    grid = env.load_case(name)
    p, q = _random_point(name, load_scale, der_share)
    flow = GridPhysics(grid).solve_feeder(0, p, q)
    pnet = feeder_to_pandapower(grid.feeders[0], p, q)
    _runpp(pnet)
    np.testing.assert_allclose(flow.v_pu[:, 0], pnet.res_bus.vm_pu.to_numpy(), atol=1e-6)
    assert flow.loss_mw[0] == pytest.approx(pnet.res_line.pl_mw.sum(), abs=1e-5)
    assert flow.head_p_mw[0] == pytest.approx(pnet.res_ext_grid.p_mw.iloc[0], abs=1e-5)


@pytest.mark.parametrize("name", ["t30d2", "t118d10"])
def test_td_dc_flows_match_pandapower(name: str) -> None:
    grid = env.load_case(name)
    flow = power_flow(grid)
    net = grid_to_pandapower(grid)
    pp.rundcpp(net)
    np.testing.assert_allclose(flow.line_p_mw[:, 0], net.res_line.p_from_mw.to_numpy(), atol=1e-6)


def test_td_feeder_head_is_load_at_boundary_bus() -> None:
    grid = env.load_case("t30d2")
    assert [grid.transmission.bus.label[b] for b in grid.boundary_bus] == [15, 23]
    physics = GridPhysics(grid)
    p, q = zip(*(base_feeder_injection(f) for f in grid.feeders))
    inj = np.zeros(grid.transmission.n_bus)
    flow0 = physics.solve(list(p), list(q), inj)
    p2 = [p[0] * 2.0, p[1]]
    flow1 = physics.solve(p2, list(q), inj)
    extra = flow1.feeders[0].head_p_mw[0] - flow0.feeders[0].head_p_mw[0]
    assert extra > p[0].sum() * 0.99  # doubling the load draws at least that much more
    # the reference bus supplies exactly the extra head power
    assert flow1.slack_p_mw[0] - flow0.slack_p_mw[0] == pytest.approx(extra, rel=1e-12)


def test_td_lumped_load_keeps_transmission_balance() -> None:
    grid = env.load_case("t30d2")
    t = grid.transmission
    label = t.bus.label
    p15 = t.load.p_mw[label[t.load.bus] == 15]
    # IEEE 30 bus 15 has 8.2 MW; the 33-bus feeder peaks at 3.715 MW
    assert p15[0] == pytest.approx(8.2 - 3.715, abs=1e-9)
    assert 23 not in label[t.load.bus]  # 3.2 MW < feeder peak: nothing lumped


# --- bad data: each raises a clear error --------------------------------------------


def _small_feeder(**branch_overrides: object) -> Network:
    base = dict(from_bus=[0, 1, 1], to_bus=[1, 2, 3], r_pu=[0.01, 0.01, 0.01], x_pu=[0.01, 0.01, 0.01],
                rate_mva=[np.inf] * 3, tap=[1.0] * 3, shift_rad=[0.0] * 3)
    base.update(branch_overrides)
    bus = BusTable(label=[1, 2, 3, 4], vmin_pu=[0.95] * 4, vmax_pu=[1.05] * 4)
    return Network(name="tiny", kind="feeder", base_mva=10, base_kv=12.66, slack_bus=0,
                   bus=bus, branch=BranchTable(**base))


def test_small_feeder_is_valid() -> None:
    assert _small_feeder().n_bus == 4


def test_non_radial_feeder_raises() -> None:
    with pytest.raises(ValueError, match="not radial"):
        _small_feeder(from_bus=[0, 1, 1, 2], to_bus=[1, 2, 3, 3], r_pu=[0.01] * 4, x_pu=[0.01] * 4,
                      rate_mva=[np.inf] * 4, tap=[1.0] * 4, shift_rad=[0.0] * 4)


def test_disconnected_bus_raises() -> None:
    with pytest.raises(ValueError, match=r"bus index \[3\] is disconnected"):
        _small_feeder(from_bus=[0, 1, 2], to_bus=[1, 2, 1])


def test_missing_slack_raises() -> None:
    good = _small_feeder()
    with pytest.raises(ValueError, match="no slack bus"):
        dataclasses.replace(good, slack_bus=7)


@pytest.mark.parametrize("field", ["r_pu", "x_pu"])
def test_non_positive_impedance_raises(field: str) -> None:
    with pytest.raises(ValueError, match=r"non-positive impedance on branch 1 \(2-3\)"):
        _small_feeder(**{field: [0.01, -0.02, 0.01]})


def test_unknown_key_in_case_file_raises(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from env.cases import feeders

    text = (feeders.DATA_DIR / "d33.toml").read_text() + "\nload_sclae_p = 2.0\n"
    (tmp_path / "d33.toml").write_text(text)
    monkeypatch.setattr(feeders, "DATA_DIR", tmp_path)
    with pytest.raises(ValueError, match="unknown keys \\['load_sclae_p'\\]"):
        feeders.feeder_from_file("d33.toml", "d33")
