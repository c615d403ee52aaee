"""What the env charges, per unit, for the coming step of a feeder: the prices an optimizer
inside the loop must use so that its objective is the env's own cost (docs/math.md §10).

The accounting itself lives in :meth:`env.batched.BatchedSimulator._costs`; this module states
the marginal prices that accounting implies for what a feeder-level decision (reactive
setpoints, active dispatch) can change:

* **energy at the feeder head**, currency per MWh of head power ``P_head``:

  - a single feeder settles its head at the time-of-use buy price when importing and at the
    feed-in price when exporting, ``c(P) = dt (buy max(P, 0) - sell max(-P, 0))``;
  - on a T–D case the feeders' head power is a load on the transmission network; a change
    of it (losses included) is taken by the balancing chain and in the end by the reference
    unit, whose fuel ``c2 P^2 + c1 P`` is what the env counts. Its marginal cost at the last
    setpoint, ``c1 + 2 c2 P_ref``, is used on both sides (buy = sell);

* **voltage**, currency per p.u.-hour of ``sum_i max(vmin_i - |V_i|, |V_i| - vmax_i, 0)``
  over the feeder's buses (the tariff's ``penalty_voltage_per_puh``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["StepPrices", "step_prices"]


@dataclass(frozen=True)
class StepPrices:
    """Prices of one step as the env settles it (see the module docstring).

    Attributes:
        buy_per_mwh: price of head power drawn from the upstream grid.
        sell_per_mwh: price paid for head power fed back (may exceed the buy price: a valley
            tariff below the feed-in price makes the head cost concave in ``P``).
        voltage_per_puh: penalty per p.u.-hour of voltage outside the bus limits.
        dt_h: step length in hours.
    """

    buy_per_mwh: float
    sell_per_mwh: float
    voltage_per_puh: float
    dt_h: float

    def __post_init__(self) -> None:
        for name in ("buy_per_mwh", "sell_per_mwh", "voltage_per_puh", "dt_h"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise TypeError(f"StepPrices.{name}: expected a real number, got {value!r}")
            if not np.isfinite(value):
                raise ValueError(f"StepPrices.{name}: must be finite, got {value}")
            object.__setattr__(self, name, float(value))
        if self.voltage_per_puh < 0:
            raise ValueError(f"StepPrices.voltage_per_puh: must be >= 0, got {self.voltage_per_puh}")
        if not self.dt_h > 0:
            raise ValueError(f"StepPrices.dt_h: must be > 0, got {self.dt_h}")

    def head_price(self, head_p_mw: np.ndarray) -> np.ndarray:
        """The price on the side ``P`` settles: buy where ``P > 0``, sell elsewhere (per MWh)."""
        return np.where(np.asarray(head_p_mw) > 0, self.buy_per_mwh, self.sell_per_mwh)


def step_prices(model: Any, obs: Any) -> StepPrices:
    """The :class:`StepPrices` of step ``obs.step`` on the grid of ``model`` (a
    :class:`env.simulator.GridModel`), from what the observation tells (price now, last
    thermal setpoints, step length)."""
    tar = model.tariff
    if model.is_td:
        ref = model.ref_unit
        p_ref = float(np.asarray(obs.thermal_p_last_mw, dtype=float)[ref])
        mc = float(model.g_c1[ref] + 2.0 * model.g_c2[ref] * p_ref)
        return StepPrices(mc, mc, float(tar.penalty_voltage_per_puh), float(obs.dt_h))
    return StepPrices(float(obs.price_buy_per_mwh), float(obs.price_sell_per_mwh),
                      float(tar.penalty_voltage_per_puh), float(obs.dt_h))
