"""SimBench cases (env/simbench.py): the net's preparation, the import against pandapower's
``runpp``, the profiles against SimBench's own absolute values, and a day played from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

simbench = pytest.importorskip("simbench")

import pandapower as pp  # noqa: E402

import env  # noqa: E402
from controller.cli import main  # noqa: E402
from env.importers import feeder_from_pandapower  # noqa: E402
from env.physics.grid_flow import GridPhysics, per_bus  # noqa: E402
from env.simbench import SIMBENCH_CASES, _simbench_net, case_profiles, prepare_net, sgen_type  # noqa: E402

CASE = "sb_mv_rural"
CODE = SIMBENCH_CASES[CASE].code


@pytest.fixture(scope="module")
def raw():  # noqa: ANN201
    return _simbench_net(CODE)


@pytest.fixture(scope="module")
def absolute(raw):  # noqa: ANN001, ANN201
    """SimBench's own absolute time series (profile x p_mw per element), row k = 2016-01-01 + 15 min k."""
    return simbench.get_absolute_values(raw, profiles_instead_of_study_cases=True)


def _row(date: str) -> int:
    return int((pd.Timestamp(date) - pd.Timestamp("2016-01-01")) / pd.Timedelta(minutes=15))


def test_sgen_types_map_to_the_env_kinds() -> None:
    assert [sgen_type(t) for t in ("PV_MV", "lv_RES", "Wind_MV", "Biomass_MV", "Hydro_MV", "PV_HV", "Wind_HV")] \
        == ["PV", "PV", "WP", "WP", "WP", "PV", "WP"]


def test_raw_net_is_refused_and_the_prepared_net_is_a_radial_feeder(raw) -> None:  # noqa: ANN001
    with pytest.raises(ValueError):
        feeder_from_pandapower(raw, "raw")          # closed bus-bus switches, parallel trafos, sgen types
    net = prepare_net(raw)
    assert "profiles" in raw and "profiles" not in net          # the cached net keeps its profiles
    assert not ((net.switch.et == "b") & net.switch.closed.astype(bool)).any()
    assert len(net.bus) == len(raw.bus) - 2                      # the HV and the MV busbar pairs fused
    assert len(net.trafo) == 1 and int(net.trafo.parallel.iloc[0]) == 2
    grid = env.load_case(CASE)
    feeder = grid.feeders[0]
    assert feeder.n_bus == len(net.bus) and len(feeder.branch) == feeder.n_bus - 1
    assert feeder.load.p_mw.sum() == pytest.approx(raw.load.p_mw.sum())
    pv = raw.sgen.type.isin(["PV_MV", "lv_RES"])
    assert feeder.der.p_max_mw[feeder.der.kind == "pv"].sum() == pytest.approx(raw.sgen.p_mw[pv].sum())
    assert feeder.der.p_max_mw[feeder.der.kind == "wind"].sum() == pytest.approx(raw.sgen.p_mw[~pv].sum())
    assert len(feeder.evcs) == len(SIMBENCH_CASES[CASE].ev_buses)


@pytest.mark.parametrize(("exact", "atol"), [(True, 1e-6), (False, 1e-2)])
def test_import_matches_runpp_at_a_snapshot(raw, absolute, exact: bool, atol: float) -> None:  # noqa: ANN001
    """2016-06-15 12:00: the env's sweep against pandapower's Newton-Raphson on the prepared net.
    ``exact``: line charging and the transformers' magnetizing branch removed (the sweep models
    neither): equal to 1e-6 pu. As SimBench ships it: within 1e-2 pu (measured: 7.1e-3 pu, the 20 kV
    cables' charging raises pandapower's voltages)."""
    k = _row("2016-06-15 12:00")
    net = prepare_net(raw)
    net.load["p_mw"] = absolute[("load", "p_mw")].iloc[k].loc[net.load.index].to_numpy()
    net.load["q_mvar"] = absolute[("load", "q_mvar")].iloc[k].loc[net.load.index].to_numpy()
    net.sgen["p_mw"] = absolute[("sgen", "p_mw")].iloc[k].loc[net.sgen.index].to_numpy()
    net.sgen["q_mvar"] = 0.0
    if exact:
        net.line["c_nf_per_km"] = 0.0
        net.trafo[["i0_percent", "pfe_kw"]] = 0.0
    pp.runpp(net, tolerance_mva=1e-10, numba=False)
    feeder = env.load_case(CASE).feeders[0]
    order = np.sort(net.bus.index.to_numpy())
    ours = {int(b): i for i, b in enumerate(order)}
    load_bus = np.array([ours[int(b)] for b in net.load.bus])
    sgen_bus = np.array([ours[int(b)] for b in net.sgen.bus])
    p = per_bus(feeder, load_bus, net.load.p_mw.to_numpy()) - per_bus(feeder, sgen_bus, net.sgen.p_mw.to_numpy())
    q = per_bus(feeder, load_bus, net.load.q_mvar.to_numpy())
    flow = GridPhysics(env.Grid(name=CASE, feeders=(feeder,), tariff=env.load_case(CASE).tariff)).solve_feeder(0, p, q)
    pp_v = net.res_bus.vm_pu.loc[order].to_numpy()
    np.testing.assert_allclose(flow.v_pu.ravel(), pp_v, atol=atol)
    assert abs(flow.v_pu.ravel() - pp_v).max() > (0 if exact else 1e-3)    # the second case does differ


