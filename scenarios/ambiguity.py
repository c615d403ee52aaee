"""Uncertainty sets: Wasserstein ball (DRO), budget set (ARO), p-box with CVaR.

Formulas: docs/math.md §4 (Mohajerin Esfahani & Kuhn 2018), §5 last line (budget-set
here-and-now requirement), §8 (p-box envelopes and CVaR, seed 002).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import ndtr, ndtri


def _pdf(x: np.ndarray) -> np.ndarray:
    """Standard normal density."""
    return np.exp(-0.5 * np.square(x)) / np.sqrt(2.0 * np.pi)


def _cdf(x: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Normal CDF, a step at mu when sigma = 0."""
    x, mu, sigma = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (x, mu, sigma)))
    z = np.divide(x - mu, sigma, out=np.where(x >= mu, np.inf, -np.inf), where=sigma > 0)
    return ndtr(z)


def _array(value: object, what: str, ndim: int | None = None) -> np.ndarray:
    arr = np.array(value, dtype=float)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{what}: expected a {ndim}-d array, got shape {arr.shape}")
    if np.any(np.isnan(arr)):
        raise ValueError(f"{what}: contains NaN")
    arr.setflags(write=False)
    return arr


def _solve_lp(c: np.ndarray, a_ub: sp.spmatrix, b_ub: np.ndarray, bounds: list | np.ndarray, what: str):
    from scipy.optimize import linprog  # deferred: heavy import

    res = linprog(c, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"{what}: LP not solved ({res.message})")
    return res


# ----------------------------------------------------------------------------- Wasserstein


@dataclass(frozen=True)
class WorstCase:
    """Result of a worst-case expectation: the value and the dual variables (lambda, s_i)."""

    value: float
    lambda_: float
    s: np.ndarray


