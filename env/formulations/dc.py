"""Pieces of a multi-period DC optimal power flow with reserves and ramps (docs/math.md §2).

Like :mod:`env.formulations.distflow`, these builders add the variables and
constraints of one physical component for all periods at once (vectorized; no
loop over periods), so a problem (the TSO's first stage, a centralized T-D plan)
is assembled from them:

* :func:`thermal_units` — setpoints ``P``, up/down reserves ``Ru``, ``Rd``
  (``(T, n_gen)`` MW) with limits, reserve bounds and inter-period ramps that
  include the reserves; fuel cost ``c2 P^2 + c1 P`` and reserve cost ``cR (Ru + Rd)``;
* :class:`DCNetwork` — the PTDF of a transmission network in MW and the
  line-limit / power-balance constraints of an injection expression.

Units: MW, MWh, hours; costs in the tariff currency. Period ``t`` lasts ``dt_h``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from env.network import GenTable, Network
from env.physics.dc import DCModel

__all__ = ["DCNetwork", "ThermalVars", "incidence", "thermal_units"]


def incidence(n_rows: int, rows: np.ndarray) -> np.ndarray:
    """Dense ``(n_rows, len(rows))`` 0/1 matrix with a one at ``(rows[j], j)`` (item -> bus)."""
    rows = np.asarray(rows, dtype=int)
    m = np.zeros((n_rows, rows.shape[0]))
    m[rows, np.arange(rows.shape[0])] = 1.0
    return m


@dataclass(frozen=True, eq=False)
class ThermalVars:
    """Thermal units over ``T`` periods.

    Attributes:
        p_mw, r_up_mw, r_dn_mw: ``(T, n_gen)`` setpoints and cleared up/down reserves.
        constraints: limits, reserve bounds and ramps (see :func:`thermal_units`).
        fuel_cost: ``sum_t,g (c2 P^2 + c1 P) dt`` (convex quadratic).
        reserve_cost: ``sum_t,g cR (Ru + Rd) dt``.
    """

    p_mw: cp.Variable
    r_up_mw: cp.Variable
    r_dn_mw: cp.Variable
    constraints: list[cp.Constraint]
    fuel_cost: cp.Expression
    reserve_cost: cp.Expression


def thermal_units(gen: GenTable, n_periods: int, dt_h: float, reserve_time_h: float,
                  p_initial_mw: np.ndarray | None = None, fuel_segments: int | None = None,
                  substeps: int = 1) -> ThermalVars:
    """Thermal units with reserves and ramps (docs/math.md §2), for ``n_periods`` periods.

    Per period t and unit g::

        P + Ru <= Pmax,   P - Rd >= Pmin,   0 <= Ru <= RU tau,   0 <= Rd <= RD tau
        P_t + Ru_t - P_{t-1} <= RU dt,      P_{t-1} - P_t + Rd_t <= RD dt

    with ``RU = RD = ramp_mw_per_h``, ``tau = reserve_time_h`` (how fast a reserve
    must be delivered) and ``dt = dt_h`` (period length). The first period ramps
    from ``p_initial_mw`` when given (else it is free).

    With ``substeps = k > 1`` the plan is executed in ``k`` steps per period with setpoints
    interpolated linearly between consecutive periods, and a reserve must be rampable within
    each step on top of the step's setpoint change (as the env checks it, from the last
    setpoint): ``(P_t - P_{t-1})/k + Ru_s <= RU dt/k`` and ``(P_{t-1} - P_t)/k + Rd_s <= RD dt/k``
    for ``s`` in ``{t-1, t}`` (a step between the two periods' midpoints may hold either's
    reserve). ``k = 1`` is the per-period ramp above.

    With ``fuel_segments = K`` the fuel cost is the outer piecewise-linear model
    ``F >= c1 P + c2 (2 p_k P - p_k^2)`` (tangents of ``c2 P^2`` at ``K + 1`` points ``p_k``
    evenly spaced on ``[Pmin, Pmax]``): exact at the points, below by at most
    ``c2 ((Pmax - Pmin) / K)^2 / 4`` between them, and linear, so the problem stays an LP.

    Args:
        gen: the thermal units.
        n_periods: T.
        dt_h: period length (h).
        reserve_time_h: delivery time of the reserves (h).
        p_initial_mw: (n_gen,) output before the first period, or None.
        fuel_segments: None for the exact quadratic cost, else K tangent segments.
    """
    if n_periods < 1 or not dt_h > 0 or not reserve_time_h > 0:
        raise ValueError("thermal_units: need n_periods >= 1, dt_h > 0 and reserve_time_h > 0")
    n = len(gen)
    T = int(n_periods)
    P = cp.Variable((T, n), name="thermal_p_mw")
    Ru = cp.Variable((T, n), nonneg=True, name="thermal_r_up_mw")
    Rd = cp.Variable((T, n), nonneg=True, name="thermal_r_dn_mw")
    ramp = np.asarray(gen.ramp_mw_per_h, dtype=float)
    cons = [
        P + Ru <= np.asarray(gen.p_max_mw)[None, :],
        P - Rd >= np.asarray(gen.p_min_mw)[None, :],
        Ru <= (ramp * reserve_time_h)[None, :],
        Rd <= (ramp * reserve_time_h)[None, :],
    ]
    k = int(substeps)
    if k < 1:
        raise ValueError(f"thermal_units: substeps must be >= 1, got {substeps}")
    if T > 1:
        up, dn = (P[1:] - P[:-1]) / k, (P[:-1] - P[1:]) / k
        lim = (ramp * dt_h / k)[None, :]
        cons += [up + Ru[1:] <= lim, dn + Rd[1:] <= lim]
        if k > 1:
            cons += [up + Ru[:-1] <= lim, dn + Rd[:-1] <= lim]
    if p_initial_mw is not None:
        p0 = np.asarray(p_initial_mw, dtype=float).reshape(n)
        cons += [P[0] + Ru[0] - p0 <= ramp * dt_h, p0 - P[0] + Rd[0] <= ramp * dt_h]
    c1 = np.asarray(gen.cost_c1_per_mwh, dtype=float)
    c2 = np.asarray(gen.cost_c2_per_mw2h, dtype=float)
    cr = np.asarray(gen.cost_reserve_per_mwh, dtype=float)
    if not np.any(c2 > 0):
        fuel = dt_h * cp.sum(P @ c1)
    elif fuel_segments is None:
        fuel = dt_h * (cp.sum(P @ c1) + cp.sum(cp.square(P) @ c2))
    else:
        if int(fuel_segments) < 1:
            raise ValueError(f"thermal_units: fuel_segments must be >= 1, got {fuel_segments}")
        F = cp.Variable((T, n), name="thermal_fuel_per_h")
        pk = np.linspace(np.asarray(gen.p_min_mw, float), np.asarray(gen.p_max_mw, float), int(fuel_segments) + 1)
        for p_k in pk:                                     # (n,) one tangent point per unit
            cons.append(F >= cp.multiply(P, (c1 + 2 * c2 * p_k)[None, :]) - (c2 * p_k**2)[None, :])
        fuel = dt_h * cp.sum(F)
    reserve = dt_h * cp.sum((Ru + Rd) @ cr)
    return ThermalVars(P, Ru, Rd, cons, fuel, reserve)


@dataclass(frozen=True, eq=False)
class DCNetwork:
    """A transmission network's DC model in MW (docs/math.md §2).

    ``f = PTDF p + f_shift`` for net injections ``p`` (generation - load, MW) per bus;
    the slack column of the PTDF is zero, so ``1^T p = 0`` must be imposed separately.

    Attributes:
        n_bus: number of buses.
        ptdf: (n_line, n_bus) flows per MW injected (withdrawn at the slack).
        f_shift_mw: (n_line,) flows at zero injection (phase shifters).
        rate_mw: (n_line,) limits (``inf`` if unrated).
    """

    n_bus: int
    ptdf: np.ndarray
    f_shift_mw: np.ndarray
    rate_mw: np.ndarray

    @classmethod
    def from_network(cls, net: Network) -> "DCNetwork":
        """Build from a transmission :class:`Network` (PTDF by :class:`env.physics.dc.DCModel`)."""
        if net.kind != "transmission":
            raise ValueError(f"DCNetwork: {net.name} is a {net.kind}, not a transmission network")
        br = net.branch
        dc = DCModel.build(br.from_bus, br.to_bus, br.x_pu, br.tap, br.shift_rad,
                           n_bus=net.n_bus, slack_bus=net.slack_bus)
        return cls(net.n_bus, dc.ptdf, dc.f_shift_pu * net.base_mva, np.asarray(br.rate_mva, dtype=float))

    @property
    def rated(self) -> np.ndarray:
        """Indices of the lines with a finite rating."""
        return np.flatnonzero(np.isfinite(self.rate_mw))

    def balance(self, injection_mw: cp.Expression) -> cp.Constraint:
        """``1^T p_t = 0`` for every period (rows of the ``(T, n_bus)`` injection)."""
        return cp.sum(injection_mw, axis=1) == 0

    def line_limits(self, injection_mw: cp.Expression) -> list[cp.Constraint]:
        """``-Fmax <= PTDF p_t + f_shift <= Fmax`` on the rated lines, all periods at once."""
        rated = self.rated
        if rated.size == 0:
            return []
        flows = injection_mw @ self.ptdf[rated].T + self.f_shift_mw[rated][None, :]
        rate = self.rate_mw[rated][None, :]
        return [flows <= rate, flows >= -rate]
