"""The pure grid simulator (no gym): the physics truth every policy is judged by.

``GridSimulator(grid, scenario, settings)`` plays one sampled day step by step:

    limits = sim.limits()           # ranges of this step's action encoding
    obs = sim.observe()             # what a policy may know now (env.observation)
    outcome = sim.step(dispatch)    # project, simulate, account -> StepOutcome

One step (DESIGN.md "Physics truth"):

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
   covered (see :meth:`GridSimulator._balance`); feeders touched by the balancing are
   re-solved; the reference unit closes the residual (feeder loss changes); DC flows by PTDF.
5. **Costs** (tariff currency; energy = MW x dt): see :data:`COST_KEYS`.

Energy balance holds per feeder (``head P + DER used = load served + losses + storage +
EV``, to the sweep tolerance) and on the transmission network (``thermal + wind used =
T loads served + sum head P``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np

from env.dispatch import ActionLimits, Dispatch, DispatchSizes
from env.evcs import EVCSBounds, EVFleet, EVStepResult
from env.network import Grid, Network
from env.observation import Observation, ObservationSpec
from env.physics.dc import DCModel
from env.physics.sweep import PowerFlowError, RadialSweep

__all__ = ["COST_KEYS", "GridModel", "GridSimulator", "SimulatorSettings", "StepOutcome", "VIOLATION_KEYS"]

#: Cost breakdown keys (``total`` sums all but ``boundary_energy``; reward = -total).
COST_KEYS: tuple[str, ...] = (
    "energy_bought", "energy_sold", "thermal_fuel", "reserves", "ev_revenue", "ev_subsidy",
    "renewable_generation", "storage_degradation", "curtailment", "load_shed", "ev_unmet",
    "voltage_violation", "boundary_violation", "total", "boundary_energy",
)
_SUMMED = tuple(k for k in COST_KEYS if k not in ("total", "boundary_energy"))

#: Violation keys of :attr:`StepOutcome.violations`.
VIOLATION_KEYS: tuple[str, ...] = (
    "voltage_puh", "voltage_worst_pu", "voltage_buses", "load_shed_mwh", "curtailment_mwh",
    "ev_unmet_kwh", "boundary_violation_mwh", "line_overload_max", "unbalanced_mw",
)

_TOL_MW = 1e-9
_V_COLLAPSE_PU = 0.3  # as the sweep kernel: below this a "solution" is a collapse
_SHED_BISECTIONS = 14  # shed share resolution 2^-14 ~ 6e-5


@dataclass(frozen=True)
class SimulatorSettings:
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
        if self.forecast_obs not in ("day_ahead", "intraday"):
            raise ValueError(f"SimulatorSettings.forecast_obs: must be 'day_ahead' or 'intraday', "
                             f"got {self.forecast_obs!r}")
        if not self.sweep_tol_pu > 0 or self.sweep_max_iter < 1:
            raise ValueError("SimulatorSettings: need sweep_tol_pu > 0 and sweep_max_iter >= 1")
        if not self.forecast_horizon_h > 0:
            raise ValueError("SimulatorSettings.forecast_horizon_h: must be > 0")
        price = self.ev_reserve_price_per_mwh
        if price is not None and not (np.isfinite(price) and price >= 0):
            raise ValueError("SimulatorSettings.ev_reserve_price_per_mwh: must be None or finite >= 0")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "SimulatorSettings":
        """Build from keyword arguments; unknown keys raise ValueError listing the valid ones."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise ValueError(f"SimulatorSettings: unknown keys {unknown}; valid keys: {valid}")
        return cls(**kwargs)


# ============================================================================ precomputation


def _incidence(n_rows: int, rows: np.ndarray) -> np.ndarray:
    """Dense (n_rows, len(rows)) 0/1 matrix with a one at (rows[j], j)."""
    m = np.zeros((n_rows, rows.shape[0]))
    m[rows, np.arange(rows.shape[0])] = 1.0
    return m


class _SweepGroup:
    """Feeders sharing one topology, solved together (one column each), warm-started.

    Uses the kernel's matrices (``RadialSweep.dlf`` / ``.bibc``) over the buses they cover:
    all buses (slack row/column zero) or the non-slack buses, whichever the kernel provides.
    """

    def __init__(self, sweep: RadialSweep, feeders: list[int], offsets: np.ndarray, v_slack_pu: float,
                 base_mva: float) -> None:
        self.sweep = sweep
        self.name = sweep.name
        self.feeders = np.array(feeders, dtype=np.intp)
        n_bus, slack = sweep.n_bus, sweep.slack_bus
        full = sweep.dlf.shape == (n_bus, n_bus)
        if not full and sweep.dlf.shape != (n_bus - 1, n_bus - 1):
            raise ValueError(f"GridModel: unexpected DLF shape {sweep.dlf.shape} of feeder {sweep.name}")
        # buses the kernel's matrices cover, in their order
        self.buses = np.arange(n_bus) if full else np.delete(np.arange(n_bus), slack)
        self.dlf = np.ascontiguousarray(sweep.dlf)
        self.bibc = np.ascontiguousarray(np.asarray(sweep.bibc)[:, self.buses] if sweep.bibc.shape[1] == n_bus
                                         else sweep.bibc)
        # (n_bus, K) gather index into the stacked feeder-bus vector, and the covered part
        self.idx = offsets[self.feeders][None, :] + np.arange(n_bus)[:, None]
        self.idx_cov = self.idx[self.buses]
        self.slack_row = int(np.flatnonzero(self.buses == slack)[0]) if full else -1
        self.v0 = complex(v_slack_pu)
        self.base_mva = float(base_mva)
        self.r = np.asarray(sweep.r_pu)
        self.x = np.asarray(sweep.x_pu)
        self.slack = slack
        # one group covering every feeder bus, all buses in its matrices, in stacking order
        self.stacked = bool(full and np.array_equal(self.idx.T.ravel(), np.arange(self.idx.size))
                            and offsets.shape[0] == self.feeders.shape[0])


@dataclass(frozen=True)
class _FeederSolution:
    """Stacked AC results of all feeders (bus vectors stacked in feeder order)."""

    vm_pu: np.ndarray         # (N_fb,)
    v_ns: list[np.ndarray]    # per group: complex (n_ns, K) non-slack voltages (warm start)
    head_p_mw: np.ndarray     # (n_feeder,)
    head_q_mvar: np.ndarray
    loss_mw: np.ndarray
    loss_mvar: np.ndarray


