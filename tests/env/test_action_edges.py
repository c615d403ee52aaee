"""Extreme and non-real actions end in a clear error or a recorded, finite projection, with no
numpy warning leaking from ``step``; ``line_loading_max`` is absent (not 0) without rated lines (issue 12, item 6)."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest

import env  # noqa: F401  (registers the envs)


def _env(env_id: str):  # noqa: ANN202
    e = gym.make(env_id)
    e.reset(seed=3)
    return e


@pytest.mark.parametrize("env_id", ["gridroll/D33-v0", "gridroll/T30D2-v0"])
@pytest.mark.parametrize("value", [1.7e308, -1.7e308, 1e200, 1e100, 3.0])
def test_huge_action_is_projected_finitely_or_rejected_without_warnings(env_id: str, value: float) -> None:
    e = _env(env_id)
    a = np.full(e.action_space.shape, value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # any numpy RuntimeWarning fails the test
        try:
            _, reward, _, _, info = e.step(a)
        except ValueError as exc:
            assert "decodes to" in str(exc) and "action[" in str(exc)
            return
    assert math.isfinite(reward)
    for name, moved in info["projection"].items():
        assert np.isfinite(moved).all(), name
    assert any(np.abs(moved).max(initial=0.0) > 0 for moved in info["projection"].values())


def test_t30d2_action_of_1_7e308_is_a_clear_error() -> None:
    e = _env("gridroll/T30D2-v0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"action\[\d+\] \(thermal_p_mw\[0\]\) = 1\.7e\+308 decodes to inf"):
            e.step(np.full(e.action_space.shape, 1.7e308))


@pytest.mark.parametrize("action", [
    lambda n: np.zeros(n) + 0.5j,
    lambda n: np.zeros(n, dtype=complex),
    lambda n: np.ones(n, dtype=bool),
    lambda n: np.array(["0.1"] * n),
    lambda n: [None] * n,
    lambda n: [[0.1, 0.2], [0.3]],
])
def test_non_real_action_is_a_clear_error(action) -> None:  # noqa: ANN001
    e = _env("gridroll/D33-v0")
    a = action(e.action_space.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # np.asarray(complex, float) warns and truncates
        with pytest.raises(ValueError, match=r"the action: must (hold real numbers|be an array of real)"):
            e.step(a)


def test_python_list_and_float32_actions_still_work() -> None:
    e = _env("gridroll/D33-v0")
    n = e.action_space.shape[0]
    e.step([0.1] * n)
    e.step(np.full(n, 0.2, dtype=np.float32))
    e.step(np.zeros(n, dtype=np.int64))


def _unrated(grid):  # noqa: ANN001, ANN202
    """``grid`` with every transmission rating removed (as t118d10's 9900 MVA placeholders)."""
    import dataclasses

    t = grid.transmission
    branch = dataclasses.replace(t.branch, rate_mva=np.full(len(t.branch), np.inf))
    return dataclasses.replace(grid, transmission=dataclasses.replace(t, branch=branch))


@pytest.mark.parametrize(("case", "rated"), [("d33", False), ("t30d2 unrated", False), ("t30d2", True)])
def test_line_loading_max_is_absent_without_rated_lines(case: str, rated: bool) -> None:
    from env.dispatch import Dispatch
    from env.simulator import GridSimulator
    from scenarios.day import sample_day

    grid = env.load_case(case.split()[0])
    if case.endswith("unrated"):
        grid = _unrated(grid)
    info = GridSimulator(grid, sample_day(grid, "cloudy", 1)).step(Dispatch.zeros(grid)).info()
    assert ("line_loading_max" in info) is rated
    if rated:
        assert math.isfinite(info["line_loading_max"])
    assert info["violations"]["line_overload_max"] == 0.0 or rated


@pytest.mark.parametrize("value", [np.array([0.1 + 0.2j]), np.array([True]), np.array(["0.3"]), [None]])
def test_dispatch_fields_reject_non_real_values(value) -> None:  # noqa: ANN001
    from env.dispatch import Dispatch

    grid = env.load_case("d33")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"Dispatch\.storage_p_mw: must hold real numbers"):
            Dispatch.zeros(grid).replace(storage_p_mw=value)


def test_from_array_rejects_complex_actions_without_truncating() -> None:
    from env.dispatch import Dispatch

    e = _env("gridroll/D33-v0")
    limits = e.unwrapped.limits
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"Dispatch\.from_array: the action: must hold real numbers"):
            Dispatch.from_array(np.zeros(limits.sizes.n_action) + 0.5j, limits)


def test_set_reactive_rejects_complex_setpoints() -> None:
    e = _env("gridroll/D33-v0")
    n = e.unwrapped.model.sizes.n_comp
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"set_reactive: q_comp_mvar: must hold real numbers"):
            e.unwrapped.set_reactive(np.zeros(n) + 0.1j)
