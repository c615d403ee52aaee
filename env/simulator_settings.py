"""Options of the simulator (:class:`env.batched.BatchedSimulator` and its one-day view
:class:`env.simulator.GridSimulator`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from env.settings import StrictKwargs

__all__ = ["SimulatorSettings"]


@dataclass(frozen=True)
class SimulatorSettings(StrictKwargs):
    """Options of the simulator (frozen; unknown keys raise, see :meth:`from_kwargs`).

    Attributes:
        v2g: EVs may discharge (station power down to ``-p_max``).
        enforce_must_run: EV setpoints below the must-run power are raised to it.
        ev_reserve_price_per_mwh: price of the EV stations' regulation capacity; ``None``
            = the p_max-weighted mean of the thermal units' reserve prices (0 without units).
        sweep_tol_pu, sweep_max_iter: AC sweep tolerance and iteration limit.
        forecast_horizon_h: look-ahead of :attr:`Observation.net_load_forecast_mw`.
        forecast_obs: source of that point forecast: ``"day_ahead"`` (the day-ahead forecast
            known before the day; free) or ``"intraday"`` (``Forecast.point`` at the step; slower).
    """

    v2g: bool = False
    enforce_must_run: bool = True
    ev_reserve_price_per_mwh: float | None = None
    sweep_tol_pu: float = 1e-10
    sweep_max_iter: int = 100
    forecast_horizon_h: float = 4.0
    forecast_obs: Literal["day_ahead", "intraday"] = "day_ahead"

    def __post_init__(self) -> None:
        """Check every field by type (:meth:`check_types`: bools are bools, ``sweep_max_iter``
        an integer, numbers finite) and range: ``sweep_tol_pu`` in (0, 0.1),
        ``sweep_max_iter`` in [1, 100000], ``forecast_horizon_h`` in (0, 24] (within the day:
        it sizes the observation), ``ev_reserve_price_per_mwh`` None or >= 0."""
        self.check_types()
        self.check_range("sweep_tol_pu", 0.0, 0.1, low_open=True, high_open=True)
        self.check_range("sweep_max_iter", 1, 100_000)
        self.check_range("forecast_horizon_h", 0.0, 24.0, low_open=True)
        self.check_range("ev_reserve_price_per_mwh", 0.0)