class GridModel:
    """Everything about a grid that does not change during a day, precomputed once.

    Index maps (dense incidence matrices onto the stacked feeder-bus vector), the sweep
    groups, the DC model and the cost coefficients. Immutable after construction and
    shared by every simulator of the grid (the env builds it once).
    """

    def __init__(self, grid: Grid, reactive: bool = False) -> None:
        self.grid = grid
        self.sizes = DispatchSizes.from_grid(grid, reactive=reactive)
        self.sizes_q = replace(self.sizes, reactive=True)
        self.sizes_no_q = replace(self.sizes, reactive=False)
        self.tariff = grid.tariff
        feeders = grid.feeders
        self.n_feeder = len(feeders)
        self._check_supported(grid)
        n_bus = np.array([f.n_bus for f in feeders])
        self.fb_offset = np.concatenate(([0], np.cumsum(n_bus)[:-1])).astype(np.intp)
        self.n_fb = int(n_bus.sum())
        self.feeder_bus_slices = tuple(slice(int(o), int(o + n)) for o, n in zip(self.fb_offset, n_bus))
        self.bus_feeder = np.repeat(np.arange(self.n_feeder), n_bus).astype(np.intp)
        if sum(len(f.evcs) for f in feeders) == 0:
            raise ValueError(f"GridModel: grid {grid.name} has no EV station (at least one is required)")
        self._stack_feeder_items(feeders)
        self._build_groups(feeders)
        self._build_transmission(grid)
        self._build_costs(grid)
        for name, value in vars(self).items():
            if isinstance(value, np.ndarray):
                value.flags.writeable = False

    @staticmethod
    def _check_supported(grid: Grid) -> None:
        for f in grid.feeders:
            if len(f.gen):
                raise ValueError(f"GridModel: feeder {f.name} has thermal units; only the transmission may")
        t = grid.transmission
        if t is not None and (len(t.storage) or len(t.evcs) or len(t.compensator)):
            raise ValueError(f"GridModel: storage, EV stations and compensators on the transmission "
                             f"network {t.name} are not supported")

    def _stack(self, feeders: tuple[Network, ...], table: str) -> tuple[np.ndarray, np.ndarray]:
        """(stacked bus index, feeder index) of every row of a feeder table, in feeder order."""
        bus = [self.fb_offset[k] + getattr(f, table).bus for k, f in enumerate(feeders)]
        owner = [np.full(len(getattr(f, table)), k) for k, f in enumerate(feeders)]
        return np.concatenate(bus).astype(np.intp), np.concatenate(owner).astype(np.intp)

    def _stack_feeder_items(self, feeders: tuple[Network, ...]) -> None:
        n_fb, nf = self.n_fb, self.n_feeder
        load_bus, self.load_feeder = self._stack(feeders, "load")
        self.n_load_f = load_bus.shape[0]
        der_bus, self.der_feeder = self._stack(feeders, "der")
        self.n_der_f = der_bus.shape[0]
        ev_bus, self.ev_feeder = self._stack(feeders, "evcs")
        st_bus, self.st_feeder = self._stack(feeders, "storage")
        comp_bus, _ = self._stack(feeders, "compensator")
        self.m_load = _incidence(n_fb, load_bus)                    # (N_fb, n_load_f)
        # controllable active power onto buses: [EV, storage, -DER used on feeders]
        self.m_ctrl = np.hstack([_incidence(n_fb, ev_bus), _incidence(n_fb, st_bus), -_incidence(n_fb, der_bus)])
        self.m_comp = _incidence(n_fb, comp_bus)
        self.f_load = _incidence(nf, self.load_feeder)              # (n_feeder, n_load_f) sums per feeder
        self.f_der = _incidence(nf, self.der_feeder)
        self.f_ev = _incidence(nf, self.ev_feeder)
        self.f_st = _incidence(nf, self.st_feeder)
        self.inv_base_fb = np.concatenate([np.full(f.n_bus, 1.0 / f.base_mva) for f in feeders])
        self.vmin_fb = np.concatenate([f.bus.vmin_pu for f in feeders])
        self.vmax_fb = np.concatenate([f.bus.vmax_pu for f in feeders])
        cat = np.concatenate
        self.st_p_max = cat([f.storage.p_max_mw for f in feeders])
        self.st_e_max = cat([f.storage.e_max_mwh for f in feeders])
        self.st_eta_c = cat([f.storage.eta_charge for f in feeders])
        self.st_eta_d = cat([f.storage.eta_discharge for f in feeders])
        self.st_e_init = cat([f.storage.e_init_mwh for f in feeders])
        self.q_min = cat([f.compensator.q_min_mvar for f in feeders])
        self.q_max = cat([f.compensator.q_max_mvar for f in feeders])
        self.evcs_ports = cat([f.evcs.n_ports for f in feeders]).astype(int)
        self.load_peak_f = self.f_load @ cat([f.load.p_mw for f in feeders])  # (n_feeder,)
        self.load_q_base = cat([f.load.q_mvar for f in feeders])      # extended with the T loads below

    def _build_groups(self, feeders: tuple[Network, ...]) -> None:
        groups: dict[tuple, list[int]] = {}
        for k, f in enumerate(feeders):
            br = f.branch
            key = (f.n_bus, f.slack_bus, f.v_slack_pu, f.base_mva, br.from_bus.tobytes(), br.to_bus.tobytes(),
                   br.r_pu.tobytes(), br.x_pu.tobytes())
            groups.setdefault(key, []).append(k)
        self.groups: list[_SweepGroup] = []
        for ks in groups.values():
            f = feeders[ks[0]]
            sweep = RadialSweep.build(f.branch.from_bus, f.branch.to_bus, f.branch.r_pu, f.branch.x_pu,
                                      f.n_bus, f.slack_bus, name=f.name)
            self.groups.append(_SweepGroup(sweep, ks, self.fb_offset, f.v_slack_pu, f.base_mva))

    def _build_transmission(self, grid: Grid) -> None:
        t = grid.transmission
        self.is_td = t is not None
        self.n_boundary = len(grid.boundary_bus)
        if t is None:
            self.dc = None
            self.n_gen = self.n_load_t = self.n_der_t = self.n_line = 0
            self.ref_unit = -1
            self.load_peak_t = 0.0
            return
        self.dc = DCModel.build(t.branch.from_bus, t.branch.to_bus, t.branch.x_pu, t.branch.tap,
                                t.branch.shift_rad, n_bus=t.n_bus, slack_bus=t.slack_bus)
        self.base_mva_t = float(t.base_mva)
        self.n_gen, self.n_load_t, self.n_der_t, self.n_line = len(t.gen), len(t.load), len(t.der), len(t.branch)
        if self.n_gen == 0:
            raise ValueError(f"GridModel: transmission network {t.name} has no thermal unit to balance it")
        # bus injection of [thermal, T DER used, -T loads served, -feeder heads]
        self.m_inj_t = np.hstack([_incidence(t.n_bus, t.gen.bus), _incidence(t.n_bus, t.der.bus),
                                  -_incidence(t.n_bus, t.load.bus),
                                  -_incidence(t.n_bus, np.array(grid.boundary_bus, dtype=np.intp))])
        self.rate_mva = t.branch.rate_mva
        self.load_q_base = np.concatenate((self.load_q_base, t.load.q_mvar))
        self.load_peak_t = float(t.load.p_mw.sum())
        self.inv_rate = np.where(np.isfinite(t.branch.rate_mva), 1.0 / t.branch.rate_mva, 0.0)
        at_slack = np.flatnonzero(t.gen.bus == t.slack_bus)
        self.ref_unit = int(at_slack[0]) if at_slack.size else int(np.argmax(t.gen.p_max_mw))
        g = t.gen
        self.g_p_min, self.g_p_max, self.g_ramp = g.p_min_mw, g.p_max_mw, g.ramp_mw_per_h
        self.g_c1, self.g_c2, self.g_cr = g.cost_c1_per_mwh, g.cost_c2_per_mw2h, g.cost_reserve_per_mwh

    def _build_costs(self, grid: Grid) -> None:
        tar = grid.tariff
        kinds = [f.der.kind for f in grid.feeders]
        if grid.transmission is not None:
            kinds.append(grid.transmission.der.kind)
        kind = np.concatenate(kinds) if kinds else np.zeros(0, dtype=str)
        self.der_is_pv = kind == "pv"
        self.der_cost = np.where(self.der_is_pv, tar.pv_cost_per_mwh, tar.wind_cost_per_mwh)
        if self.is_td and self.g_p_max.sum() > 0:
            self.ev_reserve_price_default = float((self.g_cr * self.g_p_max).sum() / self.g_p_max.sum())
        else:
            self.ev_reserve_price_default = 0.0

    # ------------------------------------------------------------------ day data
    def der_columns(self) -> tuple[np.ndarray, np.ndarray]:
        """For every DER in dispatch order: (is_pv, column in the scenario's pv / wind arrays)."""
        nets = list(self.grid.feeders) + ([self.grid.transmission] if self.is_td else [])
        cols, n_pv, n_wind = [], 0, 0
        for net in nets:
            for kind in net.der.kind:
                if kind == "pv":
                    cols.append(n_pv)
                    n_pv += 1
                else:
                    cols.append(n_wind)
                    n_wind += 1
        return self.der_is_pv, np.array(cols, dtype=np.intp)


