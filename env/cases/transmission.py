"""Branch arrays of a pandapower transmission network, in MATPOWER's per unit.

pandapower's own converter (``to_ppc``) turns lines and transformers into
MATPOWER branch rows, so the series impedances, off-nominal taps and phase
shifts here follow exactly the conventions of ``pp.rundcpp`` / ``pp.runpp``
(per unit on ``net.sn_mva``). Only in-service branches are kept.

Bus order: our 0-based bus k is the k-th entry of ``sorted(net.bus.index)``;
``bus_label`` holds the literature's 1-based number of each bus (the bus name
when every name is an integer, as in pandapower's MATPOWER cases, else
``index + 1``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["UNLIMITED_RATE_MVA", "TransmissionArrays", "transmission_arrays"]

#: Ratings at or above this are MATPOWER's "no limit" placeholder (case118
#: uses 9900 MVA on every branch); they become ``inf``, like a rateA of 0.
UNLIMITED_RATE_MVA = 9900.0

_BRANCH_ELEMENTS = ("line", "trafo", "impedance")


@dataclass(frozen=True, eq=False)
class TransmissionArrays:
    """In-service branches of a transmission network as MATPOWER-style arrays.

    Attributes:
        bus_label: (n_bus,) 1-based literature bus numbers, in our 0-based bus order.
        from_bus, to_bus: (n_branch,) 0-based branch ends (MATPOWER's F_BUS/T_BUS;
            for transformers the tap side is the from bus).
        x_pu, r_pu: (n_branch,) series reactance and resistance, per unit on ``base_mva``.
        tap: (n_branch,) off-nominal turns ratio at the from end (1 for lines).
        shift_rad: (n_branch,) phase-shift angle in radians (MATPOWER's SHIFT).
        rate_mva: (n_branch,) long-term rating (rateA), ``inf`` when the case gives none.
        element: (n_branch,) the pandapower table each branch comes from ("line", "trafo", "impedance").
        element_index: (n_branch,) the row index in that pandapower table.
        slack_bus: 0-based slack (reference) bus.
        base_mva: system base power (MVA).
    """

    bus_label: np.ndarray
    from_bus: np.ndarray
    to_bus: np.ndarray
    x_pu: np.ndarray
    tap: np.ndarray
    shift_rad: np.ndarray
    r_pu: np.ndarray
    rate_mva: np.ndarray
    element: np.ndarray
    element_index: np.ndarray
    slack_bus: int
    base_mva: float

    def __post_init__(self) -> None:
        n_bus = self.bus_label.shape[0]
        n_branch = self.from_bus.shape[0]
        if self.bus_label.ndim != 1 or len(set(self.bus_label.tolist())) != n_bus:
            raise ValueError("TransmissionArrays.bus_label: must be a 1-D array of unique labels")
        for name in ("from_bus", "to_bus", "x_pu", "tap", "shift_rad", "r_pu", "rate_mva", "element",
                     "element_index"):
            arr = getattr(self, name)
            if arr.shape != (n_branch,):
                raise ValueError(f"TransmissionArrays.{name}: expected shape ({n_branch},), got {arr.shape}")
        for name in ("from_bus", "to_bus"):
            arr = getattr(self, name)
            if np.any((arr < 0) | (arr >= n_bus)):
                raise ValueError(f"TransmissionArrays.{name}: bus indices must lie in [0, {n_bus})")
        for name in ("x_pu", "tap", "shift_rad", "r_pu"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"TransmissionArrays.{name}: must be finite")
        if np.any(self.tap <= 0):
            raise ValueError("TransmissionArrays.tap: must be > 0")
        if np.any(np.isnan(self.rate_mva)) or np.any(self.rate_mva <= 0):
            raise ValueError("TransmissionArrays.rate_mva: must be > 0 (inf for unlimited)")
        if not 0 <= self.slack_bus < n_bus:
            raise ValueError(f"TransmissionArrays.slack_bus: {self.slack_bus} is not a bus index in [0, {n_bus})")
        if not self.base_mva > 0:
            raise ValueError(f"TransmissionArrays.base_mva: must be > 0, got {self.base_mva}")
        for name in ("bus_label", "from_bus", "to_bus", "x_pu", "tap", "shift_rad", "r_pu", "rate_mva",
                     "element", "element_index"):
            getattr(self, name).setflags(write=False)


def _bus_labels(net: Any, bus_index: np.ndarray) -> np.ndarray:
    """Literature bus numbers: integer bus names if all are integers, else index + 1."""
    names = net.bus.loc[bus_index, "name"].tolist()
    try:
        labels = np.array([int(str(n)) for n in names], dtype=int)
    except (TypeError, ValueError):
        return bus_index.astype(int) + 1
    return labels if len(set(labels.tolist())) == labels.size else bus_index.astype(int) + 1


def _branch_origin(net: Any, branch_lookup: dict[str, tuple[int, int]], n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Pandapower table and row index of every ppc branch row."""
    element = np.full(n_rows, "", dtype=object)
    element_index = np.full(n_rows, -1, dtype=int)
    for kind, (start, stop) in branch_lookup.items():
        if kind in _BRANCH_ELEMENTS:
            table = net[kind]
            if len(table) != stop - start:
                raise ValueError(f"transmission_arrays: {kind} has {len(table)} rows but {stop - start} branches")
            element[start:stop] = kind
            element_index[start:stop] = table.index.to_numpy()
        else:
            element[start:stop] = kind
    return element, element_index


def _rate_mva(net: Any, rate_a: np.ndarray, element: np.ndarray, unlimited_rate_mva: float) -> np.ndarray:
    """rateA (MVA); inf for 0, NaN, >= ``unlimited_rate_mva``, impedance elements and tables without
    ``max_loading_percent``."""
    rate = np.asarray(rate_a, dtype=float).copy()
    for kind in ("line", "trafo"):
        if "max_loading_percent" not in net[kind].columns:
            rate[element == kind] = np.inf  # pandapower then writes a placeholder of 100 MVA
    rate[element == "impedance"] = np.inf  # pandapower writes the impedance's base sn_mva, not a rating
    unlimited = np.isnan(rate) | (rate <= 0) | (rate >= unlimited_rate_mva)
    rate[unlimited] = np.inf
    return rate


def transmission_arrays(net: Any, unlimited_rate_mva: float = UNLIMITED_RATE_MVA) -> TransmissionArrays:
    """Convert a pandapower transmission net (lines, transformers, impedances) to branch arrays.

    Uses ``pandapower.converter.pypower.to_ppc`` (flat start, voltage angles and
    transformer shifts on, as ``rundcpp`` does) on a copy of ``net`` and keeps
    the in-service branch rows of its internal case (``ppci``, whose
    ``branch_is`` ties rows to pandapower elements): ``r, x`` (BR_R, BR_X), ``tap`` (TAP, 0 -> 1),
    ``shift_rad = SHIFT pi / 180``, ``rate_mva`` (RATE_A).

    Args:
        net: a pandapower network (e.g. ``pandapower.networks.case118()``); not modified.
        unlimited_rate_mva: ratings at or above this are treated as "no limit" (inf).

    Raises:
        ValueError: out-of-service buses, elements that add auxiliary buses
            (3-winding transformers, xwards, ...), merged buses (bus-bus
            switches), or not exactly one slack.
    """
    from pandapower.converter.pypower.to_ppc import to_ppc
    from pandapower.pypower.idx_brch import BR_R, BR_X, F_BUS, RATE_A, SHIFT, T_BUS, TAP
    from pandapower.pypower.idx_bus import BUS_TYPE, REF

    if not net.bus.in_service.all():
        raise ValueError(
            "transmission_arrays: out-of-service buses are not supported; drop them from the net first "
            f"(bus index {net.bus.index[~net.bus.in_service.to_numpy()][0]})"
        )
    net = copy.deepcopy(net)
    ppci = to_ppc(net, init="flat", calculate_voltage_angles=True, mode="pf")
    bus_index = np.sort(net.bus.index.to_numpy())
    n_bus = bus_index.size
    ppci_row = np.asarray(net._pd2ppc_lookups["bus"])[bus_index]
    n_ppci = ppci["bus"].shape[0]
    if np.unique(ppci_row).size != n_bus:
        raise ValueError("transmission_arrays: merged buses (closed bus-bus switches) are not supported")
    if n_ppci < n_bus:
        lost = bus_index[ppci_row >= n_ppci]
        raise ValueError(f"transmission_arrays: bus index {lost[0]} is not supplied (disconnected from the slack)")
    if n_ppci > n_bus:
        raise ValueError(
            "transmission_arrays: elements with auxiliary buses (trafo3w, xward, ...) are not supported; "
            "only lines, 2-winding transformers and impedances are"
        )
    ours = np.empty(n_bus, dtype=int)
    ours[ppci_row] = np.arange(n_bus)

    # ppci keeps only in-service branches: rows of the full branch list where branch_is holds
    in_service = np.asarray(ppci["internal"]["branch_is"], dtype=bool)
    element, element_index = _branch_origin(net, net._pd2ppc_lookups.get("branch", {}), in_service.size)
    element, element_index = element[in_service], element_index[in_service]
    branch = np.real(ppci["branch"])
    if branch.shape[0] != element.size:
        raise ValueError("transmission_arrays: pandapower's branch lookup does not match its branch table")
    unsupported = sorted(set(element.tolist()) - set(_BRANCH_ELEMENTS))
    if unsupported:
        raise ValueError(f"transmission_arrays: unsupported in-service branch elements {unsupported}")
    tap = branch[:, TAP].copy()
    tap[tap == 0] = 1.0

    ref = np.flatnonzero(np.real(ppci["bus"][:, BUS_TYPE]) == REF)
    if ref.size != 1:
        raise ValueError(f"transmission_arrays: expected exactly one slack bus, found {ref.size}")

    return TransmissionArrays(
        bus_label=_bus_labels(net, bus_index),
        from_bus=ours[branch[:, F_BUS].astype(int)],
        to_bus=ours[branch[:, T_BUS].astype(int)],
        x_pu=branch[:, BR_X].copy(),
        tap=tap,
        shift_rad=np.deg2rad(branch[:, SHIFT]),
        r_pu=branch[:, BR_R].copy(),
        rate_mva=_rate_mva(net, branch[:, RATE_A], element, unlimited_rate_mva),
        element=element.astype(str),
        element_index=element_index,
        slack_bus=int(ours[ref[0]]),
        base_mva=float(ppci["baseMVA"]),
    )
