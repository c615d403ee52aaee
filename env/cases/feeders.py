"""Radial feeder cases: the bare IEEE 33 / 69 networks and their DER placements.

Bus labels in the data files are 1-based (literature numbering, bus 1 = the
substation); this module is the only place that converts them to 0-based
indices and converts ohms and kW to per unit / MW.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from env.network import (
    BranchTable,
    BusTable,
    CompensatorTable,
    DERTable,
    EVCSTable,
    LoadTable,
    Network,
    StorageTable,
    Tariff,
)

DATA_DIR = Path(__file__).parent / "data"
FEEDER_BASE_KV = 12.66  # IEEE 33 and 69 (Baran-Wu; Das)
FEEDER_BASE_MVA = 10.0  # pandapower case33bw's sn_mva and MATPOWER case69's baseMVA

_FEEDER_KEYS = {
    "description", "base_network", "tariff", "load_scale_p", "load_scale_q", "vmin_pu", "vmax_pu",
    "v_slack_pu", "der", "evcs_buses", "evcs_ports", "storage", "compensators",
}


def read_toml(name: str) -> dict[str, Any]:
    """Read a case data file from ``env/cases/data``."""
    with open(DATA_DIR / name, "rb") as fh:
        return tomllib.load(fh)


def check_keys(data: dict[str, Any], allowed: set[str], where: str) -> None:
    """Raise ValueError for keys that are not in ``allowed`` (never ignore them silently)."""
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; valid keys: {sorted(allowed)}")


def load_tariff(name: str) -> Tariff:
    """Build a :class:`Tariff` from a TOML data file."""
    data = read_toml(name)
    return Tariff(**data)


def _ieee33_raw() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Branches (from, to 1-based; r, x ohm) and loads (bus 1-based; kW, kvar) of case33bw."""
    import pandapower.networks as pn

    net = pn.case33bw()
    lines = net.line[net.line.in_service]  # the five tie lines are out of service
    branches = pd.DataFrame({
        "from_bus": lines.from_bus.to_numpy() + 1,
        "to_bus": lines.to_bus.to_numpy() + 1,
        "r_ohm": (lines.r_ohm_per_km * lines.length_km).to_numpy(),
        "x_ohm": (lines.x_ohm_per_km * lines.length_km).to_numpy(),
    })
    loads = net.load[net.load.in_service]
    loads = pd.DataFrame({
        "bus": loads.bus.to_numpy() + 1,
        "p_kw": loads.p_mw.to_numpy() * 1e3,
        "q_kvar": loads.q_mvar.to_numpy() * 1e3,
    })
    return branches, loads


