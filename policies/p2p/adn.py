"""One active distribution network (ADN) of the P2P market over T periods (docs/p2p.md §2).

Built on :class:`env.formulations.DistFlowSOC` (periods are its columns), with the DSO's
mixed-integer devices and trades:

* DER on/off ``z``: ``m z <= p_der <= avail z`` with ``m = min(frac x rating, avail)``;
* storage mode ``u``: ``0 <= ch <= Pmax u``, ``0 <= dis <= Pmax (1 - u)``,
  ``e_t = e_{t-1} + (eta_c ch - dis / eta_d) dt``, ``0 <= e <= Emax``, ``e_T >= e_0``;
* boundary direction ``b``: ``0 <= g <= Mg b``, ``0 <= s <= Ms (1 - b)`` (buy from / sell to the TSO);
* intra-ADN P2P pool: every prosumer bus (with DER or storage) is a seller or a buyer,
  ``n_i = sigma_i - beta_i``, ``sigma_i <= M u_i``, ``beta_i <= M (1 - u_i)``; the pool clears
  ``x_in = sum sigma - e_out >= 0`` (surplus sold locally) and buyers take ``x_in + m_in`` (local
  supply plus imports) = ``sum beta + consumer load + losses``;
* head balance ``h = g - s + y_in - y_out`` (``y``: cross-ADN trades through the TN);
* compensators ``q_min <= q_comp <= q_max`` (reactive support for the voltage band).

The DistFlow head ``h = -sum_j p_j + losses`` closes the accounting, so what the pool's buyers
take equals what its sellers and the imports supply (a test checks it at the solution).
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from env.formulations import DistFlowSOC, FeederVars
from env.formulations.dc import incidence
from env.network import Network, Tariff
from policies.p2p.data import P2PSettings

__all__ = ["ADNBlock", "adn_block"]

LOSS_MARGIN = 0.25   # chosen: bound on feeder losses as a share of peak load, for the big-M of imports


@dataclass(frozen=True, eq=False)
class ADNBlock:
    """Variables and constraints of one ADN (MW, MWh; ``(n, T)`` arrays, time along columns).

    Attributes:
        der_mw, z_der: DER output and on/off binaries.
        ch_mw, dis_mw, u_st, e_mwh: storage charge / discharge, mode binaries, energy (T + 1 columns).
        g_mw, s_mw, b_dir: (T,) bought from / sold to the TSO and direction binary.
        sigma_mw, beta_mw, u_pros: prosumer buses' sales / purchases in the pool and direction.
        x_in_mw: (T,) energy traded inside the ADN (pool volume).
        consumer_mw: (T,) demand of the buses that are not prosumers.
        h_mw: (T,) power drawn from the TN at the boundary (+ = import).
        fv: the DistFlow-SOC block; voltage slack ``viol``.
        constraints: everything above.
        cost: the DSO's own costs (storage wear, DER O&M, curtailment, voltage, TN charge).
        h_lo_mw, h_hi_mw: (T,) bounds on ``h`` implied by the data (used to screen TN lines).
        pros_bus: the prosumer buses; ``avail_mw``: (n_der, T) DER availability.
    """

    net: Network
    der_mw: cp.Variable
    z_der: cp.Variable | None
    ch_mw: cp.Variable
    dis_mw: cp.Variable
    u_st: cp.Variable | None
    e_mwh: cp.Variable
    g_mw: cp.Variable
    s_mw: cp.Variable
    b_dir: cp.Variable
    sigma_mw: cp.Variable
    beta_mw: cp.Variable
    u_pros: cp.Variable | None
    x_in_mw: cp.Expression
    consumer_mw: np.ndarray
    h_mw: cp.Expression
    fv: FeederVars
    viol: cp.Variable
    constraints: list
    cost: cp.Expression
    h_lo_mw: np.ndarray
    h_hi_mw: np.ndarray
    pros_bus: np.ndarray
    avail_mw: np.ndarray


def _var(shape: tuple[int, ...], name: str, boolean: bool = False) -> cp.Variable:
    return cp.Variable(shape, name=name, boolean=boolean) if boolean else cp.Variable(shape, nonneg=True, name=name)


def adn_block(net: Network, load_p_mw: np.ndarray, load_q_mvar: np.ndarray, der_avail_mw: np.ndarray,
              e_init_mwh: np.ndarray, tariff: Tariff, settings: P2PSettings, y_in: cp.Expression | float = 0.0,
              y_out: cp.Expression | float = 0.0, integer: bool = True, passive: bool = False,
              tag: str = "") -> ADNBlock:
    """Build the ADN model of ``net`` for the horizon's T periods (see the module docstring).

    Args:
        net: the feeder.
        load_p_mw, load_q_mvar: (T, n_load) demand; der_avail_mw: (T, n_der); e_init_mwh: (n_storage,).
        tariff: DER O&M, storage wear, curtailment and voltage penalties.
        settings: the market's settings (TN charge, DER minimum output, period length).
        y_in, y_out: (T,) cross-ADN trades bought / sold (expressions of the market), 0 without.
        integer: keep the binaries (False: their LP relaxation in [0, 1]).
        passive: storage idle and every DER at its availability (the TSO-led scheme's forecast).
        tag: suffix of the variable names.
    """
    T, dt = load_p_mw.shape[0], settings.dt_h
    n_bus, base = net.n_bus, net.base_mva
    nd, ns = len(net.der), len(net.storage)
    c_load, c_der, c_st = (incidence(n_bus, net.load.bus), incidence(n_bus, net.der.bus),
                           incidence(n_bus, net.storage.bus))
    avail = np.asarray(der_avail_mw, dtype=float).T                  # (nd, T)
    binary = (lambda shape, name: _var(shape, name, True)) if integer else \
        (lambda shape, name: cp.Variable(shape, name=name, bounds=[0, 1]))
    der, ch, dis = _var((nd, T), f"der{tag}"), _var((ns, T), f"ch{tag}"), _var((ns, T), f"dis{tag}")
    e = _var((ns, T + 1), f"e{tag}")
    p_max = np.asarray(net.storage.p_max_mw)[:, None]
    cons: list = []
    z_der = u_st = None
    if nd:
        m_on = np.minimum(settings.der_min_output_frac * np.asarray(net.der.p_max_mw)[:, None], avail)
        if passive:
            cons.append(der == avail)
        else:
            z_der = binary((nd, T), f"z_der{tag}")
            cons += [der <= cp.multiply(avail, z_der), der >= cp.multiply(m_on, z_der)]
    if ns:
        eta_c, eta_d = (np.asarray(net.storage.eta_charge)[:, None], np.asarray(net.storage.eta_discharge)[:, None])
        e0 = np.asarray(e_init_mwh, dtype=float)
        cons += [e[:, 0] == e0, e[:, 1:] == e[:, :-1] + dt * (cp.multiply(eta_c, ch) - cp.multiply(1 / eta_d, dis)),
                 e <= np.asarray(net.storage.e_max_mwh)[:, None]]
        if passive:
            cons += [ch == 0, dis == 0]
        else:
            u_st = binary((ns, T), f"u_st{tag}")
            cons += [ch <= cp.multiply(p_max, u_st), dis <= cp.multiply(p_max, 1 - u_st)]
            if settings.terminal_storage:
                cons.append(e[:, T] >= e0)
    demand = c_load @ np.asarray(load_p_mw, dtype=float).T          # (n_bus, T) constant
    p_inj = c_der @ der - c_st @ (ch - dis) - demand
    q_inj = -(c_load @ np.asarray(load_q_mvar, dtype=float).T)
    nc = len(net.compensator)
    q_comp = cp.Variable((nc, T), name=f"q_comp{tag}")        # the feeder's SVC/CB, + = injecting
    if nc:
        cons += [q_comp >= np.asarray(net.compensator.q_min_mvar)[:, None],
                 q_comp <= np.asarray(net.compensator.q_max_mvar)[:, None]]
        q_inj = q_inj + incidence(n_bus, net.compensator.bus) @ q_comp
    fv = DistFlowSOC().build(net, T, p_inj / base, q_inj / base)
    ns_bus = fv.topology.non_slack
    viol = _var((n_bus, T), f"viol{tag}")
    vmin2, vmax2 = (np.asarray(net.bus.vmin_pu)[:, None] ** 2, np.asarray(net.bus.vmax_pu)[:, None] ** 2)
    cons += fv.constraints
    cons += [fv.v[ns_bus] >= vmin2[ns_bus] - viol[ns_bus], fv.v_hat[ns_bus] <= vmax2[ns_bus] + viol[ns_bus]]
    h = fv.p_head * base                                              # (T,) MW
    # boundary direction
    peak = float(np.max(demand.sum(axis=0)))
    m_g = peak * (1 + LOSS_MARGIN) + float(p_max.sum())
    m_s = float(avail.sum(axis=0).max(initial=0.0)) + float(p_max.sum())
    g, s = _var((T,), f"g{tag}"), _var((T,), f"s{tag}")
    b_dir = binary((T,), f"b_dir{tag}")
    cons += [g <= m_g * b_dir, s <= m_s * (1 - b_dir), h == g - s + y_in - y_out]
    # intra-ADN pool of the prosumer buses
    pros = np.unique(np.concatenate([np.asarray(net.der.bus), np.asarray(net.storage.bus)])).astype(int)
    npb = len(pros)
    sigma, beta = _var((npb, T), f"sigma{tag}"), _var((npb, T), f"beta{tag}")
    u_pros = None
    if npb:
        m_sell = (c_der[pros] @ np.asarray(net.der.p_max_mw) + c_st[pros] @ np.asarray(net.storage.p_max_mw))[:, None]
        m_buy = demand[pros].max(axis=1, keepdims=True) + (c_st[pros] @ np.asarray(net.storage.p_max_mw))[:, None]
        u_pros = binary((npb, T), f"u_pros{tag}")
        cons += [p_inj[pros] == sigma - beta, sigma <= cp.multiply(m_sell, u_pros),
                 beta <= cp.multiply(m_buy, 1 - u_pros)]
    consumer = np.delete(demand, pros, axis=0).sum(axis=0)
    e_out = s + y_out
    x_in = cp.sum(sigma, axis=0) - e_out
    cons.append(x_in >= 0)
    pv_cost = np.where(np.asarray(net.der.kind) == "pv", tariff.pv_cost_per_mwh, tariff.wind_cost_per_mwh)
    cost = dt * (tariff.storage_cost_per_mwh * cp.sum(ch + dis) + cp.sum(pv_cost @ der)
                 + tariff.penalty_curtailment_per_mwh * cp.sum(avail - der)
                 + tariff.penalty_voltage_per_puh * cp.sum(viol)
                 + settings.tn_charge_per_mwh * cp.sum(g + s))
    h_lo = -(avail.sum(axis=0) + float(p_max.sum()))
    h_hi = demand.sum(axis=0) * (1 + LOSS_MARGIN) + float(p_max.sum())
    return ADNBlock(net, der, z_der, ch, dis, u_st, e, g, s, b_dir, sigma, beta, u_pros, x_in, consumer, h, fv, viol,
                    cons, cost, h_lo, h_hi, pros, avail)
