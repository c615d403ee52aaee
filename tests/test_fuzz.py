"""Fuzz (hypothesis): bad inputs end in a clear error or a recorded projection — never a crash,
a hang, a NaN or a silent change (issue 12).

* random actions (extremes, NaN, inf, wrong shapes and dtypes) through every registered env id;
* random dispatches through :class:`RollingController` with a policy returning them;
* random settings and ``gym.make`` keyword arguments;
* corrupted case files.

"A clear error" is a ``ValueError`` whose message names what was wrong; anything else that
escapes (``TypeError``, ``KeyError``, ``IndexError``, numpy warnings, ...) fails the test.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any
from unittest import mock

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import env
from controller.loop import LoopSettings, RollingController
from env.dispatch import Dispatch
from env.registration import ENV_IDS
from env.simulator import SimulatorSettings

FUZZ = settings(max_examples=25, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

EXTREMES = [0.0, -0.0, 1.0, -1.0, 1.0000001, 3.0, -7.5, 1e-310, 1e10, -1e10, 1e100, 1e200, 1.7e308, -1.7e308,
            float("nan"), float("inf"), -float("inf")]
_ENVS: dict[str, Any] = {}


def _env(env_id: str) -> Any:
    if env_id not in _ENVS:
        _ENVS[env_id] = gym.make(env_id)
    return _ENVS[env_id]


def _values(n: int) -> st.SearchStrategy[np.ndarray]:
    return arrays(np.float64, n, elements=st.one_of(st.floats(-2.0, 2.0), st.sampled_from(EXTREMES)))


def _check_outcome(e: Any, requested: np.ndarray | None, reward: float, info: dict, obs: dict) -> None:
    """A played step: finite reward = -cost, finite projection = applied - requested, finite obs."""
    out = e.unwrapped.last_outcome
    assert math.isfinite(reward) and reward == pytest.approx(-info["cost"]["total"], rel=1e-12, abs=1e-9)
    for name, moved in info["projection"].items():
        assert np.isfinite(moved).all(), name
    for key, value in obs.items():
        assert np.isfinite(value).all(), key
    assert all(math.isfinite(v) for v in info["violations"].values())
    assert np.isfinite(out.v_pu).all() and np.isfinite(out.thermal_p_mw).all()
    if requested is not None:       # nothing silently changed: applied = requested + recorded projection
        applied = out.applied
        for name, sl in e.unwrapped.dispatch_layout():
            np.testing.assert_allclose(getattr(applied, name), requested[sl] + info["projection"][name],
                                       rtol=1e-9, atol=1e-9 * (1 + np.abs(requested[sl]).max(initial=0.0)))


@pytest.mark.parametrize("env_id", list(ENV_IDS))
@FUZZ
@given(data=st.data())
def test_random_actions_through_every_env_id(env_id: str, data: st.DataObject) -> None:
    e = _env(env_id)
    e.reset(seed=data.draw(st.integers(0, 8999), label="seed"))
    n = e.action_space.shape[0]
    for _ in range(3):
        kind = data.draw(st.sampled_from(["values", "values", "values", "shape", "dtype"]), label="kind")
        if kind == "values":
            action: Any = data.draw(_values(n), label="action")
        elif kind == "shape":
            action = data.draw(st.sampled_from([np.zeros(n + 1), np.zeros(n - 1), np.zeros((1, n)), np.zeros(()),
                                                np.zeros(0), [], [0.0] * (n + 3)]), label="action")
        else:
            action = data.draw(st.sampled_from([np.zeros(n, np.float32), np.zeros(n, np.int8), np.zeros(n, bool),
                                                np.zeros(n, complex) + 1j, np.array(["0.1"] * n),
                                                np.array([None] * n), [0.5] * n, np.full(n, 60000, np.uint16)]),
                               label="action")
        sim = e.unwrapped.simulator
        t_before = sim.t
        requested = None
        arr = np.asarray(action) if not isinstance(action, list) else np.array(action, dtype=object)
        if arr.shape == (n,) and arr.dtype.kind in "fiu" and np.isfinite(arr.astype(float)).all():
            with np.errstate(over="ignore"):
                decoded = e.unwrapped.limits.decode(arr.astype(float))
            requested = decoded if np.isfinite(decoded).all() else None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                obs, reward, terminated, _, info = e.step(action)
            except ValueError as exc:
                assert str(exc) and sim.t == t_before       # a clear error, and the step was not played
                continue
        _check_outcome(e, requested, reward, info, obs)
        if terminated:
            e.reset(seed=1)


class _FuzzPolicy:
    """Returns dispatches drawn by hypothesis (in physical units, any values)."""

    name = "fuzz"

    def __init__(self, draws: list[dict[str, np.ndarray]]) -> None:
        self.draws = draws
        self.t = 0

    def reset(self, seed: int | None = None) -> None:
        self.t = 0

    def act(self, obs: Any, forecast: Any) -> Dispatch:
        fields = self.draws[self.t % len(self.draws)]
        self.t += 1
        return Dispatch(**fields)


def _dispatch_fields(grid: Any, data: st.DataObject, corrupt: str) -> dict[str, np.ndarray]:
    """Random fields in physical units, mostly far out of the box; ``corrupt``: ``"size"`` gives
    one field a wrong length, ``"nan"`` puts a NaN / inf in one, ``""`` neither."""
    out = {}
    layout = Dispatch.layout(grid)
    victim = data.draw(st.sampled_from([name for name, sl in layout if sl.stop > sl.start]), label="victim")
    for name, sl in layout:
        n = sl.stop - sl.start + (1 if corrupt == "size" and name == victim else 0)
        out[name] = data.draw(arrays(np.float64, n, elements=st.one_of(
            st.floats(-100.0, 100.0), st.sampled_from([1e6, -1e6, 1e300, -1e300, 0.0]))), label=name)
        if corrupt == "nan" and name == victim:
            out[name][0] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]), label="bad")
    return out


@pytest.mark.parametrize("case", ["d33", "t30d2"])
@settings(max_examples=8, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rolling_controller_with_a_policy_returning_random_dispatches(case: str, data: st.DataObject) -> None:
    """Reactive SOCP off here: see the test below for the loop with the SOCP on."""
    e = gym.make("gridroll/TDGrid-v0", case=case, dt_minutes=60)
    grid = e.unwrapped.grid
    corrupt = data.draw(st.sampled_from(["", "", "", "size", "nan"]), label="corrupt")
    draws = [_dispatch_fields(grid, data, corrupt if k == 2 else "") for k in range(3)]
    ctl = RollingController(e, _FuzzPolicy(draws), settings=LoopSettings(reactive=False))
    projections: list[dict[str, np.ndarray]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            day = ctl.run_day(seed=data.draw(st.integers(0, 8999), label="seed"),
                              on_step=lambda t, n: projections.append(e.unwrapped.last_outcome.projection))
        except ValueError as exc:
            assert corrupt and "Dispatch." in str(exc)                # only a corrupted one, naming the field
            return
    assert not corrupt
    system = day.steps[day.steps.area == "system"]
    assert len(system) == 24 and np.isfinite(system.cost_total).all()
    assert all(np.isfinite(v).all() for p in projections for v in p.values())
    assert math.isfinite(day.summary["total_cost"])


def test_rolling_controller_reactive_on_with_out_of_box_storage() -> None:
    """DEPENDS ON THE LEAD'S FIX (issue 12 item 1, controller/loop.py + reactive_inputs.py): with
    the reactive SOCP on, a storage setpoint far outside its limits must be projected once and
    the SOCP built from the projected dispatch. Before that fix this raises PowerFlowError in
    the SOCP input build; it is expected to pass after merging with main."""
    e = gym.make("gridroll/D33-v0", dt_minutes=60)
    grid = e.unwrapped.grid
    fields = {name: np.zeros(sl.stop - sl.start) for name, sl in Dispatch.layout(grid)}
    fields["storage_p_mw"] = np.full(len(fields["storage_p_mw"]), 50.0)       # limit 0.3 MW
    ctl = RollingController(e, _FuzzPolicy([fields]), settings=LoopSettings(reactive=True, n_samples=10,
                                                                             n_scenarios=3))
    day = ctl.run_day(seed=1)
    system = day.steps[day.steps.area == "system"]
    assert len(system) == 24 and np.isfinite(system.cost_total).all()


# ---------------------------------------------------------------------------- settings and kwargs

_ANY = st.one_of(st.booleans(), st.integers(-5, 10**6), st.sampled_from(EXTREMES), st.floats(-100, 100),
                 st.text(max_size=8), st.none(), st.just([1, 2]), st.sampled_from(["d33", "t30d2", "cloudy", "action",
                                                                                   "none", "intraday", "day_ahead"]))
_ENV_KEYS = ["case", "regime", "dt_minutes", "reactive", "v2g", "enforce_must_run", "ev_reserve_price_per_mwh",
             "sweep_tol_pu", "sweep_max_iter", "forecast_horizon_h", "forecast_obs", "bogus_key"]


_VALID = {"case": st.sampled_from(["d33", "t30d2"]), "regime": st.sampled_from(["cloudy", "sunny"]),
          "dt_minutes": st.sampled_from([15, 60]), "reactive": st.sampled_from(["none", "action"]),
          "v2g": st.booleans(), "enforce_must_run": st.booleans(),
          "ev_reserve_price_per_mwh": st.one_of(st.none(), st.floats(0, 100)),
          "sweep_tol_pu": st.floats(1e-12, 1e-6), "sweep_max_iter": st.integers(1, 200),
          "forecast_horizon_h": st.floats(0.25, 24), "forecast_obs": st.sampled_from(["day_ahead", "intraday"])}


@FUZZ
@given(env_id=st.sampled_from(list(ENV_IDS)),
       kwargs=st.fixed_dictionaries({}, optional={k: st.one_of(_VALID[k], _VALID[k], _ANY) if k in _VALID else _ANY
                                                  for k in _ENV_KEYS}).filter(lambda d: len(d) <= 4))
def test_random_gym_make_kwargs(env_id: str, kwargs: dict[str, Any]) -> None:
    fixed = ENV_IDS[env_id].get("case")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            e = gym.make(env_id, **kwargs)
    except ValueError as exc:
        assert str(exc)
        return
    base = e.unwrapped
    # nothing silently changed: every value given is the value used
    assert base.case == kwargs.get("case", fixed or "d33") and (fixed is None or base.case == fixed)
    for key, value in kwargs.items():
        got = getattr(base.settings, key) if hasattr(base.settings, key) else getattr(base, key)
        assert got == value and type(got) is type(value), key
    assert 0 < base.settings.forecast_horizon_h <= 24
    assert sum(int(np.prod(s.shape)) for s in base.observation_space.spaces.values()) < 10**5
    obs, _ = e.reset(seed=1)
    assert all(np.isfinite(v).all() for v in obs.values())


@FUZZ
@given(kwargs=st.dictionaries(st.sampled_from(["v2g", "enforce_must_run", "ev_reserve_price_per_mwh", "sweep_tol_pu",
                                               "sweep_max_iter", "forecast_horizon_h", "forecast_obs"]), _ANY))
def test_random_simulator_settings(kwargs: dict[str, Any]) -> None:
    try:
        s = SimulatorSettings(**kwargs)
    except ValueError as exc:
        assert "SimulatorSettings." in str(exc)
        return
    for key, value in kwargs.items():
        assert getattr(s, key) == value and type(getattr(s, key)) is type(value)


@FUZZ
@given(kwargs=st.dictionaries(st.sampled_from(["reactive", "n_samples", "n_scenarios", "socp"]), _ANY))
def test_random_loop_settings(kwargs: dict[str, Any]) -> None:
    try:
        s = LoopSettings(**kwargs)
    except ValueError as exc:
        assert "LoopSettings" in str(exc)
        return
    assert isinstance(s.reactive, bool) and isinstance(s.n_samples, int) and 1 <= s.n_scenarios <= s.n_samples


# ---------------------------------------------------------------------------- case files

_DATA = Path(tempfile.mkdtemp(prefix="gridroll-fuzz-cases-"))


def _data_dir() -> Path:
    if not any(_DATA.iterdir()):
        for f in env.cases.feeders.DATA_DIR.iterdir():
            shutil.copy(f, _DATA / f.name)
    return _DATA


_TOKENS = st.sampled_from(['"0.3"', "true", "-1", "0", "1e400", "nan", "inf", "[]", "[1, 1]", "{}", '""', "3.5",
                           "99999", '"x"', "[6, 6]"])


@settings(FUZZ, max_examples=20)
@given(file=st.sampled_from(["d33.toml", "d33.toml", "t30d2.toml", "tariff_dso.toml"]), data=st.data())
def test_corrupted_case_files(file: str, data: st.DataObject) -> None:
    from env.cases import feeders, td

    folder = _data_dir()
    original = (env.cases.feeders.DATA_DIR / file).read_text()
    lines = original.splitlines()
    assignments = [i for i, line in enumerate(lines) if "=" in line and not line.lstrip().startswith("#")]
    i = data.draw(st.sampled_from(assignments), label="line")
    how = data.draw(st.sampled_from(["delete", "value", "duplicate", "inline"]), label="how")
    if how == "delete":
        del lines[i]
    elif how == "duplicate":
        lines.insert(i, lines[i])
    elif how == "value":
        key = lines[i].split("=", 1)[0]
        lines[i] = f"{key}= {data.draw(_TOKENS, label='token')}"
    else:                                    # inside an inline table / array: swap one value
        line = lines[i]
        parts = line.split("= ")
        if len(parts) > 2:
            j = data.draw(st.integers(1, len(parts) - 1), label="part")
            rest = parts[j].split(",", 1)
            parts[j] = data.draw(_TOKENS, label="token") + ("," + rest[1] if len(rest) > 1 else "")
            lines[i] = "= ".join(parts)
    (folder / file).write_text("\n".join(lines) + "\n")
    try:
        with mock.patch.object(feeders, "DATA_DIR", folder), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)     # pandapower's own
            warnings.simplefilter("ignore", FutureWarning)
            if file == "d33.toml":
                feeders.feeder_from_file(file, "d33")
            elif file == "t30d2.toml":
                td.td_case(file, "t30d2")
            else:
                feeders.load_tariff(file)
    except ValueError as exc:
        assert file in str(exc), str(exc)                            # names the file
    finally:
        shutil.copy(env.cases.feeders.DATA_DIR / file, folder / file)
