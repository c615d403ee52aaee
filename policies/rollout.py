"""Simulation-based rollout (seed 003, Algorithm 1; Bertsekas, docs/math.md §7).

At step ``t`` the rollout improves the base action ``u_base`` (seed 003's heuristic,
:class:`policies.heuristic.HeuristicPolicy`) by a one-step lookahead

    mu_tilde(x_t) in argmin_u  Q(u),   Q(u) = E[ g_t(x_t, u) + J_base,t+1(f_t(x_t, u, w)) ],

with the expectation replaced by the mean over ``M`` future paths sampled from the
non-anticipative forecast (``forecast.sample(M, rng)``) and the base policy's cost-to-go
simulated to the end of the day in :class:`policies.surrogate.DaySurrogate`.

* **Candidates** per controllable component (EV station power, storage power, DER
  curtailment share, and thermal setpoints on T-D cases): ``u_i +- j delta span_i``,
  ``j = 1..k``, projected to the step's limits (``span_i``: the station's flexible range
  ``p_max - p_min`` now, the storage rating, 1 for a curtailment share, ``ramp dt`` for a unit).
* **Multiagent rollout**: one component at a time, the others held at their current choice
  (the components already decided at their chosen values, the rest at the base action), so
  the work is linear in the number of components. The base action is the first candidate.
* **Common random numbers**: every candidate of a step is simulated on the same paths; the
  component switches to its best candidate only when the mean paired difference
  ``mean_m (Q_m(u) - Q_m(u_current))`` is below ``-z SE`` (``SE = 0`` when ``M = 1``, seed
  003's single-simulation case). With exact expectations this keeps rollout's cost
  improvement property ``J_rollout <= J_base``.
* ``no_exchange=True`` rolls out the no-exchange base rule (seed 003's third case); candidates
  keep its constraint: every DER curtails at least the share that stops its node exporting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from env.dispatch import Dispatch
from env.network import Grid
from env.observation import Observation
from env.physics.sweep import PowerFlowError
from env.settings import StrictKwargs
from policies.heuristic import HeuristicPolicy
from policies.day_inputs import ActionBatch, DayPaths, SurrogateState
from policies.ev_knowledge import EVTracker
from policies.lookahead import Lookahead
from policies.surrogate import DaySurrogate, SurrogateSettings

__all__ = ["COMPONENTS", "RolloutDecision", "RolloutPolicy", "RolloutRound", "RolloutSettings", "StepLimits",
           "candidate_values", "choose", "improve"]

#: Component kinds in the order the multiagent rollout visits them.
COMPONENTS: tuple[str, ...] = ("ev", "storage", "curtail", "thermal")
_FIELD = {"ev": "ev_p_mw", "storage": "storage_p_mw", "curtail": "der_curtail_frac", "thermal": "thermal_p_mw"}


@dataclass(frozen=True)
class RolloutSettings(StrictKwargs):
    """Settings of :class:`RolloutPolicy` (frozen; unknown keys raise, see :meth:`from_kwargs`).

    Attributes:
        n_sims: ``M``, sampled future paths per step (1 = seed 003's single-simulation case).
        delta: candidate step as a share of each component's span (see the module docstring).
        n_levels: ``k``, candidates ``+- j delta span`` for ``j = 1..k``.
        z: switch only when the mean paired difference is below ``-z SE``.
        no_exchange: roll out the no-exchange base rule.
        reserve_margin: the base rule's thermal reserve margin (T-D cases).
        components: component kinds to improve (subset of ``ev, storage, curtail, thermal``).
        q_comp_mvar: compensator output assumed in the simulations (each unit, MVAr); ``None``
            (default) holds the setpoints the loop applied last step (``obs.q_comp_last_mvar``).
        storage_hold_steps: how long a storage candidate is held: each storage value is also
            tried held for each of these step counts (1 = this step only) before the base rule
            takes over; besides, the time-of-use profiles of the rest of the day are candidates
            (multi-step candidates; docs/math.md §7).
        ev_defer_steps: multi-step EV candidates: a station held at its must-run power for each
            of these step counts, then ASAP (default none: on cloudy d33 days (4, 16) cost ~40
            CNY/day more than without, at 1.4x the decision time).
        seed: the policy's own seed; the paths of step ``t`` of day ``d`` come from
            ``default_rng([seed, d, t])``.
    """

    n_sims: int = 8
    delta: float = 0.5
    n_levels: int = 2
    z: float = 1.0
    no_exchange: bool = False
    reserve_margin: float = 0.10
    components: tuple[str, ...] = COMPONENTS
    q_comp_mvar: float | None = None
    storage_hold_steps: tuple[int, ...] = (1, 4, 16)
    ev_defer_steps: tuple[int, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        self.check_types()   # every field by its annotation (env.settings.check_field_types)
        if isinstance(self.n_sims, bool) or not isinstance(self.n_sims, (int, np.integer)) or self.n_sims < 1:
            raise ValueError(f"RolloutSettings.n_sims: must be an integer >= 1, got {self.n_sims!r}")
        if not (np.isfinite(self.delta) and self.delta > 0):
            raise ValueError(f"RolloutSettings.delta: must be > 0, got {self.delta}")
        if isinstance(self.n_levels, bool) or not isinstance(self.n_levels, (int, np.integer)) or self.n_levels < 1:
            raise ValueError(f"RolloutSettings.n_levels: must be an integer >= 1, got {self.n_levels!r}")
        if not (np.isfinite(self.z) and self.z >= 0):
            raise ValueError(f"RolloutSettings.z: must be >= 0, got {self.z}")
        comps = tuple(self.components)
        bad = sorted(set(comps) - set(COMPONENTS))
        if bad:
            raise ValueError(f"RolloutSettings.components: unknown {bad}; valid: {list(COMPONENTS)}")
        object.__setattr__(self, "components", tuple(c for c in COMPONENTS if c in comps))
        holds = tuple(self.storage_hold_steps)
        if not holds or any(isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1 for h in holds):
            raise ValueError(f"RolloutSettings.storage_hold_steps: integers >= 1 required, got {holds!r}")
        object.__setattr__(self, "storage_hold_steps", tuple(sorted(set(int(h) for h in holds))))
        defers = tuple(self.ev_defer_steps)
        if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 2 for d in defers):
            raise ValueError(f"RolloutSettings.ev_defer_steps: integers >= 2 required, got {defers!r}")
        object.__setattr__(self, "ev_defer_steps", tuple(sorted(set(int(d) for d in defers))))
        if self.q_comp_mvar is not None and not np.isfinite(self.q_comp_mvar):
            raise ValueError(f"RolloutSettings.q_comp_mvar: must be None or finite, got {self.q_comp_mvar!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"RolloutSettings.seed: must be an integer >= 0, got {self.seed!r}")



@dataclass(frozen=True)
class RolloutRound:
    """One component's round: its candidate values (``values[0]`` = the current value, which
    is the base action's; storage candidates may also differ in their later steps), the mean Q
    and the paired difference statistics against ``values[0]``."""

    kind: str
    index: int
    values: np.ndarray
    q_mean: np.ndarray
    diff_mean: np.ndarray
    diff_se: np.ndarray
    chosen: int


@dataclass(frozen=True)
class RolloutDecision:
    """What the rollout did at one step (``policy.last_decision``)."""

    step: int
    base: Dispatch
    chosen: Dispatch
    rounds: tuple[RolloutRound, ...]
    q_base_mean: float
    q_chosen_mean: float
    n_paths: int
    decision_ms: float

    @property
    def switched(self) -> bool:
        """Whether any component moved away from the base action."""
        return any(r.chosen > 0 for r in self.rounds)


def choose(q: np.ndarray, q_current: np.ndarray, weights: np.ndarray, z: float
           ) -> tuple[int, np.ndarray, np.ndarray]:
    """Pick among candidates by paired differences against the current choice.

    ``d_cm = Q_cm - Q_current,m``; ``mean_c = sum_m w_m d_cm``; with ``n_eff = 1/sum w^2``,
    ``SE_c^2 = sum_m w_m (d_cm - mean_c)^2 / (n_eff - 1)`` (0 when ``n_eff <= 1``). Returns the
    best candidate's index if ``mean < -z SE`` (and below a 1e-9 relative tolerance), else -1,
    with the means and SEs.
    """
    d = q - q_current[None, :]
    mean = d @ weights
    n_eff = 1.0 / float((weights * weights).sum())
    if n_eff > 1.0 + 1e-9:
        se = np.sqrt(np.maximum(((d - mean[:, None]) ** 2) @ weights, 0.0) / (n_eff - 1.0))
    else:
        se = np.zeros_like(mean)
    best = int(np.argmin(mean))
    tol = 1e-9 * max(1.0, float(np.abs(q_current @ weights)))
    return (best if mean[best] < -z * se[best] - tol else -1), mean, se


@dataclass(frozen=True)
class StepLimits:
    """(low, high, span) of every component kind at one step, as the env projects the action
    (the storage and thermal ranges are :class:`env.projection.StepProjection`'s).

    ``span`` scales the candidate steps: the station's flexible range ``p_max - p_min`` now, the
    storage rating, 1 for a curtailment share (0 when the unit has no output), ``ramp dt``.
    """

    ev: tuple[np.ndarray, np.ndarray, np.ndarray]
    storage: tuple[np.ndarray, np.ndarray, np.ndarray]
    curtail: tuple[np.ndarray, np.ndarray, np.ndarray]
    thermal: tuple[np.ndarray, np.ndarray, np.ndarray]

    @classmethod
    def build(cls, sur: DaySurrogate, ev_lo_mw: np.ndarray, ev_hi_mw: np.ndarray, storage_e_mwh: np.ndarray,
              der_avail_mw: np.ndarray, thermal_p_last_mw: np.ndarray, dt_h: float) -> "StepLimits":
        m, proj = sur.model, sur.projection(dt_h)
        ev_hi = np.maximum(ev_hi_mw, ev_lo_mw)
        st_lo, st_hi = proj.storage_limits(np.asarray(storage_e_mwh, dtype=float))
        n = der_avail_mw.shape[0]
        curt = (np.zeros(n), np.ones(n), np.where(der_avail_mw > 1e-9, 1.0, 0.0))
        if m.is_td:
            lo, hi = proj.thermal_limits(np.asarray(thermal_p_last_mw, dtype=float))
            thermal = (lo, np.maximum(hi, lo), np.asarray(proj.ramp_dt, dtype=float))
        else:
            thermal = (np.zeros(0),) * 3
        return cls((ev_lo_mw, ev_hi, ev_hi - ev_lo_mw), (st_lo, st_hi, np.asarray(m.st_p_max, dtype=float)),
                   curt, thermal)

    @classmethod
    def from_observation(cls, sur: DaySurrogate, obs: Observation) -> "StepLimits":
        """The limits of the env's step (EV station bounds of ``obs.ev``)."""
        return cls.build(sur, obs.ev.p_min_kw * 1e-3, obs.ev.p_max_kw * 1e-3, obs.storage_e_mwh, obs.der_avail_mw,
                         obs.thermal_p_last_mw, obs.dt_h)

    @classmethod
    def from_state(cls, sur: DaySurrogate, state: SurrogateState, paths: DayPaths) -> "StepLimits":
        """The limits of the surrogate's own state (its EVs' must-run and headroom sums)."""
        lo, hi = sur.ev_bounds(state, paths.dt_h)
        return cls.build(sur, lo, hi, state.storage_e_mwh, paths.der_avail_mw[0, 0], state.thermal_p_last_mw,
                         paths.dt_h)

    def of(self, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return getattr(self, kind)

    def with_floor(self, kind: str, low: np.ndarray) -> "StepLimits":
        """A copy whose ``kind`` lower limits are raised to ``low``."""
        lo, hi, span = self.of(kind)
        new_lo = np.minimum(np.maximum(lo, low), hi)
        return StepLimits(**{**{k: getattr(self, k) for k in ("ev", "storage", "curtail", "thermal")},
                             kind: (new_lo, hi, span)})


def storage_profiles(price_ahead_per_mwh: np.ndarray, p_max_mw: float) -> np.ndarray:
    """(P, H) time-of-use storage profiles over the rest of the day (row 0 = now): for every pair
    of remaining price levels ``lo < hi``, charge at ``p_max`` while the price is ``<= lo``,
    discharge at ``p_max`` while it is ``>= hi``, idle otherwise; plus "idle all day". The energy
    limits are applied when the profile is played (the env's projection)."""
    price = np.asarray(price_ahead_per_mwh, dtype=float)
    levels = np.unique(price)
    out = [np.zeros(price.shape[0])]
    for i, lo in enumerate(levels):
        for hi in levels[i + 1:]:
            out.append(np.where(price <= lo, p_max_mw, np.where(price >= hi, -p_max_mw, 0.0)))
    return np.array(out)


Candidates = list[tuple[str, int, np.ndarray, dict[str, np.ndarray]]]


def candidate_values(limits: StepLimits, base: ActionBatch, settings: RolloutSettings,
                     price_ahead_per_mwh: np.ndarray | None = None) -> Candidates:
    """Per component ``(kind, index, values, extra)``: ``base +- j delta span`` (``j = 1..k``)
    projected to ``[low, high]``, the base value first, duplicates removed; components without
    room are left out. ``extra`` holds the multi-step part of each candidate (docs/math.md §7),
    as :class:`ActionBatch` fields with one row per value (empty for one-step kinds):

    * storage: ``storage_plan_mw``, every value held for each of ``settings.storage_hold_steps``
      steps, and with ``price_ahead_per_mwh`` the :func:`storage_profiles` of the rest of the day;
    * EV stations: ``ev_defer_steps``, the station at its must-run power (its lower limit) for
      each of ``settings.ev_defer_steps`` steps, then as soon as possible.
    """
    j = np.arange(1, settings.n_levels + 1, dtype=float) * settings.delta
    steps = np.concatenate([[0.0], -j, j])
    n_st, n_ev = base.storage_p_mw.shape[1], base.ev_p_mw.shape[1]
    out: Candidates = []
    for kind in settings.components:
        lo, hi, span = limits.of(kind)
        b = getattr(base, _FIELD[kind])[0]
        for i in range(b.shape[0]):
            if span[i] <= 1e-12 or hi[i] - lo[i] <= 1e-12:
                continue
            vals = np.minimum(np.maximum(b[i] + steps * span[i], lo[i]), hi[i])
            vals[0] = b[i]
            _, first = np.unique(np.round(vals, 12), return_index=True)
            vals = vals[np.sort(first)]
            if kind == "storage":
                vals, plans = _storage_multistep(vals, i, n_st, settings.storage_hold_steps, price_ahead_per_mwh,
                                                 float(span[i]), float(lo[i]), float(hi[i]))
                out.append((kind, i, vals, {"storage_plan_mw": plans}))
            elif kind == "ev" and settings.ev_defer_steps:
                defers = np.zeros((len(vals) + len(settings.ev_defer_steps), n_ev))
                defers[len(vals):, i] = settings.ev_defer_steps
                vals = np.concatenate([vals, np.full(len(settings.ev_defer_steps), lo[i])])
                out.append((kind, i, vals, {"ev_defer_steps": defers}))
            else:
                out.append((kind, i, vals, {}))
    return out


def _storage_multistep(vals: np.ndarray, i: int, n_st: int, holds: tuple[int, ...], price: np.ndarray | None,
                       p_max: float, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Storage unit ``i``'s candidates and their plans (rows of ``storage_plan_mw``): each value for
    one step (plan all NaN), held for each hold length, and the time-of-use profiles (first step
    projected to ``[lo, hi]``)."""
    width = 0 if price is None else max(price.shape[0] - 1, 0)
    width = max(width, max(holds) - 1)
    plans, values = [], []
    for h in holds:
        for v in vals:
            plan = np.full((width, n_st), np.nan)
            plan[:h - 1, i] = v
            plans.append(plan.reshape(-1))
            values.append(v)
    if price is not None and price.shape[0] > 1:
        for prof in storage_profiles(price, p_max):
            plan = np.full((width, n_st), np.nan)
            plan[:price.shape[0] - 1, i] = prof[1:]
            plans.append(plan.reshape(-1))
            values.append(min(max(prof[0], lo), hi))
    return np.array(values), np.array(plans)


def _same_extra(current: ActionBatch, name: str, rows: np.ndarray) -> np.ndarray:
    """(C,) whether each row of an extra field equals the current choice's (NaN = NaN; a shorter
    current plan counts as "base rule" beyond its end)."""
    cur = getattr(current, name)[0]
    if name == "storage_plan_mw":
        cur_plan = np.full(rows.shape[1], np.nan)
        flat = current.plan(current.storage_p_mw.shape[1])[0].reshape(-1)[:rows.shape[1]]
        cur_plan[:flat.shape[0]] = flat
        return np.all((rows == cur_plan) | (np.isnan(rows) & np.isnan(cur_plan)), axis=1)
    cur = cur if cur.shape[0] == rows.shape[1] else np.zeros(rows.shape[1])
    return np.all(rows == cur, axis=1)


def improve(look: Lookahead, base: ActionBatch, candidates: Candidates, z: float,
            reserves: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
            project: Callable[[ActionBatch], ActionBatch] | None = None
            ) -> tuple[ActionBatch, tuple[RolloutRound, ...], np.ndarray]:
    """Multiagent rollout (docs/math.md §7): one component at a time, starting from the base action.

    Each round prices the component's candidates with the others at their current choice on the
    lookahead's paths and moves to the best one when :func:`choose` says so (the reference of
    ``look`` follows). ``reserves(p)`` gives the reserves of thermal setpoints ``p`` (C, n_gen);
    ``project`` maps candidate actions onto a case's extra constraints (no-exchange floor).
    A candidate equal to the current choice (same value, same multi-step part) is skipped.

    Returns:
        the chosen action, the rounds played and the chosen action's Q per path.
    """
    current, q_cur = base, look.reference_cost
    w = look.paths.probabilities
    rounds: list[RolloutRound] = []
    for kind, i, values, extra in candidates:
        cur_val = float(getattr(current, _FIELD[kind])[0, i])
        new = np.abs(values - cur_val) > 1e-9
        for name, rows in extra.items():
            new |= ~_same_extra(current, name, rows)
        values = values[new]
        if values.size == 0:
            continue
        also = {name: rows[new] for name, rows in extra.items()}
        if kind == "thermal" and reserves is not None:
            p = np.repeat(current.thermal_p_mw[:1], values.size, axis=0)
            p[:, i] = values
            also["thermal_r_up_mw"], also["thermal_r_dn_mw"] = reserves(p)
        cand = current.vary(_FIELD[kind], i, values, **also)
        if project is not None:
            cand = project(cand)
        q = look.evaluate(cand)
        best, mean, se = choose(q, q_cur, w, z)
        rounds.append(RolloutRound(kind, i, np.concatenate([[cur_val], values]),
                                   np.concatenate([[q_cur @ w], q @ w]), mean, se, best + 1))
        if best >= 0:
            current = cand.take([best])
            q_cur = look.commit_last(best)
    return current, tuple(rounds), q_cur


class RolloutPolicy:
    """Simulation-based rollout of the heuristic base rule (see the module docstring).

    Args:
        grid: the grid dispatched.
        n_sims: ``M`` future paths per step (1: seed 003's single-simulation case).
        delta: candidate step as a share of each component's span.
        n_levels: ``k`` candidate levels on each side.
        no_exchange: roll out the no-exchange base rule (seed 003's third case).
        z: switching threshold in standard errors of the paired difference.
        seed: the policy's seed (paths of day ``d``, step ``t``: ``default_rng([seed, d, t])``).
        **settings: other :class:`RolloutSettings` fields (``reserve_margin``, ``components``,
            ``q_comp_mvar``).
    """

    def __init__(self, grid: Grid, n_sims: int = 8, delta: float = 0.5, n_levels: int = 2,
                 no_exchange: bool = False, z: float = 1.0, seed: int = 0, **settings: Any) -> None:
        self.settings = RolloutSettings.from_kwargs(n_sims=n_sims, delta=delta, n_levels=n_levels,
                                                    no_exchange=no_exchange, z=z, seed=seed, **settings)
        s = self.settings
        self.grid = grid
        self.name = "rollout_no_exchange" if s.no_exchange else "rollout"
        self.base = HeuristicPolicy(grid, reserve_margin=s.reserve_margin, no_exchange=s.no_exchange)
        self.surrogate = DaySurrogate(grid, SurrogateSettings(no_exchange=s.no_exchange,
                                                              reserve_margin=s.reserve_margin,
                                                              loss_factor=self.base.loss_factor,
                                                              q_comp_mvar=s.q_comp_mvar or 0.0))
        self.tracker: EVTracker | None = None
        self.last_decision: RolloutDecision | None = None
        self.fallback_log: list[tuple[int, str]] = []
        self._day = 0

    # ------------------------------------------------------------------ protocol
    def reset(self, seed: int | None = None) -> None:
        """Start a day: forget the EV history; paths of this day use ``seed``."""
        self._day = int(seed) if seed is not None else 0
        self.tracker = None
        self.last_decision = None
        self.fallback_log = []

    def act(self, obs: Observation, forecast: Any = None) -> Dispatch:
        """The rollout's dispatch of step ``obs.step`` (the base action if ``forecast`` is None)."""
        t0 = time.perf_counter()
        base = self.base.act(obs, forecast)
        if forecast is None or obs.ev is None:
            return self._done(obs, base, base, (), 0.0, 0.0, 0, t0)
        try:
            return self._rollout(obs, forecast, base, t0)
        except PowerFlowError as err:     # a sampled path overloads a feeder: keep the base action
            self.fallback_log.append((int(obs.step), f"rollout: a simulated path has no power flow ({err}); "
                                                     "played the base action"))
            return self._done(obs, base, base, (), float("nan"), float("nan"), 0, t0)

    def _rollout(self, obs: Observation, forecast: Any, base: Dispatch, t0: float) -> Dispatch:
        look = self.lookahead(obs, forecast, base)
        b = ActionBatch.from_dispatch(base)
        limits = StepLimits.from_observation(self.surrogate, obs)
        project = None
        if self.settings.no_exchange:          # no node may export: curtail at least the base's own-use share
            limits = limits.with_floor("curtail", b.der_curtail_frac[0])
            project = lambda a: self.surrogate.no_exchange_floor(look.paths, a)  # noqa: E731
        cands = candidate_values(limits, b, self.settings, np.asarray(obs.price_ahead_per_mwh, dtype=float))
        chosen, rounds, q = improve(look, b, cands, self.settings.z, self._reserves(obs, look, b), project)
        w = look.paths.probabilities
        return self._done(obs, base, chosen.dispatch(0), rounds, float(look.reference_cost @ w), float(q @ w),
                          look.paths.n_paths, t0)

    # ------------------------------------------------------------------ parts
    def lookahead(self, obs: Observation, forecast: Any, base: Dispatch) -> Lookahead:
        """Sample the step's paths (common random numbers) and set up the Q-factor evaluator."""
        s = self.settings
        rng = np.random.default_rng([s.seed, self._day, int(obs.step)])
        sample = forecast.sample(s.n_sims, rng)
        q_held = None
        if s.q_comp_mvar is None and obs.q_comp_last_mvar.shape == (self.surrogate.sizes.n_comp,):
            q_held = obs.q_comp_last_mvar      # the compensators as the loop set them last step
        paths = self.surrogate.paths_from_forecast(obs, sample, q_held)
        ev = self._tracker(obs).state(obs.step, forecast.known_ev, obs.ev, paths.ev_dwell_steps)
        state = SurrogateState(step=int(obs.step), storage_e_mwh=np.asarray(obs.storage_e_mwh, dtype=float),
                               ev=ev, thermal_p_last_mw=np.asarray(obs.thermal_p_last_mw, dtype=float))
        return self.surrogate.lookahead(state, paths, ActionBatch.from_dispatch(base))

    def _reserves(self, obs: Observation, look: Lookahead, base: ActionBatch
                  ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None:
        """The base rule's reserves for candidate thermal setpoints (T-D cases)."""
        if not self.surrogate.is_td or "thermal" not in self.settings.components:
            return None
        margin = self.surrogate.thermal_margin(look.state, look.paths, base)
        last = np.asarray(obs.thermal_p_last_mw, dtype=float)
        return lambda p: self.surrogate.reserves_for(p, margin, last, obs.dt_h)

    def _tracker(self, obs: Observation) -> EVTracker:
        if self.tracker is None or self.tracker.n_steps != obs.n_steps or self.tracker.dt_h != obs.dt_h:
            self.tracker = EVTracker(self.surrogate.n_station, obs.n_steps, obs.dt_h,
                                     self.grid.layout.ev_efficiency)
        return self.tracker

    def _done(self, obs: Observation, base: Dispatch, chosen: Dispatch, rounds: tuple[RolloutRound, ...],
              q_base: float, q_chosen: float, n_paths: int, t0: float) -> Dispatch:
        if obs.ev is not None:
            self._tracker(obs).record(obs.step, chosen.ev_p_mw)
        self.last_decision = RolloutDecision(int(obs.step), base, chosen, rounds, q_base, q_chosen, n_paths,
                                             (time.perf_counter() - t0) * 1e3)
        return chosen
