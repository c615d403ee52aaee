"""Intraday forecasts that only use what is known at step t.

Information structure (non-anticipativity by construction):
- :class:`DayAheadInfo` — everything known before the day (day-ahead forecasts,
  ratings, the regime's error statistics). It holds no realized value.
- :class:`Observed` — the realized history of steps ``0..t`` and the EV sessions
  that have plugged in by t (``arrival_step <= t``, with the departure info they
  declared on arrival). Its constructor rejects any array longer than t+1 rows and
  any session that arrives after t.
- :meth:`Forecast.at` takes exactly these two objects; a :class:`Forecast` keeps no
  reference to the realized day, so nothing after t can reach it.

Model (a perfect-model forecaster: it knows the regime's error statistics, not the
realization): each latent error (load, cloud index, wind speed) is a unit-variance
AR(1) ``z_{k+1} = phi z_k + sqrt(1 - phi^2) e``; at t it is read off the last
observation, so the point forecast is ``day_ahead + sd * phi^h z_t`` (decays to the
day-ahead forecast) and the error variance ``sd^2 (1 - phi^{2h})`` grows with lead
time h. The TSO requirement deviation is a Markov on/off call signal inside the
remaining budget. EV arrivals: the day multiplier M of the arrival rate gets a
Gamma posterior from the arrivals seen so far, ``M | N ~ Gamma(k + N, k + Lambda)``.
Unobserved latents (PV at night) decay toward the forecast with growing variance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scenarios.ambiguity import BudgetSet
from scenarios.ev_arrivals import GRID_MINUTES, arrival_counts, connected_counts, station_rates_per_h
from scenarios.ev_ports import sessions_each
from scenarios.ev_sessions import EVSessions
from scenarios.layout import Layout
from scenarios.profiles import ar1_coefficient, ar1_filter, check_dt_minutes, correlated_normals, power_curve_pu
from scenarios.regimes import RegimeParams
from scenarios.tso_calls import tso_call_paths, tso_call_probabilities

PV_OBSERVABLE_PU: float = 0.02  # clear-sky output below which the cloud index is not observable



def _frozen(arr: np.ndarray, what: str, shape: tuple[int, ...], dtype: type = float) -> np.ndarray:
    out = np.array(arr, dtype=dtype)
    if out.shape != shape:
        raise ValueError(f"{what}: expected shape {shape}, got {out.shape}")
    if dtype is float and not np.isfinite(out).all():
        raise ValueError(f"{what}: values must be finite")
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class DayAheadInfo:
    """What is known before the day starts (no realized value).

    Attributes:
        layout: the grid's uncertain sources.
        params: the regime's parameters (error statistics the forecaster knows).
        dt_minutes: step length.
        load_pu_da: (T, n_load) day-ahead load forecast (multiplier on peak).
        pv_clear_sky_pu: (T,) clear-sky PV output per unit of rating.
        pv_k_da: (T, n_pv) day-ahead clear-sky index; ``pv_pu_da = clear_sky * k_da``.
        wind_speed_ms_da: (T, n_wind) day-ahead wind speed; ``wind_pu_da = power_curve(v_da)``.
        ev_rate_per_h_da: (T, n_station) expected arrival rate (EV/h, day multiplier M = 1).
        tso_nominal_mw / tso_deviation_mw: (T, n_boundary) nominal requirement and u_hat.
        tso_budget: (n_boundary,) budget Gamma per boundary (steps of full deviation).
        pv_p_max_mw / wind_p_max_mw: ratings used for this day (layout x regime scale).
    """

    layout: Layout
    params: RegimeParams
    dt_minutes: int
    load_pu_da: np.ndarray
    pv_clear_sky_pu: np.ndarray
    pv_k_da: np.ndarray
    wind_speed_ms_da: np.ndarray
    ev_rate_per_h_da: np.ndarray
    tso_nominal_mw: np.ndarray
    tso_deviation_mw: np.ndarray
    tso_budget: np.ndarray
    pv_p_max_mw: np.ndarray
    wind_p_max_mw: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.layout, Layout) or not isinstance(self.params, RegimeParams):
            raise ValueError("DayAheadInfo: layout must be a Layout and params a RegimeParams")
        check_dt_minutes(self.dt_minutes)
        lay, T = self.layout, 1440 // self.dt_minutes
        nl, npv, nw = len(lay.load_names), len(lay.pv_names), len(lay.wind_names)
        ns, nb = len(lay.evcs_names), len(lay.boundary_names)
        shapes = {"load_pu_da": (T, nl), "pv_clear_sky_pu": (T,), "pv_k_da": (T, npv),
                  "wind_speed_ms_da": (T, nw), "ev_rate_per_h_da": (T, ns), "tso_nominal_mw": (T, nb),
                  "tso_deviation_mw": (T, nb), "tso_budget": (nb,), "pv_p_max_mw": (npv,),
                  "wind_p_max_mw": (nw,)}
        for name, shape in shapes.items():
            object.__setattr__(self, name, _frozen(getattr(self, name), f"DayAheadInfo.{name}", shape))
        for name in ("load_pu_da", "pv_clear_sky_pu", "wind_speed_ms_da", "ev_rate_per_h_da",
                     "tso_deviation_mw", "tso_budget", "pv_p_max_mw", "wind_p_max_mw"):
            if (getattr(self, name) < 0).any():
                raise ValueError(f"DayAheadInfo.{name}: values must be >= 0")
        if (self.pv_k_da < 0).any() or (self.pv_k_da > 1).any():
            raise ValueError("DayAheadInfo.pv_k_da: values must be in [0, 1]")

    @property
    def n_steps(self) -> int:
        return int(self.load_pu_da.shape[0])

    @property
    def time_h(self) -> np.ndarray:
        """Start of each step (h)."""
        return np.arange(self.n_steps) * self.dt_minutes / 60.0

    @property
    def pv_pu_da(self) -> np.ndarray:
        """Day-ahead PV forecast ``clear_sky(t) * k_da(t)``, (T, n_pv)."""
        return self.pv_clear_sky_pu[:, None] * self.pv_k_da

    @property
    def wind_pu_da(self) -> np.ndarray:
        """Day-ahead wind forecast ``power_curve(v_da)``, (T, n_wind)."""
        return power_curve_pu(self.wind_speed_ms_da)

    @property
    def wind_speed_sd_ms(self) -> np.ndarray:
        """Sd of the realized speed around the forecast, ``frac * v_da + floor``."""
        return self.params.wind_err_frac * self.wind_speed_ms_da + self.params.wind_err_floor_ms

    @property
    def ev_rate_grid_per_h(self) -> np.ndarray:
        """Expected arrival rate per station on the 5-min grid (M = 1), (288, n_station)."""
        return station_rates_per_h(self.params.ev, self.layout.evcs_n_ports)

    def tso_budget_set(self, boundary: int) -> BudgetSet:
        """The day's budget set of one boundary (seed 000's ARO uncertainty)."""
        return BudgetSet(self.tso_nominal_mw[:, boundary], self.tso_deviation_mw[:, boundary],
                         float(self.tso_budget[boundary]))


@dataclass(frozen=True)
class Observed:
    """Realized history up to and including step t (t = -1: nothing observed yet).

    Attributes:
        t: last observed step.
        load_pu, pv_pu, wind_speed_ms, wind_pu, tso_requirement_mw: (t+1, n) arrays.
        ev: sessions with ``arrival_step <= t`` (departure info as declared on arrival).
    """

    t: int
    load_pu: np.ndarray
    pv_pu: np.ndarray
    wind_speed_ms: np.ndarray
    wind_pu: np.ndarray
    tso_requirement_mw: np.ndarray
    ev: EVSessions = field(default_factory=EVSessions.empty)

    def __post_init__(self) -> None:
        if not isinstance(self.t, (int, np.integer)) or self.t < -1:
            raise ValueError(f"Observed.t: must be an integer >= -1, got {self.t!r}")
        object.__setattr__(self, "t", int(self.t))
        for name in ("load_pu", "pv_pu", "wind_speed_ms", "wind_pu", "tso_requirement_mw"):
            arr = np.asarray(getattr(self, name), dtype=float)
            if arr.ndim != 2 or arr.shape[0] != self.t + 1:
                raise ValueError(f"Observed.{name}: expected {self.t + 1} rows (steps 0..t), got shape {arr.shape}")
            object.__setattr__(self, name, _frozen(arr, f"Observed.{name}", arr.shape))
        if len(self.ev) and int(self.ev.arrival_step.max()) > self.t:
            raise ValueError(f"Observed.ev: contains sessions arriving after t={self.t}")


@dataclass(frozen=True)
class ScenarioSet:
    """n sampled (or reduced) future paths of steps ``start_step .. start_step + H - 1``.

    Attributes:
        start_step, dt_minutes: first step of the paths and the step length.
        probabilities: (n,) >= 0, summing to 1.
        load_pu, pv_pu, wind_pu: (n, H, n_*) per unit (multipliers on peak / rating).
        tso_requirement_mw: (n, H, n_boundary) signed MW (+ = up-regulation = import less).
        ev_arrivals: (n, H, n_station) EVs plugging in per step (future arrivals only).
        ev_connected: (n, H, n_station) EVs connected per step (known + future).
        load_peak_mw, pv_p_max_mw, wind_p_max_mw: ratings for the MW properties.
        ev_sessions: per path, the future sessions (``arrival_step >= start_step``); may be empty.
    """

    start_step: int
    dt_minutes: int
    probabilities: np.ndarray
    load_pu: np.ndarray
    pv_pu: np.ndarray
    wind_pu: np.ndarray
    tso_requirement_mw: np.ndarray
    ev_arrivals: np.ndarray
    ev_connected: np.ndarray
    load_peak_mw: np.ndarray
    pv_p_max_mw: np.ndarray
    wind_p_max_mw: np.ndarray
    ev_sessions: tuple[EVSessions, ...] = ()

    def __post_init__(self) -> None:
        check_dt_minutes(self.dt_minutes)
        p = np.array(self.probabilities, dtype=float).reshape(-1)
        n = p.shape[0]
        if n < 1 or not np.all(np.isfinite(p)) or np.any(p < 0) or not np.isclose(p.sum(), 1.0, atol=1e-9):
            raise ValueError("ScenarioSet.probabilities: need n >= 1 finite values >= 0 summing to 1, "
                             f"got sum {p.sum()}")
        object.__setattr__(self, "probabilities", _frozen(p, "ScenarioSet.probabilities", (n,)))
        if np.ndim(self.load_pu) != 3:
            raise ValueError(f"ScenarioSet.load_pu: expected a 3-d array (n, H, n_load), got {np.shape(self.load_pu)}")
        H = np.asarray(self.load_pu).shape[1]
        ratings = {"load_pu": "load_peak_mw", "pv_pu": "pv_p_max_mw", "wind_pu": "wind_p_max_mw"}
        for name, rating in ratings.items():
            r = np.array(getattr(self, rating), dtype=float).reshape(-1)
            object.__setattr__(self, rating, _frozen(r, f"ScenarioSet.{rating}", r.shape))
            object.__setattr__(self, name, _frozen(getattr(self, name), f"ScenarioSet.{name}", (n, H, r.shape[0])))
        for name in ("pv_pu", "wind_pu"):
            arr = getattr(self, name)
            if np.any(arr < 0) or np.any(arr > 1):
                raise ValueError(f"ScenarioSet.{name}: values must be in [0, 1]")
        nb = np.asarray(self.tso_requirement_mw).shape[-1]
        object.__setattr__(self, "tso_requirement_mw",
                           _frozen(self.tso_requirement_mw, "ScenarioSet.tso_requirement_mw", (n, H, nb)))
        ns = np.asarray(self.ev_arrivals).shape[-1]
        for name in ("ev_arrivals", "ev_connected"):
            object.__setattr__(self, name, _frozen(getattr(self, name), f"ScenarioSet.{name}", (n, H, ns), int))
        sessions = tuple(self.ev_sessions)
        if sessions and len(sessions) != n:
            raise ValueError(f"ScenarioSet.ev_sessions: expected {n} entries (one per path) or none, "
                             f"got {len(sessions)}")
        for s in sessions:
            if len(s) and int(s.arrival_step.min()) < self.start_step:
                raise ValueError("ScenarioSet.ev_sessions: sessions must start at or after start_step")
        object.__setattr__(self, "ev_sessions", sessions)

    def __len__(self) -> int:
        return int(self.probabilities.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.load_pu.shape[1])

    @property
    def load_p_mw(self) -> np.ndarray:
        return self.load_pu * self.load_peak_mw

    @property
    def pv_p_mw(self) -> np.ndarray:
        return self.pv_pu * self.pv_p_max_mw

    @property
    def wind_p_mw(self) -> np.ndarray:
        return self.wind_pu * self.wind_p_max_mw

    @property
    def net_load_mw(self) -> np.ndarray:
        """(n, H) total load minus PV and wind."""
        return self.load_p_mw.sum(-1) - self.pv_p_mw.sum(-1) - self.wind_p_mw.sum(-1)

    def select(self, index: np.ndarray, probabilities: np.ndarray) -> "ScenarioSet":
        """The paths ``index`` with new probabilities."""
        idx = np.asarray(index, dtype=int)
        pick = {name: getattr(self, name)[idx] for name in
                ("load_pu", "pv_pu", "wind_pu", "tso_requirement_mw", "ev_arrivals", "ev_connected")}
        sessions = tuple(self.ev_sessions[i] for i in idx) if self.ev_sessions else ()
        return ScenarioSet(self.start_step, self.dt_minutes, probabilities, load_peak_mw=self.load_peak_mw,
                           pv_p_max_mw=self.pv_p_max_mw, wind_p_max_mw=self.wind_p_max_mw,
                           ev_sessions=sessions, **pick)


# ----------------------------------------------------------------------------- the forecast


@dataclass(frozen=True)
class _Latent:
    """Gaussian belief about a unit-variance AR(1) latent at step t: mean and variance per unit."""

    mean: np.ndarray
    var: np.ndarray

    def propagate(self, phi: float, h: np.ndarray) -> np.ndarray:
        """Mean at lead times h: ``phi^h mean`` (H, n)."""
        return (phi ** h)[:, None] * self.mean[None, :]

    def sample(self, rng: np.random.Generator, n_paths: int, horizon: int, phi: float, rho: float) -> np.ndarray:
        """Paths (n_paths, H, n): draw ``z_t ~ N(mean, var)`` then run the AR(1) forward."""
        n_units = self.mean.shape[0]
        z0 = self.mean + np.sqrt(self.var) * correlated_normals(rng, (n_paths, n_units), rho)
        e = correlated_normals(rng, (n_paths, horizon, n_units), rho)
        return ar1_filter(e, phi, x0=z0)


def _unobserved(n: int) -> _Latent:
    return _Latent(np.zeros(n), np.ones(n))


@dataclass(frozen=True)
class Forecast:
    """Forecast made at step t for steps t+1..T-1 (H = T - 1 - t), from day-ahead info and history only.

    Point forecasts (H, n) are attributes; :meth:`sample` draws paths. Build with :meth:`at`.
    """

    t: int
    day_ahead: DayAheadInfo
    known_ev: EVSessions
    load_latent: _Latent
    pv_latent: _Latent
    wind_latent: _Latent
    tso_delta: np.ndarray
    tso_budget_left: np.ndarray
    ev_posterior_shape: float
    ev_posterior_rate: float

    # ---------------------------------------------------------------- construction
    @classmethod
    def at(cls, day_ahead: DayAheadInfo, observed: Observed) -> "Forecast":
        """The forecast at ``observed.t`` (uses ``day_ahead`` and ``observed`` only)."""
        da, obs, p = day_ahead, observed, day_ahead.params
        t = obs.t
        if t > da.n_steps - 1:
            raise ValueError(f"Forecast.at: t={t} beyond the day's last step {da.n_steps - 1}")
        lay = da.layout
        _check_obs_widths(da, obs)
        load = _unobserved(len(lay.load_names))
        wind = _unobserved(len(lay.wind_names))
        tso_delta = np.zeros(len(lay.boundary_names))
        if t >= 0:
            err = obs.load_pu[t] / np.where(da.load_pu_da[t] > 0, da.load_pu_da[t], 1.0) - 1.0
            load = _Latent(_safe_div(err, p.load_err_sd), np.zeros_like(err))
            wind = _Latent((obs.wind_speed_ms[t] - da.wind_speed_ms_da[t]) / da.wind_speed_sd_ms[t],
                           np.zeros(len(lay.wind_names)))
            tso_delta = _safe_div(obs.tso_requirement_mw[t] - da.tso_nominal_mw[t], da.tso_deviation_mw[t])
        used = np.abs(_safe_div(obs.tso_requirement_mw - da.tso_nominal_mw[:t + 1],
                                da.tso_deviation_mw[:t + 1])).sum(axis=0)
        k0 = 1.0 / p.ev.day_rate_cv**2 if p.ev.day_rate_cv > 0 else np.inf
        seen_rate = da.ev_rate_grid_per_h[:(t + 1) * da.dt_minutes // GRID_MINUTES].sum() * GRID_MINUTES / 60.0
        return cls(t=t, day_ahead=da, known_ev=obs.ev, load_latent=load,
                   pv_latent=_pv_latent(da, obs), wind_latent=wind, tso_delta=tso_delta,
                   tso_budget_left=np.maximum(da.tso_budget - used, 0.0),
                   ev_posterior_shape=float(k0 + len(obs.ev)), ev_posterior_rate=float(k0 + seen_rate))

    # ---------------------------------------------------------------- point forecast
    @property
    def horizon(self) -> int:
        return self.day_ahead.n_steps - 1 - self.t

    @property
    def steps(self) -> np.ndarray:
        """Absolute step indices t+1..T-1."""
        return np.arange(self.t + 1, self.day_ahead.n_steps)

    def _lead(self) -> np.ndarray:
        return np.arange(1, self.horizon + 1, dtype=float)

    def _phi(self, tau_h: float) -> float:
        return ar1_coefficient(self.day_ahead.dt_minutes, tau_h)

    @property
    def load_pu(self) -> np.ndarray:
        """``load_da (1 + sd phi^h z_t)``, (H, n_load)."""
        p, sl = self.day_ahead.params, slice(self.t + 1, None)
        z = self.load_latent.propagate(self._phi(p.load_err_tau_h), self._lead())
        return load_pu_from_latent(self.day_ahead.load_pu_da[sl], p.load_err_sd, z)

    @property
    def pv_pu(self) -> np.ndarray:
        """``clear_sky clip(k_da + sd phi^h m_t, k_min, 1)``, (H, n_pv)."""
        p = self.day_ahead.params
        z = self.pv_latent.propagate(self._phi(p.pv_k_err_tau_h), self._lead())
        return pv_pu_from_latent(self.day_ahead, self.t + 1, z)

    @property
    def wind_speed_ms(self) -> np.ndarray:
        """``max(0, v_da + sd_v phi^h z_t)``, (H, n_wind)."""
        p = self.day_ahead.params
        z = self.wind_latent.propagate(self._phi(p.wind_err_tau_h), self._lead())
        return wind_speed_from_latent(self.day_ahead, self.t + 1, z)

    @property
    def wind_pu(self) -> np.ndarray:
        return power_curve_pu(self.wind_speed_ms)

    @property
    def tso_requirement_mw(self) -> np.ndarray:
        """``nominal + u_hat E[delta]``, ``E[delta_{t+h}] = delta_t (1 - p_end)^h`` (budget ignored), (H, n_b)."""
        _, p_end = tso_call_probabilities(self.day_ahead.params, self.day_ahead.dt_minutes)
        sl = slice(self.t + 1, None)
        mean = ((1 - p_end) ** self._lead())[:, None] * self.tso_delta[None, :]
        return self.day_ahead.tso_nominal_mw[sl] + self.day_ahead.tso_deviation_mw[sl] * mean

    @property
    def ev_rate_multiplier(self) -> float:
        """Posterior mean of the day's arrival-rate multiplier M."""
        if not np.isfinite(self.ev_posterior_shape):
            return 1.0
        return self.ev_posterior_shape / self.ev_posterior_rate

    @property
    def ev_rate_per_h(self) -> np.ndarray:
        """Expected arrival rate (EV/h) per future step and station."""
        return self.ev_rate_multiplier * self.day_ahead.ev_rate_per_h_da[self.t + 1:]

    @property
    def ev_connected_known(self) -> np.ndarray:
        """Known EVs still connected at each future step, (H, n_station)."""
        return connected_counts(self.known_ev, self.horizon, len(self.day_ahead.layout.evcs_names), self.t + 1)

    def tso_budget_set(self, boundary: int) -> BudgetSet:
        """Budget set of the rest of the day for one boundary (remaining budget)."""
        sl = slice(self.t + 1, None)
        gamma = min(float(self.tso_budget_left[boundary]), float(self.horizon))
        return BudgetSet(self.day_ahead.tso_nominal_mw[sl, boundary],
                         self.day_ahead.tso_deviation_mw[sl, boundary], gamma)

    # ---------------------------------------------------------------- sampling
    def sample(self, n: int, rng: np.random.Generator, ev_sessions: bool = True) -> ScenarioSet:
        """n equally likely future paths conditioned on the information at t.

        Draw order (fixed, so the same rng state gives the same set): load, PV, wind,
        TSO, EV. With ``ev_sessions=False`` per-path sessions are not kept (arrays only).
        """
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"Forecast.sample: n must be a positive integer, got {n!r}")
        da, p, H, s0 = self.day_ahead, self.day_ahead.params, self.horizon, self.t + 1
        z_load = self.load_latent.sample(rng, n, H, self._phi(p.load_err_tau_h), p.load_err_rho)
        z_pv = self.pv_latent.sample(rng, n, H, self._phi(p.pv_k_err_tau_h), p.pv_err_rho)
        z_wind = self.wind_latent.sample(rng, n, H, self._phi(p.wind_err_tau_h), p.wind_err_rho)
        p_start, p_end = tso_call_probabilities(p, da.dt_minutes)
        delta = tso_call_paths(rng, n, H, self.tso_delta, self.tso_budget_left, p_start, p_end)
        sessions, arrivals, connected = self._sample_ev(rng, n)
        return ScenarioSet(
            start_step=s0, dt_minutes=da.dt_minutes, probabilities=np.full(n, 1.0 / n),
            load_pu=load_pu_from_latent(da.load_pu_da[s0:], p.load_err_sd, z_load),
            pv_pu=pv_pu_from_latent(da, s0, z_pv),
            wind_pu=power_curve_pu(wind_speed_from_latent(da, s0, z_wind)),
            tso_requirement_mw=da.tso_nominal_mw[s0:] + da.tso_deviation_mw[s0:] * delta,
            ev_arrivals=arrivals, ev_connected=connected, load_peak_mw=da.layout.load_p_mw,
            pv_p_max_mw=da.pv_p_max_mw, wind_p_max_mw=da.wind_p_max_mw,
            ev_sessions=tuple(sessions) if ev_sessions else ())

    def sample_next(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """n equally likely draws of step ``t + 1`` alone: ``(load_p_mw, pv_p_mw, wind_p_mw)``,
        each (n, units).

        The marginal law of the first row of :meth:`sample` (the latents' lead-1 belief through
        the same maps), without EV sessions, TSO calls or later steps: what a one-step decision
        (the reactive SOCP) needs, at a fraction of the cost.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"Forecast.sample_next: n must be a positive integer, got {n!r}")
        if self.horizon < 1:
            raise ValueError("Forecast.sample_next: no step left in the day")
        da, p, s0 = self.day_ahead, self.day_ahead.params, self.t + 1
        z_load = self.load_latent.sample(rng, n, 1, self._phi(p.load_err_tau_h), p.load_err_rho)
        z_pv = self.pv_latent.sample(rng, n, 1, self._phi(p.pv_k_err_tau_h), p.pv_err_rho)
        z_wind = self.wind_latent.sample(rng, n, 1, self._phi(p.wind_err_tau_h), p.wind_err_rho)
        load = load_pu_from_latent(da.load_pu_da[s0:s0 + 1], p.load_err_sd, z_load)[:, 0]
        pv = pv_pu_from_latent(da, s0, z_pv)[:, 0] if z_pv.shape[-1] else np.zeros((n, 0))
        wind = power_curve_pu(wind_speed_from_latent(da, s0, z_wind))[:, 0] if z_wind.shape[-1] else np.zeros((n, 0))
        return load * da.layout.load_p_mw, pv * da.pv_p_max_mw, wind * da.wind_p_max_mw

    def _sample_ev(self, rng: np.random.Generator, n: int) -> tuple[list[EVSessions], np.ndarray, np.ndarray]:
        da, lay, H, s0 = self.day_ahead, self.day_ahead.layout, self.horizon, self.t + 1
        ns = len(lay.evcs_names)
        if np.isfinite(self.ev_posterior_shape):
            mult = rng.gamma(self.ev_posterior_shape, 1.0 / self.ev_posterior_rate, size=n)
        else:
            mult = np.ones(n)
        still = self.known_ev.select(self.known_ev.departure_step > s0)
        busy = [still.departure_step[still.station == s] * float(da.dt_minutes) for s in range(ns)]
        known_conn = self.ev_connected_known
        # the n paths drawn in turn from rng, as tables of paths (scenarios.ev_ports.sessions_each)
        sessions = [ev for ev, _ in sessions_each([rng] * n, da.params.ev, lay.evcs_n_ports, mult.tolist(),
                                                  da.dt_minutes, lay.ev_battery_kwh, lay.ev_charger_kw,
                                                  lay.ev_efficiency, start_min=s0 * da.dt_minutes,
                                                  busy_until_min=busy)]
        arrivals = np.stack([arrival_counts(ev, H, ns, s0) for ev in sessions])
        connected = known_conn + np.stack([connected_counts(ev, H, ns, s0) for ev in sessions])
        return sessions, arrivals, connected


# ----------------------------------------------------------------------------- helpers


def _safe_div(num: np.ndarray, den: np.ndarray | float) -> np.ndarray:
    num, den = np.broadcast_arrays(np.asarray(num, dtype=float), np.asarray(den, dtype=float))
    return np.divide(num, den, out=np.zeros(num.shape), where=den > 0)


def _check_obs_widths(da: DayAheadInfo, obs: Observed) -> None:
    lay = da.layout
    widths = {"load_pu": len(lay.load_names), "pv_pu": len(lay.pv_names), "wind_speed_ms": len(lay.wind_names),
              "wind_pu": len(lay.wind_names), "tso_requirement_mw": len(lay.boundary_names)}
    for name, width in widths.items():
        if getattr(obs, name).shape[1] != width:
            raise ValueError(f"Observed.{name}: expected {width} columns for this layout, "
                             f"got {getattr(obs, name).shape[1]}")
    if len(obs.ev) and int(obs.ev.station.max()) >= len(lay.evcs_names):
        raise ValueError("Observed.ev: station index out of range for this layout")


def _pv_latent(da: DayAheadInfo, obs: Observed) -> _Latent:
    """Cloud latent at t from the last step t0 <= t with daylight: ``z = (pv / cs - k_da) / sd``,
    then ``mean = phi^(t - t0) z``, ``var = 1 - phi^(2 (t - t0))``; none observed: N(0, 1)."""
    p, t = da.params, obs.t
    n = da.pv_k_da.shape[1]
    lit = np.flatnonzero(da.pv_clear_sky_pu[:t + 1] > PV_OBSERVABLE_PU)
    if lit.size == 0 or n == 0:
        return _unobserved(n)
    t0 = int(lit[-1])
    k_obs = obs.pv_pu[t0] / da.pv_clear_sky_pu[t0]
    z = _safe_div(k_obs - da.pv_k_da[t0], p.pv_k_err_sd)
    phi = ar1_coefficient(da.dt_minutes, p.pv_k_err_tau_h)
    gap = t - t0
    return _Latent(phi**gap * z, np.full(n, 1.0 - phi ** (2 * gap)))


def load_pu_from_latent(load_da: np.ndarray, sd: float, z: np.ndarray) -> np.ndarray:
    """``load_pu = load_da (1 + sd z)``, floored at 0."""
    return np.maximum(load_da * (1.0 + sd * z), 0.0)


def pv_pu_from_latent(da: DayAheadInfo, start: int, z: np.ndarray) -> np.ndarray:
    """``pv_pu = clear_sky clip(k_da + sd z, k_min, 1)`` for steps start.."""
    return pv_pu_from_k(da.pv_clear_sky_pu[start:], da.pv_k_da[start:], da.params, z)


def pv_pu_from_k(clear_sky_pu: np.ndarray, k_da: np.ndarray, params: RegimeParams, z: np.ndarray) -> np.ndarray:
    """:func:`pv_pu_from_latent` on arrays: ``clip(clear_sky clip(k_da + sd z, k_min, 1), 0, 1)``
    (``clear_sky`` (T,), ``k_da`` and ``z`` (..., T, n_pv))."""
    k = np.clip(k_da + params.pv_k_err_sd * z, params.pv_k_min, 1.0)
    return np.clip(clear_sky_pu[:, None] * k, 0.0, 1.0)


def wind_speed_from_latent(da: DayAheadInfo, start: int, z: np.ndarray) -> np.ndarray:
    """``v = max(0, v_da + sd_v z)`` for steps start.."""
    return wind_speed_from_sd(da.wind_speed_ms_da[start:], da.wind_speed_sd_ms[start:], z)


def wind_speed_from_sd(v_da_ms: np.ndarray, sd_ms: np.ndarray, z: np.ndarray) -> np.ndarray:
    """:func:`wind_speed_from_latent` on arrays: ``max(0, v_da + sd_v z)``."""
    return np.maximum(v_da_ms + sd_ms * z, 0.0)