# ============================================================================ results


@dataclass(frozen=True)
class StepOutcome:
    """Everything that happened in one step (arrays in dispatch / layout order, MW unless named).

    Attributes:
        step, time_h, dt_h: the step played.
        cost: breakdown, keys :data:`COST_KEYS` (tariff currency); ``reward = -cost["total"]``.
        violations: keys :data:`VIOLATION_KEYS`.
        projection: per dispatch field, applied setpoint minus requested (0 where feasible).
        setpoints: per dispatch field, the setpoint after projection (before reserve deployment);
            :attr:`applied` gives them as a :class:`Dispatch` (``q_comp_mvar`` included).
        ev: the EV fleet's result (kW / kWh per station).
        load_p_mw: (n_load,) realized demand, ``Layout`` order (feeder loads, then T loads).
        load_served_mw: (n_load,) after shedding.
        der_avail_mw, der_used_mw: (n_der,) available and used renewable output.
        storage_p_mw: (n_storage,) applied (+ charge); storage_e_mwh: energy after the step.
        ev_p_mw: (n_evcs,) delivered station power; ev_deployed_mw: delivered minus setpoint.
        thermal_p_mw: (n_gen,) actual output (setpoint + deployment + residual at the reference unit).
        thermal_deployed_mw: (n_gen,) actual minus setpoint.
        head_p_mw, head_q_mvar, loss_mw: (n_feeder,) feeder head power and series losses.
        v_pu: (N_fb,) bus voltage magnitudes, feeders stacked; v_min_pu, v_max_pu per feeder.
        line_p_mw, line_loading: (n_line,) transmission flows and |flow| / rating.
        imbalance_mw: real-time imbalance D before balancing (after the TSO calls; 0 single-feeder).
        tso_requirement_mw, tso_delivered_mw, boundary_violation_mw: (n_boundary,).
        residual_mw: mismatch closed by the reference unit (feeder loss changes).
        import_mw: single feeder: head P (+ buys); T-D: sum of feeder heads.
    """

    step: int
    time_h: float
    dt_h: float
    cost: dict[str, float]
    violations: dict[str, float]
    projection: dict[str, np.ndarray]
    setpoints: dict[str, np.ndarray]
    ev: EVStepResult
    load_p_mw: np.ndarray
    load_served_mw: np.ndarray
    der_avail_mw: np.ndarray
    der_used_mw: np.ndarray
    storage_p_mw: np.ndarray
    storage_e_mwh: np.ndarray
    ev_p_mw: np.ndarray
    ev_deployed_mw: np.ndarray
    thermal_p_mw: np.ndarray
    thermal_deployed_mw: np.ndarray
    head_p_mw: np.ndarray
    head_q_mvar: np.ndarray
    loss_mw: np.ndarray
    v_pu: np.ndarray
    v_min_pu: np.ndarray
    v_max_pu: np.ndarray
    line_p_mw: np.ndarray
    line_loading: np.ndarray
    imbalance_mw: float
    tso_requirement_mw: np.ndarray
    tso_delivered_mw: np.ndarray
    boundary_violation_mw: np.ndarray
    residual_mw: float
    import_mw: float

    def __post_init__(self) -> None:
        missing = set(COST_KEYS) - set(self.cost)
        if missing:
            raise ValueError(f"StepOutcome.cost: missing keys {sorted(missing)}")
        if not np.isfinite(self.cost["total"]):
            raise ValueError(f"StepOutcome.cost: total is {self.cost['total']}")

    @property
    def applied(self) -> Dispatch:
        """The projected dispatch (built on first access)."""
        cached = self.__dict__.get("_applied")
        if cached is None:
            cached = Dispatch(**self.setpoints)
            object.__setattr__(self, "_applied", cached)
        return cached

    @property
    def reward(self) -> float:
        """Minus the step's total cost."""
        return -self.cost["total"]

    def info(self) -> dict[str, Any]:
        """The gym ``info`` dict of this step (plain floats and small arrays)."""
        return {
            "step": self.step, "time_h": self.time_h, "cost": self.cost, "violations": self.violations,
            "projection": self.projection, "v_min_pu": self.v_min_pu, "v_max_pu": self.v_max_pu,
            "losses_mw": float(self.loss_mw.sum()), "import_mw": self.import_mw,
            "head_p_mw": self.head_p_mw, "imbalance_mw": self.imbalance_mw, "residual_mw": self.residual_mw,
            "ev_p_mw": self.ev_p_mw, "ev_unmet_kwh": float(self.ev.unmet_kwh.sum()),
            "thermal_p_mw": self.thermal_p_mw, "tso_requirement_mw": self.tso_requirement_mw,
            "tso_delivered_mw": self.tso_delivered_mw,
            "line_loading_max": float(self.line_loading.max(initial=0.0)),
        }


