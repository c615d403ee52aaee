"""Flexibility supply and margins (seed 002 §4.3-§4.4) and ``gridroll flex``."""

from __future__ import annotations

import numpy as np
import pytest

import env
from env.flex_supply import FlexSchedule, margins, storage_supply, unit_supply


@pytest.fixture(scope="module")
def grid():
    return env.load_case("t14d2")


def _schedule(grid, T: int = 24, rng_seed: int = 0) -> FlexSchedule:
    rng = np.random.default_rng(rng_seed)
    g = grid.transmission.gen
    nd = sum(len(f.der) for f in grid.feeders)
    ns = sum(len(f.storage) for f in grid.feeders)
    ne = sum(len(f.evcs) for f in grid.feeders)
    avail = rng.uniform(0, 1, (T, nd))
    return FlexSchedule(
        dt_h=1.0, thermal_p_mw=rng.uniform(g.p_min_mw, g.p_max_mw, (T, len(g))), der_avail_mw=avail,
        der_used_mw=avail * rng.uniform(0.5, 1, (T, nd)), storage_p_mw=rng.uniform(-1, 1, (T, ns)),
        storage_e_mwh=rng.uniform(0, 3, (T, ns)), ev_p_mw=np.full((T, ne), 0.03), ev_lo_mw=np.zeros((T, ne)),
        ev_hi_mw=np.full((T, ne), 0.066), head_p_mw=rng.uniform(-4.9, 4.9, (T, len(grid.feeders))))


def test_unit_supply_known_answers() -> None:
    kind = np.array(["thermal", "hydro", "nuclear"])
    up, dn = unit_supply(kind, np.array([100.0, 90.0, 40.0]), np.array([50.0, 0.0, 40.0]),
                         np.array([200.0, 100.0, 40.0]), np.array([60.0, 50.0, 1.0]), 1.0)
    assert up.tolist() == [60.0, 10.0, 0.0] and dn.tolist() == [50.0, 50.0, 0.0]


def test_storage_supply_respects_energy() -> None:
    up, dn = storage_supply(np.array([0.0, 0.5]), np.array([0.2, 3.0]), np.array([1.0, 1.0]),
                            np.array([3.0, 3.0]), np.array([1.0, 1.0]), np.array([1.0, 1.0]), 1.0)
    assert up.tolist() == pytest.approx([0.2, 1.5])          # empty-ish: 0.2 MWh in an hour; charging 0.5 -> +1
    assert dn.tolist() == pytest.approx([1.0, 0.0])          # full: cannot charge more than 0.5 -> 0


def test_margins_are_supply_minus_demand_and_the_boundary_is_respected(grid) -> None:
    s = _schedule(grid)
    T, nf = s.n_steps, len(grid.feeders)
    rng = np.random.default_rng(1)
    dtu, dtd = rng.uniform(0, 80, T), -rng.uniform(0, 80, T)
    dfu, dfd = rng.uniform(0, 2, (T, nf)), -rng.uniform(0, 2, (T, nf))
    p_b = 5.0
    m = margins(grid, s, dtu, dtd, dfu, dfd, p_b)
    # before the tie line: supply - demand; the tie moves margin between the two feeders only
    before_up, before_dn = m.feeder_supply_up - dfu, m.feeder_supply_down + dfd
    tie = grid.tie_lines[0]
    assert m.feeder_margin_up == pytest.approx(before_up + np.column_stack([m.tie_up[:, 0], -m.tie_up[:, 0]]))
    assert m.feeder_margin_down == pytest.approx(before_dn + np.column_stack([m.tie_down[:, 0], -m.tie_down[:, 0]]))
    assert np.all(np.abs(m.tie_up) <= tie.p_max_mw + 1e-12)
    t_up = m.supply_up["thermal"] + m.supply_up["hydro"] + m.supply_up["nuclear"]
    assert m.transmission_margin_up == pytest.approx(t_up - dtu)
    assert np.all(m.supply_up["nuclear"] == 0) and np.all(m.supply_down["nuclear"] == 0)
    assert m.supply_up["distribution"] == pytest.approx(m.feeder_supply_up.sum(axis=1))
    # boundary exchange: within the feeder's positive margin and the interface limit
    assert np.all(m.boundary_up <= np.maximum(m.feeder_margin_up, 0) + 1e-12)
    assert np.all(m.boundary_down <= np.maximum(m.feeder_margin_down, 0) + 1e-12)
    assert np.all(s.head_p_mw - m.boundary_up >= -p_b - 1e-12)          # exporting up flex: |P| <= P_B^max
    assert np.all(s.head_p_mw + m.boundary_down <= p_b + 1e-12)
    # shortfall = what the T margin, the boundary offers and the feeders' deficits leave open
    bal_up = m.transmission_margin_up + m.boundary_up.sum(1) + np.minimum(m.feeder_margin_up, 0).sum(1)
    assert m.shortfall_up == pytest.approx(np.maximum(-bal_up, 0))


def test_tie_line_moves_surplus_to_the_short_feeder() -> None:
    from env.flex_supply import tie_transfer
    from env.network import TieLine

    tie = (TieLine(from_feeder=0, from_bus=1, to_feeder=1, to_bus=1, p_max_mw=1.0),)
    after, flow = tie_transfer(np.array([[-0.4, 2.0], [-3.0, 2.0], [0.5, -0.2], [1.0, 1.0]]), tie)
    assert flow[:, 0].tolist() == pytest.approx([0.4, 1.0, -0.2, 0.0])     # the need, the tie, the surplus
    np.testing.assert_allclose(after, [[0.0, 1.6], [-2.0, 1.0], [0.3, 0.0], [1.0, 1.0]], atol=1e-12)


def test_flex_command_prints_table5_and_draws(tmp_path, capsys) -> None:  # noqa: ANN001
    from controller.cli import main

    png = tmp_path / "flex.png"
    assert main(["flex", "--case", "t14d2", "--seed", "8600", "--samples", "100", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "Table 5" in out and "thermal" in out and "over-estimation" in out and png.stat().st_size > 0
    assert main(["flex", "--case", "d33", "--seed", "1"]) == 2
