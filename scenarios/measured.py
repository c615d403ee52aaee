"""A user's own time series as the realized day, with the forecast model on top.

A profile table (CSV or parquet) has a timestamp (its index, or a first column / a column
named ``timestamp`` or ``time``) and per-unit columns (docs/data.md):

* ``load``: a multiplier on every load's peak, or ``load_<name>`` for one load of the layout
  (``f0_b5``, ``t_b9``, ...);
* ``pv`` / ``pv_<name>``: PV output per unit of rating, in [0, 1];
* ``wind`` / ``wind_<name>``: wind output per unit of rating, in [0, 1].

A column absent from the table leaves that source to the regime's synthetic day. The day
``date`` is cut out and averaged onto the steps (one value per step; the day must be covered).

The forecasts are made as for a sampled day: the regime's AR(1) forecast errors ``z`` (drawn
from ``seed``, the same streams :func:`scenarios.day.sample_day` uses) are put on top of the
measured day, i.e. the day-ahead forecast is the one from which that realization is the
model's outcome: ``load_da = load / (1 + sd z)``, ``k_da = k - sd_k z``, ``v_da = v - sd_v z``
(``v`` the wind speed the power curve maps to the measured output), so the errors of
``Forecast.at`` grow with lead time as for synthetic days. TSO calls come from the synthetic
day of ``seed``; EV sessions too, unless a session table (:func:`read_ev_sessions`) gives them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scenarios.day import Scenario, as_layout, sample_day
from scenarios.ev_arrivals import connected_counts
from scenarios.ev_sessions import EVSessions
from scenarios.profiles import CUT_IN_MS, RATED_MS, ar1_coefficient, ar1_paths
from scenarios.regimes import get_regime

_KINDS = ("load", "pv", "wind")
_MIN_ERROR_FACTOR = 0.2   # chosen: 1 + sd z is floored here so a forecast stays finite and positive


def read_profiles(path: str | Path) -> pd.DataFrame:
    """A profile table with a sorted :class:`pandas.DatetimeIndex` (CSV or parquet).

    Raises:
        ValueError: a missing file, an unknown suffix, no timestamp, no known column.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"profiles file {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame = pd.read_csv(path)
    elif suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    else:
        raise ValueError(f"profiles file {path}: unsupported suffix {suffix!r}; use .csv or .parquet")
    if not isinstance(frame.index, pd.DatetimeIndex):
        column = next((c for c in ("timestamp", "time") if c in frame), frame.columns[0])
        try:
            frame = frame.set_index(pd.DatetimeIndex(pd.to_datetime(frame[column]))).drop(columns=column)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"profiles file {path}: column {column!r} is not a timestamp ({exc})") from None
    known = [c for c in frame if str(c).split("_", 1)[0] in _KINDS]
    if not known:
        raise ValueError(f"profiles file {path}: no column named load, pv, wind or load_<name>, pv_<name>, "
                         f"wind_<name>; got {list(frame.columns)[:8]}")
    return frame[known].astype(float).sort_index()


