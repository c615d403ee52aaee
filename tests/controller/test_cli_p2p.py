"""``gridroll p2p``: both schemes' table, the scaling table, and bad --adns."""

from __future__ import annotations

import json

import pytest

from controller.cli import main
from controller.cli_p2p import parse_adns


def test_parse_adns() -> None:
    assert parse_adns("1..5") == [1, 2, 3, 4, 5]
    assert parse_adns("1,3,10") == [1, 3, 10]
    for bad in ("0..3", "a..b", ""):
        with pytest.raises(ValueError, match="--adns"):
            parse_adns(bad)


@pytest.mark.slow
def test_p2p_prints_both_schemes_and_writes_json(tmp_path, capsys) -> None:  # noqa: ANN001
    assert main(["p2p", "--case", "t30d5", "--seed", "8700", "--period-minutes", "360", "--time-limit", "60",
                 "--mip-gap", "0.01", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for label in ("BESS throughput", "self-consumption", "TN imports", "P2P across ADNs", "DSO 4 cost",
                  "TSO net cost", "solve time", "SCIP status", "dso_led", "tso_led", "dual big-M active: False"):
        assert label in out
    data = json.loads((tmp_path / "p2p.json").read_text())
    dso, tso = data["schemes"]["dso_led"], data["schemes"]["tso_led"]
    assert len(dso["dso_cost"]) == 5
    assert tso["p2p_cross_mwh"] == 0.0
    assert dso["complementarity_max"] < 1e-4


@pytest.mark.slow
def test_p2p_scaling_table(capsys) -> None:  # noqa: ANN001
    assert main(["p2p", "--case", "t30d5", "--seed", "8700", "--period-minutes", "360", "--time-limit", "60",
                 "--adns", "1,2"]) == 0
    out = capsys.readouterr().out
    assert "binaries" in out and "solve_s" in out and "optimal" in out


def test_p2p_refuses_a_single_feeder(capsys) -> None:  # noqa: ANN001
    assert main(["p2p", "--case", "d33"]) == 2
    assert "not a T-D case" in capsys.readouterr().err


@pytest.mark.slow      # loads t30d5 and the market module: ~15 s on the shared machine
def test_scaling_records_a_failed_solve_and_goes_on(monkeypatch) -> None:  # noqa: ANN001
    import numpy as np

    import env
    import policies.p2p.market as market
    from controller.cli_p2p import scaling
    from policies.p2p.data import P2PDay, P2PSettings

    grid = env.load_case("t30d5")
    T = 2
    day = P2PDay(dt_h=1.0, load_p_mw=tuple(np.zeros((T, len(f.load))) for f in grid.feeders),
                 load_q_mvar=tuple(np.zeros((T, len(f.load))) for f in grid.feeders),
                 der_avail_mw=tuple(np.zeros((T, len(f.der))) for f in grid.feeders),
                 e_init_mwh=tuple(np.asarray(f.storage.e_init_mwh) for f in grid.feeders),
                 t_load_mw=np.zeros((T, len(grid.transmission.load))), t_wind_mw=np.zeros((T, len(grid.transmission.der))))
    calls = []

    def fake(g, d, settings):  # noqa: ANN001, ANN202
        calls.append(len(g.feeders))
        raise RuntimeError("P2P market: SCIP status timelimit without an incumbent (stub)")

    monkeypatch.setattr(market, "solve_dso_led", fake)
    rows = scaling(grid, day, P2PSettings(), [1, 2])
    assert calls == [1, 2]
    assert [r["adns"] for r in rows] == [1, 2]
    assert all(not r["optimal"] and r["status"].startswith("failed: ") for r in rows)