@dataclass(frozen=True)
class WassersteinBall:
    """1-Wasserstein ball around the empirical distribution of N samples.

    The transport cost is the 1-norm of the *scaled* difference,
    ``||(xi - xi') / scale||_1``, so one ``radius`` serves quantities of different units
    (docs/math.md §4: scale before using one eps). The support is the box
    ``support_lo <= xi <= support_hi`` (entries may be infinite; default unbounded).

    Attributes:
        samples: (N, d) empirical samples (e.g. forecast errors).
        scale: (d,) positive per-dimension scale (e.g. per-unit base or error sd).
        radius: eps >= 0, in scaled units.
        support_lo / support_hi: (d,) box of the support, or None for unbounded.
    """

    samples: np.ndarray
    scale: np.ndarray
    radius: float
    support_lo: np.ndarray | None = None
    support_hi: np.ndarray | None = None

    def __post_init__(self) -> None:
        xi = _array(self.samples, "WassersteinBall.samples", ndim=2)
        if xi.shape[0] < 1 or not np.all(np.isfinite(xi)):
            raise ValueError("WassersteinBall.samples: need at least one finite sample row")
        d = xi.shape[1]
        scale = _array(np.broadcast_to(self.scale, (d,)), "WassersteinBall.scale")
        if np.any(scale <= 0) or not np.all(np.isfinite(scale)):
            raise ValueError("WassersteinBall.scale: must be finite and > 0")
        if not (np.isfinite(self.radius) and self.radius >= 0):
            raise ValueError(f"WassersteinBall.radius: must be finite and >= 0, got {self.radius}")
        lo = _array(np.broadcast_to(-np.inf if self.support_lo is None else self.support_lo, (d,)),
                    "WassersteinBall.support_lo")
        hi = _array(np.broadcast_to(np.inf if self.support_hi is None else self.support_hi, (d,)),
                    "WassersteinBall.support_hi")
        if np.any(lo > hi):
            raise ValueError("WassersteinBall: support_lo must be <= support_hi")
        if np.any(xi < lo) or np.any(xi > hi):
            raise ValueError("WassersteinBall.samples: every sample must lie in the support box")
        for name, value in (("samples", xi), ("scale", scale), ("support_lo", lo), ("support_hi", hi)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "radius", float(self.radius))

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[0])

    @property
    def dim(self) -> int:
        return int(self.samples.shape[1])

    def sample_average(self, a: np.ndarray, b: np.ndarray) -> float:
        """``(1/N) sum_i max_k a_k^T xi_i + b_k`` (the radius-0 value)."""
        a, b = self._check_loss(a, b)
        return float(np.mean(np.max(self.samples @ a.T + b, axis=1)))

    def _check_loss(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = np.atleast_2d(np.asarray(a, dtype=float))
        b = np.atleast_1d(np.asarray(b, dtype=float))
        if a.shape[1] != self.dim or b.shape != (a.shape[0],):
            raise ValueError(f"loss pieces: need a (K, {self.dim}) and b (K,), got {a.shape} and {b.shape}")
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            raise ValueError("loss pieces: a and b must be finite")
        return a, b

    def worst_case_expectation(self, a: np.ndarray, b: np.ndarray) -> WorstCase:
        """``sup_{Q in ball} E_Q[max_k a_k^T xi + b_k]`` by the LP of docs/math.md §4.

        In scaled coordinates ``zeta = xi / scale`` (``a~ = a * scale``, box ``[lo~, hi~]``):

            min  lambda eps + (1/N) sum_i s_i
            s.t. b_k + a~_k^T zeta_i + g+_ik^T (hi~ - zeta_i) + g-_ik^T (zeta_i - lo~) <= s_i
                 |g+_ik - g-_ik - a~_k|_inf <= lambda,  g+, g- >= 0   (all i, k)

        (``C = [I; -I]``, ``d = [hi~; -lo~]``, ``gamma = (g+, g-)``; a g on an infinite
        bound is fixed to 0). Solved with HiGHS (scipy ``linprog``).
        """
        a, b = self._check_loss(a, b)
        n, d, k = self.n_samples, self.dim, a.shape[0]
        zeta = self.samples / self.scale
        a_s = a * self.scale
        lo, hi = self.support_lo / self.scale, self.support_hi / self.scale
        fin_lo, fin_hi = np.isfinite(lo), np.isfinite(hi)
        m = n * k                                     # (i, k) pairs, row-major in i
        n_var = 1 + n + 2 * m * d
        i_of = np.repeat(np.arange(n), k)
        k_of = np.tile(np.arange(k), n)
        gp = 1 + n + np.arange(m * d).reshape(m, d)   # variable index of g+_{(ik), j}
        gm = gp + m * d
        # (1) epigraph rows
        coef_p = np.where(fin_hi, np.nan_to_num(hi - zeta, posinf=0.0), 0.0)[i_of]   # (m, d)
        coef_m = np.where(fin_lo, np.nan_to_num(zeta - lo, posinf=0.0), 0.0)[i_of]
        rows1 = np.repeat(np.arange(m), 2 * d + 1)
        cols1 = np.concatenate([gp, gm, (1 + i_of)[:, None]], axis=1).ravel()
        vals1 = np.concatenate([coef_p, coef_m, -np.ones((m, 1))], axis=1).ravel()
        rhs1 = -(b[k_of] + np.einsum("md,md->m", a_s[k_of], zeta[i_of]))
        # (2)/(3) dual-norm rows: +-(g+ - g- - a~) <= lambda
        r = np.arange(m * d)
        rows2 = np.concatenate([r, r, r, m * d + r, m * d + r, m * d + r]) + m
        cols2 = np.concatenate([gp.ravel(), gm.ravel(), np.zeros(m * d, int)] * 2)
        ones = np.ones(m * d)
        vals2 = np.concatenate([ones, -ones, -ones, -ones, ones, -ones])
        a_k = a_s[k_of].ravel()
        rhs2 = np.concatenate([a_k, -a_k])
        a_ub = sp.csr_matrix((np.concatenate([vals1, vals2]),
                              (np.concatenate([rows1, rows2]), np.concatenate([cols1, cols2]))),
                             shape=(m + 2 * m * d, n_var))
        c = np.zeros(n_var)
        c[0] = self.radius
        c[1:1 + n] = 1.0 / n
        ub_p = np.where(np.tile(fin_hi, m), np.inf, 0.0)
        ub_m = np.where(np.tile(fin_lo, m), np.inf, 0.0)
        bounds = np.column_stack([
            np.concatenate([[0.0], np.full(n, -np.inf), np.zeros(2 * m * d)]),
            np.concatenate([[np.inf], np.full(n, np.inf), ub_p, ub_m])])
        res = _solve_lp(c, a_ub, np.concatenate([rhs1, rhs2]), bounds, "WassersteinBall.worst_case_expectation")
        return WorstCase(value=float(res.fun), lambda_=float(res.x[0]), s=res.x[1:1 + n].copy())


# ----------------------------------------------------------------------------- budget set


def top_gamma_sum(values: np.ndarray, gamma: float) -> float:
    """``min_{theta, rho >= 0} Gamma theta + sum_t rho_t  s.t. theta + rho_t >= D_t`` (docs/math.md §5).

    The objective is convex piecewise linear in theta with kinks at the D_t, so the
    minimum is taken over ``theta in {0} U {D_t}`` (D_t >= 0); it equals the sum of the
    floor(Gamma) largest D_t plus the fractional part times the next one.
    """
    d = np.asarray(values, dtype=float).ravel()
    if d.size == 0:
        return 0.0
    theta = np.concatenate([[0.0], d])
    cost = gamma * theta + np.maximum(d[None, :] - theta[:, None], 0.0).sum(axis=1)
    return float(cost.min())


@dataclass(frozen=True)
class BudgetSet:
    """Budget uncertainty set of seed 000's ARO (docs/math.md §5):

        U = {u = u_bar + u_hat o (g+ - g-) : 0 <= g+, g-;  g+ + g- <= 1;  sum (g+ + g-) <= Gamma}.

    Arrays may have any shape (e.g. (T,) or (T, n_boundary)); the budget applies to all
    entries together.

    Attributes:
        nominal: u_bar (MW).
        deviation: u_hat >= 0 (MW), same shape.
        gamma: budget, 0 <= Gamma <= number of entries.
    """

    nominal: np.ndarray
    deviation: np.ndarray
    gamma: float

    def __post_init__(self) -> None:
        nom = _array(self.nominal, "BudgetSet.nominal")
        dev = _array(self.deviation, "BudgetSet.deviation")
        if dev.shape != nom.shape:
            raise ValueError(f"BudgetSet.deviation: shape {dev.shape} differs from nominal {nom.shape}")
        if not (np.all(np.isfinite(nom)) and np.all(np.isfinite(dev))) or np.any(dev < 0):
            raise ValueError("BudgetSet: nominal must be finite and deviation finite and >= 0")
        if not (np.isfinite(self.gamma) and 0 <= self.gamma <= nom.size):
            raise ValueError(f"BudgetSet.gamma: must be in [0, {nom.size}], got {self.gamma}")
        object.__setattr__(self, "nominal", nom)
        object.__setattr__(self, "deviation", dev)
        object.__setattr__(self, "gamma", float(self.gamma))

    @property
    def size(self) -> int:
        return int(self.nominal.size)

    def requirement(self, direction: str = "up") -> float:
        """Here-and-now total requirement that covers every u in U (closed form, docs/math.md §5):

        up: ``sum u_bar + min_{theta, rho >= 0} Gamma theta + sum rho_t, theta + rho_t >= u_hat_t``;
        down: ``sum u_bar - (same minimum)`` (the smallest total in U).
        """
        worst = top_gamma_sum(self.deviation, self.gamma)
        if direction == "up":
            return float(self.nominal.sum() + worst)
        if direction == "down":
            return float(self.nominal.sum() - worst)
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")

    def max_linear(self, c: np.ndarray) -> float:
        """``max_{u in U} c^T u = c^T u_bar + top_Gamma(|c| o u_hat)`` (same dual as above)."""
        c = np.broadcast_to(np.asarray(c, dtype=float), self.nominal.shape)
        return float((c * self.nominal).sum() + top_gamma_sum(np.abs(c) * self.deviation, self.gamma))

    def worst_case(self, c: np.ndarray) -> np.ndarray:
        """A maximizer of ``c^T u`` over U (greedy on ``|c| u_hat``; a vertex of U)."""
        c = np.broadcast_to(np.asarray(c, dtype=float), self.nominal.shape).ravel()
        w = np.abs(c) * self.deviation.ravel()
        g = np.zeros_like(w)
        budget = self.gamma
        for t in np.argsort(-w, kind="stable"):
            if budget <= 0 or w[t] <= 0:
                break
            g[t] = np.sign(c[t]) * min(1.0, budget)
            budget -= abs(g[t])
        return (self.nominal.ravel() + self.deviation.ravel() * g).reshape(self.nominal.shape)

    def vertex_deviations(self, max_vertices: int = 200_000) -> np.ndarray:
        """All vertices of ``G = {g : |g_t| <= 1, sum |g_t| <= Gamma}`` as rows (m, n).

        A vertex has floor(Gamma) entries at +-1 and, if Gamma is fractional, one more at
        +-(Gamma - floor(Gamma)) (all entries at +-1 if Gamma = n).
        """
        n = self.size
        full = min(int(math.floor(self.gamma + 1e-12)), n)
        frac = self.gamma - full if full < n else 0.0
        frac = 0.0 if frac < 1e-12 else frac
        count = math.comb(n, full) * 2**full * ((n - full) * 2 if frac else 1)
        if count > max_vertices:
            raise ValueError(f"BudgetSet.vertex_deviations: {count} vertices exceed max_vertices={max_vertices}")
        rows = []
        for idx in itertools.combinations(range(n), full):
            rest = [t for t in range(n) if t not in idx] if frac else [None]
            for signs in itertools.product((-1.0, 1.0), repeat=full):
                for extra in rest:
                    for s_extra in ((-frac, frac) if extra is not None else (0.0,)):
                        g = np.zeros(n)
                        g[list(idx)] = signs
                        if extra is not None:
                            g[extra] = s_extra
                        rows.append(g)
        return np.array(rows).reshape(-1, n)

    def vertices(self, max_vertices: int = 200_000) -> np.ndarray:
        """Vertices of U, shape (m, *nominal.shape)."""
        g = self.vertex_deviations(max_vertices)
        return (self.nominal.ravel() + g * self.deviation.ravel()).reshape((-1,) + self.nominal.shape)

    def contains(self, u: np.ndarray, tol: float = 1e-9) -> bool:
        """Whether u is in U, up to an absolute tolerance ``tol (1 + |u_bar|)`` per entry (MW).

        ``g_t = max(|u_t - u_bar_t| - atol_t, 0) / u_hat_t`` must satisfy ``g_t <= 1`` and
        ``sum g_t <= Gamma``; entries with ``u_hat = 0`` must match the nominal within atol.
        """
        u = np.asarray(u, dtype=float).reshape(self.nominal.shape)
        atol = tol * (1.0 + np.abs(self.nominal))
        excess = np.maximum(np.abs(u - self.nominal) - atol, 0.0)
        dev = self.deviation
        if np.any(excess[dev <= 0] > 0):
            return False
        g = np.divide(excess, dev, out=np.zeros_like(excess), where=dev > 0)
        return bool(np.all(g <= 1 + tol) and g.sum() <= self.gamma + tol)


# ----------------------------------------------------------------------------- p-box


def cvar_sample_lp(losses: np.ndarray, beta: float) -> tuple[float, float]:
    """Rockafellar-Uryasev CVaR of equally likely losses (an LP, HiGHS):

        CVaR_beta = min_a a + (1 / (N (1 - beta))) sum_i u_i,  u_i >= L_i - a,  u_i >= 0.

    Returns (CVaR, the optimal a = VaR).
    """
    L = np.asarray(losses, dtype=float).ravel()
    if L.size == 0 or not np.all(np.isfinite(L)):
        raise ValueError("cvar_sample_lp: losses must be a non-empty finite array")
    if not 0 < beta < 1:
        raise ValueError(f"cvar_sample_lp: beta must be in (0, 1), got {beta}")
    n = L.size
    c = np.concatenate([[1.0], np.full(n, 1.0 / (n * (1.0 - beta)))])
    a_ub = sp.hstack([-np.ones((n, 1)), -sp.identity(n)], format="csr")
    bounds = [(None, None)] + [(0, None)] * n
    res = _solve_lp(c, a_ub, -L, bounds, "cvar_sample_lp")
    return float(res.fun), float(res.x[0])


def cvar_shortfall_normal(mu: np.ndarray, sigma: np.ndarray, r: np.ndarray, beta: float) -> np.ndarray:
    """CVaR_beta of ``L = (eps - R)+`` with ``eps ~ N(mu, sigma^2)``, z = Phi^-1(beta):

    if ``mu + sigma z >= R``: ``mu + sigma phi(z) / (1 - beta) - R`` (CVaR of eps, shifted);
    else: ``E[L] / (1 - beta) = sigma [phi(k) - k (1 - Phi(k))] / (1 - beta)``, ``k = (R - mu) / sigma``.
    """
    mu, sigma, r = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (mu, sigma, r)))
    z = ndtri(beta)
    safe = np.where(sigma > 0, sigma, 1.0)
    k = (r - mu) / safe
    tail = mu + sigma * _pdf(z) / (1 - beta) - r
    partial = sigma * (_pdf(k) - k * ndtr(-k)) / (1 - beta)
    out = np.where(mu + sigma * z >= r, tail, partial)
    return np.where(sigma > 0, out, np.maximum(mu - r, 0.0))


