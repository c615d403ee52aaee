"""SimBench grids with their year of 15-min profiles as named cases (docs/data.md).

The ``simbench`` package (optional extra ``simbench``) ships every SimBench grid and its 2016
profiles inside the package, so nothing is downloaded at run time. A SimBench net goes through
:func:`env.importers.from_pandapower` after :func:`prepare_net` has made it a plain radial feeder:

* **Closed bus-bus switches** (the substation's circuit breakers) are closed: the two buses they
  join become one (``pandapower.toolbox.fuse_buses``). Open line switches take their line out
  (as for any pandapower net).
* **Parallel transformers** between the same two buses (the two HV/MV transformers feeding the
  MV busbar, the feeder's point of common coupling) become one equivalent transformer with
  ``parallel = n``: pandapower divides the series impedance by ``n`` and multiplies the rating.
  They must be identical (rating, voltages, short-circuit voltages), else the net is refused.
* **Static generator types** map to the env's DER kinds (:data:`SGEN_KIND`): ``PV_*`` and
  ``lv_RES`` (an LV grid's aggregated renewables; their SimBench profiles are solar-shaped,
  zero at night) are PV; ``Wind_*`` wind; every other type (``Biomass_*``, ``Hydro_*``, ...)
  the env's *wind* kind, i.e. a non-solar infeed whose measured output is played as is and
  whose forecast carries the wind forecast's errors. Capacity is the SimBench ``p_mw`` (its
  profiles are per unit of it).
* EV stations: SimBench has none and the env needs at least one, so :data:`EV_PORTS_PER_STATION`
  ports are added at the buses named in the case (chosen, stated in :data:`SIMBENCH_CASES`).

The profiles (:func:`case_profiles`) are SimBench's own: for a bus's load, the column
``load_f0_b<label>`` is ``sum_i profile_i(t) p_mw_i / sum_i p_mw_i`` over the SimBench loads at
that bus, so the env's load (multiplier x the bus's summed ``p_mw``) is SimBench's absolute
active power. Reactive power follows the env's constant power factor per load (SimBench's own
reactive profiles are not used). PV / wind columns are the sgen profiles per unit of ``p_mw``
(clipped to [0, 1]). The index is SimBench's 2016 calendar: row ``k`` is
``2016-01-01 00:00 + 15 min * k`` (35,136 rows), i.e. central European standard time all year
(SimBench labels its rows in local time with daylight saving: from 27 March 03:00 to 30 October
its labels are one hour ahead of ours, and 27 March lacks 02:00..02:45); a step longer than
15 min averages the 15-min values it covers (``scenarios.measured.day_of``), a shorter one holds
the 15-min value.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from env.network import EVCSTable, Grid

SIMBENCH_YEAR = 2016
SIMBENCH_DT_MINUTES = 15
EV_PORTS_PER_STATION = 10   # chosen: ports of each EV station added to a SimBench feeder (it has none)


@dataclass(frozen=True)
class SimbenchCase:
    """A named SimBench case: the SimBench code, the feeder buses (pandapower indices) where EV
    stations are added, and a description."""

    code: str
    ev_buses: tuple[int, ...]
    description: str

    def __post_init__(self) -> None:
        if not self.code or not self.ev_buses:
            raise ValueError("SimbenchCase: needs a code and at least one EV bus")


SIMBENCH_CASES = {
    "sb_mv_rural": SimbenchCase(
        "1-MV-rural--0-sw", (20, 60, 90),
        "SimBench 1-MV-rural--0-sw: 20 kV rural feeder behind two 25 MVA 110/20 kV transformers, 96 loads, "
        "wind, PV, biomass, hydro and LV renewables; 2016 15-min profiles; 3 EV stations added (buses 20, 60, 90)"),
    "sb_mv_semiurb": SimbenchCase(
        "1-MV-semiurb--0-sw", (20, 60, 100),
        "SimBench 1-MV-semiurb--0-sw: 20 kV semi-urban feeder behind two 63 MVA 110/20 kV transformers; "
        "2016 15-min profiles; 3 EV stations added (buses 20, 60, 100)"),
}

SGEN_KIND = {"pv": "PV", "lv_res": "PV", "wind": "WP"}   # by type prefix (lower case); any other -> "WP"


def _require_simbench() -> Any:
    try:
        import simbench
    except ImportError:
        raise ValueError("SimBench cases need the simbench package: pip install 'gridroll[simbench]'") from None
    return simbench


def sgen_type(simbench_type: str) -> str:
    """The pandapower sgen type the importer reads (``PV`` or ``WP``) for a SimBench sgen type."""
    prefix = str(simbench_type).split("_MV")[0].split("_HV")[0].lower()
    return SGEN_KIND.get(prefix, "WP")


def _fuse_closed_bus_switches(net: Any) -> None:
    import pandapower.toolbox as tb

    while True:
        sw = net.switch[(net.switch.et == "b") & net.switch.closed.astype(bool)]
        if not len(sw):
            return
        keep, drop = int(sw.bus.iloc[0]), int(sw.element.iloc[0])
        net.switch = net.switch.drop(index=sw.index[0])
        if keep != drop:
            tb.fuse_buses(net, keep, drop)


def _merge_parallel_trafos(net: Any) -> None:
    trafo = net.trafo[net.trafo.in_service.astype(bool)]
    same = ["sn_mva", "vn_hv_kv", "vn_lv_kv", "vk_percent", "vkr_percent"]
    for _, group in trafo.groupby(["hv_bus", "lv_bus"]):
        if len(group) < 2:
            continue
        if any(group[c].nunique() > 1 for c in same):
            raise ValueError(f"parallel transformers {list(group.name)} differ in {same}; cannot take them as one")
        first = group.index[0]
        net.trafo.loc[first, "parallel"] = int(group.parallel.sum())
        net.trafo = net.trafo.drop(index=group.index[1:])
        net.switch = net.switch[~((net.switch.et == "t") & net.switch.element.isin(group.index[1:]))]


def prepare_net(original: Any) -> Any:
    """A copy of SimBench net ``original`` that :func:`env.importers.feeder_from_pandapower` accepts
    (the module docstring says what changes); without SimBench's year of profiles."""
    profiles = original.pop("profiles", None)            # 35,136 rows per profile: not copied
    try:
        net = copy.deepcopy(original)
    finally:
        if profiles is not None:
            original["profiles"] = profiles
    _fuse_closed_bus_switches(net)
    _merge_parallel_trafos(net)
    net.sgen["simbench_type"] = net.sgen["type"]
    net.sgen["type"] = [sgen_type(t) for t in net.sgen["type"]]
    net.sgen["name"] = [f"sg{i}" for i in net.sgen.index]
    net.sgen["max_p_mw"] = np.nan          # capacity = p_mw (the profiles are per unit of it)
    return net


