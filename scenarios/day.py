"""One sampled day: day-ahead forecasts, the realized day, and its intraday forecasts.

``sample_day(grid, regime, seed)`` draws, from six independent child streams of one
seed (day-ahead, load, PV, wind, EV, TSO; so changing one model keeps the others'
draws — common random numbers across regimes and policies):

1. the day-ahead information (:class:`scenarios.forecast.DayAheadInfo`);
2. realized = forecast + correlated error, with the regime's statistics
   (see ``scenarios.regimes`` for the formulas), an optional unforecast wind drop,
   EV sessions from the stations' port queue (:data:`EV_PORT_MODELS`), and the TSO requirement.

``sample_days(grid, regime, seeds)`` samples many days at once (the native vector env's
resets): each day still draws from its own streams, and is bit for bit ``sample_day``'s;
the formulas, the AR(1) filters and the TSO call recursion run once on a leading day axis.
``sample_day`` is ``sample_days`` of one seed.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from scenarios.ev_arrivals import (
    arrival_counts,
    connected_counts,
    rates_on_steps,
    sample_day_multiplier,
    station_rates_per_h,
)
from scenarios.ev_ports import sessions_each, simulate_ports_fast, simulate_ports_simpy
from scenarios.ev_sessions import EVSessions
from scenarios.forecast import (
    DayAheadInfo,
    Forecast,
    Observed,
    load_pu_from_latent,
    pv_pu_from_k,
    wind_speed_from_sd,
)
from scenarios.layout import Layout
from scenarios.profiles import (
    ar1_coefficient,
    ar1_paths_each,
    clear_sky_pu,
    load_shape_pu,
    n_steps,
    power_curve_pu,
    step_mid_h,
    tso_nominal_shape,
    wind_diurnal,
)
from scenarios.regimes import RegimeParams, get_regime
from scenarios.tso_calls import tso_call_draws, tso_call_probabilities, tso_call_recursion

if TYPE_CHECKING:
    import pandas as pd

DA_SLOW_TAU_H: float = 6.0       # correlation time of the slow day-ahead weather drift
DA_WIND_SLOW_SD: float = 0.10    # day-ahead wind speed drifts +-10 % around the diurnal shape
DEFAULT_BOUNDARY_PEAK_MW: float = 1.0  # used when no feeder load can be matched to a boundary

SeedLike = int | np.random.Generator | np.random.SeedSequence


@dataclass(frozen=True)
class Scenario:
    """A realized day and its day-ahead forecast.

    Attributes:
        day_ahead: what was known before the day (forecasts, ratings, statistics).
        regime: regime name; seed: the integer seed (None if a Generator was passed).
        load_pu: (T, n_load) realized load, multiplier on the layout's peak MW.
        pv_pu: (T, n_pv) realized PV per unit of ``day_ahead.pv_p_max_mw``, in [0, 1].
        wind_speed_ms / wind_pu: (T, n_wind) realized hub-height speed and output per unit.
        tso_requirement_mw: (T, n_boundary) TSO real-time requirement (+ = up = import less).
        ev: EV sessions served by the stations (simpy port model).
        ev_balked: (n_station,) EVs that left because no port freed up in time.
        ev_rate_multiplier: the day's realized arrival-rate multiplier M (not observable).
        wind_ramp_start_h: start of the unforecast wind-drop event (NaN if none).
    """

    day_ahead: DayAheadInfo
    regime: str
    seed: int | None
    load_pu: np.ndarray
    pv_pu: np.ndarray
    wind_speed_ms: np.ndarray
    wind_pu: np.ndarray
    tso_requirement_mw: np.ndarray
    ev: EVSessions
    ev_balked: np.ndarray
    ev_rate_multiplier: float = 1.0
    wind_ramp_start_h: float = float("nan")

    def __post_init__(self) -> None:
        da, lay = self.day_ahead, self.day_ahead.layout
        T = da.n_steps
        shapes = {"load_pu": len(lay.load_names), "pv_pu": len(lay.pv_names),
                  "wind_speed_ms": len(lay.wind_names), "wind_pu": len(lay.wind_names),
                  "tso_requirement_mw": len(lay.boundary_names)}
        for name, width in shapes.items():
            arr = np.array(getattr(self, name), dtype=float)
            if arr.shape != (T, width):
                raise ValueError(f"Scenario.{name}: expected shape {(T, width)}, got {arr.shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"Scenario.{name}: values must be finite")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        for name in ("pv_pu", "wind_pu"):
            if (getattr(self, name) < 0).any() or (getattr(self, name) > 1).any():
                raise ValueError(f"Scenario.{name}: values must be in [0, 1]")
        if (self.load_pu < 0).any() or (self.wind_speed_ms < 0).any():
            raise ValueError("Scenario: load_pu and wind_speed_ms must be >= 0")
        if not isinstance(self.ev, EVSessions):
            raise ValueError("Scenario.ev: must be an EVSessions")
        if len(self.ev) and int(self.ev.station.max()) >= len(lay.evcs_names):
            raise ValueError("Scenario.ev: station index out of range for the layout")
        balked = np.array(self.ev_balked, dtype=int).reshape(-1)
        if balked.shape != (len(lay.evcs_names),) or (balked < 0).any():
            raise ValueError(f"Scenario.ev_balked: expected {len(lay.evcs_names)} counts >= 0")
        balked.setflags(write=False)
        object.__setattr__(self, "ev_balked", balked)

    # ------------------------------------------------------------- basic views
    @property
    def layout(self) -> Layout:
        return self.day_ahead.layout

    @property
    def dt_minutes(self) -> int:
        return self.day_ahead.dt_minutes

    @property
    def n_steps(self) -> int:
        return self.day_ahead.n_steps

    @property
    def time_h(self) -> np.ndarray:
        return self.day_ahead.time_h

    @property
    def load_pu_da(self) -> np.ndarray:
        return self.day_ahead.load_pu_da

    @property
    def pv_pu_da(self) -> np.ndarray:
        return self.day_ahead.pv_pu_da

    @property
    def wind_pu_da(self) -> np.ndarray:
        return self.day_ahead.wind_pu_da

    @property
    def ev_rate_per_h_da(self) -> np.ndarray:
        return self.day_ahead.ev_rate_per_h_da

    @property
    def tso_requirement_mw_da(self) -> np.ndarray:
        return self.day_ahead.tso_nominal_mw

    @property
    def load_p_mw(self) -> np.ndarray:
        """Realized load MW, ``load_pu * layout.load_p_mw``."""
        return self.load_pu * self.layout.load_p_mw

    @property
    def pv_p_mw(self) -> np.ndarray:
        """Realized PV MW, ``pv_pu * pv_p_max_mw`` (ratings include the regime's scale)."""
        return self.pv_pu * self.day_ahead.pv_p_max_mw

    @property
    def wind_p_mw(self) -> np.ndarray:
        return self.wind_pu * self.day_ahead.wind_p_max_mw

    @property
    def ev_connected(self) -> np.ndarray:
        """(T, n_station) EVs connected per step."""
        return connected_counts(self.ev, self.n_steps, len(self.layout.evcs_names))

    @property
    def ev_arrivals(self) -> np.ndarray:
        """(T, n_station) EVs plugging in per step."""
        return arrival_counts(self.ev, self.n_steps, len(self.layout.evcs_names))

    # ------------------------------------------------------------- information at t
    def observed(self, t: int) -> Observed:
        """The history a controller has seen after step t (steps 0..t, EVs plugged in by t)."""
        if not -1 <= t < self.n_steps:
            raise ValueError(f"t must be in [-1, {self.n_steps - 1}], got {t}")
        sl = slice(0, t + 1)
        return Observed(t=t, load_pu=self.load_pu[sl], pv_pu=self.pv_pu[sl],
                        wind_speed_ms=self.wind_speed_ms[sl], wind_pu=self.wind_pu[sl],
                        tso_requirement_mw=self.tso_requirement_mw[sl],
                        ev=self.ev.select(self.ev.arrival_step <= t))

    def forecast(self, t: int) -> Forecast:
        """Forecast at t for steps t+1..T-1: ``Forecast.at(self.day_ahead, self.observed(t))``."""
        return Forecast.at(self.day_ahead, self.observed(t))

    # ------------------------------------------------------------- tidy table
    def to_frame(self) -> "pd.DataFrame":
        """One row per step: step, time_h, load_/pv_/wind_<name> (MW), ev_connected_/ev_arrivals_<station>,
        tso_req_<boundary> (MW)."""
        import pandas as pd  # deferred: heavy import

        lay = self.layout
        cols: dict[str, np.ndarray] = {"step": np.arange(self.n_steps), "time_h": self.time_h}
        blocks = [("load_", lay.load_names, self.load_p_mw), ("pv_", lay.pv_names, self.pv_p_mw),
                  ("wind_", lay.wind_names, self.wind_p_mw),
                  ("ev_connected_", lay.evcs_names, self.ev_connected),
                  ("ev_arrivals_", lay.evcs_names, self.ev_arrivals),
                  ("tso_req_", lay.boundary_names, self.tso_requirement_mw)]
        for prefix, names, values in blocks:
            for j, name in enumerate(names):
                cols[prefix + name] = values[:, j]
        return pd.DataFrame(cols)


# ----------------------------------------------------------------------------- sampling


def as_layout(grid: Layout | object) -> Layout:
    """A :class:`Layout`, or the ``.layout`` of a grid object."""
    if isinstance(grid, Layout):
        return grid
    layout = getattr(grid, "layout", None)
    if not isinstance(layout, Layout):
        raise ValueError(f"grid must be a Layout or have a .layout Layout attribute, got {type(grid).__name__}")
    return layout


def _streams(seed: SeedLike, n: int) -> list[np.random.Generator]:
    if isinstance(seed, np.random.Generator):
        return list(seed.spawn(n))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer, np.random.SeedSequence)):
        raise ValueError(f"seed must be an int, a SeedSequence or a numpy Generator, got {type(seed).__name__}")
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))
    return [np.random.default_rng(child) for child in ss.spawn(n)]


