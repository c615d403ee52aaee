"""Named, versioned grid cases that load offline: ``load_case("d33")``.

| name      | what |
|-----------|------|
| d33       | IEEE 33-bus feeder, seed 003's variant, EV stations, PV, wind, storage, 3 compensators |
| d69       | IEEE 69-bus feeder with the same kinds of DER |
| t30d2     | IEEE 30 + two 33-bus feeders at T-buses 15 and 23 (seed 000) |
| t30d5     | IEEE 30 + five 33-bus ADNs with PV and storage at T-buses 15, 17, 21, 23, 30 (seed 001, P2P) |
| t118d10   | IEEE 118 + ten 33-bus feeders (seed 000) |
| t14d2     | IEEE 14 + two IEEE 13 node feeders at T-buses 14 and 13, hydro, nuclear, deep peak shaving (seed 002) |
"""

from __future__ import annotations

from functools import lru_cache

from env.cases.feeders import bare_feeder, feeder_from_file, load_tariff
from env.network import Grid

CASE_VERSION = "1"


def _feeder_case(name: str) -> Grid:
    from env.cases.feeders import read_toml

    feeder = feeder_from_file(f"{name}.toml", name)       # checks the file's keys and kinds
    meta = read_toml(f"{name}.toml")
    if "tariff" not in meta:
        raise ValueError(f"{name}.toml: top level: missing key 'tariff' (a single-feeder case needs one)")
    return Grid(name=name, feeders=(feeder,), tariff=load_tariff(meta["tariff"]), description=meta["description"])


def _td_case(name: str) -> Grid:
    from env.cases.td import td_case

    return td_case(f"{name}.toml", name)


_CASES = {"d33": _feeder_case, "d69": _feeder_case, "t30d2": _td_case, "t30d5": _td_case, "t118d10": _td_case,
          "t14d2": _td_case}


def case_names() -> tuple[str, ...]:
    """The names ``load_case`` accepts."""
    return tuple(_CASES)


@lru_cache(maxsize=None)
def load_case(name: str) -> Grid:
    """Load a named case (offline; the result is immutable and cached).

    Raises:
        ValueError: for an unknown name; the message lists the known names.
    """
    if name not in _CASES:
        raise ValueError(f"unknown case {name!r}; known cases: {', '.join(_CASES)}")
    return _CASES[name](name)


__all__ = ["CASE_VERSION", "bare_feeder", "case_names", "load_case"]
