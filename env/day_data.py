"""The inputs of the simulated days: each scenario's profiles in the grid's units and layout,
and the per-step constants derived from them once per day (docs/design.md "Physics truth").

:func:`day_arrays` computes them for all days of a batch at once, ``(T, B, ...)`` (the layout
:class:`env.batched.BatchedSimulator` steps); :class:`DayData` is one day's read-only views
of them (:class:`env.simulator.GridSimulator`, the one-day view, reads its day's). Nothing
changes them. Every array is indexed by step first:

* loads ``P = load_pu P_peak`` (MW) and ``Q = load_pu Q_base`` (loads keep their q/p ratio),
  the feeder loads' stacked complex injection ``S = (P + jQ) / S_base`` (p.u.);
* renewable availability per DER (:meth:`env.grid_model.GridModel.der_mw`) and its sum;
* the TSO's regulation requirement per boundary; the time-of-use purchase price;
* the net-load forecast rows of the observation: ``net = load - DER availability`` per feeder
  (and the transmission row on T-D cases), row ``t`` = the nowcast, then the day-ahead
  forecast for the next ``h - 1`` steps (past the day's end the last step repeats).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from env.grid_model import GridModel
from scenarios.profiles import power_curve_pu

__all__ = ["DayData", "day_arrays", "forecast_at", "net_rows"]


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


def day_arrays(model: GridModel, scenarios: Sequence[Any], forecast_horizon_h: float) -> dict[str, Any]:
    """The per-step arrays of several days (module docstring), ``(T, B, ...)`` with the day
    axis second, computed once for all days; read-only. The products run on ``(T B, n)`` rows
    (at ``B = 1`` the one day's own ``(T, n)`` arrays), each row as it would be alone.

    Raises:
        ValueError: no scenario, a scenario of another layout, days of different step lengths.
    """
    m, grid = model, model.grid
    lay = grid.layout
    if not scenarios:
        raise ValueError("at least one scenario is needed")
    for sc in scenarios:
        if sc.layout.load_names != lay.load_names or sc.layout.evcs_names != lay.evcs_names:
            raise ValueError(f"scenario layout ({sc.layout.case}) does not match grid {grid.name}")
    sc0 = scenarios[0]
    if any(sc.dt_minutes != sc0.dt_minutes or sc.n_steps != sc0.n_steps for sc in scenarios):
        raise ValueError("all days must have the same number and length of steps")
    T, B, dt_h = int(sc0.n_steps), len(scenarios), sc0.dt_minutes / 60.0

    def rows(get: Any) -> np.ndarray:    # (T B, n): row t B + b is day b's step t
        return np.stack([get(sc) for sc in scenarios], 1).reshape(T * B, -1) if B > 1 else np.asarray(get(sc0))

    def per_day(get: Any) -> np.ndarray:    # (B, n) ratings per day, repeated over the steps
        return np.tile(np.stack([get(sc) for sc in scenarios]), (T, 1)) if B > 1 else np.asarray(get(sc0))

    load_pu, pv_pu, wind_pu = rows(lambda sc: sc.load_pu), rows(lambda sc: sc.pv_pu), rows(lambda sc: sc.wind_pu)
    pv_max, wind_max = per_day(lambda sc: sc.day_ahead.pv_p_max_mw), per_day(lambda sc: sc.day_ahead.wind_p_max_mw)
    load_p = load_pu * lay.load_p_mw
    load_q = load_pu * m.load_q_base
    der = m.der_mw(pv_pu * pv_max, wind_pu * wind_max)
    h = max(1, int(round(forecast_horizon_h / dt_h)))
    clear_sky = rows(lambda sc: sc.day_ahead.pv_clear_sky_pu[:, None])
    da_rows = net_rows(m, rows(lambda sc: sc.day_ahead.load_pu_da) * lay.load_p_mw,
                       m.der_mw(clear_sky * rows(lambda sc: sc.day_ahead.pv_k_da) * pv_max,
                                power_curve_pu(rows(lambda sc: sc.day_ahead.wind_speed_ms_da)) * wind_max))
    da_rows = da_rows.reshape(T, B, -1)
    steps = np.arange(T)[:, None] + np.arange(h)[None, :]                      # (T, h)
    fc = da_rows[np.clip(steps, 0, T - 1)]                                    # (T, h, B, n_rows)
    fc[:, 0] = net_rows(m, load_p, der).reshape(T, B, -1)                     # the nowcast
    last = fc[np.arange(T), np.minimum(T - 1 - np.arange(T), h - 1)]
    fc = np.where((steps >= T)[..., None, None], last[:, None], fc)
    time_h = np.arange(T) * dt_h
    out = {"load_p": load_p, "load_q": load_q, "der_avail": der, "der_avail_sum": der.sum(axis=1),
           "s_load_fb_pu": m.load_injection_pu(load_p[:, :m.n_load_f], load_q[:, :m.n_load_f]),
           "tso": rows(lambda sc: np.asarray(sc.tso_requirement_mw, dtype=float)), "pv_pu": pv_pu,
           "wind_pu": wind_pu}
    out = {k: v.reshape((T, B) + v.shape[1:]) for k, v in out.items()}
    out["fc_rows"] = np.ascontiguousarray(fc.transpose(0, 2, 3, 1))         # (T, B, n_rows, h)
    for arr in out.values():
        arr.flags.writeable = False
    price = grid.tariff.buy_price_at(time_h)
    price.flags.writeable = False
    out.update(time_h=time_h, price_buy=price, h_fc=h, scenarios=tuple(scenarios))
    return out


class DayData:
    """One scenario's day on one grid model (module docstring); read-only arrays.

    Args:
        model: the compiled grid.
        scenario: a ``scenarios.day.Scenario`` of the grid's layout.
        forecast_horizon_h: look-ahead of the forecast rows (hours, at least one step).
        batch: :func:`day_arrays` of days that hold ``scenario`` at ``index``: the day's
            arrays are then its views (none is computed); None computes the day alone.
        index: the scenario's position in ``batch``.

    Raises:
        ValueError: the scenario's layout is not the grid's; a batch that does not hold the
            scenario at ``index``.
    """

    def __init__(self, model: GridModel, scenario: Any, forecast_horizon_h: float,
                 batch: dict[str, Any] | None = None, index: int = 0) -> None:
        if batch is None:
            try:
                batch, index = day_arrays(model, [scenario], forecast_horizon_h), 0
            except ValueError as err:
                raise ValueError(f"DayData: {err}") from None
        elif not (0 <= index < len(batch["scenarios"]) and batch["scenarios"][index] is scenario):
            raise ValueError(f"DayData: the batch does not hold this scenario at index {index}")
        self.model, self.scenario = model, scenario
        self.n_steps = int(scenario.n_steps)
        self.dt_h = scenario.dt_minutes / 60.0
        self.time_h, self.price_buy, self.h_fc = batch["time_h"], batch["price_buy"], batch["h_fc"]
        self.price_list: list[float] = self.price_buy.tolist()
        self.load_p, self.load_q = batch["load_p"][:, index], batch["load_q"][:, index]     # (T, n_load)
        self.s_load_fb_pu = batch["s_load_fb_pu"][:, index]
        self.der_avail, self.der_avail_sum = batch["der_avail"][:, index], batch["der_avail_sum"][:, index]
        self.tso, self.pv_pu, self.wind_pu = batch["tso"][:, index], batch["pv_pu"][:, index], batch["wind_pu"][:, index]
        self.fc_rows = batch["fc_rows"][:, index]                                    # (T, n_rows, h)

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
