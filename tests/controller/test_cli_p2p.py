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
