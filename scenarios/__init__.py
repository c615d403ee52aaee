"""Exogenous uncertainty for gridroll: profiles, sampled days, forecasts, EV arrivals, ambiguity sets.

This package imports nothing from ``env``, ``policies`` or ``controller``.
"""

from scenarios.ambiguity import BudgetSet, PBox, WassersteinBall, WorstCase, cvar_sample_lp
from scenarios.day import Scenario, as_layout, sample_day, sample_days
from scenarios.ev_arrivals import EVArrivalParams
from scenarios.ev_sessions import EVSessions
from scenarios.forecast import DayAheadInfo, Forecast, Observed, ScenarioSet
from scenarios.layout import Layout
from scenarios.profiles import VALID_DT_MINUTES
from scenarios.reduction import reduce
from scenarios.regimes import REGIMES, RegimeParams, get_regime, regime_names

__all__ = [
    "REGIMES", "VALID_DT_MINUTES", "BudgetSet", "DayAheadInfo", "EVArrivalParams", "EVSessions", "Forecast",
    "Layout", "Observed", "PBox", "RegimeParams", "Scenario", "ScenarioSet", "WassersteinBall", "WorstCase",
    "as_layout", "cvar_sample_lp", "get_regime", "plot_day", "reduce", "regime_names", "sample_day", "sample_days",
]


def __getattr__(name: str):
    # matplotlib is imported only when plotting is asked for
    if name == "plot_day":
        from scenarios.plot import plot_day

        return plot_day
    raise AttributeError(f"module 'scenarios' has no attribute {name!r}")
