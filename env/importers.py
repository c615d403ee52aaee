"""A user's own grid: pandapower nets, MATPOWER case files and a T-D coupling spec (TOML).

* :func:`feeder_from_pandapower` / :func:`transmission_from_pandapower` turn one pandapower net
  into one :class:`~env.network.Network` (lines, 2-winding transformers and impedances through
  pandapower's own MATPOWER conversion, :func:`env.cases.transmission.transmission_arrays`).
* :func:`from_pandapower` makes a single-feeder :class:`~env.network.Grid` of a radial net, or a
  T-D grid of a meshed net with the given feeders at the given T-buses.
* :func:`read_net` reads a MATPOWER ``.m`` / ``.mat`` case or a pandapower ``.json`` file.
* :func:`grid_from_spec` builds a grid from a coupling spec (docs/data.md), the file that
  ``gridroll run --case path/to/spec.toml`` takes.

In a pandapower net, static generators of type ``PV`` are PV units, ``WP`` / ``WT`` / ``wind``
wind units (capacity ``max_p_mw`` when given, else ``p_mw``), ``SVC`` reactive compensators
(``min_q_mvar`` .. ``max_q_mvar``); loads of type ``evcs`` are EV stations (``n_ports``);
``storage`` rows are batteries. This is what :func:`env.interop.feeder_to_pandapower` writes, so a
feeder round-trips. Bus labels are the bus names when they are integers (or ``bus<k>``), else
index + 1; specs name buses by these labels.
"""

from __future__ import annotations

import copy
import re
import tomllib
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from env.cases.feeders import (
    INTEGER,
    NUMBER,
    STRING,
    TABLES,
    check_table,
    load_tariff,
)
from env.cases.td import coupled_transmission
from env.cases.transmission import transmission_arrays
from env.network import (
    BranchTable,
    BusTable,
    CompensatorTable,
    DERTable,
    EVCSTable,
    Grid,
    LoadTable,
    Network,
    StorageTable,
    Tariff,
)

STORAGE_EFFICIENCY = 0.95   # chosen: one-way efficiency of a pandapower storage (pandapower has none)
_PV_TYPES = ("pv",)
_WIND_TYPES = ("wp", "wt", "wind")
_COMPENSATOR_TYPES = ("svc", "compensator")


def read_net(path: str | Path, f_hz: float = 50.0) -> Any:
    """A pandapower net from a MATPOWER case (``.m``, ``.mat``) or a pandapower ``.json`` file.

    Raises:
        ValueError: a missing file or an unsupported suffix.
    """
    import pandapower as pp
    from pandapower.converter.matpower.from_mpc import from_mpc

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"grid file {path} not found")
    suffix = path.suffix.lower()
    if suffix in (".m", ".mat"):
        with warnings.catch_warnings():    # pandas dtype FutureWarnings inside pandapower's converter
            warnings.simplefilter("ignore", FutureWarning)
            return from_mpc(str(path), f_hz=f_hz)
    if suffix == ".json":
        return pp.from_json(str(path))
    raise ValueError(f"grid file {path}: unsupported suffix {suffix!r}; use .m or .mat (MATPOWER) or .json "
                     "(pandapower)")


def _closed_lines_only(net: Any) -> Any:
    """A copy of ``net`` where a line behind an open line switch is out of service and
    switches are gone (closed bus-bus switches are refused by transmission_arrays)."""
    net = copy.deepcopy(net)
    sw = net.switch
    if len(sw):
        open_lines = sw[(sw.et == "l") & ~sw.closed.astype(bool)].element.unique()
        net.line.loc[net.line.index.isin(open_lines), "in_service"] = False
        keep = sw.et == "b"
        net.switch = sw[keep & sw.closed.astype(bool)]
    in_service = net.bus.in_service.astype(bool)
    if not in_service.all():
        import pandapower as pp

        pp.drop_buses(net, net.bus.index[~in_service])
    return net


