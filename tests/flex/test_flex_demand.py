"""Flexibility demand by p-box (seed 002 §3): envelopes, truncation, demand, CVaR risk cost."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from scenarios.flex_demand import (
    FlexDemand,
    NetLoadErrors,
    demand_of,
    fit_fixed,
    fit_pbox,
    flexibility_demand,
    over_estimation,
    risk_cost,
    tail_probability,
    truncated_range,
)


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    rng = np.random.default_rng(7)
    mu, sigma = np.array([0.0, 2.0, -1.0]), np.array([1.0, 3.0, 0.5])
    return mu + sigma * rng.standard_normal((2000, 3))


def test_fitted_intervals_hold_the_true_parameters(samples: np.ndarray) -> None:
    box = fit_pbox(samples, n_batches=10)
    assert np.all(box.mu_lo <= [0.0, 2.0, -1.0]) and np.all(box.mu_hi >= [0.0, 2.0, -1.0])
    assert np.all(box.sigma_lo <= [1.0, 3.0, 0.5]) and np.all(box.sigma_hi >= [1.0, 3.0, 0.5])
    assert np.all(box.mu_hi > box.mu_lo) and np.all(box.sigma_hi > box.sigma_lo)


def test_envelopes_contain_every_member_cdf(samples: np.ndarray) -> None:
    box = fit_pbox(samples)
    rng = np.random.default_rng(3)
    x = np.linspace(-12, 15, 301)[:, None]
    lo, hi = box.cdf_bounds(x)
    for _ in range(200):
        mu = rng.uniform(box.mu_lo, box.mu_hi)
        sigma = rng.uniform(box.sigma_lo, box.sigma_hi)
        f = norm.cdf(x, mu, sigma)
        assert np.all(lo <= f + 1e-12) and np.all(f <= hi + 1e-12)


@pytest.mark.parametrize("beta", [0.8, 0.9, 0.95, 0.99])
def test_truncated_range_equals_the_envelope_quantiles(samples: np.ndarray, beta: float) -> None:
    """F_upper(dP^d) = beta_d and F_lower(dP^u) = beta_u, solved numerically, equal the closed form,
    which also equals the extreme member quantiles over a grid of (mu, sigma)."""
    box = fit_pbox(samples)
    d, u = truncated_range(box, beta)
    b_d, b_u = (1 - beta) / 2, (1 + beta) / 2
    for j in range(3):
        upper = lambda v: box.cdf_bounds(np.array(v))[1][j] - b_d  # noqa: E731
        lower = lambda v: box.cdf_bounds(np.array(v))[0][j] - b_u  # noqa: E731
        assert brentq(upper, -50, 50, xtol=1e-12) == pytest.approx(d[j], abs=1e-8)
        assert brentq(lower, -50, 50, xtol=1e-12) == pytest.approx(u[j], abs=1e-8)
        grid_mu = np.linspace(box.mu_lo[j], box.mu_hi[j], 11)[:, None]
        grid_sd = np.linspace(box.sigma_lo[j], box.sigma_hi[j], 11)[None, :]
        assert norm.ppf(b_d, grid_mu, grid_sd).min() == pytest.approx(d[j], abs=1e-10)
        assert norm.ppf(b_u, grid_mu, grid_sd).max() == pytest.approx(u[j], abs=1e-10)


def test_fixed_model_is_one_pooled_normal(samples: np.ndarray) -> None:
    box = fit_fixed(samples)
    assert np.all(box.mu_lo == box.mu_hi) and np.all(box.sigma_lo == box.sigma_hi)
    assert box.mu_lo[0] == pytest.approx(samples.mean()) and box.sigma_hi[0] == pytest.approx(samples.std(ddof=1))


def test_flexibility_demand_known_answer() -> None:
    pn = np.array([100.0, 110.0, 90.0, 95.0])
    eps_d, eps_u = np.array([0, -4.0, -6.0, -3.0]), np.array([0, 5.0, 2.0, 4.0])
    d = flexibility_demand(pn, eps_d, eps_u)
    assert d.up_mw.tolist() == [15.0, 0.0, 9.0]          # max(10 + 5, 0), max(-20 + 2, 0), max(5 + 4, 0)
    assert d.down_mw.tolist() == [0.0, -26.0, 0.0]       # min(10 - 4, 0), min(-20 - 6, 0), min(5 - 3, 0)


def test_net_load_bounds_combine_the_sources() -> None:
    """eps_u = dL^u - dW^d - dPV^d with the load's upper and the renewables' lower bounds."""
    rng = np.random.default_rng(1)
    z = rng.standard_normal((400, 5))
    err = NetLoadErrors(load=2 * z, wind=np.zeros_like(z) + 1e-3 * z, pv=np.zeros_like(z), net_load_mw=np.zeros(5))
    d = demand_of(err, 0.9, model="fixed")
    lo_l, hi_l = truncated_range(fit_fixed(err.load), 0.9)
    lo_w, hi_w = truncated_range(fit_fixed(err.wind), 0.9)
    assert d.eps_u_mw == pytest.approx((hi_l - lo_w)[1:]) and d.eps_d_mw == pytest.approx((lo_l - hi_w)[1:])


def test_cvar_risk_term_equals_a_brute_force_sample_count() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0.5, 2.0, size=(500, 4))
    demand = FlexDemand(up_mw=np.array([3.0, 1.0, 0.0]), down_mw=np.array([-2.0, 0.0, -4.0]),
                        eps_d_mw=np.array([-3.0, -3.5, -2.5]), eps_u_mw=np.array([3.0, 4.0, 2.5]))
    supply_up, supply_dn = np.array([2.0, 2.0, 2.0]), np.array([1.0, 1.0, 5.0])
    beta, cu, cd, vu, vd = 0.95, 10.0, 20.0, 50.0, 70.0
    got = risk_cost(demand, supply_up, supply_dn, x, beta, cu, cd, vu, vd)
    inside = cu * (1.0 + 0 + 0) + cd * (1.0 + 0 + 0)
    cvar = 0.0
    for t in range(3):                      # step t's demand uses the errors of step t + 1
        e = x[:, t + 1]
        s_u, s_d = e > demand.eps_u_mw[t], e < demand.eps_d_mw[t]       # the binaries s_n
        p_u, p_d = s_u.mean(), s_d.mean()                              # tail probabilities
        loss_u = (e[s_u] - demand.eps_u_mw[t]).mean() if s_u.any() else 0.0
        loss_d = (demand.eps_d_mw[t] - e[s_d]).mean() if s_d.any() else 0.0
        cvar += (vu * p_u * loss_u + vd * p_d * loss_d) / (1 - beta)
    assert got["inside"] == pytest.approx(inside)
    assert got["cvar"] == pytest.approx(cvar, rel=1e-12)
    p_u, p_d = tail_probability(x[:, 1:], demand.eps_d_mw, demand.eps_u_mw)
    assert p_u[0] == pytest.approx((x[:, 1] > 3.0).mean()) and p_d[2] == pytest.approx((x[:, 3] < -2.5).mean())


def test_over_estimation_is_zero_for_a_perfect_estimate() -> None:
    pn = np.array([10.0, 12.0, 9.0])
    err = np.zeros((3, 3))
    exact = flexibility_demand(pn, np.zeros(3), np.zeros(3))
    assert over_estimation(exact, pn, err)["over_total_mw"] == 0.0
    wide = flexibility_demand(pn, np.full(3, -1.0), np.full(3, 1.0))
    out = over_estimation(wide, pn, err)
    assert out["over_up_mw"] == pytest.approx(1.0 + 0.0) and out["over_down_mw"] == pytest.approx(0.0 + 1.0)
    assert out["coverage"] == 1.0


def test_fixed_parameter_normals_and_the_pbox_ordering(samples) -> None:  # noqa: ANN001
    """``normal`` is the per-step point-estimate normal truncated at beta, ``normal_3sigma`` the
    conventional mu +/- 3 sigma; the p-box bound is the extreme over its members, so at the same
    beta it is never narrower than the point-estimate normal (it over-estimates more), while
    against the 3-sigma rule it is narrower (docs/flexibility.md §4)."""
    from scenarios.flex_demand import source_range

    mu, sd = samples.mean(axis=0), samples.std(axis=0, ddof=1)
    lo3, hi3 = source_range(samples, 0.95, model="normal_3sigma")
    assert lo3 == pytest.approx(mu - 3 * sd) and hi3 == pytest.approx(mu + 3 * sd)
    lo_n, hi_n = source_range(samples, 0.95, model="normal")
    assert hi_n == pytest.approx(mu + sd * norm.ppf(0.975)) and lo_n == pytest.approx(mu + sd * norm.ppf(0.025))
    lo_p, hi_p = source_range(samples, 0.95, model="pbox")
    assert np.all(hi_p >= hi_n) and np.all(lo_p <= lo_n)
    assert np.all(hi_p < hi3) and np.all(lo_p > lo3)
