"""Policies ``p2p_dso_led`` and ``p2p_tso_led``: a P2P market schedule in the loop (docs/p2p.md §5).

**Plan**: at the day's first step, the scheme's model (:func:`policies.p2p.market.solve_dso_led`
or :func:`~policies.p2p.market.solve_tso_led`) is solved on the day-ahead forecast
(``forecast.day_ahead``, non-anticipative) in periods of ``period_minutes``; every
``replan_every_h`` hours (a period boundary) it is solved again for the rest of the day from the
intraday point forecast (loads, wind, PV replaced from the current step on) and the storage's
measured energy.

**Recourse** (every step): EV stations charge as soon as possible and the thermal units follow the
merit order on the resulting transmission net load (the :class:`~policies.heuristic.HeuristicPolicy`
rules, the TSO's real-time dispatch); every ADN's storage plays the plan's setpoint of the current
period plus the deviation of the feeder's realized net load from the plan's forecast (so the
boundary keeps to the scheduled ``h``), shared by power rating and clipped to power and energy
limits; DER output is curtailed to the plan's share of availability (none unless the plan curtails).

**Fallbacks** (:attr:`fallback_log`, read by the loop): no forecast, a failed solve (SCIP finds no
feasible point within its limit, stops for another reason, the DC-OPF fails) or no plan -> the
heuristic's action for the step, recorded as ``(step, reason)``; a failed re-plan keeps the last
plan (recorded too). A plan SCIP left at its time limit (a feasible incumbent, gap above
:attr:`P2PSettings.mip_gap`) is played and logged too (``plan not optimal: ...``), so the run's
steps (``policy_fallback``) and summary (``fallback_steps``, ``fallback_reason``) show it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from env.dispatch import Dispatch
from env.network import Grid
from env.observation import Observation
from policies.aro_dro import day_ahead_digest
from policies.heuristic import HeuristicPolicy
from policies.p2p.data import P2PSettings, p2p_day
from policies.p2p.market import MarketResult, solve_dso_led, solve_tso_led

__all__ = ["P2PPlan", "P2PPolicy", "intraday_p2p_day_ahead"]

Scheme = Literal["dso_led", "tso_led"]
_SOLVERS = {"dso_led": solve_dso_led, "tso_led": solve_tso_led}


def intraday_p2p_day_ahead(forecast: Any, step: int) -> Any:
    """The forecast's DayAheadInfo with load, wind speed and PV clear-sky index from ``step`` on
    replaced by the intraday point forecast (rows ``step .. T-1``)."""
    da = forecast.day_ahead
    if step == 0:
        return da
    load, wind, k = np.array(da.load_pu_da), np.array(da.wind_speed_ms_da), np.array(da.pv_k_da)
    load[step:] = np.asarray(forecast.load_pu)
    wind[step:] = np.maximum(np.asarray(forecast.wind_speed_ms), 0.0)
    if k.shape[1]:
        cs = da.pv_clear_sky_pu[step:, None]
        k[step:] = np.where(cs > 0, np.asarray(forecast.pv_pu) / np.where(cs > 0, cs, 1.0), k[step:])
    return replace(da, load_pu_da=load, wind_speed_ms_da=wind, pv_k_da=k)


@dataclass(frozen=True, eq=False)
class P2PPlan:
    """A schedule in the dispatch order, one row per period from ``start_step``.

    Attributes:
        start_step, steps_per_period: where the plan starts and how many env steps a period spans.
        storage_p_mw: (T, n_storage) + = charge; ``der_share``: (T, n_der_feeders) used / available.
        feeder_net_mw: (T, K) the plan's forecast net load of each ADN (load - DER) before storage.
        result: the market solution.
    """

    start_step: int
    steps_per_period: int
    storage_p_mw: np.ndarray
    der_share: np.ndarray
    feeder_net_mw: np.ndarray
    result: MarketResult

    def period(self, step: int) -> int:
        return min(max(0, (step - self.start_step) // self.steps_per_period), self.storage_p_mw.shape[0] - 1)


def _plan_from(result: MarketResult, day: Any, start: int, kk: int) -> P2PPlan:
    st = np.concatenate([c - d for c, d in zip(result.ch_mw, result.dis_mw)], axis=0).T
    share = [np.divide(u, a, out=np.ones_like(u), where=a > 1e-9) for u, a in zip(result.der_mw, result.der_avail_mw)]
    der_share = np.concatenate(share, axis=0).T if share else np.zeros((st.shape[0], 0))
    net = np.stack([lp.sum(axis=1) - da.sum(axis=1) for lp, da in zip(day.load_p_mw, day.der_avail_mw)], axis=1)
    return P2PPlan(start, kk, st, np.clip(der_share, 0.0, 1.0), net, result)


@dataclass
class _Record:
    step: int
    scheme: str
    time_s: float
    status: str
    cached: bool = False
    fallback: str = ""
    extra: dict = field(default_factory=dict)


class P2PPolicy:
    """The P2P market schedule played with a per-step recourse (see the module docstring).

    Args:
        grid: a T-D grid whose ADNs the market models (single feeders raise ValueError).
        scheme: ``"dso_led"`` (bilevel, KKT MISOCP) or ``"tso_led"`` (top-down yardstick).
        settings: :class:`P2PSettings` of the market (period length, prices, SCIP limits).
        replan_every_h: intraday re-planning interval (a multiple of the period), None = plan once.
        plan_cache: optional mapping shared by policies to reuse plans of the same inputs.
        simulator_settings: accepted for the registry's loop context; unused.

    Attributes:
        plan: the current :class:`P2PPlan`; ``plan_log``: one record per planning run;
        fallback_log: ``(step, reason)`` per fallback (policies.base).
    """

    def __init__(self, grid: Grid, scheme: Scheme = "dso_led", settings: P2PSettings | None = None,
                 replan_every_h: float | None = 6.0, plan_cache: MutableMapping[Any, Any] | None = None,
                 simulator_settings: Any = None) -> None:
        if not grid.is_td or grid.transmission is None:
            raise ValueError(f"P2PPolicy: needs a T-D grid (transmission + ADNs, e.g. t30d5); {grid.name} is a "
                             f"single feeder")
        if scheme not in _SOLVERS:
            raise ValueError(f"P2PPolicy: scheme must be one of {sorted(_SOLVERS)}, got {scheme!r}")
        self.settings = settings or P2PSettings(period_minutes=120, time_limit_s=120.0, mip_gap=5e-3)
        if not isinstance(self.settings, P2PSettings):
            raise ValueError(f"P2PPolicy: settings must be a P2PSettings, got {type(settings).__name__}")
        if replan_every_h is not None and (isinstance(replan_every_h, bool) or not replan_every_h > 0
                                           or (replan_every_h * 60) % self.settings.period_minutes):
            raise ValueError(f"P2PPolicy: replan_every_h must be None or a positive multiple of the period "
                             f"({self.settings.period_minutes} min), got {replan_every_h!r}")
        self.grid = grid
        self.scheme = scheme
        self.name = f"p2p_{scheme}"
        self.replan_every_h = replan_every_h
        self.plan_cache = plan_cache
        self.heuristic = HeuristicPolicy(grid)
        self.index = self.heuristic.index
        st = [f.storage for f in grid.feeders]
        self._p_max = np.concatenate([s.p_max_mw for s in st])
        self._e_max = np.concatenate([s.e_max_mwh for s in st])
        self._eta_c = np.concatenate([s.eta_charge for s in st])
        self._eta_d = np.concatenate([s.eta_discharge for s in st])
        self.plan_log: list[_Record] = []
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """Start a day: forget the plan and the day's fallbacks."""
        self.plan: P2PPlan | None = None
        self._planned_at = -1
        self.fallback_log: list[tuple[int, str]] = []

    # ------------------------------------------------------------------ Policy protocol
    def act(self, obs: Observation, forecast: Any = None) -> Dispatch:
        """Plan if due, then the recourse of ``obs.step`` (the heuristic's action without a plan)."""
        if obs.is_terminal:
            raise ValueError("P2PPolicy.act: the day is over")
        if self._replan_due(obs):
            self._plan(obs, forecast if forecast is not None else obs.forecast)
        base = self.heuristic.act(obs, forecast)
        if self.plan is None:
            self.fallback_log.append((obs.step, "no plan: heuristic"))
            return base
        return self._recourse(obs, base)

    # ------------------------------------------------------------------ planning
    def _replan_due(self, obs: Observation) -> bool:
        if self._planned_at < 0 or obs.step < self._planned_at:
            return True
        if self.replan_every_h is None:
            return False
        every = max(1, round(self.replan_every_h / obs.dt_h))
        return obs.step - self._planned_at >= every and obs.step % every == 0

    def _plan(self, obs: Observation, forecast: Any) -> None:
        self._planned_at = obs.step
        if forecast is None:
            self.fallback_log.append((obs.step, "plan: no forecast"))
            return
        da = intraday_p2p_day_ahead(forecast, obs.step) if self.replan_every_h else forecast.day_ahead
        kk = self.settings.period_minutes // da.dt_minutes
        start = obs.step - obs.step % kk
        e_init = np.asarray(obs.storage_e_mwh, dtype=float)
        key = (self.grid.name, self.scheme, day_ahead_digest(da), self.settings, start,
               hashlib.sha1(np.round(e_init, 6).tobytes()).hexdigest())
        cached = self.plan_cache.get(key) if self.plan_cache is not None else None
        if cached is not None:
            self.plan = cached
            self._log_not_optimal(obs.step, cached.result)
            self.plan_log.append(_Record(obs.step, self.scheme, 0.0, cached.result.info.status, cached=True))
            return
        t0 = time.perf_counter()
        try:
            day = p2p_day(self.grid, da, self.settings, start_step=start, e_init_mwh=e_init)
            result = _SOLVERS[self.scheme](self.grid, day, self.settings)
        except (RuntimeError, ValueError) as exc:
            reason = f"plan: {exc}" + ("; keeping the last plan" if self.plan is not None else "")
            self.fallback_log.append((obs.step, reason))
            self.plan_log.append(_Record(obs.step, self.scheme, time.perf_counter() - t0, "failed", fallback=reason))
            return
        self.plan = _plan_from(result, day, start, kk)
        self._log_not_optimal(obs.step, result)
        self.plan_log.append(_Record(obs.step, self.scheme, time.perf_counter() - t0, result.info.status,
                                     extra={"mip_gap": result.info.mip_gap}))
        if self.plan_cache is not None:
            self.plan_cache[key] = self.plan

    def _log_not_optimal(self, step: int, result: MarketResult) -> None:
        """A plan whose SCIP solve stopped at its time limit is played, and logged (never silent)."""
        info = result.info
        if not info.optimal:
            self.fallback_log.append((step, f"plan not optimal: SCIP {info.status}, gap {info.mip_gap:.2%} "
                                            f"(time limit {self.settings.time_limit_s:g} s); played"))

    # ------------------------------------------------------------------ recourse
    def _recourse(self, obs: Observation, base: Dispatch) -> Dispatch:
        plan = self.plan
        assert plan is not None
        t = plan.period(obs.step)
        curtail = np.array(base.der_curtail_frac, dtype=float)
        n_fd = plan.der_share.shape[1]
        curtail[:n_fd] = 1.0 - plan.der_share[t]
        storage = np.array(plan.storage_p_mw[t], dtype=float)
        feeder_net = np.zeros(len(self.grid.feeders))
        for k in range(len(self.grid.feeders)):
            demand = self.heuristic.node_demand(k, obs.load_p_mw, base.ev_p_mw)
            der = obs.der_avail_mw[self.index.der[k]] * (1.0 - curtail[self.index.der[k]])
            net = float(demand.sum() - der.sum())                     # realized, + = deficit
            sl = self.index.storage[k]
            if sl.stop > sl.start:
                dev = net - plan.feeder_net_mw[t, k]
                share = self._p_max[sl] / self._p_max[sl].sum()
                storage[sl] = storage[sl] - dev * share             # absorb the deviation
            feeder_net[k] = net + storage[sl].sum()
        storage = self._feasible(storage, obs.storage_e_mwh, obs.dt_h)
        for k in range(len(self.grid.feeders)):                         # after clipping
            sl = self.index.storage[k]
            demand = self.heuristic.node_demand(k, obs.load_p_mw, base.ev_p_mw)
            der = obs.der_avail_mw[self.index.der[k]] * (1.0 - curtail[self.index.der[k]])
            feeder_net[k] = float(demand.sum() - der.sum()) + storage[sl].sum()
        p, r_up, r_dn = self.heuristic.thermal_dispatch(obs, feeder_net, curtail)
        return replace(base, storage_p_mw=storage, der_curtail_frac=curtail, thermal_p_mw=p,
                       thermal_r_up_mw=r_up, thermal_r_dn_mw=r_dn)

    def _feasible(self, p_mw: np.ndarray, e_mwh: np.ndarray, dt_h: float) -> np.ndarray:
        """Clip to ``[-Pmax, Pmax]``, charging to the room ``(Emax - e) / (eta_c dt)`` and discharging
        to the energy ``e eta_d / dt``."""
        room = (self._e_max - e_mwh) / (self._eta_c * dt_h)
        avail = e_mwh * self._eta_d / dt_h
        return np.clip(np.clip(p_mw, -self._p_max, self._p_max), -avail, np.maximum(room, 0.0))
