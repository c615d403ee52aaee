"""Multi-period dispatch formulation of a grid (data / formulation / problem split).

The building blocks shared by the certainty-equivalent MPC (``policies.mpc``) and the
perfect-information yardstick (``policies.perfect_information``). Every block covers K
periods at once (the period axis is the "scenario" axis of :mod:`env.formulations.distflow`,
so a feeder over K periods is one vectorized DistFlow block) and takes its data either as
numpy constants (a model solved once) or as cvxpy Parameters (a model built once and
re-solved; all blocks keep DPP: no Parameter multiplies another).

Blocks (MW, MWh, MVAr; per unit only inside the DistFlow blocks):

* :func:`network_block` — every feeder as DistFlow-SOC or LinDistFlow over K periods (the
  :mod:`env.formulations.distflow` builders; or LinDistFlow solved for the voltages,
  ``"lin_compact"``); the bus injections are built from the env's own incidence maps
  (:class:`GridIndex`, taken from :class:`env.simulator.GridModel`):
  ``p = -load + DER used - EV - storage``, ``q = -load_q + compensator q``.
* :func:`storage_block` — ``e_{k+1} = e_k + (eta_c p^c_k - p^d_k / eta_d) dt``,
  ``0 <= e <= e_max``, ``0 <= p^c, p^d <= p_max`` (net power ``p^c - p^d``).
* :func:`der_block` — used renewable output ``0 <= w <= available``.
* :func:`ev_aggregate_block` — docs/math.md §3 virtual storage per station:
  ``p_lo <= P_k <= p_hi``, ``x_lo_k - u_k <= sum_{j<=k} P_j dt <= x_hi_k`` (``u >= 0`` a
  shortfall slack the caller prices).
* :func:`ev_session_block` — one variable per (EV, connected step): ``0 <= p <= p_max``
  and ``e_D = e_0 + eta dt sum p <= E_cap`` (V2G: charge/discharge parts and the battery
  within ``[0, E_cap]`` after every step), unmet energy ``u >= e_req - e_D``. This is the
  exact set of individual schedules (the env's split picks one point of it).
* :func:`ev_day_aggregate_block` — the stations' outer approximation of a whole day's
  sessions (sums of the individual cumulative bounds, :func:`ev_day_bounds`), with a
  shortfall allowance; much sparser than the per-EV block.
* :func:`thermal_block` — setpoints and reserves inside the env's projection set:
  ``p_min <= P <= p_max``, ``|P_k - P_{k-1}| <= ramp dt``,
  ``0 <= r_up <= min(p_max - P, P_{k-1} + ramp dt - P)``,
  ``0 <= r_dn <= min(P - p_min, P - P_{k-1} + ramp dt)``.
* cost pieces (:func:`energy_cost`, :func:`fuel_cost`, :func:`voltage_penalty`) written once
  and used by both problems.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from env.formulations.distflow import FeederVars, get_formulation

__all__ = [
    "Array", "EVAggregateBlock", "EVDayAggregateBlock", "EVSessionBlock", "GridIndex", "NetworkBlock",
    "StorageBlock", "ThermalBlock", "der_block", "energy_cost", "ev_aggregate_block", "ev_day_aggregate_block",
    "ev_day_bounds", "ev_session_block", "fuel_cost", "network_block", "storage_block", "thermal_block",
    "voltage_penalty",
]

#: numpy constants or cvxpy expressions (Parameters included)
Array = np.ndarray | cp.Expression


def _zeros(*shape: int) -> np.ndarray:
    return np.zeros(shape)


# ============================================================================ grid index


@dataclass(frozen=True, eq=False)
class GridIndex:
    """Static incidence maps of a grid, per feeder, from the env's own :class:`GridModel`.

    Attributes:
        feeders: the feeder networks.
        load_bus: per feeder, (n_bus_f, n_load) 0/1 map of every load (layout order, feeder
            loads first) onto the feeder's buses (zero columns for other feeders' loads).
        ev_bus, storage_bus, der_bus, comp_bus: per feeder, (n_bus_f, n_item) maps of the
            dispatch-order stations, batteries, DER (all, transmission DER included) and
            compensators onto the feeder's buses.
        n_load_f: number of feeder loads (the rest are transmission loads).
        n_der_f: number of feeder DER (the rest are transmission wind farms).
        station_feeder: (n_feeder, n_station) 0/1: which stations sit on each feeder (the
            feeder ``k`` is boundary ``k`` on T-D cases).
    """

    feeders: tuple[Any, ...]
    load_bus: tuple[sp.csr_matrix, ...]
    ev_bus: tuple[sp.csr_matrix, ...]
    storage_bus: tuple[sp.csr_matrix, ...]
    der_bus: tuple[sp.csr_matrix, ...]
    comp_bus: tuple[sp.csr_matrix, ...]
    n_load_f: int
    n_der_f: int
    station_feeder: np.ndarray

    @classmethod
    def from_model(cls, model: Any) -> "GridIndex":
        """Slice the stacked maps of an :class:`env.simulator.GridModel` per feeder."""
        m = model
        sz = m.sizes
        n_ev, n_st = sz.n_evcs, sz.n_storage
        ev = m.m_ctrl[:, :n_ev]
        st = m.m_ctrl[:, n_ev:n_ev + n_st]
        der_f = -m.m_ctrl[:, n_ev + n_st:]
        n_der = sz.n_der
        der = np.hstack([der_f, np.zeros((m.n_fb, n_der - der_f.shape[1]))])
        n_load = m.m_load.shape[1] + m.n_load_t
        load = np.hstack([m.m_load, np.zeros((m.n_fb, n_load - m.m_load.shape[1]))])
        rows = m.feeder_bus_slices
        csr = lambda a: tuple(sp.csr_matrix(a[sl]) for sl in rows)  # noqa: E731
        return cls(feeders=tuple(m.grid.feeders), load_bus=csr(load), ev_bus=csr(ev), storage_bus=csr(st),
                   der_bus=csr(der), comp_bus=csr(m.m_comp), n_load_f=int(m.m_load.shape[1]),
                   n_der_f=int(der_f.shape[1]), station_feeder=np.asarray(m.f_ev))

    @property
    def n_feeder(self) -> int:
        return len(self.feeders)


# ============================================================================ network


@dataclass(frozen=True, eq=False)
class NetworkBlock:
    """All feeders over K periods.

    Attributes:
        feeders: one :class:`FeederVars` per feeder (columns = periods); ``None`` entries for
            the compact LinDistFlow (no flow variables).
        head_mw: list of (K,) expressions, power imported at each feeder's root (MW).
        loss_mw: list of (K,) expressions, series active losses (SOC: ``sum r l``; Lin: 0).
        v: list of (n_bus_f, K) squared voltage magnitudes (pu^2).
        v_hat: list of (n_bus_f, K) LinDistFlow voltages of the same injections (pu^2).
        constraints: all of them.
    """

    feeders: list[FeederVars | None]
    head_mw: list[cp.Expression]
    loss_mw: list[cp.Expression | np.ndarray]
    v: list[cp.Expression]
    v_hat: list[cp.Expression]
    constraints: list[cp.Constraint]


def _mul(mat: sp.csr_matrix, x: Array) -> Array:
    """``mat @ x`` that skips empty maps (returns zeros)."""
    if mat.shape[1] == 0 or mat.nnz == 0:
        return np.zeros((mat.shape[0],) + tuple(x.shape[1:]))
    return mat @ x


def network_block(index: GridIndex, formulation: str, n_periods: int, load_p_mw: list[Array],
                  load_q_mvar: list[Array], ev_mw: Array, storage_mw: Array, der_used_mw: Array,
                  q_comp_mvar: Array, current_limits: bool = False) -> NetworkBlock:
    """Every feeder as one DistFlow block over ``n_periods`` periods.

    Args:
        index: the grid's incidence maps.
        formulation: ``"soc"`` (DistFlow-SOC), ``"lin"`` (LinDistFlow with flow variables) or
            ``"lin_compact"``: the same LinDistFlow solved for the voltages, ``v = V_slack^2 +
            2 (R p + X q)`` and ``head = -sum p`` (:meth:`RadialTopology.lin_voltage_matrices`):
            no flow variables, several times fewer columns for the same optimum.
        n_periods: K.
        load_p_mw, load_q_mvar: per feeder, (n_bus_f, K) bus consumption (after any shedding).
        ev_mw: (n_station, K) station power (+ = charging); storage_mw: (n_storage, K) (+ = charging);
            der_used_mw: (n_der, K) used renewable output (transmission rows are ignored here);
            q_comp_mvar: (n_comp, K) compensator output (+ = injecting).
        current_limits: add ``l <= Imax^2`` (SOC only). The env does not enforce line ratings,
            so a relaxation of it must leave them out (default).
    """
    from env.formulations.distflow import DistFlowSOC, radial_topology

    compact = formulation == "lin_compact"
    if compact:
        form = None
    else:
        form = DistFlowSOC(current_limits=current_limits) if formulation == "soc" else get_formulation(formulation)
    feeders, heads, losses, vs, v_hats, cons = [], [], [], [], [], []
    for k, net in enumerate(index.feeders):
        base = float(net.base_mva)
        p_mw = (-load_p_mw[k] + _mul(index.der_bus[k], der_used_mw) - _mul(index.ev_bus[k], ev_mw)
                - _mul(index.storage_bus[k], storage_mw))
        q_mvar = -load_q_mvar[k] + _mul(index.comp_bus[k], q_comp_mvar)
        # LinDistFlow voltages with sparse R, X: a dense Constant times a Parameter-affine
        # expression made cvxpy's DPP compilation grow ~K^2 in memory (4.5 GB for d33, K = 96),
        # and its bound propagation turns dense 0 x inf into NaN variable bounds
        r_mat, x_mat = (sp.csr_matrix(a) for a in radial_topology(net).lin_voltage_matrices())
        v_lin = net.v_slack_pu**2 + 2.0 * (r_mat @ p_mw + x_mat @ q_mvar) / base
        if compact:
            feeders.append(None)
            heads.append(-cp.sum(p_mw, axis=0))
            losses.append(np.zeros(n_periods))
            vs.append(v_lin)
            v_hats.append(v_lin)
            continue
        fv = form.build(net, n_periods, p_mw / base, q_mvar / base)
        feeders.append(fv)
        heads.append(fv.p_head * base)
        losses.append(fv.losses * base if fv.l is not None else np.zeros(n_periods))
        vs.append(fv.v)
        v_hats.append(v_lin)
        cons += fv.constraints
    return NetworkBlock(feeders, heads, losses, vs, v_hats, cons)


# ============================================================================ storage, DER


@dataclass(frozen=True, eq=False)
class StorageBlock:
    """Batteries over K periods (see the module docstring); empty grids give zero arrays."""

    p_charge_mw: cp.Variable | np.ndarray
    p_discharge_mw: cp.Variable | np.ndarray
    e_mwh: cp.Variable | np.ndarray
    constraints: list[cp.Constraint]

    @property
    def net_mw(self) -> Array:
        """Grid-side power, + = charging."""
        return self.p_charge_mw - self.p_discharge_mw

    @property
    def throughput_mw(self) -> Array:
        """``p^c + p^d`` (equals ``|p|`` at any point the env can produce)."""
        return self.p_charge_mw + self.p_discharge_mw


def storage_block(p_max_mw: np.ndarray, e_max_mwh: np.ndarray, eta_c: np.ndarray, eta_d: np.ndarray,
                  e0_mwh: Array, n_periods: int, dt_h: float, p_cap_mw: Array | None = None) -> StorageBlock:
    """Battery energy balance over K periods.

    ``e_0 = e0``; ``e_{k+1} = e_k + (eta_c p^c_k - p^d_k / eta_d) dt``; ``0 <= e <= e_max``;
    ``0 <= p^c, p^d <= p_max`` (and ``<= p_cap`` per period when given, e.g. a mask).
    """
    n = int(np.asarray(p_max_mw).shape[0])
    K = n_periods
    if n == 0:
        z = _zeros(0, K)
        return StorageBlock(z, z, _zeros(0, K + 1), [])
    pc = cp.Variable((n, K), nonneg=True, name="storage_charge_mw")
    pd = cp.Variable((n, K), nonneg=True, name="storage_discharge_mw")
    e = cp.Variable((n, K + 1), name="storage_e_mwh")
    pm = np.asarray(p_max_mw, dtype=float)[:, None]
    cons = [
        pc <= pm, pd <= pm,
        e[:, 0] == e0_mwh,
        e[:, 1:] == e[:, :-1] + dt_h * (cp.multiply(np.asarray(eta_c)[:, None], pc)
                                        - cp.multiply(1.0 / np.asarray(eta_d)[:, None], pd)),
        e >= 0, e <= np.asarray(e_max_mwh, dtype=float)[:, None],
    ]
    if p_cap_mw is not None:
        cons += [pc <= p_cap_mw, pd <= p_cap_mw]
    return StorageBlock(pc, pd, e, cons)


def der_block(avail_mw: Array, n_der: int, n_periods: int) -> tuple[cp.Variable | np.ndarray, list[cp.Constraint]]:
    """Used renewable output ``0 <= w <= avail`` (n_der, K)."""
    if n_der == 0:
        return _zeros(0, n_periods), []
    w = cp.Variable((n_der, n_periods), nonneg=True, name="der_used_mw")
    return w, [w <= avail_mw]


# ============================================================================ EV stations


@dataclass(frozen=True, eq=False)
class EVAggregateBlock:
    """Stations as virtual storage (docs/math.md §3).

    Attributes:
        p_mw: (n_station, K) station power.
        shortfall_mwh: (n_station, K) slack ``u >= 0`` on the cumulative lower bound.
        constraints: bounds.
    """

    p_mw: cp.Variable
    shortfall_mwh: cp.Variable
    constraints: list[cp.Constraint]


def ev_aggregate_block(n_station: int, n_periods: int, dt_h: float, p_lo_mw: Array, p_hi_mw: Array,
                       x_lo_mwh: Array, x_hi_mwh: Array) -> EVAggregateBlock:
    """``p_lo <= P <= p_hi``; ``x_lo - u <= X <= x_hi`` with the cumulative energy from the start of
    period 0 ``X_k = X_{k-1} + P_k dt`` (a chain, so no dense rows); ``u >= 0``."""
    K = n_periods
    P = cp.Variable((n_station, K), name="ev_station_mw")
    X = cp.Variable((n_station, K), name="ev_cumulative_mwh")
    u = cp.Variable((n_station, K), nonneg=True, name="ev_shortfall_mwh")
    cons = [P >= p_lo_mw, P <= p_hi_mw, X[:, 0] == dt_h * P[:, 0], X >= x_lo_mwh - u, X <= x_hi_mwh]
    if K > 1:
        cons.append(X[:, 1:] == X[:, :-1] + dt_h * P[:, 1:])
    return EVAggregateBlock(P, u, cons)


@dataclass(frozen=True, eq=False)
class EVSessionBlock:
    """Every EV's schedule over the day (one variable per connected EV-step).

    Attributes:
        p_kw: (nnz,) grid-side power of each connected (EV, step) pair (net with V2G).
        station_mw: (n_station, T) expression, the stations' delivered power.
        unmet_kwh: (n_ev,) ``u >= max(0, e_req - e_D)``.
        e_final_kwh: (n_ev,) battery at the deadline.
        ev: (nnz,) EV of each pair; step: (nnz,) step of each pair.
        rated_kw: (n_station, T) sum of ``p_max`` of the EVs connected at each step.
        constraints: all of them.
    """

    p_kw: cp.Expression
    station_mw: cp.Expression
    unmet_kwh: cp.Variable
    e_final_kwh: cp.Expression
    ev: np.ndarray
    step: np.ndarray
    rated_kw: np.ndarray
    constraints: list[cp.Constraint]


def ev_session_block(sessions: Any, n_station: int, n_steps: int, dt_h: float, v2g: bool = False) -> EVSessionBlock:
    """Per-EV charging sets of a whole day (exact individual constraints, docs/math.md §3).

    EV ``i`` is connected during ``a_i <= t < D_i = min(departure_i, T)``. Without V2G:
    ``0 <= p_it <= pmax_i`` and ``e0_i + eta_i dt sum_t p_it <= E_cap_i`` (the battery never
    exceeds its capacity because it only charges). With V2G: ``p = p^c - p^d``,
    ``0 <= p^c, p^d <= pmax`` and ``0 <= e0 + dt sum_{tau<=t} (eta p^c - p^d / eta) <= E_cap``
    after every connected step. Unmet: ``u_i >= e_req_i - e_{D_i}``, ``u >= 0``.
    """
    s = sessions
    T = n_steps
    n_ev = len(s)
    a = np.asarray(s.arrival_step, dtype=int)
    d = np.minimum(np.asarray(s.departure_step, dtype=int), T)
    n_conn = np.maximum(d - a, 0)
    ev = np.repeat(np.arange(n_ev), n_conn)
    starts = np.repeat(np.cumsum(n_conn) - n_conn, n_conn)
    step = np.repeat(a, n_conn) + (np.arange(ev.shape[0]) - starts)
    nnz = ev.shape[0]
    pmax = np.asarray(s.p_max_kw, dtype=float)
    eta = np.asarray(s.efficiency, dtype=float)
    st = np.asarray(s.station, dtype=int)
    rated = np.zeros((n_station, T))
    np.add.at(rated, (st[ev], step), pmax[ev])
    to_station = sp.csr_matrix((np.full(nnz, 1e-3), (st[ev] * T + step, np.arange(nnz))), shape=(n_station * T, nnz))
    per_ev = sp.csr_matrix((np.ones(nnz), (ev, np.arange(nnz))), shape=(n_ev, nnz))
    u = cp.Variable(n_ev, nonneg=True, name="ev_unmet_kwh")
    e0, e_req, e_cap = (np.asarray(x, dtype=float) for x in (s.e_arrival_kwh, s.e_request_kwh, s.e_capacity_kwh))
    if nnz == 0:
        zero = cp.Constant(np.zeros((n_station, T)))
        return EVSessionBlock(cp.Constant(np.zeros(0)), zero, u, cp.Constant(e0), ev, step, rated,
                              [u >= e_req - e0])
    if not v2g:
        p = cp.Variable(nnz, nonneg=True, name="ev_p_kw")
        e_final = e0 + dt_h * cp.multiply(eta, per_ev @ p)
        cons = [p <= pmax[ev], e_final <= e_cap]
    else:
        pc = cp.Variable(nnz, nonneg=True, name="ev_charge_kw")
        pd = cp.Variable(nnz, nonneg=True, name="ev_discharge_kw")
        p = pc - pd
        gain = dt_h * (cp.multiply(eta[ev], pc) - cp.multiply(1.0 / eta[ev], pd))
        # cumulative sum within each EV's block: (j, k) with the same EV and k <= j
        rows, cols = _block_lower(n_conn)
        cum = sp.csr_matrix((np.ones(rows.shape[0]), (rows, cols)), shape=(nnz, nnz))
        e_path = e0[ev] + cum @ gain
        e_final = e0 + per_ev @ gain
        cons = [pc <= pmax[ev], pd <= pmax[ev], e_path >= 0, e_path <= e_cap[ev]]
    cons.append(u >= e_req - e_final)
    station = cp.reshape(to_station @ p, (n_station, T), order="C")
    return EVSessionBlock(p, station, u, e_final, ev, step, rated, cons)


@dataclass(frozen=True, eq=False)
class EVDayAggregateBlock:
    """Stations' outer approximation of the day's EV sessions (docs/math.md §3), relaxed for shortfalls.

    Attributes:
        station_mw: (n_station, T) station power variable.
        shortfall_kwh: (n_station,) ``U_s >= 0``, battery energy short of the reachable
            targets (see :func:`ev_day_aggregate_block`).
        unmet_floor_kwh: constant ``sum_i max(0, e_req_i - reachable_i)``: energy no schedule
            can deliver.
        rated_kw: (n_station, T) sum of ``p_max`` of the EVs connected at each step.
        x_lo_mwh, x_hi_mwh: (n_station, T) cumulative energy bounds (from the start of the day).
        constraints: all of them.
    """

    station_mw: cp.Variable
    shortfall_kwh: cp.Variable
    unmet_floor_kwh: float
    rated_kw: np.ndarray
    x_lo_mwh: np.ndarray
    x_hi_mwh: np.ndarray
    constraints: list[cp.Constraint]


def ev_day_bounds(sessions: Any, n_station: int, n_steps: int, dt_h: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-EV cumulative bounds of a day, summed per station (no V2G).

    EV ``i`` (arrival ``a``, deadline ``D = min(departure, T)``, ``n(t) = clip(t + 1 - a, 0, D - a)``
    connected steps up to the end of step ``t``): grid energy delivered by the end of ``t``,
    ``x_i(t) <= hi_i(t) = min((E_cap - e0)/eta, pmax dt n(t))`` and
    ``x_i(t) >= lo_i(t) = max(0, (tgt - e0)/eta - pmax dt max(0, D - 1 - t))`` with the reachable
    target ``tgt = min(e_req, e0 + eta pmax dt (D - a))``.

    Returns:
        (x_lo_kwh, x_hi_kwh, rated_kw) each (n_station, T), and the per-EV unreachable energy
        ``e_req - tgt`` (n_ev,).
    """
    s = sessions
    T = n_steps
    a = np.asarray(s.arrival_step, dtype=float)[:, None]
    d = np.minimum(np.asarray(s.departure_step, dtype=float), T)[:, None]
    t = np.arange(T, dtype=float)[None, :]
    pmax = np.asarray(s.p_max_kw, dtype=float)[:, None]
    eta = np.asarray(s.efficiency, dtype=float)[:, None]
    e0 = np.asarray(s.e_arrival_kwh, dtype=float)[:, None]
    cap = np.asarray(s.e_capacity_kwh, dtype=float)[:, None]
    req = np.asarray(s.e_request_kwh, dtype=float)[:, None]
    n = np.clip(t + 1 - a, 0.0, np.maximum(d - a, 0.0))
    hi = np.minimum((cap - e0) / eta, pmax * dt_h * n)
    tgt = np.minimum(req, e0 + eta * pmax * dt_h * np.maximum(d - a, 0.0))
    lo = np.maximum(0.0, (tgt - e0) / eta - pmax * dt_h * np.maximum(d - 1 - t, 0.0))
    lo = np.minimum(lo, hi)  # equal by construction; guards rounding
    on = ((t >= a) & (t < d)).astype(float) * pmax
    st = np.asarray(s.station, dtype=int)
    sum_st = lambda v: _station_rows(st, v, n_station)  # noqa: E731
    return sum_st(lo), sum_st(hi), sum_st(on), np.maximum(req[:, 0] - tgt[:, 0], 0.0)


