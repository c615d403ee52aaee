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
