"""The STVS stress case (docs/stvs.md "Stress case"): band VDSI pieces, the band surrogate, the
STVS term moving the transmission renewables, and the ANDES comparison (slow)."""

from pathlib import Path

import numpy as np
import pytest

from env.stvs.indices import EPS_BAND, settled_voltage, vdsi


def test_settled_voltage_and_band_vdsi_by_hand():
    t = np.array([0.0, 0.4, 1.4, 2.4, 2.6, 3.0])
    v = np.array([[1.0, 1.0], [1.25, 1.0], [1.1, 1.02], [1.08, 1.0], [1.08, 1.0], [1.08, 1.0]])
    # last 0.5 s: samples at 2.6 and 3.0
    np.testing.assert_allclose(settled_voltage(t, v, 3.0), [1.08, 1.0])
    # eps 0.05 from T_C = 0.4: bus 0 D = .25 .1 .08 .08 .08; bus 1 D = 0 throughout
    integral = 0.5 * (0.25 + 0.1) * 1.0 + 0.5 * (0.1 + 0.08) * 1.0 + 0.08 * 0.2 + 0.08 * 0.4
    assert vdsi(t, v, 0.4, 3.0, eps=EPS_BAND) == pytest.approx(integral / (2 * 2.6))
    assert vdsi(t, v, 0.4, 3.0) == pytest.approx(0.5 * 0.25 * 1.0 / (2 * 2.6))   # the seed's eps 0.2: only 1.25


def test_stress_sampling_draws_each_renewable_in_its_range_and_balances():
    from env.cases import load_case
    from env.stvs.sampling import FILL_UNIT_SHARE, sample_operating_point

    grid = load_case("t14d2")
    t = grid.transmission
    cap = np.array([150.0, 200.0])
    for i in range(20):
        op = sample_operating_point(grid, np.random.default_rng([8440, i]), der_max_mw=cap)
        der = op.der_p_mw[t.der.bus]
        assert np.all(der >= 0) and np.all(der <= cap)
        gen = op.gen_p_mw.sum()
        assert gen == pytest.approx(op.load_p_mw.sum() - op.der_p_mw.sum() + op.pcc_p_mw.sum())
        fill = sample_operating_point(grid, np.random.default_rng([8442, i]), der_max_mw=cap, der_fill=True)
        units = fill.gen_p_mw[t.gen.bus]
        assert np.all(units <= t.gen.p_min_mw + FILL_UNIT_SHARE * (t.gen.p_max_mw - t.gen.p_min_mw) + 1e-6)
        assert np.all(fill.der_p_mw[t.der.bus] <= cap + 1e-9)
        assert fill.gen_p_mw.sum() == pytest.approx(fill.load_p_mw.sum() - fill.der_p_mw.sum() + fill.pcc_p_mw.sum())


def test_shipped_band_surrogate_on_its_held_out_split():
    from env.stvs.surrogate import StvsSurrogate

    d = np.load(Path(__file__).parent / "data" / "stvs_band_t14d2_test.npz")
    sur = StvsSurrogate.load(band=True)
    assert sur.der_per_bus and sur.eps == EPS_BAND
    tv, vd = sur.predict(d["x"])
    assert len(d["tvci"]) >= 50
    assert np.mean(tv == d["tvci"]) >= 0.9
    both = (d["tvci"] == 1) & (tv == 1)      # stable points: the band VDSI the schedule's gradient reads
    err, y = vd[both] - d["vdsi"][both], d["vdsi"][both]
    assert np.abs(err).sum() / np.abs(y).sum() <= 0.1
    assert 1.0 - (err ** 2).sum() / ((y - y.mean()) ** 2).sum() >= 0.5     # explains its spread, not just its mean


def test_band_risk_prices_the_pv_site_above_the_wind_site():
    """At a midday point of the stress day the PV at bus 12 raises the voltages around it and the
    wind at bus 8 sits next to a voltage-controlled machine: moving output from the wind site to
    the PV site raises the band VDSI (if the system recovers); the envelope is convex."""
    from env.cases import load_case
    from env.stvs.operating_point import StvsOperatingPoint
    from env.stvs.surrogate import StvsSurrogate, der_risk_tangents, risk_gradient

    grid = load_case("t14d2")
    t = grid.transmission
    lp = np.bincount(t.load.bus, t.load.p_mw, minlength=14)
    lq = np.bincount(t.load.bus, t.load.q_mvar, minlength=14)
    gen = np.zeros(14)
    gen[[0, 1, 5]] = [50.0, 25.0, 40.0]
    sur = StvsSurrogate.load(band=True)
    kind = np.asarray(t.der.kind)
    vd, ops = [], []
    for pv in (20.0, 80.0, 140.0):
        der = np.zeros(14)
        der[t.der.bus[kind == "pv"]] = pv
        der[t.der.bus[kind == "wind"]] = 150.0 - pv
        ops.append(StvsOperatingPoint(gen, lp, lq, der, (13, 12), np.array([0.0, 0.0]), np.array([2.0, 2.0])))
        r, g_unit, g_head, g_der = risk_gradient(grid, sur, ops[-1], "vdsi")
        vd.append(r)
        assert g_der.shape == (len(t.der),) and g_unit.shape == (len(t.gen),) and g_head.shape == (2,)
    assert vd[0] < vd[1] < vd[2]
    a, b = der_risk_tangents(grid, sur, ops[1], {"vdsi": 1.0}, np.full(len(t.der), 150.0), 9)
    assert a.shape == b.shape == (len(t.der), 8)
    assert np.all(np.diff(b, axis=1) >= -1e-12)               # convex: slopes non-decreasing
    assert b[kind == "pv"].mean() > b[kind == "wind"].mean()
    with pytest.raises(ValueError, match="quantity"):
        risk_gradient(grid, sur, ops[0], "voltage")


