"""Flexibility supply and margins of a T-D grid (seed 002 §4.3-§4.4, docs/flexibility.md §5-§6).

Supply over an interval of ``dt_h`` hours from an operating point (magnitudes, MW, >= 0;
"up" = more generation or less consumption):

- thermal and hydro unit g at ``P``: ``up = min(P_max - P, R dt)``, ``down = min(P - P_min, R dt)``,
  where ``P_min`` of a deep-peak-shaving unit is its oil-assisted minimum ``P_c``; nuclear: 0.
- feeder renewables: ``up = available - used`` (curtailed headroom), ``down = used``.
- storage at ``p`` (charging > 0) and energy ``e``: ``up = p + min(p_max, e eta_d / dt)``,
  ``down = min(p_max, (e_max - e) / (eta_c dt)) - p`` (both clipped at 0).
- EV stations at ``p`` within the step's ``[p_lo, p_hi]``: ``up = p - p_lo``, ``down = p_hi - p``.

Margins ``f = supply - demand`` per network (seed §4.3: ``f_D = f_D,S - f_D,N``,
``f_T = f_T,S - f_T,N``). Boundary exchange (seed §4.4): feeder k offers the transmission
at most its positive margin, and no more than the interface can carry on top of the scheduled
head power ``P_k`` (import > 0): ``f_BD,k^u <= min(f_D,k^u+, P_B^max + P_k)``,
``f_BD,k^d <= min(f_D,k^d+, P_B^max - P_k)``. The system is short when
``f_T + sum_k f_BD,k < 0`` (in either direction).

Tie lines between feeders (``Grid.tie_lines``) move flexibility before the boundary: a feeder
with a negative margin takes ``min(-f_a, f_b+, p_tie)`` from the other end's surplus, per
direction (:func:`tie_transfer`); the feeder margins reported are after the transfer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from env.network import Grid

__all__ = ["FlexSchedule", "FlexMargins", "unit_supply", "storage_supply", "margins", "tie_transfer"]


def unit_supply(kind: np.ndarray, p_mw: np.ndarray, p_min_mw: np.ndarray, p_max_mw: np.ndarray,
                ramp_mw_per_h: np.ndarray, dt_h: float) -> tuple[np.ndarray, np.ndarray]:
    """Up and down supply of transmission units at outputs ``p_mw`` (..., n_unit); nuclear gives none."""
    p = np.asarray(p_mw, dtype=float)
    movable = np.asarray(kind) != "nuclear"
    up = np.minimum(np.maximum(p_max_mw - p, 0.0), ramp_mw_per_h * dt_h) * movable
    down = np.minimum(np.maximum(p - p_min_mw, 0.0), ramp_mw_per_h * dt_h) * movable
    return up, down


def storage_supply(p_mw: np.ndarray, e_mwh: np.ndarray, p_max_mw: np.ndarray, e_max_mwh: np.ndarray,
                   eta_c: np.ndarray, eta_d: np.ndarray, dt_h: float) -> tuple[np.ndarray, np.ndarray]:
    """Up and down supply of batteries at power ``p_mw`` (charging > 0) and energy ``e_mwh``."""
    p, e = np.asarray(p_mw, dtype=float), np.asarray(e_mwh, dtype=float)
    up = p + np.minimum(p_max_mw, e * eta_d / dt_h)
    down = np.minimum(p_max_mw, (e_max_mwh - e) / (eta_c * dt_h)) - p
    return np.maximum(up, 0.0), np.maximum(down, 0.0)


@dataclass(frozen=True)
class FlexSchedule:
    """An operating point per step (T steps of ``dt_h`` hours), e.g. a played day at hour marks.

    Attributes:
        thermal_p_mw: (T, n_unit) transmission unit outputs (GenTable order).
        der_avail_mw / der_used_mw: (T, n_der_feeders) feeder renewables (feeder order).
        storage_p_mw / storage_e_mwh: (T, n_storage) feeder batteries (charging > 0).
        ev_p_mw / ev_lo_mw / ev_hi_mw: (T, n_evcs) station power and its step range.
        head_p_mw: (T, n_feeder) feeder import at the boundary.
    """

    dt_h: float
    thermal_p_mw: np.ndarray
    der_avail_mw: np.ndarray
    der_used_mw: np.ndarray
    storage_p_mw: np.ndarray
    storage_e_mwh: np.ndarray
    ev_p_mw: np.ndarray
    ev_lo_mw: np.ndarray
    ev_hi_mw: np.ndarray
    head_p_mw: np.ndarray

    @property
    def n_steps(self) -> int:
        return int(self.thermal_p_mw.shape[0])


@dataclass(frozen=True)
class FlexMargins:
    """Supplies (MW, >= 0) by type, per feeder margins and the boundary exchange, per step.

    ``supply_up[kind]`` / ``supply_down[kind]`` for kind in thermal, hydro, nuclear and
    distribution (sum over feeders); ``feeder_supply_*`` (T, n_feeder); ``feeder_margin_*`` and
    ``transmission_margin_*`` = supply - demand (signed; feeders after the tie lines' transfer
    ``tie_*`` (T, n_tie), > 0 from ``to_feeder`` to ``from_feeder``); ``boundary_*`` (T, n_feeder) the exchange;
    ``shortfall_*`` (T,) the system's unmet flexibility (>= 0).
    """

    supply_up: dict[str, np.ndarray]
    supply_down: dict[str, np.ndarray]
    feeder_supply_up: np.ndarray
    feeder_supply_down: np.ndarray
    feeder_margin_up: np.ndarray
    feeder_margin_down: np.ndarray
    tie_up: np.ndarray
    tie_down: np.ndarray
    transmission_margin_up: np.ndarray
    transmission_margin_down: np.ndarray
    boundary_up: np.ndarray
    boundary_down: np.ndarray
    shortfall_up: np.ndarray
    shortfall_down: np.ndarray

    @property
    def shortfall_steps(self) -> int:
        """Steps where the system cannot cover its demand in some direction."""
        return int(np.count_nonzero((self.shortfall_up > 1e-9) | (self.shortfall_down > 1e-9)))


def _per_feeder(values: np.ndarray, owner: np.ndarray, n_feeder: int) -> np.ndarray:
    out = np.zeros((values.shape[0], n_feeder))
    for k in range(n_feeder):
        out[:, k] = values[:, owner == k].sum(axis=1)
    return out


def tie_transfer(margin: np.ndarray, ties: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Move surplus margin over the tie lines to feeders short of it, one tie after the other.

    ``margin`` (T, n_feeder) signed; returns (margins after, transfer (T, n_tie), > 0 from
    ``to_feeder`` to ``from_feeder``): ``x = min((-m_a)+, m_b+, p_max) - min((-m_b)+, m_a+, p_max)``.
    """
    m = np.array(margin, dtype=float)
    flow = np.zeros((m.shape[0], len(ties)))
    for j, tie in enumerate(ties):
        a, b = tie.from_feeder, tie.to_feeder
        to_a = np.minimum(np.minimum(np.maximum(-m[:, a], 0.0), np.maximum(m[:, b], 0.0)), tie.p_max_mw)
        to_b = np.minimum(np.minimum(np.maximum(-m[:, b], 0.0), np.maximum(m[:, a], 0.0)), tie.p_max_mw)
        flow[:, j] = to_a - to_b
        m[:, a] += flow[:, j]
        m[:, b] -= flow[:, j]
    return m, flow


