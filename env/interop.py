"""Build pandapower nets from gridroll networks (the AC/DC reference for tests).

Bus order is ours: pandapower bus index k is our bus k.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from env.network import Grid, Network


def feeder_to_pandapower(net: Network, p_mw: np.ndarray | None = None, q_mvar: np.ndarray | None = None) -> Any:
    """A pandapower net of feeder ``net`` with per-bus net consumption ``p_mw``/``q_mvar``.

    Defaults to the base operating point (the load table, DER and devices at 0).
    Lines get r_ohm = r_pu * Z_base, x likewise, no shunt capacitance, 1 km.
    """
    import pandapower as pp

    if net.kind != "feeder":
        raise ValueError(f"{net.name} is a {net.kind} network; use transmission_to_pandapower")
    if p_mw is None or q_mvar is None:
        p_mw, q_mvar = base_injection(net)
    pnet = pp.create_empty_network(name=net.name, sn_mva=net.base_mva)
    for k in range(net.n_bus):
        pp.create_bus(pnet, vn_kv=net.base_kv, index=k, name=f"bus{net.bus.label[k]}",
                      min_vm_pu=net.bus.vmin_pu[k], max_vm_pu=net.bus.vmax_pu[k])
    pp.create_ext_grid(pnet, bus=net.slack_bus, vm_pu=net.v_slack_pu, va_degree=0.0)
    z = net.z_base_ohm
    br = net.branch
    for k in range(len(br)):
        pp.create_line_from_parameters(
            pnet, from_bus=int(br.from_bus[k]), to_bus=int(br.to_bus[k]), length_km=1.0,
            r_ohm_per_km=br.r_pu[k] * z, x_ohm_per_km=br.x_pu[k] * z, c_nf_per_km=0.0, max_i_ka=99.0,
        )
    for k in np.flatnonzero((p_mw != 0) | (q_mvar != 0)):
        if k != net.slack_bus:
            pp.create_load(pnet, bus=int(k), p_mw=float(p_mw[k]), q_mvar=float(q_mvar[k]))
    return pnet


def base_injection(net: Network) -> tuple[np.ndarray, np.ndarray]:
    """Per-bus net consumption (MW, MVAr) at the base operating point: the load table."""
    p = np.bincount(net.load.bus, weights=net.load.p_mw, minlength=net.n_bus)
    q = np.bincount(net.load.bus, weights=net.load.q_mvar, minlength=net.n_bus)
    return p, q


def grid_to_pandapower(grid: Grid) -> Any:
    """The pandapower net of a case at its base operating point.

    For a single-feeder case, the feeder (AC). For a T-D case, the
    transmission network with each feeder's base-case head power (from our
    AC sweep) as a load at its boundary bus and the thermal units at their
    merit-order dispatch, for ``rundcpp``.
    """
    if not grid.is_td:
        return feeder_to_pandapower(grid.feeders[0])
    from env.physics.grid_flow import base_transmission_injection, power_flow

    flow = power_flow(grid)
    p_inj = base_transmission_injection(grid)
    heads = np.array([f.head_p_mw[0] for f in flow.feeders])
    np.subtract.at(p_inj, np.array(grid.boundary_bus), heads)
    return transmission_to_pandapower(grid.transmission, p_inj)  # type: ignore[arg-type]


def transmission_to_pandapower(net: Network, p_inj_mw: np.ndarray) -> Any:
    """A pandapower net of transmission ``net`` with bus injections ``p_inj_mw`` (gen - load).

    Every branch becomes a line without shunt capacitance; a transformer's
    off-nominal tap is folded into its reactance (DC susceptance b = 1 / (x tap)),
    so ``rundcpp`` gives the same flows. Phase shifters are not exported.
    """
    import pandapower as pp

    br = net.branch
    if np.any(br.shift_rad != 0):
        raise ValueError(f"{net.name}: phase shifters are not exported to pandapower")
    pnet = pp.create_empty_network(name=net.name, sn_mva=net.base_mva)
    for k in range(net.n_bus):
        pp.create_bus(pnet, vn_kv=net.base_kv, index=k, name=f"bus{net.bus.label[k]}")
    pp.create_ext_grid(pnet, bus=net.slack_bus, vm_pu=1.0)
    z = net.z_base_ohm
    for k in range(len(br)):
        pp.create_line_from_parameters(
            pnet, from_bus=int(br.from_bus[k]), to_bus=int(br.to_bus[k]), length_km=1.0,
            r_ohm_per_km=br.r_pu[k] * z, x_ohm_per_km=br.x_pu[k] * br.tap[k] * z, c_nf_per_km=0.0,
            max_i_ka=(br.rate_mva[k] / (np.sqrt(3) * net.base_kv)) if np.isfinite(br.rate_mva[k]) else 99.0,
        )
    for k in range(net.n_bus):
        if k != net.slack_bus and p_inj_mw[k] != 0:
            pp.create_load(pnet, bus=k, p_mw=float(-p_inj_mw[k]))
    return pnet
