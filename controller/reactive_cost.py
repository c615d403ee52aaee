"""The objective terms of the reactive SOCP (:mod:`controller.reactive`), per scenario.

Two objectives share one DistFlow block (docs/math.md §1, §10):

* :class:`EnvCostTerms` — the env's own cost of the step: head energy at the step's prices and
  the voltage penalty outside ``[vmin, vmax]`` (:mod:`env.pricing`), weighted by probability;
* :class:`ProxyTerms` — the earlier proxy ``c_loss losses + w_V sum |v - 1| + M slack``.

Each builds its variables, constraints and the (probability-weighted) objective expression
from cvxpy Parameters once; :meth:`set_prices` writes the numbers of a solve. Probabilities
and prices are folded into one weight Parameter per term (``w_s = pi_s dt price``), since a
Parameter times a Parameter would break DPP.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from env.formulations import FeederVars
from env.network import Network
from env.pricing import StepPrices


def env_cost_weights(pi: np.ndarray, prices: StepPrices | None, net_p_mw: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(w_head, w_V)`` (S,) of the env-cost objective: ``w_s = pi_s dt c_s`` per MW of head power
    (``c_s`` the price on the side scenario ``s`` settles, by the sign of its lossless net
    consumption ``net_p_mw``) and ``w_V = pi dt c_V`` per p.u. of voltage outside the limits."""
    if prices is None:
        raise ValueError("prices: the env-cost objective needs the step's StepPrices (env.pricing.step_prices)")
    return pi * prices.dt_h * prices.head_price(net_p_mw), pi * prices.dt_h * prices.voltage_per_puh


class EnvCostTerms:
    """``sum_s [w_s P_s + w_V_s sum_j (o_js + n_js)] + r ||q^c||^2``.

    ``P_s`` is the head power in MW, ``o >= (u - vmax^2)/(2 vmax)`` and
    ``n >= (vmin^2 - v)/(2 vmin)`` (both ``>= 0``, p.u. of ``|V|``), with ``w_V = pi dt c_V`` and
    ``w_s = pi_s dt c_s``, ``c_s`` the price on the side the scenario's head settles: buy when its
    lossless net consumption ``sum_j p_js`` is positive, sell otherwise
    (:meth:`env.pricing.StepPrices.head_price`). That is the env's ``dt (buy P+ - sell P-)``
    exactly unless losses or reactive flows flip the head's sign (``|sum p| < losses``): one rule
    whether the settlement is convex (buy >= sell) or not (a valley price below the feed-in price).
    """

    def __init__(self, net: Network, fv: FeederVars, ns: np.ndarray, upper: cp.Expression,
                 q_c_mvar: cp.Expression | None, q_regularizer: float) -> None:
        s = fv.n_scenarios
        self.w_head = cp.Parameter(s, name="w_head")
        self.w_volt = cp.Parameter(s, nonneg=True, name="w_voltage")
        # the head power as a variable: the formulation's expression holds the load Parameters,
        # and a weight Parameter times it would not be DPP
        self.head_mw = cp.Variable(s, name="head_p_mw")
        self.over = cp.Variable((len(ns), s), nonneg=True, name="over_voltage_pu")
        self.under = cp.Variable((len(ns), s), nonneg=True, name="under_voltage_pu")
        vmin, vmax = net.bus.vmin_pu[ns][:, None], net.bus.vmax_pu[ns][:, None]
        self.constraints = [
            self.head_mw == fv.p_head * net.base_mva,
            self.over >= (upper - vmax**2) / (2.0 * vmax),
            self.under >= (vmin**2 - fv.v[ns]) / (2.0 * vmin),
        ]
        self.objective = self.w_head @ self.head_mw + self.w_volt @ cp.sum(self.over + self.under, axis=0)
        if q_c_mvar is not None and q_regularizer > 0:
            self.objective = self.objective + q_regularizer * cp.sum_squares(q_c_mvar)
        self.w_head.value = np.zeros(s)
        self.w_volt.value = np.zeros(s)

    def set_prices(self, pi: np.ndarray, prices: StepPrices | None, net_p_mw: np.ndarray) -> None:
        """Weights of a solve: ``pi`` (S,), the step's prices, ``net_p_mw`` (S,) each scenario's
        lossless net consumption (its sign picks the settlement side)."""
        self.w_head.value, self.w_volt.value = env_cost_weights(pi, prices, net_p_mw)

    def max_violation_pu(self, live: np.ndarray) -> float:
        """Largest voltage-limit violation the solution pays for (p.u.), over live scenarios."""
        return float(np.max((self.over.value + self.under.value)[:, live], initial=0.0))


class ProxyTerms:
    """``sum_s pi_s [c_loss losses_s + w_V sum_j d_js + M sum_j sigma_js]`` with
    ``d >= u - 1, d >= 1 - v`` and soft limits ``vmin^2 - sigma <= v, u <= vmax^2 + sigma``."""

    def __init__(self, net: Network, fv: FeederVars, ns: np.ndarray, upper: cp.Expression, pi: cp.Parameter,
                 c_loss: float, w_voltage: float, slack_penalty: float) -> None:
        s = fv.n_scenarios
        self.slack = cp.Variable((len(ns), s), nonneg=True, name="v_slack_pu2")
        v = fv.v[ns]
        v_lo, v_hi = (net.bus.vmin_pu[ns] ** 2)[:, None], (net.bus.vmax_pu[ns] ** 2)[:, None]
        self.constraints = [v >= v_lo - self.slack, upper <= v_hi + self.slack]
        cost = slack_penalty * cp.sum(self.slack, axis=0)
        if c_loss > 0:
            cost = cost + c_loss * fv.losses
        if w_voltage > 0:
            dev = cp.Variable((len(ns), s), name="v_dev_pu2")
            self.constraints += [dev >= upper - 1.0, dev >= 1.0 - v]
            cost = cost + w_voltage * cp.sum(dev, axis=0)
        self.objective = pi @ cost

    def set_prices(self, pi: np.ndarray, prices: StepPrices | None, net_p_mw: np.ndarray) -> None:
        """The proxy prices nothing (probabilities are set by the caller)."""

    def max_violation_pu(self, live: np.ndarray) -> float:
        """Largest soft-limit slack used (in ``v = |V|^2`` units)."""
        return float(np.max(self.slack.value[:, live], initial=0.0))
