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

The rules are the module's functions, with any leading batch axis: the one home of the base
rule. :class:`HeuristicPolicy` plays them for one step; the rollout's day model
(:mod:`policies.surrogate`) plays them on candidates x paths, step after step. The ranges they
respect (storage power at an energy, the thermal ramp window) are the env's projection's
(:class:`env.projection.StepProjection`), so its setpoints need no projection; its reserves
are sized on ``min(p_max - P, ramp dt)`` and the env cuts them to the ramp window's room
``up - P`` / ``P - down`` (the day model applies the same projection).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from env.dispatch import Dispatch, DispatchSizes
from env.grid_model import GridModel
from env.network import Grid
from env.observation import Observation
from env.physics.grid_flow import merit_order
from env.projection import StepProjection
from policies.base import FeederIndex

__all__ = ["HeuristicPolicy", "feeder_net_mw", "own_use_curtailment", "reserve_split", "share",
           "storage_rule", "storage_share", "thermal_demand", "thermal_rule"]


# ============================================================================ the rules (batch axis)


def share(amount: Any, total: Any) -> np.ndarray:
    """``min(1, amount / total)`` where ``total > 0``, else 0 (elementwise)."""
    total = np.asarray(total, dtype=float)
    out = np.zeros(np.broadcast_shapes(np.shape(amount), total.shape))
    np.divide(amount, total, out=out, where=total > 0)
    return np.minimum(out, 1.0, out=out)


def feeder_net_mw(model: GridModel, load_f_mw: np.ndarray, ev_mw: np.ndarray, der_used_f_mw: np.ndarray
                  ) -> np.ndarray:
    """Each feeder's net demand (..., n_feeder), + = deficit: its loads + EV stations - the DER
    output it uses (feeder loads (..., n_load_f), stations (..., n_evcs), feeder DERs (..., n_der_f))."""
    m = model
    return load_f_mw @ m.f_load.T + ev_mw @ m.f_ev.T - der_used_f_mw @ m.f_der.T


def own_use_curtailment(model: GridModel, load_f_mw: np.ndarray, ev_mw: np.ndarray, der_f_mw: np.ndarray
                        ) -> np.ndarray:
    """Curtailment share of each feeder DER (..., n_der_f) so that no node exports (seed 003's
    third case): per bus, ``keep = min(avail, demand) / avail`` (1 where nothing is available),
    with ``demand`` = loads + EV charging at the bus; each DER takes its bus's ``1 - keep``."""
    m = model
    demand = load_f_mw @ m.m_load.T + ev_mw @ m.m_ev.T                               # (..., n_fb)
    avail = der_f_mw @ m.m_der.T
    demand, avail = np.broadcast_arrays(demand, avail)
    keep = np.divide(np.minimum(avail, demand), avail, out=np.ones(demand.shape), where=avail > 0)
    return 1.0 - keep @ m.m_der


def storage_share(model: GridModel) -> np.ndarray:
    """Each storage unit's share of its feeder's net demand: ``p_max / sum p_max`` of the feeder."""
    m = model
    tot = (m.f_st @ m.st_p_max)[m.st_feeder]
    return np.divide(m.st_p_max, tot, out=np.zeros_like(m.st_p_max), where=tot > 0)


def storage_rule(net_mw: np.ndarray, lo_mw: np.ndarray, hi_mw: np.ndarray, no_exchange: bool) -> np.ndarray:
    """Storage power (+ = charge) absorbing the unit's share ``net_mw`` of its feeder's net
    demand within its range ``[lo, hi]`` (:meth:`env.projection.StepProjection.storage_limits`):
    ``P = clip(-n, lo, hi)``, i.e. charge ``min(-n, hi)`` on a surplus, discharge ``min(n, -lo)``
    on a deficit; without exchange a surplus is not stored (``n`` is taken as ``max(n, 0)``)."""
    n = np.maximum(net_mw, 0.0) if no_exchange else net_mw
    return np.minimum(np.maximum(-n, lo_mw), hi_mw)


def thermal_demand(load_t_mw: np.ndarray, feeder_net_mw: np.ndarray, wind_mw: np.ndarray, loss_factor: float
                   ) -> np.ndarray:
    """The transmission net load the units cover: ``max(sum T loads + (1 + loss) sum feeder net
    - sum T wind, 0)`` (MW; batch axes before the last)."""
    demand = load_t_mw.sum(-1) + feeder_net_mw.sum(-1) * (1 + loss_factor) - wind_mw.sum(-1)
    return np.maximum(demand, 0.0)


