"""The P2P policies in the loop (policies.p2p.policy, docs/p2p.md §5): intraday re-planning at the
set interval from the current step, fallbacks and non-optimal plans logged, and only public entry
points of the heuristic used. The market solver is replaced by a stub (the MISOCP itself is tested
in test_p2p_market.py): these tests are about when the policy plans and what it records."""

from __future__ import annotations

import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import env  # noqa: F401  (registers the envs)
import policies.p2p.policy as p2p_policy
from policies.p2p.data import P2PSettings
from policies.p2p.market import SolveInfo
from policies.p2p.policy import P2PPolicy

_SETTINGS = P2PSettings(period_minutes=120, time_limit_s=30.0, mip_gap=5e-3)


class _StubSolver:
    """Records each call's horizon; returns an idle schedule with the given SCIP status, or raises
    on the calls listed in ``fail``."""

    def __init__(self, status: str = "optimal", fail: tuple[int, ...] = ()) -> None:
        self.calls: list[int] = []
        self.status, self.fail = status, fail

    def __call__(self, grid, day, settings):  # noqa: ANN001, ANN204
        self.calls.append(day.n_periods)
        if len(self.calls) - 1 in self.fail:
            raise RuntimeError("P2P market: SCIP status infeasible (stub)")
        T = day.n_periods
        zeros = tuple(np.zeros((len(f.storage.e_max_mwh), T)) for f in grid.feeders)
        avail = tuple(np.asarray(a, dtype=float).T for a in day.der_avail_mw)
        info = SolveInfo(self.status, 0.1, 1, 1, 1, 0.0 if self.status == "optimal" else 0.04)
        return type("Res", (), {"ch_mw": zeros, "dis_mw": zeros, "der_mw": avail, "der_avail_mw": avail,
                                "info": info})()


def _play(monkeypatch: pytest.MonkeyPatch, stub: _StubSolver, n_steps: int, replan_every_h: float | None) -> P2PPolicy:
    monkeypatch.setitem(p2p_policy._SOLVERS, "dso_led", stub)
    e = gym.make("gridroll/TDGrid-v0", case="t30d5", regime="sunny")
    base = e.unwrapped
    policy = P2PPolicy(base.grid, "dso_led", settings=_SETTINGS, replan_every_h=replan_every_h)
    e.reset(seed=8700, options={"scenario_seed": 8700})
    policy.reset(8700)
    for _ in range(n_steps):
        obs = base.observation_typed
        base.step_dispatch(policy.act(obs, obs.forecast))
    return policy


@pytest.mark.slow
def test_replans_intraday_at_the_set_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    stub = _StubSolver()
    policy = _play(monkeypatch, stub, n_steps=17, replan_every_h=2.0)    # 15-min steps: plans at 0, 8, 16
    assert [r.step for r in policy.plan_log] == [0, 8, 16]
    assert stub.calls == [12, 11, 10]              # 2-h periods: the rest of the day from the step
    assert policy.plan is not None and policy.plan.start_step == 16
    assert policy.fallback_log == []
    once = _StubSolver()
    assert [r.step for r in _play(monkeypatch, once, n_steps=17, replan_every_h=None).plan_log] == [0]
    assert once.calls == [12]


@pytest.mark.slow
def test_failed_replan_keeps_the_plan_and_non_optimal_plans_are_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = _play(monkeypatch, _StubSolver(fail=(1,)), n_steps=9, replan_every_h=2.0)
    assert [s for s, _ in policy.fallback_log] == [8]
    assert "keeping the last plan" in policy.fallback_log[0][1]
    assert policy.plan is not None and policy.plan.start_step == 0     # the morning plan is kept
    assert policy.plan_log[-1].status == "failed"
    timed_out = _play(monkeypatch, _StubSolver(status="timelimit"), n_steps=9, replan_every_h=2.0)
    assert [s for s, _ in timed_out.fallback_log] == [0, 8]           # played, never silently
    assert all("plan not optimal: SCIP timelimit, gap 4.00%" in r for _, r in timed_out.fallback_log)


def test_solve_info_optimal_only_for_solved_statuses() -> None:
    assert SolveInfo("optimal", 1.0, 1, 1, 1, 0.0).optimal
    assert SolveInfo("gaplimit,optimal", 1.0, 1, 1, 1, 1e-3).optimal
    assert not SolveInfo("optimal,timelimit", 1.0, 1, 1, 1, 0.2).optimal


def test_policy_uses_only_public_heuristic_methods() -> None:
    src = Path(p2p_policy.__file__).read_text()
    assert not re.findall(r"heuristic\._\w+", src)
    assert "heuristic.node_demand(" in src and "heuristic.thermal_dispatch(" in src