def boundary_peak_mw(layout: Layout) -> np.ndarray:
    """Peak load of the feeder behind each boundary: boundary j <-> loads named ``f{j}_...``.

    A boundary with no matching load gets the mean of the matched ones (or 1 MW if none).
    Computed once per layout (a read-only array).
    """
    hit = _PEAKS.get(id(layout))
    if hit is not None and hit[0]() is layout:
        return hit[1]
    peaks = _boundary_peak_mw(layout)
    peaks.setflags(write=False)
    _PEAKS[id(layout)] = (weakref.ref(layout, lambda _, k=id(layout): _PEAKS.pop(k, None)), peaks)
    return peaks


_PEAKS: dict[int, tuple[weakref.ref, np.ndarray]] = {}   # id(layout) -> (the layout, its peaks)


def _boundary_peak_mw(layout: Layout) -> np.ndarray:
    sums = [0] * len(layout.boundary_names)
    for name, p in zip(layout.load_names, layout.load_p_mw.tolist()):   # one pass, in load order
        head = name.split("_", 1)[0] if "_" in name else ""
        if head[:1] == "f" and head[1:].isdigit() and str(int(head[1:])) == head[1:] and int(head[1:]) < len(sums):
            sums[int(head[1:])] += p
    peaks = np.array(sums, dtype=float)
    if peaks.size and np.any(peaks <= 0):
        fill = peaks[peaks > 0].mean() if np.any(peaks > 0) else DEFAULT_BOUNDARY_PEAK_MW
        peaks = np.where(peaks > 0, peaks, fill)
    return peaks.astype(float)