def _labels(net: Any, bus_index: np.ndarray) -> np.ndarray:
    """Bus labels: integer names (``"12"`` or ``"bus12"``) when all are, else index + 1."""
    names = [str(n) for n in net.bus.loc[bus_index, "name"].tolist()]
    found = [re.fullmatch(r"(?:bus\s*)?(\d+)", n.strip(), flags=re.IGNORECASE) for n in names]
    if all(found):
        labels = np.array([int(m.group(1)) for m in found], dtype=int)   # type: ignore[union-attr]
        if len(set(labels.tolist())) == labels.size:
            return labels
    return bus_index.astype(int) + 1


def _rows(table: Any) -> Any:
    """The in-service rows of a pandapower element table."""
    return table[table.in_service.astype(bool)] if "in_service" in table else table


def _type_of(table: Any) -> np.ndarray:
    if "type" not in table:
        return np.full(len(table), "", dtype=object)
    return table["type"].fillna("").astype(str).str.strip().str.lower().to_numpy()


def _column(table: Any, column: str, default: float) -> np.ndarray:
    """A numeric column of a pandapower table, ``default`` where absent or NaN."""
    if column not in table:
        return np.full(len(table), default)
    values = table[column].to_numpy(dtype=float)
    return np.where(np.isfinite(values), values, default)


def _per_bus_loads(bus: np.ndarray, p_mw: np.ndarray, q_mvar: np.ndarray) -> LoadTable:
    """One load per bus (the sum of the bus's loads): the scenario layer names loads by bus."""
    at = np.unique(bus)
    return LoadTable(bus=at, p_mw=np.array([p_mw[bus == b].sum() for b in at]),
                     q_mvar=np.array([q_mvar[bus == b].sum() for b in at]))


def _feeder_devices(net: Any, ours: dict[int, int], where: str) -> dict[str, Any]:
    """Loads, DER, EV stations, storage and compensators of ``net`` on our bus indices."""
    def buses(frame: Any) -> np.ndarray:
        return np.array([ours[int(b)] for b in frame.bus], dtype=int)

    loads = _rows(net.load)
    kind = _type_of(loads)
    scale = loads.scaling.to_numpy() if "scaling" in loads else np.ones(len(loads))
    plain, ev = loads[kind != "evcs"], loads[kind == "evcs"]
    plain_scale = scale[kind != "evcs"]
    sgen = _rows(net.sgen)
    stype = _type_of(sgen)
    unknown = sorted(set(stype) - set(_PV_TYPES + _WIND_TYPES + _COMPENSATOR_TYPES))
    if unknown:
        raise ValueError(f"{where}: static generators of types {unknown} are not modelled; gridroll knows PV "
                         f"({_PV_TYPES}), wind ({_WIND_TYPES}) and compensators ({_COMPENSATOR_TYPES})")
    gen_like = sgen[np.isin(stype, _PV_TYPES + _WIND_TYPES)]
    gtype = _type_of(gen_like)
    cap = gen_like.p_mw.to_numpy(dtype=float)
    if "max_p_mw" in gen_like:
        given = gen_like.max_p_mw.to_numpy(dtype=float)
        cap = np.where(np.isfinite(given) & (given > 0), given, cap)
    names = [str(n) if n is not None and str(n) not in ("", "nan", "None") else f"der{i}"
             for i, n in zip(gen_like.index, gen_like.name)]
    comp = sgen[np.isin(stype, _COMPENSATOR_TYPES)]
    stor = _rows(net.storage)
    e_max = stor.max_e_mwh.to_numpy(dtype=float)
    soc = stor.soc_percent.fillna(50.0).to_numpy(dtype=float) if "soc_percent" in stor else np.full(len(stor), 50.0)
    p_rate = stor.sn_mva.to_numpy(dtype=float) if "sn_mva" in stor else np.abs(stor.p_mw.to_numpy(dtype=float))
    p_rate = np.where(np.isfinite(p_rate) & (p_rate > 0), p_rate, np.abs(stor.p_mw.to_numpy(dtype=float)))
    ports = ev.n_ports.to_numpy(dtype=int) if "n_ports" in ev else np.ones(len(ev), dtype=int)
    return {
        "load": _per_bus_loads(buses(plain), plain.p_mw.to_numpy(dtype=float) * plain_scale,
                               plain.q_mvar.to_numpy(dtype=float) * plain_scale),
        "der": DERTable(name=names, bus=buses(gen_like), kind=np.where(np.isin(gtype, _PV_TYPES), "pv", "wind"),
                        p_max_mw=cap),
        "evcs": EVCSTable(name=[str(n) for n in ev.name], bus=buses(ev), n_ports=ports),
        "storage": StorageTable(bus=buses(stor), e_max_mwh=e_max, p_max_mw=p_rate,
                                eta_charge=_column(stor, "eta_charge", STORAGE_EFFICIENCY),
                                eta_discharge=_column(stor, "eta_discharge", STORAGE_EFFICIENCY),
                                e_init_mwh=np.clip(soc / 100.0, 0.0, 1.0) * e_max),
        "compensator": CompensatorTable(bus=buses(comp), q_min_mvar=comp.min_q_mvar.to_numpy(dtype=float),
                                        q_max_mvar=comp.max_q_mvar.to_numpy(dtype=float)),
    }