@lru_cache(maxsize=4)
def _simbench_net(code: str) -> Any:
    import warnings

    simbench = _require_simbench()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return simbench.get_simbench_net(code)


def simbench_grid(name: str) -> Grid:
    """The :class:`Grid` of named SimBench case ``name`` (a single radial feeder, ``tariff_dso``)."""
    from env.importers import from_pandapower

    case = SIMBENCH_CASES[name]
    net = prepare_net(_simbench_net(case.code))
    grid = from_pandapower(net, name=name, tariff="tariff_dso", description=case.description)
    feeder = grid.feeders[0]
    order = np.sort(net.bus.index.to_numpy())
    ours = {int(b): k for k, b in enumerate(order)}
    missing = [b for b in case.ev_buses if b not in ours]
    if missing:
        raise ValueError(f"SimBench case {name}: EV buses {missing} are not buses of {case.code}")
    evcs = EVCSTable(name=[f"ev{b}" for b in case.ev_buses], bus=np.array([ours[b] for b in case.ev_buses]),
                     n_ports=np.full(len(case.ev_buses), EV_PORTS_PER_STATION))
    return replace(grid, feeders=(replace(feeder, evcs=evcs),))


def _timestamps(frame: pd.DataFrame) -> pd.DatetimeIndex:
    """Row ``k`` at ``2016-01-01 00:00 + 15 min * k`` (standard time, CET): SimBench's labels are
    local time with daylight saving, one hour ahead of this from 27 March 03:00 to 30 October."""
    labels = pd.DatetimeIndex(pd.to_datetime(frame["time"], format="%d.%m.%Y %H:%M"))
    start = pd.Timestamp(f"{SIMBENCH_YEAR}-01-01")
    uniform = pd.date_range(start, periods=len(frame), freq=f"{SIMBENCH_DT_MINUTES}min")
    shift = np.asarray(labels - uniform)
    if len(frame) != 366 * 96 or not np.isin(shift, [np.timedelta64(0, "h"), np.timedelta64(1, "h")]).all():
        raise ValueError("SimBench profiles are not the 15-min year 2016 (local time, daylight saving)")
    return uniform