def day_ahead_info(layout: Layout, params: RegimeParams, dt_minutes: int, rng: np.random.Generator) -> DayAheadInfo:
    """Draw the day-ahead forecasts of one day.

    load_da = shape(t) * level * unit_i, level ~ 1 + sd N, unit_i ~ 1 + sd N;
    k_da(t) = clip(k_mean + k_day_sd x(t), k_min, 1), x a slow AR(1) (tau 6 h);
    v_da(t) = V_day * u_i * diurnal(t) * (1 + 0.1 y(t)), V_day ~ Weibull, u_i lognormal, y slow AR(1);
    TSO nominal = frac * feeder peak * shape(t), deviation = frac * feeder peak,
    budget = min(budget_h / dt, T) steps.
    """
    return day_ahead_infos(layout, params, dt_minutes, [rng])[0]


def day_ahead_infos(layout: Layout, params: RegimeParams, dt_minutes: int,
                    rngs: Sequence[np.random.Generator]) -> list[DayAheadInfo]:
    """:func:`day_ahead_info` of several days, one generator each: every generator draws what it
    draws alone, the formulas run once on a leading day axis."""
    T, mid = n_steps(dt_minutes), step_mid_h(dt_minutes)
    nl, npv, nw = len(layout.load_names), len(layout.pv_names), len(layout.wind_names)
    phi_slow = ar1_coefficient(dt_minutes, DA_SLOW_TAU_H)
    level = 1.0 + params.load_level_sd * np.array([r.standard_normal() for r in rngs])
    unit = np.clip(1.0 + params.load_unit_sd * np.stack([r.standard_normal(nl) for r in rngs]), 0.5, 1.5)
    load_da = load_shape_pu(mid)[None, :, None] * level[:, None, None] * unit[:, None, :]
    x = ar1_paths_each(rngs, T, 1, phi_slow, 1.0)
    k_da = np.clip(params.pv_k_mean + params.pv_k_day_sd * x, params.pv_k_min, 1.0) * np.ones((1, npv))
    v_day = params.wind_weibull_scale_ms * np.array([r.weibull(params.wind_weibull_shape) for r in rngs])
    site = np.exp(params.wind_unit_sd * np.stack([r.standard_normal(nw) for r in rngs]))
    y = ar1_paths_each(rngs, T, 1, phi_slow, 1.0)
    v_da = np.maximum(v_day[:, None, None] * site[:, None, :] * wind_diurnal(mid)[None, :, None]
                      * (1.0 + DA_WIND_SLOW_SD * y), 0.0)
    peak = boundary_peak_mw(layout)
    common = dict(
        layout=layout, params=params, dt_minutes=dt_minutes, pv_clear_sky_pu=clear_sky_pu(mid),
        ev_rate_per_h_da=rates_on_steps(station_rates_per_h(params.ev, layout.evcs_n_ports), dt_minutes),
        tso_nominal_mw=params.tso_nominal_frac * tso_nominal_shape(mid)[:, None] * peak[None, :],
        tso_deviation_mw=np.broadcast_to(params.tso_dev_frac * peak, (T, peak.size)),
        tso_budget=np.full(peak.size, min(params.tso_budget_h * 60.0 / dt_minutes, float(T))),
        **dict(zip(("pv_p_max_mw", "wind_p_max_mw"), der_capacity_mw(layout, params))))
    return [DayAheadInfo(load_pu_da=load_da[b], pv_k_da=k_da[b], wind_speed_ms_da=v_da[b], **common)
            for b in range(len(rngs))]