def feeder_from_pandapower(net: Any, name: str = "feeder", vmin_pu: float = 0.95, vmax_pu: float = 1.05) -> Network:
    """The radial feeder :class:`Network` of pandapower net ``net`` (not modified).

    Open line switches take their line out; the slack is the net's one in-service ``ext_grid``
    (its ``vm_pu`` is held). Impedances are per unit on ``net.sn_mva`` and each bus's own
    voltage level (transformers are series impedances; their taps and magnetizing branch are
    left out, as the sweep models none).

    Raises:
        ValueError: no or several slacks, a non-radial net (naming the branch count), devices
            gridroll does not model, buses not supplied from the slack.
    """
    slacks = _rows(net.ext_grid)
    if len(slacks) != 1:
        raise ValueError(f"feeder {name}: needs exactly one in-service ext_grid as the slack, found {len(slacks)}"
                         + (" (missing slack)" if len(slacks) == 0 else ""))
    net = _closed_lines_only(net)
    arr = transmission_arrays(net)
    bus_index = np.sort(net.bus.index.to_numpy())
    n = bus_index.size
    if len(arr.from_bus) != n - 1:
        raise ValueError(f"feeder {name} is not radial: {len(arr.from_bus)} branches for {n} buses (a radial "
                         f"feeder has n_bus - 1 = {n - 1}); open switches or take tie lines out of service")
    ours = {int(b): k for k, b in enumerate(bus_index)}
    return Network(
        name=name, kind="feeder", base_mva=float(net.sn_mva), base_kv=float(net.bus.vn_kv.min()),
        slack_bus=arr.slack_bus, v_slack_pu=float(slacks.vm_pu.iloc[0]),
        bus=BusTable(label=_labels(net, bus_index), vmin_pu=_column(net.bus.loc[bus_index], "min_vm_pu", vmin_pu),
                     vmax_pu=_column(net.bus.loc[bus_index], "max_vm_pu", vmax_pu)),
        branch=BranchTable(from_bus=arr.from_bus, to_bus=arr.to_bus, r_pu=np.maximum(arr.r_pu, 1e-9),
                           x_pu=arr.x_pu, rate_mva=arr.rate_mva, tap=np.ones(n - 1), shift_rad=np.zeros(n - 1)),
        **_feeder_devices(net, ours, f"feeder {name}"),
    )