def _station_rows(station: np.ndarray, values: np.ndarray, n_station: int) -> np.ndarray:
    """``out[s] = sum_{i: station_i = s} values[i]`` for (n, T) values."""
    out = np.zeros((n_station, values.shape[1]))
    np.add.at(out, station, values)
    return out


def ev_day_aggregate_block(sessions: Any, n_station: int, n_steps: int, dt_h: float) -> EVDayAggregateBlock:
    """Stations as the sum of their EVs' cumulative bounds over the day (no V2G).

    ``0 <= P_st <= rated_st``; cumulative ``X_st = X_s,t-1 + P_st dt`` (a chain: no dense rows);
    ``X_st <= sum_i hi_i(t)`` and ``X_st >= sum_i lo_i(t) - eta_min U_s`` with one shortfall
    ``U_s >= 0`` per station. Every sum of feasible individual schedules satisfies this (it is
    the docs/math.md §3 outer approximation); an EV short of its reachable target by ``u_i`` lowers
    its own ``lo_i`` by at most ``u_i / eta_i``, so ``U_s = sum_i u_i / eta_i * eta_min <= sum_i u_i``
    keeps every schedule with shortfalls inside while charging at most the env's unmet energy.
    """
    lo, hi, rated, floor = ev_day_bounds(sessions, n_station, n_steps, dt_h)
    eta_min = float(np.min(sessions.efficiency)) if len(sessions) else 1.0
    P = cp.Variable((n_station, n_steps), nonneg=True, name="ev_station_mw")
    X = cp.Variable((n_station, n_steps), name="ev_cumulative_mwh")
    U = cp.Variable(n_station, nonneg=True, name="ev_shortfall_kwh")
    cons = [P <= rated * 1e-3, X[:, 0] == P[:, 0] * dt_h, X <= hi * 1e-3,
            X >= lo * 1e-3 - cp.reshape(U, (n_station, 1), order="F") @ np.ones((1, n_steps)) * (1e-3 / eta_min)]
    if n_steps > 1:
        cons.append(X[:, 1:] == X[:, :-1] + P[:, 1:] * dt_h)
    return EVDayAggregateBlock(P, U, float(floor.sum()), rated, lo * 1e-3, hi * 1e-3, cons)


