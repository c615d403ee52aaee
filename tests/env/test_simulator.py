"""The pure simulator: projection, physics truth, energy balance, balancing rules, costs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import env
from env.dispatch import POINT_RANGE_TOL, ActionLimits, Dispatch, DispatchSizes
from env.physics.dc import DCModel
from env.physics.sweep import RadialSweep
from env.simulator import COST_KEYS, GridModel, GridSimulator, SimulatorSettings
from scenarios.day import sample_day

TOL_MW = 1e-6


@pytest.fixture(scope="module")
def d33():
    grid = env.load_case("d33")
    return grid, GridModel(grid), sample_day(grid, "cloudy", 11)


@pytest.fixture(scope="module")
def t30d2():
    grid = env.load_case("t30d2")
    return grid, GridModel(grid), sample_day(grid, "cloudy", 11)


def _sim(case, scenario=None, **kw) -> GridSimulator:
    grid, model, sc = case
    return GridSimulator(grid, scenario or sc, SimulatorSettings(**kw), model=model)


def _advance(sim: GridSimulator, n: int, action: float = 0.0) -> None:
    for _ in range(n):
        lim = sim.limits()
        sim.step(Dispatch.from_array(np.full(lim.sizes.n_action, action), lim))


def _per_feeder(grid, values: np.ndarray, table: str) -> list[np.ndarray]:
    """Split a dispatch-ordered array over the feeders by their table lengths (from the grid data)."""
    counts = [len(getattr(f, table)) for f in grid.feeders]
    return np.split(values[:sum(counts)], np.cumsum(counts)[:-1])


def _check_balance(grid, out) -> None:
    n_load_f = sum(len(f.load) for f in grid.feeders)
    loads = _per_feeder(grid, out.load_served_mw, "load")
    ders = _per_feeder(grid, out.der_used_mw, "der")
    evs = _per_feeder(grid, out.ev_p_mw, "evcs")
    sts = _per_feeder(grid, out.storage_p_mw, "storage")
    for k in range(len(grid.feeders)):
        # head P + DER used = load served + losses + storage charge + EV charging
        lhs = out.head_p_mw[k] + ders[k].sum()
        rhs = loads[k].sum() + out.loss_mw[k] + sts[k].sum() + evs[k].sum()
        assert abs(lhs - rhs) < TOL_MW, f"feeder {k}: {lhs} != {rhs}"
        assert out.loss_mw[k] >= 0
    if grid.is_td:
        n_der_f = sum(len(f.der) for f in grid.feeders)
        gen = out.thermal_p_mw.sum() + out.der_used_mw[n_der_f:].sum()
        use = out.load_served_mw[n_load_f:].sum() + out.head_p_mw.sum()
        assert abs(gen - use) < TOL_MW, f"transmission: {gen} != {use}"


# ----------------------------------------------------------------------------- energy balance


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(t0=st.integers(0, 95), action=arrays(np.float64, 18, elements=st.floats(-2.0, 2.0)))
def test_energy_balance_single_feeder(d33, t0, action):
    sim = _sim(d33)
    _advance(sim, t0)
    lim = sim.limits()
    out = sim.step(Dispatch.from_array(action, lim))
    _check_balance(d33[0], out)
    assert out.cost["energy_bought"] == pytest.approx(max(out.head_p_mw[0], 0) * sim.dt_h * sim.price_buy[t0])


@settings(max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(t0=st.integers(0, 95), seed=st.integers(0, 2**31 - 1), spread=st.floats(0.0, 2.0))
def test_energy_balance_td(t30d2, t0, seed, spread):
    sim = _sim(t30d2)
    _advance(sim, t0)
    lim = sim.limits()
    action = np.random.default_rng(seed).uniform(-spread, spread, lim.sizes.n_action)
    out = sim.step(Dispatch.from_array(action, lim))
    _check_balance(t30d2[0], out)
    # DC flows are PTDF x the injections the outcome reports (sum of injections = 0)
    t = t30d2[0].transmission
    inj = np.zeros(t.n_bus)
    n_der_f = sum(len(f.der) for f in t30d2[0].feeders)
    n_load_f = sum(len(f.load) for f in t30d2[0].feeders)
    np.add.at(inj, t.gen.bus, out.thermal_p_mw)
    np.add.at(inj, t.der.bus, out.der_used_mw[n_der_f:])
    np.add.at(inj, t.load.bus, -out.load_served_mw[n_load_f:])
    np.add.at(inj, np.array(t30d2[0].boundary_bus), -out.head_p_mw)
    assert abs(inj.sum()) < TOL_MW
    dc = DCModel.build(t.branch.from_bus, t.branch.to_bus, t.branch.x_pu, t.branch.tap, t.branch.shift_rad,
                       n_bus=t.n_bus, slack_bus=t.slack_bus)
    np.testing.assert_allclose(out.line_p_mw, dc.flows_pu(inj / t.base_mva) * t.base_mva, atol=1e-6)
    np.testing.assert_allclose(out.line_loading, np.abs(out.line_p_mw) / t.branch.rate_mva, atol=1e-9)


def test_feeder_voltages_match_the_sweep_kernel(t30d2):
    """The env's warm-started sweep gives the kernel's flat-start solution."""
    grid = t30d2[0]
    sim = _sim(t30d2)
    _advance(sim, 40, action=0.3)
    lim = sim.limits()
    out = sim.step(Dispatch.from_array(np.random.default_rng(3).uniform(-1, 1, lim.sizes.n_action), lim))
    loads = _per_feeder(grid, out.load_served_mw, "load")
    ders = _per_feeder(grid, out.der_used_mw, "der")
    evs = _per_feeder(grid, out.ev_p_mw, "evcs")
    qs = _per_feeder(grid, out.applied.q_comp_mvar, "compensator")
    start = 0
    for k, f in enumerate(grid.feeders):
        p, q = np.zeros(f.n_bus), np.zeros(f.n_bus)
        np.add.at(p, f.load.bus, loads[k])
        np.add.at(q, f.load.bus, loads[k] * f.load.q_mvar / f.load.p_mw)
        np.add.at(p, f.der.bus, -ders[k])
        np.add.at(p, f.evcs.bus, evs[k])
        np.add.at(q, f.compensator.bus, -qs[k])
        sweep = RadialSweep.build(f.branch.from_bus, f.branch.to_bus, f.branch.r_pu, f.branch.x_pu, f.n_bus,
                                  f.slack_bus)
        ref = sweep.solve((p + 1j * q) / f.base_mva, v_slack_pu=f.v_slack_pu)
        np.testing.assert_allclose(out.v_pu[start:start + f.n_bus], np.abs(ref.v_pu[:, 0]), atol=1e-8)
        assert out.head_p_mw[k] == pytest.approx(ref.s_slack_pu[0].real * f.base_mva, abs=1e-7)
        assert out.loss_mw[k] == pytest.approx(ref.loss_pu[0].real * f.base_mva, abs=1e-7)
        assert out.v_min_pu[k] == pytest.approx(np.abs(ref.v_pu).min(), abs=1e-8)
        start += f.n_bus


def test_feeder_step_matches_pandapower_newton_raphson(d33):
    """Independent check of the env's physics: the same injections solved by pandapower's NR."""
    import pandapower as pp

    from env.interop import feeder_to_pandapower

    grid = d33[0]
    f = grid.feeders[0]
    sim = _sim(d33)
    _advance(sim, 50, action=0.4)
    lim = sim.limits()
    out = sim.step(Dispatch.from_array(np.random.default_rng(5).uniform(-1, 1, lim.sizes.n_action), lim))
    p, q = np.zeros(f.n_bus), np.zeros(f.n_bus)
    np.add.at(p, f.load.bus, out.load_served_mw)
    np.add.at(q, f.load.bus, out.load_served_mw * f.load.q_mvar / f.load.p_mw)
    np.add.at(p, f.der.bus, -out.der_used_mw)
    np.add.at(p, f.evcs.bus, out.ev_p_mw)
    np.add.at(p, f.storage.bus, out.storage_p_mw)
    np.add.at(q, f.compensator.bus, -out.applied.q_comp_mvar)
    net = feeder_to_pandapower(f, p, q)
    pp.runpp(net, tolerance_mva=1e-10)
    np.testing.assert_allclose(out.v_pu, net.res_bus.vm_pu.to_numpy(), atol=1e-7)
    assert out.head_p_mw[0] == pytest.approx(net.res_ext_grid.p_mw.iloc[0], abs=1e-6)
    assert out.loss_mw[0] == pytest.approx(net.res_line.pl_mw.sum(), abs=1e-6)


# ----------------------------------------------------------------------------- projection


def test_out_of_range_dispatch_is_projected_and_reported(t30d2):
    sim = _sim(t30d2)
    _advance(sim, 50)
    b = sim.ev_bounds()
    sizes = sim.model.sizes
    p_last = sim.thermal_p_last_mw.copy()
    d = Dispatch(
        ev_p_mw=np.full(sizes.n_evcs, 1e3), storage_p_mw=np.zeros(0),
        der_curtail_frac=np.linspace(-0.5, 1.7, sizes.n_der), thermal_p_mw=p_last + 1e3,
        thermal_r_up_mw=np.full(3, 500.0), thermal_r_dn_mw=np.full(3, -2.0),
        ev_r_up_mw=np.full(sizes.n_evcs, 9.0), ev_r_dn_mw=np.full(sizes.n_evcs, 9.0),
    )
    out = sim.step(d)
    a, proj = out.applied, out.projection
    np.testing.assert_allclose(a.ev_p_mw, b.p_max_kw / 1e3)
    np.testing.assert_allclose(proj["ev_p_mw"], b.p_max_kw / 1e3 - 1e3)
    assert a.der_curtail_frac.min() == 0.0 and a.der_curtail_frac.max() == 1.0
    np.testing.assert_allclose(proj["der_curtail_frac"], a.der_curtail_frac - d.der_curtail_frac)
    g = t30d2[0].transmission.gen
    ramp = g.ramp_mw_per_h * sim.dt_h
    np.testing.assert_allclose(a.thermal_p_mw, np.minimum(g.p_max_mw, p_last + ramp))
    np.testing.assert_allclose(proj["thermal_p_mw"], a.thermal_p_mw - d.thermal_p_mw)
    # reserves within the headroom left by the setpoint (p_max and ramp)
    np.testing.assert_allclose(a.thermal_r_up_mw, np.minimum(g.p_max_mw, p_last + ramp) - a.thermal_p_mw)
    np.testing.assert_array_equal(a.thermal_r_dn_mw, 0.0)
    np.testing.assert_allclose(a.ev_r_up_mw, a.ev_p_mw - b.p_min_kw / 1e3, atol=1e-12)
    np.testing.assert_allclose(a.ev_r_dn_mw, 0.0, atol=1e-12)
    assert (proj["ev_r_up_mw"] < 0).all()
    assert set(proj) == {name for name, _ in sim.model.sizes_q.layout()}


def test_storage_is_projected_onto_power_and_energy_limits(d33):
    sim = _sim(d33)
    stor = d33[0].feeders[0].storage
    z = Dispatch.zeros(d33[0])
    for _ in range(20):                          # charge hard: energy must stop at e_max
        e0 = sim.storage_e_mwh.copy()
        out = sim.step(z.replace(storage_p_mw=np.array([5.0])))
        p = out.applied.storage_p_mw
        assert p[0] <= stor.p_max_mw[0] + 1e-12
        np.testing.assert_allclose(out.storage_e_mwh, e0 + stor.eta_charge * p * sim.dt_h)
        assert out.storage_e_mwh[0] <= stor.e_max_mwh[0] + 1e-12
    assert sim.storage_e_mwh[0] == pytest.approx(stor.e_max_mwh[0])
    for _ in range(30):                          # discharge hard: energy must stop at 0
        e0 = sim.storage_e_mwh.copy()
        out = sim.step(z.replace(storage_p_mw=np.array([-5.0])))
        p = out.applied.storage_p_mw
        np.testing.assert_allclose(out.storage_e_mwh, e0 + p / stor.eta_discharge * sim.dt_h, atol=1e-12)
        assert out.storage_e_mwh[0] >= -1e-12
    assert sim.storage_e_mwh[0] == pytest.approx(0.0, abs=1e-12)
    assert out.projection["storage_p_mw"][0] > 0


def test_wrong_dispatch_size_names_the_field(d33):
    sim = _sim(d33)
    bad = Dispatch.zeros(d33[0]).replace(ev_p_mw=np.zeros(3))
    with pytest.raises(ValueError, match="ev_p_mw"):
        sim.step(bad)


# ----------------------------------------------------------------------------- T-D balancing


def _td_first_step(case, r_up_mw: float, ev_share: float, dp_mw: float, t0: int = 0):
    sim = _sim(case)
    _advance(sim, t0)
    b = sim.ev_bounds()
    ev = 0.5 * (b.p_min_kw + b.p_max_kw) / 1e3
    d = Dispatch.zeros(case[0]).replace(
        ev_p_mw=ev, thermal_p_mw=sim.thermal_p_last_mw + dp_mw, thermal_r_up_mw=np.full(3, r_up_mw),
        thermal_r_dn_mw=np.full(3, r_up_mw), ev_r_up_mw=ev_share * (ev - b.p_min_kw / 1e3),
        ev_r_dn_mw=ev_share * (b.p_max_kw / 1e3 - ev))
    return sim, d, sim.step(d)


def test_td_deficit_deploys_reserves_before_shedding(t30d2):
    # setpoints 10 MW per unit below the previous ones: a deficit of ~20-24 MW
    _, d, out = _td_first_step(t30d2, r_up_mw=10.0, ev_share=0.0, dp_mw=-10.0)
    assert out.imbalance_mw > 15
    assert out.violations["load_shed_mwh"] == 0.0
    assert out.thermal_deployed_mw.sum() == pytest.approx(out.imbalance_mw, abs=1e-6)
    cleared = out.applied.thermal_r_up_mw
    np.testing.assert_allclose(out.thermal_deployed_mw, cleared * out.imbalance_mw / cleared.sum(), atol=1e-6)
    # too little reserve: all of it is deployed, the rest is shed (VOLL)
    sim, _, short = _td_first_step(t30d2, r_up_mw=2.0, ev_share=0.0, dp_mw=-10.0)
    np.testing.assert_allclose(short.thermal_deployed_mw, short.applied.thermal_r_up_mw, atol=1e-6)
    missing = short.imbalance_mw - short.applied.thermal_r_up_mw.sum()
    assert short.violations["load_shed_mwh"] == pytest.approx(missing * sim.dt_h, rel=1e-6)
    assert short.cost["load_shed"] == pytest.approx(
        short.violations["load_shed_mwh"] * t30d2[0].tariff.penalty_load_shed_per_mwh)


def test_td_deficit_uses_ev_reserves_after_thermal(t30d2):
    # at noon many EVs are connected; thermal reserve 0.1 MW/unit, EV reserve fully offered
    sim, d, out = _td_first_step(t30d2, r_up_mw=0.1, ev_share=1.0, dp_mw=-0.3, t0=48)
    assert out.imbalance_mw > 0.3
    deployed = out.thermal_deployed_mw.copy()
    deployed[0] -= out.residual_mw              # unit 0 (at the reference bus) closes the loss change
    np.testing.assert_allclose(deployed, 0.1, atol=1e-9)
    # the loss change is a fraction of the EV power moved (marginal losses of the loaded 33-bus feeder)
    assert abs(out.residual_mw) < 0.15 * abs(out.ev_deployed_mw.sum())
    ev_room = out.applied.ev_r_up_mw.sum()
    assert ev_room > 0.05
    call = out.tso_delivered_mw.sum()                      # the TSO call is served first
    deployed_ev = -out.ev_deployed_mw.sum() - call
    assert deployed_ev > 0
    expected_shed = max(out.imbalance_mw - out.applied.thermal_r_up_mw.sum() - (ev_room - max(call, 0)), 0)
    assert out.violations["load_shed_mwh"] == pytest.approx(expected_shed * sim.dt_h, abs=1e-5)


def test_td_surplus_goes_down_reserves_then_wind_curtailment(t30d2):
    sim, _, out = _td_first_step(t30d2, r_up_mw=2.0, ev_share=0.0, dp_mw=+10.0)
    assert out.imbalance_mw < -15
    np.testing.assert_allclose(out.thermal_deployed_mw[:2], -2.0, atol=1e-9)   # all r_dn first
    n_der_f = sum(len(f.der) for f in t30d2[0].feeders)
    spilled = (out.der_avail_mw - out.der_used_mw)[n_der_f:].sum()
    left = -out.imbalance_mw - out.applied.thermal_r_dn_mw.sum()
    assert spilled == pytest.approx(min(left, out.der_avail_mw[n_der_f:].sum()), abs=1e-6)
    assert out.violations["load_shed_mwh"] == 0.0
    assert out.cost["curtailment"] > 0


def test_td_large_surplus_curtails_wind_then_feeder_der_then_backs_thermal_off(t30d2):
    grid, model, sc = t30d2
    calm = dataclasses.replace(sc, wind_pu=sc.wind_pu * 0.05)     # little wind: curtailment cannot absorb it
    sim = GridSimulator(grid, calm, model=model)
    out = sim.step(Dispatch.zeros(grid).replace(thermal_p_mw=sim.thermal_p_last_mw + 10.0))
    n_der_f = sum(len(f.der) for f in grid.feeders)
    assert 0 < out.der_avail_mw.sum() < -out.imbalance_mw
    np.testing.assert_allclose(out.der_used_mw, 0.0, atol=1e-12)             # all wind spilled first
    backoff = -out.imbalance_mw - out.der_avail_mw.sum()
    assert out.thermal_deployed_mw.sum() == pytest.approx(-backoff + out.residual_mw, abs=1e-6)
    assert out.violations["curtailment_mwh"] == pytest.approx(-out.imbalance_mw * sim.dt_h, rel=1e-9)
    assert out.violations["unbalanced_mw"] == 0.0
    assert abs(out.residual_mw) < 0.05 and out.der_avail_mw[:n_der_f].sum() > 0
    _check_balance(grid, out)


def test_tso_call_is_delivered_by_the_feeder_ev_reserves(t30d2):
    sim = _sim(t30d2)
    _advance(sim, 60)
    b = sim.ev_bounds()
    ev = 0.5 * (b.p_min_kw + b.p_max_kw) / 1e3
    req = sim.tso[60]
    z = Dispatch.zeros(t30d2[0])
    d = z.replace(ev_p_mw=ev, thermal_p_mw=sim.thermal_p_last_mw, ev_r_up_mw=ev - b.p_min_kw / 1e3,
                  ev_r_dn_mw=b.p_max_kw / 1e3 - ev)
    out = sim.step(d)
    feeder = np.repeat(np.arange(2), [len(f.evcs) for f in t30d2[0].feeders])
    cap_up = np.bincount(feeder, out.applied.ev_r_up_mw, 2)
    cap_dn = np.bincount(feeder, out.applied.ev_r_dn_mw, 2)
    call = np.clip(req, -cap_dn, cap_up)
    np.testing.assert_allclose(out.tso_delivered_mw, call, atol=1e-9)
    np.testing.assert_allclose(out.boundary_violation_mw, np.abs(req - call), atol=1e-9)
    assert out.cost["boundary_violation"] == pytest.approx(
        np.abs(req - call).sum() * sim.dt_h * t30d2[0].tariff.penalty_boundary_per_mwh)
    # with no cleared EV reserve the whole requirement is a violation
    sim2 = _sim(t30d2)
    _advance(sim2, 60)
    out2 = sim2.step(z.replace(ev_p_mw=ev, thermal_p_mw=sim2.thermal_p_last_mw))
    np.testing.assert_allclose(out2.boundary_violation_mw, np.abs(req), atol=1e-12)


# ----------------------------------------------------------------------------- single feeder


def test_overloaded_feeder_sheds_load_until_the_sweep_converges(d33):
    grid, model, sc = d33
    heavy = dataclasses.replace(sc, load_pu=sc.load_pu * 12.0)
    sim = GridSimulator(grid, heavy, model=model)
    out = sim.step(Dispatch.zeros(grid))
    assert out.violations["load_shed_mwh"] > 0
    assert out.cost["load_shed"] == pytest.approx(
        out.violations["load_shed_mwh"] * grid.tariff.penalty_load_shed_per_mwh)
    assert out.v_min_pu[0] > 0.3
    _check_balance(grid, out)
    # the normal day sheds nothing
    assert _sim(d33).step(Dispatch.zeros(grid)).violations["load_shed_mwh"] == 0.0


def test_cost_breakdown_sums_to_total_and_reward(d33, t30d2):
    for case in (d33, t30d2):
        sim = _sim(case)
        rng = np.random.default_rng(0)
        for _ in range(10):
            lim = sim.limits()
            out = sim.step(Dispatch.from_array(rng.uniform(-1, 1, lim.sizes.n_action), lim))
            assert set(out.cost) == set(COST_KEYS)
            parts = sum(v for k, v in out.cost.items() if k not in ("total", "boundary_energy"))
            assert out.cost["total"] == pytest.approx(parts)
            assert out.reward == -out.cost["total"]
            assert out.cost["ev_revenue"] <= 0 <= out.cost["ev_subsidy"]
    # T-D: the boundary purchase is reported, not counted; fuel is
    assert out.cost["energy_bought"] == 0 and out.cost["thermal_fuel"] > 0 and out.cost["boundary_energy"] != 0


def test_voltage_violation_cost(d33):
    sim = _sim(d33)
    _advance(sim, 72)                       # evening peak: the far end of the feeder is below 0.95
    out = sim.step(Dispatch.zeros(d33[0]))
    f = d33[0].feeders[0]
    viol = np.maximum(np.maximum(f.bus.vmin_pu - out.v_pu, out.v_pu - f.bus.vmax_pu), 0)
    assert viol.sum() > 0
    assert out.violations["voltage_puh"] == pytest.approx(viol.sum() * sim.dt_h)
    assert out.cost["voltage_violation"] == pytest.approx(viol.sum() * sim.dt_h * d33[0].tariff.penalty_voltage_per_puh)


# ----------------------------------------------------------------------------- observation


def test_observation_is_non_anticipative(d33):
    """Changing the realized day after step t does not change anything observed up to t."""
    grid, model, sc = d33
    t = 30
    future = dataclasses.replace(sc, load_pu=np.vstack([sc.load_pu[:t + 1], 1.5 * sc.load_pu[t + 1:]]),
                                 pv_pu=np.vstack([sc.pv_pu[:t + 1], 0.0 * sc.pv_pu[t + 1:]]))
    sims = [GridSimulator(grid, s, model=model) for s in (sc, future)]
    from env.observation import ObservationEncoder
    from env.simulator import observation_spec

    enc = ObservationEncoder(observation_spec(model, sc.dt_minutes))
    for step in range(t + 1):
        obs = [s.observe() for s in sims]
        a, b = (enc.encode(o) for o in obs)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{key} at step {step}")
        for s in sims:
            lim = s.limits()
            s.step(Dispatch.from_array(np.full(lim.sizes.n_action, 0.2), lim))
    fc = sims[0].observe().forecast
    assert fc.t == t            # conditioned on steps < t + 1 (the TSO call of step t+1 is not revealed)


def test_observation_fields(t30d2):
    sim = _sim(t30d2)
    obs = sim.observe()
    assert obs.step == 0 and obs.time_h == 0 and obs.ev is not None
    assert len(obs.v_pu) == 2 and obs.v_min_pu.shape == (2,)
    assert obs.net_load_forecast_mw.shape[0] == 3
    np.testing.assert_allclose(obs.net_load_forecast_mw[:2, 0],
                               [obs.load_p_mw[:32].sum() - obs.der_avail_mw[:3].sum(),
                                obs.load_p_mw[32:64].sum() - obs.der_avail_mw[3:6].sum()])
    with pytest.raises(ValueError):
        obs.load_p_mw[0] = 1.0                  # read-only: a policy cannot change the simulator's data
    _advance(sim, 96)
    assert sim.done and sim.observe().is_terminal and sim.observe().forecast is None
    with pytest.raises(RuntimeError, match="over"):
        sim.limits()


def test_settings_reject_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown keys \['bogus'\].*v2g"):
        SimulatorSettings.from_kwargs(bogus=1)


# ----------------------------------------------------------------------------- dispatch encoding


def test_dispatch_array_round_trip_and_layout(t30d2):
    sim = _sim(t30d2)
    _advance(sim, 20)                                 # early morning: some stations have no EV connected
    lim = sim.limits()
    a = np.random.default_rng(0).uniform(-1, 1, lim.sizes.n_action)
    d = Dispatch.from_array(a, lim)
    back = d.to_array(lim)
    point = np.abs(lim.high - lim.low) <= POINT_RANGE_TOL   # a single-point range encodes as 0
    assert point.any() and not point.all()
    np.testing.assert_allclose(back[~point], a[~point], atol=1e-6)
    np.testing.assert_array_equal(back[point], 0.0)
    layout = Dispatch.layout(t30d2[0])
    assert [f for f, _ in layout] == ["ev_p_mw", "storage_p_mw", "der_curtail_frac", "thermal_p_mw",
                                      "thermal_r_up_mw", "thermal_r_dn_mw", "ev_r_up_mw", "ev_r_dn_mw", "tie_p_mw"]
    assert layout[-1][1].stop == lim.sizes.n_action == 22 + 0 + 9 + 3 * 3 + 2 * 22
    # a = -1 is all curtailed, +1 none; ev spans [p_min, p_max] of the step
    lo = Dispatch.from_array(-np.ones(lim.sizes.n_action), lim)
    hi = Dispatch.from_array(np.ones(lim.sizes.n_action), lim)
    np.testing.assert_array_equal(lo.der_curtail_frac, 1.0)
    np.testing.assert_array_equal(hi.der_curtail_frac, 0.0)
    b = sim.ev_bounds()
    np.testing.assert_allclose(lo.ev_p_mw, b.p_min_kw / 1e3)
    np.testing.assert_allclose(hi.ev_p_mw, b.p_max_kw / 1e3)
    np.testing.assert_allclose(hi.thermal_p_mw, t30d2[0].transmission.gen.p_max_mw)


def test_dispatch_validation_names_the_field():
    sizes = DispatchSizes(n_evcs=2, n_storage=1, n_der=3, n_gen=0, n_ev_reserve=0, n_comp=2)
    lim = ActionLimits(sizes, np.zeros(6), np.ones(6))
    a = np.zeros(6)
    a[3] = np.nan
    with pytest.raises(ValueError, match=r"der_curtail_frac\[0\]"):
        Dispatch.from_array(a, lim)
    with pytest.raises(ValueError, match=r"shape \(6,\).*ev_p_mw\[0:2\]"):
        Dispatch.from_array(np.zeros(7), lim)
    with pytest.raises(ValueError, match="storage_p_mw"):
        Dispatch(np.zeros(2), np.array([np.inf]), np.zeros(3), np.zeros(0), np.zeros(0), np.zeros(0),
                 np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="unknown fields"):
        Dispatch.zeros(sizes).replace(ev_p=np.zeros(2))
    assert Dispatch.zeros(sizes).q_comp_mvar is None
    assert Dispatch.zeros(dataclasses.replace(sizes, reactive=True)).q_comp_mvar.shape == (2,)


@pytest.mark.parametrize("one_to_one", [True, False])
def test_load_injection_is_the_incidence_product(t30d2, one_to_one: bool) -> None:  # noqa: ANN001
    """GridModel.load_injection_pu = (p + j q) M_load^T / S_base, bit for bit, by its scatter
    (each bus holds at most one feeder load, every shipped case) and by its product (the path
    of a grid with two loads on a bus, forced here)."""
    m = GridModel(t30d2[0])                 # its own model: the shared one stays untouched
    assert m._load_bus_distinct
    if not one_to_one:
        m._load_bus_distinct = False
    rng = np.random.default_rng(8003)
    p, q = rng.uniform(-1.0, 3.0, (2, 5, m.n_load_f))
    expected = ((p + 1j * q) @ m.m_load.T) * m.inv_base_fb
    np.testing.assert_array_equal(m.load_injection_pu(p, q), expected)
    np.testing.assert_array_equal(m.load_injection_pu(p[0], q[0]), expected[0])
