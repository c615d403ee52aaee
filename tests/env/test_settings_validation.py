"""Every settings field is checked on construction (issue 12, item 2): by type and range, with
errors naming the field and the accepted values; env kwargs; case files."""

from __future__ import annotations

import shutil
from pathlib import Path

import gymnasium as gym
import pytest

import env  # noqa: F401  (registers the envs)
from controller.loop import LoopSettings
from env.settings import check_field_types
from env.simulator import SimulatorSettings
from policies.aro_dro import AroDroSettings
from policies.mpc import MPCSettings
from policies.perfect_information import PerfectInformationSettings
from policies.rollout import RolloutSettings
from policies.surrogate import SurrogateSettings


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"v2g": "no"}, r"SimulatorSettings\.v2g: must be a bool"),
    ({"v2g": 1}, r"SimulatorSettings\.v2g: must be a bool"),
    ({"enforce_must_run": None}, r"SimulatorSettings\.enforce_must_run: must be a bool"),
    ({"sweep_max_iter": 2.5}, r"SimulatorSettings\.sweep_max_iter: must be an integer"),
    ({"sweep_max_iter": 0}, r"SimulatorSettings\.sweep_max_iter: must be in \[1, 100000\]"),
    ({"sweep_max_iter": True}, r"SimulatorSettings\.sweep_max_iter: must be an integer"),
    ({"sweep_tol_pu": 0.0}, r"SimulatorSettings\.sweep_tol_pu: must be in \(0, 0\.1\)"),
    ({"sweep_tol_pu": "1e-8"}, r"SimulatorSettings\.sweep_tol_pu: must be a finite number"),
    ({"forecast_horizon_h": 1e9}, r"SimulatorSettings\.forecast_horizon_h: must be in \(0, 24\]"),
    ({"forecast_horizon_h": float("inf")}, r"SimulatorSettings\.forecast_horizon_h: must be a finite number"),
    ({"forecast_horizon_h": float("nan")}, r"SimulatorSettings\.forecast_horizon_h: must be a finite number"),
    ({"forecast_horizon_h": 0}, r"SimulatorSettings\.forecast_horizon_h: must be in \(0, 24\]"),
    ({"forecast_obs": "weekly"}, r"SimulatorSettings\.forecast_obs: must be one of 'day_ahead', 'intraday'"),
    ({"ev_reserve_price_per_mwh": -1.0}, r"SimulatorSettings\.ev_reserve_price_per_mwh: must be in \[0, inf\)"),
    ({"ev_reserve_price_per_mwh": "3"}, r"SimulatorSettings\.ev_reserve_price_per_mwh: must be None or"),
])
def test_simulator_settings_reject_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SimulatorSettings(**kwargs)


def test_simulator_settings_accept_the_edges() -> None:
    SimulatorSettings(forecast_horizon_h=24, sweep_max_iter=1, ev_reserve_price_per_mwh=0)
    SimulatorSettings(v2g=True, forecast_obs="intraday", ev_reserve_price_per_mwh=None)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"reactive": "no"}, r"LoopSettings\.reactive: must be a bool"),
    ({"n_samples": 2.5}, r"LoopSettings\.n_samples: must be an integer"),
    ({"n_scenarios": "10"}, r"LoopSettings\.n_scenarios: must be an integer"),
    ({"socp": None}, r"LoopSettings\.socp: must be a ReactiveSettings"),
    ({"n_scenarios": 0}, r"LoopSettings: need 1 <= n_scenarios <= n_samples"),
])
def test_loop_settings_reject_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LoopSettings(**kwargs)


@pytest.mark.parametrize(("cls", "kwargs", "match"), [
    (RolloutSettings, {"no_exchange": "no"}, r"RolloutSettings\.no_exchange: must be a bool"),
    (RolloutSettings, {"reserve_margin": "0.1"}, r"RolloutSettings\.reserve_margin: must be a finite number"),
    (MPCSettings, {"expected_arrivals": 1}, r"MPCSettings\.expected_arrivals: must be a bool"),
    (MPCSettings, {"horizon_steps": 4.0}, r"MPCSettings\.horizon_steps: must be None or an integer"),
    (AroDroSettings, {"replan_every_h": "2"}, r"AroDroSettings\.replan_every_h: must be None or a finite number"),
    (PerfectInformationSettings, {"compensators": "yes"}, r"PerfectInformationSettings\.compensators: must be a bool"),
    (SurrogateSettings, {"reserve_margin": float("nan")}, r"SurrogateSettings\.reserve_margin: must be a finite"),
])
def test_policy_settings_reject_wrong_types(cls: type, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"no_exchange": "no"}, r"HeuristicPolicy: no_exchange must be a bool"),
    ({"reserve_margin": "0.1"}, r"HeuristicPolicy: reserve_margin must be a finite number"),
    ({"loss_factor": float("nan")}, r"HeuristicPolicy: loss_factor must be a finite number"),
    ({"loss_factor": 2.0}, r"HeuristicPolicy: loss_factor must be in \[0, 1\)"),
])
def test_heuristic_options_are_checked(kwargs: dict, match: str) -> None:
    import env as env_pkg
    from policies import make_policy

    with pytest.raises(ValueError, match=match):
        make_policy("heuristic", env_pkg.load_case("d33"), **kwargs)


