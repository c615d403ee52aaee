"""Seed 003's base policy, plus merit-order thermal dispatch on T-D cases.

Per feeder, at every step:
1. EVs charge as soon as possible: each station at its largest deliverable power.
2. Each node serves its own demand first (load + EV charging from its own PV/wind);
   the feeder's surplus goes to storage, then to the other nodes (through the
   network, automatically), and is finally exported; a deficit is covered by the
   storage first and then bought from the grid.
   With ``no_exchange=True`` (seed 003's third case) nodes do not exchange power:
   a node's renewable surplus beyond its own demand is curtailed, and storage only
   discharges to cover deficits.
3. On T-D cases the thermal units follow merit order (cheapest c1 first) on the
   transmission net load (T loads + feeder net loads - wind), within ramp limits
   from the last setpoint, and hold a fixed reserve margin split by headroom.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from env.dispatch import Dispatch, DispatchSizes
from env.network import Grid
from env.observation import Observation
from env.physics.grid_flow import merit_order
from policies.base import FeederIndex


class HeuristicPolicy:
    """The base rule (see the module docstring).

    Args:
        grid: the grid the policy dispatches.
        reserve_margin: thermal reserve held up and down, as a share of the
            transmission net load (chosen: 10 %).
        no_exchange: forbid power exchange among nodes (seed 003's third case).
        loss_factor: feeder losses assumed on top of the feeder net load when
            estimating the transmission demand (chosen: 3 %).
    """

    name = "heuristic"

    def __init__(self, grid: Grid, reserve_margin: float = 0.10, no_exchange: bool = False,
                 loss_factor: float = 0.03) -> None:
        if not isinstance(no_exchange, bool):
            raise ValueError(f"HeuristicPolicy: no_exchange must be a bool (True or False), got {no_exchange!r}")
        for key, value in (("reserve_margin", reserve_margin), ("loss_factor", loss_factor)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not np.isfinite(value):
                raise ValueError(f"HeuristicPolicy: {key} must be a finite number, got {value!r}")
        if not 0 <= reserve_margin < 1:
            raise ValueError(f"HeuristicPolicy: reserve_margin must be in [0, 1), got {reserve_margin}")
        if not 0 <= loss_factor < 1:
            raise ValueError(f"HeuristicPolicy: loss_factor must be in [0, 1), got {loss_factor}")
        self.grid = grid
        self.reserve_margin = float(reserve_margin)
        self.no_exchange = bool(no_exchange)
        self.name = "heuristic_no_exchange" if no_exchange else "heuristic"
        self.loss_factor = float(loss_factor)
        self.index = FeederIndex.from_grid(grid)
        self.sizes = DispatchSizes.from_grid(grid)
        st = [f.storage for f in grid.feeders]
        self._st_p_max = np.concatenate([s.p_max_mw for s in st])
        self._st_e_max = np.concatenate([s.e_max_mwh for s in st])
        self._st_eta_c = np.concatenate([s.eta_charge for s in st])
        self._st_eta_d = np.concatenate([s.eta_discharge for s in st])

    def reset(self, seed: int | None = None) -> None:
        """Stateless: nothing to reset."""

    def act(self, obs: Observation, forecast: Any = None) -> Dispatch:
        """Dispatch of step ``obs.step`` by the base rule."""
        ev_p_mw = obs.ev.p_max_kw / 1e3 if obs.ev is not None else np.zeros(self.sizes.n_evcs)
        curtail = np.zeros(self.sizes.n_der)
        storage = np.zeros(self.sizes.n_storage)
        feeder_net = np.zeros(len(self.grid.feeders))
        for k, net in enumerate(self.grid.feeders):
            demand = self.node_demand(k, obs.load_p_mw, ev_p_mw)
            der_av = obs.der_avail_mw[self.index.der[k]]
            if self.no_exchange:
                curtail[self.index.der[k]] = self._own_use_curtailment(k, demand, der_av)
                der_av = der_av * (1.0 - curtail[self.index.der[k]])
            net_mw = demand.sum() - der_av.sum()  # + = deficit
            storage[self.index.storage[k]] = self._storage(k, net_mw, obs.storage_e_mwh, obs.dt_h)
            feeder_net[k] = net_mw + storage[self.index.storage[k]].sum()
        thermal = self.thermal_dispatch(obs, feeder_net, curtail)
        zero_ev = np.zeros(self.sizes.n_ev_reserve)
        return Dispatch(ev_p_mw=ev_p_mw, storage_p_mw=storage, der_curtail_frac=curtail,
                        thermal_p_mw=thermal[0], thermal_r_up_mw=thermal[1], thermal_r_dn_mw=thermal[2],
                        ev_r_up_mw=zero_ev, ev_r_dn_mw=zero_ev)

    def node_demand(self, k: int, load_p_mw: np.ndarray, ev_p_mw: np.ndarray) -> np.ndarray:
        """Per-bus demand of feeder ``k``: load + EV charging (MW), ``(n_bus,)``.

        Public: policies that replay the heuristic's rules as their recourse (policies.p2p) call it.
        """
        n_bus = self.grid.feeders[k].n_bus
        demand = np.bincount(self.index.load_bus[k], weights=load_p_mw[self.index.loads[k]], minlength=n_bus)
        demand += np.bincount(self.index.evcs_bus[k], weights=ev_p_mw[self.index.evcs[k]], minlength=n_bus)
        return demand

    def _own_use_curtailment(self, k: int, demand: np.ndarray, der_av: np.ndarray) -> np.ndarray:
        """Curtailment share per DER so that no node exports: cap = own demand."""
        bus = self.index.der_bus[k]
        avail_bus = np.bincount(bus, weights=der_av, minlength=demand.shape[0])
        keep = np.divide(np.minimum(avail_bus, demand), avail_bus, out=np.ones_like(avail_bus), where=avail_bus > 0)
        return 1.0 - keep[bus]

    def _storage(self, k: int, net_mw: float, e_mwh: np.ndarray, dt_h: float) -> np.ndarray:
        """Storage power (+ charge): absorb a surplus, cover a deficit, within power and energy.

        Charging p limited by (e_max - e) / (eta_c dt); discharging by e eta_d / dt.
        The feeder's deficit/surplus is shared in proportion to the power ratings.
        """
        sl = self.index.storage[k]
        if sl.stop == sl.start:
            return np.zeros(0)
        p_max, e = self._st_p_max[sl], e_mwh[sl]
        share = p_max / p_max.sum()
        if net_mw < 0 and not self.no_exchange:  # surplus -> charge
            room = (self._st_e_max[sl] - e) / (self._st_eta_c[sl] * dt_h)
            return np.minimum(np.minimum(-net_mw * share, p_max), room)
        if net_mw > 0:  # deficit -> discharge
            avail = e * self._st_eta_d[sl] / dt_h
            return -np.minimum(np.minimum(net_mw * share, p_max), avail)
        return np.zeros(p_max.shape)

    def thermal_dispatch(self, obs: Observation, feeder_net: np.ndarray,
                         curtail: np.ndarray) -> tuple[np.ndarray, ...]:
        """The TSO's real-time rule (step 3 of the module docstring): merit-order setpoints on the
        transmission net load (T loads + ``feeder_net`` (K,) MW with losses - wind left by
        ``curtail``), within ramp limits, and a reserve margin split by headroom.

        Returns:
            ``(p_mw, r_up_mw, r_dn_mw)`` per thermal unit (empty on a single feeder). Public: the
            P2P policies' recourse (policies.p2p) dispatches the units by it.
        """
        t = self.grid.transmission
        if t is None:
            z = np.zeros(0)
            return z, z, z
        g = t.gen
        wind = obs.der_avail_mw[self.index.t_der] * (1.0 - curtail[self.index.t_der])
        demand = obs.load_p_mw[self.index.t_loads].sum() + (feeder_net * (1 + self.loss_factor)).sum() - wind.sum()
        ramp = g.ramp_mw_per_h * obs.dt_h
        last = obs.thermal_p_last_mw
        lo, hi = np.maximum(g.p_min_mw, last - ramp), np.minimum(g.p_max_mw, last + ramp)
        p = np.clip(merit_order(lo, hi, g.cost_c1_per_mwh, max(demand, 0.0)), lo, hi)
        margin = self.reserve_margin * max(demand, 0.0)
        up_room = np.minimum(g.p_max_mw - p, ramp)
        dn_room = np.minimum(p - g.p_min_mw, ramp)
        r_up = up_room * min(1.0, margin / up_room.sum()) if up_room.sum() > 0 else up_room
        r_dn = dn_room * min(1.0, margin / dn_room.sum()) if dn_room.sum() > 0 else dn_room
        return p, r_up, r_dn