def margins(grid: Grid, schedule: FlexSchedule, demand_t_up: np.ndarray, demand_t_down: np.ndarray,
            demand_f_up: np.ndarray, demand_f_down: np.ndarray, boundary_p_max_mw: float) -> FlexMargins:
    """Supplies and margins of ``grid`` at ``schedule`` against the demands (up >= 0, down <= 0,
    per step: ``demand_t_*`` (T,) of the transmission's own net load, ``demand_f_*`` (T, n_feeder)
    of each feeder's). See the module docstring for the formulas."""
    if grid.transmission is None:
        raise ValueError("margins: a T-D grid is required")
    if not boundary_p_max_mw > 0:
        raise ValueError(f"margins: boundary_p_max_mw must be > 0, got {boundary_p_max_mw}")
    s, g, dt = schedule, grid.transmission.gen, schedule.dt_h
    up_u, dn_u = unit_supply(g.kind, s.thermal_p_mw, g.p_min_mw, g.p_max_mw, g.ramp_mw_per_h, dt)
    sup_up = {k: up_u[:, g.kind == k].sum(axis=1) for k in ("thermal", "hydro", "nuclear")}
    sup_dn = {k: dn_u[:, g.kind == k].sum(axis=1) for k in ("thermal", "hydro", "nuclear")}
    nf = len(grid.feeders)
    owner = {tab: np.concatenate([np.full(len(getattr(f, tab)), k) for k, f in enumerate(grid.feeders)])
             for tab in ("der", "storage", "evcs")}
    cat = lambda attr, tab: np.concatenate([getattr(getattr(f, tab), attr) for f in grid.feeders])  # noqa: E731
    st_up, st_dn = storage_supply(s.storage_p_mw, s.storage_e_mwh, cat("p_max_mw", "storage"),
                                  cat("e_max_mwh", "storage"), cat("eta_charge", "storage"),
                                  cat("eta_discharge", "storage"), dt)
    f_up = (_per_feeder(np.maximum(s.der_avail_mw - s.der_used_mw, 0.0), owner["der"], nf)
            + _per_feeder(st_up, owner["storage"], nf)
            + _per_feeder(np.maximum(s.ev_p_mw - s.ev_lo_mw, 0.0), owner["evcs"], nf))
    f_dn = (_per_feeder(s.der_used_mw, owner["der"], nf) + _per_feeder(st_dn, owner["storage"], nf)
            + _per_feeder(np.maximum(s.ev_hi_mw - s.ev_p_mw, 0.0), owner["evcs"], nf))
    sup_up["distribution"], sup_dn["distribution"] = f_up.sum(axis=1), f_dn.sum(axis=1)
    m_f_up, tie_up = tie_transfer(f_up - demand_f_up, grid.tie_lines)
    m_f_dn, tie_dn = tie_transfer(f_dn + demand_f_down, grid.tie_lines)    # demand_f_down <= 0
    t_up = sup_up["thermal"] + sup_up["hydro"] + sup_up["nuclear"]
    t_dn = sup_dn["thermal"] + sup_dn["hydro"] + sup_dn["nuclear"]
    m_t_up, m_t_dn = t_up - demand_t_up, t_dn + demand_t_down
    b_up = np.minimum(np.maximum(m_f_up, 0.0), np.maximum(boundary_p_max_mw + s.head_p_mw, 0.0))
    b_dn = np.minimum(np.maximum(m_f_dn, 0.0), np.maximum(boundary_p_max_mw - s.head_p_mw, 0.0))
    # a feeder short of its own flexibility draws on the transmission (negative margins stay in)
    short_up = np.maximum(-(m_t_up + b_up.sum(axis=1) + np.minimum(m_f_up, 0.0).sum(axis=1)), 0.0)
    short_dn = np.maximum(-(m_t_dn + b_dn.sum(axis=1) + np.minimum(m_f_dn, 0.0).sum(axis=1)), 0.0)
    return FlexMargins(sup_up, sup_dn, f_up, f_dn, m_f_up, m_f_dn, tie_up, tie_dn, m_t_up, m_t_dn, b_up, b_dn,
                       short_up, short_dn)
