"""Radial feeder cases: the bare IEEE 33 / 69 networks and their DER placements.

Bus labels in the data files are 1-based (literature numbering, bus 1 = the
substation); this module is the only place that converts them to 0-based
indices and converts ohms and kW to per unit / MW.
"""

from __future__ import annotations

import dataclasses
import math
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

#: Value kinds of the case files' keys (checked by :func:`check_table`).
NUMBER, INTEGER, STRING, INTEGERS, NUMBERS, TABLES = (
    "a number", "an integer", "a string", "an array of integers", "an array of numbers", "an array of tables")

_FEEDER_SCHEMA = {
    "description": STRING, "base_network": STRING, "tariff": STRING, "load_scale_p": NUMBER,
    "load_scale_q": NUMBER, "vmin_pu": NUMBER, "vmax_pu": NUMBER, "v_slack_pu": NUMBER, "der": TABLES,
    "evcs_buses": INTEGERS, "evcs_ports": INTEGER, "storage": TABLES, "compensators": TABLES,
}
_FEEDER_KEYS = set(_FEEDER_SCHEMA)
_DER_SCHEMA = {"name": STRING, "bus": INTEGER, "kind": STRING, "p_max_mw": NUMBER}
_STORAGE_SCHEMA = {"bus": INTEGER, "e_max_mwh": NUMBER, "p_max_mw": NUMBER, "eta_charge": NUMBER,
                   "eta_discharge": NUMBER, "e_init_mwh": NUMBER}
_COMP_SCHEMA = {"bus": INTEGER, "q_min_mvar": NUMBER, "q_max_mvar": NUMBER}


def read_toml(name: str) -> dict[str, Any]:
    """Read a case data file from ``env/cases/data``.

    Raises:
        ValueError: the file is missing or not valid TOML (naming the file).
    """
    path = DATA_DIR / name
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ValueError(f"{name}: case data file not found in {DATA_DIR}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{name}: not valid TOML ({exc})") from exc


def check_keys(data: dict[str, Any], allowed: set[str], where: str) -> None:
    """Raise ValueError for keys that are not in ``allowed`` (never ignore them silently)."""
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; valid keys: {sorted(allowed)}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_CHECKS = {
    NUMBER: _is_number,
    INTEGER: _is_integer,
    STRING: lambda v: isinstance(v, str),
    INTEGERS: lambda v: isinstance(v, list) and all(_is_integer(x) for x in v),
    NUMBERS: lambda v: isinstance(v, list) and all(_is_number(x) for x in v),
    TABLES: lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v),
}


def check_table(data: Any, schema: dict[str, str], where: str, optional: tuple[str, ...] = ()) -> None:
    """Check one TOML table against ``schema`` (key -> kind): no unknown keys, no missing keys
    (but ``optional``), each value of its kind (numbers finite, no strings for numbers such as
    ``"0.3"``, no booleans for numbers).

    Raises:
        ValueError: ``<file>: <table>: key '<key>' ...`` naming the file, the table and the key.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{where}: must be a table, got {data!r}")
    check_keys(data, set(schema), where)
    missing = [k for k in schema if k not in data and k not in optional]
    if missing:
        raise ValueError(f"{where}: missing key{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(repr(k) for k in missing)}")
    for key, kind in schema.items():
        if key in data and not _CHECKS[kind](data[key]):
            raise ValueError(f"{where}: key {key!r} must be {kind}, got {data[key]!r}")


def check_unique(values: list[Any], where: str) -> None:
    """Raise ValueError naming the duplicated values of ``values``."""
    seen: set[Any] = set()
    dup = sorted({v for v in values if v in seen or seen.add(v)}, key=str)  # type: ignore[func-returns-value]
    if dup:
        raise ValueError(f"{where}: duplicate values {dup}")


def load_tariff(name: str) -> Tariff:
    """Build a :class:`Tariff` from a TOML data file (keys and kinds checked, naming the file).

    Raises:
        ValueError: missing, unknown or mistyped keys, or a value the :class:`Tariff` rejects.
    """
    data = read_toml(name)
    schema = {f.name: NUMBER for f in dataclasses.fields(Tariff)}
    schema.update(price_buy_per_mwh=NUMBERS, currency=STRING)
    check_table(data, schema, f"{name}: top level", optional=("currency",))
    try:
        return Tariff(**data)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from exc


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


IEEE13_KV = 4.16  # the IEEE 13 node feeder's nominal voltage (Kersting 1991)


def _ieee13_raw() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Branches and loads of the IEEE 13 node feeder (balanced equivalent) from the shipped CSVs.

    The CSV ohms are at the feeder's 4.16 kV; seed 002 rebases the feeder to 12.66 kV /
    10 MVA, which keeps every per-unit impedance, so the ohms are referred to 12.66 kV by
    the turns ratio squared, ``z_12.66 = z_4.16 (12.66 / 4.16)^2``.
    """
    branches = pd.read_csv(DATA_DIR / "ieee13_branches.csv", comment="#")
    loads = pd.read_csv(DATA_DIR / "ieee13_loads.csv", comment="#")
    ratio = (FEEDER_BASE_KV / IEEE13_KV) ** 2
    branches = branches.assign(r_ohm=branches.r_ohm * ratio, x_ohm=branches.x_ohm * ratio)
    return branches[["from_bus", "to_bus", "r_ohm", "x_ohm"]], loads[["bus", "p_kw", "q_kvar"]]