def _block_lower(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of the lower-triangular blocks of a block-diagonal matrix with ``sizes``."""
    rows, cols = [], []
    off = 0
    for n in sizes.tolist():
        if n:
            r, c = np.tril_indices(n)
            rows.append(r + off)
            cols.append(c + off)
        off += n
    if not rows:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    return np.concatenate(rows), np.concatenate(cols)


# ============================================================================ thermal units


@dataclass(frozen=True, eq=False)
class ThermalBlock:
    """Thermal setpoints and cleared reserves inside the env's projection set (n_gen, K)."""

    p_mw: cp.Variable | np.ndarray
    r_up_mw: cp.Variable | np.ndarray
    r_dn_mw: cp.Variable | np.ndarray
    constraints: list[cp.Constraint]


def thermal_block(p_min_mw: np.ndarray, p_max_mw: np.ndarray, ramp_mw_per_h: np.ndarray, p_last_mw: Array,
                  n_periods: int, dt_h: float, ramp_mw: Array | None = None) -> ThermalBlock:
    """Setpoints ``P`` and reserves within limits and ramps from ``p_last`` (the setpoint before
    period 0); exactly the set :meth:`env.projection.StepProjection.project` leaves unchanged.

    ``ramp_mw`` (n_gen, K) overrides the per-period ramp limit ``ramp dt`` (e.g. a Parameter
    that frees the periods after the day's end in a fixed-size window).
    """
    n, K = int(np.asarray(p_min_mw).shape[0]), n_periods
    if n == 0:
        z = _zeros(0, K)
        return ThermalBlock(z, z, z, [])
    P = cp.Variable((n, K), name="thermal_p_mw")
    ru = cp.Variable((n, K), nonneg=True, name="thermal_r_up_mw")
    rd = cp.Variable((n, K), nonneg=True, name="thermal_r_dn_mw")
    lo, hi = np.asarray(p_min_mw, dtype=float)[:, None], np.asarray(p_max_mw, dtype=float)[:, None]
    ramp = np.asarray(ramp_mw_per_h, dtype=float)[:, None] * dt_h if ramp_mw is None else ramp_mw
    last = cp.hstack([cp.reshape(p_last_mw, (n, 1), order="F"), P[:, :-1]]) if K > 1 else cp.reshape(
        p_last_mw, (n, 1), order="F")
    cons = [P >= lo, P <= hi, P - last <= ramp, last - P <= ramp,
            ru <= hi - P, ru <= last + ramp - P, rd <= P - lo, rd <= P - last + ramp]
    return ThermalBlock(P, ru, rd, cons)


# ============================================================================ cost pieces


def energy_cost(head_mw: Array, price_buy_per_mwh: Array, price_sell_per_mwh: Array, dt_h: float) -> cp.Expression:
    """``dt sum_k max(pb_k h_k, ps_k h_k)``: the env's buy/sell cost where ``pb >= ps`` (exact,
    convex); callers pass ``ps = pb`` at periods where they want the linear ``pb h``."""
    return dt_h * cp.sum(cp.maximum(cp.multiply(price_buy_per_mwh, head_mw), cp.multiply(price_sell_per_mwh, head_mw)))


def fuel_cost(p_mw: cp.Expression, c1: np.ndarray, c2: np.ndarray, dt_h: float, p_min_mw: np.ndarray,
              p_max_mw: np.ndarray, n_tangents: int | None = None) -> tuple[cp.Expression, list[cp.Constraint]]:
    """Thermal fuel cost ``dt sum (c2 P^2 + c1 P)`` of (n_gen, K) outputs.

    ``n_tangents=None``: the exact convex quadratic. Otherwise an LP epigraph
    ``z >= c2 (2 g_i P - g_i^2)`` at ``n_tangents`` points ``g_i`` spread over ``[p_min, p_max]``
    (an under-approximation, exact at the points; error at most ``c2 (spacing/2)^2``), which
    keeps a model an LP for HiGHS.
    """
    c1 = np.asarray(c1, dtype=float)
    c2 = np.asarray(c2, dtype=float)
    if n_tangents is None:
        return dt_h * (cp.sum(cp.multiply(c2[:, None], cp.square(p_mw))) + cp.sum(c1 @ p_mw)), []
    z = cp.Variable(p_mw.shape, name="fuel_quadratic")
    cons = []
    for g in np.linspace(np.asarray(p_min_mw, dtype=float), np.asarray(p_max_mw, dtype=float), max(n_tangents, 1)):
        cons.append(z >= cp.multiply((2 * c2 * g)[:, None], p_mw) - (c2 * g * g)[:, None])
    return dt_h * (cp.sum(z) + cp.sum(c1 @ p_mw)), cons + [z >= 0]


def voltage_penalty(v: cp.Expression, v_upper: cp.Expression, vmin: np.ndarray, vmax: np.ndarray,
                    mode: str, v_ub: np.ndarray | None = None) -> cp.Expression:
    """Sum over buses and periods of the voltage violation in p.u. (times the caller's price x dt).

    The env charges ``max(0, vmin - |V|, |V| - vmax)`` per bus with ``|V| = sqrt(v)``.

    Modes:
        ``"linear"``: first-order ``max(0, (vmin^2 - v)/(2 vmin), (v_upper - vmax^2)/(2 vmax))``.
        ``"minorant"``: a convex under-estimator valid for every ``v <= v_ub``: the lower part
            exactly, ``max(0, vmin - sqrt(v))`` (convex in ``v``), plus for the upper part the
            chord of ``sqrt`` between ``vmax^2`` and ``v_ub``: ``max(0, (v - vmax^2) / (sqrt(v_ub) + vmax))``
            (``<= max(0, sqrt(v) - vmax)`` on ``[0, v_ub]`` because sqrt is concave); buses with
            ``v_ub <= vmax^2`` cannot be over-voltage and get no upper term.
    """
    lo = np.asarray(vmin, dtype=float)[:, None]
    hi = np.asarray(vmax, dtype=float)[:, None]
    if mode == "linear":
        return cp.sum(cp.maximum(0.0, cp.maximum((lo**2 - v) / (2 * lo), (v_upper - hi**2) / (2 * hi))))
    if mode != "minorant":
        raise ValueError(f"voltage_penalty mode: 'linear' or 'minorant', got {mode!r}")
    if v_ub is None:
        raise ValueError("voltage_penalty: mode 'minorant' needs v_ub")
    under = cp.sum(cp.pos(lo - cp.sqrt(v)))
    possible = v_ub > hi**2
    if not possible.any():
        return under
    slope = np.where(possible, 1.0 / (np.sqrt(np.maximum(v_ub, 0.0)) + hi), 0.0)
    over = cp.sum(cp.pos(cp.multiply(slope, v_upper - hi**2)))
    return under + over