# ============================================================================ the simulator


class _State:
    """Mutable state of a simulator between steps (private)."""

    __slots__ = ("t", "e_mwh", "p_last", "v_ns", "vm", "line_loading", "tso_last", "bounds")


class GridSimulator:
    """One day of a grid under one scenario, stepped by :meth:`step` (see the module docstring).

    Args:
        grid: the grid.
        scenario: a ``scenarios.day.Scenario`` of this grid's layout.
        settings: :class:`SimulatorSettings` (default settings when None).
        model: a prebuilt :class:`GridModel` of ``grid`` (built when None).
    """

    def __init__(self, grid: Grid, scenario: Any, settings: SimulatorSettings | None = None,
                 model: GridModel | None = None) -> None:
        self.grid = grid
        self.settings = settings or SimulatorSettings()
        self.model = model if model is not None else GridModel(grid)
        if self.model.grid is not grid:
            raise ValueError("GridSimulator: model was built for another grid")
        self.scenario = scenario
        self._load_day(scenario)
        m = self.model
        self.fleet = EVFleet(scenario.ev, max(len(m.evcs_ports), 1), self.dt_h, self.n_steps,
                             v2g=self.settings.v2g, enforce_must_run=self.settings.enforce_must_run)
        self.ev_reserve_price = (m.ev_reserve_price_default if self.settings.ev_reserve_price_per_mwh is None
                                 else float(self.settings.ev_reserve_price_per_mwh))
        self.price_sell = float(grid.tariff.price_sell_per_mwh)
        self._precompute()
        self._init_state()

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
        s_load = (self.load_p[:, :m.n_load_f] + 1j * self.load_q_f) @ m.m_load.T  # (T, N_fb) MVA
        self.s_load_fb_pu = s_load * m.inv_base_fb
        self.der_avail = self._der_mw(np.asarray(sc.pv_p_mw), np.asarray(sc.wind_p_mw))  # (T, n_der)
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

    def _der_mw(self, pv_mw: np.ndarray, wind_mw: np.ndarray) -> np.ndarray:
        is_pv, col = self.model.der_columns()
        out = np.zeros(pv_mw.shape[:-1] + (len(is_pv),))
        out[..., is_pv] = pv_mw[..., col[is_pv]]
        out[..., ~is_pv] = wind_mw[..., col[~is_pv]]
        return out

    def _day_ahead_net_load(self, sc: Any) -> np.ndarray:
        da = sc.day_ahead
        load = da.load_pu_da * self.grid.layout.load_p_mw
        der = self._der_mw(da.pv_pu_da * da.pv_p_max_mw, da.wind_pu_da * da.wind_p_max_mw)
        return self._net_rows(load, der)

    def _precompute(self) -> None:
        """Per-day constants of the limits and the observation (no per-step rebuilding)."""
        m, sz = self.model, self.model.sizes
        ramp = m.g_ramp * self.dt_h if m.is_td else np.zeros(0)
        z = np.zeros
        lo = [z(sz.n_evcs), -m.st_p_max, z(sz.n_der), m.g_p_min if m.is_td else z(0), z(sz.n_gen), z(sz.n_gen),
              z(sz.n_ev_reserve), z(sz.n_ev_reserve)]
        hi = [z(sz.n_evcs), m.st_p_max, np.ones(sz.n_der), m.g_p_max if m.is_td else z(0), ramp, ramp,
              z(sz.n_ev_reserve), z(sz.n_ev_reserve)]
        if sz.reactive:
            lo.append(m.q_min)
            hi.append(m.q_max)
        self._lim_lo, self._lim_hi = np.concatenate(lo), np.concatenate(hi)
        lay = dict(sz.layout())
        self._sl_ev = lay["ev_p_mw"]
        self._sl_rup = lay["ev_r_up_mw"] if sz.n_ev_reserve else None
        self._sl_rdn = lay["ev_r_dn_mw"] if sz.n_ev_reserve else None
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
        self._inv_eta_c_dt = 1.0 / (m.st_eta_c * self.dt_h)
        self._eta_d_over_dt = m.st_eta_d / self.dt_h
        self._ramp_dt = m.g_ramp * self.dt_h if m.is_td else _EMPTY
        self.der_avail_sum = self.der_avail.sum(axis=1)
        for arr in (self.load_p, self.load_q, self.der_avail, self.der_avail_sum, self.price_buy,
                    self._fc_rows, self.s_load_fb_pu):
            arr.flags.writeable = False

    def _init_state(self) -> None:
        m = self.model
        st = _State()
        st.t = 0
        st.e_mwh = m.st_e_init.astype(float).copy()
        st.p_last = self._initial_thermal()
        st.tso_last = np.zeros(m.n_boundary)
        st.line_loading = np.zeros(m.n_line)
        st.bounds = None
        st.v_ns = [np.full(g.idx_cov.shape, g.v0, dtype=complex) for g in m.groups]
        self._state = st
        s = self._feeder_injection(0, np.zeros(m.sizes.n_evcs), np.zeros(m.sizes.n_storage),
                                   self.der_avail[0, :m.n_der_f], np.zeros(m.sizes.n_comp))
        sol = self._solve_feeders(s, self.s_load_fb_pu[0].copy(), np.zeros(m.n_feeder))
        st.v_ns, st.vm = sol.v_ns, sol.vm_pu

    def _initial_thermal(self) -> np.ndarray:
        """Thermal state before the day: the step-0 net demand shared pro rata to p_max.

        ``P = p_min + (p_max - p_min) x clip(demand - sum p_min, 0, sum(p_max - p_min)) / sum(p_max - p_min)``
        with demand = all loads - all renewable availability of step 0 (losses, EVs ignored).
        """
        m = self.model
        if not m.is_td:
            return np.zeros(0)
        demand = self.load_p[0].sum() - self.der_avail[0].sum()
        room = m.g_p_max - m.g_p_min
        share = np.clip(demand - m.g_p_min.sum(), 0.0, room.sum()) / max(room.sum(), 1e-12)
        return m.g_p_min + room * share

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

    def limits(self) -> ActionLimits:
        """Ranges of the action encoding at the current step (see :mod:`env.dispatch`)."""
        b = self.ev_bounds()
        sz = self.model.sizes
        ev_lo, ev_hi = b.p_min_kw * 1e-3, b.p_max_kw * 1e-3
        flex = np.maximum(ev_hi - ev_lo, 0.0)
        lo, hi = self._lim_lo.copy(), self._lim_hi.copy()
        lo[self._sl_ev] = ev_lo
        hi[self._sl_ev] = np.maximum(ev_hi, ev_lo)
        if self._sl_rup is not None:
            hi[self._sl_rup] = flex
            hi[self._sl_rdn] = flex
        return ActionLimits._trusted(sz, lo, hi, self._state.t)

    def observe(self) -> Observation:
        """What a policy may know at the current step (after the last step at day's end)."""
        st, m = self._state, self.model
        t = st.t
        tc = min(t, self.n_steps - 1)
        vm = st.vm
        sc = self.scenario
        return Observation._trusted(
            step=t, n_steps=self.n_steps, time_h=t * self.dt_h, dt_h=self.dt_h,
            load_p_mw=self.load_p[tc], load_q_mvar=self.load_q[tc],
            pv_pu=sc.pv_pu[tc], wind_pu=sc.wind_pu[tc], der_avail_mw=self.der_avail[tc],
            ev=None if t >= self.n_steps else self.ev_bounds(),
            storage_e_mwh=st.e_mwh, thermal_p_last_mw=st.p_last,
            v_pu=tuple(vm[sl] for sl in m.feeder_bus_slices), v_min_pu=np.minimum.reduceat(vm, self._v_starts),
            v_max_pu=np.maximum.reduceat(vm, self._v_starts), line_loading=st.line_loading,
            price_buy_per_mwh=float(self.price_buy[tc]), price_ahead_per_mwh=self.price_buy[tc:],
            price_sell_per_mwh=self.price_sell,
            tso_requirement_last_mw=st.tso_last, net_load_forecast_mw=self._forecast_rows(tc),
            forecast_fn=_LazyForecast(sc, t) if t < self.n_steps else None,
        )

    def _forecast_rows(self, t: int) -> np.ndarray:
        """(n_rows, h) net-load point forecast for steps t..t+h-1 (step t = nowcast; past the
        day's end the last step repeats)."""
        if self.settings.forecast_obs != "intraday" or t + 1 >= self.n_steps:
            return self._fc_rows[t]
        h = self._h_fc
        fc = _forecast_at(self.scenario, t)   # covers steps t..T-1; its first row is the nowcast's step
        ahead = self._net_rows(fc.load_pu * self.grid.layout.load_p_mw,
                               self._der_mw(fc.pv_pu * fc.day_ahead.pv_p_max_mw,
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
        m, st = self.model, self._state
        sizes = m.sizes
        dispatch.check_sizes(m.sizes_q if dispatch.q_comp_mvar is not None else m.sizes_no_q)
        q = dispatch.q_comp_mvar if dispatch.q_comp_mvar is not None else q_comp_mvar
        if q is None:
            q = np.zeros(sizes.n_comp)
        else:
            q = np.asarray(q, dtype=float)
            if q.shape != (sizes.n_comp,) or not np.isfinite(q).all():
                raise ValueError(f"q_comp_mvar: expected {sizes.n_comp} finite values, got {q!r}")
        x, proj = self._project(dispatch, q)
        if m.is_td:
            out = self._step_td(x)
        else:
            out = self._step_feeder(x)
        return self._finish(x, proj, out)

    # .................................................................. projection
    def _project(self, d: Dispatch, q: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Project onto the step's feasible set; returns (applied values, applied - requested)."""
        m, st, dt = self.model, self._state, self.dt_h
        b = self.ev_bounds()
        ev_lo, ev_hi = b.p_min_kw * 1e-3, b.p_max_kw * 1e-3
        x: dict[str, np.ndarray] = {}
        x["ev_p_mw"] = ev = _clip(d.ev_p_mw, ev_lo, ev_hi)
        e = st.e_mwh
        st_hi = np.minimum(m.st_p_max, (m.st_e_max - e) * self._inv_eta_c_dt)
        st_lo = -np.minimum(m.st_p_max, e * self._eta_d_over_dt)
        x["storage_p_mw"] = _clip(d.storage_p_mw, st_lo, st_hi)
        x["der_curtail_frac"] = _clip(d.der_curtail_frac, 0.0, 1.0)
        if m.is_td:
            ramp = self._ramp_dt
            up_lim = np.minimum(m.g_p_max, st.p_last + ramp)
            dn_lim = np.maximum(m.g_p_min, st.p_last - ramp)
            x["thermal_p_mw"] = p = _clip(d.thermal_p_mw, dn_lim, np.maximum(up_lim, dn_lim))
            x["thermal_r_up_mw"] = _clip(d.thermal_r_up_mw, 0.0, np.maximum(up_lim - p, 0.0))
            x["thermal_r_dn_mw"] = _clip(d.thermal_r_dn_mw, 0.0, np.maximum(p - dn_lim, 0.0))
            x["ev_r_up_mw"] = _clip(d.ev_r_up_mw, 0.0, np.maximum(ev - ev_lo, 0.0))
            x["ev_r_dn_mw"] = _clip(d.ev_r_dn_mw, 0.0, np.maximum(ev_hi - ev, 0.0))
        else:
            x["thermal_p_mw"] = x["thermal_r_up_mw"] = x["thermal_r_dn_mw"] = _EMPTY
            x["ev_r_up_mw"] = x["ev_r_dn_mw"] = _EMPTY
        x["q_comp_mvar"] = _clip(q, m.q_min, m.q_max)
        proj = {name: value - getattr(d, name) for name, value in x.items() if name != "q_comp_mvar"}
        proj["q_comp_mvar"] = x["q_comp_mvar"] - q
        return x, proj

    # .................................................................. feeders
    def _feeder_injection(self, t: int, ev_mw: np.ndarray, st_mw: np.ndarray, der_f_used: np.ndarray,
                          q_comp: np.ndarray, shed_f: np.ndarray | None = None) -> np.ndarray:
        """Stacked per-bus complex net consumption in p.u. (N_fb,)."""
        m = self.model
        ctrl = np.concatenate((ev_mw, st_mw, der_f_used))
        s = m.m_ctrl @ ctrl - 1j * (m.m_comp @ q_comp)
        s *= m.inv_base_fb
        if shed_f is None:
            return s + self.s_load_fb_pu[t]
        return s + self.s_load_fb_pu[t] * (1.0 - shed_f[m.bus_feeder])

    def _solve_feeders(self, s_pu: np.ndarray, load_pu: np.ndarray | None = None,
                       shed_f: np.ndarray | None = None) -> _FeederSolution:
        """AC sweeps of all feeders (groups batched, warm-started); sheds load where a sweep fails.

        ``s_pu`` (N_fb,) is modified in place when shedding (``load_pu`` = the load part, and
        ``shed_f`` (n_feeder,) receives the shed shares). Per group with bus currents ``I``:
        ``S_head = V0 conj(sum I)``, ``loss = sum_b (r_b + j x_b) |T I|_b^2`` (times S_base).
        """
        m, st, cfg = self.model, self._state, self.settings
        tol = cfg.sweep_tol_pu
        vm = np.empty(m.n_fb)
        hp, hq, lp, lq = (np.empty(m.n_feeder) for _ in range(4))
        v_ns_all = []
        for gi, g in enumerate(m.groups):
            try:
                v_ns, i_bus = self._sweep(g, s_pu[g.idx_cov], st.v_ns[gi], tol, cfg.sweep_max_iter)
            except PowerFlowError:
                v_ns, i_bus = self._shed_group(g, s_pu, load_pu, shed_f)
            v_ns_all.append(v_ns)
            if g.stacked:                       # the group's columns are the stacked vector, in order
                vm[:] = np.abs(v_ns.T).ravel()
            else:
                if g.slack_row < 0:
                    vm[g.idx] = abs(g.v0)
                vm[g.idx_cov] = np.abs(v_ns)
            s_head = np.conj(i_bus.sum(axis=0))
            s_head *= g.v0 * g.base_mva
            i_br = (g.bibc @ i_bus.view(float)).view(complex)          # real T times complex I
            i_sq = i_br.real * i_br.real + i_br.imag * i_br.imag
            hp[g.feeders], hq[g.feeders] = s_head.real, s_head.imag
            lp[g.feeders], lq[g.feeders] = (g.r @ i_sq) * g.base_mva, (g.x @ i_sq) * g.base_mva
        return _FeederSolution(vm, v_ns_all, hp, hq, lp, lq)

    @staticmethod
    def _sweep(g: _SweepGroup, s_cov: np.ndarray, v_start: np.ndarray, tol: float,
               max_iter: int) -> tuple[np.ndarray, np.ndarray]:
        """Fixed point ``V = V0 - DLF conj(S / V)`` from ``v_start`` over the covered buses
        (the slack's injection is ignored) until ``||V_new - V||_2 < tol`` over all buses and
        columns (stricter than the kernel's max-norm test); returns (V, I_bus) on those buses,
        ``I_bus = conj(S / V)`` evaluated at the returned V."""
        dlf, v0 = g.dlf, g.v0
        s_conj = np.conjugate(s_cov)
        if g.slack_row >= 0:
            s_conj[g.slack_row] = 0.0
        v = v_start.copy()
        v_new = np.empty_like(v)
        i_bus = np.empty_like(v)
        d = np.empty_like(v)
        d_flat = d.reshape(-1).view(float)
        tol2 = tol * tol
        for _ in range(max_iter):
            np.conjugate(v, out=i_bus)
            np.divide(s_conj, i_bus, out=i_bus)
            np.matmul(dlf, i_bus, out=v_new)
            np.subtract(v0, v_new, out=v_new)
            np.subtract(v_new, v, out=d)
            v, v_new = v_new, v
            step2 = d_flat @ d_flat
            if step2 < tol2:
                break
            if not step2 < np.inf:
                raise PowerFlowError(g.name, 0, "the sweep produced non-finite voltages")
        else:
            raise PowerFlowError(g.name, 0, f"no convergence within {max_iter} iterations")
        if (v.real * v.real + v.imag * v.imag).min() < _V_COLLAPSE_PU ** 2:
            raise PowerFlowError(g.name, 0, f"voltage collapse (|V| < {_V_COLLAPSE_PU} p.u.)")
        np.conjugate(v, out=i_bus)
        np.divide(s_conj, i_bus, out=i_bus)
        return v, i_bus

    def _shed_group(self, g: _SweepGroup, s_pu: np.ndarray, load_pu: np.ndarray | None,
                    shed_f: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Solve each feeder of a failed group alone, shedding its loads by bisection if needed."""
        if load_pu is None or shed_f is None:
            raise PowerFlowError(g.name, 0, "no solution and no load to shed")
        cfg = self.settings
        v_cols, i_cols = [], []
        for j, k in enumerate(g.feeders):
            idx = g.idx_cov[:, j]
            base, load = s_pu[idx] - load_pu[idx], load_pu[idx]
            flat = np.full((idx.shape[0], 1), g.v0, dtype=complex)

            def solve(keep: float) -> tuple[np.ndarray, np.ndarray]:
                s = (base + keep * load)[:, None]
                return self._sweep(g, s, flat, cfg.sweep_tol_pu, cfg.sweep_max_iter)

            try:
                v, i = solve(1.0)
                lam = 0.0
            except PowerFlowError:
                lo, hi = 0.0, 1.0                           # shed share: lo fails, hi must work
                v, i = solve(0.0)
                for _ in range(_SHED_BISECTIONS):
                    mid = 0.5 * (lo + hi)
                    try:
                        v, i = solve(1.0 - mid)
                        hi = mid
                    except PowerFlowError:
                        lo = mid
                v, i = solve(1.0 - hi)
                lam = hi
            shed_f[k] = 1.0 - (1.0 - shed_f[k]) * (1.0 - lam)   # on top of any earlier shedding
            s_pu[idx] = base + (1.0 - lam) * load
            v_cols.append(v)
            i_cols.append(i)
        return np.hstack(v_cols), np.hstack(i_cols)

    # .................................................................. single feeder
    def _step_feeder(self, x: dict[str, np.ndarray]) -> dict[str, Any]:
        m, st = self.model, self._state
        t = st.t
        res = self.fleet.step(t, x["ev_p_mw"] * 1e3)
        ev = res.p_kw * 1e-3
        der_used = self.der_avail[t] * (1.0 - x["der_curtail_frac"])
        shed_f = np.zeros(m.n_feeder)
        s = self._feeder_injection(t, ev, x["storage_p_mw"], der_used[:m.n_der_f], x["q_comp_mvar"])
        sol = self._solve_feeders(s, self.s_load_fb_pu[t], shed_f)
        return {"fleet": res, "ev": ev, "der_used": der_used, "sol": sol, "shed_f": shed_f, "shed_t": 0.0,
                "thermal": np.zeros(0), "imbalance": 0.0, "residual": 0.0, "tso_delivered": np.zeros(0),
                "backoff": 0.0, "unbalanced": 0.0, "line_p": np.zeros(0)}

    # .................................................................. T-D
    def _tso_call(self, t: int, x: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Clip the TSO's call on each boundary to the feeder's cleared EV reserve and spread it
        over its stations pro rata to their reserve; returns (call per boundary, EV deviation)."""
        m = self.model
        r_up, r_dn = x["ev_r_up_mw"], x["ev_r_dn_mw"]
        cap_up, cap_dn = m.f_ev @ r_up, m.f_ev @ r_dn
        call = np.clip(self.tso[t], -cap_dn, cap_up)
        up = np.divide(call, cap_up, out=np.zeros_like(call), where=cap_up > 0)
        dn = np.divide(-call, cap_dn, out=np.zeros_like(call), where=cap_dn > 0)
        f = m.ev_feeder
        dev = np.where(call[f] > 0, -r_up * up[f], r_dn * np.maximum(dn[f], 0.0))
        return call, dev

    def _step_td(self, x: dict[str, np.ndarray]) -> dict[str, Any]:
        m, st = self.model, self._state
        t = st.t
        call, dev = self._tso_call(t, x)
        der_used = self.der_avail[t] * (1.0 - x["der_curtail_frac"])
        ev1 = x["ev_p_mw"] + dev
        s = self._feeder_injection(t, ev1, x["storage_p_mw"], der_used[:m.n_der_f], x["q_comp_mvar"])
        shed_f = np.zeros(m.n_feeder)
        sol = self._solve_feeders(s, self.s_load_fb_pu[t], shed_f)
        load_t = self.load_p[t, m.n_load_f:]
        thermal = x["thermal_p_mw"]
        imbalance = load_t.sum() + sol.head_p_mw.sum() - thermal.sum() - der_used[m.n_der_f:].sum()
        bal = self._balance(imbalance, x, dev, der_used, load_t.sum(), float(self.load_p[t, :m.n_load_f].sum()))
        ev_set = x["ev_p_mw"] + bal["dev"]
        res = self.fleet.step(t, ev_set * 1e3)
        ev = res.p_kw * 1e-3
        der_used = bal["der_used"]
        changed = bal["shed_f"] > 0 or bal["feeder_changed"] or np.abs(ev - ev1).max(initial=0.0) > 1e-12
        if changed:                     # re-solve the feeders with the balancing's changes
            shed_f[:] = 1.0 - (1.0 - shed_f) * (1.0 - bal["shed_f"])   # on top of any sweep-failure shedding
            s = self._feeder_injection(t, ev, x["storage_p_mw"], der_used[:m.n_der_f], x["q_comp_mvar"],
                                       shed_f if shed_f.any() else None)
            sol = self._solve_feeders(s, self.s_load_fb_pu[t] * (1.0 - shed_f[m.bus_feeder]), shed_f)
        shed_t = bal["shed_t"]
        thermal_act = bal["thermal"]
        served_t = load_t * (1.0 - shed_t)
        residual = served_t.sum() + sol.head_p_mw.sum() - thermal_act.sum() - der_used[m.n_der_f:].sum()
        thermal_act[m.ref_unit] += residual
        inj = m.m_inj_t @ np.concatenate((thermal_act, der_used[m.n_der_f:], served_t, sol.head_p_mw))
        line_p = m.dc.flows_pu(inj / m.base_mva_t) * m.base_mva_t
        # the call as delivered: the fleet may deliver less than asked
        miss = m.f_ev @ (ev - ev_set)
        return {"fleet": res, "ev": ev, "der_used": der_used, "sol": sol, "shed_f": shed_f, "shed_t": shed_t,
                "thermal": thermal_act, "imbalance": float(imbalance), "residual": float(residual),
                "tso_delivered": call - miss, "backoff": bal["backoff"], "unbalanced": bal["unbalanced"],
                "line_p": line_p}

    def _balance(self, imbalance: float, x: dict[str, np.ndarray], dev: np.ndarray, der_used: np.ndarray,
                 load_t_mw: float, load_f_mw: float) -> dict[str, Any]:
        """Cover the real-time imbalance ``D`` (MW).

        ``D > 0`` (deficit): thermal up-reserves pro rata to the cleared ``r_up``; then EV
        up-reserves (stations charge less, within ``r_up`` minus what the TSO call used);
        then shed transmission loads proportionally, then feeder loads.
        ``D < 0`` (surplus): thermal down-reserves pro rata to ``r_dn``; EV down-reserves
        (charge more); curtail transmission wind; curtail feeder DER; back thermal units off
        below ``P - r_dn`` towards ``p_min`` (counted as curtailment); what is left is
        ``unbalanced`` (signed: + deficit, - surplus; taken by the reference unit).
        """
        m = self.model
        thermal = x["thermal_p_mw"].copy()
        dev = dev.copy()
        der_used = der_used.copy()
        out = {"shed_t": 0.0, "shed_f": 0.0, "feeder_changed": False, "backoff": 0.0, "unbalanced": 0.0}
        rest = float(imbalance)
        if rest > _TOL_MW:
            rest = _pro_rata(thermal, x["thermal_r_up_mw"], rest, +1.0)
            rest, moved = _pro_rata_dev(dev, np.maximum(x["ev_r_up_mw"] + dev, 0.0), rest, -1.0)
            out["feeder_changed"] = moved
            if rest > _TOL_MW and load_t_mw > 0:
                shed = min(rest, load_t_mw)
                out["shed_t"] = shed / load_t_mw
                rest -= shed
            if rest > _TOL_MW and load_f_mw > 0:
                out["shed_f"] = min(1.0, rest / load_f_mw)
                rest = max(rest - load_f_mw, 0.0)
            out["unbalanced"] = rest
        elif rest < -_TOL_MW:
            rest = -rest
            rest = _pro_rata(thermal, x["thermal_r_dn_mw"], rest, -1.0)
            rest, moved = _pro_rata_dev(dev, np.maximum(x["ev_r_dn_mw"] - dev, 0.0), rest, +1.0)
            out["feeder_changed"] = moved
            rest = _curtail(der_used, slice(m.n_der_f, None), rest)
            before = rest
            rest = _curtail(der_used, slice(0, m.n_der_f), rest)
            out["feeder_changed"] = out["feeder_changed"] or rest < before
            floor = np.minimum(m.g_p_min, thermal)
            room = thermal - floor
            back = min(rest, room.sum())
            if back > 0:
                thermal -= room * (back / room.sum())
                out["backoff"] = back
                rest -= back
            out["unbalanced"] = -rest
        out.update(thermal=thermal, dev=dev, der_used=der_used)
        return out

    # .................................................................. accounting
    def _finish(self, x: dict[str, np.ndarray], proj: dict[str, np.ndarray], r: dict[str, Any]) -> StepOutcome:
        m, st, dt = self.model, self._state, self.dt_h
        t = st.t
        sol: _FeederSolution = r["sol"]
        res: EVStepResult = r["fleet"]
        p_st = x["storage_p_mw"]
        e_new = st.e_mwh + (m.st_eta_c * np.maximum(p_st, 0.0) + np.minimum(p_st, 0.0) / m.st_eta_d) * dt
        e_new = _clip(e_new, 0.0, m.st_e_max)
        load, served, shed_mwh = self._served(t, r["shed_f"], r["shed_t"])
        der_used = r["der_used"]
        vm = sol.vm_pu
        viol = np.maximum(np.maximum(m.vmin_fb - vm, vm - m.vmax_fb), 0.0)
        head = sol.head_p_mw
        req = self.tso[t] if m.is_td else _EMPTY
        bviol = np.abs(req - r["tso_delivered"])
        line_p = r["line_p"]
        loading = np.abs(line_p) * m.inv_rate if m.is_td else _EMPTY
        q = _Quantities(
            ev_mwh=float(r["ev"].sum()) * dt, unmet_kwh=float(res.unmet_kwh.sum()), shed_mwh=shed_mwh,
            curt_mwh=(float(self.der_avail_sum[t]) - float(der_used.sum()) + r["backoff"]) * dt,
            v_puh=float(viol.sum()) * dt, bviol_mwh=float(bviol.sum()) * dt, head_mw=float(head.sum()),
        )
        cost = self._costs(t, x, r, q, der_used, p_st)
        violations = {
            "voltage_puh": q.v_puh, "voltage_worst_pu": float(viol.max()),
            "voltage_buses": float(np.count_nonzero(viol)), "load_shed_mwh": shed_mwh,
            "curtailment_mwh": q.curt_mwh, "ev_unmet_kwh": q.unmet_kwh, "boundary_violation_mwh": q.bviol_mwh,
            "line_overload_max": max(float(loading.max()) - 1.0, 0.0) if loading.size else 0.0,
            "unbalanced_mw": float(r["unbalanced"]),
        }
        thermal = r["thermal"]
        for arr in (e_new, vm, loading):
            arr.flags.writeable = False
        outcome = StepOutcome(
            step=t, time_h=t * dt, dt_h=dt, cost=cost, violations=violations, projection=proj, setpoints=x,
            ev=res, load_p_mw=load, load_served_mw=served, der_avail_mw=self.der_avail[t], der_used_mw=der_used,
            storage_p_mw=p_st, storage_e_mwh=e_new, ev_p_mw=r["ev"], ev_deployed_mw=r["ev"] - x["ev_p_mw"],
            thermal_p_mw=thermal, thermal_deployed_mw=thermal - x["thermal_p_mw"], head_p_mw=head,
            head_q_mvar=sol.head_q_mvar, loss_mw=sol.loss_mw, v_pu=vm,
            v_min_pu=np.minimum.reduceat(vm, self._v_starts), v_max_pu=np.maximum.reduceat(vm, self._v_starts),
            line_p_mw=line_p, line_loading=loading, imbalance_mw=r["imbalance"], tso_requirement_mw=req,
            tso_delivered_mw=r["tso_delivered"], boundary_violation_mw=bviol, residual_mw=r["residual"],
            import_mw=q.head_mw,
        )
        self._advance(x, e_new, req, loading, sol)
        return outcome

    def _served(self, t: int, shed_f: np.ndarray, shed_t: float) -> tuple[np.ndarray, np.ndarray, float]:
        """(demand, served, shed energy MWh) of the step's loads (``Layout`` order)."""
        m = self.model
        load = self.load_p[t]
        if not shed_t and not shed_f.any():
            return load, load, 0.0
        served = load.copy()
        served[:m.n_load_f] *= 1.0 - shed_f[m.load_feeder]
        served[m.n_load_f:] *= 1.0 - shed_t
        served.flags.writeable = False
        return load, served, float(load.sum() - served.sum()) * self.dt_h

    def _costs(self, t: int, x: dict[str, np.ndarray], r: dict[str, Any], q: "_Quantities",
               der_used: np.ndarray, p_st: np.ndarray) -> dict[str, float]:
        """The cost breakdown (:data:`COST_KEYS`) of the step."""
        m, tar, dt = self.model, self.grid.tariff, self.dt_h
        price = float(self.price_buy[t])
        cost = dict.fromkeys(COST_KEYS, 0.0)
        if m.is_td:
            th = r["thermal"]
            cost["thermal_fuel"] = float((m.g_c2 * th * th + m.g_c1 * th).sum()) * dt
            cost["reserves"] = (float(m.g_cr @ (x["thermal_r_up_mw"] + x["thermal_r_dn_mw"]))
                                + self.ev_reserve_price * float((x["ev_r_up_mw"] + x["ev_r_dn_mw"]).sum())) * dt
            cost["boundary_energy"] = q.head_mw * dt * price
        else:
            cost["energy_bought"] = max(q.head_mw, 0.0) * dt * price
            cost["energy_sold"] = -max(-q.head_mw, 0.0) * dt * self.price_sell
        cost["ev_revenue"] = -q.ev_mwh * tar.ev_charging_price_per_mwh
        cost["ev_subsidy"] = q.ev_mwh * tar.ev_subsidy_per_mwh
        cost["renewable_generation"] = float(der_used @ m.der_cost) * dt
        cost["storage_degradation"] = float(np.abs(p_st).sum()) * dt * tar.storage_cost_per_mwh
        cost["curtailment"] = q.curt_mwh * tar.penalty_curtailment_per_mwh
        cost["load_shed"] = q.shed_mwh * tar.penalty_load_shed_per_mwh
        cost["ev_unmet"] = q.unmet_kwh * 1e-3 * tar.penalty_ev_unmet_per_mwh
        cost["voltage_violation"] = q.v_puh * tar.penalty_voltage_per_puh
        cost["boundary_violation"] = q.bviol_mwh * tar.penalty_boundary_per_mwh
        cost["total"] = sum(cost[k] for k in _SUMMED)
        return cost

    def _advance(self, x: dict[str, np.ndarray], e_new: np.ndarray, req: np.ndarray, loading: np.ndarray,
                 sol: _FeederSolution) -> None:
        st = self._state
        st.t += 1
        st.e_mwh = e_new
        if self.model.is_td:
            p_last = x["thermal_p_mw"].copy()
            p_last.flags.writeable = False
            st.p_last, st.tso_last, st.line_loading = p_last, req, loading
        st.v_ns, st.vm = sol.v_ns, sol.vm_pu
        st.bounds = None


@dataclass
class _Quantities:
    """Scalar energy quantities of a step (MWh unless named)."""

    ev_mwh: float
    unmet_kwh: float
    shed_mwh: float
    curt_mwh: float
    v_puh: float
    bviol_mwh: float
    head_mw: float


# ============================================================================ helpers


_EMPTY = np.zeros(0)
_EMPTY.flags.writeable = False


def _clip(x: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float) -> np.ndarray:
    """``min(max(x, lo), hi)`` with ufuncs (``np.clip`` has a slow wrapper for small arrays)."""
    return np.minimum(np.maximum(x, lo), hi)


def _pro_rata(values: np.ndarray, capacity: np.ndarray, need: float, sign: float) -> float:
    """Move ``values`` by ``sign x capacity x share`` to cover ``need`` (in place); returns what is left."""
    total = float(capacity.sum())
    if need <= 0 or total <= 0:
        return need
    used = min(need, total)
    values += sign * capacity * (used / total)
    return need - used


def _pro_rata_dev(dev: np.ndarray, room: np.ndarray, need: float, sign: float) -> tuple[float, bool]:
    """Like :func:`_pro_rata` for EV deviations; also says whether anything moved."""
    left = _pro_rata(dev, room, need, sign)
    return left, left < need


def _curtail(used: np.ndarray, part: slice, need: float) -> float:
    """Reduce ``used[part]`` pro rata to cover ``need`` (in place); returns what is left."""
    seg = used[part]
    total = float(seg.sum())
    if need <= 0 or total <= 0:
        return need
    cut = min(need, total)
    seg *= 1.0 - cut / total
    return need - cut


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
