"""The one-day grid simulator (no gym): :class:`env.batched.BatchedSimulator` with ``B = 1``.

``GridSimulator(grid, scenario, settings)`` plays one sampled day step by step:

    limits = sim.limits()           # ranges of this step's action encoding
    obs = sim.observe()             # what a policy may know now (env.observation)
    outcome = sim.step(dispatch)    # project, simulate, account -> StepOutcome

The physics of a step (projection, EVs, feeders, T-D balancing, costs) is the batched
simulator's, written once there (:mod:`env.batched`, docs/design.md "Physics truth"); this
class adds the one-day API: dispatches in physical units, the action ranges, the typed
:class:`~env.observation.Observation` and :class:`~env.step_outcome.StepOutcome`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from env.batched import BatchedSimulator, BatchedStepOutcome
from env.day_data import forecast_at
from env.dispatch import ActionLimits, Dispatch
from env.ev_fleet import EVFleet
from env.evcs import EVCSBounds
from env.fastpath import unchecked
from env.grid_model import GridModel
from env.network import Grid
from env.observation import Observation, ObservationSpec
from env.projection import StepProjection
from env.simulator_settings import SimulatorSettings
from env.step_outcome import COST_KEYS, VIOLATION_KEYS, StepOutcome

__all__ = ["COST_KEYS", "GridModel", "GridSimulator", "SimulatorSettings", "StepOutcome", "VIOLATION_KEYS"]

_ZERO = np.zeros(())  # a 0-d zero: ufuncs take it faster than a Python float


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

    Raises:
        ValueError: a model of another grid, or a scenario of another layout.
    """

    def __init__(self, grid: Grid, scenario: Any, settings: SimulatorSettings | None = None,
                 model: GridModel | None = None, projection: StepProjection | None = None) -> None:
        self._sim = sim = BatchedSimulator(grid, [scenario], settings, model=model, projection=projection)
        day = sim.days[0]
        self.grid, self.model, self.settings, self.scenario = grid, sim.model, sim.settings, scenario
        self.n_steps, self.dt_h, self.time_h = day.n_steps, day.dt_h, day.time_h
        self.load_p, self.load_q, self.der_avail, self.tso = day.load_p, day.load_q, day.der_avail, day.tso
        self.price_buy, self.price_sell = day.price_buy, sim.price_sell
        self.ev_reserve_price = sim.ev_reserve_price
        self._day = day
        self._cache_t = -1                   # the step of the cached bounds and limits
        self._bounds: EVCSBounds | None = None
        self._limits: ActionLimits | None = None
        self._q_zero = np.zeros((1, self.model.sizes.n_comp))
        self._q_zero.flags.writeable = False
        self._lay_q = self.model.sizes_q.layout()
        self._v_slices = None if self.model.n_feeder == 1 else self.model.feeder_bus_slices

    @property
    def projection(self) -> StepProjection:
        """The decoding and projection constants of this grid and step length (shareable)."""
        return self._sim.projection

    @property
    def fleet(self) -> EVFleet:
        """The day's EVs (:class:`env.ev_fleet.EVFleet`)."""
        return self._sim.fleet

    # ------------------------------------------------------------------ public views
    @property
    def t(self) -> int:
        """The next step to play (``n_steps`` when the day is over)."""
        return self._sim.t

    @property
    def done(self) -> bool:
        return self._sim.t >= self.n_steps

    @property
    def storage_e_mwh(self) -> np.ndarray:
        return self._sim.e_mwh[0]

    @property
    def thermal_p_last_mw(self) -> np.ndarray:
        return self._sim.p_last[0]

    def _step_cache(self) -> None:
        """Forget the bounds and limits of an earlier step."""
        if self._cache_t != self._sim.t:
            self._cache_t = self._sim.t
            self._bounds = self._limits = None

    def ev_bounds(self) -> EVCSBounds:
        """Station bounds of the current step (cached per step)."""
        self._require_running()
        self._step_cache()
        if self._bounds is None:
            self._bounds = self.fleet.bounds(self._sim.t)
        return self._bounds

    def _require_running(self) -> None:
        if self._sim.t >= self.n_steps:
            raise RuntimeError(f"GridSimulator: the day is over (step {self._sim.t} of {self.n_steps})")

    def limits(self) -> ActionLimits:
        """Ranges of the action encoding at the current step (see :mod:`env.dispatch`): the
        projection's fixed ranges with the EV stations' ``[p_min, p_max]`` of this step and
        their reserve ranges ``[0, max(p_max - p_min, 0)]``."""
        self._require_running()
        self._step_cache()
        if self._limits is not None:
            return self._limits
        proj = self._sim.projection
        ev_lo, ev_hi = self._sim.ev_limits_mw()[:, 0]
        sl = proj.sl_ev
        lo, hi = proj.lim_lo.copy(), proj.lim_hi.copy()
        at_minus, span = proj.lim_at_minus.copy(), proj.lim_span.copy()
        lo[sl] = ev_lo
        at_minus[sl] = ev_lo
        ev_top = hi[sl]
        np.maximum(ev_hi, ev_lo, out=ev_top)
        np.subtract(ev_top, ev_lo, out=span[sl])          # sign +1: span = high - low
        if proj.sl_rup is not None:
            flex = np.subtract(ev_hi, ev_lo)
            np.maximum(flex, _ZERO, out=flex)
            hi[proj.sl_rup] = flex                         # low = 0: span = flex - 0 = flex
            hi[proj.sl_rdn] = flex
            span[proj.sl_rup] = flex
            span[proj.sl_rdn] = flex
        lo.setflags(write=False)
        hi.setflags(write=False)
        self._limits = unchecked(ActionLimits, {
            "sizes": self.model.sizes, "low": lo, "high": hi, "step": self._sim.t,
            "at_minus": at_minus, "span": span, "half_span": span * 0.5})
        return self._limits

    def observe(self) -> Observation:
        """What a policy may know at the current step (after the last step at day's end)."""
        sim, day = self._sim, self._day
        t, n = sim.t, self.n_steps
        running = t < n
        tc = t if running else n - 1
        vm = sim.vm[0]                      # the state arrays are read-only, so are their rows
        sc = self.scenario
        intraday = self.settings.forecast_obs == "intraday"
        return unchecked(Observation, dict(
            step=t, n_steps=n, time_h=t * self.dt_h, dt_h=self.dt_h,
            load_p_mw=self.load_p[tc], load_q_mvar=self.load_q[tc],
            pv_pu=sc.pv_pu[tc], wind_pu=sc.wind_pu[tc], der_avail_mw=self.der_avail[tc],
            ev=self.ev_bounds() if running else None,
            storage_e_mwh=sim.e_mwh[0], thermal_p_last_mw=sim.p_last[0],
            v_pu=(vm,) if self._v_slices is None else tuple(vm[sl] for sl in self._v_slices),
            v_min_pu=sim.v_min[0], v_max_pu=sim.v_max[0],
            line_loading=sim.line_loading[0],
            price_buy_per_mwh=day.price_list[tc], price_ahead_per_mwh=self.price_buy[tc:],
            price_sell_per_mwh=self.price_sell,
            tso_requirement_last_mw=sim.tso_last[0], q_comp_last_mvar=sim.q_last[0],
            net_load_forecast_mw=day.intraday_rows(tc) if intraday else day.fc_rows[tc],
            forecast_fn=_LazyForecast(sc, t) if running else None,
        ))

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
        return self._outcome(self._sim.play(self._request(dispatch, q_comp_mvar)))

    def project(self, dispatch: Dispatch, q_comp_mvar: np.ndarray | None = None) -> Dispatch:
        """The dispatch :meth:`step` would apply at the current step: the request projected onto
        the step's feasible set (:mod:`env.batched`, stage 1); its ``q_comp_mvar`` is the
        projected setpoint when ``dispatch`` carries one, else None. The state does not change;
        the controller builds its reactive SOCP on this.

        Raises:
            ValueError: a dispatch field of the wrong size.
            RuntimeError: the day is over.
        """
        self._require_running()
        x = self._sim.project(self._request(dispatch, q_comp_mvar))[0]
        fields = {name: x[sl] for name, sl in self._lay_q}
        if dispatch.q_comp_mvar is None:
            fields["q_comp_mvar"] = None
        return Dispatch(**fields)

    def step_action(self, a: np.ndarray, q_comp_mvar: np.ndarray | None = None) -> StepOutcome:
        """``step(Dispatch.from_array(a, self.limits()), q_comp_mvar)`` for a finite float64 action
        in the flat layout (``model.sizes.codec``) of the right shape (the caller checks: the gym
        env), without building the limits and the dispatch (:meth:`BatchedSimulator.step_action`)."""
        self._require_running()
        q = None if q_comp_mvar is None or self.model.sizes.reactive else self._q_setpoints(q_comp_mvar)
        return self._outcome(self._sim.step_action(a[None], q))

    def _request(self, dispatch: Dispatch, q_comp_mvar: np.ndarray | None) -> np.ndarray:
        """(1, n_req) the requested dispatch flat in the reactive layout (``q_comp_mvar`` last), checked."""
        m = self.model
        q_d = dispatch.q_comp_mvar
        dispatch.check_sizes(m.sizes_q if q_d is not None else m.sizes_no_q)
        q = q_d if q_d is not None else self._q_setpoints(q_comp_mvar)[0]
        return np.concatenate([dispatch.tie_or_zeros(m.n_tie) if name == "tie_p_mw" else getattr(dispatch, name)
                               for name, _ in self._lay_q[:-1]] + [q])[None]

    def _q_setpoints(self, q_comp_mvar: np.ndarray | None) -> np.ndarray:
        """(1, n_comp) the compensator setpoints given besides the dispatch (zeros when None), checked."""
        if q_comp_mvar is None:
            return self._q_zero
        n = self.model.sizes.n_comp
        q = np.asarray(q_comp_mvar, dtype=float)
        if q.shape != (n,) or not np.isfinite(q).all():
            raise ValueError(f"q_comp_mvar: expected {n} finite values, got {q!r}")
        return q[None]

    def _outcome(self, out: BatchedStepOutcome) -> StepOutcome:
        """The batched step's day 0 as a :class:`StepOutcome` (scalars as Python floats)."""
        t, dt = out.step, self.dt_h
        setpoints = {k: v[0] for k, v in out.setpoints.items()}
        ev, thermal = out.ev_p_mw[0], out.thermal_p_mw[0]
        loading = out.line_loading[0]
        loading_max = float(loading.max()) if self.model.any_rated else math.nan   # no rated line: absent
        return unchecked(StepOutcome, dict(
            info_scalars=(float(out.loss_mw[0].sum()), float(out.ev.unmet_kwh.sum()), loading_max),
            step=t, time_h=t * dt, dt_h=dt,
            cost={k: float(v[0]) for k, v in out.cost.items()},
            violations={k: float(v[0]) for k, v in out.violations.items()},
            projection={k: v[0] for k, v in out.projection.items()}, setpoints=setpoints, ev=out.ev,
            load_p_mw=out.load_p_mw[0], load_served_mw=out.load_served_mw[0], der_avail_mw=self.der_avail[t],
            der_used_mw=out.der_used_mw[0], storage_p_mw=out.storage_p_mw[0], storage_e_mwh=out.storage_e_mwh[0],
            ev_p_mw=ev, ev_deployed_mw=ev - setpoints["ev_p_mw"], thermal_p_mw=thermal,
            thermal_deployed_mw=thermal - setpoints["thermal_p_mw"], head_p_mw=out.head_p_mw[0],
            head_q_mvar=out.head_q_mvar[0], loss_mw=out.loss_mw[0], v_pu=out.v_pu[0], v_min_pu=out.v_min_pu[0],
            v_max_pu=out.v_max_pu[0], line_p_mw=out.line_p_mw[0], line_loading=loading,
            imbalance_mw=float(out.imbalance_mw[0]), tso_requirement_mw=out.tso_requirement_mw[0],
            tso_delivered_mw=out.tso_delivered_mw[0], boundary_violation_mw=out.boundary_violation_mw[0],
            residual_mw=float(out.residual_mw[0]), import_mw=float(out.import_mw[0]),
        ))


class _LazyForecast:
    """Builds the scenario's ``Forecast`` on first use (it costs ~0.2 ms)."""

    __slots__ = ("_scenario", "_t", "_value")

    def __init__(self, scenario: Any, t: int) -> None:
        self._scenario, self._t, self._value = scenario, t, None

    def __call__(self) -> Any:
        if self._value is None:
            self._value = forecast_at(self._scenario, self._t)
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