def transmission_from_pandapower(net: Any, name: str = "t", boundary_labels: tuple[int, ...] = (),
                                 feeders: tuple[Network, ...] = ()) -> tuple[Network, tuple[int, ...]]:
    """The DC transmission :class:`Network` of a (meshed) pandapower net with ``feeders[k]`` at the
    bus labelled ``boundary_labels[k]``, and those buses' 0-based indices.

    Raises:
        ValueError: an unknown boundary bus label, no slack, unsupported elements.
    """
    if len(_rows(net.ext_grid)) + int(_rows(net.gen).slack.sum() if "slack" in net.gen else 0) == 0:
        raise ValueError(f"transmission {name}: no slack (an in-service ext_grid or a slack gen) (missing slack)")
    if len(boundary_labels) != len(feeders):
        raise ValueError(f"transmission {name}: one boundary bus per feeder required")
    arr = transmission_arrays(net)
    index = {int(lab): k for k, lab in enumerate(arr.bus_label)}
    unknown = [lab for lab in boundary_labels if int(lab) not in index]
    if unknown:
        raise ValueError(f"transmission {name}: unknown bus {unknown} (bus labels are "
                         f"{sorted(index)[:5]}...{sorted(index)[-1]})")
    boundary = np.array([index[int(lab)] for lab in boundary_labels], dtype=int)
    bus_index = np.sort(net.bus.index.to_numpy())
    der = _feeder_devices(net, {int(b): k for k, b in enumerate(bus_index)}, f"transmission {name}")["der"]
    return coupled_transmission(net, arr, name, boundary, feeders, der=der), tuple(boundary.tolist())


def from_pandapower(net: Any, name: str = "own", tariff: Tariff | str = "tariff_dso",
                    feeders: dict[int, Any] | None = None, description: str = "") -> Grid:
    """A :class:`Grid` of pandapower net ``net``.

    Without ``feeders``: ``net`` is one radial feeder (a single-feeder case, buying at its slack
    at the tariff's prices). With ``feeders`` ({T-bus label: a pandapower feeder net or a
    :class:`Network`}): ``net`` is the (meshed) transmission network, solved by DC power flow,
    with those feeders hanging at those buses.
    """
    tariff = load_tariff(f"{tariff}.toml") if isinstance(tariff, str) else tariff
    if not feeders:
        return Grid(name=name, feeders=(feeder_from_pandapower(net, name),), tariff=tariff, description=description)
    nets = tuple(f if isinstance(f, Network) else feeder_from_pandapower(f, f"{name}/f{k}")
                 for k, f in enumerate(feeders.values()))
    nets = tuple(replace(f, name=f"{name}/f{k}") for k, f in enumerate(nets))
    transmission, boundary = transmission_from_pandapower(net, f"{name}/t", tuple(feeders), nets)
    return Grid(name=name, feeders=nets, transmission=transmission, boundary_bus=boundary, tariff=tariff,
                description=description)


# --- the coupling spec ------------------------------------------------------------------------

_SPEC_SCHEMA = {"description": STRING, "tariff": STRING, "transmission": "a table", "feeders": TABLES}
_FEEDER_SCHEMA = {"at_bus": INTEGER, "file": STRING, "case": STRING, "der": TABLES, "evcs": TABLES,
                  "storage": TABLES, "compensators": TABLES}
_DEVICE_SCHEMAS = {
    "der": {"name": STRING, "bus": INTEGER, "kind": STRING, "p_max_mw": NUMBER},
    "evcs": {"name": STRING, "bus": INTEGER, "n_ports": INTEGER},
    "storage": {"bus": INTEGER, "e_max_mwh": NUMBER, "p_max_mw": NUMBER, "eta_charge": NUMBER,
                "eta_discharge": NUMBER, "e_init_mwh": NUMBER},
    "compensators": {"bus": INTEGER, "q_min_mvar": NUMBER, "q_max_mvar": NUMBER},
}
_TABLE_OF = {"der": "der", "evcs": "evcs", "storage": "storage", "compensators": "compensator"}


