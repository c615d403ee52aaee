"""EV charging sessions: one row per EV visit to a station (the contract between
the simpy arrival process in ``scenarios`` and the station model in ``env.evcs``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def set_ev_columns(obj: Any, names: tuple[str, ...], int_names: tuple[str, ...], int_dtype: Any,
                   read_only: bool) -> None:
    """Validate and set a frozen dataclass's per-EV columns: 1-D arrays of one length (that of
    ``station``), ``int_dtype`` for ``int_names`` and finite floats otherwise; a charger with
    ``p_max_kw > 0`` and ``0 < efficiency <= 1``. Shared by :class:`EVSessions` and the
    Rollout's ``ConnectedEVs``.

    Raises:
        ValueError: naming the class and the field.
    """
    owner = type(obj).__name__
    n = len(np.asarray(obj.station).reshape(-1))
    for name in names:
        dtype = int_dtype if name in int_names else float
        arr = np.asarray(getattr(obj, name), dtype=dtype).reshape(-1)
        if arr.shape != (n,):
            raise ValueError(f"{owner}.{name}: expected {n} values, got {arr.shape[0]}")
        if dtype is float and not np.isfinite(arr).all():
            raise ValueError(f"{owner}.{name}: values must be finite")
        if read_only:
            arr.setflags(write=False)
        object.__setattr__(obj, name, arr)
    if (obj.p_max_kw <= 0).any() or ((obj.efficiency <= 0) | (obj.efficiency > 1)).any():
        raise ValueError(f"{owner}: need p_max_kw > 0 and 0 < efficiency <= 1")


_FIELDS = ("station", "arrival_step", "departure_step", "e_arrival_kwh",
           "e_request_kwh", "e_capacity_kwh", "p_max_kw", "efficiency")


@dataclass(frozen=True)
class EVSessions:
    """A table of EV sessions, sorted by arrival step (ties by station, then input order).

    Step indices are 0-based intervals of the day: the EV is connected during steps
    ``arrival_step <= t < departure_step`` (so it can charge during
    ``departure_step - arrival_step`` intervals) and must hold ``e_request_kwh`` in its
    battery when it leaves. Arrivals late in the day may depart after the last step
    (``departure_step > n_steps``); the env then checks delivery at the day's end.

    Attributes:
        station: station index (into ``Layout.evcs_names``).
        arrival_step, departure_step: int, ``departure_step > arrival_step``.
        e_arrival_kwh: battery energy at arrival.
        e_request_kwh: energy wanted at departure, ``e_arrival_kwh <= e_request_kwh <= e_capacity_kwh``.
        e_capacity_kwh: battery capacity.
        p_max_kw: charger power limit (grid side).
        efficiency: charging efficiency (battery energy gained = efficiency x grid energy).
    """

    station: np.ndarray
    arrival_step: np.ndarray
    departure_step: np.ndarray
    e_arrival_kwh: np.ndarray
    e_request_kwh: np.ndarray
    e_capacity_kwh: np.ndarray
    p_max_kw: np.ndarray
    efficiency: np.ndarray

    def __post_init__(self) -> None:
        set_ev_columns(self, _FIELDS, ("station", "arrival_step", "departure_step"), int, read_only=True)
        if (self.station < 0).any() or (self.arrival_step < 0).any():
            raise ValueError("EVSessions: station and arrival_step must be >= 0")
        if (self.departure_step <= self.arrival_step).any():
            raise ValueError("EVSessions: departure_step must exceed arrival_step")
        if (self.e_arrival_kwh < 0).any() or (self.e_request_kwh < self.e_arrival_kwh - 1e-9).any():
            raise ValueError("EVSessions: need 0 <= e_arrival_kwh <= e_request_kwh")
        if (self.e_request_kwh > self.e_capacity_kwh + 1e-9).any():
            raise ValueError("EVSessions: e_request_kwh exceeds e_capacity_kwh")

    def __len__(self) -> int:
        return int(self.station.shape[0])

    @classmethod
    def empty(cls) -> "EVSessions":
        z = np.zeros(0)
        return cls(z, z, z, z, z, z, z, z)

    def select(self, mask: np.ndarray) -> "EVSessions":
        """Rows where ``mask`` (bool or index array) holds."""
        return EVSessions(**{name: getattr(self, name)[mask] for name in _FIELDS})

    def to_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in _FIELDS}