def _network(names: tuple[str, ...]) -> np.ndarray:
    """The network label of each unit: the name's prefix before ``_`` (``f0``, ``f1``, ``t``)."""
    return np.array([n.split("_", 1)[0] for n in names], dtype=object)


def der_capacity_mw(layout: Layout, params: RegimeParams) -> tuple[np.ndarray, np.ndarray]:
    """Installed PV and wind capacity of the regime's days, per unit (MW).

    ``p_max = installed x scale``, then in every network ``g`` with units of the kind, raised
    to ``penetration x peak load of g`` by a common factor over its units of that kind:
    ``factor_g = max(1, penetration L_g / sum_g(installed x scale))``.
    """
    load_net = _network(layout.load_names)
    out = []
    for names, p_max, scale, pen in ((layout.pv_names, layout.pv_p_max_mw, params.pv_scale, params.pv_penetration),
                                     (layout.wind_names, layout.wind_p_max_mw, params.wind_scale,
                                      params.wind_penetration)):
        cap = np.asarray(p_max, dtype=float) * scale
        if pen > 0 and cap.size:
            nets = _network(names)
            for g in np.unique(nets):
                mine = nets == g
                total = cap[mine].sum()
                peak = float(layout.load_p_mw[load_net == g].sum())
                if total > 0 and peak > 0:
                    cap[mine] *= max(1.0, pen * peak / total)
        out.append(cap)
    return out[0], out[1]


