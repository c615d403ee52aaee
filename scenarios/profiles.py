"""Typical-day shapes and the small stochastic building blocks of a sampled day.

Everything here is a pure function of its arguments (random draws come from the
``numpy.random.Generator`` passed in), so a day is reproducible bit for bit.

Time conventions: a day has ``T = 1440 / dt_minutes`` steps; step ``k`` covers
``[k dt, (k + 1) dt)``; shapes are evaluated at step midpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.signal import lfilter

_ONE_TAP = (1.0,)   # ar1_filter's numerator: the innovations are scaled beforehand

VALID_DT_MINUTES: tuple[int, ...] = (5, 15, 60)
MINUTES_PER_DAY: int = 1440

# IEEE Reliability Test System (1979), Table 4: hourly load of a winter weekday
# in percent of the daily peak (hour 0 = 0:00-1:00). Used as the typical-day load
# shape for every load; a two-peak curve (late morning plateau, 17-19 h peak).
_RTS_WEEKDAY_PCT = np.array([67, 63, 60, 59, 59, 60, 74, 86, 95, 96, 96, 95,
                             95, 95, 93, 94, 99, 100, 100, 96, 91, 83, 73, 63], dtype=float)

# PV clear-sky curve: the papers give no site; we take an equinox-to-summer day
# (sunrise 6:00, sunset 19:00) and a clear-sky peak of 0.9 of the rating
# (temperature and inverter losses keep a real array below nameplate).
SUNRISE_H: float = 6.0
SUNSET_H: float = 19.0
CLEAR_SKY_PEAK_PU: float = 0.9

# Wind power curve of a generic pitch-regulated turbine (brief: cut-in 3,
# rated 12, cut-out 25 m/s); power rises with v^3 between cut-in and rated.
CUT_IN_MS: float = 3.0
RATED_MS: float = 12.0
CUT_OUT_MS: float = 25.0


def check_dt_minutes(dt_minutes: int) -> int:
    """Return ``dt_minutes`` if it is one of 5, 15, 60, else raise ValueError."""
    if isinstance(dt_minutes, bool) or dt_minutes not in VALID_DT_MINUTES:
        raise ValueError(f"dt_minutes must be one of {VALID_DT_MINUTES}, got {dt_minutes!r}")
    return int(dt_minutes)


def n_steps(dt_minutes: int) -> int:
    """Steps in a day, ``T = 1440 / dt``."""
    return MINUTES_PER_DAY // check_dt_minutes(dt_minutes)


def step_start_h(dt_minutes: int) -> np.ndarray:
    """Start time of every step in hours, ``k dt / 60`` for k = 0..T-1."""
    return np.arange(n_steps(dt_minutes)) * (dt_minutes / 60.0)


def step_mid_h(dt_minutes: int) -> np.ndarray:
    """Midpoint of every step in hours, ``(k + 1/2) dt / 60``."""
    return step_start_h(dt_minutes) + dt_minutes / 120.0


def ar1_coefficient(dt_minutes: float, tau_h: float) -> float:
    """AR(1) coefficient of an Ornstein-Uhlenbeck process sampled every dt: ``phi = exp(-dt / tau)``."""
    if not tau_h > 0:
        raise ValueError(f"correlation time tau_h must be > 0, got {tau_h}")
    return float(np.exp(-(dt_minutes / 60.0) / tau_h))


def load_shape_pu(time_h: np.ndarray) -> np.ndarray:
    """Typical-day load shape (peak 1.0): periodic linear interpolation of the RTS hourly table.

    Hourly values are placed at the middle of their hour, ``shape(h + 1/2) = RTS[h] / 100``.
    """
    hours = np.arange(24) + 0.5
    return np.interp(np.asarray(time_h, dtype=float) % 24.0, hours,
                     _RTS_WEEKDAY_PCT / 100.0, period=24.0)


def clear_sky_pu(time_h: np.ndarray, sunrise_h: float = SUNRISE_H, sunset_h: float = SUNSET_H,
                 peak_pu: float = CLEAR_SKY_PEAK_PU) -> np.ndarray:
    """Clear-sky PV output per unit of rating: ``peak * sin(pi (h - rise) / (set - rise))^1.2`` in daylight, else 0."""
    x = (np.asarray(time_h, dtype=float) - sunrise_h) / (sunset_h - sunrise_h)
    inside = (x > 0) & (x < 1)
    return np.where(inside, peak_pu * np.sin(np.pi * np.clip(x, 0, 1)) ** 1.2, 0.0)


def wind_diurnal(time_h: np.ndarray, amplitude: float = 0.15, peak_h: float = 3.0) -> np.ndarray:
    """Diurnal wind-speed factor ``1 + a cos(2 pi (h - h_peak) / 24)`` (windier at night, as onshore)."""
    return 1.0 + amplitude * np.cos(2 * np.pi * (np.asarray(time_h, dtype=float) - peak_h) / 24.0)


def power_curve_pu(v_ms: np.ndarray, cut_in_ms: float = CUT_IN_MS, rated_ms: float = RATED_MS,
                   cut_out_ms: float = CUT_OUT_MS) -> np.ndarray:
    """Turbine output per unit of rating.

    ``P(v) = 0`` for v < cut-in or v >= cut-out, ``(v^3 - vi^3) / (vr^3 - vi^3)`` for
    cut-in <= v < rated, 1 for rated <= v < cut-out.
    """
    v = np.asarray(v_ms, dtype=float)
    ramp = (v**3 - cut_in_ms**3) / (rated_ms**3 - cut_in_ms**3)
    out = np.where(v < rated_ms, ramp, 1.0)
    return np.where((v < cut_in_ms) | (v >= cut_out_ms), 0.0, np.clip(out, 0.0, 1.0))


def correlated_normals(rng: np.random.Generator, shape: tuple[int, ...], rho_common: float) -> np.ndarray:
    """Standard normals along the last axis with pairwise correlation ``rho``.

    ``e_i = sqrt(rho) c + sqrt(1 - rho) u_i`` with one common ``c`` per leading index.
    """
    return correlated_normals_each([rng], shape, rho_common)[0]


def correlated_normals_each(rngs: Sequence[np.random.Generator], shape: tuple[int, ...],
                            rho_common: float) -> np.ndarray:
    """:func:`correlated_normals` once per generator, stacked: shape ``(len(rngs),) + shape``.

    Each generator draws what it draws alone (its common ``c``, then its own ``u``), so
    ``out[i]`` is bit for bit ``correlated_normals(rngs[i], shape, rho)``.
    """
    if not 0.0 <= rho_common <= 1.0:
        raise ValueError(f"rho_common must be in [0, 1], got {rho_common}")
    if len(rngs) == 1:                    # one generator: views, no copies
        common = rngs[0].standard_normal(shape[:-1] + (1,))[None]
        own = rngs[0].standard_normal(shape)[None]
    else:
        common = np.stack([r.standard_normal(shape[:-1] + (1,)) for r in rngs])
        own = np.stack([r.standard_normal(shape) for r in rngs])
    return np.sqrt(rho_common) * common + np.sqrt(1.0 - rho_common) * own


def ar1_filter(innovations: np.ndarray, phi: float, x0: np.ndarray | None = None) -> np.ndarray:
    """Unit-variance AR(1) along axis -2 (time), series along axis -1.

    ``x_k = phi x_{k-1} + sqrt(1 - phi^2) e_k``. With ``x0=None`` the process starts
    stationary (``x_0 = e_0``); otherwise ``x_{-1} = x0`` (shape = innovations without
    the time axis) and the first returned value is ``phi x0 + sqrt(1 - phi^2) e_0``.
    """
    e = np.asarray(innovations, dtype=float)
    flat = e.ndim == 2                                             # (time, series): time is axis 0
    if not flat:
        e = np.moveaxis(e, -2, 0)                                  # time first: contiguous rows
    out = np.sqrt(1.0 - phi**2) * e
    if not out.flags.c_contiguous:
        out = np.ascontiguousarray(out)
    if e.shape[0] == 0:
        return out if flat else np.moveaxis(out, 0, -2)
    if x0 is None:
        out[0] = e[0]
    else:
        out[0] += phi * np.asarray(x0, dtype=float)
    if e.shape[0] > 1:
        # out[k] += phi out[k-1] for k >= 1, as one IIR filter y_k = x_k + phi y_{k-1} started
        # at phi out[0]: the same multiply and add per step, in C (bit for bit the loop's result)
        out[1:] = lfilter(_ONE_TAP, (1.0, -phi), out[1:], axis=0, zi=(phi * out[0])[None])[0]
    return out if flat else np.ascontiguousarray(np.moveaxis(out, 0, -2))


def ar1_paths(rng: np.random.Generator, n_steps_: int, n_series: int, phi: float, rho_common: float,
              n_paths: int | None = None, x0: np.ndarray | None = None) -> np.ndarray:
    """Correlated unit-variance AR(1) paths, shape ``(n_paths?, n_steps, n_series)``.

    Innovations come from :func:`correlated_normals`; see :func:`ar1_filter` for ``x0``.
    """
    lead = () if n_paths is None else (n_paths,)
    e = correlated_normals(rng, lead + (n_steps_, n_series), rho_common)
    return ar1_filter(e, phi, x0)


def ar1_paths_each(rngs: Sequence[np.random.Generator], n_steps_: int, n_series: int, phi: float,
                   rho_common: float) -> np.ndarray:
    """:func:`ar1_paths` (one path) once per generator, filtered together:
    ``(len(rngs), n_steps, n_series)``, ``out[i]`` bit for bit ``ar1_paths(rngs[i], ...)``."""
    return ar1_filter(correlated_normals_each(rngs, (n_steps_, n_series), rho_common), phi)


def tso_nominal_shape(time_h: np.ndarray) -> np.ndarray:
    """Shape of the TSO's day-ahead (nominal) requirement, signed (+ = up-regulation):
    ``exp(-((h - 19) / 1.5)^2 / 2) - 0.5 exp(-((h - 3) / 1.5)^2 / 2)`` — the TSO asks feeders to
    import less in the evening peak and to absorb more in the windy night (our choice)."""
    h = np.asarray(time_h, dtype=float)
    return np.exp(-0.5 * ((h - 19.0) / 1.5) ** 2) - 0.5 * np.exp(-0.5 * ((h - 3.0) / 1.5) ** 2)
