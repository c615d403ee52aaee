"""The t14d2 case (seed 002): data, deep-peak-shaving cost, a heuristic step."""

from __future__ import annotations

import numpy as np
import pytest

from env import load_case
from env.network import GenTable
from env.thermal_cost import deep_peak_cost_per_h


@pytest.fixture(scope="module")
def grid():
    return load_case("t14d2")


def test_t14d2_structure(grid) -> None:
    t = grid.transmission
    assert t.n_bus == 14 and len(grid.feeders) == 2
    assert [int(t.bus.label[b]) for b in grid.boundary_bus] == [14, 13]
    for f in grid.feeders:
        assert f.n_bus == 13 and len(f.branch) == 12               # radial IEEE 13
        assert f.load.p_mw.sum() == pytest.approx(3.466)           # Kersting's published total
        assert f.load.q_mvar.sum() == pytest.approx(2.102)
        assert (f.bus.vmin_pu == 0.95).all() and (f.bus.vmax_pu == 1.05).all()
    assert sorted(t.gen.kind.tolist()) == ["hydro", "nuclear", "thermal", "thermal"]
    nuc = t.gen.kind == "nuclear"
    assert t.gen.p_min_mw[nuc] == pytest.approx(0.8 * 50.0) and t.gen.p_max_mw[nuc] == t.gen.p_min_mw[nuc]
    assert len(grid.tie_lines) == 1 and grid.tie_lines[0].p_max_mw == 1.0


def test_ieee13_per_unit_impedance_kept(grid) -> None:
    """650-632 (config 601, 2000 ft) keeps its per-unit impedance on 4.16 kV / 10 MVA."""
    f = grid.feeders[0]
    z1 = complex(0.185967, 0.596767) * 2000 / 5280 / (4.16**2 / 10.0)
    assert f.branch.r_pu[0] == pytest.approx(z1.real, rel=1e-5)
    assert f.branch.x_pu[0] == pytest.approx(z1.imag, rel=1e-5)


def _unit(**kw) -> GenTable:
    base = dict(bus=[0], p_min_mw=[30.0], p_max_mw=[100.0], ramp_mw_per_h=[30.0], cost_c1_per_mwh=[20.0],
                cost_c2_per_mw2h=[0.05], cost_reserve_per_mwh=[0.0], p_normal_min_mw=[50.0], p_no_oil_min_mw=[40.0],
                cost_deep_loss_per_mwh=[15.0], cost_deep_oil_per_mwh=[30.0], deep_subsidy_coeff=[0.8],
                deep_subsidy_per_mwh=[10.0])
    base.update(kw)
    return GenTable(**base)


@pytest.mark.parametrize("p", [100.0, 70.0, 50.0, 45.0, 40.0, 35.0, 30.0])
def test_deep_peak_cost_matches_the_seeds_three_segments(p: float) -> None:
    """Seed 002 §4.1.2: C_n on [P_a, P_max]; C_n + C_a - C_s on [P_b, P_a); + C_o on [P_c, P_b)."""
    a, b, c = 0.05, 20.0, 0.0
    pa, pb, k1, k2, hs, ks = 50.0, 40.0, 15.0, 30.0, 0.8, 10.0
    cn = a * p**2 + b * p + c
    if p >= pa:
        expected = cn
    elif p >= pb:
        expected = cn + k1 * (pa - p) - hs * ks * (pa - p)
    else:
        expected = cn + k1 * (pa - p) + k2 * (pb - p) - hs * ks * (pa - p)
    assert deep_peak_cost_per_h(_unit(), np.array([p]))[0] == pytest.approx(expected)


def test_deep_peak_cost_rejects_a_nonconvex_subsidy() -> None:
    with pytest.raises(ValueError, match="k1 >= hs ks"):
        _unit(deep_subsidy_coeff=[2.0])
    with pytest.raises(ValueError, match="fixed output"):
        _unit(kind=["nuclear"])


def test_env_fuel_cost_includes_deep_peak_shaving(grid) -> None:
    """The simulator's fuel cost of a heuristic step is the deep-peak cost of the units it settled."""
    from env.simulator import GridModel, GridSimulator
    from policies.heuristic import HeuristicPolicy
    from scenarios.day import sample_day

    sim = GridSimulator(grid, sample_day(grid, "cloudy", 3), model=GridModel(grid))
    policy = HeuristicPolicy(grid)
    deep = 0
    for _ in range(24):
        out = sim.step(policy.act(sim.observe()))
        p = out.thermal_p_mw
        expected = deep_peak_cost_per_h(grid.transmission.gen, p).sum() * out.dt_h
        assert out.cost["thermal_fuel"] == pytest.approx(expected, rel=1e-12)
        deep += int(np.any(p < grid.transmission.gen.p_normal_min_mw - 1e-9))
        assert out.violations["load_shed_mwh"] == 0.0
    assert deep > 0          # the night valley drives a unit into deep peak shaving


