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


@pytest.mark.slow
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
