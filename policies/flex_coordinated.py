"""Coordinated T-D scheduling with a p-box flexibility balance (seed 002 §4, docs/flexibility.md §8).

The MPC's window problem (:mod:`policies.mpc`: LinDistFlow feeders, the transmission balance
with DC units, storage, EV stations, the env's cost including deep peak shaving) with the
seed's flexibility balance in place of the MPC's fixed reserve margin:

    sum_g r_up_g,k + F_D,k^u + s_k^u >= eps_u_k        (up, MW; likewise down with eps_d)

where ``eps_u_k`` / ``-eps_d_k`` are the system's net-load error bounds of step k from the p-box
(:mod:`scenarios.flex_demand`, fitted at the day's first step from the forecast model's own
day-ahead error samples, truncated at ``beta``) - the part of the seed's ramp demand
``f_u = max(Pn_{k+1} + eps_u - Pn_k, 0)`` that the schedule does not already follow - and
``F_D,k`` the feeders' flexibility: storage headroom (``up <= p + p_max``,
``down <= p_max - p`` on the battery's net power) and, down, renewable output that can be
curtailed, each limited by the interface ``P_B^max`` (the boundary flexibility constraints,
seed §4.4, ``up <= P_B^max + head``, ``down <= P_B^max - head``); down, also the transmission
renewables' output (curtailed by the env's balancing within the step). Shortfalls ``s`` cost
``c_F`` per MWh; the objective ``eps (C_T + C_D) + (1 - eps) C_F`` is solved as
``C_T + C_D + ((1 - eps) / eps) C_F``. The CVaR part of ``C_F`` (errors beyond the interval)
does not depend on the dispatch at a fixed ``beta``: it is reported, not optimized.

Re-planning and recourse: the window is re-solved on the intraday forecast every
``FlexSettings.replan_every_h`` (default hourly; ``replan_steps`` lists the steps); in between
the stored plan's step is played with the per-step recourse (:meth:`FlexCoordinatedPolicy._recourse`:
thermal moved by the observed net-load deviation within the cleared reserves), and inside the
step the env's balancing deploys the cleared thermal and EV reserves. The DS1-DS2 tie line is a
planned transfer (``tie_p_mw``) the env plays. ``flex_balance=False`` (registry ``flex_coordinated_ed``) drops the balance and
clears no reserve: economic dispatch only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import cvxpy as cp
import numpy as np

from env.network import Grid
from env.settings import StrictKwargs
from env.simulator import GridModel
from policies.mpc import MPCPolicy, _Window

__all__ = ["FlexSettings", "FlexCoordinatedPolicy"]

STVS_TANGENTS = 8        # pieces of the STVS risk's convex envelope along each T renewable's output


@dataclass(frozen=True)
class FlexSettings(StrictKwargs):
    """Settings of :class:`FlexCoordinatedPolicy` (frozen, validated).

    Attributes:
        epsilon: risk preference ``eps`` in ``eps (C_T + C_D) + (1 - eps) C_F``, in (0, 1].
        beta: confidence level of the p-box truncation (seed: 0.95).
        c_flex_up_per_mwh / c_flex_down_per_mwh: ``c_F^u`` / ``c_F^d``, price of unmet flexibility
            (chosen: the tariff's load-shed and curtailment penalties are the defaults when None).
        n_samples: forecast error samples per step for the p-box fit.
        boundary_p_max_mw: the interface limit ``P_B^max`` of each feeder.
        flex_balance: False = economic dispatch only (no flexibility balance, no reserve).
        stvs_risk_per_h: the STVS risk's price (risk preference coefficient x the cost of an
            instability; currency per hour at probability 1): the objective adds, per step,
            ``stvs_risk_per_h * dt * (1 - p_stable)``, linearized at the observed operating point in
            the units' P and the PCC exchange and a convex piecewise-linear envelope in each
            transmission renewable's output (the shipped surrogate, docs/stvs.md). 0 = no STVS term.
        stvs_deviation_per_h: the price of the post-fault voltage deviation (currency per hour per
            unit of the surrogate's VDSI if the system recovers; a collapse is the instability term's),
            approximated likewise. 0 = no such term.
        stvs_surrogate: which shipped surrogate both STVS terms read: ``"seed"`` (the seed's VDSI,
            threshold 0.2 on the critical buses; T renewables summed) or ``"band"`` (the stress
            case's: VDSI at the admissible band's threshold 0.05 over all transmission buses, the T
            renewables per bus, trained on high-penetration points; docs/stvs.md "Stress case").
        replan_every_h: re-plan interval (h): the window is re-solved on the intraday forecast at
            the day's first step and every ``round(replan_every_h / dt)`` steps after (at least 1 =
            every step); in between the stored plan is played with the per-step recourse.
    """

    epsilon: float = 0.5
    beta: float = 0.95
    c_flex_up_per_mwh: float | None = None
    c_flex_down_per_mwh: float | None = None
    n_samples: int = 300
    boundary_p_max_mw: float = 5.0
    flex_balance: bool = True
    stvs_risk_per_h: float = 0.0
    stvs_deviation_per_h: float = 0.0
    stvs_surrogate: str = "seed"
    replan_every_h: float = 1.0

    def __post_init__(self) -> None:
        self.check_types()
        self.check_range("epsilon", 0.0, 1.0, low_open=True)
        self.check_range("beta", 0.0, 1.0, low_open=True, high_open=True)
        self.check_range("c_flex_up_per_mwh", 0.0)
        self.check_range("c_flex_down_per_mwh", 0.0)
        self.check_range("n_samples", 40)
        self.check_range("boundary_p_max_mw", 0.0, low_open=True)
        self.check_range("stvs_risk_per_h", 0.0)
        self.check_range("stvs_deviation_per_h", 0.0)
        if self.stvs_surrogate not in ("seed", "band"):
            raise ValueError(f"FlexSettings.stvs_surrogate: must be one of ['seed', 'band'], got {self.stvs_surrogate!r}")
        self.check_range("replan_every_h", 0.0, low_open=True)


class _FlexWindow(_Window):
    """The MPC window with the feeders' storage and curtailable output in the reserve balance,
    and the tie lines between feeders as a planned transfer."""

    def _bus_loads(self, grid: Grid, m: GridModel, K: int, cons: list[cp.Constraint]) -> list[Any]:
        """The load forecast plus the tie lines' transfer ``x`` (n_tie, K), ``|x| <= p_max``: a
        consumption at the sending feeder's bus and an injection at the receiving one, as the env
        plays it (:meth:`env.simulator.GridModel._stack_ties`)."""
        if not m.n_tie:
            return self.lp
        self.tie = cp.Variable((m.n_tie, K), name="tie_p_mw")
        cons += [self.tie <= m.tie_p_max[:, None], self.tie >= -m.tie_p_max[:, None]]
        loads = list(self.lp)
        for k, sl in enumerate(m.feeder_bus_slices):
            inc = m.tie_inc[sl]                          # the env's tie incidence on feeder k's buses
            if inc.any():
                loads[k] = loads[k] + inc @ self.tie
        return loads

    def _feeder_flex(self, m: GridModel, K: int, dt: float, cons: list[cp.Constraint]) -> tuple[Any, Any, Any]:
        self.p_b = cp.Parameter(nonneg=True, name="boundary_p_max")
        self.head_k = cp.Variable((m.n_feeder, K), name="head_per_feeder")
        cons.append(self.head_k == cp.vstack(list(self.net.head_mw)))
        fu = cp.Variable((m.n_feeder, K), nonneg=True, name="feeder_flex_up")
        fd = cp.Variable((m.n_feeder, K), nonneg=True, name="feeder_flex_dn")
        up = np.zeros((m.n_feeder, K)) if not m.st_p_max.size else 0
        dn = 0
        if m.st_p_max.size:
            net_st = self.st.net_mw                                   # charging > 0
            up = m.f_st @ (net_st + m.st_p_max[:, None])
            dn = m.f_st @ (m.st_p_max[:, None] - net_st)
        n_der_f = int(m.n_der_f)
        if n_der_f:
            dn = dn + m.f_der @ self.used[:n_der_f]
        cons += [fu <= up, fd <= dn, fu <= self.p_b + self.head_k, fd <= self.p_b - self.head_k]
        # transmission renewables can be curtailed within the step (the env's balancing does): down supply
        t_dn = cp.sum(self.used[n_der_f:], axis=0) if self.used.shape[0] > n_der_f else 0
        # STVS risk (set per step): linear in the units' P and the PCC exchange (gradients x price),
        # convex piecewise linear in each T renewable's output (the envelope's tangents, epigraph s)
        self.stvs_g_unit = cp.Parameter(m.n_gen, name="stvs_risk_unit")
        self.stvs_g_head = cp.Parameter(m.n_feeder, name="stvs_risk_head")
        risk = self.stvs_g_unit @ self.th.p_mw + self.stvs_g_head @ self.head_k
        n_der_t = self.used.shape[0] - n_der_f
        self.stvs_der_a = self.stvs_der_b = None
        if n_der_t:
            n_tan = STVS_TANGENTS
            self.stvs_der_a = cp.Parameter((n_der_t, n_tan), name="stvs_risk_der_a")
            self.stvs_der_b = cp.Parameter((n_der_t, n_tan), name="stvs_risk_der_b")
            s_der = cp.Variable((n_der_t, K), nonneg=True, name="stvs_risk_der")
            u_t = self.used[n_der_f:]
            cons += [s_der >= self.stvs_der_a[:, j:j + 1] @ np.ones((1, K))
                     + cp.multiply(self.stvs_der_b[:, j:j + 1] @ np.ones((1, K)), u_t) for j in range(n_tan)]
            risk = risk + cp.sum(s_der, axis=0)
        risk = dt * cp.sum(risk)
        return cp.sum(fu, axis=0), cp.sum(fd, axis=0) + t_dn, risk


class FlexCoordinatedPolicy(MPCPolicy):
    """Coordinated T-D dispatch with the p-box flexibility balance (module docstring).

    Args:
        grid: a T-D grid.
        flex: :class:`FlexSettings`; the MPC's own options are the other keyword arguments.

    Attributes (besides the MPC's): ``demand_up_mw`` / ``demand_down_mw`` (T,) the day's
    flexibility requirement per step (MW, >= 0) and ``fallback_log`` (the MPC's: a failed solve
    plays the heuristic and is recorded).
    """

    name = "flex_coordinated"
    _window_class = _FlexWindow

    def __init__(self, grid: Grid, flex: FlexSettings | None = None, **kw: Any) -> None:
        if not grid.is_td:
            raise ValueError(f"flex_coordinated needs a T-D grid; {grid.name} has no transmission network")
        self.flex = flex or FlexSettings()
        super().__init__(grid, **kw)
        if not self.flex.flex_balance:
            self.name = "flex_coordinated_ed"
        self.demand_up_mw = self.demand_down_mw = None
        self.stvs = None
        if self.flex.stvs_risk_per_h > 0 or self.flex.stvs_deviation_per_h > 0:
            from env.stvs.surrogate import surrogate_for

            self.stvs = surrogate_for(grid, band=self.flex.stvs_surrogate == "band")
            if self.stvs is None:
                raise ValueError(f"flex_coordinated: a positive STVS price needs an STVS surrogate trained on "
                                 f"{grid.name} (docs/stvs.md); none ships for it")
            self.name = "flex_coordinated_stvs"

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self.demand_up_mw = self.demand_down_mw = None
        self.shortfall_mw: list[tuple[float, float]] = []
        self.replan_steps: list[int] = []         # steps at which the window was re-solved
        self._plan: Any = None                     # the window holding the current plan
        self._plan_step = 0
        self._seed = 0 if seed is None else int(seed)

    def _day_demand(self, forecast: Any, seed: int) -> None:
        """The day's flexibility requirement from the p-box of the day-ahead error samples."""
        from scenarios.flex_demand import day_ahead_errors, net_load_bounds, system_errors

        errors = system_errors(day_ahead_errors(forecast.day_ahead, self.flex.n_samples,
                                                np.random.default_rng([seed, 16])))
        eps_d, eps_u = net_load_bounds(errors, self.flex.beta)
        self.demand_up_mw, self.demand_down_mw = np.maximum(eps_u, 0.0), np.maximum(-eps_d, 0.0)

    def act(self, obs: Any, forecast: Any = None) -> Any:
        forecast = forecast if forecast is not None else obs.forecast
        if self.demand_up_mw is None:          # the ED-only variant sizes it too, for the shortfall KPI
            if forecast is None:
                raise ValueError("flex_coordinated: needs the forecast (day-ahead information) to size the p-box")
            self._day_demand(forecast, self._seed)
        k = obs.step - self._plan_step if self._plan is not None else -1
        every = max(1, int(round(self.flex.replan_every_h / obs.dt_h)))
        if 0 < k < min(every, self._plan.K if self._plan is not None else 0):
            w, dispatch = self._plan, self._recourse(self._plan, obs, k)
            self.ev_forecaster.replica(obs, forecast)      # keep the EV replay's chain of delivered powers
            self.ev_forecaster.record_setpoint(obs.step, dispatch.ev_p_mw * 1e3)
        else:
            n_fallbacks = len(self.fallback_log)
            dispatch = super().act(obs, forecast)
            self.replan_steps.append(obs.step)
            if len(self.fallback_log) > n_fallbacks:      # recorded by the MPC; re-plan at the next step
                self._plan = None
                return dispatch
            w, k = self._windows[(self._window_size(obs.n_steps - obs.step, obs.n_steps), round(obs.dt_h, 9))], 0
            self._plan, self._plan_step = w, obs.step
        up, dn = self._step_supply(w, k)
        self.shortfall_mw.append((max(self.demand_up_mw[obs.step] - up, 0.0),
                                  max(self.demand_down_mw[obs.step] - dn, 0.0)))
        return dispatch

    def _recourse(self, w: Any, obs: Any, k: int) -> Any:
        """Step ``k`` of the stored plan, re-dispatched within the flexibility it cleared: the
        renewables follow the plan's output (curtailment against the availability observed now),
        and the thermal units take the deviation of the observed net load from the plan's,
        ``delta = (L_obs - L_plan) - (used_obs - used_plan)``, within their cleared reserves
        (pro rata, ``-r_dn <= dP <= r_up``), the reserves shrinking by what they moved; the env's
        balancing covers the rest."""
        d = self._first_step(w, obs, col=k)
        m = self.model
        plan_load = float(w.load_t.value[k]) + sum(float(lp.value[:, k].sum()) for lp in w.lp)
        used_plan = np.asarray(w.used.value, dtype=float)[:, k] if self.sizes.n_der else np.zeros(0)
        used_now = np.minimum(used_plan, np.asarray(obs.der_avail_mw, dtype=float))
        delta = float(np.sum(obs.load_p_mw) - plan_load) - float(used_now.sum() - used_plan.sum())
        r_up, r_dn = d.thermal_r_up_mw, d.thermal_r_dn_mw
        if delta > 0 and r_up.sum() > 0:
            move = r_up * min(delta / r_up.sum(), 1.0)
        elif delta < 0 and r_dn.sum() > 0:
            move = -r_dn * min(-delta / r_dn.sum(), 1.0)
        else:
            move = np.zeros(m.n_gen)
        return replace(d, thermal_p_mw=d.thermal_p_mw + move, thermal_r_up_mw=r_up - np.maximum(move, 0.0),
                       thermal_r_dn_mw=r_dn - np.maximum(-move, 0.0))

    def _step_supply(self, w: Any, col: int = 0) -> tuple[float, float]:
        """Flexibility the plan holds at its step ``col`` (MW): cleared thermal reserves, net of what the
        EV reserve calls can take, plus the feeders' storage headroom and curtailable output within the
        interface limit, plus (down) the transmission renewables' output (the balance's left side)."""
        m, f = self.model, self.flex
        val = lambda x: np.asarray(x.value, dtype=float)  # noqa: E731
        head = np.array([float(h.value[col]) for h in w.net.head_mw])
        used = val(w.used)[:, col] if self.sizes.n_der else np.zeros(0)
        f_up, f_dn = np.zeros(m.n_feeder), m.f_der @ used[:m.n_der_f] if m.n_der_f else np.zeros(m.n_feeder)
        if m.st_p_max.size:
            net_st = val(w.st.p_charge_mw)[:, col] - val(w.st.p_discharge_mw)[:, col]
            f_up, f_dn = m.f_st @ (net_st + m.st_p_max), f_dn + m.f_st @ (m.st_p_max - net_st)
        f_up = np.minimum(f_up, np.maximum(f.boundary_p_max_mw + head, 0.0))
        f_dn = np.minimum(f_dn, np.maximum(f.boundary_p_max_mw - head, 0.0))
        up = val(w.th.r_up_mw)[:, col].sum() + f_up.sum() - val(w.ev_rd)[:, col].sum()
        dn = val(w.th.r_dn_mw)[:, col].sum() + f_dn.sum() + used[m.n_der_f:].sum() - val(w.ev_ru)[:, col].sum()
        return float(up), float(dn)

    def day_stats(self) -> dict[str, float]:
        """The MPC's KPIs plus ``flex_shortfall_h``: hours whose first planned step holds less
        flexibility than the p-box demand (either direction), and the mean shortfall (MW)."""
        stats = super().day_stats()
        s = np.asarray(self.shortfall_mw, dtype=float).reshape(-1, 2)
        short = (s > 1e-6).any(axis=1)
        dt_h = 24.0 / len(self.demand_up_mw) if self.demand_up_mw is not None else 0.0
        stats.update(flex_shortfall_h=float(short.sum() * dt_h),
                     flex_shortfall_mw_mean=float(s.sum(axis=1).mean()) if s.size else 0.0)
        return stats

    def _set_td(self, w: Any, obs: Any, forecast: Any, load_p: np.ndarray, avail: np.ndarray, A: int) -> None:
        super()._set_td(w, obs, forecast, load_p, avail, A)
        K, t = w.K, obs.step
        up, dn = np.zeros(K), np.zeros(K)
        if self.flex.flex_balance:
            up[:A] = self.demand_up_mw[t:t + A]
            dn[:A] = self.demand_down_mw[t:t + A]
        w.margin_up.value, w.margin_dn.value = up, dn
        tar, f = self.grid.tariff, self.flex
        scale = (1.0 - f.epsilon) / f.epsilon
        c_up = tar.penalty_load_shed_per_mwh if f.c_flex_up_per_mwh is None else f.c_flex_up_per_mwh
        c_dn = tar.penalty_curtailment_per_mwh if f.c_flex_down_per_mwh is None else f.c_flex_down_per_mwh
        w.price_short_up.value, w.price_short_dn.value = scale * c_up, scale * c_dn
        w.p_b.value = f.boundary_p_max_mw
        g_unit, g_head = np.zeros(self.model.n_gen), np.zeros(self.model.n_feeder)
        if w.stvs_der_a is not None:
            w.stvs_der_a.value = w.stvs_der_b.value = np.zeros(w.stvs_der_a.shape)
        if self.stvs is not None:
            from env.stvs.surrogate import der_risk_tangents, risk_gradient

            op = self._stvs_operating_point(obs)
            prices = {"instability": f.stvs_risk_per_h, "vdsi": f.stvs_deviation_per_h}
            for quantity, price in prices.items():
                if price > 0:
                    _, gu, gh, _ = risk_gradient(self.grid, self.stvs, op, quantity)
                    g_unit, g_head = g_unit + price * gu, g_head + price * gh
            if w.stvs_der_a is not None:
                avail_t = np.asarray(obs.der_avail_mw, float)[self.model.n_der_f:]
                a, b = der_risk_tangents(self.grid, self.stvs, op, prices, avail_t, STVS_TANGENTS + 1)
                w.stvs_der_a.value, w.stvs_der_b.value = a, b
        w.stvs_g_unit.value, w.stvs_g_head.value = g_unit, g_head

    def _stvs_operating_point(self, obs: Any) -> Any:
        """The operating point the STVS risk is read at: last thermal output, the step's loads and
        renewables, feeders' net load as PCC. The T renewables are curtailed pro rata (as the env's
        balancing curtails them) to what the loads and the feeders absorb beyond the thermal output:
        at high penetration their availability is far above any balanced point."""
        from env.balancing import curtail
        from env.stvs.operating_point import StvsOperatingPoint

        m, t = self.model, self.grid.transmission
        n = t.n_bus
        lp, lq = np.asarray(obs.load_p_mw, float), np.asarray(obs.load_q_mvar, float)
        der = np.array(obs.der_avail_mw, dtype=float)
        nl, nd = m.n_load_f, m.n_der_f
        head_p = m.f_load @ lp[:nl] - (m.f_der @ der[:nd] if nd else 0.0)
        surplus = float(der[nd:].sum() + np.sum(obs.thermal_p_last_mw) - lp[nl:].sum() - head_p.sum())
        curtail(der[nd:], surplus)
        op = StvsOperatingPoint(np.bincount(t.gen.bus, obs.thermal_p_last_mw, minlength=n),
                                np.bincount(t.load.bus, lp[nl:], minlength=n),
                                np.bincount(t.load.bus, lq[nl:], minlength=n),
                                np.bincount(t.der.bus, der[nd:], minlength=n), tuple(self.grid.boundary_bus),
                                head_p, m.f_load @ lq[:nl])
        return op
