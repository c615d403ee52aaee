"""The per-step arrays of many days (env.day_data.day_arrays) are each day's arrays alone."""

from __future__ import annotations

import numpy as np
import pytest

from env.cases import load_case
from env.day_data import DayData, day_arrays
from env.grid_model import GridModel
from scenarios.day import sample_day, sample_days

_NAMES = ("load_p", "load_q", "s_load_fb_pu", "der_avail", "der_avail_sum", "tso", "pv_pu", "wind_pu", "fc_rows")


@pytest.mark.parametrize("case", ["d33", "t30d2", "t14d2"])
def test_days_together_equal_each_day_alone(case: str) -> None:
    """Day b of a batch has the arrays of the day computed alone (B = 1): the elementwise
    ones bit for bit, the row products (feeder injection, net-load rows) to rounding; the
    days differ, so a batch that mixed two days up fails."""
    grid = load_case(case)
    model = GridModel(grid)
    days = sample_days(grid, "cloudy", [11, 12, 13])
    # a third day of another regime: its DER ratings differ from the others'
    days[2] = sample_day(grid, "high_penetration", 13)
    batch = day_arrays(model, days, 2.0)
    assert batch["load_p"].shape[:2] == (days[0].n_steps, 3)
    for b, sc in enumerate(days):
        alone, view = DayData(model, sc, 2.0), DayData(model, sc, 2.0, batch, b)
        for name in _NAMES:
            a, v = getattr(alone, name), getattr(view, name)
            assert a.shape == v.shape and not v.flags.writeable, name
            if name in ("s_load_fb_pu", "fc_rows"):
                np.testing.assert_allclose(v, a, rtol=1e-13, atol=1e-12, err_msg=name)
            else:
                np.testing.assert_array_equal(v, a, err_msg=name)
        assert view.price_list == alone.price_list and view.h_fc == alone.h_fc
    assert not np.array_equal(batch["der_avail"][:, 0], batch["der_avail"][:, 2])


def test_day_data_checks_its_batch_and_layout() -> None:
    grid = load_case("d33")
    model = GridModel(grid)
    days = sample_days(grid, "cloudy", [1, 2])
    batch = day_arrays(model, days, 1.0)
    with pytest.raises(ValueError, match="does not hold this scenario at index 0"):
        DayData(model, days[1], 1.0, batch, 0)
    with pytest.raises(ValueError, match="index 2"):
        DayData(model, days[0], 1.0, batch, 2)
    other = sample_day(load_case("t30d2"), "cloudy", 1)
    with pytest.raises(ValueError, match="DayData: scenario layout"):
        DayData(model, other, 1.0)
    with pytest.raises(ValueError, match="same number and length of steps"):
        day_arrays(model, [days[0], sample_day(grid, "cloudy", 2, dt_minutes=60)], 1.0)
