"""STVS: the indices on a synthetic trajectory (hand computation) and ANDES runs (docs/stvs.md)."""

import numpy as np
import pytest

from env.stvs.indices import tvci, vdsi
from env.stvs.operating_point import StvsOperatingPoint


def test_vdsi_matches_hand_computation():
    # two buses, samples every 0.5 s from T_C = 0.4 to T = 2.4 (window 2 s)
    t = np.array([0.0, 0.4, 0.9, 1.4, 1.9, 2.4])
    v = np.array([[1.0, 1.0], [0.5, 0.9], [0.7, 0.85], [0.9, 1.3], [1.0, 1.0], [1.0, 1.0]])
    # D (eps 0.2) from T_C: bus 0: .5 .3 0 0 0 ; bus 1: 0 0 .3 0 0 -> sums per sample .5 .3 .3 0 0
    integral = 0.5 * (0.5 + 0.3) * 0.5 + 0.5 * (0.3 + 0.3) * 0.5 + 0.5 * (0.3 + 0.0) * 0.5
    assert vdsi(t, v, t_clear_s=0.4, t_end_s=2.4) == pytest.approx(integral / (2 * 2.0))
    # a run that stops at 1.4 s (collapse): D = 1 on both buses from 1.4 s to 2.4 s
    collapsed = (0.5 * (0.5 + 0.3) * 0.5 + 0.5 * (0.3 + 0.3) * 0.5 + 2 * 1.0) / (2 * 2.0)
    assert vdsi(t[:4], v[:4], t_clear_s=0.4, t_end_s=2.4) == pytest.approx(collapsed)


def test_tvci_recovered_low_and_diverged():
    t = np.linspace(0, 3, 31)
    v = np.ones((31, 2))
    assert tvci(t, v, 3.0, reached_end=True) == 1
    low = v.copy()
    low[t >= 2.0, 1] = 0.75                     # sustained low voltage at the end
    assert tvci(t, low, 3.0, reached_end=True) == 0
    assert tvci(t[:20], v[:20], 3.0, reached_end=False) == 0


def test_operating_point_validates():
    z = np.zeros(14)
    with pytest.raises(ValueError, match="boundary"):
        StvsOperatingPoint(z, z, z, z, (13,), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="out of range"):
        StvsOperatingPoint(z, z, z, z, (20,), np.zeros(1), np.zeros(1))


def fixed_operating_point() -> StvsOperatingPoint:
    """t14d2's transmission loads at their nominal size, feeders drawing 15 MW / 5 MVAr each."""
    from env.cases import load_case

    t = load_case("t14d2").transmission
    lp = np.bincount(t.load.bus, t.load.p_mw, minlength=14)
    lq = np.bincount(t.load.bus, t.load.q_mvar, minlength=14)
    gen = np.zeros(14)
    gen[[1, 2, 5]] = [70.0, 90.0, 40.0]
    return StvsOperatingPoint(gen, lp, lq, np.zeros(14), (13, 12), np.array([15.0, 15.0]), np.array([5.0, 5.0]))


def test_andes_fault_cleared_in_time_is_stable_and_delayed_is_not():
    pytest.importorskip("andes")
    from env.stvs.andes_sim import DELAYED_CLEARING, FaultSpec, simulate

    op = fixed_operating_point()
    ok = simulate(op, FaultSpec())
    assert ok.reached_end and ok.tvci == 1
    assert ok.v_pu[(ok.t_s > 0.25) & (ok.t_s < 0.35)].min() < 0.5    # the fault did depress voltages
    assert ok.vdsi < 0.05
    bad = simulate(op, DELAYED_CLEARING)
    assert bad.tvci == 0
    assert bad.vdsi > ok.vdsi + 0.3


