"""The pure grid simulator (no gym): the physics truth every policy is judged by.

``GridSimulator(grid, scenario, settings)`` plays one sampled day step by step:

    limits = sim.limits()           # ranges of this step's action encoding
    obs = sim.observe()             # what a policy may know now (env.observation)
    outcome = sim.step(dispatch)    # project, simulate, account -> StepOutcome

One step (docs/design.md "Physics truth"):

1. **Projection** of the dispatch onto the feasible set of the step: EV station power to
   ``[p_min, p_max]`` of its connected EVs; storage to ``|p| <= p_max`` and the energy
   limits ``0 <= e + (eta_c p+ - p-/eta_d) dt <= e_max``; curtailment to ``[0, 1]``; thermal
   setpoints to ``[p_min, p_max]`` and the ramp ``|P - P_last| <= ramp dt``; thermal reserves
   to ``0 <= r_up <= min(p_max - P, P_last + ramp dt - P)``,
   ``0 <= r_dn <= min(P - p_min, P - P_last + ramp dt)``; EV reserves to
   ``0 <= r_up <= P_ev - p_min``, ``0 <= r_dn <= p_max - P_ev``; compensators to
   ``[q_min, q_max]``. Every moved amount is reported per field (``projection``).
2. **EVs**: the station setpoints (after any reserve deployment) are split to the EVs by
   :class:`env.evcs.EVFleet` (must-run first, then least laxity); storage
   ``e += (eta_c p+ - p-/eta_d) dt``.
3. **Feeders**: per bus ``p = load - DER used + EV + storage``, ``q = load q - compensator q``;
   AC backward/forward sweep (feeders with one topology solved together, warm-started
   from the last step). If a sweep has no solution (overload), the feeder's loads are
   shed proportionally (bisection on the shed share) until it converges; recorded.
4. **Single feeder**: the root buys at the time-of-use price and sells at ``price_sell``.
   **T-D**: the TSO's call on boundary ``b`` is clipped to the feeder's cleared EV
   reserves and delivered by its stations (pro rata to their ``r_up`` / ``r_dn``); then the
   real-time imbalance ``D = T loads + sum head P - (thermal setpoints + T wind used)`` is
   covered (see :func:`env.balancing.balance`); feeders touched by the balancing are
   re-solved; the reference unit closes the residual (feeder loss changes), within its
   limits: an excess goes to the other units, then to spilling transmission wind or shedding
   transmission loads, and only what is left stays outside its limits, recorded as
   ``violations["ref_unit_limit_mw"]`` and priced (``cost["unit_limit"]``, load-shed penalty;
   see :func:`env.balancing.settle_reference`); DC flows by PTDF.
5. **Costs** (tariff currency; energy = MW x dt): see :data:`COST_KEYS`.

Energy balance holds per feeder (``head P + DER used = load served + losses + storage +
EV``, to the sweep tolerance) and on the transmission network (``thermal + wind used =
T loads served + sum head P``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from env.balancing import TOL_MW as _TOL_MW
from env.balancing import balance, imbalance_mw, initial_thermal, settle_reference, tso_call
from env.dispatch import ActionLimits, Dispatch
from env.fastpath import unchecked
from env.evcs import EVCSBounds, EVFleet, EVStepResult
from env.network import Grid
from env.projection import StepProjection, der_used_mw, storage_energy_next
from env.observation import Observation, ObservationSpec
from env.feeder_flow import solve_feeders, voltage_violation_pu
from env.settings import StrictKwargs

from env.grid_model import GridModel, _FeederSolution
from env.step_outcome import (COST_KEYS, VIOLATION_KEYS, StepOutcome, boundary_violation_mw, cost_breakdown,
                              curtailment_mwh, energy_terms)

__all__ = ["COST_KEYS", "GridModel", "GridSimulator", "SimulatorSettings", "StepOutcome", "VIOLATION_KEYS"]




@dataclass(frozen=True)
class SimulatorSettings(StrictKwargs):
    """Options of the simulator (frozen; unknown keys raise, see :meth:`from_kwargs`).

    Attributes:
        v2g: EVs may discharge (station power down to ``-p_max``).
        enforce_must_run: EV setpoints below the must-run power are raised to it.
        ev_reserve_price_per_mwh: price of the EV stations' regulation capacity; ``None``
            = the p_max-weighted mean of the thermal units' reserve prices (0 without units).
        sweep_tol_pu, sweep_max_iter: AC sweep tolerance and iteration limit.
        forecast_horizon_h: look-ahead of :attr:`Observation.net_load_forecast_mw`.
        forecast_obs: source of that point forecast: ``"day_ahead"`` (the day-ahead forecast
            known before the day; free) or ``"intraday"`` (``Forecast.point`` at the step; slower).
    """

    v2g: bool = False
    enforce_must_run: bool = True
    ev_reserve_price_per_mwh: float | None = None
    sweep_tol_pu: float = 1e-10
    sweep_max_iter: int = 100
    forecast_horizon_h: float = 4.0
    forecast_obs: Literal["day_ahead", "intraday"] = "day_ahead"

    def __post_init__(self) -> None:
        """Check every field by type (:meth:`check_types`: bools are bools, ``sweep_max_iter``
        an integer, numbers finite) and range: ``sweep_tol_pu`` in (0, 0.1),
        ``sweep_max_iter`` in [1, 100000], ``forecast_horizon_h`` in (0, 24] (within the day:
        it sizes the observation), ``ev_reserve_price_per_mwh`` None or >= 0."""
        self.check_types()
        self.check_range("sweep_tol_pu", 0.0, 0.1, low_open=True, high_open=True)
        self.check_range("sweep_max_iter", 1, 100_000)
        self.check_range("forecast_horizon_h", 0.0, 24.0, low_open=True)
        self.check_range("ev_reserve_price_per_mwh", 0.0)


# ============================================================================ precomputation


# ============================================================================ the simulator


class _State:
    """Mutable state of a simulator between steps (private)."""

    __slots__ = ("t", "e_mwh", "p_last", "v_ns", "vm", "v_minmax", "line_loading", "tso_last", "bounds",
                 "limits", "ev_lims", "q_last")


class GridSimulator:
    """One day of a grid under one scenario, stepped by :meth:`step` (see the module docstring).

    Args:
        grid: the grid.
        scenario: a ``scenarios.day.Scenario`` of this grid's layout.
        settings: :class:`SimulatorSettings` (default settings when None).
        model: a prebuilt :class:`GridModel` of ``grid`` (built when None).
        projection: a prebuilt :class:`env.projection.StepProjection` of ``model`` at the
            day's step length, shared by the simulators of many days (built when None or
            when it does not match).
    """

    def __init__(self, grid: Grid, scenario: Any, settings: SimulatorSettings | None = None,
                 model: GridModel | None = None, projection: StepProjection | None = None) -> None:
        self.grid = grid
        self._proj_given = projection
        self.settings = settings or SimulatorSettings()
        self.model = model if model is not None else GridModel(grid)
        if self.model.grid is not grid:
            raise ValueError("GridSimulator: model was built for another grid")
        self.scenario = scenario
        self._load_day(scenario)
        m = self.model
        self._fleet: EVFleet | None = None       # built on first use (env.batched never needs it)
        self.ev_reserve_price = (m.ev_reserve_price_default if self.settings.ev_reserve_price_per_mwh is None
                                 else float(self.settings.ev_reserve_price_per_mwh))
        self.price_sell = float(grid.tariff.price_sell_per_mwh)
        self._precompute()
        self._init_state()

    @property
    def projection(self) -> StepProjection:
        """The decoding and projection constants of this grid and step length (shareable)."""
        return self._proj

    @property
    def fleet(self) -> EVFleet:
        """The day's EVs (:class:`env.evcs.EVFleet`), built on first use."""
        if self._fleet is None:
            self._fleet = EVFleet(self.scenario.ev, max(len(self.model.evcs_ports), 1), self.dt_h, self.n_steps,
                                  v2g=self.settings.v2g, enforce_must_run=self.settings.enforce_must_run)
        return self._fleet

    # ------------------------------------------------------------------ setup
    def _load_day(self, sc: Any) -> None:
        m, lay = self.model, self.grid.layout
        if sc.layout.load_names != lay.load_names or sc.layout.evcs_names != lay.evcs_names:
            raise ValueError(f"GridSimulator: scenario layout ({sc.layout.case}) does not match grid {self.grid.name}")
        self.n_steps = int(sc.n_steps)
        self.dt_h = sc.dt_minutes / 60.0
        self.time_h = np.arange(self.n_steps) * self.dt_h
        self.load_p = np.ascontiguousarray(sc.load_pu * lay.load_p_mw)       # (T, n_load)
        self.load_q = np.ascontiguousarray(sc.load_pu * m.load_q_base)      # loads keep their q/p ratio
        self.load_q_f = self.load_q[:, :m.n_load_f]
        self.s_load_fb_pu = m.load_injection_pu(self.load_p[:, :m.n_load_f], self.load_q_f)   # (T, N_fb)
        self.der_avail = m.der_mw(np.asarray(sc.pv_p_mw), np.asarray(sc.wind_p_mw))  # (T, n_der)
        self.tso = np.asarray(sc.tso_requirement_mw, dtype=float)
        self.price_buy = self.grid.tariff.buy_price_at(self.time_h)
        self._net_load_da = self._day_ahead_net_load(sc)

    def _net_rows(self, load_p: np.ndarray, der_mw: np.ndarray) -> np.ndarray:
        """(..., n_rows) net load per feeder (+ transmission row): load - DER availability."""
        m = self.model
        rows = load_p[..., :m.n_load_f] @ m.f_load.T - der_mw[..., :m.n_der_f] @ m.f_der.T
        if m.is_td:
            t_row = load_p[..., m.n_load_f:].sum(-1) - der_mw[..., m.n_der_f:].sum(-1)
            rows = np.concatenate([rows, t_row[..., None]], axis=-1)
        return rows

    def _day_ahead_net_load(self, sc: Any) -> np.ndarray:
        da = sc.day_ahead
        load = da.load_pu_da * self.grid.layout.load_p_mw
        der = self.model.der_mw(da.pv_pu_da * da.pv_p_max_mw, da.wind_pu_da * da.wind_p_max_mw)
        return self._net_rows(load, der)

    def _precompute(self) -> None:
        """Per-day constants of the limits and the observation (no per-step rebuilding)."""
        m, sz = self.model, self.model.sizes
        proj = self._proj_given
        if proj is None or proj.model is not m or proj.dt_h != self.dt_h:
            proj = StepProjection(m, self.dt_h)
        self._proj = proj
        self._lim_lo, self._lim_hi = proj.lim_lo, proj.lim_hi
        lay = dict(sz.layout())
        self._sl_ev, self._sl_rup, self._sl_rdn = proj.sl_ev, proj.sl_rup, proj.sl_rdn
        # (T, n_rows, h) net-load forecast rows: step t = nowcast, then the day-ahead forecast
        h = max(1, int(round(self.settings.forecast_horizon_h / self.dt_h)))
        self._h_fc = h
        now = self._net_rows(self.load_p, self.der_avail)                 # (T, n_rows)
        da = self._net_load_da
        T = self.n_steps
        ahead = np.clip(np.arange(T)[:, None] + np.arange(h)[None, :], 0, T - 1)   # (T, h)
        rows = da[ahead]                                                  # (T, h, n_rows)
        rows[:, 0] = now
        rows = np.where((np.arange(T)[:, None] + np.arange(h)[None, :] >= T)[..., None],
                        rows[np.arange(T), np.minimum(T - 1 - np.arange(T), h - 1)][:, None, :], rows)
        self._fc_rows = np.ascontiguousarray(rows.transpose(0, 2, 1))     # (T, n_rows, h)
        self._v_starts = m.fb_offset
        self._precompute_fast(lay)
        self.der_avail_sum = self.der_avail.sum(axis=1)
        for arr in (self.load_p, self.load_q, self.der_avail, self.der_avail_sum, self.price_buy,
                    self._fc_rows, self.s_load_fb_pu):
            arr.flags.writeable = False

    def _precompute_fast(self, lay: dict[str, slice]) -> None:
        """Templates and index data of the hot path (limits, projection, accounting)."""
        m, sz = self.model, self.model.sizes
        proj = self._proj
        self._lim_at_minus, self._lim_span = proj.lim_at_minus, proj.lim_span
        self._n_ev = sz.n_evcs
        self._lay_q = proj.layout_q
        self._n_noq, self._n_req = proj.n_noq, proj.n_req
        # fields as (name, slice), or (name, None) for empty ones (shared read-only empties)
        self._lay_q_views = tuple((name, sl if sl.stop > sl.start else None) for name, sl in self._lay_q)
        self._tar = self.grid.tariff
        self._price_list = self.price_buy.tolist()
        self._der_avail_sum_list = self.der_avail.sum(axis=1).tolist()
        self._q_zero = np.zeros(sz.n_comp)
        self._q_zero.flags.writeable = False
        self._v_single = m.n_feeder == 1
        self._fc_day_ahead = self.settings.forecast_obs != "intraday"
        self._der_all_f = m.n_der_f == sz.n_der

    def _init_state(self) -> None:
        m = self.model
        st = _State()
        st.t = 0
        st.e_mwh = m.st_e_init.astype(float).copy()
        st.p_last = initial_thermal(self.model, self.load_p[0], self.der_avail[0])
        st.tso_last = np.zeros(m.n_boundary)
        st.line_loading = np.zeros(m.n_line)
        st.q_last = np.zeros(m.sizes.n_comp)
        st.q_last.setflags(write=False)
        st.bounds = st.limits = st.ev_lims = None
        st.v_ns = [np.full(g.idx_cov.shape, g.v0, dtype=complex) for g in m.groups]
        self._state = st
        s = self._feeder_injection(0, np.zeros(m.sizes.n_evcs), np.zeros(m.sizes.n_storage),
                                   self.der_avail[0, :m.n_der_f], np.zeros(m.sizes.n_comp))
        sol = self._solve_feeders(s, self.s_load_fb_pu[0].copy(), np.zeros(m.n_feeder))
        st.v_ns, st.vm = sol.v_ns, sol.vm_pu
        st.v_minmax = self._v_minmax(sol)

    def _v_minmax(self, sol: _FeederSolution) -> np.ndarray:
        """(2, n_feeder) read-only per-feeder min and max of the stacked bus voltages."""
        if sol.v_minmax is not None:
            return sol.v_minmax
        vm = sol.vm_pu
        out = np.empty((2, self.model.n_feeder))
        np.minimum.reduceat(vm, self._v_starts, out=out[0])
        np.maximum.reduceat(vm, self._v_starts, out=out[1])
        out.flags.writeable = False
        return out

    # ------------------------------------------------------------------ public views
    @property
    def t(self) -> int:
        """The next step to play (``n_steps`` when the day is over)."""
        return self._state.t

    @property
    def done(self) -> bool:
        return self._state.t >= self.n_steps

    @property
    def storage_e_mwh(self) -> np.ndarray:
        v = self._state.e_mwh.view()
        v.flags.writeable = False
        return v

    @property
    def thermal_p_last_mw(self) -> np.ndarray:
        v = self._state.p_last.view()
        v.flags.writeable = False
        return v

    def ev_bounds(self) -> EVCSBounds:
        """Station bounds of the current step (cached per step)."""
        st = self._state
        if st.t >= self.n_steps:
            self._require_running()
        if st.bounds is None:
            st.bounds = self.fleet.bounds(st.t)
        return st.bounds

    def _require_running(self) -> None:
        if self._state.t >= self.n_steps:
            raise RuntimeError(f"GridSimulator: the day is over (step {self._state.t} of {self.n_steps})")

    def _ev_limits_block(self) -> np.ndarray:
        """(2, n_evcs): p_min, p_max of the stations in MW at the current step (cached per step;
        internal, not to be modified)."""
        st = self._state
        lims = st.ev_lims
        if lims is None:
            self._require_running()
            lims = st.ev_lims = self.fleet._limits_mw(st.t)     # = [p_min_kw, p_max_kw] * 1e-3
        return lims

    def _ev_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """(p_min, p_max) of the stations in MW at the current step (see :meth:`_ev_limits_block`)."""
        lims = self._ev_limits_block()
        return lims[0], lims[1]

    def limits(self) -> ActionLimits:
        """Ranges of the action encoding at the current step (see :mod:`env.dispatch`)."""
        st = self._state
        if st.limits is not None:
            return st.limits
        ev_lo, ev_hi = self._ev_limits()
        sl = self._sl_ev
        lo, hi = self._lim_lo.copy(), self._lim_hi.copy()
        at_minus, span = self._lim_at_minus.copy(), self._lim_span.copy()
        lo[sl] = ev_lo
        at_minus[sl] = ev_lo
        ev_top = hi[sl]
        np.maximum(ev_hi, ev_lo, out=ev_top)
        np.subtract(ev_top, ev_lo, out=span[sl])          # sign +1: span = high - low
        if self._sl_rup is not None:
            flex = np.subtract(ev_hi, ev_lo)
            np.maximum(flex, _ZERO, out=flex)
            hi[self._sl_rup] = flex                         # low = 0: span = flex - 0 = flex
            hi[self._sl_rdn] = flex
            span[self._sl_rup] = flex
            span[self._sl_rdn] = flex
        lo.setflags(write=False)
        hi.setflags(write=False)
        lim = st.limits = unchecked(ActionLimits, {
            "sizes": self.model.sizes, "low": lo, "high": hi, "step": st.t,
            "at_minus": at_minus, "span": span, "half_span": span * 0.5})
        return lim

    def observe(self) -> Observation:
        """What a policy may know at the current step (after the last step at day's end)."""
        st, m = self._state, self.model
        t = st.t
        n = self.n_steps
        running = t < n
        tc = t if running else n - 1
        vm = st.vm
        sc = self.scenario
        v_minmax = st.v_minmax
        return unchecked(Observation, dict(
            step=t, n_steps=n, time_h=t * self.dt_h, dt_h=self.dt_h,
            load_p_mw=self.load_p[tc], load_q_mvar=self.load_q[tc],
            pv_pu=sc.pv_pu[tc], wind_pu=sc.wind_pu[tc], der_avail_mw=self.der_avail[tc],
            ev=self.ev_bounds() if running else None,
            storage_e_mwh=st.e_mwh, thermal_p_last_mw=st.p_last,
            v_pu=(vm,) if self._v_single else tuple(vm[sl] for sl in m.feeder_bus_slices),
            v_min_pu=v_minmax[0], v_max_pu=v_minmax[1], line_loading=st.line_loading,
            price_buy_per_mwh=self._price_list[tc], price_ahead_per_mwh=self.price_buy[tc:],
            price_sell_per_mwh=self.price_sell,
            tso_requirement_last_mw=st.tso_last, q_comp_last_mvar=st.q_last,
            net_load_forecast_mw=self._fc_rows[tc] if self._fc_day_ahead else self._forecast_rows(tc),
            forecast_fn=_LazyForecast(sc, t) if running else None,
        ))

    def _forecast_rows(self, t: int) -> np.ndarray:
        """(n_rows, h) net-load point forecast for steps t..t+h-1 (step t = nowcast; past the
        day's end the last step repeats)."""
        if self.settings.forecast_obs != "intraday" or t + 1 >= self.n_steps:
            return self._fc_rows[t]
        h = self._h_fc
        fc = _forecast_at(self.scenario, t)   # covers steps t..T-1; its first row is the nowcast's step
        ahead = self._net_rows(fc.load_pu * self.grid.layout.load_p_mw,
                               self.model.der_mw(fc.pv_pu * fc.day_ahead.pv_p_max_mw,
                                            fc.wind_pu * fc.day_ahead.wind_p_max_mw))[1:]
        rows = np.empty((h, ahead.shape[1]))
        rows[0] = self._fc_rows[t][:, 0]
        k = min(h - 1, ahead.shape[0])
        rows[1:k + 1] = ahead[:k]
        rows[k + 1:] = rows[k]
        return rows.T

    # ------------------------------------------------------------------ the step
    def step(self, dispatch: Dispatch, q_comp_mvar: np.ndarray | None = None) -> StepOutcome:
        """Play the current step with ``dispatch`` (physical units) and advance.

        Args:
            dispatch: the active-power dispatch (its ``q_comp_mvar`` is used when present).
            q_comp_mvar: compensator setpoints used when ``dispatch.q_comp_mvar`` is None
                (zeros when both are None).

        Raises:
            ValueError: a dispatch field of the wrong size.
            RuntimeError: the day is over.
        """
        self._require_running()
        return self._play(self._request(dispatch, q_comp_mvar))

    def project(self, dispatch: Dispatch, q_comp_mvar: np.ndarray | None = None) -> Dispatch:
        """The dispatch :meth:`step` would apply at the current step: the request projected onto
        the step's feasible set (module docstring, stage 1); its ``q_comp_mvar`` is the projected
        setpoint when ``dispatch`` carries one, else None. The state does not change; the
        controller builds its reactive SOCP on this.

        Raises:
            ValueError: a dispatch field of the wrong size.
            RuntimeError: the day is over.
        """
        self._require_running()
        x, _ = self._project(self._request(dispatch, q_comp_mvar))
        fields = {name: x[name] for name, _ in self._lay_q}
        if dispatch.q_comp_mvar is None:
            fields["q_comp_mvar"] = None
        return Dispatch(**fields)

    def _request(self, dispatch: Dispatch, q_comp_mvar: np.ndarray | None) -> np.ndarray:
        """The requested dispatch flat in the reactive layout (``q_comp_mvar`` last), checked."""
        m = self.model
        sizes = m.sizes
        q_d = dispatch.q_comp_mvar
        flat = dispatch.flat
        if flat is None or dispatch.sizes is not sizes:  # not decoded with this grid's limits
            dispatch.check_sizes(m.sizes_q if q_d is not None else m.sizes_no_q)
            flat = None
        q = q_d if q_d is not None else self._q_setpoints(q_comp_mvar)
        if flat is None:
            return np.concatenate([dispatch.tie_or_zeros(m.n_tie) if name == "tie_p_mw" else getattr(dispatch, name)
                                   for name, _ in self._lay_q[:-1]] + [q])
        if q_d is None:
            return np.concatenate((flat, q))
        return flat

    def step_action(self, a: np.ndarray, q_comp_mvar: np.ndarray | None = None) -> StepOutcome:
        """``step(Dispatch.from_array(a, self.limits()), q_comp_mvar)`` for a finite float64 action
        in the flat layout (``model.sizes.codec``) of the right shape (the caller checks: the gym
        env), without building the limits and the dispatch. Decodes ``(a + 1) (span / 2) + x(-1)`` like
        :meth:`ActionLimits.decode`."""
        self._require_running()
        q = None if q_comp_mvar is None or self.model.sizes.reactive else self._q_setpoints(q_comp_mvar)[None]
        return self._play(self._proj.decode(a[None], self._ev_limits_block()[:, None, :], q)[0])

    def _q_setpoints(self, q_comp_mvar: np.ndarray | None) -> np.ndarray:
        """The compensator setpoints given besides the dispatch (zeros when None), checked."""
        if q_comp_mvar is None:
            return self._q_zero
        n = self.model.sizes.n_comp
        q = np.asarray(q_comp_mvar, dtype=float)
        if q.shape != (n,) or not np.isfinite(q).all():
            raise ValueError(f"q_comp_mvar: expected {n} finite values, got {q!r}")
        return q

    def _play(self, req: np.ndarray) -> StepOutcome:
        """Project the requested dispatch (flat, reactive layout), simulate and account."""
        x, proj = self._project(req)
        if self.model.is_td:
            out = self._step_td(x)
        else:
            out = self._step_feeder(x)
        return self._finish(x, proj, out)

    def _decode_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(x(-1), span / 2) of this step's action decoding (as in :meth:`limits`)."""
        lim = self._state.limits
        if lim is not None:
            return lim.at_minus, lim.half_span
        at_minus, half_span = self._proj.decode_vectors(self._ev_limits_block()[:, None, :])
        return at_minus[0], half_span[0]

    # .................................................................. projection
    def _project(self, req: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """:meth:`env.projection.StepProjection.project` of this step (its two stages; module
        docstring, stage 1); returns (applied values, applied - requested) per field, views of
        one vector. ``req`` is the requested dispatch flat in the reactive layout."""
        st = self._state
        x = self._proj.project(req[None], self._ev_limits_block()[:, None, :], st.e_mwh[None], st.p_last[None])[0]
        diff = np.subtract(x, req)
        xs: dict[str, np.ndarray] = {}
        proj: dict[str, np.ndarray] = {}
        for name, sl in self._lay_q_views:
            if sl is None:
                xs[name] = proj[name] = _EMPTY
            else:
                xs[name] = x[sl]
                proj[name] = diff[sl]
        return xs, proj

    # .................................................................. feeders
    def _feeder_injection(self, t: int, ev_mw: np.ndarray, st_mw: np.ndarray, der_f_used: np.ndarray,
                          q_comp: np.ndarray, shed_f: np.ndarray | None = None,
                          s_load: np.ndarray | None = None, tie_mw: np.ndarray | None = None) -> np.ndarray:
        """Stacked per-bus complex net consumption in p.u. (N_fb,); ``s_load`` = ``s_load_fb_pu[t]``;
        ``tie_mw`` the tie lines' transfer (:meth:`GridModel._stack_ties`)."""
        m = self.model
        s = m.control_injection_pu(np.concatenate((ev_mw, st_mw, der_f_used)), q_comp, tie_mw)
        if s_load is None:
            s_load = self.s_load_fb_pu[t]
        if shed_f is None:
            s += s_load
            return s
        return s + s_load * (1.0 - shed_f[m.bus_feeder])

    def _solve_feeders(self, s_pu: np.ndarray, load_pu: np.ndarray | None = None,
                       shed_f: np.ndarray | None = None) -> _FeederSolution:
        """:func:`env.feeder_flow.solve_feeders` from the last step's voltages."""
        cfg = self.settings
        return solve_feeders(self.model, self._state.v_ns, s_pu, cfg.sweep_tol_pu, cfg.sweep_max_iter,
                             load_pu, shed_f)

    # .................................................................. single feeder
    def _step_feeder(self, x: dict[str, np.ndarray]) -> dict[str, Any]:
        m, st = self.model, self._state
        t = st.t
        res = self.fleet.step(t, np.multiply(x["ev_p_mw"], _KILO))
        ev = np.multiply(res.p_kw, _MILLI)
        der_used = der_used_mw(self.der_avail[t], x["der_curtail_frac"])
        shed_f = np.zeros(m.n_feeder)
        s_load = self.s_load_fb_pu[t]
        s = self._feeder_injection(t, ev, x["storage_p_mw"], der_used if self._der_all_f else der_used[:m.n_der_f],
                                   x["q_comp_mvar"], s_load=s_load, tie_mw=x["tie_p_mw"])
        sol = self._solve_feeders(s, s_load, shed_f)
        return {"fleet": res, "ev": ev, "der_used": der_used, "sol": sol, "shed_f": shed_f, "shed_t": 0.0,
                "thermal": _EMPTY, "imbalance": 0.0, "residual": 0.0, "tso_delivered": _EMPTY,
                "backoff": 0.0, "unbalanced": 0.0, "line_p": _EMPTY, "ref_limit": 0.0}

    # .................................................................. T-D
    def _step_td(self, x: dict[str, np.ndarray]) -> dict[str, Any]:
        m, st = self.model, self._state
        t = st.t
        call, dev = tso_call(m, self.tso[t][None], x["ev_r_up_mw"][None], x["ev_r_dn_mw"][None])
        call, dev = call[0], dev[0]
        der_used = der_used_mw(self.der_avail[t], x["der_curtail_frac"])
        ev1 = x["ev_p_mw"] + dev
        s = self._feeder_injection(t, ev1, x["storage_p_mw"], der_used[:m.n_der_f], x["q_comp_mvar"],
                                   tie_mw=x["tie_p_mw"])
        shed_f = np.zeros(m.n_feeder)
        sol = self._solve_feeders(s, self.s_load_fb_pu[t], shed_f)
        load_t = self.load_p[t, m.n_load_f:]
        thermal = x["thermal_p_mw"]
        load_t_mw = _add_reduce(load_t)
        imbalance = imbalance_mw(load_t_mw, _add_reduce(sol.head_p_mw), _add_reduce(thermal),
                                 _add_reduce(der_used[m.n_der_f:]))
        bal = balance(m, np.array((imbalance,)), {k: v[None] for k, v in x.items()}, dev[None], der_used[None],
                      np.array((load_t_mw,)), np.array((_add_reduce(self.load_p[t, :m.n_load_f]),)))
        bal = {k: (v[0] if v.ndim > 1 else v[0].item()) for k, v in bal.items()}   # day 0; scalars as Python
        ev_set = x["ev_p_mw"] + bal["dev"]
        res = self.fleet.step(t, ev_set * 1e3)
        ev = res.p_kw * 1e-3
        der_used = bal["der_used"]
        changed = (bal["shed_f"] > 0 or bal["feeder_changed"]
                   or _max_reduce(np.abs(ev - ev1), initial=0.0) > 1e-12)
        if changed:                     # re-solve the feeders with the balancing's changes
            shed_f[:] = 1.0 - (1.0 - shed_f) * (1.0 - bal["shed_f"])   # on top of any sweep-failure shedding
            s = self._feeder_injection(t, ev, x["storage_p_mw"], der_used[:m.n_der_f], x["q_comp_mvar"],
                                       shed_f if _count(shed_f) else None, tie_mw=x["tie_p_mw"])
            sol = self._solve_feeders(s, self.s_load_fb_pu[t] * (1.0 - shed_f[m.bus_feeder]), shed_f)
        shed_t = bal["shed_t"]
        thermal_act = bal["thermal"]
        served_t = load_t * (1.0 - shed_t)
        residual = (_add_reduce(served_t) + _add_reduce(sol.head_p_mw) - _add_reduce(thermal_act)
                    - _add_reduce(der_used[m.n_der_f:]))
        thermal_act[m.ref_unit] += residual
        ref_limit = 0.0
        if not m.g_p_min[m.ref_unit] - _TOL_MW <= thermal_act[m.ref_unit] <= m.g_p_max[m.ref_unit] + _TOL_MW:
            shed_t, ref_limit = settle_reference(m, thermal_act, der_used, load_t, shed_t)
            served_t = load_t * (1.0 - shed_t)
        inj = m.m_inj_t.dot(np.concatenate((thermal_act, der_used[m.n_der_f:], served_t, sol.head_p_mw)))
        line_p = m.dc.flows_pu(inj / m.base_mva_t) * m.base_mva_t
        # the call as delivered: the fleet may deliver less than asked
        miss = m.f_ev.dot(ev - ev_set)
        return {"fleet": res, "ev": ev, "der_used": der_used, "sol": sol, "shed_f": shed_f, "shed_t": shed_t,
                "thermal": thermal_act, "imbalance": float(imbalance), "residual": float(residual),
                "tso_delivered": call - miss, "backoff": bal["backoff"], "unbalanced": bal["unbalanced"],
                "line_p": line_p, "ref_limit": ref_limit}

    # .................................................................. accounting
    def _finish(self, x: dict[str, np.ndarray], proj: dict[str, np.ndarray], r: dict[str, Any]) -> StepOutcome:
        m, st, dt = self.model, self._state, self.dt_h
        t = st.t
        sol: _FeederSolution = r["sol"]
        res: EVStepResult = r["fleet"]
        p_st = x["storage_p_mw"]
        if p_st.shape[0]:
            e_new = storage_energy_next(m, st.e_mwh, p_st, dt)
            e_new.setflags(write=False)
        else:
            e_new = _EMPTY
        load, served, shed_mwh = self._served(t, r["shed_f"], r["shed_t"])
        der_used = r["der_used"]
        vm = sol.vm_pu
        viol = voltage_violation_pu(vm, m.vmin_fb, m.vmax_fb)
        head = sol.head_p_mw
        ev = r["ev"]
        ev_mwh = _fsum(ev) * dt
        unmet_kwh = 0.0 if res.unmet_kwh is self.fleet._zeros_ro else _fsum(res.unmet_kwh)
        curt_mwh = curtailment_mwh(self._der_avail_sum_list[t], _fsum(der_used), r["backoff"], dt)
        v_puh = float(_add_reduce(viol)) * dt
        head_mw = _fsum(head)
        if m.is_td:
            req = self.tso[t]
            bviol = boundary_violation_mw(req, r["tso_delivered"])
            bviol_mwh = float(_add_reduce(bviol)) * dt
            line_p = r["line_p"]
            loading = np.abs(line_p) * m.inv_rate
            loading.setflags(write=False)
            loading_max = float(_max_reduce(loading)) if m.any_rated else math.nan
        else:
            req = line_p = loading = _EMPTY
            bviol = np.zeros(0)
            bviol_mwh = 0.0
            loading_max = math.nan                  # a feeder has no rated lines: no loading
        cost = self._costs(t, x, r, der_used, p_st, ev_mwh, unmet_kwh, shed_mwh, curt_mwh, v_puh,
                           bviol_mwh, head_mw)
        violations = {
            "voltage_puh": v_puh, "voltage_worst_pu": float(_max_reduce(viol)),
            "voltage_buses": float(_count(viol)), "load_shed_mwh": shed_mwh,
            "curtailment_mwh": curt_mwh, "ev_unmet_kwh": unmet_kwh, "boundary_violation_mwh": bviol_mwh,
            "line_overload_max": max(loading_max - 1.0, 0.0) if m.any_rated else 0.0,
            "unbalanced_mw": float(r["unbalanced"]),
            "ref_unit_limit_mw": float(r["ref_limit"]),
        }
        thermal = r["thermal"]
        vm.setflags(write=False)
        v_minmax = self._v_minmax(sol)
        loss = sol.loss_mw
        total = cost["total"]
        if not math.isfinite(total):
            raise ValueError(f"StepOutcome.cost: total is {total}")
        outcome = unchecked(StepOutcome, dict(
            info_scalars=(_fsum(loss), unmet_kwh, loading_max),
            step=t, time_h=t * dt, dt_h=dt, cost=cost, violations=violations, projection=proj, setpoints=x,
            ev=res, load_p_mw=load, load_served_mw=served, der_avail_mw=self.der_avail[t], der_used_mw=der_used,
            storage_p_mw=p_st, storage_e_mwh=e_new, ev_p_mw=ev, ev_deployed_mw=ev - x["ev_p_mw"],
            thermal_p_mw=thermal, thermal_deployed_mw=thermal - x["thermal_p_mw"], head_p_mw=head,
            head_q_mvar=sol.head_q_mvar, loss_mw=loss, v_pu=vm,
            v_min_pu=v_minmax[0], v_max_pu=v_minmax[1],
            line_p_mw=line_p, line_loading=loading, imbalance_mw=r["imbalance"], tso_requirement_mw=req,
            tso_delivered_mw=r["tso_delivered"], boundary_violation_mw=bviol, residual_mw=r["residual"],
            import_mw=head_mw,
        ))
        self._advance(x, e_new, req, loading, sol, v_minmax)
        return outcome

    def _served(self, t: int, shed_f: np.ndarray, shed_t: float) -> tuple[np.ndarray, np.ndarray, float]:
        """(demand, served, shed energy MWh) of the step's loads (``Layout`` order)."""
        m = self.model
        load = self.load_p[t]
        if not shed_t and not _count(shed_f):
            return load, load, 0.0
        served = load.copy()
        served[:m.n_load_f] *= 1.0 - shed_f[m.load_feeder]
        served[m.n_load_f:] *= 1.0 - shed_t
        served.flags.writeable = False
        return load, served, float(_add_reduce(load) - _add_reduce(served)) * self.dt_h

    def _costs(self, t: int, x: dict[str, np.ndarray], r: dict[str, Any], der_used: np.ndarray,
               p_st: np.ndarray, ev_mwh: float, unmet_kwh: float, shed_mwh: float, curt_mwh: float,
               v_puh: float, bviol_mwh: float, head_mw: float) -> dict[str, float]:
        """The cost breakdown (:data:`COST_KEYS`) of the step."""
        m, tar, dt = self.model, self._tar, self.dt_h
        ev_res = float(_add_reduce(x["ev_r_up_mw"] + x["ev_r_dn_mw"])) if m.is_td else 0.0
        bought, sold, fuel, spillage, reserves, boundary_energy = (float(v) for v in energy_terms(
            m, dt, self._price_list[t], self.price_sell, head_mw, r["thermal"], x["thermal_r_up_mw"],
            x["thermal_r_dn_mw"], ev_res, self.ev_reserve_price))
        n_st = p_st.shape[0]
        abs_st = (_fsum(np.abs(p_st)) if n_st >= _SMALL_SUM else _fsum_py_abs(p_st)) if n_st else 0.0
        return cost_breakdown(tar, dt, bought, sold, fuel, spillage, reserves, boundary_energy, ev_mwh,
                              float(der_used.dot(m.der_cost)), abs_st, curt_mwh, shed_mwh, unmet_kwh, v_puh,
                              bviol_mwh, r["ref_limit"])

    def _advance(self, x: dict[str, np.ndarray], e_new: np.ndarray, req: np.ndarray, loading: np.ndarray,
                 sol: _FeederSolution, v_minmax: np.ndarray) -> None:
        st = self._state
        st.t += 1
        st.e_mwh = e_new
        if self.model.is_td:
            p_last = x["thermal_p_mw"].copy()
            p_last.setflags(write=False)
            st.p_last, st.tso_last, st.line_loading = p_last, req, loading
        st.v_ns, st.vm, st.v_minmax = sol.v_ns, sol.vm_pu, v_minmax
        st.q_last = x["q_comp_mvar"]
        st.bounds = st.limits = st.ev_lims = None


# ============================================================================ helpers


_EMPTY = np.zeros(0)
_EMPTY.flags.writeable = False


_ZERO = np.zeros(())  # 0-d constants: ufuncs take them faster than Python floats
_MILLI = np.full((), 1e-3)
_KILO = np.full((), 1e3)
_add_reduce = np.add.reduce        # = ndarray.sum() of a 1-D array, without the method's Python wrapper
_max_reduce = np.maximum.reduce    # = ndarray.max()
_min_reduce = np.minimum.reduce
_count = np.count_nonzero


def _fsum_py(a: np.ndarray) -> float:
    acc = 0.0
    for v in a.tolist():
        acc += v
    return acc


def _fsum_py_abs(a: np.ndarray) -> float:
    acc = 0.0
    for v in a.tolist():
        acc += abs(v)
    return acc


def _fsum_matches_numpy() -> bool:
    """Whether numpy sums fewer than 8 doubles sequentially from 0.0 (checked once at import)."""
    rng = np.random.default_rng(20240501)
    for n in range(1, 8):
        for _ in range(24):
            a = rng.standard_normal(n) * 10.0 ** rng.integers(-8, 9, n)
            if _fsum_py(a) != float(_add_reduce(a)):
                return False
    return True


_SMALL_SUM = 8 if _fsum_matches_numpy() else 0


def _fsum(a: np.ndarray) -> float:
    """``float(a.sum())`` of a 1-D float64 array. Below 8 entries numpy adds sequentially from
    0.0 (its pairwise sum starts there; verified at import), so a Python loop gives the same
    bits with fewer numpy calls."""
    if a.shape[0] < _SMALL_SUM:
        return _fsum_py(a)
    return float(_add_reduce(a))


def _forecast_at(scenario: Any, t: int) -> Any:
    """The forecast made with the information of steps ``0..t-1`` (it covers steps ``t..T-1``).

    The TSO's call at ``t`` is revealed only after dispatch, so the forecast a policy gets at
    step ``t`` is conditioned on steps ``< t``; the nowcast of step ``t`` is in the Observation.
    """
    return scenario.forecast(t - 1)


class _LazyForecast:
    """Builds the scenario's ``Forecast`` on first use (it costs ~0.2 ms)."""

    __slots__ = ("_scenario", "_t", "_value")

    def __init__(self, scenario: Any, t: int) -> None:
        self._scenario, self._t, self._value = scenario, t, None

    def __call__(self) -> Any:
        if self._value is None:
            self._value = _forecast_at(self._scenario, self._t)
        return self._value


def observation_spec(model: GridModel, dt_minutes: int, settings: SimulatorSettings | None = None) -> ObservationSpec:
    """The gym observation sizes and normalizers of a grid at a step length (no scenario needed)."""
    settings = settings or SimulatorSettings()
    lay = model.grid.layout
    dt_h = dt_minutes / 60.0
    cap_kw = model.evcs_ports * lay.ev_charger_kw
    rows_peak = model.load_peak_f if not model.is_td else np.append(model.load_peak_f, model.load_peak_t)
    return ObservationSpec(
        n_steps=int(round(24.0 / dt_h)), dt_h=dt_h, load_peak_mw=lay.load_p_mw.copy(),
        n_pv=len(lay.pv_names), n_wind=len(lay.wind_names), evcs_cap_kw=cap_kw,
        evcs_ports=model.evcs_ports.copy(), evcs_energy_kwh=model.evcs_ports * lay.ev_battery_kwh,
        storage_e_max_mwh=model.st_e_max.copy(),
        thermal_p_max_mw=model.g_p_max.copy() if model.is_td else np.zeros(0),
        n_bus_feeders=model.n_fb, n_line=model.n_line,
        boundary_cap_mw=(model.f_ev @ cap_kw) * 1e-3 if model.is_td else np.zeros(0),
        forecast_rows_peak_mw=rows_peak,
        forecast_steps=max(1, int(round(settings.forecast_horizon_h / dt_h))),
        price_hourly_per_mwh=model.tariff.price_buy_per_mwh.copy(),
    )
