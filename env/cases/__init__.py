"""Named, versioned grid cases that load offline: ``load_case("d33")``.

| name      | what |
|-----------|------|
| d33       | IEEE 33-bus feeder, seed 003's variant, EV stations, PV, wind, storage, 3 compensators |
| d69       | IEEE 69-bus feeder with the same kinds of DER |
| t30d2     | IEEE 30 + two 33-bus feeders at T-buses 15 and 23 (seed 000) |
| t30d5     | IEEE 30 + five 33-bus ADNs with PV and storage at T-buses 15, 17, 21, 23, 30 (seed 001, P2P) |
| t118d10   | IEEE 118 + ten 33-bus feeders (seed 000) |
| t14d2     | IEEE 14 + two IEEE 13 node feeders at T-buses 14 and 13, hydro, nuclear, deep peak shaving (seed 002) |
| sb_mv_rural, sb_mv_semiurb | SimBench MV feeders with their 2016 profiles (env/simbench.py; listed when the ``simbench`` extra is installed) |
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


def _simbench_case(name: str) -> Grid:
    from env.simbench import simbench_grid

    return simbench_grid(name)


def _simbench_names() -> tuple[str, ...]:
    """The SimBench cases, when the optional ``simbench`` package is installed."""
    import importlib.util

    if importlib.util.find_spec("simbench") is None:
        return ()
    from env.simbench import SIMBENCH_CASES

    return tuple(SIMBENCH_CASES)


_CASES = {"d33": _feeder_case, "d69": _feeder_case, "t30d2": _td_case, "t30d5": _td_case, "t118d10": _td_case,
          "t14d2": _td_case, **{name: _simbench_case for name in _simbench_names()}}


def case_names() -> tuple[str, ...]:
    """The names ``load_case`` accepts."""
    return tuple(_CASES)


GRID_FILE_SUFFIXES = (".toml", ".m", ".mat", ".json")


def is_grid_file(case: str) -> bool:
    """Whether ``case`` names a user's grid file (a coupling spec or a MATPOWER / pandapower file)."""
    return isinstance(case, str) and case.lower().endswith(GRID_FILE_SUFFIXES)


def load_case(name: str) -> Grid:
    """Load a named case (offline; the result is immutable and cached), or a user's grid file:
    a coupling spec ``path/to/spec.toml`` or a radial feeder ``.m`` / ``.mat`` / ``.json``
    (:func:`env.importers.load_grid_file`, docs/data.md; read anew on every call).

    Raises:
        ValueError: for an unknown name; the message lists the known names.
    """
    if is_grid_file(name) and name not in _CASES:
        from env.importers import load_grid_file

        return load_grid_file(name)
    return _named_case(name)


@lru_cache(maxsize=None)
def _named_case(name: str) -> Grid:
    if name not in _CASES:
        raise ValueError(f"unknown case {name!r}; known cases: {', '.join(_CASES)}, or a grid file "
                         f"({', '.join(GRID_FILE_SUFFIXES)})")
    return _CASES[name](name)


__all__ = ["CASE_VERSION", "GRID_FILE_SUFFIXES", "bare_feeder", "case_names", "is_grid_file", "load_case"]
