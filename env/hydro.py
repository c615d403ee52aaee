"""Water spillage of run-of-river hydro units (seed 002 §4.1.2 ``c_S dP_S``, docs/flexibility.md §1b).

A hydro unit with a river inflow ``W = water_inflow_mw`` (the flow's power at the turbines, MW)
turns ``P`` of it; the rest is spilled over the weir:

    spill = (W - P)+                 (MW; zero for units without an inflow)
    C_S   = c_S * sum_units spill    (per hour, ``c_S = cost_spill_per_mwh``)

:class:`env.network.GenTable` requires ``W >= P_max`` where ``W > 0`` (the river carries at
least what the turbines take, no reservoir), so a unit backed down below ``W`` spills, and the
spill penalty makes backing hydro down cost ``c_S`` per MWh. The one home of the equation:
the env prices it in its ``water_spillage`` cost and the planners call the same function with
``pos=cvxpy.pos`` on their decision variables.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from env.network import GenTable

__all__ = ["spill_mw", "spill_cost_per_h"]


def _np_pos(x: Any) -> np.ndarray:
    return np.maximum(x, 0.0)


def spill_mw(gen: GenTable, p_mw: Any, pos: Callable[[Any], Any] = _np_pos) -> Any:
    """Spilled water per unit, ``(W - P)+`` (MW); ``p_mw`` is (n_gen,) or (n_gen, K) (numpy or cvxpy)."""
    w = gen.water_inflow_mw if p_mw.ndim == 1 else gen.water_inflow_mw[:, None]
    return pos(w - p_mw)          # a unit without inflow (W = 0) at P >= 0 spills nothing


def spill_cost_per_h(gen: GenTable, p_mw: Any, pos: Callable[[Any], Any] = _np_pos) -> Any:
    """Spillage penalty per hour, ``c_S (W - P)+`` summed over units (a scalar, or (K,) for (n_gen, K))."""
    return gen.cost_spill_per_mwh @ spill_mw(gen, p_mw, pos)
