"""Fixtures for the scenario tests: hand-built layouts (no dependency on ``env``)."""

from __future__ import annotations

import numpy as np
import pytest

from scenarios import Layout

# IEEE 33-bus Baran-Wu loads (kW) at buses 2..33, total 3715 kW; seed 003 scales P by 0.9333.
IEEE33_P_KW = np.array([100, 90, 120, 60, 60, 200, 200, 60, 60, 45, 60, 60, 120, 60, 60, 60,
                        90, 90, 90, 90, 90, 90, 420, 420, 60, 60, 60, 120, 200, 150, 210, 60], dtype=float)
EVCS_BUSES = (6, 9, 12, 15, 17, 20, 22, 23, 28, 30, 32)


def feeder_loads(prefix: str) -> tuple[tuple[str, ...], np.ndarray]:
    names = tuple(f"{prefix}_b{b}" for b in range(2, 34))
    return names, IEEE33_P_KW * 0.9333 / 1000.0


def d33_layout() -> Layout:
    """d33-like: 32 loads, PV at 14/25/30 (0.5 MW), wind at 17/24/32 (0.4 MW), 11 EVCS x 20 ports."""
    names, p_mw = feeder_loads("f0")
    return Layout(
        case="d33", load_names=names, load_p_mw=p_mw,
        pv_names=("f0_pv14", "f0_pv25", "f0_pv30"), pv_p_max_mw=np.array([0.5, 0.5, 0.5]),
        wind_names=("f0_w17", "f0_w24", "f0_w32"), wind_p_max_mw=np.array([0.4, 0.4, 0.4]),
        evcs_names=tuple(f"f0_ev{b}" for b in EVCS_BUSES), evcs_n_ports=np.full(len(EVCS_BUSES), 20))


def td_layout() -> Layout:
    """T-D-like: 20 transmission loads, two d33 feeders behind 2 boundaries, 3 wind farms of 40 MW."""
    t_names = tuple(f"t_b{b}" for b in range(1, 21))
    t_p = np.full(20, 189.2 / 20)
    f0, p0 = feeder_loads("f0")
    f1, p1 = feeder_loads("f1")
    wind = ("t_w7", "t_w11", "t_w14") + tuple(f"f{k}_w{b}" for k in (0, 1) for b in (17, 24, 32))
    return Layout(
        case="t30d2", load_names=t_names + f0 + f1, load_p_mw=np.concatenate([t_p, p0, p1]),
        wind_names=wind, wind_p_max_mw=np.array([40.0, 40.0, 40.0] + [3.14 / 3] * 6),
        evcs_names=tuple(f"f{k}_ev{b}" for k in (0, 1) for b in EVCS_BUSES),
        evcs_n_ports=np.full(2 * len(EVCS_BUSES), 20), boundary_names=("t15_f0", "t23_f1"))


@pytest.fixture(scope="session")
def d33() -> Layout:
    return d33_layout()


@pytest.fixture(scope="session")
def td() -> Layout:
    return td_layout()