def test_hydro_spill_is_the_inflow_not_turned() -> None:
    """env.hydro: spill = (W - P)+ per unit with an inflow, priced c_S per MWh; none without one."""
    from env.hydro import spill_cost_per_h, spill_mw

    gen = GenTable(bus=[0, 1], p_min_mw=[0.0, 10.0], p_max_mw=[80.0, 50.0], ramp_mw_per_h=[40.0, 20.0],
                   cost_c1_per_mwh=[5.0, 20.0], cost_c2_per_mw2h=[0.0, 0.0], cost_reserve_per_mwh=[0.0, 0.0],
                   kind=["hydro", "thermal"], water_inflow_mw=[90.0, 0.0], cost_spill_per_mwh=[20.0, 0.0])
    p = np.array([30.0, 40.0])
    assert spill_mw(gen, p).tolist() == [60.0, 0.0]
    assert spill_cost_per_h(gen, p) == pytest.approx(20.0 * 60.0)
    cols = np.array([[0.0, 80.0], [10.0, 50.0]])                  # (n_gen, K), as the planners pass it
    assert spill_cost_per_h(gen, cols).tolist() == [20.0 * 90.0, 20.0 * 10.0]
    with pytest.raises(ValueError, match="water_inflow_mw"):
        _unit(kind=["hydro"], water_inflow_mw=[60.0], cost_spill_per_mwh=[1.0])   # below p_max: needs a reservoir
    with pytest.raises(ValueError, match="water_inflow_mw"):
        _unit(water_inflow_mw=[200.0])                                             # a thermal unit has no river


def test_env_charges_hydro_spillage_and_the_plan_prices_it(grid) -> None:
    """t14d2's hydro spills what it does not turn: the env's ``water_spillage`` cost equals
    c_S (W - P)+ dt at the unit's actual output (the planners call the same env.hydro function)."""
    from env.simulator import GridModel, GridSimulator
    from policies.heuristic import HeuristicPolicy
    from scenarios.day import sample_day

    g = grid.transmission.gen
    hydro = np.flatnonzero(g.kind == "hydro")[0]
    assert g.water_inflow_mw[hydro] == 100.0 and g.cost_spill_per_mwh[hydro] == 20.0
    model = GridModel(grid)
    assert model.g_spill
    sim = GridSimulator(grid, sample_day(grid, "cloudy", 3), model=model)
    policy = HeuristicPolicy(grid)
    total = 0.0
    for _ in range(24):
        out = sim.step(policy.act(sim.observe()))
        expected = 20.0 * max(100.0 - out.thermal_p_mw[hydro], 0.0) * out.dt_h
        assert out.cost["water_spillage"] == pytest.approx(expected, rel=1e-12, abs=1e-9)
        total += out.cost["water_spillage"]
        assert out.cost["total"] == pytest.approx(sum(v for k, v in out.cost.items()
                                                      if k not in ("total", "boundary_energy")))
    assert total > 0                                   # the night valley backs hydro down


def test_env_moves_the_tie_line_power_within_its_limit(grid) -> None:
    """The DS1-DS2 tie (1 MW): the env takes the transfer out of DS1's node and puts it into DS2's,
    so DS1's head import rises and DS2's falls by the transfer (up to the loss change); the sum of
    the heads changes by the loss change only (a lossless transfer); a request beyond 1 MW is
    projected onto the limit and reported; a dispatch without the field moves nothing."""
    from env.simulator import GridModel, GridSimulator
    from policies.heuristic import HeuristicPolicy
    from scenarios.day import sample_day

    model = GridModel(grid)
    assert model.n_tie == 1 and model.sizes.n_tie == 1
    outs = {}
    for tie in (None, 0.6, -0.6, 5.0):
        sim = GridSimulator(grid, sample_day(grid, "cloudy", 3), model=model)
        d = HeuristicPolicy(grid).act(sim.observe())
        assert d.tie_p_mw.shape == (0,) or tie is not None
        outs[tie] = sim.step(d if tie is None else d.replace(tie_p_mw=np.array([tie])))
    base = outs[None]
    assert base.setpoints["tie_p_mw"].tolist() == [0.0]
    for tie in (0.6, -0.6, 5.0):
        o = outs[tie]
        moved = min(tie, 1.0)
        assert o.setpoints["tie_p_mw"][0] == pytest.approx(moved)
        assert o.projection["tie_p_mw"][0] == pytest.approx(moved - tie)
        d_head = o.head_p_mw - base.head_p_mw
        d_loss = o.loss_mw - base.loss_mw
        assert d_head[0] == pytest.approx(moved + d_loss[0], abs=1e-6)        # DS1 exports over the tie
        assert d_head[1] == pytest.approx(-moved + d_loss[1], abs=1e-6)       # DS2 receives it
        assert d_head.sum() == pytest.approx(d_loss.sum(), abs=1e-6)
        assert abs(d_loss.sum()) < 0.05 * abs(moved)


def test_reactive_inputs_see_the_tie_transfer(grid) -> None:
    """The controller's reactive SOCP inputs put the tie's transfer on the same buses as the env."""
    from controller.reactive_inputs import ReactiveScenarioBuilder
    from env.simulator import GridModel, GridSimulator
    from policies.heuristic import HeuristicPolicy
    from scenarios.day import sample_day

    model = GridModel(grid)
    sim = GridSimulator(grid, sample_day(grid, "cloudy", 3), model=model)
    obs = sim.observe()
    d = HeuristicPolicy(grid).act(obs)
    builder = ReactiveScenarioBuilder(model, source="nowcast")
    p = {}
    for tie in (0.0, 0.5):
        applied = sim.project(d.replace(tie_p_mw=np.array([tie])))
        p[tie] = builder.build(obs, applied, np.random.default_rng(0)).per_feeder
    t = grid.tie_lines[0]
    d0 = p[0.5][0][0] - p[0.0][0][0]
    d1 = p[0.5][1][0] - p[0.0][1][0]
    assert d0[0, t.from_bus] == pytest.approx(0.5) and np.count_nonzero(d0) == 1
    assert d1[0, t.to_bus] == pytest.approx(-0.5) and np.count_nonzero(d1) == 1
