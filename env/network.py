"""The grid data model: frozen component tables, one ``Network`` per AC/DC network,
and a ``Grid`` (a transmission network, its radial feeders and their couplings).

Everything is stored in SI-ish engineering units with the unit in the name
(``p_mw``, ``q_mvar``, ``e_mwh``) except impedances, which are per unit on the
network's own base (``base_mva``, ``base_kv``). Bus indices are 0-based;
``bus.label`` keeps the literature's 1-based bus numbers for display. Only the
case loaders convert between the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np

from scenarios import Layout

NetworkKind = Literal["feeder", "transmission"]


def _frozen_array(value: object, dtype: type, name: str, n: int | None = None) -> np.ndarray:
    """Return ``value`` as a read-only 1-D array, checking length and finiteness."""
    arr = np.array(value, dtype=dtype).reshape(-1)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name}: expected {n} values, got {arr.shape[0]}")
    if dtype is float and np.any(np.isnan(arr)):
        raise ValueError(f"{name}: NaN values")
    arr.setflags(write=False)
    return arr


class _Table:
    """Mixin: every dataclass field is a 1-D array of one common length."""

    _ints: tuple[str, ...] = ("bus",)
    _strs: tuple[str, ...] = ()

    def _freeze(self) -> None:
        names = [f.name for f in fields(self)]  # type: ignore[arg-type]
        n = len(np.asarray(getattr(self, names[0])).reshape(-1))
        for name in names:
            dtype = int if name in self._ints else (str if name in self._strs else float)
            arr = _frozen_array(getattr(self, name), dtype, f"{type(self).__name__}.{name}", n)
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return int(np.asarray(getattr(self, fields(self)[0].name)).shape[0])  # type: ignore[arg-type]

    def _require(self, ok: np.ndarray, what: str) -> None:
        if not np.all(ok):
            bad = np.flatnonzero(~np.asarray(ok))
            raise ValueError(f"{type(self).__name__}: {what} (rows {bad.tolist()})")


@dataclass(frozen=True)
class BusTable(_Table):
    """Buses. ``label`` is the 1-based number used in the literature."""

    label: np.ndarray
    vmin_pu: np.ndarray
    vmax_pu: np.ndarray
    _ints = ("label",)

    def __post_init__(self) -> None:
        self._freeze()
        self._require(self.vmin_pu < self.vmax_pu, "vmin_pu must be < vmax_pu")
        if len(np.unique(self.label)) != len(self.label):
            raise ValueError("BusTable: bus labels must be unique")


@dataclass(frozen=True)
class BranchTable(_Table):
    """Lines and transformers, per unit on the network base; ``tap`` is the off-nominal ratio."""

    from_bus: np.ndarray
    to_bus: np.ndarray
    r_pu: np.ndarray
    x_pu: np.ndarray
    rate_mva: np.ndarray
    tap: np.ndarray
    shift_rad: np.ndarray
    _ints = ("from_bus", "to_bus")

    def __post_init__(self) -> None:
        self._freeze()
        self._require(self.from_bus != self.to_bus, "a branch connects a bus to itself")
        self._require(self.rate_mva > 0, "rate_mva must be > 0 (use inf for unlimited)")
        self._require(self.tap > 0, "tap must be > 0")


@dataclass(frozen=True)
class LoadTable(_Table):
    """Loads at the network's base operating point (peak), consumption positive."""

    bus: np.ndarray
    p_mw: np.ndarray
    q_mvar: np.ndarray

    def __post_init__(self) -> None:
        self._freeze()


GEN_KINDS = ("thermal", "hydro", "nuclear")
_DEEP_PEAK_DEFAULTS = {"p_normal_min_mw": "p_min_mw", "p_no_oil_min_mw": "p_min_mw"}


