"""Grids and days with more ADNs than a case has, for the scaling study (docs/p2p.md §7).

ADN ``k`` of the study is the case's feeder ``k mod K0`` (same PV, storage and forecast), hung at
the case's boundary buses first and then at :data:`EXTRA_BOUNDARY_LABELS`; the extra ADNs' load
adds to the transmission load (their T-buses keep their own loads).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from env.network import Grid
from policies.p2p.data import P2PDay

__all__ = ["EXTRA_BOUNDARY_LABELS", "grid_with_adns"]

#: T-bus labels (IEEE 30) of ADNs beyond the case's own, in order (chosen: load buses not yet used).
EXTRA_BOUNDARY_LABELS = (12, 19, 24, 26, 29, 10, 16, 18, 20, 14)


def grid_with_adns(grid: Grid, day: P2PDay, n_adn: int) -> tuple[Grid, P2PDay]:
    """``grid`` and ``day`` with ``n_adn`` ADNs (fewer: the first ones; more: copies, see the module).

    Raises:
        ValueError: ``n_adn`` < 1 or beyond the case's feeders plus the extra buses.
    """
    k0 = len(grid.feeders)
    if not 1 <= n_adn <= k0 + len(EXTRA_BOUNDARY_LABELS):
        raise ValueError(f"grid_with_adns: n_adn must be in 1..{k0 + len(EXTRA_BOUNDARY_LABELS)}, got {n_adn}")
    if grid.transmission is None:
        raise ValueError(f"grid_with_adns: {grid.name} is not a T-D grid")
    labels = list(np.asarray(grid.transmission.bus.label))
    buses = list(grid.boundary_bus) + [labels.index(b) for b in EXTRA_BOUNDARY_LABELS]
    src = [k % k0 for k in range(n_adn)]
    g = replace(grid, name=f"{grid.name}x{n_adn}", feeders=tuple(grid.feeders[k] for k in src),
                boundary_bus=tuple(buses[:n_adn]))
    pick = lambda arrays: tuple(arrays[k] for k in src)  # noqa: E731
    d = replace(day, load_p_mw=pick(day.load_p_mw), load_q_mvar=pick(day.load_q_mvar),
                der_avail_mw=pick(day.der_avail_mw), e_init_mwh=pick(day.e_init_mwh))
    return g, d