def test_surrogate_fit_learns_a_separable_rule():
    from env.stvs.surrogate import StvsSurrogate

    rng = np.random.default_rng(8410)
    x = rng.normal(size=(300, 3))
    stable = (x[:, 0] + 0.5 * x[:, 1] < 0.3).astype(int)
    vd = np.where(stable == 1, 0.01, 0.9) + 0.1 * x[:, 2] ** 2
    m = StvsSurrogate.fit(x[:200], stable[:200], vd[:200], l2=0.1)
    tv_hat, vd_hat = m.predict(x[200:])
    assert np.mean(tv_hat == stable[200:]) >= 0.9
    assert np.abs(vd_hat - vd[200:]).mean() < 0.15


def test_loop_records_stvs_on_t14d2_only():
    import gymnasium as gym

    import env  # noqa: F401 - registers the ids
    from controller.loop import LoopSettings, RollingController
    from policies import make_policy

    e = gym.make("gridroll/TDGrid-v0", case="t14d2", regime="cloudy", dt_minutes=60)
    steps = RollingController(e, make_policy("heuristic", e.unwrapped.grid),
                              settings=LoopSettings(reactive=False)).run_day(8402).steps
    sys_rows = steps[steps.area == "system"]
    assert len(sys_rows) == 24
    assert set(sys_rows.stvs_tvci.unique()) <= {0, 1}
    assert (sys_rows.stvs_vdsi >= 0).all() and sys_rows.stvs_vdsi.notna().all()
    d = gym.make("gridroll/TDGrid-v0", case="d33", regime="cloudy", dt_minutes=60)
    other = RollingController(d, make_policy("heuristic", d.unwrapped.grid),
                              settings=LoopSettings(reactive=False)).run_day(8402).steps
    assert "stvs_tvci" not in other.columns


TVCI_ACCURACY_FLOOR = 0.9      # seed 002: 90 % over 100 test scenarios
VDSI_REL_ERROR_CEILING = 0.3   # seed 002: 26.5 % aggregated over the test scenarios


def test_shipped_surrogate_on_the_held_out_split():
    from pathlib import Path

    from env.stvs.surrogate import StvsSurrogate

    d = np.load(Path(__file__).parent / "data" / "stvs_t14d2_test.npz")
    assert len(d["tvci"]) >= 100
    tv, vd = StvsSurrogate.load().predict(d["x"])
    assert np.mean(tv == d["tvci"]) >= TVCI_ACCURACY_FLOOR
    assert np.abs(vd - d["vdsi"]).sum() / np.abs(d["vdsi"]).sum() <= VDSI_REL_ERROR_CEILING


def test_instability_gradient_points_at_the_loaded_slack_unit():
    """The data set's unstable points load the slack unit (bus 0) heavily: near the boundary,
    more slack output raises the surrogate's instability probability."""
    from env.cases import load_case
    from env.stvs.surrogate import StvsSurrogate, risk_gradient

    grid = load_case("t14d2")
    op = fixed_operating_point()
    sur = StvsSurrogate.load()
    probs = []
    for g0 in (60.0, 100.0, 140.0, 180.0):
        gen = op.gen_p_mw.copy()
        gen[0] = g0
        shifted = StvsOperatingPoint(gen, op.load_p_mw, op.load_q_mvar, op.der_p_mw, op.pcc_bus,
                                     op.pcc_p_mw, op.pcc_q_mvar)
        p, g_unit, g_head, g_der = risk_gradient(grid, sur, shifted)
        probs.append(p)
        assert g_unit.shape == (len(grid.transmission.gen),) and g_head.shape == (2,)
        assert g_der.shape == (len(grid.transmission.der),) and g_der[0] == g_der[-1]   # summed feature
    assert probs[0] < 0.5 < probs[-1]


def test_flex_coordinated_stvs_term_needs_a_surrogate_for_the_case():
    from env.cases import load_case
    from policies.flex_coordinated import FlexCoordinatedPolicy, FlexSettings

    with pytest.raises(ValueError, match="surrogate"):
        FlexCoordinatedPolicy(load_case("t30d2"), flex=FlexSettings(stvs_risk_per_h=100.0))
    with pytest.raises(ValueError):
        FlexSettings(stvs_risk_per_h=-1.0)
