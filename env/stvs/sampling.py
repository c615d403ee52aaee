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


def sample_operating_point(grid, rng: np.random.Generator, max_tries: int = 100) -> StvsOperatingPoint:  # noqa: ANN001
    """One random operating point of a T-D grid (t14d2 sized ranges; see the module doc)."""
    t = grid.transmission
    n = t.n_bus
    g = t.gen
    slack = np.flatnonzero(g.bus == t.slack_bus)
    others = np.flatnonzero(g.bus != t.slack_bus)
    for _ in range(max_tries):
        s = rng.uniform(*LOAD_SCALE)
        lp = np.bincount(t.load.bus, t.load.p_mw * s, minlength=n)
        lq = np.bincount(t.load.bus, t.load.q_mvar * s, minlength=n)
        pen = rng.uniform(*PENETRATION)
        der = np.bincount(t.der.bus, t.der.p_max_mw * pen * rng.uniform(0.5, 1.0, len(t.der)), minlength=n)
        k = len(grid.boundary_bus)
        pcc_p, pcc_q = rng.uniform(*PCC_P_MW, k), rng.uniform(*PCC_Q_MVAR, k)
        p_units = rng.uniform(g.p_min_mw[others], g.p_max_mw[others])
        rest = lp.sum() - der.sum() + pcc_p.sum() - p_units.sum()
        if slack.size != 1 or not g.p_min_mw[slack[0]] <= rest <= g.p_max_mw[slack[0]]:
            continue
        units = np.zeros(len(g.bus))
        units[others], units[slack] = p_units, rest
        gen = np.bincount(g.bus, units, minlength=n)
        return StvsOperatingPoint(gen, lp, lq, der, tuple(grid.boundary_bus), pcc_p, pcc_q)
    raise RuntimeError(f"no balanced operating point in {max_tries} draws")
