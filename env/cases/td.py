"""Transmission-distribution cases: a MATPOWER transmission network from
pandapower's bundled cases (no download) with 33-bus feeders at boundary buses.

A feeder attached at a T-bus keeps its own loads; the T-bus keeps
max(0, original load - feeder peak) as a lumped load (docs/design.md "The grid").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from env.cases.feeders import (
    INTEGER,
    INTEGERS,
    NUMBER,
    STRING,
    TABLES,
    _records,
    check_table,
    check_unique,
    feeder_from_file,
    load_tariff,
    read_toml,
)
from env.cases.transmission import TransmissionArrays, transmission_arrays
from env.network import BranchTable, BusTable, DERTable, GenTable, Grid, LoadTable, Network, TieLine

_TD_SCHEMA = {"description": STRING, "base_network": STRING, "tariff": STRING, "feeder": STRING,
              "boundary_buses": INTEGERS, "thermal": TABLES, "wind": TABLES, "pv": TABLES, "tie_lines": TABLES,
              "feeder_overrides": TABLES}
_TD_OPTIONAL = ("thermal", "wind", "pv", "tie_lines", "feeder_overrides")
_GEN_COLUMNS = ("bus", "p_min_mw", "p_max_mw", "ramp_mw_per_h", "cost_c1_per_mwh", "cost_c2_per_mw2h",
                "cost_reserve_per_mwh")
_GEN_SCHEMA = {c: INTEGER if c == "bus" else NUMBER for c in _GEN_COLUMNS}
# optional per unit (GenTable defaults when absent): kind, the deep-peak-shaving data, hydro's inflow and spill price
_GEN_OPTIONAL = {"kind": STRING, "p_normal_min_mw": NUMBER, "p_no_oil_min_mw": NUMBER,
                 "cost_deep_loss_per_mwh": NUMBER, "cost_deep_oil_per_mwh": NUMBER,
                 "deep_subsidy_coeff": NUMBER, "deep_subsidy_per_mwh": NUMBER,
                 "water_inflow_mw": NUMBER, "cost_spill_per_mwh": NUMBER}
_WIND_SCHEMA = {"name": STRING, "bus": INTEGER, "p_max_mw": NUMBER}
_TIE_SCHEMA = {"from_feeder": INTEGER, "from_bus": INTEGER, "to_feeder": INTEGER, "to_bus": INTEGER,
               "p_max_mw": NUMBER}
RAMP_SHARE_PER_H = 0.5      # chosen: units ramp 50 % of p_max per hour where the case gives none
RESERVE_PRICE_SHARE = 0.2   # chosen: reserve capacity priced at 20 % of the unit's c1


def _pandapower_case(name: str):  # noqa: ANN202 - pandapower net
    import pandapower.networks as pn

    known = {"case14": pn.case14, "case30": pn.case30, "case118": pn.case118}
    if name not in known:
        raise ValueError(f"unknown transmission base network {name!r}; known: {sorted(known)}")
    return known[name]()


def _bus_loads(net: Any, n_bus: int) -> tuple[np.ndarray, np.ndarray]:
    """Active/reactive load per bus (MW, MVAr), summed over the in-service loads."""
    loads = net.load[net.load.in_service]
    p = np.bincount(loads.bus.to_numpy(), weights=loads.p_mw.to_numpy(), minlength=n_bus)
    q = np.bincount(loads.bus.to_numpy(), weights=loads.q_mvar.to_numpy(), minlength=n_bus)
    return p, q


def _case_generators(net: Any) -> dict[str, list[Any]]:
    """Generators of the pandapower case (gen + ext_grid) with their polynomial costs."""
    cost = net.poly_cost.set_index(["et", "element"])
    rows: dict[str, list[Any]] = {c: [] for c in _GEN_COLUMNS}
    for et, table in (("ext_grid", net.ext_grid), ("gen", net.gen)):
        for idx, unit in table[table.in_service].iterrows():
            c1 = float(cost.loc[(et, idx), "cp1_eur_per_mw"]) if (et, idx) in cost.index else 0.0
            c2 = float(cost.loc[(et, idx), "cp2_eur_per_mw2"]) if (et, idx) in cost.index else 0.0
            p_max = float(unit.max_p_mw)
            rows["bus"].append(int(unit.bus))
            rows["p_min_mw"].append(max(0.0, float(unit.min_p_mw)))
            rows["p_max_mw"].append(p_max)
            rows["ramp_mw_per_h"].append(RAMP_SHARE_PER_H * p_max)
            rows["cost_c1_per_mwh"].append(c1)
            rows["cost_c2_per_mw2h"].append(c2)
            rows["cost_reserve_per_mwh"].append(RESERVE_PRICE_SHARE * c1)
    return rows


def td_case(file: str, name: str) -> Grid:
    """Build a T-D :class:`Grid` from its data file (see ``data/t30d2.toml``).

    Raises:
        ValueError: a missing, unknown or mistyped key (naming the file, the table and the key),
            duplicate boundary buses or wind names, unknown bus labels.
    """
    try:
        return _td_case(file, name)
    except ValueError as exc:
        if str(exc).startswith(file):
            raise
        raise ValueError(f"{file}: {exc}") from exc


def _td_case(file: str, name: str) -> Grid:
    data = read_toml(file)
    check_table(data, _TD_SCHEMA, f"{file}: top level", optional=_TD_OPTIONAL)
    check_unique(data["boundary_buses"], f"{file}: top level: key 'boundary_buses'")
    net = _pandapower_case(data["base_network"])
    arr = transmission_arrays(net)
    label_to_index = {int(lab): i for i, lab in enumerate(arr.bus_label)}

    def index(labels: list[int], where: str) -> np.ndarray:
        bad = [lab for lab in labels if lab not in label_to_index]
        if bad:
            raise ValueError(f"{file}: {where} refers to unknown bus labels {bad}")
        return np.array([label_to_index[lab] for lab in labels], dtype=int)

    boundary = index(data["boundary_buses"], "boundary_buses")
    overrides = data.get("feeder_overrides", [{}] * len(boundary))   # per feeder: its own der / storage
    if len(overrides) != len(boundary):
        raise ValueError(f"{file}: top level: key 'feeder_overrides' needs one table per boundary bus "
                         f"({len(boundary)}), got {len(overrides)}")
    feeders = tuple(feeder_from_file(data["feeder"], f"{name}/f{k}", overrides[k]) for k in range(len(boundary)))
    if "thermal" in data:
        gens = _unit_records(data["thermal"], f"{file}: thermal")
        gens["bus"] = index(gens["bus"], "thermal").tolist()
    else:
        gens = _case_generators(net)
    wind = _records(data.get("wind", []), _WIND_SCHEMA, f"{file}: wind")
    pv = _records(data.get("pv", []), _WIND_SCHEMA, f"{file}: pv")
    check_unique(wind["name"] + pv["name"], f"{file}: wind and pv: key 'name'")
    der = DERTable(name=wind["name"] + pv["name"], bus=index(wind["bus"] + pv["bus"], "wind and pv"),
                   kind=["wind"] * len(wind["name"]) + ["pv"] * len(pv["name"]),
                   p_max_mw=wind["p_max_mw"] + pv["p_max_mw"])
    ties = _records(data.get("tie_lines", []), _TIE_SCHEMA, f"{file}: tie_lines")
    tie_lines = tuple(TieLine(from_feeder=f, from_bus=fb - 1, to_feeder=t, to_bus=tb - 1, p_max_mw=p)
                      for f, fb, t, tb, p in zip(ties["from_feeder"], ties["from_bus"], ties["to_feeder"],
                                                 ties["to_bus"], ties["p_max_mw"]))
    transmission = coupled_transmission(net, arr, f"{name}/t", boundary, feeders, gens, der)
    return Grid(name=name, feeders=feeders, transmission=transmission, boundary_bus=tuple(boundary.tolist()),
                tariff=load_tariff(data["tariff"]), description=data["description"], tie_lines=tie_lines)


def coupled_transmission(net: Any, arr: TransmissionArrays, name: str, boundary: np.ndarray,
                         feeders: tuple[Network, ...], gens: dict[str, list[Any]] | None = None,
                         der: DERTable | None = None) -> Network:
    """The DC transmission :class:`Network` of pandapower net ``net`` (branch arrays ``arr``) with
    feeder ``k`` at bus index ``boundary[k]``: a T-bus keeps max(0, its load - the feeder's
    peak) as a lumped load. ``gens`` default to the net's generators and their costs."""
    n = len(arr.bus_label)
    p_load, q_load = _bus_loads(net, n)
    for k, b in enumerate(boundary):  # lumped load = max(0, original - feeder peak)
        peak = feeders[k].load.p_mw.sum()
        scale = max(0.0, p_load[b] - peak) / p_load[b] if p_load[b] > 0 else 0.0
        p_load[b] *= scale
        q_load[b] *= scale
    loaded = np.flatnonzero(p_load > 0)
    return Network(
        name=name, kind="transmission", base_mva=arr.base_mva,
        base_kv=float(net.bus.vn_kv.iloc[0]), slack_bus=arr.slack_bus,
        bus=BusTable(label=arr.bus_label, vmin_pu=np.full(n, 0.94), vmax_pu=np.full(n, 1.06)),
        branch=BranchTable(from_bus=arr.from_bus, to_bus=arr.to_bus, r_pu=arr.r_pu, x_pu=arr.x_pu,
                           rate_mva=arr.rate_mva, tap=arr.tap, shift_rad=arr.shift_rad),
        load=LoadTable(bus=loaded, p_mw=p_load[loaded], q_mvar=q_load[loaded]),
        gen=GenTable(**(gens if gens is not None else _case_generators(net))),
        der=der if der is not None else DERTable(name=[], bus=[], kind=[], p_max_mw=[]),
    )


def _unit_records(rows: Any, where: str) -> dict[str, list[Any]]:
    """Columns of the ``thermal`` tables: the required :data:`_GEN_COLUMNS` and, when any row
    gives them, the optional :data:`_GEN_OPTIONAL` keys (a row without one gets the
    :class:`GenTable` default: kind "thermal", ``P_a = P_b = p_min_mw``, zero coefficients)."""
    if not isinstance(rows, list):
        raise ValueError(f"{where}: must be {TABLES}, got {rows!r}")
    out: dict[str, list[Any]] = {c: [] for c in _GEN_COLUMNS}
    extra: dict[str, list[Any]] = {c: [] for c in _GEN_OPTIONAL}
    for i, row in enumerate(rows):
        check_table(row, {**_GEN_SCHEMA, **_GEN_OPTIONAL}, f"{where}[{i}]", optional=tuple(_GEN_OPTIONAL))
        for c in _GEN_COLUMNS:
            out[c].append(row[c])
        for c in _GEN_OPTIONAL:
            default = "thermal" if c == "kind" else row["p_min_mw"] if c.startswith("p_") else 0.0
            extra[c].append(row.get(c, default))
    if any(c in row for row in rows for c in _GEN_OPTIONAL):
        out.update(extra)
    return out

