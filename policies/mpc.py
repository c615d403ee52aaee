"""Certainty-equivalent model predictive control (MPC) of the active dispatch.

At every step ``t`` the policy solves the multi-period dispatch of
:mod:`env.formulations.dispatch_model` over a window of ``K`` steps (the rest of the day by
default) on the point forecast, and applies the first step:

    min  sum_k [ energy / fuel + reserves - EV revenue + renewable + degradation
                 + curtailment + penalties (voltage, EV shortfall, shedding, boundary) ]
    s.t. every feeder as LinDistFlow (an LP for HiGHS, written in its compact voltage form
         v = V0^2 + 2 (R p + X q), no flow variables) or DistFlow-SOC (Clarabel/ECOS) per step,
         storage energy balance, renewable output <= forecast availability,
         EV stations as virtual storage (docs/math.md §3): P in [p_lo, p_hi], cumulative energy in
         [X_lo - u, X_hi] (u >= 0 at the EV shortfall price),
         T-D: thermal setpoints/reserves inside the env's projection set (ramps from the last
         setpoint), the transmission balance (+ a loss estimate with LinDistFlow), EV reserves
         for the forecast TSO requirement, thermal reserves for a margin and for the EV calls.

Data of the window: step ``t`` is the nowcast in the observation (realized loads and
availability); later steps are the forecast's point forecast (``Forecast.load_pu`` etc.).
Energy at a single feeder's root costs ``max(pb h, ps h)`` (the env's buy/sell prices; where
the buy price is below the feed-in price, valley hours, exports are valued at the buy price to
keep it convex). With LinDistFlow the thermal fuel is an LP by tangents (``fuel_tangents``).
Voltage penalties use the first-order ``|V| - 1 ~ (v - 1)/2``; with DistFlow-SOC the upper
side uses the LinDistFlow voltage ``v_hat >= v`` (keeps the relaxation tight, as the reactive
SOCP does). Compensators are planned (``q`` per step in its limits) but only returned with
``return_reactive=True``; by default the controller's reactive SOCP sets them.

EV stations (:class:`EVForecaster`): the policy replays the env's own EV split
(:class:`env.ev_fleet.EVFleet`) on the sessions it knows (``forecast.known_ev``: every EV plugged in
before ``t``) with the station powers delivered so far (recovered from the observed delivered
energy ``obs.ev.x_kwh``), which gives every connected EV's exact state; EVs plugging in at ``t``
(known only in aggregate through ``obs.ev``) are pooled into one EV per station with the
expected dwell time. Their horizon bounds (:func:`env.evcs.horizon_bounds`) plus the expected
future arrivals (the forecast's arrival rate per component, mean dwell, mean energy at arrival
and request; ports not modelled) make the stations' virtual storage of the window.

The problem is built once per window size with cvxpy Parameters (DPP) and re-solved each step
(with DistFlow-SOC the Parameters are taken as constants at each solve, ``ignore_dpp``: the
DPP compilation of the cone program grows with cone rows x parameters, see :meth:`_solve`);
with the rest-of-day horizon the window is the smallest of ``1, 2, 4, ..., T`` covering the
remaining steps, the steps after the day's end being masked by zero data (and free ramps), so
at most ``log2 T + 1`` problems are ever compiled, once per policy. Every solve's status is
checked; on a failure the policy tries the other solver, then falls back to the heuristic's
action and records it (:attr:`MPCPolicy.fallbacks`, :attr:`MPCPolicy.fallback_log`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, fields
from typing import Any

import cvxpy as cp
import numpy as np

from env.dispatch import Dispatch, DispatchSizes
from env.ev_fleet import EVFleet
from env.evcs import horizon_bounds
from env.hydro import spill_cost_per_h
from env.formulations.dispatch_model import (
    GridIndex,
    der_block,
    energy_cost,
    ev_aggregate_block,
    fuel_cost,
    network_block,
    storage_block,
    thermal_block,
    voltage_penalty,
)
from env.network import Grid
from env.observation import Observation
from env.settings import StrictKwargs
from env.simulator import GridModel, SimulatorSettings
from policies.heuristic import HeuristicPolicy
from policies.solver_quiet import quiet_highs
from scenarios.ev_arrivals import component_rates_per_port_h, rates_on_steps

__all__ = ["EVForecaster", "MPCPolicy", "MPCSettings"]

_SOLVERS = {"lin": ("HIGHS", "CLARABEL"), "soc": ("CLARABEL", "ECOS")}
_X_TOL_KWH = 1e-6


@dataclass(frozen=True)
class MPCSettings(StrictKwargs):
    """Settings of :class:`MPCPolicy` (frozen, validated).

    Attributes:
        horizon_steps: window length in steps; ``None`` = the rest of the day.
        formulation: ``"lin"`` (LinDistFlow, an LP/QP for HiGHS) or ``"soc"`` (DistFlow-SOC).
        solver: first solver (default HIGHS for ``"lin"``, CLARABEL for ``"soc"``); the other
            one of the formulation is the fallback.
        reserve_margin: T-D: thermal up/down reserve held per step as a share of the forecast
            transmission net load (on top of what the EV calls can need).
        loss_factor: T-D with LinDistFlow: feeder losses added to the transmission balance, as
            a share of the feeder load (LinDistFlow has none).
        tso_hedge: T-D: weight (0..1) of the soft requirement that the EV reserves cleared for
            the step being dispatched cover the TSO requirement's whole range
            ``nominal +- u_hat`` (the call is revealed after dispatch); 0 plans on the point
            forecast only.
        expected_arrivals: include the expected future EV arrivals in the stations' bounds.
        return_reactive: return the planned compensator setpoints (else ``q_comp_mvar=None``).
        objective_scale: the objective is divided by this in the solver (conditioning).
        fuel_tangents: with ``"lin"``, the thermal units' quadratic fuel cost is replaced by this
            many tangents (an LP; HiGHS's QP solver is slow on these sizes); ``"soc"`` keeps it exact.
    """

    horizon_steps: int | None = None
    formulation: str = "lin"
    solver: str | None = None
    reserve_margin: float = 0.05
    loss_factor: float = 0.03
    tso_hedge: float = 0.5
    expected_arrivals: bool = True
    return_reactive: bool = False
    objective_scale: float = 1000.0
    fuel_tangents: int = 9

    def __post_init__(self) -> None:
        self.check_types()   # every field by its annotation (env.settings.check_field_types)
        if self.formulation not in _SOLVERS:
            raise ValueError(f"MPCSettings.formulation: 'lin' or 'soc', got {self.formulation!r}")
        h = self.horizon_steps
        if h is not None and (isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1):
            raise ValueError(f"MPCSettings.horizon_steps: None or an integer >= 1, got {h!r}")
        if self.solver is not None and self.solver not in _SOLVERS[self.formulation]:
            raise ValueError(f"MPCSettings.solver: one of {list(_SOLVERS[self.formulation])} for "
                             f"formulation {self.formulation!r}, got {self.solver!r}")
        for name in ("reserve_margin", "loss_factor", "tso_hedge"):
            v = getattr(self, name)
            if not (np.isfinite(v) and 0 <= v <= 1):
                raise ValueError(f"MPCSettings.{name}: must be in [0, 1], got {v!r}")
        if not (np.isfinite(self.objective_scale) and self.objective_scale > 0):
            raise ValueError("MPCSettings.objective_scale: must be finite and > 0")
        if isinstance(self.fuel_tangents, bool) or not isinstance(self.fuel_tangents, (int, np.integer)) \
                or self.fuel_tangents < 2:
            raise ValueError(f"MPCSettings.fuel_tangents: an integer >= 2, got {self.fuel_tangents!r}")

    @property
    def solvers(self) -> tuple[str, ...]:
        """Solvers in the order tried."""
        pair = _SOLVERS[self.formulation]
        first = self.solver or pair[0]
        return (first,) + tuple(s for s in pair if s != first)



# ============================================================================ EV forecasting


@dataclass(frozen=True)
class _Cohorts:
    """Expected arrivals of a day at rate multiplier 1, per arrival step (absolute steps).

    ``rated``, ``lo``, ``hi``: (T + 1, T, n_station) suffix sums over arrival steps ``a >= i``
    (row i) of the arrivals' contributions to the rated power (kW) and the cumulative energy
    bounds (kWh) at every absolute step.
    """

    rated: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


class EVForecaster:
    """Virtual-storage bounds of every station over a window (see the module docstring).

    Args:
        grid: the grid (layout: ports, battery, charger, efficiency).
        n_station: number of stations.
        v2g, enforce_must_run: the env's EV settings (the replay must split as the env does).
    """

    def __init__(self, grid: Grid, n_station: int, v2g: bool = False, enforce_must_run: bool = True,
                 expected_arrivals: bool = True) -> None:
        self.layout = grid.layout
        self.n_station = int(n_station)
        self.v2g = bool(v2g)
        self.enforce_must_run = bool(enforce_must_run)
        self.expected_arrivals = bool(expected_arrivals)
        self.reset()

    def reset(self) -> None:
        """Forget the day."""
        self._delivered_kw: dict[int, np.ndarray] = {}   # step -> station power delivered (kW)
        self._setpoint_kw: dict[int, np.ndarray] = {}    # step -> station setpoint sent (kW)
        self._cohorts: _Cohorts | None = None
        self._cohort_key: Any = None
        self.replay_ok = True
        self.replay_failures = 0

    def record_setpoint(self, t: int, p_kw: np.ndarray) -> None:
        """Remember the station setpoints sent at step ``t`` (the first guess of what was delivered)."""
        self._setpoint_kw[int(t)] = np.asarray(p_kw, dtype=float).copy()

    # ---------------------------------------------------------------- connected EVs
    def replica(self, obs: Observation, forecast: Any) -> EVFleet | None:
        """The env's EV fleet as reconstructed at the start of step ``obs.step`` from the known
        sessions (those plugged in before ``t``); None when the history does not allow it."""
        known = forecast.known_ev if forecast is not None else None
        return self._replica(obs, known) if known is not None else None

    def _replica(self, obs: Observation, known: Any) -> EVFleet | None:
        """An EVFleet of the known sessions replayed to the start of step ``t`` (None if impossible).

        Steps before ``t - 1`` use the delivered powers found earlier; step ``t - 1`` is found now:
        the setpoint sent if it reproduces the observed delivered energy ``obs.ev.x_kwh`` of the
        EVs still connected, else per station by bisection on the delivered power (the split is
        monotone in it, so matching the sum pins down every remaining EV's state).
        """
        t, T, dt = obs.step, obs.n_steps, obs.dt_h
        if t == 0:
            return EVFleet(known, self.n_station, dt, T, v2g=self.v2g, enforce_must_run=self.enforce_must_run)
        if any(k not in self._delivered_kw for k in range(t - 1)) or (t - 1) not in self._setpoint_kw:
            return None
        fleet = EVFleet(known, self.n_station, dt, T, v2g=self.v2g, enforce_must_run=self.enforce_must_run)
        for k in range(t - 1):
            fleet.step(k, self._delivered_kw[k])
        target = np.asarray(obs.ev.x_kwh, dtype=float)

        def play(p_kw: np.ndarray) -> tuple[EVFleet, np.ndarray]:
            f = fleet.copy()
            f.step(t - 1, p_kw)
            return f, f.bounds(t).x_kwh

        b = fleet.bounds(t - 1)
        lo, hi = np.asarray(b.p_min_kw, dtype=float), np.asarray(b.p_max_kw, dtype=float)
        guess = np.clip(self._setpoint_kw[t - 1], lo, hi)
        f, x = play(guess)
        if np.all(np.abs(x - target) <= _X_TOL_KWH * (1.0 + np.abs(target))):
            self._delivered_kw[t - 1] = guess
            return f
        a, z = lo.copy(), hi.copy()                      # bisection per station, all at once
        for _ in range(60):
            mid = 0.5 * (a + z)
            _, x = play(mid)
            low = x < target
            a = np.where(low, mid, a)
            z = np.where(low, z, mid)
        p = 0.5 * (a + z)
        f, x = play(p)
        if not np.all(np.abs(x - target) <= 1e-3 * (1.0 + np.abs(target))):
            return None
        self._delivered_kw[t - 1] = p
        return f

    def bounds(self, obs: Observation, forecast: Any, n_window: int, n_active: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(p_lo, p_hi, x_lo, x_hi) of every station for the window, MW and MWh, shape (n_station, K).

        Step 0 of the window is step ``t`` with the observed bounds; cumulative energies are
        counted from the start of ``t``; steps ``>= n_active`` (after the day's end) are zero/flat.
        """
        K, ns, dt = n_window, self.n_station, obs.dt_h
        h = max(n_active, 1)
        ev = obs.ev
        known = forecast.known_ev if forecast is not None else None
        fleet = self._replica(obs, known) if known is not None else None
        self.replay_ok = fleet is not None
        self.replay_failures += int(fleet is None)
        if fleet is not None:
            idx = np.asarray(fleet.connected(obs.step))
            s = known
            e = np.asarray(fleet.e_kwh)[idx]
            arrays = [e, s.station[idx], s.p_max_kw[idx], s.efficiency[idx], s.e_request_kwh[idx],
                      s.e_capacity_kwh[idx], np.asarray(fleet.deadline_step)[idx].astype(float)]
            b_known = fleet.bounds(obs.step)
            new_n = np.asarray(ev.n_connected) - np.asarray(b_known.n_connected)
            new_e = np.asarray(ev.e_kwh) - np.asarray(b_known.e_kwh)
            new_req = np.asarray(ev.e_target_kwh) - np.asarray(b_known.e_target_kwh)
            new_cap = np.asarray(ev.e_capacity_kwh) - np.asarray(b_known.e_capacity_kwh)
        else:                                             # no replay: pool every connected EV
            arrays = [np.zeros(0)] * 7
            new_n, new_e = np.asarray(ev.n_connected), np.asarray(ev.e_kwh)
            new_req, new_cap = np.asarray(ev.e_target_kwh), np.asarray(ev.e_capacity_kwh)
        pooled = self._pool(obs, forecast, new_n, new_e, new_req, new_cap)
        cols = [np.concatenate([a, p]) for a, p in zip(arrays, pooled)]
        hb = horizon_bounds(cols[0], cols[1].astype(int), cols[2], cols[3], cols[4], cols[5], cols[6],
                            obs.step, h, ns, dt, self.v2g)
        p_hi = np.zeros((ns, K))
        p_lo = np.zeros((ns, K))
        x_lo = np.zeros((ns, K))
        x_hi = np.zeros((ns, K))
        p_hi[:, :h] = hb.p_max_kw.T
        p_lo[:, :h] = hb.p_min_kw.T
        x_lo[:, :h] = hb.x_lo_kwh.T
        x_hi[:, :h] = hb.x_hi_kwh.T
        if forecast is not None and n_active > 1 and self.expected_arrivals:
            rated, lo, hi = self._future(obs, forecast, n_active)
            p_hi[:, 1:n_active] += rated.T
            x_lo[:, 1:n_active] += lo.T
            x_hi[:, 1:n_active] += hi.T
            if self.v2g:
                p_lo[:, 1:n_active] -= rated.T
        # step t: the observed bounds; after the day's end: no power, flat energy
        p_lo[:, 0], p_hi[:, 0] = ev.p_min_kw, ev.p_max_kw
        x_lo[:, 0] = np.minimum(x_lo[:, 0], ev.p_max_kw * dt)
        x_hi[:, 0] = np.minimum(np.maximum(x_hi[:, 0], ev.p_min_kw * dt), ev.p_max_kw * dt)
        if n_active < K:
            p_lo[:, n_active:] = p_hi[:, n_active:] = 0.0
            x_lo[:, n_active:] = x_lo[:, [n_active - 1]]
            x_hi[:, n_active:] = x_hi[:, [n_active - 1]]
        x_lo = np.minimum(x_lo, x_hi)
        return p_lo * 1e-3, np.maximum(p_hi, p_lo) * 1e-3, x_lo * 1e-3, x_hi * 1e-3

    def _pool(self, obs: Observation, forecast: Any, n: np.ndarray, e: np.ndarray, req: np.ndarray,
              cap: np.ndarray) -> list[np.ndarray]:
        """EVs of unknown sessions (plugged in at ``t``), one pooled EV per station: the sum of
        their ratings, energies and requests, deadline ``t + expected dwell``."""
        lay = self.layout
        has = n > 0
        st = np.flatnonzero(has)
        dwell_h = self._dwell_h(obs, forecast)
        dead = min(obs.step + max(1, int(round(dwell_h / obs.dt_h))), obs.n_steps)
        k = n[has].astype(float)
        return [np.maximum(e[has], 0.0), st.astype(float), k * lay.ev_charger_kw, np.full(st.size, lay.ev_efficiency),
                np.maximum(req[has], 0.0), np.maximum(cap[has], 0.0), np.full(st.size, float(dead))]

    @staticmethod
    def _dwell_h(obs: Observation, forecast: Any) -> float:
        """Expected dwell (h) of an EV plugging in now: the components' mean dwells weighted by
        their arrival rates at this time of day."""
        if forecast is None:
            return 2.0
        p = forecast.day_ahead.params.ev
        rates = rates_on_steps(component_rates_per_port_h(p), forecast.day_ahead.dt_minutes)[obs.step]
        means = np.array([_mean_dwell_h(c, p) for c in p.components])
        w = rates / rates.sum() if rates.sum() > 0 else np.full(rates.shape, 1.0 / rates.size)
        return float(w @ means)

    # ---------------------------------------------------------------- future arrivals
    def _future(self, obs: Observation, forecast: Any, n_active: int) -> tuple[np.ndarray, ...]:
        """Expected arrivals after ``t``: (rated kW, x_lo kWh, x_hi kWh), each (n_active - 1, n_station)
        for steps ``t+1 .. t+n_active-1``, scaled by the forecast's arrival-rate multiplier."""
        da = forecast.day_ahead
        key = (id(da), obs.n_steps)
        if self._cohort_key != key:
            self._cohorts = self._build_cohorts(da, obs.n_steps, obs.dt_h)
            self._cohort_key = key
        c = self._cohorts
        assert c is not None
        t = obs.step
        sl = slice(t + 1, t + n_active)
        mult = float(forecast.ev_rate_multiplier)
        return mult * c.rated[t + 1, sl], mult * c.lo[t + 1, sl], mult * c.hi[t + 1, sl]

    def _build_cohorts(self, da: Any, T: int, dt: float) -> _Cohorts:
        """Contributions of the expected arrivals at every step (docs/math.md §3 bounds of a mean EV)."""
        p, lay = da.params.ev, self.layout
        ns = self.n_station
        ports = np.asarray(lay.evcs_n_ports, dtype=float)
        per_port = rates_on_steps(component_rates_per_port_h(p), da.dt_minutes)            # (T, C) EV/h
        batt, pmax, eta = lay.ev_battery_kwh, lay.ev_charger_kw, lay.ev_efficiency
        a_b, b_b = p.soc_arrival_beta
        e0 = batt * a_b / (a_b + b_b)
        target = batt * 0.5 * (p.soc_request_range[0] + p.soc_request_range[1])
        rated = np.zeros((T + 1, T, ns))
        lo = np.zeros((T + 1, T, ns))
        hi = np.zeros((T + 1, T, ns))
        tau = np.arange(T, dtype=float)
        for c_i, comp in enumerate(p.components):
            d_steps = max(1, int(round(_mean_dwell_h(comp, p) / dt)))
            a = np.arange(T, dtype=float)[:, None]                                          # arrival step
            dead = np.minimum(a + d_steps, T)
            n_conn = np.clip(tau[None, :] + 1 - a, 0.0, dead - a)
            need = np.minimum(max(target - e0, 0.0), eta * pmax * dt * (dead - a)) / eta     # (T, 1)
            head = (batt - e0) / eta
            x_hi = np.minimum(head, pmax * dt * n_conn)                                      # (T_a, T_tau)
            x_lo = np.maximum(0.0, need - pmax * dt * np.maximum(dead - 1 - tau[None, :], 0.0))
            on = ((tau[None, :] >= a) & (tau[None, :] < dead)) * pmax
            count = per_port[:, c_i][:, None] * dt * ports[None, :]                        # (T_a, ns)
            rated[:T] += on[:, :, None] * count[:, None, :]
            lo[:T] += np.minimum(x_lo, x_hi)[:, :, None] * count[:, None, :]
            hi[:T] += x_hi[:, :, None] * count[:, None, :]
        for arr in (rated, lo, hi):                                                         # suffix sums over a
            arr[:T] = np.cumsum(arr[:T][::-1], axis=0)[::-1]
        return _Cohorts(rated, lo, hi)


def _mean_dwell_h(comp: Any, p: Any) -> float:
    """Mean of a lognormal dwell (median, sigma) clipped to [dwell_min, dwell_max]."""
    from scipy.special import ndtr

    mu, s = float(np.log(comp.dwell_median_h)), comp.dwell_sigma
    a, b = p.dwell_min_h, p.dwell_max_h
    fa, fb = ndtr((np.log(a) - mu) / s), ndtr((np.log(b) - mu) / s)
    body = np.exp(mu + s * s / 2) * (ndtr((np.log(b) - mu - s * s) / s) - ndtr((np.log(a) - mu - s * s) / s))
    return float(a * fa + body + b * (1 - fb))


# ============================================================================ the window problem


class _Window:
    """The dispatch problem over K steps, built once with Parameters (DPP) and re-solved."""

    def __init__(self, grid: Grid, model: GridModel, index: GridIndex, K: int, dt: float,
                 settings: MPCSettings, ev_reserve_price: float) -> None:
        self.K = K
        m, ix, tar = model, index, grid.tariff
        sz = m.sizes
        self.is_td = m.is_td
        ns, nst, nd, nc = sz.n_evcs, sz.n_storage, sz.n_der, sz.n_comp
        P = cp.Parameter
        self.lp = [P((f.n_bus, K), name=f"load_p_{k}") for k, f in enumerate(grid.feeders)]
        self.lq = [P((f.n_bus, K), name=f"load_q_{k}") for k, f in enumerate(grid.feeders)]
        self.avail = P((nd, K), nonneg=True, name="der_avail") if nd else None
        self.ev_lo, self.ev_hi = P((ns, K), name="ev_p_lo"), P((ns, K), name="ev_p_hi")
        self.x_lo, self.x_hi = P((ns, K), name="ev_x_lo"), P((ns, K), name="ev_x_hi")
        cons: list[cp.Constraint] = []
        used, c = der_block(self.avail if nd else None, nd, K)
        cons += c
        self.st_e0 = P(nst, nonneg=True, name="storage_e0") if nst else None
        self.st_cap = P((nst, K), nonneg=True, name="storage_cap") if nst else None
        self.st_value = P((nst, K), nonneg=True, name="storage_value") if nst else None
        st = storage_block(m.st_p_max, m.st_e_max, m.st_eta_c, m.st_eta_d, self.st_e0 if nst else np.zeros(0),
                           K, dt, self.st_cap)
        cons += st.constraints
        ev = ev_aggregate_block(ns, K, dt, self.ev_lo, self.ev_hi, self.x_lo, self.x_hi)
        cons += ev.constraints
        q = cp.Variable((nc, K), name="q_comp_mvar") if nc else np.zeros((0, K))
        if nc:
            cons += [q >= m.q_min[:, None], q <= m.q_max[:, None]]
        form = "lin_compact" if settings.formulation == "lin" else "soc"
        self.tie = None                                # tie-line transfer (n_tie, K), where a subclass plans one
        net = network_block(ix, form, K, self._bus_loads(grid, m, K, cons), self.lq, ev.p_mw, st.net_mw, used, q)
        cons += net.constraints
        head = cp.Variable(K, name="head_mw")          # a variable: prices (Parameters) multiply it (DPP)
        cons.append(head == cp.sum(cp.vstack(net.head_mw), axis=0))
        viol = 0
        for k, f in enumerate(grid.feeders):
            viol = viol + voltage_penalty(net.v[k], net.v_hat[k], f.bus.vmin_pu, f.bus.vmax_pu, "linear")
        cost = (tar.penalty_voltage_per_puh * dt * viol
                + (tar.ev_subsidy_per_mwh - tar.ev_charging_price_per_mwh) * dt * cp.sum(ev.p_mw)
                + tar.penalty_ev_unmet_per_mwh * cp.sum(ev.shortfall_mwh))
        if nd:
            cost += dt * cp.sum(m.der_cost @ used) + tar.penalty_curtailment_per_mwh * dt * cp.sum(self.avail - used)
        if nst:
            cost += tar.storage_cost_per_mwh * dt * cp.sum(st.throughput_mw) - cp.sum(cp.multiply(self.st_value,
                                                                                                 st.e_mwh[:, 1:]))
        self.th = None
        self.ev_ru = self.ev_rd = np.zeros((0, K))
        self.used, self.st, self.net = used, st, net    # read by _feeder_flex (flex_coordinated) inside _td
        if not self.is_td:
            self.price_a, self.price_b = P(K, name="price_buy"), P(K, name="price_sell")
            cost += energy_cost(head, self.price_a, self.price_b, dt)
        else:
            cost += self._td(grid, m, ix, K, dt, settings, ev_reserve_price, head, used, ev, cons)
        self.problem = cp.Problem(cp.Minimize(cost / settings.objective_scale), cons)
        self.used, self.st, self.ev, self.q, self.net = used, st, ev, q, net

    def _td(self, grid: Grid, m: GridModel, ix: GridIndex, K: int, dt: float, settings: MPCSettings,
            ev_price: float, head: cp.Expression, used: Any, ev: Any, cons: list[cp.Constraint]) -> cp.Expression:
        """Thermal units, transmission balance, reserves and the boundary requirement."""
        tar = grid.tariff
        P = cp.Parameter
        ng, nb, ns = m.n_gen, m.n_boundary, m.sizes.n_evcs
        self.p_last = P(ng, name="thermal_p_last")
        self.ramp = P((ng, K), nonneg=True, name="thermal_ramp")
        th = thermal_block(m.g_p_min, m.g_p_max, m.g_ramp, self.p_last, K, dt, ramp_mw=self.ramp)
        cons += th.constraints
        self.th = th
        self.load_t = P(K, nonneg=True, name="load_t")
        self.loss_est = P(K, nonneg=True, name="loss_estimate")
        shed = cp.Variable(K, nonneg=True, name="shed_t_mw")
        spill = cp.Variable(K, nonneg=True, name="spill_mw")
        wind_t = cp.sum(used[ix.n_der_f:], axis=0) if m.sizes.n_der > ix.n_der_f else 0
        cons += [shed <= self.load_t,
                 cp.sum(th.p_mw, axis=0) + wind_t + shed == self.load_t + head + self.loss_est + spill]
        # EV reserves and the boundary requirement
        self.ev_ru = cp.Variable((ns, K), nonneg=True, name="ev_r_up_mw")
        self.ev_rd = cp.Variable((ns, K), nonneg=True, name="ev_r_dn_mw")
        cons += [self.ev_ru <= ev.p_mw - self.ev_lo, self.ev_rd <= self.ev_hi - ev.p_mw]
        fev = ix.station_feeder
        self.req = P((nb, K), name="tso_requirement")
        self.hedge_up, self.hedge_dn = P((nb, K), nonneg=True, name="hedge_up"), P((nb, K), nonneg=True,
                                                                                  name="hedge_dn")
        deliv = cp.Variable((nb, K), name="delivered_mw")
        h_up, h_dn = cp.Variable((nb, K), nonneg=True), cp.Variable((nb, K), nonneg=True)
        cons += [deliv <= fev @ self.ev_ru, deliv >= -(fev @ self.ev_rd),
                 fev @ self.ev_ru >= self.hedge_up - h_up, fev @ self.ev_rd >= self.hedge_dn - h_dn]
        # thermal reserves: a margin (up / down), plus what the EV calls move (an up call = EVs
        # charge less = surplus), plus feeder flexibility where a subclass counts it (_feeder_flex)
        self.margin_up = P(K, nonneg=True, name="reserve_margin_up")
        self.margin_dn = P(K, nonneg=True, name="reserve_margin_dn")
        self.price_short_up = P(nonneg=True, name="price_short_up")
        self.price_short_dn = P(nonneg=True, name="price_short_dn")
        s_up, s_dn = cp.Variable(K, nonneg=True), cp.Variable(K, nonneg=True)
        f_up, f_dn, f_cost = self._feeder_flex(m, K, dt, cons)
        cons += [cp.sum(th.r_up_mw, axis=0) + f_up >= self.margin_up + cp.sum(self.ev_rd, axis=0) - s_up,
                 cp.sum(th.r_dn_mw, axis=0) + f_dn >= self.margin_dn + cp.sum(self.ev_ru, axis=0) - s_dn]
        self.short_up, self.short_dn = s_up, s_dn
        pb = tar.penalty_boundary_per_mwh * dt
        fuel, c = fuel_cost(th.p_mw, m.g_c1, m.g_c2, dt, m.g_p_min, m.g_p_max,
                            n_tangents=settings.fuel_tangents if settings.formulation == "lin" else None)
        cons += c
        if m.g_deep_peak:        # env.thermal_cost: (k1 - hs ks)(P_a - P)+ + k2 (P_b - P)+, as hinges
            g = m.gen
            d_a, d_b = cp.Variable((ng, K), nonneg=True), cp.Variable((ng, K), nonneg=True)
            cons += [d_a >= g.p_normal_min_mw[:, None] - th.p_mw, d_b >= g.p_no_oil_min_mw[:, None] - th.p_mw]
            net_loss = g.cost_deep_loss_per_mwh - g.deep_subsidy_coeff * g.deep_subsidy_per_mwh
            fuel = fuel + dt * (cp.sum(net_loss @ d_a) + cp.sum(g.cost_deep_oil_per_mwh @ d_b))
        if m.g_spill:            # env.hydro: the env's water spillage cost, on the planned outputs
            fuel = fuel + dt * cp.sum(spill_cost_per_h(m.gen, th.p_mw, cp.pos))
        return (fuel + f_cost
                + dt * (cp.sum(m.g_cr @ (th.r_up_mw + th.r_dn_mw)) + ev_price * cp.sum(self.ev_ru + self.ev_rd))
                + tar.penalty_load_shed_per_mwh * dt * cp.sum(shed)
                + tar.penalty_curtailment_per_mwh * dt * cp.sum(spill)
                + dt * (self.price_short_up * cp.sum(s_up) + self.price_short_dn * cp.sum(s_dn))
                + pb * cp.sum(cp.abs(self.req - deliv))
                + pb * settings.tso_hedge * cp.sum(h_up + h_dn))

    def _bus_loads(self, grid: Grid, m: GridModel, K: int, cons: list[cp.Constraint]) -> list[Any]:
        """Per feeder, the (n_bus, K) bus consumption the network block sees: the load forecast
        (a subclass adds the tie lines' transfer)."""
        return self.lp

    def _feeder_flex(self, m: GridModel, K: int, dt: float, cons: list[cp.Constraint]
                     ) -> tuple[Any, Any, Any]:
        """Feeder flexibility counted in the reserve balance, and its cost: none in the MPC."""
        return 0, 0, 0


# ============================================================================ the policy


class MPCPolicy:
    """Certainty-equivalent MPC (see the module docstring).

    Args:
        grid: the grid.
        horizon_steps: window length (``None`` = rest of the day).
        formulation: ``"lin"`` (default) or ``"soc"``.
        solver: first solver (see :class:`MPCSettings`).
        settings: all settings; ``horizon_steps``, ``formulation`` and ``solver`` override its
            fields when not None.
        simulator_settings: the env's settings (V2G, must-run, EV reserve price).

    Attributes:
        fallbacks: steps of the current day on which the heuristic's action was played.
        fallback_log: ``(step, reason)`` of those steps.
        solve_ms: per step of the current day, wall time of the solve (including fallbacks).
        statuses: per step, the solver status (``"optimal"`` or what failed).
        n_compiled: window problems compiled so far (one per window size).
    """

    name = "mpc"
    _window_class = _Window

    def __init__(self, grid: Grid, horizon_steps: int | None = None, formulation: str | None = None,
                 solver: str | None = None, settings: MPCSettings | None = None,
                 simulator_settings: SimulatorSettings | None = None) -> None:
        explicit = {"horizon_steps": horizon_steps, "formulation": formulation, "solver": solver}
        base = settings or MPCSettings()
        vals = {f.name: getattr(base, f.name) for f in fields(MPCSettings)}
        vals.update({k: v for k, v in explicit.items() if v is not None})
        self.settings = MPCSettings(**vals)
        self.grid = grid
        self.sim_settings = simulator_settings or SimulatorSettings()
        self.model = GridModel(grid)
        self.index = GridIndex.from_model(self.model)
        self.sizes = DispatchSizes.from_grid(grid)
        self.heuristic = HeuristicPolicy(grid)
        self.ev_forecaster = EVForecaster(grid, self.sizes.n_evcs, v2g=self.sim_settings.v2g,
                                          enforce_must_run=self.sim_settings.enforce_must_run,
                                          expected_arrivals=self.settings.expected_arrivals)
        m = self.model
        self._ev_price = (m.ev_reserve_price_default if self.sim_settings.ev_reserve_price_per_mwh is None
                          else float(self.sim_settings.ev_reserve_price_per_mwh))
        self._windows: dict[tuple[int, float], _Window] = {}
        self.n_compiled = 0
        self.reset()

    # ------------------------------------------------------------------ Policy protocol
    def reset(self, seed: int | None = None) -> None:
        """Start a day: clear the EV replay and the day's counters (compiled problems are kept)."""
        self.ev_forecaster.reset()
        self.fallbacks = 0
        self.fallback_log: list[tuple[int, str]] = []
        self.solve_ms: list[float] = []
        self.statuses: list[str] = []

    def act(self, obs: Observation, forecast: Any = None) -> Dispatch:
        """Solve the window from step ``obs.step`` and return its first step (heuristic on failure)."""
        if obs.is_terminal:
            raise ValueError("MPCPolicy.act: the day is over")
        t0 = time.perf_counter()
        forecast = forecast if forecast is not None else obs.forecast
        if obs.step == 0:
            self.ev_forecaster.reset()
        T = obs.n_steps
        n_active = min(self.settings.horizon_steps or T, T - obs.step)
        K = self._window_size(n_active, T)
        window = self._window(K, obs.dt_h)
        reason = ""
        try:
            self._set_parameters(window, obs, forecast, n_active)
        except (ValueError, FloatingPointError) as exc:  # bad data: record and fall back
            reason = f"data: {exc}"
        status = ""
        if not reason:
            status, reason = self._solve(window)
        if reason:
            dispatch = self.heuristic.act(obs, forecast)
            self.fallbacks += 1
            self.fallback_log.append((obs.step, reason))
            self.statuses.append(reason)
        else:
            dispatch = self._first_step(window, obs)
            self.statuses.append(status)
        self.ev_forecaster.record_setpoint(obs.step, dispatch.ev_p_mw * 1e3)
        self.solve_ms.append((time.perf_counter() - t0) * 1e3)
        return dispatch

    # ------------------------------------------------------------------ windows
    def _window_size(self, n_active: int, T: int) -> int:
        if self.settings.horizon_steps is not None:
            return int(self.settings.horizon_steps)
        k = 1
        while k < n_active:
            k *= 2
        return min(k, T)

    def _window(self, K: int, dt: float) -> _Window:
        key = (K, round(dt, 9))
        w = self._windows.get(key)
        if w is None:
            w = self._window_class(self.grid, self.model, self.index, K, dt, self.settings, self._ev_price)
            self._windows[key] = w
            self.n_compiled += 1
        return w

    def _solve(self, w: _Window) -> tuple[str, str]:
        """Solve with the formulation's solvers in order; returns (status, failure reason or "")."""
        failures = []
        # LinDistFlow: DPP (compiled once, re-solved). DistFlow-SOC: cvxpy's DPP compilation of
        # the K-step cone program needs memory ~ (cone rows x parameters): 4.5 GB on d33 at
        # K = 96 and more than 20 GB on t30d2, so it is canonicalized per solve with the
        # Parameters taken as constants (0.2-0.5 s, ~0.3 GB).
        dpp = {"enforce_dpp": True} if self.settings.formulation == "lin" else {"ignore_dpp": True}
        quiet_highs()
        for solver in self.settings.solvers:
            kw = {"warm_start": False} if solver == "HIGHS" else {}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    w.problem.solve(solver=solver, **dpp, **kw)
                status = w.problem.status
            except cp.error.SolverError as exc:
                status = f"error: {str(exc)[:80]}"
            if status == cp.OPTIMAL:
                return status, ""
            failures.append(f"{solver}: {status}")
        return "", "; ".join(failures)

    # ------------------------------------------------------------------ data of the window
    def _set_parameters(self, w: _Window, obs: Observation, forecast: Any, n_active: int) -> None:
        """Fill the Parameters from the nowcast (step t) and the point forecast (later steps)."""
        m, ix, lay = self.model, self.index, self.grid.layout
        K, t = w.K, obs.step
        A = n_active
        load_p = np.zeros((K, len(lay.load_names)))
        load_q = np.zeros_like(load_p)
        avail = np.zeros((K, self.sizes.n_der))
        load_p[0], load_q[0], avail[0] = obs.load_p_mw, obs.load_q_mvar, obs.der_avail_mw
        if A > 1:
            fc_load, fc_avail = self._forecast_rows(obs, forecast, A)
            load_p[1:A] = fc_load
            load_q[1:A] = fc_load / np.where(lay.load_p_mw > 0, lay.load_p_mw, 1.0) * m.load_q_base
            avail[1:A] = fc_avail
        for k in range(m.n_feeder):
            w.lp[k].value = ix.load_bus[k] @ load_p.T
            w.lq[k].value = ix.load_bus[k] @ load_q.T
        if w.avail is not None:
            w.avail.value = np.maximum(avail.T, 0.0)
        p_lo, p_hi, x_lo, x_hi = self.ev_forecaster.bounds(obs, forecast, K, A)
        w.ev_lo.value, w.ev_hi.value, w.x_lo.value, w.x_hi.value = p_lo, p_hi, x_lo, x_hi
        active = (np.arange(K) < A).astype(float)
        if w.st_e0 is not None:
            w.st_e0.value = np.maximum(np.asarray(obs.storage_e_mwh, dtype=float), 0.0)
            w.st_cap.value = np.outer(m.st_p_max, active)
            value = np.zeros((m.st_p_max.shape[0], K))
            if t + A < obs.n_steps:              # the window ends before the day: value what is stored
                rest = np.asarray(obs.price_ahead_per_mwh, dtype=float)[A:]
                value[:, A - 1] = float(rest.min()) * m.st_eta_d
            w.st_value.value = value
        price = np.zeros(K)
        price[:A] = np.asarray(obs.price_ahead_per_mwh, dtype=float)[:A]
        if not w.is_td:
            ps = float(obs.price_sell_per_mwh)
            w.price_a.value = price
            w.price_b.value = np.minimum(price, ps) * active      # = price where buying is the cheaper side
        else:
            self._set_td(w, obs, forecast, load_p, avail, A)

    def _forecast_rows(self, obs: Observation, forecast: Any, A: int) -> tuple[np.ndarray, np.ndarray]:
        """(A - 1) rows of load MW and DER availability MW for steps t+1 .. t+A-1."""
        lay = self.grid.layout
        if forecast is None:                         # persistence of the nowcast
            return (np.repeat(obs.load_p_mw[None, :], A - 1, axis=0),
                    np.repeat(obs.der_avail_mw[None, :], A - 1, axis=0))
        rows = slice(1, A)
        load = np.asarray(forecast.load_pu)[rows] * lay.load_p_mw
        pv = np.asarray(forecast.pv_pu)[rows] * forecast.day_ahead.pv_p_max_mw
        wind = np.asarray(forecast.wind_pu)[rows] * forecast.day_ahead.wind_p_max_mw
        return load, self.model.der_mw(pv, wind)

    def _set_td(self, w: _Window, obs: Observation, forecast: Any, load_p: np.ndarray, avail: np.ndarray,
                A: int) -> None:
        m, ix, s = self.model, self.index, self.settings
        K, dt = w.K, obs.dt_h
        active = np.arange(K) < A
        w.p_last.value = np.asarray(obs.thermal_p_last_mw, dtype=float)
        big = float(m.g_p_max.max() - m.g_p_min.min()) + 1.0
        w.ramp.value = np.where(active[None, :], (m.g_ramp * dt)[:, None], big)
        load_t = load_p[:, ix.n_load_f:].sum(axis=1)
        load_f = load_p[:, :ix.n_load_f].sum(axis=1)
        w.load_t.value = load_t
        w.loss_est.value = (s.loss_factor if s.formulation == "lin" else 0.0) * load_f
        net = load_t + load_f - avail.sum(axis=1)
        w.margin_up.value = w.margin_dn.value = s.reserve_margin * np.maximum(net, 0.0) * active
        w.price_short_up.value = self.grid.tariff.penalty_load_shed_per_mwh
        w.price_short_dn.value = self.grid.tariff.penalty_curtailment_per_mwh
        nb = m.n_boundary
        req = np.zeros((nb, K))
        up, dn = np.zeros((nb, K)), np.zeros((nb, K))
        if forecast is not None:
            fc = np.asarray(forecast.tso_requirement_mw)[:A]               # row 0 = step t
            req[:, :A] = fc.T
            if s.tso_hedge > 0:
                nom = forecast.day_ahead.tso_nominal_mw[obs.step]
                dev = forecast.day_ahead.tso_deviation_mw[obs.step]
                up[:, 0] = np.maximum(nom + dev, 0.0)
                dn[:, 0] = np.maximum(-(nom - dev), 0.0)
        w.req.value = req
        w.hedge_up.value, w.hedge_dn.value = up, dn

    # ------------------------------------------------------------------ the answer
    def _first_step(self, w: _Window, obs: Observation, col: int = 0) -> Dispatch:
        """The window's step ``col`` (0 = the step solved for) as a dispatch, curtailment against the
        availability observed now."""
        m = self.model
        val = lambda x: np.zeros(x.shape) if isinstance(x, np.ndarray) else np.asarray(x.value, dtype=float)  # noqa: E731
        used = val(w.used)[:, col] if self.sizes.n_der else np.zeros(0)
        avail = np.asarray(obs.der_avail_mw, dtype=float)
        frac = np.divide(avail - used, avail, out=np.zeros_like(avail), where=avail > 1e-9)
        st = w.st
        storage = (val(st.p_charge_mw) - val(st.p_discharge_mw))[:, col] if self.sizes.n_storage else np.zeros(0)
        ev = val(w.ev.p_mw)[:, col]
        if w.th is not None:
            th_p, th_ru, th_rd = (val(x)[:, col] for x in (w.th.p_mw, w.th.r_up_mw, w.th.r_dn_mw))
            ev_ru, ev_rd = np.maximum(val(w.ev_ru)[:, col], 0.0), np.maximum(val(w.ev_rd)[:, col], 0.0)
        else:
            th_p = th_ru = th_rd = ev_ru = ev_rd = np.zeros(0)
        q = None
        if self.settings.return_reactive:
            q = np.clip(val(w.q)[:, col], m.q_min, m.q_max) if self.sizes.n_comp else np.zeros(0)
        tie = None if w.tie is None else np.clip(val(w.tie)[:, col], -self.model.tie_p_max, self.model.tie_p_max)
        return Dispatch(ev_p_mw=ev, storage_p_mw=storage, der_curtail_frac=np.clip(frac, 0.0, 1.0),
                        thermal_p_mw=th_p, thermal_r_up_mw=np.maximum(th_ru, 0.0),
                        thermal_r_dn_mw=np.maximum(th_rd, 0.0), ev_r_up_mw=ev_ru, ev_r_dn_mw=ev_rd,
                        q_comp_mvar=q, tie_p_mw=tie)

    # ------------------------------------------------------------------ reporting
    def day_stats(self) -> dict[str, float]:
        """KPIs of the current day: fallbacks, solves, median and max solve time (ms)."""
        ms = np.asarray(self.solve_ms, dtype=float)
        return {"mpc_fallbacks": float(self.fallbacks), "mpc_steps": float(ms.size),
                "mpc_ev_replay_failures": float(self.ev_forecaster.replay_failures),
                "mpc_solve_ms_median": float(np.median(ms)) if ms.size else float("nan"),
                "mpc_solve_ms_max": float(ms.max()) if ms.size else float("nan")}
