"""Monte Carlo operating points of t14d2 for the STVS data set (docs/stvs.md "Data set").

Interval random sampling (seed 002 §5.2) over the load level, the renewable penetration and
the PCC exchange; the synchronous units are then dispatched within their ranges and the slack
unit (bus 0) balances. Points whose slack output leaves its range are resampled.
"""

from __future__ import annotations

import numpy as np

from env.stvs.operating_point import StvsOperatingPoint

LOAD_SCALE = (0.6, 1.3)          # x the case's transmission loads
PENETRATION = (0.0, 1.0)         # share of the T renewables' rating used
PCC_P_MW = (-10.0, 25.0)         # per feeder (negative: reverse flow, DER-rich feeders)
PCC_Q_MVAR = (-6.0, 8.0)
FILL_UNIT_SHARE = 0.25           # stress filling: units in the lowest quarter of their range (must-run days)


def sample_operating_point(grid, rng: np.random.Generator, max_tries: int = 100,  # noqa: ANN001
                           der_max_mw: np.ndarray | None = None, der_fill: bool = False) -> StvsOperatingPoint:
    """One random operating point of a T-D grid (t14d2 sized ranges; see the module doc).

    Stress sampling (docs/stvs.md "Stress case"), ``der_max_mw`` one cap per transmission
    renewable: each renewable U[0, cap] in place of the common penetration draw; with
    ``der_fill`` the units (the slack unit too) are drawn in the lowest quarter of their ranges
    and the renewables take the rest of the balance, split by random shares (each within its cap): high-penetration points, where
    the renewables fill what the units leave.
    """
    t = grid.transmission
    n = t.n_bus
    g = t.gen
    slack = np.flatnonzero(g.bus == t.slack_bus)
    others = np.flatnonzero(g.bus != t.slack_bus)
    if slack.size != 1:
        raise ValueError(f"{grid.name}: the sampling needs one unit at the slack bus")
    cap = None if der_max_mw is None else np.asarray(der_max_mw, dtype=float)
    for _ in range(max_tries):
        s = rng.uniform(*LOAD_SCALE)
        lp = np.bincount(t.load.bus, t.load.p_mw * s, minlength=n)
        lq = np.bincount(t.load.bus, t.load.q_mvar * s, minlength=n)
        if cap is None:
            pen = rng.uniform(*PENETRATION)
            der_units = t.der.p_max_mw * pen * rng.uniform(0.5, 1.0, len(t.der))
        else:
            der_units = rng.uniform(0.0, 1.0, len(t.der)) * cap       # shares when filling
        k = len(grid.boundary_bus)
        pcc_p, pcc_q = rng.uniform(*PCC_P_MW, k), rng.uniform(*PCC_Q_MVAR, k)
        lo, hi = g.p_min_mw, g.p_max_mw
        if der_fill:
            hi = lo + FILL_UNIT_SHARE * (hi - lo)
        p_units = rng.uniform(lo[others], hi[others])
        if der_fill:
            p_slack = rng.uniform(lo[slack[0]], hi[slack[0]])
            room = lp.sum() + pcc_p.sum() - p_units.sum() - p_slack
            der_units = room * der_units / max(der_units.sum(), 1e-9)
            if room < 0 or np.any(der_units > cap):
                continue
        der = np.bincount(t.der.bus, der_units, minlength=n)
        rest = lp.sum() - der.sum() + pcc_p.sum() - p_units.sum()
        if not g.p_min_mw[slack[0]] - 1e-9 <= rest <= g.p_max_mw[slack[0]] + 1e-9:
            continue
        units = np.zeros(len(g.bus))
        units[others], units[slack] = p_units, rest
        gen = np.bincount(g.bus, units, minlength=n)
        return StvsOperatingPoint(gen, lp, lq, der, tuple(grid.boundary_bus), pcc_p, pcc_q)
    raise RuntimeError(f"no balanced operating point in {max_tries} draws")