@dataclass(frozen=True)
class PBox:
    """P-box of a normal forecast error (docs/math.md §8, seed 002):
    ``eps ~ N(mu, sigma^2)`` with ``mu in [mu_lo, mu_hi]``, ``sigma in [sigma_lo, sigma_hi]``.

    Arrays broadcast together (e.g. one entry per step), MW.
    """

    mu_lo: np.ndarray
    mu_hi: np.ndarray
    sigma_lo: np.ndarray
    sigma_hi: np.ndarray

    def __post_init__(self) -> None:
        arrays = np.broadcast_arrays(*(np.asarray(getattr(self, f), dtype=float)
                                       for f in ("mu_lo", "mu_hi", "sigma_lo", "sigma_hi")))
        for name, arr in zip(("mu_lo", "mu_hi", "sigma_lo", "sigma_hi"), arrays):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"PBox.{name}: values must be finite")
            arr = np.array(arr)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if np.any(self.mu_lo > self.mu_hi):
            raise ValueError("PBox.mu_lo must be <= mu_hi")
        if np.any(self.sigma_lo < 0) or np.any(self.sigma_lo > self.sigma_hi):
            raise ValueError("PBox: need 0 <= sigma_lo <= sigma_hi")

    def envelopes(self, beta: float) -> tuple[np.ndarray, np.ndarray]:
        """Reserve envelopes at confidence beta: ``R_up = mu_u + z sigma_u``, ``R_dn = z sigma_u - mu_d`` (>= 0)."""
        z = ndtri(_check_beta(beta))
        return (np.maximum(self.mu_hi + z * self.sigma_hi, 0.0),
                np.maximum(z * self.sigma_hi - self.mu_lo, 0.0))

    def cdf_bounds(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper CDF of the p-box at x: min / max over the four (mu, sigma) corners."""
        vals = [_cdf(x, m, s) for m in (self.mu_lo, self.mu_hi) for s in (self.sigma_lo, self.sigma_hi)]
        return np.min(vals, axis=0), np.max(vals, axis=0)

    def worst_corner(self, direction: str = "up") -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) maximizing the CVaR of the shortfall: (mu_u, sigma_u) up, (mu_d, sigma_u) down."""
        if direction == "up":
            return self.mu_hi, self.sigma_hi
        if direction == "down":
            return self.mu_lo, self.sigma_hi
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")

    def cvar_shortfall(self, reserve_mw: np.ndarray, beta: float, direction: str = "up") -> np.ndarray:
        """Worst-case CVaR_beta of the shortfall (closed form at the worst corner).

        up: ``L = (eps - R)+``; down: ``L = (-eps - R)+``. CVaR grows with the mean (up) and
        with sigma (a wider normal dominates in the increasing convex order), hence the corner.
        """
        mu, sigma = self.worst_corner(direction)
        sign = 1.0 if direction == "up" else -1.0
        return cvar_shortfall_normal(sign * mu, sigma, reserve_mw, _check_beta(beta))

    def cvar_shortfall_sampled(self, reserve_mw: float, beta: float, n_samples: int,
                               rng: np.random.Generator, direction: str = "up", index: tuple = ()) -> float:
        """Same quantity for one entry by the Rockafellar-Uryasev sample LP at the worst corner."""
        mu, sigma = (np.asarray(x)[index] for x in self.worst_corner(direction))
        sign = 1.0 if direction == "up" else -1.0
        eps = sign * mu + sigma * rng.standard_normal(n_samples)
        return cvar_sample_lp(np.maximum(eps - reserve_mw, 0.0), _check_beta(beta))[0]

    def flexibility_demand(self, net_load_mw: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
        """Ramp flexibility demand per step t = 0..T-2 (docs/math.md §8), with the envelopes of step t+1:

        ``f_up_t = max(Pn_{t+1} + R_up_{t+1} - Pn_t, 0)``, ``f_dn_t = min(Pn_{t+1} - R_dn_{t+1} - Pn_t, 0)``.
        """
        pn = np.asarray(net_load_mw, dtype=float)
        r_up, r_dn = (np.broadcast_to(r, pn.shape) for r in self.envelopes(beta))
        step = pn[1:] - pn[:-1]
        return np.maximum(step + r_up[1:], 0.0), np.minimum(step - r_dn[1:], 0.0)


def _check_beta(beta: float) -> float:
    if not 0 < beta < 1:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    return float(beta)