def ramp_factor(time_h: np.ndarray, start_h: float, params: RegimeParams) -> np.ndarray:
    """Wind-drop event: ``1 - depth * trapezoid(t)`` (down over ramp_down_h, hold, up over ramp_up_h)."""
    if not np.isfinite(start_h):
        return np.ones_like(time_h)
    x = np.asarray(time_h) - start_h
    down, hold, up = params.ramp_down_h, params.ramp_hold_h, params.ramp_up_h
    shape = np.interp(x, [0.0, down, down + hold, down + hold + up], [0.0, 1.0, 1.0, 0.0], left=0.0, right=0.0)
    return 1.0 - params.ramp_depth * shape


def _realize_wind(das: Sequence[DayAheadInfo], rngs: Sequence[np.random.Generator]) -> tuple[np.ndarray, list[float]]:
    """Realized wind speed of several days (B, T, n_wind) and their wind-drop starts (NaN: none)."""
    da, p = das[0], das[0].params
    z = ar1_paths_each(rngs, da.n_steps, len(da.layout.wind_names), ar1_coefficient(da.dt_minutes, p.wind_err_tau_h),
                       p.wind_err_rho)
    starts = []
    for r in rngs:
        happens, start = r.random() < p.ramp_prob, r.uniform(*p.ramp_window_h)
        starts.append(float(start) if happens else float("nan"))
    mid = step_mid_h(da.dt_minutes)
    ramp = np.stack([ramp_factor(mid, s, p) for s in starts])
    speed = wind_speed_from_sd(np.stack([d.wind_speed_ms_da for d in das]),
                               np.stack([d.wind_speed_sd_ms for d in das]), z) * ramp[:, :, None]
    return speed, starts


EV_PORT_MODELS = {"heap": simulate_ports_fast, "simpy": simulate_ports_simpy}
"""The two implementations of the FIFO / impatient port model (scenarios/ev_ports.py): the
simpy process model, and the same queue as a heap of port release times, which gives identical
sessions (tested on random tables) at a fraction of the cost and is the day sampler's default."""


def _realize_evs(das: Sequence[DayAheadInfo], rngs: Sequence[np.random.Generator],
                 ev_port_model: str = "heap") -> list[tuple[EVSessions, np.ndarray, float]]:
    """Each day's EV sessions, balked EVs per station and rate multiplier (M, then the day's
    arrivals, from the day's EV stream): :func:`scenarios.ev_ports.sessions_each`."""
    lay, p = das[0].layout, das[0].params.ev
    mults = [sample_day_multiplier(r, p) for r in rngs]
    out = sessions_each(rngs, p, lay.evcs_n_ports, mults, das[0].dt_minutes, lay.ev_battery_kwh, lay.ev_charger_kw,
                        lay.ev_efficiency, port_model=EV_PORT_MODELS[ev_port_model])
    return [(ev, balked, m) for (ev, balked), m in zip(out, mults)]


