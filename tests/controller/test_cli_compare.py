"""gridroll compare / stress end to end: files, printed tables, resume, clear errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from controller.cli import main

_FAST = ["--case", "d33", "--policies", "heuristic,heuristic_no_exchange", "--days", "2", "--seed", "2",
         "--no-reactive", "--no-progress"]


def test_compare_writes_tables_plots_and_prints_paired_table(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", *_FAST, "--regimes", "sunny,cloudy", "--out", str(out)]) == 0
    summary = pd.read_parquet(out / "summary.parquet")
    assert len(summary) == 2 * 2 * 2 and sorted(set(summary.seed)) == [2, 3]
    assert {"policy", "regime", "day", "seed", "total_cost", "cost_energy_bought", "cost_voltage_violation",
            "curtailment_mwh", "load_shed_mwh", "ev_unmet_mwh", "voltage_violation_puh", "losses_mwh",
            "max_line_loading", "boundary_violation_mw", "decision_ms_mean"} <= set(summary)
    table = pd.read_parquet(out / "comparison.parquet")
    assert len(table) == 4 and {"diff_vs_heuristic", "diff_vs_heuristic_lo", "diff_vs_heuristic_hi"} <= set(table)
    steps = pd.read_parquet(out / "steps.parquet")
    assert len(steps) == 8 * 96 * 2
    for name in ("cost_distributions.png", "paired_differences.png", "kpis.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert len(list((out / "runs").rglob("*.summary.parquet"))) == 8
    printed = capsys.readouterr().out
    assert "== sunny ==" in printed and "== cloudy ==" in printed and "cost - heuristic [CI]" in printed
    assert "8 runs done, 0 reused" in printed
    row = table[(table.regime == "sunny") & (table.policy == "heuristic_no_exchange")].iloc[0]
    assert f"{row.diff_vs_heuristic:+,.1f} [{row.diff_vs_heuristic_lo:+,.1f}" in printed
    for kpi in ("curtailment_mwh", "load_shed_mwh", "boundary_violation_mw"):  # worst days next to the means
        worst = summary[summary.regime == "sunny"].groupby("policy")[kpi].max()
        assert table[table.regime == "sunny"].set_index("policy")[f"worst_{kpi}"].to_dict() == worst.to_dict()
        assert f"{kpi} (worst)" in printed and f"{kpi} (mean)" in printed
    assert "worst cost" not in printed and "ev_unmet_mwh (worst)" not in printed

    assert main(["compare", *_FAST, "--regimes", "sunny,cloudy", "--out", str(out), "--no-plots"]) == 0
    assert "0 runs done, 8 reused" in capsys.readouterr().out


def test_stress_reports_worst_days(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "stress"
    assert main(["stress", *_FAST, "--regimes", "ev_surge", "--out", str(out), "--no-plots"]) == 0
    table = pd.read_parquet(out / "comparison.parquet")
    summary = pd.read_parquet(out / "summary.parquet")
    for kpi in ("total_cost", "curtailment_mwh", "load_shed_mwh", "ev_unmet_mwh", "voltage_violation_puh",
                "boundary_violation_mw"):
        worst = summary.groupby("policy")[kpi].max()
        assert table.set_index("policy")[f"worst_{kpi}"].to_dict() == worst.to_dict()
    printed = capsys.readouterr().out
    assert "== ev_surge ==" in printed and "worst cost" in printed and "ev_unmet_mwh (worst)" in printed


def test_stress_defaults_to_the_stress_regimes() -> None:
    from controller.cli import build_parser

    args = build_parser().parse_args(["stress"])
    assert args.regimes == "wind_ramp,ev_surge,high_penetration" and args.worst
    assert build_parser().parse_args(["compare"]).regimes == "sunny,cloudy,highly_fluctuating"


def test_config_mismatch_and_bad_names_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", *_FAST, "--policies", "heuristic", "--days", "1", "--regimes", "sunny",
                 "--out", str(out), "--no-plots"]) == 0
    capsys.readouterr()
    assert main(["compare", *_FAST, "--policies", "heuristic", "--days", "1", "--regimes", "sunny",
                 "--seed", "9", "--out", str(out)]) == 2
    assert "another config (seed: 2 on disk, 9 now)" in capsys.readouterr().err
    assert main(["compare", *_FAST, "--policies", "heuristic,greedy", "--out", str(tmp_path / "x")]) == 2
    assert "unknown policy 'greedy'" in capsys.readouterr().err
    assert main(["stress", *_FAST, "--regimes", "foggy", "--out", str(tmp_path / "y")]) == 2
    assert "unknown regime 'foggy'" in capsys.readouterr().err
    assert main(["compare", *_FAST, "--policies", ",", "--out", str(tmp_path / "z")]) == 2
    assert "--policies is empty" in capsys.readouterr().err
    assert main(["compare", *_FAST, "--confidence", "95", "--out", str(tmp_path / "w")]) == 2
    assert "--confidence must be in (0, 1), got 95" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def _with_bound() -> pd.DataFrame:
    costs = {"heuristic": [100.0, 110.0, 120.0], "better": [96.0, 104.0, 117.0],
             "perfect_information": [90.0, 99.0, 111.0]}
    return pd.DataFrame([{"policy": p, "regime": r, "day": d, "seed": 1 + d, "total_cost": c + (r == "cloudy"),
                          "curtailment_mwh": 0.1 * d, "currency": "CNY",
                          "bound_model": "socp-relaxation" if p == "perfect_information" else ""}
                         for r in ("sunny", "cloudy") for p, cs in costs.items() for d, c in enumerate(cs)])


def test_regret_table_and_plots_with_a_bound(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from controller.cli_compare import print_comparison
    from controller.compare_report import write_comparison_plots
    from controller.stats import compare_policies

    summary = _with_bound()
    table = compare_policies(summary)
    print_comparison(table, summary, baseline="heuristic", confidence=0.95)
    printed = capsys.readouterr().out
    assert "regret [CI]" in printed and "gap closed" in printed and "model: socp-relaxation" in printed
    assert "43%" in printed  # better closes (110 - 105.67) / (110 - 100) of the gap
    paths = write_comparison_plots(summary, table, tmp_path, bound_policy="perfect_information")
    assert [p.name for p in paths] == ["cost_distributions.png", "paired_differences.png", "kpis.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_default_policies_are_those_the_case_supports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from controller.cli_compare import _policies
    from policies import TD_ONLY_POLICIES, policy_names

    on_feeder, on_td = _policies(None, "d33"), _policies(None, "t30d2")
    assert on_td == policy_names() and "aro_dro" in on_td
    assert set(on_feeder) == set(policy_names()) - set(TD_ONLY_POLICIES) and "heuristic" in on_feeder
    assert main(["compare", *_FAST, "--policies", "heuristic,aro_dro", "--out", str(tmp_path / "x")]) == 2
    assert "policy 'aro_dro' needs a T-D case" in capsys.readouterr().err
    assert not (tmp_path / "x" / "runs").exists()
