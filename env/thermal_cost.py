"""Deep-peak-shaving cost of thermal units (seed 002 §4.1.2, docs/flexibility.md §1).

Per hour, for a unit at output ``P`` (MW):

    C(P) = a P^2 + b P                                        P_a <= P <= P_max
         + (k1 - hs ks) (P_a - P)                              P_b <= P <  P_a
         + (k1 - hs ks) (P_a - P) + k2 (P_b - P)               P_c <= P <  P_b

i.e. ``C = C_n + C_a - C_s + C_o`` with the coal cost ``C_n``, the loss cost
``C_a = k1 (P_a - P)+``, the subsidy ``C_s = hs ks (P_a - P)+`` and the oil cost
``C_o = k2 (P_b - P)+`` (the seed's constant c is dropped: it does not depend on the
dispatch). With ``k1 >= hs ks`` (checked by :class:`env.network.GenTable`) the extra
term is convex: a sum of hinge functions with non-negative slopes.
"""

from __future__ import annotations

import numpy as np

from env.network import GenTable

__all__ = ["deep_peak_cost_per_h", "deep_peak_extra_per_h"]


def deep_peak_extra_per_h(gen: GenTable, p_mw: np.ndarray) -> np.ndarray:
    """The deep-peak-shaving part ``(k1 - hs ks)(P_a - P)+ + k2 (P_b - P)+`` per unit (per hour)."""
    p = np.asarray(p_mw, dtype=float)
    net_loss = gen.cost_deep_loss_per_mwh - gen.deep_subsidy_coeff * gen.deep_subsidy_per_mwh
    return (net_loss * np.maximum(gen.p_normal_min_mw - p, 0.0)
            + gen.cost_deep_oil_per_mwh * np.maximum(gen.p_no_oil_min_mw - p, 0.0))


def deep_peak_cost_per_h(gen: GenTable, p_mw: np.ndarray) -> np.ndarray:
    """The whole running cost per unit and hour: ``c2 P^2 + c1 P`` plus :func:`deep_peak_extra_per_h`."""
    p = np.asarray(p_mw, dtype=float)
    return gen.cost_c2_per_mw2h * p * p + gen.cost_c1_per_mwh * p + deep_peak_extra_per_h(gen, p)
