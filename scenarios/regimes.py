"""Weather/demand regimes of a sampled day: one readable table of frozen parameter sets.

Seed 003 studies three solar regimes (sunny, cloudy, highly fluctuating); the
stress regimes (wind ramp, EV surge, high penetration) come from docs/design.md. The
papers give no numbers for the processes below; every value is our choice and is
commented where it is set.

Model of a day (see ``scenarios.day``):
- load:  ``load_pu = shape(t) * level * (1 + load_err_sd * z_load(t))``
- PV:    ``pv_pu = clear_sky(t) * clip(k_da(t) + pv_k_err_sd * z_pv(t), pv_k_min, 1)``
- wind:  ``v = max(0, v_da(t) + (wind_err_frac v_da + wind_err_floor_ms) z_w(t)) * ramp(t)``,
  ``wind_pu = power_curve(v)``, day-mean speed ~ Weibull(shape, scale)
- TSO:   ``req = nominal + deviation * delta(t)``, delta a Markov on/off "call" signal
  kept inside the budget ``sum |delta| <= Gamma`` (seed 000's ARO budget set).
Each ``z`` is a unit-variance AR(1) with correlation time ``*_tau_h`` and a common
(share ``*_rho``) plus own component across units.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from scenarios.ev_arrivals import EVArrivalParams


@dataclass(frozen=True)
class RegimeParams:
    """All parameters of one regime (units in names; fractions are per unit).

    Attributes:
        name, description: label and one line of what the regime stresses.
        load_level_sd: day-to-day sd of the load level known day-ahead (fraction).
        load_unit_sd: static spread of individual loads around the common shape.
        load_err_sd / load_err_tau_h / load_err_rho: realized-vs-forecast error of load
            (multiplicative sd, correlation time, common share).
        pv_k_mean / pv_k_day_sd: day-ahead clear-sky index (mean, day-to-day sd).
        pv_k_err_sd / pv_k_err_tau_h / pv_err_rho: cloud process around the forecast index.
        pv_k_min: floor of the clear-sky index (diffuse light under thick cloud).
        pv_scale / wind_scale: capacity multipliers (high penetration).
        pv_penetration / wind_penetration: size the DER to the grid: each network's (feeder's,
            or the transmission's) installed PV / wind capacity is raised to at least this
            multiple of the network's peak load (0: the case's sizes; kinds a network lacks stay
            absent); applied after ``pv_scale`` / ``wind_scale`` (see ``scenarios.day.der_capacity_mw``).
        wind_weibull_scale_ms / wind_weibull_shape: law of the day-mean wind speed.
        wind_unit_sd: static spread of site speeds around the day mean (fraction).
        wind_err_frac / wind_err_floor_ms / wind_err_tau_h / wind_err_rho: speed error.
        ramp_prob: probability of an (unforecast) wind-drop event during the day.
        ramp_window_h: start time of the event is uniform in this window.
        ramp_depth: fraction of wind speed lost at the bottom of the event.
        ramp_down_h / ramp_hold_h / ramp_up_h: trapezoid of the event.
        ev: parameters of the EV arrival process.
        tso_nominal_frac: size of the day-ahead (nominal) requirement, fraction of feeder peak.
        tso_dev_frac: maximal deviation ``u_hat``, fraction of feeder peak.
        tso_calls_per_day / tso_call_h: rate and mean duration of requirement deviations ("calls").
        tso_budget_h: budget ``Gamma`` in hours of full deviation per boundary per day.
    """

    name: str
    description: str
    # load -------------------------------------------------------------------
    load_level_sd: float = 0.03     # weather/day-type level, known day-ahead
    load_unit_sd: float = 0.05      # loads are not all identical
    load_err_sd: float = 0.04       # ~4 % intraday error of a day-ahead load forecast
    load_err_tau_h: float = 2.0
    load_err_rho: float = 0.6       # loads of one feeder move together
    # PV ---------------------------------------------------------------------
    pv_k_mean: float = 0.95
    pv_k_day_sd: float = 0.03
    pv_k_err_sd: float = 0.04
    pv_k_err_tau_h: float = 3.0
    pv_err_rho: float = 0.8         # units of one feeder see the same clouds
    pv_k_min: float = 0.1
    pv_scale: float = 1.0
    pv_penetration: float = 0.0
    # wind -------------------------------------------------------------------
    wind_weibull_scale_ms: float = 7.0
    wind_weibull_shape: float = 3.0  # day-MEAN speed: less spread than hourly speeds (k ~ 2)
    wind_unit_sd: float = 0.08
    wind_err_frac: float = 0.15     # day-ahead speed forecasts miss by ~15 %
    wind_err_floor_ms: float = 0.5
    wind_err_tau_h: float = 3.0
    wind_err_rho: float = 0.8
    wind_scale: float = 1.0
    wind_penetration: float = 0.0
    ramp_prob: float = 0.0
    ramp_window_h: tuple[float, float] = (10.0, 18.0)
    ramp_depth: float = 0.85
    ramp_down_h: float = 0.5
    ramp_hold_h: float = 2.0
    ramp_up_h: float = 1.5
    # EV ---------------------------------------------------------------------
    ev: EVArrivalParams = field(default_factory=EVArrivalParams)
    # TSO requirement (seed 000: ARO uncertainty of the operational requirement) --
    tso_nominal_frac: float = 0.03  # small day-ahead call: up in the evening peak, down at night
    tso_dev_frac: float = 0.10      # u_hat ~ 0.35 MW on a d33 feeder (seed 000 Fig. 7: EVCS moves 0.31 MW)
    tso_calls_per_day: float = 4.0
    tso_call_h: float = 1.0
    tso_budget_h: float = 4.0       # Gamma = 16 steps of full deviation at dt = 15 min

    def __post_init__(self) -> None:
        if not isinstance(self.ev, EVArrivalParams):
            raise ValueError(f"RegimeParams.ev must be an EVArrivalParams, got {type(self.ev).__name__}")
        nonneg = [f.name for f in dataclasses.fields(self)
                  if f.name not in ("name", "description", "ev", "ramp_window_h")]
        for what in nonneg:
            value = getattr(self, what)
            if not value >= 0:
                raise ValueError(f"RegimeParams.{what} must be >= 0, got {value}")
        for what in ("load_err_tau_h", "pv_k_err_tau_h", "wind_err_tau_h", "tso_call_h",
                     "wind_weibull_scale_ms", "wind_weibull_shape", "pv_scale", "wind_scale"):
            if not getattr(self, what) > 0:
                raise ValueError(f"RegimeParams.{what} must be > 0, got {getattr(self, what)}")
        for what in ("load_err_rho", "pv_err_rho", "wind_err_rho", "ramp_prob", "ramp_depth",
                     "pv_k_mean", "pv_k_min"):
            if not 0 <= getattr(self, what) <= 1:
                raise ValueError(f"RegimeParams.{what} must be in [0, 1], got {getattr(self, what)}")
        lo, hi = self.ramp_window_h
        if not 0 <= lo <= hi <= 24:
            raise ValueError(f"RegimeParams.ramp_window_h must satisfy 0 <= lo <= hi <= 24, got {self.ramp_window_h}")


REGIMES: dict[str, RegimeParams] = {
    # Seed 003 "sunny": clear sky all day, a small cloud noise; moderate wind.
    "sunny": RegimeParams(
        "sunny", "clear sky, small cloud noise",
        pv_k_mean=0.95, pv_k_err_sd=0.04, pv_k_err_tau_h=3.0),
    # Seed 003 "cloudy": overcast, ~half the clear-sky energy, slow cloud changes; a bit windier.
    "cloudy": RegimeParams(
        "cloudy", "overcast: about half the clear-sky PV energy, slow changes",
        pv_k_mean=0.45, pv_k_day_sd=0.08, pv_k_err_sd=0.15, pv_k_err_tau_h=1.5,
        wind_weibull_scale_ms=8.0),
    # Seed 003 "highly fluctuating": broken clouds passing in ~20 min (large step-to-step
    # PV swings), gusty wind with a larger and faster speed error, noisier load.
    "highly_fluctuating": RegimeParams(
        "highly_fluctuating", "broken clouds: large fast PV swings, gusty wind",
        pv_k_mean=0.65, pv_k_day_sd=0.08, pv_k_err_sd=0.40, pv_k_err_tau_h=0.3, pv_err_rho=0.7,
        wind_weibull_scale_ms=9.0, wind_err_frac=0.25, wind_err_tau_h=1.5, load_err_sd=0.05),
    # Stress: a windy day with one sharp unforecast wind drop (front passage) into the evening
    # peak: speed falls by 85 % within 30 min, stays down 2 h, recovers over 1.5 h. Wind is
    # sized to at least 60 % of each network's peak load (chosen: on d33 the drop then removes
    # ~1.5 MW, 40 % of the peak, and on t30d2 more than the thermal units' ramp can follow in
    # a step, so reserves or shedding must cover it).
    "wind_ramp": RegimeParams(
        "wind_ramp", "windy day, wind sized to 60 % of peak load, sharp unforecast drop into the evening peak",
        pv_k_mean=0.9, pv_k_err_sd=0.05, wind_weibull_scale_ms=11.0, wind_weibull_shape=4.0,
        ramp_prob=1.0, ramp_window_h=(16.0, 19.0), wind_penetration=0.6),
    # Stress: EV arrivals x4 in the evening peak (event/holiday evening, known day-ahead):
    # chosen so the stations' ports fill and the evening feeder voltage falls below its limit.
    "ev_surge": RegimeParams(
        "ev_surge", "evening EV arrivals x4",
        ev=EVArrivalParams(surge_component="evening", surge_factor=4.0)),
    # Stress: PV and wind capacity doubled and at least 250 % (PV) / 50 % (wind) of each
    # network's peak load (chosen: midday reverse flow on d33 and voltages above 1.05 p.u.
    # without reactive control; curtailment on T-D cases).
    "high_penetration": RegimeParams(
        "high_penetration", "PV and wind x2 and sized to 250 % / 50 % of peak load",
        pv_k_mean=0.9, pv_k_err_sd=0.06, pv_k_err_tau_h=2.0, wind_weibull_scale_ms=8.0,
        pv_scale=2.0, wind_scale=2.0, pv_penetration=2.5, wind_penetration=0.5),
    # Stress (seed 002 Figure 8, docs/stvs.md "Stress case"): high_penetration on a windy day with
    # wind sized to the peak load (chosen: at midday the must-run units leave room for ~120 MW of
    # the T renewables on t14d2, and the schedule chooses between the PV at bus 12, which raises
    # the voltages around it above 1.05 p.u., and the wind at bus 8, next to a voltage-controlled machine).
    "stvs_stress": RegimeParams(
        "stvs_stress", "high_penetration on a windy day, wind sized to 100 % of peak load",
        pv_k_mean=0.9, pv_k_err_sd=0.06, pv_k_err_tau_h=2.0, wind_weibull_scale_ms=11.0,
        pv_scale=2.0, wind_scale=2.0, pv_penetration=2.5, wind_penetration=1.0),
}


def regime_names() -> tuple[str, ...]:
    """Names of the built-in regimes."""
    return tuple(REGIMES)


def get_regime(regime: str | RegimeParams, **overrides: object) -> RegimeParams:
    """The regime's parameters, optionally with some fields replaced.

    Raises:
        ValueError: unknown regime name (lists the valid ones) or unknown field in overrides.
    """
    if isinstance(regime, RegimeParams):
        params = regime
    elif isinstance(regime, str) and regime in REGIMES:
        params = REGIMES[regime]
    else:
        raise ValueError(f"unknown regime {regime!r}; valid regimes: {', '.join(REGIMES)}")
    if not overrides:
        return params
    valid = [f.name for f in dataclasses.fields(RegimeParams)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown RegimeParams field(s) {unknown}; valid fields: {', '.join(valid)}")
    return dataclasses.replace(params, **overrides)
