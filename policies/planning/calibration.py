"""Out-of-sample check of the day-ahead plan's reserves, and the choice of N and the radius by it.

The Wasserstein samples of the plan are day-ahead forecast paths of the error process the env
realizes (:func:`policies.planning.first_stage.build_planning_data` draws them with
``Forecast.sample``, as a policy sees it). Whether the ambiguity set is large enough is judged
here the way the closed loop judges it: the share of hours whose transmission wind deviation from
the plan exceeds the reserves the plan cleared for the hour,

    dev_t = W_plan_t - clip(fc_t + xi_t, 0, cap),
    exceeded_t = dev_t > sum r_up_t + sum R_up_t  or  -dev_t > sum r_dn_t + sum R_dn_t

(thermal reserves ``r``, boundary reserves ``R``; ``xi`` the hourly mean of the total farm error),
over ``M`` fresh forecast paths drawn from the same distribution (another random stream than the
plan's samples). :func:`calibrate` re-plans with candidate sample sizes N and TSO radii (ascending)
and keeps the first whose out-of-sample share is at most the risk level; when none reaches it,
the one with the smallest share, flagged ``reached=False`` (on t30d2 the thermal reserves are
capped by the units' 15-min ramp, 23.75 MW in all, so days whose wind error exceeds that cannot
reach a small risk level by the radius alone). The per-step counterpart of the closed loop is
:meth:`policies.aro_dro.AroDroPolicy.day_stats` (``aro_reserve_exceedance_share``).
See docs/math.md §4.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from policies.planning.centralized import solve_centralized
from policies.planning.first_stage import (
    FirstStagePlan,
    PlanningData,
    PlanningSettings,
    _period_mean,
    _wind_error_samples,
    build_planning_data,
)
from env.network import Grid
from env.settings import StrictKwargs

__all__ = ["CalibrationResult", "CalibrationSettings", "calibrate", "out_of_sample_errors",
           "beyond_cleared_reserves", "reserve_exceedance_share", "reserve_shortfalls"]


@dataclass(frozen=True)
class CalibrationSettings(StrictKwargs):
    """How N and the TSO radius are chosen (frozen; validated).

    Attributes:
        risk: target share of hours whose deviation exceeds the cleared reserves (the stated risk level).
        n_out_of_sample: M, fresh forecast paths of the check.
        sample_sizes: candidate N (tried in order).
        radii_tso_mw: candidate TSO radii in MW (tried in ascending order for each N).
        seed: seed of the out-of-sample paths (stream ``[seed, 7003]``, apart from the plan's).
    """

    risk: float = 0.1
    n_out_of_sample: int = 200
    sample_sizes: tuple[int, ...] = (10,)
    radii_tso_mw: tuple[float, ...] = (0.0, 10.0, 20.0, 40.0, 80.0)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.risk < 1.0:
            raise ValueError(f"CalibrationSettings.risk: must be in (0, 1), got {self.risk}")
        if int(self.n_out_of_sample) != self.n_out_of_sample or self.n_out_of_sample < 1:
            raise ValueError("CalibrationSettings.n_out_of_sample: an integer >= 1")
        if not self.sample_sizes or any(int(n) != n or n < 1 for n in self.sample_sizes):
            raise ValueError("CalibrationSettings.sample_sizes: non-empty, integers >= 1")
        radii = np.asarray(self.radii_tso_mw, dtype=float)
        if radii.size == 0 or not np.all(np.isfinite(radii)) or np.any(radii < 0) or np.any(np.diff(radii) <= 0):
            raise ValueError("CalibrationSettings.radii_tso_mw: non-empty, finite, >= 0, strictly ascending")


@dataclass(frozen=True)
class CalibrationResult:
    """The chosen N and radius, whether the risk level was reached, and every candidate tried.

    Attributes:
        n_samples, radius_tso_mw: the choice.
        exceedance_share: its out-of-sample share.
        reached: ``exceedance_share <= risk``.
        plan: the plan of the choice.
        tried: ``(n_samples, radius_tso_mw, exceedance_share)`` of every candidate solved.
    """

    n_samples: int
    radius_tso_mw: float
    exceedance_share: float
    reached: bool
    plan: FirstStagePlan
    tried: list[tuple[int, float, float]] = field(default_factory=list)


def out_of_sample_errors(day_ahead: Any, data: PlanningData, n_paths: int, seed: int = 0) -> np.ndarray:
    """(M, T) hourly mean total transmission wind errors (MW) of ``n_paths`` fresh forecast paths."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7003]))
    err = _wind_error_samples(day_ahead, int(n_paths), rng)                  # (M, steps, n_wind)
    kk = data.settings.period_minutes // day_ahead.dt_minutes
    n_f = sum(len(f.der) for f in data.grid.feeders)
    total = err[:, :, n_f:].sum(axis=2)                                       # (M, steps)
    return _period_mean(total.T, kk).T                                        # (M, T)


def reserve_shortfalls(plan: FirstStagePlan, data: PlanningData,
                       errors_mw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The transmission wind deviation beyond the plan's cleared reserves, per path and hour.

    With ``dev_t = W_plan_t - clip(fc_t + xi_t, 0, cap)`` (wind short of the plan when > 0),
    ``up_t = sum r_up_t + sum R_up_t`` and ``dn_t = sum r_dn_t + sum R_dn_t``::

        short_t   = max(dev_t - up_t, 0)     (MW the reserves cannot cover: shed by the TSO's recourse)
        surplus_t = max(-dev_t - dn_t, 0)    (MW above what the reserves absorb: curtailed)

    Args:
        errors_mw: (M, T) hourly mean total farm errors (:func:`out_of_sample_errors`).

    Returns:
        (short_mw, surplus_mw), both (M, T).
    """
    errors = np.atleast_2d(np.asarray(errors_mw, dtype=float))
    fc = data.tso.wind_fc_mw.sum(axis=1)
    cap = float(data.tso.wind_cap_mw.sum())
    realized = np.clip(fc[None, :] + errors, 0.0, cap)
    return beyond_cleared_reserves(plan, np.arange(plan.wind_planned_mw.shape[0]), realized)


def beyond_cleared_reserves(plan: FirstStagePlan, period: np.ndarray | int,
                            wind_mw: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """``(short, surplus)`` of :func:`reserve_shortfalls` for realized total transmission wind
    ``wind_mw`` in plan period(s) ``period`` (broadcast): the one home of the equation, used by the
    out-of-sample check and by the closed loop's per-step exceedance
    (:meth:`policies.aro_dro.AroDroPolicy.day_stats`)."""
    p = np.asarray(period, dtype=int)
    dev = plan.wind_planned_mw.sum(axis=1)[p] - np.asarray(wind_mw, dtype=float)
    up = (plan.thermal_r_up_mw.sum(axis=1) + plan.boundary_r_up_mw.sum(axis=1))[p]
    dn = (plan.thermal_r_dn_mw.sum(axis=1) + plan.boundary_r_dn_mw.sum(axis=1))[p]
    return np.maximum(dev - up, 0.0), np.maximum(-dev - dn, 0.0)


def reserve_exceedance_share(plan: FirstStagePlan, data: PlanningData, errors_mw: np.ndarray) -> float:
    """Share of (path, hour) pairs whose wind deviation from the plan exceeds its cleared reserves
    (``short_t > 0`` or ``surplus_t > 0`` of :func:`reserve_shortfalls`); ``errors_mw`` is (M, T)."""
    short, surplus = reserve_shortfalls(plan, data, errors_mw)
    return float(((short > 1e-6) | (surplus > 1e-6)).mean())


def calibrate(grid: Grid, day_ahead: Any, settings: PlanningSettings | None = None,
              calibration: CalibrationSettings | None = None) -> CalibrationResult:
    """Choose N and the TSO radius by the out-of-sample check (centralized plans; see the module doc)."""
    base = settings or PlanningSettings()
    cal = calibration or CalibrationSettings()
    tried: list[tuple[int, float, float]] = []
    best: tuple[float, int, float, FirstStagePlan] | None = None
    errors = None
    for n in cal.sample_sizes:
        for radius in cal.radii_tso_mw:
            data = build_planning_data(grid, day_ahead, replace(base, n_samples=int(n), radius_tso_mw=float(radius)))
            if errors is None:
                errors = out_of_sample_errors(day_ahead, data, cal.n_out_of_sample, cal.seed)
            plan = solve_centralized(data).plan
            share = reserve_exceedance_share(plan, data, errors)
            tried.append((int(n), float(radius), share))
            if best is None or share < best[0] - 1e-12:
                best = (share, int(n), float(radius), plan)
            if share <= cal.risk:
                return CalibrationResult(int(n), float(radius), share, True, plan, tried)
    assert best is not None
    return CalibrationResult(best[1], best[2], best[0], False, best[3], tried)