def _spec_feeder(spec: dict[str, Any], base: Path, name: str, where: str) -> Network:
    check_table(spec, _FEEDER_SCHEMA, where, optional=tuple(_FEEDER_SCHEMA))
    if ("file" in spec) == ("case" in spec):
        raise ValueError(f"{where}: give exactly one of 'file' (a grid file) or 'case' (a named single-feeder case)")
    if "case" in spec:
        from env.cases import load_case

        grid = load_case(spec["case"])
        if grid.is_td:
            raise ValueError(f"{where}: case {spec['case']!r} is a T-D case, not a feeder")
        feeder = replace(grid.feeders[0], name=name)
    else:
        feeder = feeder_from_pandapower(read_net(base / spec["file"]), name)
    label = {int(lab): k for k, lab in enumerate(feeder.bus.label)}
    added: dict[str, Any] = {}
    for key, schema in _DEVICE_SCHEMAS.items():
        rows = spec.get(key, [])
        for i, row in enumerate(rows):
            check_table(row, schema, f"{where}: {key}[{i}]")
            if row["bus"] not in label:
                raise ValueError(f"{where}: {key}[{i}]: unknown bus {row['bus']} (feeder bus labels "
                                 f"{min(label)}..{max(label)})")
        if not rows:
            continue
        old = getattr(feeder, _TABLE_OF[key])
        columns = {c: list(getattr(old, c)) + [label[r[c]] if c == "bus" else r[c] for r in rows] for c in schema}
        added[_TABLE_OF[key]] = type(old)(**columns)
    return replace(feeder, **added)


def grid_from_spec(path: str | Path) -> Grid:
    """Build a :class:`Grid` from a coupling spec (TOML; format in docs/data.md).

    Raises:
        ValueError: a missing file, unknown / missing / mistyped keys, unknown buses, a non-radial
            feeder, a missing slack (all naming the file).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ValueError(f"case spec {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from None
    try:
        return _grid_from_spec(data, path)
    except ValueError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path}: {exc}") from exc


def _grid_from_spec(data: dict[str, Any], path: Path) -> Grid:
    top = {k: v for k, v in data.items() if k != "transmission"}
    check_table(top, {k: v for k, v in _SPEC_SCHEMA.items() if k != "transmission"}, "top level",
                optional=("description",))
    name = path.stem
    tariff = load_tariff(f"{data['tariff']}.toml")
    specs = data["feeders"]
    if not specs:
        raise ValueError("top level: key 'feeders' needs at least one feeder")
    base = path.parent
    trans = data.get("transmission")
    if trans is None:
        if len(specs) != 1 or "at_bus" in specs[0]:
            raise ValueError("without a [transmission] table, exactly one feeder and no 'at_bus'")
        feeder = _spec_feeder(specs[0], base, name, "feeders[0]")
        return Grid(name=name, feeders=(feeder,), tariff=tariff, description=data.get("description", ""))
    if not isinstance(trans, dict):
        raise ValueError("key 'transmission' must be a table with 'file' (a MATPOWER / pandapower file)")
    check_table(trans, {"file": STRING}, "transmission")
    feeders, labels = [], []
    for k, spec in enumerate(specs):
        if "at_bus" not in spec:
            raise ValueError(f"feeders[{k}]: missing key 'at_bus' (the T-bus label the feeder hangs at)")
        feeders.append(_spec_feeder(spec, base, f"{name}/f{k}", f"feeders[{k}]"))
        labels.append(spec["at_bus"])
    if len(set(labels)) != len(labels):
        raise ValueError(f"feeders: two feeders at the same T-bus ({labels})")
    transmission, boundary = transmission_from_pandapower(read_net(base / trans["file"]), f"{name}/t",
                                                          tuple(labels), tuple(feeders))
    return Grid(name=name, feeders=tuple(feeders), transmission=transmission, boundary_bus=boundary,
                tariff=tariff, description=data.get("description", ""))


def load_grid_file(path: str | Path) -> Grid:
    """A :class:`Grid` from a spec (``.toml``) or a single radial feeder file (``.m``, ``.mat``,
    ``.json``; tariff ``tariff_dso``)."""
    path = Path(path)
    if path.suffix.lower() == ".toml":
        return grid_from_spec(path)
    return from_pandapower(read_net(path), name=path.stem)


__all__ = ["feeder_from_pandapower", "from_pandapower", "grid_from_spec", "load_grid_file", "read_net",
           "transmission_from_pandapower"]
