"""A user's own grid: pandapower nets, MATPOWER files, coupling specs, and the pandapower export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import env
from controller.cli import main
from env.importers import feeder_from_pandapower, grid_from_spec
from env.interop import grid_to_pandapower_nets
from env.physics.grid_flow import power_flow

CASE9 = Path(__file__).parent / "data" / "case9mod.m"   # MATPOWER case9, bus 9 load 150 MW, line 5-6 at 200 MVA


def _cigre(ev_station: bool = True):  # noqa: ANN202 - a pandapower net
    import pandapower as pp
    import pandapower.networks as pn

    net = pn.create_cigre_network_mv(with_der="pv_wind")    # switches S1-S3 open: a radial tree
    if ev_station:
        pp.create_load(net, bus=6, p_mw=0.0, q_mvar=0.0, name="ev6", type="evcs", n_ports=20)
    return net


def test_cigre_feeder_matches_pandapower_power_flow() -> None:
    import pandapower as pp

    net = _cigre(ev_station=False)
    net.trafo.i0_percent = 0.0          # gridroll's sweep has no magnetizing branch
    net.trafo.pfe_kw = 0.0
    grid = env.from_pandapower(net, name="cigre")
    net.sgen.in_service = False         # the base operating point: loads only, DER at 0
    net.line.c_nf_per_km = 0.0          # nor line charging
    feeder = grid.feeders[0]
    assert feeder.n_bus == 15 and len(feeder.branch) == 14 and feeder.v_slack_pu == pytest.approx(1.03)
    assert sorted(feeder.der.kind) == ["pv"] * 8 + ["wind"]
    pp.runpp(net)
    ours = power_flow(grid).feeders[0].v_pu[:, 0]
    assert np.abs(ours - net.res_bus.vm_pu.to_numpy()).max() < 2e-3


def test_clear_errors_non_radial_missing_slack_unknown_bus(tmp_path: Path) -> None:
    net = _cigre()
    net.switch.closed = True
    with pytest.raises(ValueError, match="not radial: 17 branches for 15 buses"):
        feeder_from_pandapower(net, "meshed")
    net = _cigre()
    net.ext_grid.in_service = False
    with pytest.raises(ValueError, match="missing slack"):
        feeder_from_pandapower(net, "no_slack")
    spec = tmp_path / "bad.toml"
    spec.write_text(f'tariff = "tariff_tso"\n[transmission]\nfile = "{CASE9}"\n'
                    '[[feeders]]\nat_bus = 12\ncase = "d33"\n')
    with pytest.raises(ValueError, match=r"bad.toml: .*unknown bus \[12\]"):
        grid_from_spec(spec)
    spec.write_text('tariff = "tariff_dso"\n[[feeders]]\ncase = "d33"\n'
                    '[[feeders.der]]\nname = "x"\nbus = 40\nkind = "pv"\np_max_mw = 1.0\n')
    with pytest.raises(ValueError, match=r"feeders\[0\]: der\[0\]: unknown bus 40"):
        grid_from_spec(spec)


@pytest.mark.parametrize("case", ["d33", "t30d2"])
def test_export_to_pandapower_round_trips(case: str) -> None:
    grid = env.load_case(case)
    nets = grid_to_pandapower_nets(grid)
    assert set(nets) == {f.name for f in grid.feeders} | ({grid.transmission.name} if grid.is_td else set())
    if grid.is_td:
        labels = [int(grid.transmission.bus.label[b]) for b in grid.boundary_bus]
        back = env.from_pandapower(nets[grid.transmission.name], name=case, tariff=grid.tariff,
                                   feeders={lab: nets[f.name] for lab, f in zip(labels, grid.feeders)})
    else:
        back = env.from_pandapower(nets[case], name=case, tariff=grid.tariff)
    pairs = list(zip(grid.feeders, back.feeders))
    if grid.is_td:
        pairs.append((grid.transmission, back.transmission))
        assert back.boundary_bus == grid.boundary_bus
    for ours, theirs in pairs:
        for table in ("load", "der", "storage", "evcs", "compensator", "gen"):
            a, b = getattr(ours, table), getattr(theirs, table)
            for col in a.__dataclass_fields__:
                x, y = getattr(a, col), getattr(b, col)
                if x.dtype.kind in "fi":
                    np.testing.assert_allclose(x, y, err_msg=f"{ours.name}.{table}.{col}")
                else:
                    assert x.tolist() == y.tolist(), f"{ours.name}.{table}.{col}"
        np.testing.assert_allclose(ours.branch.x_pu, theirs.branch.x_pu * (theirs.branch.tap if ours.kind == "transmission" else 1))
    flow, flow_back = power_flow(grid), power_flow(back)
    for f, g in zip(flow.feeders, flow_back.feeders):
        np.testing.assert_allclose(f.v_pu, g.v_pu, atol=1e-10)
    if grid.is_td:
        np.testing.assert_allclose(flow.line_p_mw, flow_back.line_p_mw, atol=1e-8)


def test_pandapower_feeder_runs_a_day(tmp_path: Path) -> None:
    import pandapower as pp

    path = tmp_path / "cigre_mv.json"
    pp.to_json(_cigre(), str(path))
    out = tmp_path / "run"
    assert main(["run", "--case", str(path), "--dt-minutes", "60", "--no-reactive", "--no-plots",
                 "--out", str(out)]) == 0
    steps = pd.read_parquet(out / "steps.parquet")
    assert set(steps.case) == {str(path)} and len(steps[steps.area == "system"]) == 24
    assert steps[steps.area == "system"].load_mw.max() > 10.0      # CIGRE MV's ~45 MW peak, not a 33-bus feeder


@pytest.mark.slow
def test_matpower_transmission_spec_runs_a_day(tmp_path: Path) -> None:
    import pandapower as pp

    pp.to_json(_cigre(ev_station=False), str(tmp_path / "cigre.json"))
    spec = tmp_path / "case9_td.toml"
    spec.write_text(f'''description = "modified case9 with a 33-bus feeder and the CIGRE MV feeder"
tariff = "tariff_tso"
[transmission]
file = "{CASE9}"
[[feeders]]
at_bus = 5
case = "d33"
[[feeders]]
at_bus = 9
file = "cigre.json"
[[feeders.evcs]]
name = "ev6"
bus = 6
n_ports = 10
[[feeders.storage]]
bus = 12
e_max_mwh = 4.0
p_max_mw = 1.0
eta_charge = 0.95
eta_discharge = 0.95
e_init_mwh = 2.0
''')
    grid = grid_from_spec(spec)
    assert grid.is_td and grid.boundary_bus == (4, 8) and grid.transmission.n_bus == 9
    assert len(grid.transmission.gen) == 3 and len(grid.feeders[1].storage) == 1
    assert grid.transmission.load.p_mw.sum() == pytest.approx(340.0 - sum(f.load.p_mw.sum() for f in grid.feeders))
    out = tmp_path / "run"
    assert main(["run", "--case", str(spec), "--dt-minutes", "60", "--no-reactive", "--no-plots",
                 "--out", str(out)]) == 0
    steps = pd.read_parquet(out / "steps.parquet")
    assert set(steps.area) == {"system", "f0", "f1"}
    system = steps[steps.area == "system"]
    assert system.thermal_p_mw.min() > 150.0 and system.thermal_p_mw.max() > 300.0   # case9 units carry its load