def _ieee69_raw() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Branches and loads of MATPOWER case69 from the shipped CSV files."""
    branches = pd.read_csv(DATA_DIR / "ieee69_branches.csv", comment="#")
    loads = pd.read_csv(DATA_DIR / "ieee69_loads.csv", comment="#")
    return branches, loads


_BASE_FEEDERS = {"ieee33": (_ieee33_raw, 33), "ieee69": (_ieee69_raw, 69)}


def bare_feeder(base: str, name: str | None = None, vmin_pu: float = 0.95, vmax_pu: float = 1.05,
                load_scale_p: float = 1.0, load_scale_q: float = 1.0, v_slack_pu: float = 1.0) -> Network:
    """The bare textbook feeder ``base`` ("ieee33" or "ieee69") without DER.

    Impedances z_pu = z_ohm / Z_base with Z_base = V_base^2 / S_base
    (12.66 kV, 10 MVA); loads in MW (scaled by ``load_scale_p`` / ``load_scale_q``).
    """
    if base not in _BASE_FEEDERS:
        raise ValueError(f"unknown base feeder {base!r}; known: {sorted(_BASE_FEEDERS)}")
    reader, n_bus = _BASE_FEEDERS[base]
    branches, loads = reader()
    z_base = FEEDER_BASE_KV**2 / FEEDER_BASE_MVA
    n_br = len(branches)
    bus = BusTable(label=np.arange(1, n_bus + 1), vmin_pu=np.full(n_bus, vmin_pu), vmax_pu=np.full(n_bus, vmax_pu))
    branch = BranchTable(
        from_bus=branches.from_bus.to_numpy() - 1,
        to_bus=branches.to_bus.to_numpy() - 1,
        r_pu=branches.r_ohm.to_numpy() / z_base,
        x_pu=branches.x_ohm.to_numpy() / z_base,
        rate_mva=np.full(n_br, np.inf),
        tap=np.ones(n_br),
        shift_rad=np.zeros(n_br),
    )
    load = LoadTable(
        bus=loads.bus.to_numpy() - 1,
        p_mw=loads.p_kw.to_numpy() * 1e-3 * load_scale_p,
        q_mvar=loads.q_kvar.to_numpy() * 1e-3 * load_scale_q,
    )
    return Network(
        name=name or base, kind="feeder", base_mva=FEEDER_BASE_MVA, base_kv=FEEDER_BASE_KV,
        slack_bus=0, bus=bus, branch=branch, load=load, v_slack_pu=v_slack_pu,
    )


def _records(rows: list[dict[str, Any]], columns: tuple[str, ...], where: str) -> dict[str, list[Any]]:
    """Turn a list of TOML tables into columns, rejecting unknown or missing keys."""
    out: dict[str, list[Any]] = {c: [] for c in columns}
    for row in rows:
        check_keys(row, set(columns), where)
        missing = set(columns) - set(row)
        if missing:
            raise ValueError(f"{where}: missing keys {sorted(missing)} in {row}")
        for c in columns:
            out[c].append(row[c])
    return out


def _to_index(labels: list[int], n_bus: int, where: str) -> np.ndarray:
    idx = np.asarray(labels, dtype=int) - 1
    if idx.size and (idx.min() < 0 or idx.max() >= n_bus):
        raise ValueError(f"{where}: bus label outside 1..{n_bus}: {labels}")
    return idx


def feeder_from_file(file: str, name: str) -> Network:
    """Build a feeder :class:`Network` from its placement file (see ``data/d33.toml``)."""
    data = read_toml(file)
    check_keys(data, _FEEDER_KEYS, file)
    net = bare_feeder(
        data["base_network"], name=name, vmin_pu=data["vmin_pu"], vmax_pu=data["vmax_pu"],
        load_scale_p=data["load_scale_p"], load_scale_q=data["load_scale_q"], v_slack_pu=data["v_slack_pu"],
    )
    n = net.n_bus
    der = _records(data["der"], ("name", "bus", "kind", "p_max_mw"), f"{file}: der")
    der["bus"] = _to_index(der["bus"], n, f"{file}: der")
    st = _records(data["storage"], ("bus", "e_max_mwh", "p_max_mw", "eta_charge", "eta_discharge", "e_init_mwh"),
                  f"{file}: storage")
    st["bus"] = _to_index(st["bus"], n, f"{file}: storage")
    comp = _records(data["compensators"], ("bus", "q_min_mvar", "q_max_mvar"), f"{file}: compensators")
    comp["bus"] = _to_index(comp["bus"], n, f"{file}: compensators")
    evcs_bus = _to_index(data["evcs_buses"], n, f"{file}: evcs_buses")
    evcs = EVCSTable(
        name=[f"evcs{b + 1}" for b in evcs_bus], bus=evcs_bus, n_ports=np.full(len(evcs_bus), data["evcs_ports"]),
    )
    return Network(
        name=name, kind="feeder", base_mva=net.base_mva, base_kv=net.base_kv, slack_bus=net.slack_bus,
        bus=net.bus, branch=net.branch, load=net.load, der=DERTable(**der),
        storage=StorageTable(**st), evcs=evcs, compensator=CompensatorTable(**comp), v_slack_pu=net.v_slack_pu,
    )
