"""Flexibility demand by p-box (seed 002 §3, docs/flexibility.md §2-§4).

Forecast errors of load, wind and PV (MW, error = realization - day-ahead forecast) are
normal with a mean and a standard deviation that lie in intervals, ``mu in [mu_d, mu_u]``,
``sigma in [sigma_d, sigma_u]``. The intervals are fitted from the forecast model's own
error samples (:meth:`scenarios.forecast.Forecast.sample` at t = -1, the day-ahead belief):
the samples of each step are split into ``n_batches`` equal batches, each batch gives
``(mu_k, sigma_k)``, and the interval is ``[min_k, max_k]`` (:func:`fit_pbox`).

At confidence ``beta`` the p-box range is truncated at ``beta_d = (1 - beta) / 2`` and
``beta_u = (1 + beta) / 2`` (seed eq. ``F1(dP^{beta,d}) = beta_d``, ``F2(dP^{beta,u}) = beta_u``,
``beta = beta_u - beta_d``): the lower bound is where the *upper* CDF envelope reaches
``beta_d``, the upper bound where the *lower* envelope reaches ``beta_u``; for normal members
``dP^{beta,d} = mu_d + sigma_u Phi^-1(beta_d)``, ``dP^{beta,u} = mu_u + sigma_u Phi^-1(beta_u)``
(:func:`truncated_range`).

Net-load error bounds (seed eq. for eps^{n,u}, eps^{n,d}; errors in MW, so no rating factor):
``eps_u = dL^{beta,u} - dW^{beta,d} - dPV^{beta,d}``, ``eps_d = dL^{beta,d} - dW^{beta,u} - dPV^{beta,u}``,
and the ramp demand per step ``f_u_t = max(Pn_{t+1} + eps_u_{t+1} - Pn_t, 0)``,
``f_d_t = min(Pn_{t+1} + eps_d_{t+1} - Pn_t, 0)`` (:func:`flexibility_demand`).

Risk cost (seed §3.2, :func:`risk_cost`): inside the interval the shortfall of supply against
demand is priced at ``c_F``; outside it, the expected loss beyond the interval bound is
``CVaR``-weighted by ``1 / (1 - beta)`` with the tail probability counted from the samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from scenarios.ambiguity import PBox, _check_beta

__all__ = ["NetLoadErrors", "FlexDemand", "fit_pbox", "fit_fixed", "truncated_range", "flexibility_demand", "demand_of",
           "net_load_bounds", "source_range", "risk_cost", "MODELS", "SOURCES", "tail_probability", "day_ahead_errors", "over_estimation"]

SOURCES = ("load", "wind", "pv")


def fit_pbox(samples: np.ndarray, n_batches: int = 10) -> PBox:
    """P-box of a normal error per step from samples ``(n_samples, T)``: per batch ``(mu_k, sigma_k)``
    (sample mean, ddof=1 standard deviation), interval ``[min_k, max_k]``."""
    x = np.asarray(samples, dtype=float)
    if x.ndim != 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"fit_pbox: samples must be a finite (n_samples, T) array, got shape {x.shape}")
    if not isinstance(n_batches, int) or n_batches < 2 or x.shape[0] < 2 * n_batches:
        raise ValueError(f"fit_pbox: need n_batches >= 2 and at least 2 samples per batch "
                         f"({x.shape[0]} samples, {n_batches} batches)")
    usable = (x.shape[0] // n_batches) * n_batches
    b = x[:usable].reshape(n_batches, -1, x.shape[1])
    mu, sigma = b.mean(axis=1), b.std(axis=1, ddof=1)
    return PBox(mu.min(axis=0), mu.max(axis=0), sigma.min(axis=0), sigma.max(axis=0))


def fit_fixed(samples: np.ndarray) -> PBox:
    """The fixed-parameter model: one normal whose (mu, sigma) are the pooled statistics of all
    samples of the day (no time variation, no parameter interval) - a degenerate p-box."""
    x = np.asarray(samples, dtype=float)
    mu, sigma = float(x.mean()), float(x.std(ddof=1))
    shape = x.shape[1:]
    return PBox(np.full(shape, mu), np.full(shape, mu), np.full(shape, sigma), np.full(shape, sigma))


def truncated_range(pbox: PBox, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """``(dP^{beta,d}, dP^{beta,u})``: the two-sided truncation of the p-box at confidence ``beta``."""
    beta = _check_beta(beta)
    z_d, z_u = ndtri((1.0 - beta) / 2.0), ndtri((1.0 + beta) / 2.0)
    return pbox.mu_lo + pbox.sigma_hi * z_d, pbox.mu_hi + pbox.sigma_hi * z_u


@dataclass(frozen=True)
class NetLoadErrors:
    """Forecast error samples (MW, ``(n_samples, T)``) of one network's load, wind and PV, and its
    day-ahead net-load forecast ``net_load_mw`` (T,) = load - wind - PV."""

    load: np.ndarray
    wind: np.ndarray
    pv: np.ndarray
    net_load_mw: np.ndarray

    def __post_init__(self) -> None:
        shape = np.asarray(self.load).shape
        for name in SOURCES:
            if np.asarray(getattr(self, name)).shape != shape:
                raise ValueError(f"NetLoadErrors.{name}: expected shape {shape}")
        if np.asarray(self.net_load_mw).shape != shape[1:]:
            raise ValueError(f"NetLoadErrors.net_load_mw: expected shape {shape[1:]}")

    @property
    def net(self) -> np.ndarray:
        """Net-load error samples ``dL - dW - dPV``."""
        return self.load - self.wind - self.pv

    def every(self, stride: int) -> "NetLoadErrors":
        """The same errors at every ``stride``-th step (e.g. hourly from 15-minute steps)."""
        return NetLoadErrors(self.load[:, ::stride], self.wind[:, ::stride], self.pv[:, ::stride],
                             self.net_load_mw[::stride])

    def __add__(self, other: "NetLoadErrors") -> "NetLoadErrors":
        return NetLoadErrors(self.load + other.load, self.wind + other.wind, self.pv + other.pv,
                             self.net_load_mw + other.net_load_mw)


MODELS = ("pbox", "fixed", "normal", "normal_3sigma", "full")
#: The conventional reserve rule's coverage: a normal error sized at +/- 3 sigma (99.73 %).
THREE_SIGMA = 3.0


def source_range(samples: np.ndarray, beta: float, model: str = "pbox", n_batches: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Error range per step of one source: ``"pbox"`` the truncated p-box (:func:`fit_pbox`,
    :func:`truncated_range`), ``"fixed"`` the same truncation of the fixed-parameter normal
    (:func:`fit_fixed`), ``"normal"`` the same truncation of a fixed-parameter normal per step
    (the step's sample mean and standard deviation, no interval), ``"normal_3sigma"`` that normal
    sized by the conventional rule ``mu +/- 3 sigma`` (no confidence-level truncation; seed 002's
    "traditional" fixed-parameter model, docs/flexibility.md §4), ``"full"`` the untruncated range
    where the p-box boundaries meet at cumulative probability 0 and 1, i.e. the sample minimum
    and maximum (seed §3.1)."""
    if model == "pbox":
        return truncated_range(fit_pbox(samples, n_batches), beta)
    if model == "fixed":
        return truncated_range(fit_fixed(samples), beta)
    x = np.asarray(samples, dtype=float)
    if model in ("normal", "normal_3sigma"):
        mu, sigma = x.mean(axis=0), x.std(axis=0, ddof=1)
        if model == "normal":
            return truncated_range(PBox(mu, mu, sigma, sigma), beta)
        return mu - THREE_SIGMA * sigma, mu + THREE_SIGMA * sigma
    if model == "full":
        return x.min(axis=0), x.max(axis=0)
    raise ValueError(f"unknown error model {model!r}; known: {MODELS}")