@dataclass(frozen=True)
class GenTable(_Table):
    """Dispatchable units: limits, ramp, cost c2 P^2 + c1 P per hour, reserve price.

    ``kind`` is ``"thermal"`` (default), ``"hydro"`` or ``"nuclear"`` (a nuclear unit runs at a
    fixed output: ``p_min_mw == p_max_mw``). Thermal units retrofitted for deep peak shaving
    (seed 002 §4.1.2, docs/flexibility.md §1) add, below the normal minimum ``P_a =
    p_normal_min_mw``, the loss cost ``k1 (P_a - P)``, minus the subsidy ``hs ks (P_a - P)``, and
    below the oil-free minimum ``P_b = p_no_oil_min_mw`` the oil cost ``k2 (P_b - P)``, down to
    ``P_c = p_min_mw`` (see :func:`env.thermal_cost.deep_peak_cost_per_h`). Defaults
    (``P_a = P_b = p_min_mw``, zero coefficients) leave the plain quadratic cost. The cost
    must stay convex, ``k1 >= hs ks``, so the planners can price it as an LP. A run-of-river
    hydro unit with a river inflow ``water_inflow_mw`` (>= p_max_mw; 0 = none) spills what it
    does not turn, at ``cost_spill_per_mwh`` (:mod:`env.hydro`).
    """

    bus: np.ndarray
    p_min_mw: np.ndarray
    p_max_mw: np.ndarray
    ramp_mw_per_h: np.ndarray
    cost_c1_per_mwh: np.ndarray
    cost_c2_per_mw2h: np.ndarray
    cost_reserve_per_mwh: np.ndarray
    kind: np.ndarray | None = None
    p_normal_min_mw: np.ndarray | None = None
    p_no_oil_min_mw: np.ndarray | None = None
    cost_deep_loss_per_mwh: np.ndarray | None = None
    cost_deep_oil_per_mwh: np.ndarray | None = None
    deep_subsidy_coeff: np.ndarray | None = None
    deep_subsidy_per_mwh: np.ndarray | None = None
    water_inflow_mw: np.ndarray | None = None
    cost_spill_per_mwh: np.ndarray | None = None
    _strs = ("kind",)

    def __post_init__(self) -> None:
        n = len(np.asarray(self.bus).reshape(-1))
        for name in ("kind", "p_normal_min_mw", "p_no_oil_min_mw", "cost_deep_loss_per_mwh",
                     "cost_deep_oil_per_mwh", "deep_subsidy_coeff", "deep_subsidy_per_mwh",
                     "water_inflow_mw", "cost_spill_per_mwh"):
            if getattr(self, name) is None:
                default = (np.full(n, "thermal") if name == "kind" else
                           np.array(self.p_min_mw, dtype=float) if name in _DEEP_PEAK_DEFAULTS else np.zeros(n))
                object.__setattr__(self, name, default)
        self._freeze()
        self._require((0 <= self.p_min_mw) & (self.p_min_mw <= self.p_max_mw), "need 0 <= p_min_mw <= p_max_mw")
        self._require(self.ramp_mw_per_h > 0, "ramp_mw_per_h must be > 0")
        self._require(self.cost_c2_per_mw2h >= 0, "cost_c2_per_mw2h must be >= 0 (convex cost)")
        self._require(np.isin(self.kind, GEN_KINDS), f"kind must be one of {GEN_KINDS}")
        self._require((self.kind != "nuclear") | (self.p_min_mw == self.p_max_mw),
                      "a nuclear unit runs at a fixed output (p_min_mw == p_max_mw)")
        self._require((self.p_min_mw <= self.p_no_oil_min_mw) & (self.p_no_oil_min_mw <= self.p_normal_min_mw)
                      & (self.p_normal_min_mw <= self.p_max_mw),
                      "need p_min_mw <= p_no_oil_min_mw <= p_normal_min_mw <= p_max_mw")
        for name in ("cost_deep_loss_per_mwh", "cost_deep_oil_per_mwh", "deep_subsidy_coeff", "deep_subsidy_per_mwh"):
            self._require(getattr(self, name) >= 0, f"{name} must be >= 0")
        self._require(self.cost_deep_loss_per_mwh >= self.deep_subsidy_coeff * self.deep_subsidy_per_mwh,
                      "deep peak shaving: need k1 >= hs ks (a convex cost)")
        self._require((self.water_inflow_mw >= 0) & (self.cost_spill_per_mwh >= 0),
                      "water_inflow_mw and cost_spill_per_mwh must be >= 0")
        self._require((self.water_inflow_mw == 0) | ((self.kind == "hydro") & (self.water_inflow_mw >= self.p_max_mw)),
                      "water_inflow_mw: only hydro units have one, and it is >= p_max_mw (run of river, no reservoir)")


@dataclass(frozen=True)
class DERTable(_Table):
    """Renewable units: ``kind`` is ``"pv"`` or ``"wind"``; output = availability x p_max_mw."""

    name: np.ndarray
    bus: np.ndarray
    kind: np.ndarray
    p_max_mw: np.ndarray
    _strs = ("name", "kind")

    def __post_init__(self) -> None:
        self._freeze()
        self._require(np.isin(self.kind, ("pv", "wind")), "kind must be 'pv' or 'wind'")
        self._require(self.p_max_mw > 0, "p_max_mw must be > 0")


