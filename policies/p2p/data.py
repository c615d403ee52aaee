"""Settings and inputs of the P2P T-D market models (docs/p2p.md §1).

:class:`P2PSettings` holds the market's prices and the model's switches (checked on
construction, unknown keys raise via ``from_kwargs``); :class:`P2PDay` the hourly inputs of one
planning horizon (loads, renewable availability, initial storage energy) per ADN and for the
transmission network, built from a day-ahead forecast by :func:`p2p_day`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from env.network import Grid
from env.settings import StrictKwargs

__all__ = ["P2PDay", "P2PSettings", "p2p_day"]


@dataclass(frozen=True)
class P2PSettings(StrictKwargs):
    """Prices and switches of the P2P market (docs/p2p.md §1; all chosen, seed 001 gives none).

    Attributes:
        period_minutes: length of one planning period (a multiple of the forecast step).
        tn_charge_per_mwh: transmission use-of-system charge on every MWh a DSO buys from or
            sells to the TSO (``c_T``).
        p2p_network_charge_per_mwh: network charge on every MWh traded between two ADNs through
            the TN (``c_N``, split equally between seller and buyer); ``c_N < 2 c_T`` makes the
            exchange worth it.
        voll_per_mwh: value of lost load of the TSO's DC-OPF (its shedding slack); ``None`` = the
            grid tariff's ``penalty_load_shed_per_mwh``, the price the env charges for shedding.
        der_min_output_frac: output of a DER that is on, as a share of its rating (DER on/off).
        dual_bound: big-M on the TSO's dual variables (``M_d``), checked a posteriori.
        time_limit_s, mip_gap: SCIP limits of one MISOCP solve.
        terminal_storage: storage ends the horizon at least as full as it started.
    """

    period_minutes: int = 60
    tn_charge_per_mwh: float = 10.0
    p2p_network_charge_per_mwh: float = 5.0
    voll_per_mwh: float | None = None
    der_min_output_frac: float = 0.05
    dual_bound: float = 1.0e4
    time_limit_s: float = 120.0
    mip_gap: float = 1.0e-3
    terminal_storage: bool = True

    def __post_init__(self) -> None:
        self.check_types()
        self.check_range("period_minutes", 1)
        for name in ("tn_charge_per_mwh", "p2p_network_charge_per_mwh", "der_min_output_frac", "mip_gap"):
            self.check_range(name, 0.0)
        self.check_range("der_min_output_frac", 0.0, 1.0, high_open=True)
        for name in ("dual_bound", "time_limit_s"):
            self.check_range(name, 0.0, low_open=True)
        if self.voll_per_mwh is not None:
            self.check_range("voll_per_mwh", 0.0, low_open=True)

    def voll_for(self, tariff_voll_per_mwh: float) -> float:
        """The VOLL in use: the setting, else the tariff's shedding penalty; the dual big-M must exceed
        it (the TSO's price can reach VOLL)."""
        voll = float(tariff_voll_per_mwh if self.voll_per_mwh is None else self.voll_per_mwh)
        if not self.dual_bound > voll:
            raise ValueError(f"P2PSettings.dual_bound: must exceed the VOLL {voll:g} (the TSO's price can reach VOLL)")
        return voll

    @property
    def dt_h(self) -> float:
        return self.period_minutes / 60.0


def _frozen(x: np.ndarray) -> np.ndarray:
    a = np.array(x, dtype=float)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class P2PDay:
    """Hourly (one row per period) inputs of a planning horizon.

    Attributes:
        dt_h: period length (h); ``n_periods`` rows everywhere.
        load_p_mw, load_q_mvar: per ADN, (T, n_load) demand of its loads (network order).
        der_avail_mw: per ADN, (T, n_der) available PV/wind output (network order).
        e_init_mwh: per ADN, (n_storage,) storage energy at the start of the horizon.
        t_load_mw: (T, n_t_load) transmission loads (network order).
        t_wind_mw: (T, n_t_der) transmission wind availability.
    """

    dt_h: float
    load_p_mw: tuple[np.ndarray, ...]
    load_q_mvar: tuple[np.ndarray, ...]
    der_avail_mw: tuple[np.ndarray, ...]
    e_init_mwh: tuple[np.ndarray, ...]
    t_load_mw: np.ndarray
    t_wind_mw: np.ndarray

    def __post_init__(self) -> None:
        for name in ("load_p_mw", "load_q_mvar", "der_avail_mw", "e_init_mwh"):
            object.__setattr__(self, name, tuple(_frozen(a) for a in getattr(self, name)))
        object.__setattr__(self, "t_load_mw", _frozen(self.t_load_mw))
        object.__setattr__(self, "t_wind_mw", _frozen(self.t_wind_mw))
        T = self.n_periods
        for name in ("load_p_mw", "load_q_mvar", "der_avail_mw"):
            if any(a.ndim != 2 or a.shape[0] != T for a in getattr(self, name)):
                raise ValueError(f"P2PDay.{name}: every array needs {T} rows")
        if self.t_wind_mw.shape[0] != T:
            raise ValueError(f"P2PDay.t_wind_mw: needs {T} rows")

    @property
    def n_periods(self) -> int:
        return int(self.t_load_mw.shape[0])

    @property
    def n_adn(self) -> int:
        return len(self.load_p_mw)


def _period_mean(x: np.ndarray, k: int) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return x.reshape((x.shape[0] // k, k) + x.shape[1:]).mean(axis=1)


def p2p_day(grid: Grid, day_ahead, settings: P2PSettings, start_step: int = 0,  # noqa: ANN001
            e_init_mwh: np.ndarray | None = None) -> P2PDay:
    """The planning inputs of ``grid`` from a :class:`~scenarios.DayAheadInfo`, periods averaged
    over ``settings.period_minutes``, from ``start_step`` (a period boundary) to the day's end.

    Loads are ``load_pu_da x peak`` (reactive at each load's own power factor), DER
    ``pv_pu_da x rating`` / ``wind_pu_da x rating``. EV charging is not in the plan (docs/p2p.md §5).

    Raises:
        ValueError: not a T-D grid, a period that is not a multiple of the forecast step, a start
            that is not a period boundary, or a day-ahead info of another grid.
    """
    if not grid.is_td or grid.transmission is None:
        raise ValueError(f"p2p_day: {grid.name} is not a T-D grid (the P2P market needs a TN)")
    lay, da = grid.layout, day_ahead
    if da.layout.load_names != lay.load_names or da.layout.pv_names != lay.pv_names:
        raise ValueError(f"p2p_day: day-ahead info of {da.layout.case} does not match grid {grid.name}")
    if settings.period_minutes % da.dt_minutes:
        raise ValueError(f"p2p_day: period_minutes={settings.period_minutes} is not a multiple of "
                         f"the forecast step {da.dt_minutes}")
    kk = settings.period_minutes // da.dt_minutes
    if start_step % kk:
        raise ValueError(f"p2p_day: start_step={start_step} is not a period boundary ({kk} steps)")
    sl = slice(start_step, None)
    load = _period_mean(da.load_pu_da[sl] * lay.load_p_mw[None, :], kk)
    avail = {**dict(zip(lay.pv_names, _period_mean(da.pv_pu_da[sl] * da.pv_p_max_mw[None, :], kk).T)),
             **dict(zip(lay.wind_names, _period_mean(da.wind_pu_da[sl] * da.wind_p_max_mw[None, :], kk).T))}
    e0 = np.concatenate([f.storage.e_init_mwh for f in grid.feeders]) if e_init_mwh is None else \
        np.asarray(e_init_mwh, dtype=float)
    loads_p, loads_q, ders, e_init = [], [], [], []
    row = st = 0
    for k, f in enumerate(grid.feeders):
        n = len(f.load)
        pf = np.divide(f.load.q_mvar, f.load.p_mw, out=np.zeros(n), where=f.load.p_mw > 0)
        loads_p.append(load[:, row:row + n])
        loads_q.append(load[:, row:row + n] * pf[None, :])
        ders.append(np.stack([avail[f"f{k}_{name}"] for name in f.der.name], axis=1) if len(f.der)
                    else np.zeros((load.shape[0], 0)))
        e_init.append(e0[st:st + len(f.storage)])
        row, st = row + n, st + len(f.storage)
    t = grid.transmission
    t_wind = (np.stack([avail[f"t_{name}"] for name in t.der.name], axis=1) if len(t.der)
              else np.zeros((load.shape[0], 0)))
    return P2PDay(dt_h=settings.dt_h, load_p_mw=tuple(loads_p), load_q_mvar=tuple(loads_q),
                  der_avail_mw=tuple(ders), e_init_mwh=tuple(e_init), t_load_mw=load[:, row:], t_wind_mw=t_wind)
