"""EV arrivals at charging stations: a time-varying Poisson process per station.

The arrival process (per station) is a non-homogeneous Poisson process whose rate
is piecewise constant on a fixed 5-minute grid (independent of the env's step, so
the same seed gives the same arrival times at dt = 5, 15 or 60 min):

    lambda_s(t) = M * n_ports_s * arrivals_per_port_day * sum_c share_c f_c(t) g_c

with components c (workplace morning peak, leisure evening peak, a flat base), each
``f_c`` a (wrapped) Gaussian bump normalized to integrate to 1 per day, ``g_c`` a
surge factor (``ev_surge``: 2.5 on the evening component) and ``M`` a day-level
rate multiplier, ``M ~ Gamma(k, 1/k)`` (mean 1, cv = ``day_rate_cv``), common to
all stations and *not* known before the day (the intraday forecast learns it).

Each arrival draws a dwell time (lognormal per component, clipped), the battery
energy at arrival (Beta share of the 66 kWh battery) and a target energy.

The port model that turns arrivals into sessions is in :mod:`scenarios.ev_ports`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import ndtr

from scenarios.ev_sessions import EVSessions

GRID_MINUTES: int = 5  # resolution of the arrival-rate profile (minutes)
N_GRID: int = 1440 // GRID_MINUTES


@dataclass(frozen=True)
class ArrivalComponent:
    """One bump of the daily arrival-rate profile with its own dwell-time law.

    Attributes:
        name: label (e.g. ``"evening"``).
        share: share of a day's arrivals (before surge factors); shares sum to 1.
        peak_h: centre of the bump (h); ``None`` for a flat profile.
        width_h: standard deviation of the bump (h).
        dwell_median_h: median dwell time (h) of EVs of this component.
        dwell_sigma: lognormal shape (sd of log dwell).
    """

    name: str
    share: float
    peak_h: float | None
    width_h: float
    dwell_median_h: float
    dwell_sigma: float

    def __post_init__(self) -> None:
        for what in ("share", "dwell_median_h", "dwell_sigma", "width_h"):
            if not getattr(self, what) > 0:
                raise ValueError(f"ArrivalComponent.{what} must be > 0, got {getattr(self, what)}")


# Arrival mix for public/semi-public stations. The papers give no profile (seed 000
# clusters the CalTech ACN data); we pick an ACN-like workplace morning peak with
# long stays, a leisure/home evening peak with short stays, and a flat base of
# opportunistic top-ups.
DEFAULT_COMPONENTS: tuple[ArrivalComponent, ...] = (
    ArrivalComponent("morning", share=0.45, peak_h=8.5, width_h=1.5, dwell_median_h=7.0, dwell_sigma=0.35),
    ArrivalComponent("evening", share=0.40, peak_h=18.5, width_h=2.0, dwell_median_h=2.5, dwell_sigma=0.50),
    ArrivalComponent("base", share=0.15, peak_h=None, width_h=24.0, dwell_median_h=1.5, dwell_sigma=0.60),
)


@dataclass(frozen=True)
class EVArrivalParams:
    """Parameters of the EV arrival process of one regime.

    Attributes:
        arrivals_per_port_day: expected arrivals per charging port per day (1.5: a
            20-port station sees ~30 EVs a day; our choice).
        components: the rate-profile bumps (see :data:`DEFAULT_COMPONENTS`).
        surge_component / surge_factor: multiply that component's rate (``ev_surge``: 2.5).
        day_rate_cv: coefficient of variation of the day multiplier ``M`` (0.15).
        soc_arrival_beta: Beta(a, b) law of the state of charge at arrival (mean 0.4).
        soc_request_range: uniform law of the requested state of charge at departure.
        patience_min: longest wait for a free port (minutes), also capped at dwell / 2.
        dwell_min_h / dwell_max_h: dwell times are clipped to this range.
    """

    arrivals_per_port_day: float = 1.5
    components: tuple[ArrivalComponent, ...] = DEFAULT_COMPONENTS
    surge_component: str = "evening"
    surge_factor: float = 1.0
    day_rate_cv: float = 0.15
    soc_arrival_beta: tuple[float, float] = (2.0, 3.0)
    soc_request_range: tuple[float, float] = (0.8, 1.0)
    patience_min: float = 30.0
    dwell_min_h: float = 0.25
    dwell_max_h: float = 16.0

    def __post_init__(self) -> None:
        if not self.arrivals_per_port_day >= 0:
            raise ValueError("EVArrivalParams.arrivals_per_port_day must be >= 0")
        if not np.isclose(sum(c.share for c in self.components), 1.0):
            raise ValueError("EVArrivalParams.components: shares must sum to 1")
        names = [c.name for c in self.components]
        if self.surge_component not in names:
            raise ValueError(f"EVArrivalParams.surge_component must be one of {names}")
        if not self.surge_factor > 0 or not self.day_rate_cv >= 0:
            raise ValueError("EVArrivalParams: need surge_factor > 0 and day_rate_cv >= 0")
        lo, hi = self.soc_request_range
        if not 0 <= lo <= hi <= 1:
            raise ValueError("EVArrivalParams.soc_request_range must satisfy 0 <= lo <= hi <= 1")
        if min(self.soc_arrival_beta) <= 0:
            raise ValueError("EVArrivalParams.soc_arrival_beta: both parameters must be > 0")
        if not (0 < self.dwell_min_h < self.dwell_max_h) or not self.patience_min >= 0:
            raise ValueError("EVArrivalParams: need 0 < dwell_min_h < dwell_max_h and patience_min >= 0")

    @property
    def factors(self) -> np.ndarray:
        """Per-component rate factor ``g_c`` (surge factor on the surge component, else 1)."""
        return np.array([self.surge_factor if c.name == self.surge_component else 1.0
                         for c in self.components])


@dataclass(frozen=True)
class ArrivalTable:
    """Raw arrivals (before the port model), sorted by time then station.

    Attributes:
        station: station index; t_arrival_min: arrival time (minutes after midnight);
        dwell_min: planned stay; component: index into the params' components;
        e_arrival_kwh: battery energy at arrival; e_target_kwh: energy wanted at departure.
    """

    station: np.ndarray
    t_arrival_min: np.ndarray
    dwell_min: np.ndarray
    component: np.ndarray
    e_arrival_kwh: np.ndarray
    e_target_kwh: np.ndarray

    def __len__(self) -> int:
        return int(self.station.shape[0])

    @property
    def t_departure_min(self) -> np.ndarray:
        """Scheduled departure ``t_arrival + dwell``."""
        return self.t_arrival_min + self.dwell_min


def _bump(grid_mid_h: np.ndarray, comp: ArrivalComponent) -> np.ndarray:
    """Daily shape f_c on the grid, wrapped over midnight and normalized to integrate to 1 per day."""
    if comp.peak_h is None:
        f = np.ones_like(grid_mid_h)
    else:
        f = sum(np.exp(-0.5 * ((grid_mid_h + shift - comp.peak_h) / comp.width_h) ** 2) for shift in (-24.0, 0.0, 24.0))
    return f / (f.sum() * GRID_MINUTES / 60.0)


@lru_cache(maxsize=64)
def component_rates_per_port_h(params: EVArrivalParams) -> np.ndarray:
    """Arrival rate per port (EV/h) on the 5-min grid, per component: ``apd * share_c * g_c * f_c(t)``, shape (288, C).

    Cached per (frozen, hashable) params; the returned array is read-only.
    """
    mid = (np.arange(N_GRID) + 0.5) * GRID_MINUTES / 60.0
    cols = [params.arrivals_per_port_day * c.share * g * _bump(mid, c)
            for c, g in zip(params.components, params.factors)]
    out = np.stack(cols, axis=1)
    out.setflags(write=False)
    return out


def station_rates_per_h(params: EVArrivalParams, n_ports: np.ndarray) -> np.ndarray:
    """Expected arrival rate per station (EV/h) on the 5-min grid (M = 1), shape (288, n_station)."""
    per_port = component_rates_per_port_h(params).sum(axis=1)
    return per_port[:, None] * np.asarray(n_ports, dtype=float)[None, :]


def rates_on_steps(rate_grid_per_h: np.ndarray, dt_minutes: int) -> np.ndarray:
    """Average a 5-min-grid rate over each step: shape (T, ...)."""
    k = dt_minutes // GRID_MINUTES
    return rate_grid_per_h.reshape((N_GRID // k, k) + rate_grid_per_h.shape[1:]).mean(axis=1)


def expected_arrivals_per_day(params: EVArrivalParams, n_ports: np.ndarray) -> np.ndarray:
    """Integral of the rate profile per station: ``n_ports * apd * sum_c share_c g_c``."""
    return station_rates_per_h(params, n_ports).sum(axis=0) * GRID_MINUTES / 60.0


def _dwell_mu(comp: ArrivalComponent) -> float:
    return float(np.log(comp.dwell_median_h))


def expected_dwell_h(params: EVArrivalParams) -> float:
    """Mean planned dwell over the day's arrival mix, with the clipping to [dwell_min, dwell_max].

    For a lognormal X (mu, s) clipped to [a, b]:
    ``E = a F(a) + e^{mu + s^2/2} [Phi((ln b - mu - s^2)/s) - Phi((ln a - mu - s^2)/s)] + b (1 - F(b))``.
    """
    weights = np.array([c.share for c in params.components]) * params.factors
    weights = weights / weights.sum()
    a, b = params.dwell_min_h, params.dwell_max_h
    means = []
    for comp in params.components:
        mu, s = _dwell_mu(comp), comp.dwell_sigma
        fa, fb = ndtr((np.log(a) - mu) / s), ndtr((np.log(b) - mu) / s)
        body = np.exp(mu + s * s / 2) * (ndtr((np.log(b) - mu - s * s) / s) - ndtr((np.log(a) - mu - s * s) / s))
        means.append(a * fa + body + b * (1 - fb))
    return float(weights @ np.array(means))


def sample_day_multiplier(rng: np.random.Generator, params: EVArrivalParams) -> float:
    """Day-level rate multiplier ``M ~ Gamma(k, 1/k)``, ``k = 1 / cv^2`` (M = 1 when cv = 0)."""
    if params.day_rate_cv == 0:
        return 1.0
    k = 1.0 / params.day_rate_cv**2
    return float(rng.gamma(k, 1.0 / k))


def sample_arrivals(rng: np.random.Generator, params: EVArrivalParams, n_ports: np.ndarray,
                    multiplier: float, battery_kwh: float, start_min: float = 0.0) -> ArrivalTable:
    """Arrivals in ``[start_min, 1440)`` of the Poisson process with rate ``M lambda_s(t)``.

    Counts per (5-min bin, station, component) are Poisson; times are uniform in
    their bin. ``start_min`` must lie on the 5-minute grid. One day of
    :func:`sample_arrivals_each`.
    """
    return sample_arrivals_each([rng], params, n_ports, [multiplier], battery_kwh, start_min)[0]


def sample_arrivals_each(rngs: Sequence[np.random.Generator], params: EVArrivalParams, n_ports: np.ndarray,
                         multipliers: Sequence[float], battery_kwh: float,
                         start_min: float = 0.0) -> tuple[ArrivalTable, np.ndarray]:
    """:func:`sample_arrivals` of several days, one multiplier and one generator each (a generator
    may repeat: it then draws the days in turn), as one table: day ``d``'s station ``s`` is
    station ``d S + s``, rows by day, then by time and station. Each generator draws what it
    draws alone (the counts, then the arrivals' uniforms, normals, Betas and uniforms); the
    formulas run once for all days. Returns the table and the rows per day, shape (D,)."""
    first = int(round(start_min / GRID_MINUTES))
    if not abs(first * GRID_MINUTES - start_min) <= 1e-8 + 1e-5 * abs(start_min):   # np.isclose's test
        raise ValueError(f"start_min must be a multiple of {GRID_MINUTES}, got {start_min}")
    if len(rngs) != len(multipliers) or not len(rngs):
        raise ValueError(f"sample_arrivals_each: one multiplier per generator, got {len(multipliers)} for "
                         f"{len(rngs)} generators")
    per_port = component_rates_per_port_h(params)[first:]                  # (B, C)
    ports = np.asarray(n_ports, dtype=float)
    n_st, n_comp = ports.shape[0], per_port.shape[1]
    size = per_port.shape[0] * n_st * n_comp                                # cells (bin, station, component)
    cells: list[np.ndarray] = []
    n_day = np.empty(len(rngs), dtype=np.int64)
    draws: list[list[np.ndarray]] = [[], [], [], []]
    for d, (rng, m) in enumerate(zip(rngs, multipliers)):
        mean = np.multiply((m * per_port)[:, None, :], ports[None, :, None])   # M rate_c(t) n_ports_s 5 min
        mean *= GRID_MINUTES
        mean /= 60.0
        counts = rng.poisson(mean).reshape(-1)
        cell = np.flatnonzero(counts)
        cells.append(np.repeat(cell, counts[cell]) + d * size)             # one entry per arrival, C order
        n_day[d] = k = cells[-1].shape[0]
        for out, x in zip(draws, (rng.random(k), rng.standard_normal(k), rng.beta(*params.soc_arrival_beta, size=k),
                                  rng.uniform(*params.soc_request_range, size=k))):
            out.append(x)
    u, z, soc0, soc_req = (np.concatenate(x) for x in draws)
    day, rest = np.divmod(np.concatenate(cells), max(size, 1))
    b_idx, rest = np.divmod(rest, max(n_st * n_comp, 1))
    s_idx, c_idx = np.divmod(rest, max(n_comp, 1))
    t_arr = (first + b_idx + u) * GRID_MINUTES
    mu = np.array([_dwell_mu(c) for c in params.components])[c_idx]
    sig = np.array([c.dwell_sigma for c in params.components])[c_idx]
    dwell_h = np.clip(np.exp(mu + sig * z), params.dwell_min_h, params.dwell_max_h)
    # per day by time, then station: the counts come bin by bin, station by station, so a stable
    # sort on time alone gives that order unless two times are equal (then the two-key sort)
    order = np.empty(u.shape[0], dtype=np.int64)
    lo = 0
    for k in n_day.tolist():
        t = t_arr[lo:lo + k]
        o = np.argsort(t, kind="stable")
        t_sorted = t[o]
        if (t_sorted[1:] == t_sorted[:-1]).any():
            o = np.lexsort((s_idx[lo:lo + k], t))
        order[lo:lo + k] = o + lo
        lo += k
    station = (day * n_st + s_idx) if len(rngs) > 1 else s_idx
    table = ArrivalTable(station=station[order], t_arrival_min=t_arr[order], dwell_min=dwell_h[order] * 60.0,
                         component=c_idx[order], e_arrival_kwh=soc0[order] * battery_kwh,
                         e_target_kwh=np.maximum(soc_req, soc0)[order] * battery_kwh)
    return table, n_day


def connected_counts(ev: EVSessions, n_steps_: int, n_stations: int, start_step: int = 0) -> np.ndarray:
    """EVs connected per step and station, ``#{i : a_i <= k < d_i}``, for steps start..start+n-1; shape (n, S)."""
    delta = np.zeros((n_steps_ + 1, n_stations), dtype=int)
    a = np.clip(ev.arrival_step - start_step, 0, n_steps_)
    d = np.clip(ev.departure_step - start_step, 0, n_steps_)
    np.add.at(delta, (a, ev.station), 1)
    np.add.at(delta, (d, ev.station), -1)
    return np.cumsum(delta, axis=0)[:n_steps_]


def arrival_counts(ev: EVSessions, n_steps_: int, n_stations: int, start_step: int = 0) -> np.ndarray:
    """Sessions starting per step and station (plug-in step ``a_i``), shape (n, S)."""
    out = np.zeros((n_steps_, n_stations), dtype=int)
    k = ev.arrival_step - start_step
    ok = (k >= 0) & (k < n_steps_)
    np.add.at(out, (k[ok], ev.station[ok]), 1)
    return out