@dataclass(frozen=True)
class StorageTable(_Table):
    """Batteries: energy and power ratings, one-way efficiencies, initial energy."""

    bus: np.ndarray
    e_max_mwh: np.ndarray
    p_max_mw: np.ndarray
    eta_charge: np.ndarray
    eta_discharge: np.ndarray
    e_init_mwh: np.ndarray

    def __post_init__(self) -> None:
        self._freeze()
        self._require((self.e_max_mwh > 0) & (self.p_max_mw > 0), "ratings must be > 0")
        self._require((0 < self.eta_charge) & (self.eta_charge <= 1), "eta_charge must be in (0, 1]")
        self._require((0 < self.eta_discharge) & (self.eta_discharge <= 1), "eta_discharge must be in (0, 1]")
        self._require((0 <= self.e_init_mwh) & (self.e_init_mwh <= self.e_max_mwh), "need 0 <= e_init_mwh <= e_max_mwh")


@dataclass(frozen=True)
class EVCSTable(_Table):
    """EV charging stations: bus and number of charging ports."""

    name: np.ndarray
    bus: np.ndarray
    n_ports: np.ndarray
    _ints = ("bus", "n_ports")
    _strs = ("name",)

    def __post_init__(self) -> None:
        self._freeze()
        self._require(self.n_ports >= 1, "n_ports must be >= 1")


@dataclass(frozen=True)
class CompensatorTable(_Table):
    """Reactive compensators (SVC/CB): q + = capacitive (injecting)."""

    bus: np.ndarray
    q_min_mvar: np.ndarray
    q_max_mvar: np.ndarray

    def __post_init__(self) -> None:
        self._freeze()
        self._require(self.q_min_mvar <= self.q_max_mvar, "need q_min_mvar <= q_max_mvar")


def _empty(table: type) -> object:
    zeros = {f.name: np.zeros(0) for f in fields(table)}
    return table(**zeros)


@dataclass(frozen=True)
class Network:
    """One AC (radial feeder) or DC (transmission) network.

    Attributes:
        name: e.g. ``"d33"`` or ``"t30d2/f1"``.
        kind: ``"feeder"`` (AC, radial, solved by backward/forward sweep) or
            ``"transmission"`` (DC power flow by PTDF).
        base_mva, base_kv: per-unit bases of the impedances.
        slack_bus: 0-based index of the slack (feeder root / reference bus).
        v_slack_pu: voltage magnitude held at the slack.
    """

    name: str
    kind: NetworkKind
    base_mva: float
    base_kv: float
    slack_bus: int
    bus: BusTable
    branch: BranchTable
    load: LoadTable = field(default_factory=lambda: _empty(LoadTable))  # type: ignore[arg-type]
    gen: GenTable = field(default_factory=lambda: _empty(GenTable))  # type: ignore[arg-type]
    der: DERTable = field(default_factory=lambda: _empty(DERTable))  # type: ignore[arg-type]
    storage: StorageTable = field(default_factory=lambda: _empty(StorageTable))  # type: ignore[arg-type]
    evcs: EVCSTable = field(default_factory=lambda: _empty(EVCSTable))  # type: ignore[arg-type]
    compensator: CompensatorTable = field(default_factory=lambda: _empty(CompensatorTable))  # type: ignore[arg-type]
    v_slack_pu: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("feeder", "transmission"):
            raise ValueError(f"network {self.name}: kind must be 'feeder' or 'transmission', got {self.kind!r}")
        if not (self.base_mva > 0 and self.base_kv > 0):
            raise ValueError(f"network {self.name}: base_mva and base_kv must be > 0")
        n = len(self.bus)
        if not isinstance(self.slack_bus, (int, np.integer)) or not 0 <= self.slack_bus < n:
            raise ValueError(f"network {self.name}: no slack bus (slack_bus={self.slack_bus!r}, {n} buses)")
        object.__setattr__(self, "slack_bus", int(self.slack_bus))
        self._check_bus_refs(n)
        self._check_impedances()
        check_connected(self.name, n, self.branch.from_bus, self.branch.to_bus, self.slack_bus)
        if self.kind == "feeder" and len(self.branch) != n - 1:
            raise ValueError(
                f"feeder {self.name} is not radial: {len(self.branch)} branches for {n} buses "
                f"(a radial feeder has n_bus - 1 = {n - 1}); take tie lines out of service"
            )

    @property
    def n_bus(self) -> int:
        return len(self.bus)

    @property
    def z_base_ohm(self) -> float:
        return self.base_kv**2 / self.base_mva

    def _check_bus_refs(self, n: int) -> None:
        tables = {"branch.from_bus": self.branch.from_bus, "branch.to_bus": self.branch.to_bus}
        for tname in ("load", "gen", "der", "storage", "evcs", "compensator"):
            tables[f"{tname}.bus"] = getattr(self, tname).bus
        for where, buses in tables.items():
            if buses.size and (buses.min() < 0 or buses.max() >= n):
                raise ValueError(f"network {self.name}: {where} refers to a bus outside 0..{n - 1}")

    def _check_impedances(self) -> None:
        br = self.branch
        bad_x = ~(br.x_pu > 0) if self.kind == "transmission" else ~(br.x_pu >= 0)
        bad_r = ~(br.r_pu > 0) if self.kind == "feeder" else ~(br.r_pu >= 0)
        bad = np.flatnonzero(bad_x | bad_r | ~np.isfinite(br.r_pu) | ~np.isfinite(br.x_pu))
        if bad.size:
            k = int(bad[0])
            f, t = self.bus.label[br.from_bus[k]], self.bus.label[br.to_bus[k]]
            raise ValueError(
                f"network {self.name}: non-positive impedance on branch {k} ({f}-{t}): "
                f"r_pu={br.r_pu[k]}, x_pu={br.x_pu[k]}"
            )


