"""Out-of-sample reserve check of the day-ahead plan and the choice of N and the radius by it."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import env
import policies.planning.calibration as cal
from policies.planning import PlanningSettings, build_planning_data, solve_centralized
from policies.planning.calibration import CalibrationSettings, calibrate, reserve_exceedance_share
from scenarios import sample_day

SMALL = PlanningSettings(n_samples=3, ev_samples=5)


def test_exceedance_share_is_the_share_of_hours_beyond_the_cleared_reserves() -> None:
    grid = env.load_case("t30d2")
    da = sample_day(grid, "cloudy", 1).day_ahead
    data = build_planning_data(grid, da, SMALL)
    plan = solve_centralized(data).plan
    fc = data.tso.wind_fc_mw.sum(axis=1)
    T, n_farm = plan.wind_planned_mw.shape
    one = {name: np.ones_like(getattr(plan, name)) for name in
           ("thermal_r_up_mw", "thermal_r_dn_mw", "boundary_r_up_mw", "boundary_r_dn_mw")}
    synthetic = replace(plan, wind_planned_mw=np.repeat(fc[:, None] / n_farm, n_farm, axis=1), **one)  # 5 MW each way
    deficit = np.where(fc >= 6.0, -6.0, 0.0)           # wind 6 MW below the plan where it can: beyond 5 MW up
    surplus = np.full(T, 4.0)                          # 4 MW above: within 5 MW down
    assert (fc + 4.0 <= data.tso.wind_cap_mw.sum()).all()
    share = reserve_exceedance_share(synthetic, data, np.stack([deficit, surplus]))
    assert 0 < (fc >= 6.0).sum() and share == pytest.approx((fc >= 6.0).sum() / (2 * T))
    assert reserve_exceedance_share(synthetic, data, np.stack([surplus])) == 0.0
    errors = cal.out_of_sample_errors(da, data, 50, seed=3)
    assert errors.shape == (50, T) and np.isfinite(errors).all() and errors.std() > 1.0   # the process is random
    np.testing.assert_array_equal(errors, cal.out_of_sample_errors(da, data, 50, seed=3))


def test_calibrate_keeps_the_first_candidate_that_meets_the_risk_level(monkeypatch: pytest.MonkeyPatch) -> None:
    shares = {(10, 0.0): 0.30, (10, 10.0): 0.12, (10, 20.0): 0.08, (10, 40.0): 0.05}
    monkeypatch.setattr(cal, "build_planning_data", lambda grid, da, s: SimpleNamespace(settings=s))
    monkeypatch.setattr(cal, "out_of_sample_errors", lambda da, data, n, seed: np.zeros((n, 24)))
    monkeypatch.setattr(cal, "solve_centralized", lambda data: SimpleNamespace(plan=data.settings))
    monkeypatch.setattr(cal, "reserve_exceedance_share",
                        lambda plan, data, errors: shares[(plan.n_samples, plan.radius_tso_mw)])
    grid: Any = None
    radii = (0.0, 10.0, 20.0, 40.0)
    r = calibrate(grid, None, PlanningSettings(), CalibrationSettings(risk=0.1, radii_tso_mw=radii))
    assert (r.radius_tso_mw, r.exceedance_share, r.reached) == (20.0, 0.08, True)
    assert [t[1] for t in r.tried] == [0.0, 10.0, 20.0]
    r = calibrate(grid, None, PlanningSettings(), CalibrationSettings(risk=0.01, radii_tso_mw=radii))
    assert (r.radius_tso_mw, r.exceedance_share, r.reached) == (40.0, 0.05, False)   # unreachable: the best, flagged
    with pytest.raises(ValueError, match="radii_tso_mw"):
        CalibrationSettings(radii_tso_mw=(10.0, 0.0))
    with pytest.raises(ValueError, match="risk"):
        CalibrationSettings(risk=0.0)


def test_the_calibrated_share_predicts_the_held_out_share() -> None:
    """The out-of-sample check is an honest estimate: on fresh paths of the same error process the
    plan it chose exceeds its cleared reserves in the share of hours it predicted (within 0.06, about
    three standard errors of a share near 0.5 on 200 x 24 correlated hours)."""
    grid = env.load_case("t30d2")
    da = sample_day(grid, "cloudy", 8210).day_ahead
    base = replace(SMALL, seed=8210)
    r = calibrate(grid, da, base, CalibrationSettings(risk=0.1, radii_tso_mw=(0.0, 40.0), seed=8210))
    assert [t[1] for t in r.tried][: len(r.tried)] == [0.0, 40.0][: len(r.tried)]
    assert r.reached == (r.exceedance_share <= 0.1)
    assert r.exceedance_share == min(t[2] for t in r.tried)
    data = build_planning_data(grid, da, replace(base, n_samples=r.n_samples, radius_tso_mw=r.radius_tso_mw))
    held = reserve_exceedance_share(r.plan, data, cal.out_of_sample_errors(da, data, 400, seed=99_999))
    assert abs(held - r.exceedance_share) <= 0.06


@pytest.mark.slow  # ~30 s: two calibration candidates and two plans (the default run stays under 10 minutes)
def test_aro_dro_calibrated_plans_with_its_choice_and_reports_the_share() -> None:
    import gymnasium as gym

    from policies import make_policy
    from policies.aro_dro import AroDroSettings

    grid = env.load_case("t30d2")
    cal_settings = CalibrationSettings(risk=0.1, radii_tso_mw=(0.0, 40.0), n_out_of_sample=50)
    policy = make_policy("aro_dro_calibrated", grid, settings=AroDroSettings(
        planning=SMALL, planner="centralized", replan_every_h=1.0, calibration=cal_settings))
    assert policy.name == "aro_dro_calibrated"
    e = gym.make("gridroll/T30D2-v0", dt_minutes=15, regime="cloudy")
    e.reset(seed=8211, options={"scenario_seed": 8211})
    policy.reset(8211)
    for _ in range(5):                                 # plans at 0 h and 1 h
        obs = e.unwrapped.observation_typed
        e.unwrapped.step_dispatch(policy.act(obs, obs.forecast))
    log = [r for r in policy.plan_log if r.get("method") == "calibration"]
    assert len(log) == 1 and log[0]["radius_tso_mw"] in (0.0, 40.0)
    stats = policy.day_stats()
    assert stats["aro_calibration_share"] == pytest.approx(log[0]["exceedance_share"])
    assert stats["aro_calibration_reached"] == float(log[0]["reached"])
    assert stats["aro_plans"] == 2                     # the calibration is not a plan
    assert 0.0 <= stats["aro_reserve_exceedance_share"] <= 1.0
    assert policy.fallback_log == []