@lru_cache(maxsize=4)
def _case_profiles_15min(name: str) -> pd.DataFrame:
    case = SIMBENCH_CASES[name]
    raw = _simbench_net(case.code)
    net = prepare_net(raw)
    from env.cases import load_case

    grid = load_case(name)
    feeder, layout = grid.feeders[0], grid.layout        # a single feeder: the layout lists its items in order
    ours = {int(b): k for k, b in enumerate(np.sort(net.bus.index.to_numpy()))}
    load_name = dict(zip((int(b) for b in feeder.load.bus), layout.load_names))
    unit_name = {**dict(zip(feeder.der.name[feeder.der.kind == "pv"], layout.pv_names)),
                 **dict(zip(feeder.der.name[feeder.der.kind == "wind"], layout.wind_names))}
    columns: dict[str, np.ndarray] = {}
    load_profiles = raw.profiles["load"]
    index = _timestamps(load_profiles)
    loads = net.load[net.load.in_service.astype(bool)]
    for bus, rows in loads.groupby("bus"):
        weight = (rows.p_mw * rows.scaling).to_numpy()
        absolute = sum(w * load_profiles[f"{p}_pload"].to_numpy() for w, p in zip(weight, rows.profile))
        columns[f"load_{load_name[ours[int(bus)]]}"] = absolute / weight.sum()
    renewables = raw.profiles["renewables"]
    if not _timestamps(renewables).equals(index):
        raise ValueError("SimBench load and renewables profiles have different calendars")
    sgen = net.sgen[net.sgen.in_service.astype(bool)]
    for name_, kind, profile in zip(sgen.name, sgen.type, sgen.profile):
        prefix = "pv" if kind == "PV" else "wind"
        columns[f"{prefix}_{unit_name[name_]}"] = np.clip(renewables[profile].to_numpy(dtype=float), 0.0, 1.0)
    return pd.DataFrame(columns, index=index)


def case_profiles(name: str, dt_minutes: int = SIMBENCH_DT_MINUTES) -> pd.DataFrame:
    """SimBench's 2016 profiles of case ``name`` as a per-unit profile table (the format of
    docs/data.md, columns per load and unit); for steps shorter than 15 min each 15-min value is
    held (longer steps are averaged by ``scenarios.measured.day_of``)."""
    frame = _case_profiles_15min(name)
    if dt_minutes < SIMBENCH_DT_MINUTES:
        fine = pd.date_range(frame.index[0], periods=len(frame) * SIMBENCH_DT_MINUTES // dt_minutes,
                             freq=f"{dt_minutes}min")
        frame = frame.reindex(fine, method="ffill")
    return frame


def has_profiles(case: str) -> bool:
    """Whether named case ``case`` ships its own profiles (``--date`` alone plays them)."""
    return isinstance(case, str) and case in SIMBENCH_CASES


__all__ = ["EV_PORTS_PER_STATION", "SGEN_KIND", "SIMBENCH_CASES", "SimbenchCase", "case_profiles", "has_profiles",
           "prepare_net", "sgen_type", "simbench_grid"]
