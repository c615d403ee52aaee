"""Contract every registered policy must pass, on a feeder case and a T-D case.

T-D-only policies (:data:`policies.TD_ONLY_POLICIES`, the DRO-ARO variants and the P2P market
policies) run the contract on t30d2 (DRO-ARO) or t30d5 (P2P, whose ADNs have PV and storage) only
and must refuse the single feeder with a clear ValueError. The P2P policies plan in 6-hour periods
here (a smaller MISOCP), with plans shared through the same cache. Their day-ahead plan costs
seconds, so they plan centrally (instead of by ADMM) with plans shared through a cache, and only
``aro_dro`` runs by default; the other variants are marked slow (``-m slow``).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import env  # noqa: F401  (registers the envs)
from policies import P2P_POLICIES, TD_ONLY_POLICIES, Policy, make_policy, policy_names, policy_supports
from policies.aro_dro import AroDroSettings
from policies.p2p.data import P2PSettings

_CASES = ("d33", "t30d2")
_FAST_TD_ONLY = ("aro_dro", "flex_coordinated", "p2p_dso_led")   # the T-D-only policies of the default run
_FLEX = ("flex_coordinated", "flex_coordinated_ed")  # seed 002's policies: contract on its case t14d2
_PLAN_CACHE: dict = {}                # plans by content, shared by the T-D-only policies' runs
_P2P_SETTINGS = P2PSettings(period_minutes=360, time_limit_s=60.0, mip_gap=1e-2)


def _td_case(name: str) -> str:
    return "t30d5" if name in P2P_POLICIES else "t30d2"


def _make(name: str, grid: object) -> Policy:
    if name in P2P_POLICIES:
        return make_policy(name, grid, settings=_P2P_SETTINGS, replan_every_h=6.0, plan_cache=_PLAN_CACHE)
    if name in TD_ONLY_POLICIES and name not in _FLEX:
        settings = AroDroSettings(planner="centralized")
        return make_policy(name, grid, settings=settings, plan_cache=_PLAN_CACHE)
    return make_policy(name, grid)


def _marks(name: str, whole_day: bool = False) -> list:
    slow = name in TD_ONLY_POLICIES and (name not in _FAST_TD_ONLY or (whole_day and name in (*_FLEX, *P2P_POLICIES)))
    return [pytest.mark.slow] if slow else []


def _supported_pairs() -> list:
    grids = {case: env.load_case(case) for case in (*_CASES, "t30d5")}
    cases = lambda name: ("d33", _td_case(name)) if name in P2P_POLICIES else _CASES  # noqa: E731
    # the clairvoyant dispatch variant shares perfect_information's model: on t30d2 it runs in the slow set
    slow_pairs = {("t30d2", "perfect_information_dispatch")}
    pairs = [pytest.param(case, name, id=f"{case}-{name}",
                          marks=[pytest.mark.slow] if (case, name) in slow_pairs else _marks(name))
             for name in policy_names() if name not in _FLEX
             for case in cases(name) if policy_supports(name, grids[case])]
    return pairs + [pytest.param("t14d2", name, marks=_marks(name), id=f"t14d2-{name}") for name in _FLEX]


def _day_case(name: str) -> pytest.param:
    case = "t14d2" if name in _FLEX else _td_case(name) if name in TD_ONLY_POLICIES else "d33"
    return pytest.param(case, name, marks=_marks(name, whole_day=True), id=f"{case}-{name}")


def _play(play_checked, case: str, name: str, seed: int, n_steps: int) -> list[np.ndarray]:  # noqa: ANN001
    e = gym.make("gridroll/TDGrid-v0", case=case, regime="cloudy")
    base = e.unwrapped
    policy = _make(name, base.grid)
    e.reset(seed=seed, options={"scenario_seed": seed})
    policy.reset(seed)
    if hasattr(policy, "observe_day"):  # clairvoyant yardstick: the controller hands it the day
        policy.observe_day(base.simulator.scenario)
    return play_checked(base, policy, n_steps)


@pytest.mark.parametrize(("case", "name"), _supported_pairs())
def test_policy_satisfies_protocol_and_is_deterministic(play_checked, case: str, name: str) -> None:  # noqa: ANN001
    policy = _make(name, env.load_case(case))
    assert isinstance(policy, Policy)
    assert policy.name == name
    first = _play(play_checked, case, name, seed=3, n_steps=12)
    again = _play(play_checked, case, name, seed=3, n_steps=12)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("case", "name"), [_day_case(name) for name in policy_names()])
def test_policy_runs_a_whole_day(play_checked, case: str, name: str) -> None:  # noqa: ANN001
    _play(play_checked, case, name, seed=5, n_steps=96)


@pytest.mark.parametrize("name", TD_ONLY_POLICIES)
def test_td_only_policy_refuses_a_single_feeder(name: str) -> None:
    grid = env.load_case("d33")
    assert not policy_supports(name, grid)
    with pytest.raises(ValueError, match="needs a T-D grid"):
        make_policy(name, grid)


def test_unknown_policy_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown policy 'greedy'.*heuristic"):
        make_policy("greedy", env.load_case("d33"))
    with pytest.raises(ValueError, match="unknown policy 'greedy'"):
        policy_supports("greedy", env.load_case("d33"))