def test_profiles_are_simbench_absolute_values_per_unit(raw, absolute) -> None:  # noqa: ANN001
    frame = case_profiles(CASE)
    assert len(frame) == 366 * 96 and frame.index[0] == pd.Timestamp("2016-01-01")
    net, feeder = prepare_net(raw), env.load_case(CASE).feeders[0]
    label = dict(zip(np.sort(net.bus.index.to_numpy()), feeder.bus.label))
    for bus in (net.load.bus.iloc[0], net.load.bus.iloc[-1]):
        rows = net.load.index[net.load.bus == bus]
        expected = absolute[("load", "p_mw")][rows].sum(axis=1).to_numpy()
        np.testing.assert_allclose(frame[f"load_f0_b{label[bus]}"].to_numpy() * raw.load.p_mw[rows].sum(), expected,
                                   rtol=1e-12, atol=1e-12)
    wind = net.sgen.index[raw.sgen.type == "Wind_MV"][0]
    np.testing.assert_allclose(frame[f"wind_f0_sg{wind}"] * raw.sgen.p_mw[wind],
                               absolute[("sgen", "p_mw")][wind].clip(lower=0.0), rtol=1e-12, atol=1e-12)
    five = case_profiles(CASE, 5)
    assert len(five) == 3 * len(frame) and (five.iloc[3:6].to_numpy() == frame.iloc[[1]].to_numpy()).all()


def _system_load(out: Path) -> np.ndarray:
    return pd.read_parquet(out / "steps.parquet").query("area == 'system'").load_mw.to_numpy()


def test_a_day_of_simbench_profiles_end_to_end(tmp_path: Path, absolute) -> None:  # noqa: ANN001
    """``gridroll run --case sb_mv_rural --date 2016-06-15`` at hourly steps: the loads in
    steps.parquet are SimBench's profile x p_mw averaged over each hour."""
    out = tmp_path / "run"
    assert main(["run", "--case", CASE, "--date", "2016-06-15", "--dt-minutes", "60", "--no-reactive",
                 "--no-plots", "--seed", "8500", "--out", str(out)]) == 0
    k = _row("2016-06-15")
    quarter = absolute[("load", "p_mw")].iloc[k:k + 96].sum(axis=1).to_numpy()
    np.testing.assert_allclose(_system_load(out), quarter.reshape(24, 4).mean(axis=1), rtol=1e-10)
    summary = pd.read_parquet(out / "summary.parquet")
    assert summary.fallback_steps.iloc[0] == 0 and np.isfinite(summary.total_cost.iloc[0])


@pytest.mark.slow
def test_two_days_across_the_autumn_clock_change_at_15_minutes_with_reactive_control(tmp_path: Path,
                                                                                     absolute) -> None:  # noqa: ANN001
    """2016-10-30 (SimBench repeats 02:00-02:45 in its labels) and -31: 192 steps, each SimBench's row."""
    out = tmp_path / "run"
    assert main(["run", "--case", CASE, "--date", "2016-10-30", "--days", "2", "--no-plots", "--seed", "8501",
                 "--out", str(out)]) == 0
    k = _row("2016-10-30")
    expected = absolute[("load", "p_mw")].iloc[k:k + 2 * 96].sum(axis=1).to_numpy()
    np.testing.assert_allclose(_system_load(out), expected, rtol=1e-10)


def test_date_alone_needs_a_case_with_profiles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--case", "d33", "--date", "2016-06-15", "--no-plots", "--out", str(tmp_path / "r")]) == 2
    assert "--date needs --profiles: case 'd33' has no profiles of its own" in capsys.readouterr().err
    assert main(["run", "--case", CASE, "--date", "2017-01-01", "--no-reactive", "--dt-minutes", "60",
                 "--no-plots", "--out", str(tmp_path / "r2")]) == 2
    assert "do not cover 2017-01-01" in capsys.readouterr().err


def test_gym_id_plays_the_case_profiles(absolute) -> None:  # noqa: ANN001
    import gymnasium as gym

    environment = gym.make("gridroll/SB_MV_RURAL-v0", profile_date="2016-03-27", profile_first_seed=8502)
    environment.reset(seed=8503)                                   # day 1: 2016-03-28
    scenario = environment.unwrapped.simulator.scenario
    feeder = environment.unwrapped.grid.feeders[0]
    k = _row("2016-03-28")
    np.testing.assert_allclose((scenario.load_pu * feeder.load.p_mw).sum(axis=1),
                               absolute[("load", "p_mw")].iloc[k:k + 96].sum(axis=1).to_numpy(), rtol=1e-10)


def test_the_flexible_example_spec_keeps_the_case_layout() -> None:
    """examples/sb_mv_rural_flex.toml adds storage and compensators; its layout names are the
    case's, so the case's profile table (``case_profiles``) plays on it through ``--profiles``."""
    spec = Path(__file__).resolve().parents[2] / "examples" / "sb_mv_rural_flex.toml"
    flex, case = env.load_case(str(spec)), env.load_case(CASE)
    assert len(flex.feeders[0].storage) == 2 and len(flex.feeders[0].compensator) == 3
    layout, names = flex.layout, case.layout
    assert (layout.load_names, layout.pv_names, layout.wind_names) == (names.load_names, names.pv_names,
                                                                       names.wind_names)
    assert {f"load_{n}" for n in layout.load_names} <= set(case_profiles(CASE).columns)
