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
    add_devices(pnet, net)
    return pnet


def add_devices(pnet: Any, net: Network) -> None:
    """Add ``net``'s DER, EV stations, storage and compensators to pandapower net ``pnet`` at 0 MW
    (ratings in the pandapower columns, so a power flow of ``pnet`` stays the base point):
    DER as static generators of type ``PV`` / ``WP`` (``max_p_mw`` = capacity), EV stations as
    loads of type ``evcs`` (``n_ports``), batteries as ``storage`` (``max_e_mwh``, ``sn_mva`` =
    power rating, ``soc_percent``, efficiencies), compensators as static generators of type
    ``SVC`` (``min_q_mvar`` .. ``max_q_mvar``). :mod:`env.importers` reads these back.
    """
    import pandapower as pp

    for name, bus, kind, p_max in zip(net.der.name, net.der.bus, net.der.kind, net.der.p_max_mw):
        pp.create_sgen(pnet, bus=int(bus), p_mw=0.0, q_mvar=0.0, name=str(name), type="PV" if kind == "pv" else "WP",
                       max_p_mw=float(p_max), min_p_mw=0.0)
    for name, bus, ports in zip(net.evcs.name, net.evcs.bus, net.evcs.n_ports):
        pp.create_load(pnet, bus=int(bus), p_mw=0.0, q_mvar=0.0, name=str(name), type="evcs", n_ports=int(ports))
    st = net.storage
    for k in range(len(st)):
        pp.create_storage(pnet, bus=int(st.bus[k]), p_mw=0.0, max_e_mwh=float(st.e_max_mwh[k]),
                          sn_mva=float(st.p_max_mw[k]), soc_percent=100.0 * float(st.e_init_mwh[k] / st.e_max_mwh[k]),
                          eta_charge=float(st.eta_charge[k]), eta_discharge=float(st.eta_discharge[k]))
    comp = net.compensator
    for k in range(len(comp)):
        pp.create_sgen(pnet, bus=int(comp.bus[k]), p_mw=0.0, q_mvar=0.0, type="SVC", name=f"svc{k}",
                       min_q_mvar=float(comp.q_min_mvar[k]), max_q_mvar=float(comp.q_max_mvar[k]))


def grid_to_pandapower_nets(grid: Grid) -> dict[str, Any]:
    """Every network of ``grid`` as its own pandapower net with all its devices, by network name:
    each feeder (:func:`feeder_to_pandapower`) and, for a T-D case, the transmission network
    (its branches, base loads and generators with their costs; the feeders' boundary buses are
    ``grid.boundary_bus``). :func:`env.importers.from_pandapower` builds the grid back."""
    nets = {f.name: feeder_to_pandapower(f) for f in grid.feeders}
    if grid.transmission is not None:
        t = grid.transmission
        # a T-bus's load is the feeder's peak plus the lumped rest (what the case loaders subtract)
        p = np.bincount(t.load.bus, weights=t.load.p_mw, minlength=t.n_bus)
        q = np.bincount(t.load.bus, weights=t.load.q_mvar, minlength=t.n_bus)
        for b, f in zip(grid.boundary_bus, grid.feeders):
            peak = float(f.load.p_mw.sum())
            q[b] = q[b] * (p[b] + peak) / p[b] if p[b] > 0 else 0.0
            p[b] += peak
        nets[t.name] = transmission_with_units(t, p, q)
    return nets


def transmission_with_units(net: Network, load_p_mw: np.ndarray | None = None,
                            load_q_mvar: np.ndarray | None = None) -> Any:
    """Transmission ``net`` in pandapower with its loads (default: the load table), generators (the slack's units on
    the ext_grid, the others as ``gen``) with polynomial costs, and DER as static generators."""
    import pandapower as pp

    p_inj = np.zeros(net.n_bus)
    pnet = transmission_to_pandapower(net, p_inj)
    if load_p_mw is None or load_q_mvar is None:
        load_p_mw, load_q_mvar = base_injection(net)
    for bus in np.flatnonzero(load_p_mw > 0):
        pp.create_load(pnet, bus=int(bus), p_mw=float(load_p_mw[bus]), q_mvar=float(load_q_mvar[bus]))
    g = net.gen
    for k in range(len(g)):
        common = dict(max_p_mw=float(g.p_max_mw[k]), min_p_mw=float(g.p_min_mw[k]))
        if g.bus[k] == net.slack_bus and not (g.bus[:k] == net.slack_bus).any():
            et, idx = "ext_grid", int(pnet.ext_grid.index[0])
            pnet.ext_grid.loc[idx, ["max_p_mw", "min_p_mw"]] = [common["max_p_mw"], common["min_p_mw"]]
        else:
            et, idx = "gen", pp.create_gen(pnet, bus=int(g.bus[k]), p_mw=0.0, vm_pu=1.0, **common)
        pp.create_poly_cost(pnet, idx, et, cp1_eur_per_mw=float(g.cost_c1_per_mwh[k]),
                            cp2_eur_per_mw2=float(g.cost_c2_per_mw2h[k]))
    add_devices(pnet, net)
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