def reserve_split(proj: StepProjection, p_mw: np.ndarray, margin_mw: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The reserve margin split by headroom: ``r_up = room_up min(1, margin / sum room_up)`` with
    ``room_up = min(p_max - P, ramp dt)``, and ``r_dn`` alike with ``room_dn = min(P - p_min, ramp dt)``."""
    m = proj.model
    up_room = np.minimum(m.g_p_max - p_mw, proj.ramp_dt)
    dn_room = np.minimum(p_mw - m.g_p_min, proj.ramp_dt)
    return (up_room * share(margin_mw, up_room.sum(-1))[..., None],
            dn_room * share(margin_mw, dn_room.sum(-1))[..., None])


def thermal_rule(proj: StepProjection, demand_mw: np.ndarray, p_last_mw: np.ndarray, reserve_margin: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The TSO's rule: merit order (:func:`env.physics.grid_flow.merit_order`) on ``demand_mw``
    within the ramp window after ``p_last_mw``, then the margin ``reserve_margin x demand``
    split by headroom (:func:`reserve_split`). Returns ``(P, r_up, r_dn)`` (..., n_gen)."""
    m = proj.model
    lo, hi = proj.thermal_limits(p_last_mw)
    demand = np.asarray(demand_mw, dtype=float)
    if lo.shape[:-1] != demand.shape:
        shape = np.broadcast_shapes(lo.shape, demand.shape + (m.n_gen,))
        lo, hi = np.broadcast_to(lo, shape), np.broadcast_to(hi, shape)
    p = merit_order(lo, hi, m.g_c1, demand)
    np.maximum(p, lo, out=p)
    np.minimum(p, hi, out=p)
    r_up, r_dn = reserve_split(proj, p, reserve_margin * demand)
    return p, r_up, r_dn


# ============================================================================ the policy


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
        self.model = GridModel(grid)
        self._share = storage_share(self.model)
        self._proj: StepProjection | None = None

    def reset(self, seed: int | None = None) -> None:
        """Stateless: nothing to reset."""

    def projection(self, dt_h: float) -> StepProjection:
        """The env's projection at step length ``dt_h`` (kept for the last length asked)."""
        if self._proj is None or self._proj.dt_h != dt_h:
            self._proj = StepProjection(self.model, dt_h)
        return self._proj

    def act(self, obs: Observation, forecast: Any = None) -> Dispatch:
        """Dispatch of step ``obs.step`` by the base rule."""
        m, proj = self.model, self.projection(float(obs.dt_h))
        ev_p_mw = obs.ev.p_max_kw / 1e3 if obs.ev is not None else np.zeros(self.sizes.n_evcs)
        curtail = np.zeros(self.sizes.n_der)
        load_f = obs.load_p_mw[:m.n_load_f]
        der_f = obs.der_avail_mw[:m.n_der_f]
        if self.no_exchange and m.n_der_f:
            curtail[:m.n_der_f] = own_use_curtailment(m, load_f, ev_p_mw, der_f)
            der_f = der_f * (1.0 - curtail[:m.n_der_f])
        net = feeder_net_mw(m, load_f, ev_p_mw, der_f)
        lo, hi = proj.storage_limits(obs.storage_e_mwh)
        storage = storage_rule(net[m.st_feeder] * self._share, lo, hi, self.no_exchange)
        thermal = self.thermal_dispatch(obs, net + storage @ m.f_st.T, curtail)
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

    def thermal_dispatch(self, obs: Observation, feeder_net: np.ndarray,
                         curtail: np.ndarray) -> tuple[np.ndarray, ...]:
        """The TSO's real-time rule (step 3 of the module docstring, :func:`thermal_rule`) on the
        transmission net load (:func:`thermal_demand`: T loads + ``feeder_net`` (K,) MW with
        losses - wind left by ``curtail``).

        Returns:
            ``(p_mw, r_up_mw, r_dn_mw)`` per thermal unit (empty on a single feeder). Public: the
            P2P policies' recourse (policies.p2p) dispatches the units by it.
        """
        m = self.model
        if not m.is_td:
            z = np.zeros(0)
            return z, z, z
        wind = obs.der_avail_mw[m.n_der_f:] * (1.0 - curtail[m.n_der_f:])
        demand = thermal_demand(obs.load_p_mw[m.n_load_f:], feeder_net, wind, self.loss_factor)
        return thermal_rule(self.projection(float(obs.dt_h)), demand, obs.thermal_p_last_mw, self.reserve_margin)