def net_load_bounds(errors: NetLoadErrors, beta: float, model: str = "pbox",
                    n_batches: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``(eps_d, eps_u)`` per step from the ranges of load, wind and PV (module docstring)."""
    lo, hi = {}, {}
    for name in SOURCES:
        lo[name], hi[name] = source_range(getattr(errors, name), beta, model, n_batches)
    return lo["load"] - hi["wind"] - hi["pv"], hi["load"] - lo["wind"] - lo["pv"]


@dataclass(frozen=True)
class FlexDemand:
    """Up (>= 0) and down (<= 0) flexibility demand per step t = 0..T-2 (MW) and the net-load
    error bounds it used, ``eps_d`` / ``eps_u`` at steps 1..T-1."""

    up_mw: np.ndarray
    down_mw: np.ndarray
    eps_d_mw: np.ndarray
    eps_u_mw: np.ndarray


def flexibility_demand(net_load_mw: np.ndarray, eps_d_mw: np.ndarray, eps_u_mw: np.ndarray) -> FlexDemand:
    """``f_u_t = max(Pn_{t+1} + eps_u_{t+1} - Pn_t, 0)``, ``f_d_t = min(Pn_{t+1} + eps_d_{t+1} - Pn_t, 0)``."""
    pn = np.asarray(net_load_mw, dtype=float)
    step = pn[1:] - pn[:-1]
    e_d, e_u = np.asarray(eps_d_mw)[1:], np.asarray(eps_u_mw)[1:]
    return FlexDemand(np.maximum(step + e_u, 0.0), np.minimum(step + e_d, 0.0), e_d, e_u)


def demand_of(errors: NetLoadErrors, beta: float, model: str = "pbox", n_batches: int = 10) -> FlexDemand:
    """:func:`flexibility_demand` of a network from its error samples (``model``: :func:`source_range`)."""
    eps_d, eps_u = net_load_bounds(errors, beta, model=model, n_batches=n_batches)
    return flexibility_demand(errors.net_load_mw, eps_d, eps_u)


def tail_probability(net_error_samples: np.ndarray, eps_d_mw: np.ndarray,
                     eps_u_mw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per step, the share of samples above ``eps_u`` (``P_n^u``) and below ``eps_d`` (``P_n^d``)
    (seed §3.2: "obtained by direct statistics from historical forecast error samples")."""
    x = np.asarray(net_error_samples, dtype=float)
    return (x > eps_u_mw).mean(axis=0), (x < eps_d_mw).mean(axis=0)


def risk_cost(demand: FlexDemand, supply_up_mw: np.ndarray, supply_down_mw: np.ndarray,
              net_error_samples: np.ndarray, beta: float, c_f_up: float, c_f_down: float,
              c_cvar_up: float, c_cvar_down: float) -> dict[str, float]:
    """Seed 002 §3.2 flexibility risk cost ``C_F = C_beta^F + C_beta^CVaR`` (per day, currency):

    ``C_beta^F = c_F^u sum_t (F_N,t^u - F_S,t^u)+ + c_F^d sum_t (|F_N,t^d| - F_S,t^d)+`` (supply
    magnitudes >= 0), and, with ``beta_hat = 1 / (1 - beta)`` and the samples of step t+1 beyond
    the interval (``s_n = 1``), ``C_beta^CVaR = c_CVaR^u beta_hat sum_t P_n^u E[(e - eps_u)+ | e > eps_u]
    + c_CVaR^d beta_hat sum_t P_n^d E[(eps_d - e)+ | e < eps_d]``: the loss ``alpha_xi`` is the
    error beyond the interval bound, so ``P_n E[loss | tail] = mean_samples (loss)``.
    """
    beta_hat = 1.0 / (1.0 - _check_beta(beta))
    short_up = np.maximum(demand.up_mw - np.asarray(supply_up_mw), 0.0)
    short_dn = np.maximum(-demand.down_mw - np.asarray(supply_down_mw), 0.0)
    x = np.asarray(net_error_samples, dtype=float)[:, 1:]
    beyond_up = np.maximum(x - demand.eps_u_mw, 0.0).mean(axis=0)      # P_n^u E[alpha | tail]
    beyond_dn = np.maximum(demand.eps_d_mw - x, 0.0).mean(axis=0)
    inside = c_f_up * float(short_up.sum()) + c_f_down * float(short_dn.sum())
    cvar = beta_hat * (c_cvar_up * float(beyond_up.sum()) + c_cvar_down * float(beyond_dn.sum()))
    return {"inside": inside, "cvar": cvar, "total": inside + cvar,
            "shortfall_up_mw": float(short_up.sum()), "shortfall_down_mw": float(short_dn.sum())}


def day_ahead_errors(day_ahead, n_samples: int, rng: np.random.Generator) -> dict[str, NetLoadErrors]:  # noqa: ANN001
    """Error samples of every network of a day, by name prefix (``"t"``, ``"f0"``, ...).

    The forecast model's own belief before the day (:meth:`Forecast.at` with nothing observed,
    t = -1) is sampled ``n_samples`` times; errors are the sampled MW minus the day-ahead
    forecast MW. ``day_ahead`` is a :class:`DayAheadInfo` (or a scenario holding one): nothing
    realized is used.
    """
    from scenarios.forecast import Forecast, Observed

    da = getattr(day_ahead, "day_ahead", day_ahead)
    lay = da.layout
    nothing = Observed(t=-1, load_pu=np.zeros((0, len(lay.load_names))), pv_pu=np.zeros((0, len(lay.pv_names))),
                       wind_speed_ms=np.zeros((0, len(lay.wind_names))), wind_pu=np.zeros((0, len(lay.wind_names))),
                       tso_requirement_mw=np.zeros((0, len(lay.boundary_names))))
    paths = Forecast.at(da, nothing).sample(n_samples, rng, ev_sessions=False)
    point = {"load": da.load_pu_da * lay.load_p_mw, "pv": da.pv_pu_da * da.pv_p_max_mw,
             "wind": da.wind_pu_da * da.wind_p_max_mw}
    sampled = {"load": paths.load_p_mw, "pv": paths.pv_p_mw, "wind": paths.wind_p_mw}
    names = {"load": lay.load_names, "pv": lay.pv_names, "wind": lay.wind_names}
    prefixes = sorted({n.split("_", 1)[0] for n in lay.load_names + lay.pv_names + lay.wind_names})
    out = {}
    for pre in prefixes:
        parts, net = {}, np.zeros(da.n_steps)
        for src in SOURCES:
            cols = np.array([n.split("_", 1)[0] == pre for n in names[src]], dtype=bool)
            parts[src] = (sampled[src][..., cols] - point[src][None, :, cols]).sum(axis=-1)
            sign = 1.0 if src == "load" else -1.0
            net = net + sign * point[src][:, cols].sum(axis=-1)
        out[pre] = NetLoadErrors(parts["load"], parts["wind"], parts["pv"], net)
    return out


def system_errors(errors: dict[str, NetLoadErrors]) -> NetLoadErrors:
    """The whole grid's errors: the sum over its networks."""
    parts = list(errors.values())
    total = parts[0]
    for e in parts[1:]:
        total = total + e
    return total


def over_estimation(demand: FlexDemand, net_load_mw: np.ndarray, realized_net_errors: np.ndarray) -> dict[str, float]:
    """How far a demand estimate exceeds the ramps that realized days needed (MW summed over steps,
    averaged over the realizations): realized need ``max(Pn_{t+1} + e_{t+1} - Pn_t, 0)`` up and
    ``min(...)`` down, over-estimation ``(f_est - need)+`` in magnitude, and the share of steps the
    estimate covers."""
    pn = np.asarray(net_load_mw, dtype=float)
    need = pn[None, 1:] + np.asarray(realized_net_errors)[:, 1:] - pn[None, :-1]
    need_up, need_dn = np.maximum(need, 0.0), np.minimum(need, 0.0)
    over_up = np.maximum(demand.up_mw[None] - need_up, 0.0).sum(axis=1).mean()
    over_dn = np.maximum(need_dn - demand.down_mw[None], 0.0).sum(axis=1).mean()
    covered = ((need <= demand.up_mw[None]) & (need >= demand.down_mw[None])).mean()
    return {"over_up_mw": float(over_up), "over_down_mw": float(over_dn),
            "over_total_mw": float(over_up + over_dn), "coverage": float(covered)}
