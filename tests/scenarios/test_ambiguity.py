"""Ambiguity sets: Wasserstein worst case (docs/math.md §4), budget set (§5), p-box CVaR (§8)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog
from scipy.special import ndtri

from scenarios import BudgetSet, PBox, WassersteinBall, cvar_sample_lp
from scenarios.ambiguity import cvar_shortfall_normal, top_gamma_sum


def _loss(a: np.ndarray, b: np.ndarray, xi: np.ndarray) -> np.ndarray:
    return np.max(np.atleast_2d(xi) @ a.T + b, axis=1)


def _transport_lp(samples: np.ndarray, grid: np.ndarray, loss: np.ndarray, eps: float, scale: np.ndarray) -> float:
    """Brute force: max sum_ij pi_ij l(z_j) s.t. sum_j pi_ij = 1/N, sum pi_ij ||(xi_i - z_j)/scale||_1 <= eps."""
    n, g = samples.shape[0], grid.shape[0]
    cost = np.abs((samples[:, None, :] - grid[None, :, :]) / scale).sum(-1)
    a_eq = np.kron(np.eye(n), np.ones((1, g)))
    res = linprog(-np.tile(loss, n), A_ub=cost.reshape(1, -1), b_ub=[eps], A_eq=a_eq, b_eq=np.full(n, 1 / n),
                  bounds=(0, None), method="highs")
    assert res.status == 0
    return -res.fun


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 8), d=st.integers(1, 3), k=st.integers(1, 3),
       boxed=st.booleans())
def test_radius_zero_is_sample_average(seed: int, n: int, d: int, k: int, boxed: bool) -> None:
    rng = np.random.default_rng(seed)
    xi = rng.uniform(-1, 1, size=(n, d))
    a, b = rng.normal(size=(k, d)), rng.normal(size=k)
    box = dict(support_lo=-2 * np.ones(d), support_hi=2 * np.ones(d)) if boxed else {}
    ball = WassersteinBall(xi, rng.uniform(0.5, 2, size=d), 0.0, **box)
    wc = ball.worst_case_expectation(a, b)
    assert wc.value == pytest.approx(_loss(a, b, xi).mean(), abs=1e-7)
    assert wc.value == pytest.approx(ball.sample_average(a, b), abs=1e-7)


def test_worst_case_grows_with_radius_and_reaches_robust_bound() -> None:
    rng = np.random.default_rng(3)
    xi = rng.uniform(-1, 1, size=(12, 2))
    a, b = rng.normal(size=(3, 2)), rng.normal(size=3)
    lo, hi = -np.array([2.0, 1.5]), np.array([1.0, 2.5])
    values = [WassersteinBall(xi, [1.0, 0.5], r, lo, hi).worst_case_expectation(a, b).value
              for r in (0.0, 0.05, 0.2, 0.5, 1.0, 3.0, 50.0)]
    assert np.all(np.diff(values) >= -1e-8) and values[-1] > values[0] + 0.1
    corners = np.array(list(itertools.product(*zip(lo, hi))))
    assert values[-1] == pytest.approx(_loss(a, b, corners).max(), abs=1e-6)   # whole box reachable


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 6), k=st.integers(1, 4), eps=st.floats(0.0, 2.0),
       scale=st.floats(0.3, 3.0))
def test_equals_brute_force_in_one_dimension(seed: int, n: int, k: int, eps: float, scale: float) -> None:
    """1-d: sup_z l(z) - lambda |z - xi_i| is attained at a kink of l, a sample or a box end, so the
    transport LP over that finite grid is exact."""
    rng = np.random.default_rng(seed)
    lo, hi = -1.5, 2.0
    xi = rng.uniform(lo, hi, size=(n, 1))
    a, b = rng.normal(size=(k, 1)), rng.normal(size=k)
    kinks = [(b[j] - b[i]) / (a[i, 0] - a[j, 0]) for i in range(k) for j in range(i + 1, k)
             if abs(a[i, 0] - a[j, 0]) > 1e-12]
    grid = np.unique(np.clip(np.concatenate([[lo, hi], xi[:, 0], kinks]), lo, hi))[:, None]
    brute = _transport_lp(xi, grid, _loss(a, b, grid), eps, np.array([scale]))
    ball = WassersteinBall(xi, [scale], eps, [lo], [hi])
    assert ball.worst_case_expectation(a, b).value == pytest.approx(brute, abs=1e-6)


def test_equals_brute_force_linear_loss_two_dimensions() -> None:
    """One affine piece: the inner sup separates by coordinate; grid = sample coordinates x box ends."""
    rng = np.random.default_rng(11)
    xi = rng.uniform(-1, 1, size=(4, 2))
    lo, hi = np.array([-1.0, -2.0]), np.array([1.5, 1.0])
    a, b = np.array([[1.0, -2.0]]), np.array([0.3])
    axes = [np.unique(np.concatenate([[lo[j], hi[j]], xi[:, j]])) for j in range(2)]
    grid = np.array(list(itertools.product(*axes)))
    for eps in (0.1, 0.7, 2.0):
        brute = _transport_lp(xi, grid, _loss(a, b, grid), eps, np.array([1.0, 2.0]))
        wc = WassersteinBall(xi, [1.0, 2.0], eps, lo, hi).worst_case_expectation(a, b)
        assert wc.value == pytest.approx(brute, abs=1e-6)


def test_unbounded_support_linear_loss_closed_form() -> None:
    rng = np.random.default_rng(5)
    xi = rng.normal(size=(10, 3))
    a, b, scale = np.array([[0.5, -2.0, 1.0]]), np.array([1.0]), np.array([1.0, 0.5, 3.0])
    wc = WassersteinBall(xi, scale, 0.4).worst_case_expectation(a, b)
    assert wc.value == pytest.approx(_loss(a, b, xi).mean() + 0.4 * np.max(np.abs(a * scale)), abs=1e-7)


def test_wasserstein_validation() -> None:
    with pytest.raises(ValueError, match="radius"):
        WassersteinBall(np.zeros((2, 1)), [1.0], -0.1)
    with pytest.raises(ValueError, match="support"):
        WassersteinBall(np.array([[3.0]]), [1.0], 0.1, [-1.0], [1.0])
    with pytest.raises(ValueError, match="scale"):
        WassersteinBall(np.zeros((2, 2)), [1.0, 0.0], 0.1)
    with pytest.raises(ValueError, match="loss pieces"):
        WassersteinBall(np.zeros((2, 2)), [1.0, 1.0], 0.1).worst_case_expectation(np.ones((1, 3)), [0.0])


# ----------------------------------------------------------------------------- budget set


@settings(max_examples=60, deadline=None)
@given(dev=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=6), gamma_frac=st.floats(0.0, 1.0),
       seed=st.integers(0, 1000), integer=st.booleans())
def test_budget_closed_form_equals_vertex_enumeration(dev: list[float], gamma_frac: float, seed: int,
                                                      integer: bool) -> None:
    n = len(dev)
    gamma = float(round(gamma_frac * n)) if integer else gamma_frac * n
    rng = np.random.default_rng(seed)
    nominal = rng.normal(size=n)
    u = BudgetSet(nominal, np.array(dev), gamma)
    verts = u.vertices()
    assert all(u.contains(v) for v in verts)
    assert u.requirement("up") == pytest.approx(verts.sum(axis=1).max(), abs=1e-9)
    assert u.requirement("down") == pytest.approx(verts.sum(axis=1).min(), abs=1e-9)
    c = rng.normal(size=n)
    assert u.max_linear(c) == pytest.approx((verts @ c).max(), abs=1e-9)
    worst = u.worst_case(c)
    assert u.contains(worst) and c @ worst == pytest.approx(u.max_linear(c), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(dev=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=12), gamma_frac=st.floats(0.0, 1.0))
def test_top_gamma_sum_equals_its_lp_and_sorting(dev: list[float], gamma_frac: float) -> None:
    d = np.array(dev)
    gamma = gamma_frac * d.size
    n = d.size
    # min Gamma theta + sum rho, theta + rho_t >= D_t, theta, rho >= 0 (docs/math.md §5 last line)
    res = linprog(np.concatenate([[gamma], np.ones(n)]), A_ub=-np.hstack([np.ones((n, 1)), np.eye(n)]),
                  b_ub=-d, bounds=(0, None), method="highs")
    srt = np.sort(d)[::-1]
    full = int(np.floor(gamma))
    by_sort = srt[:full].sum() + (gamma - full) * (srt[full] if full < n else 0.0)
    assert top_gamma_sum(d, gamma) == pytest.approx(res.fun, abs=1e-6)
    assert top_gamma_sum(d, gamma) == pytest.approx(by_sort, abs=1e-9)


def test_budget_set_validation_and_contains() -> None:
    u = BudgetSet(np.zeros(3), np.ones(3), 1.5)
    assert u.contains([1.0, 0.5, 0.0]) and not u.contains([1.0, 0.6, 0.0]) and not u.contains([1.2, 0, 0])
    with pytest.raises(ValueError, match="gamma"):
        BudgetSet(np.zeros(3), np.ones(3), 4.0)
    with pytest.raises(ValueError, match="deviation"):
        BudgetSet(np.zeros(3), -np.ones(3), 1.0)
    with pytest.raises(ValueError, match="max_vertices"):
        BudgetSet(np.zeros(40), np.ones(40), 10).vertices()
    with pytest.raises(ValueError, match="direction"):
        u.requirement("sideways")


# ----------------------------------------------------------------------------- p-box


def test_cvar_lp_on_a_known_discrete_loss() -> None:
    cvar, var = cvar_sample_lp(np.arange(100.0), 0.9)
    assert cvar == pytest.approx(94.5) and 89.0 <= var <= 90.0


@pytest.mark.parametrize("direction", ["up", "down"])
@pytest.mark.parametrize("reserve", [0.0, 0.5, 2.0])
def test_pbox_cvar_closed_form_matches_sample_lp(direction: str, reserve: float) -> None:
    box = PBox(mu_lo=-0.2, mu_hi=0.3, sigma_lo=0.5, sigma_hi=1.0)
    closed = float(box.cvar_shortfall(reserve, 0.9, direction))
    # stratified samples of the worst-corner normal: the LP's CVaR converges fast
    mu, sigma = box.worst_corner(direction)
    sign = 1.0 if direction == "up" else -1.0
    eps = sign * mu + sigma * ndtri((np.arange(4000) + 0.5) / 4000)
    lp, _ = cvar_sample_lp(np.maximum(eps - reserve, 0.0), 0.9)
    assert lp == pytest.approx(closed, rel=5e-3, abs=1e-4)
    # and plain Monte Carlo through the public method
    sampled = box.cvar_shortfall_sampled(reserve, 0.9, 3000, np.random.default_rng(1), direction)
    assert sampled == pytest.approx(closed, rel=0.1, abs=0.02)


def test_pbox_worst_corner_dominates() -> None:
    box = PBox(mu_lo=-0.2, mu_hi=0.3, sigma_lo=0.5, sigma_hi=1.0)
    for r in (0.0, 0.7, 1.5, 3.0):
        worst = float(box.cvar_shortfall(r, 0.95))
        for mu in np.linspace(-0.2, 0.3, 6):
            for sigma in np.linspace(0.5, 1.0, 6):
                assert float(cvar_shortfall_normal(mu, sigma, r, 0.95)) <= worst + 1e-12


def test_pbox_envelopes_cdf_and_flexibility() -> None:
    box = PBox(mu_lo=np.array([-0.1, 0.0]), mu_hi=np.array([0.2, 0.1]), sigma_lo=0.1, sigma_hi=np.array([0.3, 0.2]))
    r_up, r_dn = box.envelopes(0.95)
    z = 1.6448536269514722
    np.testing.assert_allclose(r_up, [0.2 + z * 0.3, 0.1 + z * 0.2])
    np.testing.assert_allclose(r_dn, [z * 0.3 + 0.1, z * 0.2])
    lo, hi = box.cdf_bounds(np.array([0.05, 0.05]))
    assert np.all(lo <= hi) and np.all((lo >= 0) & (hi <= 1))
    f_up, f_dn = box.flexibility_demand(np.array([10.0, 12.0]), 0.95)
    np.testing.assert_allclose(f_up, [2.0 + r_up[1]])
    np.testing.assert_allclose(f_dn, [min(2.0 - r_dn[1], 0.0)])
    with pytest.raises(ValueError, match="mu_lo"):
        PBox(1.0, 0.0, 0.1, 0.2)
    with pytest.raises(ValueError, match="beta"):
        box.envelopes(1.0)