@pytest.mark.parametrize(("env_id", "kwargs", "match"), [
    ("gridroll/D33-v0", {"case": "t30d2"}, r"gridroll/D33-v0 is the 'd33' case, got case='t30d2'"),
    ("gridroll/T30D2-v0", {"case": "d33"}, r"gridroll/T30D2-v0 is the 't30d2' case"),
    ("gridroll/D33-v0", {"forecast_horizon_h": 1e9}, r"forecast_horizon_h: must be in \(0, 24\]"),
    ("gridroll/D33-v0", {"forecast_horizon_h": float("inf")}, r"forecast_horizon_h: must be a finite number"),
    ("gridroll/D33-v0", {"v2g": "no"}, r"v2g: must be a bool"),
    ("gridroll/D33-v0", {"dt_minutes": 15.0}, r"dt_minutes must be one of"),
    ("gridroll/TDGrid-v0", {"case": ["d33"]}, r"unknown case"),
    ("gridroll/TDGrid-v0", {"regime": None}, r"unknown regime"),
])
def test_gym_make_rejects_bad_kwargs(env_id: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gym.make(env_id, **kwargs)


def test_fixed_ids_still_take_their_own_case() -> None:
    assert gym.make("gridroll/D33-v0", case="d33").unwrapped.case == "d33"
    assert gym.make("gridroll/D33-v0").unwrapped.case == "d33"


def test_type_check_names_the_accepted_tuple() -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Probe:
        names: tuple[str, ...] = ("a",)

    check_field_types(Probe(("a", "b")))
    with pytest.raises(ValueError, match=r"Probe\.names: must be a tuple with each item a string, got \('a', 3\)"):
        check_field_types(Probe(("a", 3)))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- case files


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the case data folder that the loaders read instead of the shipped one."""
    from env.cases import feeders

    for f in feeders.DATA_DIR.iterdir():
        shutil.copy(f, tmp_path / f.name)
    monkeypatch.setattr(feeders, "DATA_DIR", tmp_path)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(("old", "new", "match"), [
    ("vmax_pu = 1.05", "", r"d33\.toml: top level: missing key 'vmax_pu'"),
    ("e_max_mwh = 1.2, p_max_mw = 0.3", "e_max_mwh = 1.2, p_max_mw = \"0.3\"",
     r"d33\.toml: storage\[0\]: key 'p_max_mw' must be a number, got '0\.3'"),
    ("evcs_buses = [6, 9,", "evcs_buses = [6, 6,", r"d33\.toml: top level: key 'evcs_buses'.*duplicate values \[6\]"),
    ("evcs_ports = 10", "evcs_ports = 10.5", r"d33\.toml: top level: key 'evcs_ports' must be an integer"),
    ("{ bus = 18, q_min_mvar = -0.2,", "{ bus = 18, q_min = -0.2,", r"d33\.toml: compensators\[0\]: unknown keys"),
    ("{ name = \"pv14\", bus = 14, kind = \"pv\", p_max_mw = 0.3 }", "{ name = \"pv14\", bus = 14, kind = \"pv\" }",
     r"d33\.toml: der\[0\]: missing key 'p_max_mw'"),
    ("vmin_pu = 0.95", "vmin_pu = true", r"d33\.toml: top level: key 'vmin_pu' must be a number, got True"),
    ("vmin_pu = 0.95", "vmin_pu = 0.95 ]", r"d33\.toml: not valid TOML"),
])
def test_corrupted_feeder_file_names_file_table_and_key(data_dir: Path, old: str, new: str, match: str) -> None:
    from env.cases import feeders

    _edit(data_dir / "d33.toml", old, new)
    with pytest.raises(ValueError, match=match):
        feeders.feeder_from_file("d33.toml", "d33")


def test_corrupted_td_file_names_file_table_and_key(data_dir: Path) -> None:
    from env.cases.td import td_case

    _edit(data_dir / "t30d2.toml", "{ bus = 1, p_min_mw = 0.0, ", "{ bus = 1, ")
    with pytest.raises(ValueError, match=r"t30d2\.toml: thermal\[0\]: missing key 'p_min_mw'"):
        td_case("t30d2.toml", "t30d2")


def test_corrupted_tariff_names_file_and_key(data_dir: Path) -> None:
    from env.cases.feeders import load_tariff

    _edit(data_dir / "tariff_tso.toml", "price_sell_per_mwh = 25.0", "price_sell_per_mwh = \"25\"")
    with pytest.raises(ValueError, match=r"tariff_tso\.toml: top level: key 'price_sell_per_mwh' must be a number"):
        load_tariff("tariff_tso.toml")