def sample_day(grid: Layout | object, regime: str | RegimeParams, seed: SeedLike,
               dt_minutes: int = 15, ev_port_model: str = "heap") -> Scenario:
    """Sample one realized day of a grid's uncertain sources.

    Args:
        grid: a :class:`Layout` or any object with a ``.layout`` (e.g. ``env.Grid``).
        regime: a regime name (``scenarios.regimes.REGIMES``) or a :class:`RegimeParams`.
        seed: int, SeedSequence or Generator; the same seed gives the same day bit for bit.
        dt_minutes: step length, one of 5, 15, 60.
        ev_port_model: ``"heap"`` (default) or ``"simpy"``: the same port queue, two
            implementations giving the same day (see :data:`EV_PORT_MODELS`).

    Raises:
        ValueError: unknown regime (lists valid ones), bad dt_minutes, bad grid or seed, unknown
            ``ev_port_model``.
    """
    return sample_days(grid, regime, [seed], dt_minutes, ev_port_model)[0]


def sample_days(grid: Layout | object, regime: str | RegimeParams, seeds: Sequence[SeedLike],
                dt_minutes: int = 15, ev_port_model: str = "heap") -> list[Scenario]:
    """:func:`sample_day` of each seed, equal to it bit for bit: each day draws from its own six
    streams, while the AR(1) filters, the TSO call recursion and the formulas run once for all
    days (a leading day axis; the EV arrivals, port queue and sessions as tables of many days'
    stations, :func:`scenarios.ev_ports.sessions_each`). Arguments and errors as
    :func:`sample_day`'s; ``seeds`` must not be empty."""
    if ev_port_model not in EV_PORT_MODELS:
        raise ValueError(f"sample_day: ev_port_model must be one of {sorted(EV_PORT_MODELS)}, got {ev_port_model!r}")
    if len(seeds) == 0:
        raise ValueError("sample_days: at least one seed is needed")
    T = n_steps(dt_minutes)
    layout, params = as_layout(grid), get_regime(regime)
    s_da, s_load, s_pv, s_wind, s_ev, s_tso = zip(*(_streams(seed, 6) for seed in seeds))
    das = day_ahead_infos(layout, params, dt_minutes, s_da)
    z_load = ar1_paths_each(s_load, T, len(layout.load_names),
                            ar1_coefficient(dt_minutes, params.load_err_tau_h), params.load_err_rho)
    z_pv = ar1_paths_each(s_pv, T, len(layout.pv_names),
                          ar1_coefficient(dt_minutes, params.pv_k_err_tau_h), params.pv_err_rho)
    speed, ramp_start = _realize_wind(das, s_wind)
    evs = _realize_evs(das, s_ev, ev_port_model)
    p_start, p_end = tso_call_probabilities(params, dt_minutes)
    nb = len(layout.boundary_names)
    u, mag = zip(*(tso_call_draws(r, (1, T, nb)) for r in s_tso))
    delta = tso_call_recursion(np.concatenate(u), np.concatenate(mag), np.zeros(nb), das[0].tso_budget,
                               p_start, p_end)
    da0 = das[0]
    load = load_pu_from_latent(np.stack([d.load_pu_da for d in das]), params.load_err_sd, z_load)
    pv = pv_pu_from_k(da0.pv_clear_sky_pu, np.stack([d.pv_k_da for d in das]), params, z_pv)
    tso = da0.tso_nominal_mw + da0.tso_deviation_mw * delta
    wind_pu = power_curve_pu(speed)
    return [Scenario(day_ahead=da, regime=params.name,
                     seed=int(seed) if isinstance(seed, (int, np.integer)) else None,
                     load_pu=load[b], pv_pu=pv[b], wind_speed_ms=speed[b], wind_pu=wind_pu[b],
                     tso_requirement_mw=tso[b], ev=ev, ev_balked=balked, ev_rate_multiplier=mult,
                     wind_ramp_start_h=ramp_start[b])
            for b, (seed, da, (ev, balked, mult)) in enumerate(zip(seeds, das, evs))]