def check_connected(name: str, n_bus: int, from_bus: np.ndarray, to_bus: np.ndarray, root: int) -> None:
    """Raise ValueError naming the first bus (1-based position) not reachable from ``root``."""
    adjacency: list[list[int]] = [[] for _ in range(n_bus)]
    for f, t in zip(from_bus.tolist(), to_bus.tolist()):
        adjacency[f].append(t)
        adjacency[t].append(f)
    seen = np.zeros(n_bus, dtype=bool)
    stack = [root]
    seen[root] = True
    while stack:
        for nb in adjacency[stack.pop()]:
            if not seen[nb]:
                seen[nb] = True
                stack.append(nb)
    if not seen.all():
        missing = np.flatnonzero(~seen)
        raise ValueError(
            f"network {name}: bus index {missing.tolist()[:10]} is disconnected from the slack bus {root}"
        )


@dataclass(frozen=True)
class Tariff:
    """Prices and penalties of a case (currency units per MWh unless stated).

    ``price_buy_per_mwh`` is a 24-entry hourly time-of-use profile for energy
    imported at the grid's supply point(s); the rest are flat.
    """

    price_buy_per_mwh: np.ndarray
    price_sell_per_mwh: float
    ev_charging_price_per_mwh: float
    ev_subsidy_per_mwh: float
    pv_cost_per_mwh: float
    wind_cost_per_mwh: float
    storage_cost_per_mwh: float
    penalty_curtailment_per_mwh: float
    penalty_load_shed_per_mwh: float
    penalty_ev_unmet_per_mwh: float
    penalty_voltage_per_puh: float
    penalty_boundary_per_mwh: float
    currency: str = "CNY"

    def __post_init__(self) -> None:
        price = _frozen_array(self.price_buy_per_mwh, float, "Tariff.price_buy_per_mwh", 24)
        object.__setattr__(self, "price_buy_per_mwh", price)
        for f in fields(self):
            if f.name in ("price_buy_per_mwh", "currency"):
                continue
            value = getattr(self, f.name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"Tariff.{f.name} must be finite and >= 0, got {value}")

    def buy_price_at(self, time_h: np.ndarray | float) -> np.ndarray:
        """Time-of-use purchase price at clock time(s) ``time_h`` in hours."""
        hour = np.floor(np.asarray(time_h, dtype=float)).astype(int) % 24
        return self.price_buy_per_mwh[hour]


@dataclass(frozen=True)
class TieLine:
    """A distribution-level tie line between two feeders (seed 002 §5.1), 0-based buses.

    Modeled as a controllable, limited active-power transfer ``|p| <= p_max_mw`` between
    ``from_bus`` of feeder ``from_feeder`` and ``to_bus`` of feeder ``to_feeder``, so that
    every feeder stays radial for the AC sweep. The simulator does not move power over it
    (its setpoint is not part of a :class:`env.dispatch.Dispatch`); the flexibility model
    (``env.flexibility``) counts it as a transfer of flexibility between the two feeders.
    """

    from_feeder: int
    from_bus: int
    to_feeder: int
    to_bus: int
    p_max_mw: float

    def __post_init__(self) -> None:
        if self.from_feeder == self.to_feeder:
            raise ValueError("TieLine: must join two different feeders")
        if not (np.isfinite(self.p_max_mw) and self.p_max_mw > 0):
            raise ValueError(f"TieLine.p_max_mw must be finite and > 0, got {self.p_max_mw}")


