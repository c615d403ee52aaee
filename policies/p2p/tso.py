"""The TSO's DC-OPF as the lower level of the DSO-led bilevel model (docs/p2p.md §3).

Per period ``t`` (independent periods: the TSO clears each hour; ramps are left to the real-time
dispatch), for the boundary schedules ``h`` (MW drawn by each ADN)::

    min  sum_g (c1 P + c2 P^2) + c_w sum w + VOLL shed
    s.t. 1^T (C_g P + C_w w + nu shed - D - C_b h) = 0                       (lambda, free)
         F - f >= 0, F + f >= 0,  f = PTDF (C_g P + C_w w + nu shed - D - C_b h) + f_shift   (mu+, mu- >= 0)
         Pmax - P >= 0, P - Pmin >= 0                                        (alpha+, alpha- >= 0)
         W - w >= 0, w >= 0                                                  (beta+, beta- >= 0)
         shed >= 0                                                           (gamma >= 0)

(``nu``: the transmission loads' shares, where shedding happens). The LMP at bus b is
``pi_b = lambda - (PTDF^T (mu+ - mu-))_b``.

:func:`dc_opf` solves it as a QP (the TSO alone: the TSO-led scheme, and the check of the KKT
model). :func:`tso_kkt` writes its KKT conditions for ``h`` given as an expression of the upper
level: primal and dual feasibility, stationarity (linear, since the cost is quadratic)::

    c1 + 2 c2 P - pi_{b(g)} + alpha+ - alpha- = 0,  c_w - pi_{b(w)} + beta+ - beta- = 0,
    VOLL - nu^T pi - gamma = 0

and every complementarity pair ``0 <= slack  _|_  dual >= 0`` by big-M with a binary ``z``:
``slack <= M_p (1 - z)``, ``dual <= M_d z``. ``M_p`` is the slack's range (``Pmax - Pmin``,
``W``, ``2F``, total load): exact. ``M_d`` (:attr:`P2PSettings.dual_bound`) bounds the duals;
it is checked after the solve (:attr:`KKTBlock.dual_bound_active`). Lines whose flow cannot
reach their rating for any admissible injection (interval bound over the units' ranges and the
ADNs' ``h`` bounds) keep ``mu = 0`` and get no binary.

The DSOs pay ``sum_k pi_{b_k} h_k``, bilinear; at a KKT point it equals (strong duality with the
stationarity and complementarity conditions, docs/p2p.md §3)::

    sum_g (c1 P + 2 c2 P^2 + alpha+ Pmax - alpha- Pmin) + sum_w (c_w w + beta+ W) + VOLL shed
      - pi^T D + sum_l (mu+ + mu-) F - sum_l (mu+ - mu-) f_shift

which is convex (``2 c2 P^2``) and linear in the duals: :attr:`KKTBlock.payment`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cvxpy as cp
import numpy as np

from env.formulations.dc import DCNetwork, incidence
from env.network import Grid
from policies.p2p.data import P2PSettings

__all__ = ["DCOPF", "DCOPFResult", "KKTBlock", "TSOData", "dc_opf", "tso_kkt"]


@dataclass(frozen=True, eq=False)
class TSOData:
    """The transmission side of a horizon: network, units, loads per bus, wind, prices.

    Attributes:
        dc: the PTDF model; ``gen_bus``, ``wind_bus``, ``boundary_bus`` 0-based buses.
        load_bus_mw: (T, n_bus) transmission loads; ``nu`` (n_bus,) shedding shares.
        wind_mw: (T, n_wind) availability; ``c1``, ``c2``, ``p_min``, ``p_max`` per unit.
        c_wind: wind cost ($/MWh); ``voll``.
    """

    dc: DCNetwork
    gen_bus: np.ndarray
    wind_bus: np.ndarray
    boundary_bus: np.ndarray
    load_bus_mw: np.ndarray
    nu: np.ndarray
    wind_mw: np.ndarray
    c1: np.ndarray
    c2: np.ndarray
    p_min: np.ndarray
    p_max: np.ndarray
    c_wind: float
    voll: float

    @classmethod
    def build(cls, grid: Grid, t_load_mw: np.ndarray, t_wind_mw: np.ndarray, settings: P2PSettings,
              n_adn: int | None = None) -> "TSOData":
        """From a T-D grid, its transmission loads ``(T, n_t_load)`` and wind ``(T, n_t_der)``
        (``n_adn``: use the first ``n_adn`` boundary buses only)."""
        t = grid.transmission
        if t is None:
            raise ValueError(f"TSOData: {grid.name} has no transmission network")
        load = np.asarray(t_load_mw, dtype=float) @ incidence(t.n_bus, t.load.bus).T
        nu = incidence(t.n_bus, t.load.bus) @ np.asarray(t.load.p_mw, dtype=float)
        g = t.gen
        k = len(grid.boundary_bus) if n_adn is None else n_adn
        return cls(DCNetwork.from_network(t), np.asarray(g.bus), np.asarray(t.der.bus),
                   np.asarray(grid.boundary_bus[:k]), load, nu / nu.sum(), np.asarray(t_wind_mw, dtype=float),
                   np.asarray(g.cost_c1_per_mwh, float), np.asarray(g.cost_c2_per_mw2h, float),
                   np.asarray(g.p_min_mw, float), np.asarray(g.p_max_mw, float),
                   float(grid.tariff.wind_cost_per_mwh),
                   settings.voll_for(grid.tariff.penalty_load_shed_per_mwh))

    @property
    def n_periods(self) -> int:
        return int(self.load_bus_mw.shape[0])

    @cached_property
    def opf(self) -> "DCOPF":
        """The DC-OPF of these data, built once (DPP in ``h``) and re-solved by :func:`dc_opf`."""
        return DCOPF(self)

    def injection(self, P, w, shed, h):  # noqa: ANN001, ANN201 - cvxpy or numpy
        """``(T, n_bus)`` net injections ``C_g P + C_w w + nu shed - D - C_b h``."""
        n = self.dc.n_bus
        inj = P @ incidence(n, self.gen_bus).T - self.load_bus_mw - h @ incidence(n, self.boundary_bus).T
        if self.wind_bus.size:
            inj = inj + w @ incidence(n, self.wind_bus).T
        shed_col = cp.reshape(shed, (self.n_periods, 1), order="F") if isinstance(shed, cp.Expression) \
            else np.asarray(shed).reshape(-1, 1)
        return inj + shed_col @ self.nu[None, :]

    def bindable_lines(self, h_lo: np.ndarray, h_hi: np.ndarray) -> np.ndarray:
        """Rated lines whose |flow| can reach the rating for some injection in the boxes
        ``P in [Pmin, Pmax]``, ``w in [0, W]``, ``shed in [0, sum D]``, ``h in [h_lo, h_hi]``
        (``(T, K)`` each); the others never bind (interval arithmetic on the PTDF rows)."""
        rated = self.dc.rated
        ptdf = self.dc.ptdf[rated]
        base = -self.load_bus_mw @ ptdf.T + self.dc.f_shift_mw[rated][None, :]      # (T, L)
        width = np.zeros_like(base)
        mid = base.copy()

        def add(coef: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
            nonlocal mid, width
            mid = mid + ((lo + hi) / 2) @ coef.T
            width = width + ((hi - lo) / 2) @ np.abs(coef).T

        T = self.n_periods
        add(ptdf[:, self.gen_bus], np.tile(self.p_min, (T, 1)), np.tile(self.p_max, (T, 1)))
        if self.wind_bus.size:
            add(ptdf[:, self.wind_bus], np.zeros_like(self.wind_mw), self.wind_mw)
        add((ptdf @ self.nu)[:, None], np.zeros((T, 1)), self.load_bus_mw.sum(axis=1, keepdims=True))
        add(-ptdf[:, self.boundary_bus], h_lo, h_hi)
        reach = (np.abs(mid) + width).max(axis=0)
        return rated[reach >= self.dc.rate_mw[rated] * (1 - 1e-9)]


@dataclass(frozen=True, eq=False)
class DCOPFResult:
    """A solved DC-OPF: ``p_mw`` (T, G), ``w_mw`` (T, W), ``shed_mw`` (T,), ``lmp`` (T, n_bus),
    ``cost`` (sum over periods of the hourly cost rate x dt, $)."""

    p_mw: np.ndarray
    w_mw: np.ndarray
    shed_mw: np.ndarray
    lmp: np.ndarray
    cost: float


class DCOPF:
    """The TSO's DC-OPF (module docstring) of one :class:`TSOData`, built once with the boundary
    schedules ``h`` (T, K) as a cvxpy Parameter (DPP) and re-solved by Clarabel for each ``h``.

    Get it by :attr:`TSOData.opf` (one per data); :func:`dc_opf` is the one-call form.
    """

    def __init__(self, data: TSOData) -> None:
        T, G, K = data.n_periods, len(data.c1), len(data.boundary_bus)
        self.data = data
        self.h_mw = cp.Parameter((T, K), name="tso_h")
        self.P = cp.Variable((T, G), name="tso_p")
        self.w = cp.Variable((T, len(data.wind_bus)), name="tso_w")
        self.shed = cp.Variable(T, name="tso_shed")
        inj = data.injection(self.P, self.w, self.shed, self.h_mw)
        rated = data.dc.rated
        f = inj @ data.dc.ptdf[rated].T + data.dc.f_shift_mw[rated][None, :]
        self.bal = cp.sum(inj, axis=1) == 0
        self.up, self.dn = f <= data.dc.rate_mw[rated][None, :], -f <= data.dc.rate_mw[rated][None, :]
        full = lambda x: np.broadcast_to(x, (T, G))  # noqa: E731 - cvxpy's broadcast has no CPP canonicalization
        cons = [self.bal, self.up, self.dn, self.P <= full(data.p_max), self.P >= full(data.p_min), self.w >= 0,
                self.w <= data.wind_mw, self.shed >= 0]
        rate = (cp.sum(self.P @ data.c1) + cp.sum(cp.square(self.P) @ data.c2) + data.c_wind * cp.sum(self.w)
                + data.voll * cp.sum(self.shed))
        self.problem = cp.Problem(cp.Minimize(rate), cons)
        if not self.problem.is_dpp():
            raise AssertionError("DCOPF: the problem must be DPP (h enters affinely)")

    def solve(self, h_mw: np.ndarray, dt_h: float) -> DCOPFResult:
        """Set ``h`` (T, K), re-solve; LMPs from the duals.

        Raises:
            RuntimeError: the solver does not report an optimum (``optimal_inaccurate`` included).
        """
        data, T = self.data, self.data.n_periods
        self.h_mw.value = np.asarray(h_mw, dtype=float).reshape(self.h_mw.shape)
        self.problem.solve(solver="CLARABEL")
        if self.problem.status != cp.OPTIMAL:
            raise RuntimeError(f"dc_opf: solver status {self.problem.status}")
        # cvxpy: Lagrangian = f0 + y (expr_lhs - rhs) for each constraint (y >= 0 for <=); the price of
        # a MW withdrawn at bus b is d(cost)/d(D_b) = -y_bal - ptdf_b^T (y_up - y_dn).
        lam = -np.asarray(self.bal.dual_value, dtype=float).reshape(T)
        mu = np.asarray(self.up.dual_value, dtype=float) - np.asarray(self.dn.dual_value, dtype=float)
        lmp = lam[:, None] - mu @ data.dc.ptdf[data.dc.rated]
        w = self.w.value if self.w.value is not None else np.zeros((T, 0))
        return DCOPFResult(np.array(self.P.value), np.array(w), np.array(self.shed.value), lmp,
                           float(self.problem.value) * dt_h)


def dc_opf(data: TSOData, h_mw: np.ndarray, dt_h: float) -> DCOPFResult:
    """Solve the TSO's DC-OPF (module docstring) for fixed boundary schedules ``h`` (T, K) by
    Clarabel; LMPs from the duals. Re-uses the data's built problem (:attr:`TSOData.opf`).

    Raises:
        RuntimeError: the solver does not report an optimum.
    """
    return data.opf.solve(h_mw, dt_h)


@dataclass(frozen=True, eq=False)
class KKTBlock:
    """The lower level's KKT system (module docstring).

    Attributes:
        p_mw, w_mw, shed_mw: primal variables; ``lam``, ``mu_up``, ``mu_dn``, ``a_up``, ``a_dn``,
            ``b_up``, ``b_dn``, ``gamma``: duals; ``lines``: the lines kept (others never bind).
        pairs: ``(name, slack, dual, z)`` of every complementarity pair.
        constraints: all KKT constraints; ``payment``: ``sum_t dt sum_k pi h`` linearized ($).
        lmp: (T, n_bus) LMP expression; ``generation_cost``: the TSO's cost ($).
    """

    p_mw: cp.Variable
    w_mw: cp.Variable
    shed_mw: cp.Variable
    lam: cp.Variable
    mu_up: cp.Variable
    mu_dn: cp.Variable
    lines: np.ndarray
    pairs: list
    constraints: list
    payment: cp.Expression
    lmp: cp.Expression
    generation_cost: cp.Expression
    dual_bound: float

    def dual_bound_active(self, tol: float = 1e-3) -> bool:
        """Whether a dual sits at its big-M bound (then M_d may cut off the true optimum)."""
        return any(np.max(np.asarray(d.value), initial=0.0) >= self.dual_bound * (1 - tol) for _, _, d, _ in self.pairs)

    def complementarity_max(self) -> float:
        """``max |slack x dual|`` over all pairs at the solution (0 at an exact KKT point)."""
        return max((float(np.max(np.abs(np.asarray(s.value) * np.asarray(d.value)), initial=0.0))
                    for _, s, d, _ in self.pairs), default=0.0)


def tso_kkt(data: TSOData, h_mw: cp.Expression, dt_h: float, settings: P2PSettings, h_lo: np.ndarray,
            h_hi: np.ndarray) -> KKTBlock:
    """The KKT conditions of the DC-OPF for ``h`` (T, K) an expression of the upper level (module
    docstring); ``h_lo``, ``h_hi`` (T, K) bounds on ``h`` used to screen the lines."""
    T, G, W = data.n_periods, len(data.c1), len(data.wind_bus)
    lines = data.bindable_lines(h_lo, h_hi)
    L = len(lines)
    ptdf = data.dc.ptdf[lines]
    F = data.dc.rate_mw[lines]
    md = settings.dual_bound
    P = cp.Variable((T, G), name="ll_p")
    w = cp.Variable((T, W), name="ll_w")
    shed = cp.Variable(T, name="ll_shed")
    lam = cp.Variable(T, name="ll_lambda")
    mu_up, mu_dn = cp.Variable((T, L), nonneg=True, name="ll_mu_up"), cp.Variable((T, L), nonneg=True, name="ll_mu_dn")
    a_up, a_dn = cp.Variable((T, G), nonneg=True, name="ll_a_up"), cp.Variable((T, G), nonneg=True, name="ll_a_dn")
    b_up, b_dn = cp.Variable((T, W), nonneg=True, name="ll_b_up"), cp.Variable((T, W), nonneg=True, name="ll_b_dn")
    gamma = cp.Variable(T, nonneg=True, name="ll_gamma")
    inj = data.injection(P, w, shed, h_mw)
    f = inj @ ptdf.T + data.dc.f_shift_mw[lines][None, :]
    lam_col = cp.reshape(lam, (T, 1), order="F")
    lmp = lam_col @ np.ones((1, data.dc.n_bus)) - (mu_up - mu_dn) @ ptdf   # (T, n_bus)
    cons = [cp.sum(inj, axis=1) == 0,
            data.c1[None, :] + 2 * cp.multiply(data.c2[None, :], P) - lmp[:, data.gen_bus] + a_up - a_dn == 0,
            data.voll - lmp @ data.nu - gamma == 0]
    if W:
        cons.append(data.c_wind - lmp[:, data.wind_bus] + b_up - b_dn == 0)
    total_load = data.load_bus_mw.sum(axis=1)
    pairs = [("p_max", data.p_max[None, :] - P, a_up, np.tile(data.p_max - data.p_min, (T, 1))),
             ("p_min", P - data.p_min[None, :], a_dn, np.tile(data.p_max - data.p_min, (T, 1))),
             ("shed", shed, gamma, total_load)]
    if W:
        pairs += [("w_max", data.wind_mw - w, b_up, data.wind_mw), ("w_min", w, b_dn, data.wind_mw)]
    if L:
        pairs += [("line_up", F[None, :] - f, mu_up, np.tile(2 * F, (T, 1))),
                  ("line_dn", F[None, :] + f, mu_dn, np.tile(2 * F, (T, 1)))]
    out = []
    for name, slack, dual, m_p in pairs:
        z = cp.Variable(slack.shape, boolean=True, name=f"ll_z_{name}")
        cons += [slack >= 0, slack <= cp.multiply(m_p, 1 - z), dual <= md * z]
        out.append((name, slack, dual, z))
    payment = dt_h * (cp.sum(P @ data.c1) + 2 * cp.sum(cp.square(P) @ data.c2)
                      + cp.sum(a_up @ data.p_max) - cp.sum(a_dn @ data.p_min)
                      + data.voll * cp.sum(shed) - cp.sum(cp.multiply(lmp, data.load_bus_mw))
                      + cp.sum((mu_up + mu_dn) @ F) - cp.sum((mu_up - mu_dn) @ data.dc.f_shift_mw[lines]))
    if W:
        payment = payment + dt_h * (data.c_wind * cp.sum(w) + cp.sum(cp.multiply(b_up, data.wind_mw)))
    gen_cost = dt_h * (cp.sum(P @ data.c1) + cp.sum(cp.square(P) @ data.c2) + data.c_wind * cp.sum(w)
                       + data.voll * cp.sum(shed))
    return KKTBlock(P, w, shed, lam, mu_up, mu_dn, lines, out, cons, payment, lmp, gen_cost, md)