def test_lower_convex_tangents_by_hand():
    from env.stvs.surrogate import lower_convex_tangents

    p = np.array([0.0, 1.0, 2.0, 3.0])
    r = np.array([1.0, 2.0, 0.0, 3.0])            # hull: (0,1) -> (2,0) -> (3,3)
    a, b = lower_convex_tangents(p, r, 3)
    np.testing.assert_allclose(b[:2], [-0.5, 3.0])
    np.testing.assert_allclose(a[:2], [1.0, -6.0])
    env_at = np.max(a[:, None] + b[:, None] * p[None, :], axis=0)
    np.testing.assert_allclose(env_at, [1.0, 0.5, 0.0, 3.0])


def test_flex_settings_deviation_price_validates():
    from policies.flex_coordinated import FlexSettings

    with pytest.raises(ValueError):
        FlexSettings(stvs_deviation_per_h=-1.0)
    with pytest.raises(ValueError, match="stvs_surrogate"):
        FlexSettings(stvs_surrogate="cnn")


RISK_PER_H, DEVIATION_PER_H = 2000.0, 20000.0      # the stress comparison's prices (docs/stvs.md)


@pytest.mark.slow
def test_stvs_aware_schedule_moves_midday_output_off_the_pv_site():
    """No ANDES: the STVS-aware schedule of the stress day uses less transmission PV at the stress hours."""
    import env
    from controller.stvs_stress import STRESS_REGIME, play_schedule, stress_steps
    from policies.flex_coordinated import FlexSettings

    grid = env.load_case("t14d2")
    pv = np.asarray(grid.transmission.der.kind) == "pv"
    pv_bus = grid.transmission.der.bus[pv]
    _, ops0 = play_schedule(grid, STRESS_REGIME, 8402, FlexSettings())
    _, ops1 = play_schedule(grid, STRESS_REGIME, 8402, FlexSettings(stvs_risk_per_h=RISK_PER_H,
                                                               stvs_deviation_per_h=DEVIATION_PER_H,
                                                               stvs_surrogate="band"))
    steps = stress_steps(grid, ops0, 3)
    pv0 = sum(ops0[k].der_p_mw[pv_bus].sum() for k in steps)
    pv1 = sum(ops1[k].der_p_mw[pv_bus].sum() for k in steps)
    assert pv1 < 0.6 * pv0


@pytest.mark.slow
def test_stress_case_andes_stvs_aware_lowers_the_overvoltage_and_stays_stable():
    """Seed 002 Figure 8 on t14d2 (real ANDES runs, the worst stress hour): without the STVS terms
    the settled post-fault voltage exceeds 1.05 p.u.; the STVS-aware schedule stays stable and
    lowers it by at least 0.03 p.u. It does NOT bring it within 1.05 p.u. (docs/stvs.md
    "Stress case": the prices that would, move the output onto a site where ANDES collapses)."""
    pytest.importorskip("andes")
    from controller.stvs_stress import V_LIMIT_PU, compare, summary_row

    without, aware = compare(8402, risk_per_h=RISK_PER_H, deviation_per_h=DEVIATION_PER_H, n_steps=1)
    r0, r1 = summary_row(8402, without), summary_row(8402, aware)
    assert r0["tvci_min"] == 1 and r1["tvci_min"] == 1
    assert r0["v_settled_max_pu"] > V_LIMIT_PU
    assert r1["v_settled_max_pu"] <= r0["v_settled_max_pu"] - 0.03


@pytest.mark.slow
def test_stress_case_andes_figure8_on_seed_8403_at_a_high_deviation_price():
    """Seed 002 Figure 8's outcome where it holds on t14d2 (real ANDES runs, three stress hours):
    seed 8403, rho_V = 70 000 - without STVS the settled post-fault maximum exceeds 1.05 p.u.,
    STVS-aware it is within and every hour recovers. Fragile (docs/stvs.md "Stress case"): at the
    same price seed 8402 collapses at one hour, the output moved onto the wind site at bus 8."""
    pytest.importorskip("andes")
    from controller.stvs_stress import V_LIMIT_PU, compare, summary_row

    without, aware = compare(8403, risk_per_h=RISK_PER_H, deviation_per_h=70000.0, n_steps=3)
    r0, r1 = summary_row(8403, without), summary_row(8403, aware)
    assert r0["tvci_min"] == 1 and r1["tvci_min"] == 1
    assert r0["v_settled_max_pu"] > V_LIMIT_PU >= r1["v_settled_max_pu"]
