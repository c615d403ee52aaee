"""A transmission operating point for STVS: what the time-domain simulation and the surrogate
read from one step of a T-D run (docs/stvs.md "Operating point")."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class StvsOperatingPoint:
    """Per transmission bus (0-based, the grid's numbering), MW / MVAr.

    Attributes:
        gen_p_mw: synchronous generation per bus (thermal, hydro, nuclear).
        load_p_mw, load_q_mvar: transmission loads per bus (served).
        der_p_mw: transmission renewables used per bus (wind, PV).
        pcc_bus: the feeders' boundary buses; pcc_p_mw / pcc_q_mvar: the feeder head exchange
            (+ = the feeder draws from the transmission system).
    """

    gen_p_mw: np.ndarray
    load_p_mw: np.ndarray
    load_q_mvar: np.ndarray
    der_p_mw: np.ndarray
    pcc_bus: tuple[int, ...]
    pcc_p_mw: np.ndarray
    pcc_q_mvar: np.ndarray
    n_bus: int = field(init=False)

    def __post_init__(self) -> None:
        for name in ("gen_p_mw", "load_p_mw", "load_q_mvar", "der_p_mw", "pcc_p_mw", "pcc_q_mvar"):
            arr = np.asarray(getattr(self, name), dtype=float)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"StvsOperatingPoint.{name}: values must be finite")
            object.__setattr__(self, name, arr)
        n = self.gen_p_mw.shape[0]
        if any(getattr(self, a).shape != (n,) for a in ("load_p_mw", "load_q_mvar", "der_p_mw")):
            raise ValueError("StvsOperatingPoint: gen/load/der arrays must all have one entry per bus")
        k = len(self.pcc_bus)
        if self.pcc_p_mw.shape != (k,) or self.pcc_q_mvar.shape != (k,):
            raise ValueError("StvsOperatingPoint: one PCC exchange per boundary bus")
        if any(not 0 <= b < n for b in self.pcc_bus):
            raise ValueError(f"StvsOperatingPoint: boundary bus out of range 0..{n - 1}")
        object.__setattr__(self, "pcc_bus", tuple(int(b) for b in self.pcc_bus))
        object.__setattr__(self, "n_bus", n)

    def net_load_mw(self) -> tuple[np.ndarray, np.ndarray]:
        """Net P / Q drawn at each bus by loads, renewables and feeders (generators excluded)."""
        p = self.load_p_mw - self.der_p_mw
        q = self.load_q_mvar.copy()
        np.add.at(p, list(self.pcc_bus), self.pcc_p_mw)
        np.add.at(q, list(self.pcc_bus), self.pcc_q_mvar)
        return p, q

    def features(self, gen_buses: np.ndarray, load_buses: np.ndarray,
                 der_buses: np.ndarray | None = None) -> np.ndarray:
        """The surrogate's inputs (seed 002 Z_I without the critical-bus voltages):
        P_G at ``gen_buses``, P_L and Q_L at ``load_buses``, T renewables summed (or per bus at
        ``der_buses``: renewables are generators of Z_I too), P_ex, Q_ex."""
        der = [self.der_p_mw.sum()] if der_buses is None else self.der_p_mw[der_buses]
        return np.concatenate([self.gen_p_mw[gen_buses], self.load_p_mw[load_buses],
                               self.load_q_mvar[load_buses], der, self.pcc_p_mw, self.pcc_q_mvar])


def operating_point_from_outcome(grid, model, outcome) -> StvsOperatingPoint:  # noqa: ANN001
    """The operating point of one played step (``TDGridEnv.last_outcome``) of a T-D grid."""
    t = grid.transmission
    if t is None:
        raise ValueError(f"{grid.name}: STVS needs a transmission system (a T-D case)")
    n = t.n_bus
    gen = np.bincount(t.gen.bus, weights=outcome.thermal_p_mw, minlength=n)
    load_p_t = outcome.load_served_mw[model.n_load_f:]
    ratio = np.divide(t.load.q_mvar, t.load.p_mw, out=np.zeros(len(t.load)), where=t.load.p_mw != 0)
    load_p = np.bincount(t.load.bus, weights=load_p_t, minlength=n)
    load_q = np.bincount(t.load.bus, weights=load_p_t * ratio, minlength=n)   # loads keep their q/p
    der = np.bincount(t.der.bus, weights=outcome.der_used_mw[model.n_der_f:], minlength=n)
    return StvsOperatingPoint(gen, load_p, load_q, der, tuple(grid.boundary_bus),
                              np.asarray(outcome.head_p_mw, float), np.asarray(outcome.head_q_mvar, float))