def day_of(profiles: pd.DataFrame, date: str | pd.Timestamp, dt_minutes: int) -> pd.DataFrame:
    """The rows of ``date`` averaged onto the day's steps of ``dt_minutes``.

    Raises:
        ValueError: the day is not fully covered by the table.
    """
    start = pd.Timestamp(date).normalize()
    if profiles.index.tz is not None and start.tz is None:
        start = start.tz_localize(profiles.index.tz)
    rows = profiles[(profiles.index >= start) & (profiles.index < start + pd.Timedelta(days=1))]
    steps = rows.groupby(((rows.index - start) // pd.Timedelta(minutes=dt_minutes)).astype(int)).mean()
    n = 1440 // dt_minutes
    if len(rows) == 0 or list(steps.index) != list(range(n)) or steps.isna().any().any():
        have = f"{profiles.index.min()} .. {profiles.index.max()}" if len(profiles) else "no rows"
        raise ValueError(f"profiles do not cover {start.date()} at {dt_minutes}-min steps (the table spans {have})")
    return steps


def _columns(steps: pd.DataFrame, kind: str, names: tuple[str, ...]) -> np.ndarray | None:
    """(T, len(names)) values of ``kind`` per unit, or None when the table has none.

    Raises:
        ValueError: values out of range (load >= 0, pv and wind in [0, 1]); columns for some units only.
    """
    values = _unchecked_columns(steps, kind, names)
    if values is not None and (np.any(values < 0) or (kind != "load" and np.any(values > 1))):
        raise ValueError(f"profiles: {kind} values must be " + ("in [0, 1] (per unit of rating)" if kind != "load"
                                                               else ">= 0 (per unit of each load's peak)"))
    return values


def _unchecked_columns(steps: pd.DataFrame, kind: str, names: tuple[str, ...]) -> np.ndarray | None:
    if not names:
        return None
    if kind in steps:
        return np.repeat(steps[kind].to_numpy()[:, None], len(names), axis=1)
    own = [f"{kind}_{n}" for n in names]
    present = [c for c in own if c in steps]
    if not present:
        return None
    if len(present) != len(own):
        missing = sorted(set(own) - set(present))
        raise ValueError(f"profiles: {kind} columns given for some units but not for {missing[:5]}; give all "
                         f"or one column {kind!r}")
    return steps[own].to_numpy()


def wind_speed_for_output(pu: np.ndarray) -> np.ndarray:
    """A hub-height speed (m/s) whose power-curve output is ``pu`` (the curve's inverse on
    cut-in..rated; 0 output maps to half the cut-in speed, full output to the rated speed)."""
    pu = np.clip(np.asarray(pu, dtype=float), 0.0, 1.0)
    v = np.cbrt(pu * (RATED_MS**3 - CUT_IN_MS**3) + CUT_IN_MS**3)
    return np.where(pu <= 0.0, 0.5 * CUT_IN_MS, v)


_SESSION_COLUMNS = ("station", "arrival", "departure", "e_arrival_kwh", "e_request_kwh", "e_capacity_kwh",
                    "p_max_kw")


def read_ev_sessions(path: str | Path) -> pd.DataFrame:
    """An EV session table (CSV or parquet; docs/data.md): one row per visit with the columns
    :data:`_SESSION_COLUMNS` (``arrival`` / ``departure`` timestamps) and optionally ``efficiency``.

    Raises:
        ValueError: a missing file, an unknown suffix, missing columns, unreadable timestamps.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"EV sessions file {path} not found")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise ValueError(f"EV sessions file {path}: unsupported suffix {suffix!r}; use .csv or .parquet")
    frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    missing = [c for c in _SESSION_COLUMNS if c not in frame]
    if missing:
        raise ValueError(f"EV sessions file {path}: missing columns {missing} (need {list(_SESSION_COLUMNS)})")
    try:
        for column in ("arrival", "departure"):
            frame[column] = pd.to_datetime(frame[column])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"EV sessions file {path}: arrival / departure are not timestamps ({exc})") from None
    return frame


def ev_sessions_of_day(sessions: pd.DataFrame, date: str | pd.Timestamp, layout: Any, dt_minutes: int) -> EVSessions:
    """The sessions arriving on ``date`` on the day's steps: plug-in step ``floor((arrival - 0:00) / dt)``,
    departure step ``ceil((departure - 0:00) / dt)`` (at least one step later; past the day's end
    allowed). ``station`` is a layout name (``f0_ev20``); ``efficiency`` defaults to the layout's.

    Raises:
        ValueError: an unknown station, a departure before the arrival, more EVs connected at a
            station than it has ports, values :class:`EVSessions` refuses.
    """
    start = pd.Timestamp(date).normalize()
    day = sessions[(sessions.arrival >= start) & (sessions.arrival < start + pd.Timedelta(days=1))]
    index = {name: k for k, name in enumerate(layout.evcs_names)}
    unknown = sorted(set(map(str, day.station)) - set(index))
    if unknown:
        raise ValueError(f"EV sessions: unknown stations {unknown[:5]}; the case's are {list(layout.evcs_names)}")
    if (day.departure <= day.arrival).any():
        raise ValueError("EV sessions: a departure is not after its arrival")
    step = pd.Timedelta(minutes=dt_minutes)
    a = ((day.arrival - start) // step).to_numpy(dtype=int)
    d = np.maximum(np.ceil((day.departure - start) / step).to_numpy(dtype=float).astype(int), a + 1)
    station = np.array([index[str(n)] for n in day.station], dtype=int)
    eff = day["efficiency"].to_numpy(dtype=float) if "efficiency" in day else np.full(len(day), layout.ev_efficiency)
    order = np.lexsort((np.arange(len(day)), station, a))
    ev = EVSessions(station=station[order], arrival_step=a[order], departure_step=d[order],
                    e_arrival_kwh=day.e_arrival_kwh.to_numpy(dtype=float)[order],
                    e_request_kwh=day.e_request_kwh.to_numpy(dtype=float)[order],
                    e_capacity_kwh=day.e_capacity_kwh.to_numpy(dtype=float)[order],
                    p_max_kw=day.p_max_kw.to_numpy(dtype=float)[order], efficiency=eff[order])
    over = connected_counts(ev, 1440 // dt_minutes, len(layout.evcs_names)).max(axis=0) > layout.evcs_n_ports
    if over.any():
        raise ValueError(f"EV sessions of {start.date()}: more EVs connected than ports at "
                         f"{[layout.evcs_names[k] for k in np.flatnonzero(over)]}")
    return ev


def profile_day(grid: Any, profiles: pd.DataFrame, date: str | pd.Timestamp, regime: str, seed: int,
                dt_minutes: int = 15, ev_sessions: pd.DataFrame | None = None) -> Scenario:
    """The measured day ``date`` of ``profiles`` as a :class:`Scenario` of ``grid`` (see the module
    docstring); with ``ev_sessions`` (:func:`read_ev_sessions`) the EVs are that day's sessions
    (none balked) instead of the sampled ones. Raises ValueError: the day is not covered, values
    outside their range."""
    layout, params = as_layout(grid), get_regime(regime)
    base = sample_day(layout, params, seed, dt_minutes)
    if ev_sessions is not None:
        base = replace(base, ev=ev_sessions_of_day(ev_sessions, date, layout, dt_minutes),
                       ev_balked=np.zeros(len(layout.evcs_names), dtype=int))
    steps = day_of(profiles, date, dt_minutes)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 15]))
    T = base.n_steps
    da, fields = base.day_ahead, {}
    load = _columns(steps, "load", layout.load_names)
    if load is not None:
        z = ar1_paths(rng, T, load.shape[1], ar1_coefficient(dt_minutes, params.load_err_tau_h), params.load_err_rho)
        da = replace(da, load_pu_da=load / np.maximum(1.0 + params.load_err_sd * z, _MIN_ERROR_FACTOR))
        fields["load_pu"] = load
    pv = _columns(steps, "pv", layout.pv_names)
    if pv is not None:
        z = ar1_paths(rng, T, pv.shape[1], ar1_coefficient(dt_minutes, params.pv_k_err_tau_h), params.pv_err_rho)
        sky = da.pv_clear_sky_pu[:, None]
        k = np.where(sky > 0, pv / np.where(sky > 0, sky, 1.0), params.pv_k_min)
        da = replace(da, pv_k_da=np.clip(k - params.pv_k_err_sd * z, params.pv_k_min, 1.0))
        fields["pv_pu"] = pv
    wind = _columns(steps, "wind", layout.wind_names)
    if wind is not None:
        z = ar1_paths(rng, T, wind.shape[1], ar1_coefficient(dt_minutes, params.wind_err_tau_h), params.wind_err_rho)
        speed = wind_speed_for_output(wind)
        da = replace(da, wind_speed_ms_da=np.maximum(speed - da.wind_speed_sd_ms * z, 0.0))
        fields.update(wind_speed_ms=speed, wind_pu=wind)
    return replace(base, day_ahead=da, wind_ramp_start_h=float("nan") if wind is not None else base.wind_ramp_start_h,
                   **fields)


__all__ = ["day_of", "ev_sessions_of_day", "profile_day", "read_ev_sessions", "read_profiles", "wind_speed_for_output"]
