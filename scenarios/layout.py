"""What the scenario layer needs to know about a grid.

``scenarios`` imports nothing from the other gridroll packages; the grid
(``env.Grid``) describes its uncertain sources through a :class:`Layout`
(``grid.layout``), and every sampler works on that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _names(values: tuple[str, ...], what: str) -> tuple[str, ...]:
    values = tuple(values)
    if len(set(values)) != len(values):
        raise ValueError(f"Layout.{what}: names must be unique, got {values}")
    return values


def _nonneg(values: np.ndarray, n: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if arr.shape != (n,):
        raise ValueError(f"Layout.{what}: expected {n} values (one per name), got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"Layout.{what}: values must be finite and >= 0, got {arr}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class Layout:
    """Names and sizes of a grid's uncertain sources.

    Attributes:
        case: case name (e.g. ``"d33"``).
        load_names: one name per load, e.g. ``"f0_b18"`` (feeder 0, bus 18) or
            ``"t_b15"`` (transmission bus 15); labels are the literature's 1-based numbers.
        load_p_mw: peak active load per load (MW); realized load = shape x noise x peak.
        pv_names / pv_p_max_mw: PV units and their rated power (MW).
        wind_names / wind_p_max_mw: wind units (farms and distributed) and rated power (MW).
        evcs_names / evcs_n_ports: EV stations and their number of charging ports.
        boundary_names: one per T-D boundary (feeder head); empty for a single feeder.
        ev_battery_kwh / ev_charger_kw / ev_efficiency: EV defaults (seed 003: 66 kWh, 6.6 kW, 0.9).
    """

    case: str
    load_names: tuple[str, ...]
    load_p_mw: np.ndarray
    pv_names: tuple[str, ...] = ()
    pv_p_max_mw: np.ndarray = field(default_factory=lambda: np.zeros(0))
    wind_names: tuple[str, ...] = ()
    wind_p_max_mw: np.ndarray = field(default_factory=lambda: np.zeros(0))
    evcs_names: tuple[str, ...] = ()
    evcs_n_ports: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    boundary_names: tuple[str, ...] = ()
    ev_battery_kwh: float = 66.0
    ev_charger_kw: float = 6.6
    ev_efficiency: float = 0.9

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "load_names", _names(self.load_names, "load_names"))
        set_(self, "load_p_mw", _nonneg(self.load_p_mw, len(self.load_names), "load_p_mw"))
        set_(self, "pv_names", _names(self.pv_names, "pv_names"))
        set_(self, "pv_p_max_mw", _nonneg(self.pv_p_max_mw, len(self.pv_names), "pv_p_max_mw"))
        set_(self, "wind_names", _names(self.wind_names, "wind_names"))
        set_(self, "wind_p_max_mw", _nonneg(self.wind_p_max_mw, len(self.wind_names), "wind_p_max_mw"))
        set_(self, "evcs_names", _names(self.evcs_names, "evcs_names"))
        ports = np.asarray(self.evcs_n_ports, dtype=int).reshape(-1)
        if ports.shape != (len(self.evcs_names),) or np.any(ports < 1):
            raise ValueError(f"Layout.evcs_n_ports: one integer >= 1 per station, got {ports}")
        ports.setflags(write=False)
        set_(self, "evcs_n_ports", ports)
        set_(self, "boundary_names", _names(self.boundary_names, "boundary_names"))
        for what in ("ev_battery_kwh", "ev_charger_kw", "ev_efficiency"):
            if not getattr(self, what) > 0:
                raise ValueError(f"Layout.{what} must be > 0")
        if self.ev_efficiency > 1:
            raise ValueError("Layout.ev_efficiency must be <= 1")
