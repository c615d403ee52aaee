"""The inputs of one simulated day: a scenario's profiles in the grid's units and layout, and
the per-step constants derived from them once per day (docs/design.md "Physics truth").

:class:`DayData` is read-only data; the simulator (:class:`env.batched.BatchedSimulator`,
and :class:`env.simulator.GridSimulator`, its one-day view) holds one per day and never
changes it. Every array is indexed by step first:

* loads ``P = load_pu P_peak`` (MW) and ``Q = load_pu Q_base`` (loads keep their q/p ratio),
  the feeder loads' stacked complex injection ``S = (P + jQ) / S_base`` (p.u.);
* renewable availability per DER (:meth:`env.grid_model.GridModel.der_mw`) and its sum;
* the TSO's regulation requirement per boundary; the time-of-use purchase price;
* the net-load forecast rows of the observation: ``net = load - DER availability`` per feeder
  (and the transmission row on T-D cases), row ``t`` = the nowcast, then the day-ahead
  forecast for the next ``h - 1`` steps (past the day's end the last step repeats).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from env.grid_model import GridModel

__all__ = ["DayData", "forecast_at", "net_rows"]


def net_rows(model: GridModel, load_p_mw: np.ndarray, der_mw: np.ndarray) -> np.ndarray:
    """``(..., n_rows)`` net load per feeder, ``sum loads - sum DER availability`` (MW), plus the
    transmission row on T-D cases (the same difference over the transmission loads and DERs)."""
    m = model
    rows = load_p_mw[..., :m.n_load_f] @ m.f_load.T - der_mw[..., :m.n_der_f] @ m.f_der.T
    if m.is_td:
        t_row = load_p_mw[..., m.n_load_f:].sum(-1) - der_mw[..., m.n_der_f:].sum(-1)
        rows = np.concatenate([rows, t_row[..., None]], axis=-1)
    return rows


def forecast_at(scenario: Any, t: int) -> Any:
    """The forecast made with the information of steps ``0..t-1`` (it covers steps ``t..T-1``).

    The TSO's call at ``t`` is revealed only after dispatch, so the forecast a policy gets at
    step ``t`` is conditioned on steps ``< t``; the nowcast of step ``t`` is in the Observation.
    """
    return scenario.forecast(t - 1)


class DayData:
    """One scenario's day on one grid model (module docstring); read-only arrays.

    Args:
        model: the compiled grid.
        scenario: a ``scenarios.day.Scenario`` of the grid's layout.
        forecast_horizon_h: look-ahead of the forecast rows (hours, at least one step).

    Raises:
        ValueError: the scenario's layout is not the grid's.
    """

    def __init__(self, model: GridModel, scenario: Any, forecast_horizon_h: float) -> None:
        m, grid = model, model.grid
        lay = grid.layout
        if scenario.layout.load_names != lay.load_names or scenario.layout.evcs_names != lay.evcs_names:
            raise ValueError(f"DayData: scenario layout ({scenario.layout.case}) does not match grid {grid.name}")
        self.model, self.scenario = m, scenario
        self.n_steps = T = int(scenario.n_steps)
        self.dt_h = scenario.dt_minutes / 60.0
        self.time_h = np.arange(T) * self.dt_h
        self.load_p = np.ascontiguousarray(scenario.load_pu * lay.load_p_mw)          # (T, n_load)
        self.load_q = np.ascontiguousarray(scenario.load_pu * m.load_q_base)
        self.s_load_fb_pu = m.load_injection_pu(self.load_p[:, :m.n_load_f], self.load_q[:, :m.n_load_f])
        self.der_avail = m.der_mw(np.asarray(scenario.pv_p_mw), np.asarray(scenario.wind_p_mw))   # (T, n_der)
        self.der_avail_sum = self.der_avail.sum(axis=1)
        self.tso = np.asarray(scenario.tso_requirement_mw, dtype=float)
        self.pv_pu = np.asarray(scenario.pv_pu)
        self.wind_pu = np.asarray(scenario.wind_pu)
        self.price_buy = grid.tariff.buy_price_at(self.time_h)
        self.price_list: list[float] = self.price_buy.tolist()
        self.h_fc = h = max(1, int(round(forecast_horizon_h / self.dt_h)))
        da = scenario.day_ahead
        da_rows = net_rows(m, da.load_pu_da * lay.load_p_mw,
                           m.der_mw(da.pv_pu_da * da.pv_p_max_mw, da.wind_pu_da * da.wind_p_max_mw))
        steps = np.arange(T)[:, None] + np.arange(h)[None, :]                  # (T, h)
        rows = da_rows[np.clip(steps, 0, T - 1)]                              # (T, h, n_rows)
        rows[:, 0] = net_rows(m, self.load_p, self.der_avail)                 # the nowcast
        last = rows[np.arange(T), np.minimum(T - 1 - np.arange(T), h - 1)]
        rows = np.where((steps >= T)[..., None], last[:, None, :], rows)
        self.fc_rows = np.ascontiguousarray(rows.transpose(0, 2, 1))          # (T, n_rows, h)
        for arr in (self.load_p, self.load_q, self.s_load_fb_pu, self.der_avail, self.der_avail_sum, self.tso,
                    self.price_buy, self.fc_rows):
            arr.flags.writeable = False

    def intraday_rows(self, t: int) -> np.ndarray:
        """(n_rows, h) net-load point forecast for steps ``t..t+h-1`` from the intraday forecast
        (:func:`forecast_at`; step ``t`` = the nowcast; past the day's end the last step repeats)."""
        if t + 1 >= self.n_steps:
            return self.fc_rows[t]
        m, h = self.model, self.h_fc
        fc = forecast_at(self.scenario, t)   # covers steps t..T-1; its first row is the nowcast's step
        ahead = net_rows(m, fc.load_pu * m.grid.layout.load_p_mw,
                         m.der_mw(fc.pv_pu * fc.day_ahead.pv_p_max_mw, fc.wind_pu * fc.day_ahead.wind_p_max_mw))[1:]
        rows = np.empty((h, ahead.shape[1]))
        rows[0] = self.fc_rows[t][:, 0]
        k = min(h - 1, ahead.shape[0])
        rows[1:k + 1] = ahead[:k]
        rows[k + 1:] = rows[k]
        return rows.T