@dataclass(frozen=True)
class Grid:
    """A coupled T-D grid: an optional DC transmission network and radial feeders.

    A single-feeder case (``transmission is None``) buys and sells at the
    feeder root at the tariff's prices. In a T-D case feeder ``k`` hangs at
    transmission bus ``boundary_bus[k]`` (0-based): its head power is a load there.
    """

    name: str
    feeders: tuple[Network, ...]
    transmission: Network | None = None
    boundary_bus: tuple[int, ...] = ()
    tariff: Tariff | None = None
    description: str = ""
    tie_lines: tuple[TieLine, ...] = ()
    _layout: Layout | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "feeders", tuple(self.feeders))
        object.__setattr__(self, "tie_lines", tuple(self.tie_lines))
        for tie in self.tie_lines:
            for k, b in ((tie.from_feeder, tie.from_bus), (tie.to_feeder, tie.to_bus)):
                if not 0 <= k < len(self.feeders) or not 0 <= b < self.feeders[k].n_bus:
                    raise ValueError(f"grid {self.name}: tie line end (feeder {k}, bus {b}) does not exist")
        object.__setattr__(self, "boundary_bus", tuple(int(b) for b in self.boundary_bus))
        if not self.feeders:
            raise ValueError(f"grid {self.name}: needs at least one feeder")
        for f in self.feeders:
            if f.kind != "feeder":
                raise ValueError(f"grid {self.name}: {f.name} is not a feeder network")
        if self.transmission is None:
            if len(self.feeders) != 1 or self.boundary_bus:
                raise ValueError(f"grid {self.name}: without transmission, exactly one feeder and no boundary buses")
        else:
            if self.transmission.kind != "transmission":
                raise ValueError(f"grid {self.name}: transmission network must have kind 'transmission'")
            if len(self.boundary_bus) != len(self.feeders):
                raise ValueError(f"grid {self.name}: one boundary bus per feeder required")
            n = self.transmission.n_bus
            if any(not 0 <= b < n for b in self.boundary_bus):
                raise ValueError(f"grid {self.name}: boundary bus outside 0..{n - 1}")
        if self.tariff is None:
            raise ValueError(f"grid {self.name}: a tariff is required")
        object.__setattr__(self, "_layout", grid_layout(self))     # derived once (every reset reads it)

    @property
    def is_td(self) -> bool:
        return self.transmission is not None

    @property
    def layout(self) -> Layout:
        """The grid's uncertain sources, named for the scenario layer (built once, at construction)."""
        assert self._layout is not None
        return self._layout


def _feeder_prefix(grid: Grid, k: int) -> str:
    return f"f{k}" if grid.is_td else "f0"


def grid_layout(grid: Grid) -> Layout:
    """Build the scenario ``Layout`` of ``grid``: loads, PV, wind, EV stations, boundaries.

    Names: feeder items ``f<k>_b<label>``, transmission items ``t_b<label>``.
    """
    load_names: list[str] = []
    load_p: list[float] = []
    units: dict[str, tuple[list[str], list[float]]] = {"pv": ([], []), "wind": ([], [])}
    evcs_names: list[str] = []
    evcs_ports: list[int] = []
    networks = [(_feeder_prefix(grid, k), f) for k, f in enumerate(grid.feeders)]
    if grid.transmission is not None:
        networks.append(("t", grid.transmission))
    for prefix, net in networks:
        for bus, p in zip(net.load.bus, net.load.p_mw):
            load_names.append(f"{prefix}_b{net.bus.label[bus]}")
            load_p.append(float(p))
        for name, kind, p in zip(net.der.name, net.der.kind, net.der.p_max_mw):
            units[str(kind)][0].append(f"{prefix}_{name}")
            units[str(kind)][1].append(float(p))
        for name, ports in zip(net.evcs.name, net.evcs.n_ports):
            evcs_names.append(f"{prefix}_{name}")
            evcs_ports.append(int(ports))
    boundary = tuple(f"f{k}" for k in range(len(grid.feeders))) if grid.is_td else ()
    return Layout(
        case=grid.name,
        load_names=tuple(load_names),
        load_p_mw=np.array(load_p),
        pv_names=tuple(units["pv"][0]),
        pv_p_max_mw=np.array(units["pv"][1]),
        wind_names=tuple(units["wind"][0]),
        wind_p_max_mw=np.array(units["wind"][1]),
        evcs_names=tuple(evcs_names),
        evcs_n_ports=np.array(evcs_ports, dtype=int),
        boundary_names=boundary,
    )