_BASE_FEEDERS = {"ieee13": (_ieee13_raw, 13), "ieee33": (_ieee33_raw, 33), "ieee69": (_ieee69_raw, 69)}


def bare_feeder(base: str, name: str | None = None, vmin_pu: float = 0.95, vmax_pu: float = 1.05,
                load_scale_p: float = 1.0, load_scale_q: float = 1.0, v_slack_pu: float = 1.0) -> Network:
    """The bare textbook feeder ``base`` ("ieee13", "ieee33" or "ieee69") without DER.

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


def _records(rows: Any, schema: dict[str, str] | tuple[str, ...], where: str) -> dict[str, list[Any]]:
    """Turn a list of TOML tables into columns, rejecting unknown, missing or mistyped keys
    (``schema``: key -> kind, see :func:`check_table`; a tuple of keys checks keys only)."""
    if isinstance(schema, tuple):
        schema = {c: "" for c in schema}
    if not isinstance(rows, list):
        raise ValueError(f"{where}: must be {TABLES}, got {rows!r}")
    out: dict[str, list[Any]] = {c: [] for c in schema}
    for i, row in enumerate(rows):
        check_table(row, {k: v for k, v in schema.items() if v}, f"{where}[{i}]")
        missing = set(schema) - set(row)
        if missing:
            raise ValueError(f"{where}[{i}]: missing keys {sorted(missing)}")
        for c in schema:
            out[c].append(row[c])
    return out


def _to_index(labels: list[int], n_bus: int, where: str) -> np.ndarray:
    idx = np.asarray(labels, dtype=int) - 1
    if idx.size and (idx.min() < 0 or idx.max() >= n_bus):
        raise ValueError(f"{where}: bus label outside 1..{n_bus}: {labels}")
    return idx


#: Keys of a feeder file that a T-D case may replace per feeder (``feeder_overrides``).
FEEDER_OVERRIDE_KEYS = ("der", "storage")


def feeder_from_file(file: str, name: str, overrides: dict[str, Any] | None = None) -> Network:
    """Build a feeder :class:`Network` from its placement file (see ``data/d33.toml``).

    ``overrides`` replaces the file's ``der`` / ``storage`` tables (a T-D case placing
    different PV and storage on copies of one feeder, see ``data/t30d5.toml``).

    Raises:
        ValueError: a missing, unknown or mistyped key (naming the file, the table and the key),
            duplicate EV station buses or DER names, a bus label outside the feeder.
    """
    data = read_toml(file)
    check_table(data, _FEEDER_SCHEMA, f"{file}: top level", optional=("tariff",))  # a T-D feeder has none
    if overrides:
        check_table(overrides, {k: TABLES for k in FEEDER_OVERRIDE_KEYS}, f"{file}: overrides of {name}",
                    optional=FEEDER_OVERRIDE_KEYS)
        data = {**data, **overrides}
    try:
        net = bare_feeder(
            data["base_network"], name=name, vmin_pu=data["vmin_pu"], vmax_pu=data["vmax_pu"],
            load_scale_p=data["load_scale_p"], load_scale_q=data["load_scale_q"], v_slack_pu=data["v_slack_pu"],
        )
    except ValueError as exc:
        raise ValueError(f"{file}: top level: {exc}") from exc
    n = net.n_bus
    der = _records(data["der"], _DER_SCHEMA, f"{file}: der")
    check_unique(der["name"], f"{file}: der: key 'name'")
    der["bus"] = _to_index(der["bus"], n, f"{file}: der")
    st = _records(data["storage"], _STORAGE_SCHEMA, f"{file}: storage")
    st["bus"] = _to_index(st["bus"], n, f"{file}: storage")
    comp = _records(data["compensators"], _COMP_SCHEMA, f"{file}: compensators")
    comp["bus"] = _to_index(comp["bus"], n, f"{file}: compensators")
    check_unique(data["evcs_buses"], f"{file}: top level: key 'evcs_buses' (one station per bus)")
    evcs_bus = _to_index(data["evcs_buses"], n, f"{file}: evcs_buses")
    try:
        evcs = EVCSTable(
            name=[f"evcs{b + 1}" for b in evcs_bus], bus=evcs_bus,
            n_ports=np.full(len(evcs_bus), data["evcs_ports"]),
        )
        return Network(
            name=name, kind="feeder", base_mva=net.base_mva, base_kv=net.base_kv, slack_bus=net.slack_bus,
            bus=net.bus, branch=net.branch, load=net.load, der=DERTable(**der),
            storage=StorageTable(**st), evcs=evcs, compensator=CompensatorTable(**comp),
            v_slack_pu=net.v_slack_pu,
        )
    except ValueError as exc:
        raise ValueError(f"{file}: {exc}") from exc
