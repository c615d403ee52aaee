"""Certainty-equivalent MPC: the Policy contract, determinism, solver-failure fallback, EV replay."""

from __future__ import annotations

import cvxpy as cp
import gymnasium as gym
import numpy as np
import pytest

import env  # noqa: F401  (registers the envs)
from policies.base import Policy
from policies.heuristic import HeuristicPolicy
from policies.mpc import MPCPolicy, MPCSettings


def _base(case: str, seed: int):  # noqa: ANN202
    e = gym.make("gridroll/TDGrid-v0", case=case, regime="cloudy")
    e.reset(seed=seed, options={"scenario_seed": seed})
    return e.unwrapped


def _play(play_checked, case: str, seed: int, n_steps: int, **kw) -> tuple[list[np.ndarray], MPCPolicy]:  # noqa: ANN001, ANN003
    base = _base(case, seed)
    policy = MPCPolicy(base.grid, **kw)
    policy.reset(seed)
    return play_checked(base, policy, n_steps), policy


@pytest.mark.parametrize(("case", "horizon"), [("d33", None), ("t30d2", 12)])
def test_mpc_satisfies_the_policy_contract_and_is_deterministic(play_checked, case: str, horizon: int | None) -> None:  # noqa: ANN001
    first, policy = _play(play_checked, case, 3, 6, horizon_steps=horizon)
    assert isinstance(policy, Policy) and policy.name == "mpc"
    assert policy.fallbacks == 0 and policy.statuses == ["optimal"] * 6
    assert len(policy.solve_ms) == 6 and policy.day_stats()["mpc_steps"] == 6
    again, _ = _play(play_checked, case, 3, 6, horizon_steps=horizon)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_mpc_reuses_its_compiled_windows_across_days() -> None:
    base = _base("d33", 1)
    policy = MPCPolicy(base.grid, horizon_steps=8)
    for seed in (1, 2):
        base.reset(seed=seed, options={"scenario_seed": seed})
        policy.reset(seed)
        for _ in range(3):
            obs = base.observation_typed
            base.step_dispatch(policy.act(obs, obs.forecast))
    assert policy.n_compiled == 1 and policy.fallbacks == 0


def test_solver_failure_falls_back_to_the_heuristic_and_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    base = _base("d33", 2)
    policy = MPCPolicy(base.grid, horizon_steps=4)
    policy.reset(2)
    obs = base.observation_typed
    assert policy.act(obs, obs.forecast) is not None and policy.fallbacks == 0
    base.step_dispatch(policy.act(obs, obs.forecast))
    calls = []

    def broken(self: cp.Problem, *args, solver: str = "", **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(solver)
        if solver == "HIGHS":
            raise cp.error.SolverError("forced failure")
        self._status = cp.INFEASIBLE                  # the fallback solver "returns" infeasible
        return float("inf")

    monkeypatch.setattr(cp.Problem, "solve", broken)
    obs = base.observation_typed
    d = policy.act(obs, obs.forecast)
    assert calls == ["HIGHS", "CLARABEL"]
    expected = HeuristicPolicy(base.grid).act(obs, obs.forecast)
    np.testing.assert_array_equal(d.to_flat(), expected.to_flat())
    assert policy.fallbacks == 1 and policy.day_stats()["mpc_fallbacks"] == 1
    step, reason = policy.fallback_log[-1]
    assert step == obs.step and "forced failure" in reason and "infeasible" in reason
    monkeypatch.undo()
    policy.reset(3)
    assert policy.fallbacks == 0 and policy.fallback_log == []


@pytest.mark.parametrize(("case", "n_steps", "horizon"), [("d33", 40, 4), ("t30d2", 30, 4)])
def test_ev_replay_reproduces_the_env_fleet(case: str, n_steps: int, horizon: int) -> None:
    """The policy rebuilds every known EV's state from the observation alone (on T-D, reserve
    deployments included, by matching the observed delivered energy)."""
    base = _base(case, 1)
    policy = MPCPolicy(base.grid, horizon_steps=horizon)
    policy.reset(1)
    fleet = base.simulator.fleet
    checked = 0
    for _ in range(n_steps):
        obs = base.observation_typed
        base.step_dispatch(policy.act(obs, obs.forecast))
        obs = base.observation_typed
        replica = policy.ev_forecaster.replica(obs, obs.forecast)
        assert replica is not None
        idx = np.asarray(replica.connected(obs.step))
        np.testing.assert_allclose(np.asarray(replica.e_kwh)[idx], np.asarray(fleet.e_kwh)[idx], atol=1e-6)
        checked += idx.size
    assert checked > 0 and policy.ev_forecaster.replay_failures == 0
    if case == "t30d2":  # EV reserves were cleared, so the replay had to recover deployments
        assert any(np.abs(o).sum() > 0 for o in [policy.ev_forecaster._delivered_kw[k]
                                                  - policy.ev_forecaster._setpoint_kw[k]
                                                  for k in range(n_steps - 1)])


def test_window_bounds_of_the_stations_are_consistent() -> None:
    base = _base("d33", 1)
    policy = MPCPolicy(base.grid, horizon_steps=4)       # short windows to get there fast
    policy.reset(1)
    for _ in range(36):                                  # to 9:00, EVs connected and arriving
        obs = base.observation_typed
        base.step_dispatch(policy.act(obs, obs.forecast))
    obs = base.observation_typed
    K, n_active = 64, 60
    p_lo, p_hi, x_lo, x_hi = policy.ev_forecaster.bounds(obs, obs.forecast, K, n_active)
    assert (p_lo <= p_hi + 1e-12).all() and (x_lo <= x_hi + 1e-12).all()
    np.testing.assert_allclose(p_lo[:, 0], obs.ev.p_min_kw * 1e-3)
    np.testing.assert_allclose(p_hi[:, 0], obs.ev.p_max_kw * 1e-3)
    assert (p_hi[:, n_active:] == 0).all() and (np.diff(x_hi, axis=1) >= -1e-12).all()
    assert (p_hi[:, 1:n_active].sum(axis=1) > 0).all()  # expected arrivals add power later in the day


def test_mpc_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="formulation"):
        MPCSettings(formulation="ac")
    with pytest.raises(ValueError, match="horizon_steps"):
        MPCSettings(horizon_steps=0)
    with pytest.raises(ValueError, match="solver"):
        MPCSettings(formulation="lin", solver="ECOS")
    with pytest.raises(ValueError, match="reserve_margin"):
        MPCSettings(reserve_margin=2.0)
    with pytest.raises(ValueError, match="unknown keys"):
        MPCSettings.from_kwargs(horizon=4)
    assert MPCSettings(formulation="soc").solvers == ("CLARABEL", "ECOS")
    assert MPCSettings(formulation="soc", solver="ECOS").solvers == ("ECOS", "CLARABEL")


@pytest.mark.slow
def test_mpc_with_distflow_soc(play_checked) -> None:  # noqa: ANN001
    _, policy = _play(play_checked, "d33", 1, 4, formulation="soc", horizon_steps=16)
    assert policy.fallbacks == 0 and set(policy.statuses) == {"optimal"}
