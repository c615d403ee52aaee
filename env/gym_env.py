"""The Gymnasium environment: a thin :class:`gymnasium.Env` over :class:`env.simulator.GridSimulator`.

``TDGridEnv(case="d33", regime="cloudy", dt_minutes=15, reactive="none")`` plays one sampled
day per episode. Which day (docs/rl.md):

* ``reset(seed=s)`` plays day ``s``, ``sample_day(grid, regime, s)``: the same day
  :meth:`controller.loop.RollingController.run_day` plays for seed ``s`` (and ``compare``
  for ``--seed s``), so an agent is trained and judged on the same numbered days;
* ``reset()`` without a seed draws the next day's seed from ``self.np_random`` (seeded by
  the last ``reset(seed=...)``), so a vector env seeded ``s, s+1, ...`` plays fresh days after
  its first ones, reproducibly;
* ``options={"scenario_seed": k}`` plays day ``k`` whatever ``seed`` says.

``step(action)`` decodes the ``Box(-1, 1)`` action with :meth:`env.dispatch.Dispatch.from_array`
(or takes a :class:`~env.dispatch.Dispatch` in physical units), plays the interval and returns
``reward = -reward_scale * total cost``; ``terminated`` is True after the day's last step
(``truncated`` only ever comes from a ``TimeLimit`` wrapper). ``info`` holds the cost
breakdown (unscaled), the violations, the projection report and the physics summary (see
:meth:`StepOutcome.info`). ``render_mode="rgb_array"`` renders the day so far
(:mod:`env.render`); ``neutral_action()`` is the documented do-nothing action of this step.

For policies acting in physical units: ``env.unwrapped.step_dispatch(dispatch)``,
``env.unwrapped.limits`` (this step's :class:`ActionLimits`), ``env.unwrapped.observation_typed``
(the typed :class:`Observation`, with its ``forecast``) and ``env.unwrapped.simulator``.
A reactive controller sets the compensators for the next step with
``env.unwrapped.set_reactive(q_mvar)`` (used when the action carries no ``q_comp_mvar``).
"""

from __future__ import annotations

import numbers
from dataclasses import fields
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

from env.cases import case_names, is_grid_file, load_case
from env.dispatch import ActionLimits, Dispatch, neutral_dispatch, real_array
from env.observation import Observation, ObservationEncoder
from env.render import DayHistory
from env.simulator import GridModel, GridSimulator, SimulatorSettings, StepOutcome, observation_spec

__all__ = ["RENDER_MODES", "TDGridEnv", "VALID_DT_MINUTES", "VALID_REACTIVE"]

VALID_DT_MINUTES: tuple[int, ...] = (5, 15, 60)
VALID_REACTIVE: tuple[str, ...] = ("none", "action")
_ENV_KWARGS: tuple[str, ...] = ("case", "regime", "dt_minutes", "reactive", "reward_scale", "render_mode",
                                "profiles", "profile_date", "profile_first_seed", "ev_sessions")
RENDER_MODES: tuple[str, ...] = ("rgb_array",)
_RESET_OPTIONS: tuple[str, ...] = ("scenario_seed",)
_SEED_HIGH = 2**31 - 1
_ACTION_FAST_MAX = 1e150   # below this no decoded value overflows (the spans are far below 1e150 MW)
_max_reduce = np.maximum.reduce


def _real_array(action: Any) -> np.ndarray:
    """``action`` as a float64 array (no copy when it is one already); non-real data raise."""
    if type(action) is np.ndarray and action.dtype == np.float64:
        return action
    return real_array(action, "TDGridEnv.step: the action")


def _seed_int(seed: Any) -> int:
    """A ``reset`` seed as a day seed (Gymnasium's ``seed`` is an int >= 0)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"TDGridEnv.reset: seed must be an int >= 0, got {seed!r}")
    return int(seed)


def _regime_names() -> tuple[str, ...]:
    from scenarios.regimes import regime_names

    return tuple(regime_names())


class TDGridEnv(gym.Env):
    """One day of a T-D grid (or a single feeder) under stochastic load, renewables and EVs.

    Args:
        case: grid case name (``env.case_names()``) or a grid file (docs/data.md).
        regime: weather/demand regime of the sampled days (``scenarios.regimes.regime_names()``).
        dt_minutes: step length, one of 5, 15, 60 (``1440 / dt_minutes`` steps per day).
        reactive: ``"none"``: compensators are set by ``set_reactive`` (else 0);
            ``"action"``: their setpoints are the last block of the action.
        reward_scale: the reward is ``-reward_scale * total cost`` (> 0; 1 = the cost in the
            tariff's currency). ``info["cost"]`` stays unscaled.
        render_mode: ``None`` or ``"rgb_array"`` (:meth:`render` returns the day so far).
        profiles: measured load / PV / wind profiles (a CSV / parquet path or a DataFrame;
            :mod:`scenarios.measured`, docs/data.md): day seed ``s`` then plays the date
            ``profile_date + (s - profile_first_seed)`` days, with the regime's forecast errors
            (drawn from ``s``) on top and the synthetic EVs / TSO calls of ``s``. A case with
            profiles of its own (the SimBench cases) plays them with ``profile_date`` alone.
        ev_sessions: measured EV sessions (a CSV / parquet path or a DataFrame,
            :func:`scenarios.measured.read_ev_sessions`) replacing the sampled ones on the measured days.
        **settings: :class:`env.simulator.SimulatorSettings` fields (e.g. ``v2g``,
            ``forecast_obs``, ``ev_reserve_price_per_mwh``).

    Raises:
        ValueError: unknown case, regime, dt, reactive mode or keyword (listing the valid ones),
            or a settings value of the wrong type or out of range (e.g. ``forecast_horizon_h``
            outside (0, 24], ``v2g="no"``; see :class:`SimulatorSettings`).
    """

    metadata: dict[str, Any] = {"render_modes": list(RENDER_MODES), "render_fps": 4}

    def __init__(self, case: str = "d33", regime: str = "cloudy", dt_minutes: int = 15,
                 reactive: str = "none", reward_scale: float = 1.0, render_mode: str | None = None,
                 profiles: Any = None, profile_date: str | None = None, profile_first_seed: int = 0,
                 ev_sessions: Any = None,
                 **settings: Any) -> None:
        super().__init__()
        valid_settings = [f.name for f in fields(SimulatorSettings)]
        unknown = sorted(set(settings) - set(valid_settings))
        if unknown:
            raise ValueError(f"TDGridEnv: unknown keyword arguments {unknown}; valid: "
                             f"{list(_ENV_KWARGS) + valid_settings}")
        if not isinstance(case, str) or (case not in case_names() and not is_grid_file(case)):
            raise ValueError(f"TDGridEnv: unknown case {case!r}; valid cases: {list(case_names())}")
        regimes = _regime_names()
        if not isinstance(regime, str) or regime not in regimes:
            raise ValueError(f"TDGridEnv: unknown regime {regime!r}; valid regimes: {list(regimes)}")
        if isinstance(dt_minutes, bool) or not isinstance(dt_minutes, numbers.Integral) \
                or dt_minutes not in VALID_DT_MINUTES:
            raise ValueError(f"TDGridEnv: dt_minutes must be one of {list(VALID_DT_MINUTES)}, got {dt_minutes!r}")
        if not isinstance(reactive, str) or reactive not in VALID_REACTIVE:
            raise ValueError(f"TDGridEnv: reactive must be one of {list(VALID_REACTIVE)}, got {reactive!r}")
        if isinstance(reward_scale, bool) or not isinstance(reward_scale, numbers.Real) \
                or not np.isfinite(reward_scale) or reward_scale <= 0:
            raise ValueError(f"TDGridEnv: reward_scale must be a finite number > 0, got {reward_scale!r}")
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(f"TDGridEnv: render_mode must be None or one of {list(RENDER_MODES)}, "
                             f"got {render_mode!r}")
        self.case, self.regime, self.dt_minutes, self.reactive = case, regime, int(dt_minutes), reactive
        self.reward_scale, self.render_mode = float(reward_scale), render_mode
        self._history: DayHistory | None = None
        self.settings = SimulatorSettings.from_kwargs(**settings)
        self.grid = load_case(case)
        self._profiles = None                 # a measured day per seed (scenarios.measured)
        if profiles is None and profile_date is not None:
            from env.simbench import case_profiles, has_profiles

            if not has_profiles(case):
                raise ValueError(f"TDGridEnv: profile_date without profiles; case {case!r} has no profiles of its own")
            profiles = case_profiles(case, self.dt_minutes)     # a SimBench case's own year (env/simbench.py)
        if profiles is not None:
            from scenarios.measured import read_profiles

            if profile_date is None:
                raise ValueError("TDGridEnv: profiles need a profile_date (the first day's date)")
            self._profiles = profiles if isinstance(profiles, pd.DataFrame) else read_profiles(profiles)
            self._profile_date, self._profile_first_seed = pd.Timestamp(profile_date), int(profile_first_seed)
        self._ev_sessions = None
        if ev_sessions is not None:
            from scenarios.measured import read_ev_sessions

            if self._profiles is None:
                raise ValueError("TDGridEnv: ev_sessions need measured days (profiles / profile_date)")
            self._ev_sessions = ev_sessions if isinstance(ev_sessions, pd.DataFrame) else read_ev_sessions(ev_sessions)
        self.model = GridModel(self.grid, reactive=reactive == "action")
        self.n_steps = 1440 // self.dt_minutes
        self.action_space = spaces.Box(-1.0, 1.0, shape=(self.model.sizes.n_action,), dtype=np.float32)
        self._action_shape = (self.model.sizes.n_action,)
        self._encoder = ObservationEncoder(observation_spec(self.model, self.dt_minutes, self.settings))
        self.observation_space = self._encoder.space
        self.simulator: GridSimulator | None = None
        self._projection = None
        self.scenario_seed: int | None = None
        self.last_outcome: StepOutcome | None = None
        self._q_next: np.ndarray | None = None
        self._obs: Observation | None = None

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start a new day: its seed comes from ``self.np_random`` unless ``options["scenario_seed"]``."""
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - set(_RESET_OPTIONS))
        if unknown:
            raise ValueError(f"TDGridEnv.reset: unknown options {unknown}; valid: {list(_RESET_OPTIONS)}")
        day_seed = options.get("scenario_seed")
        if day_seed is None and seed is not None:
            day_seed = _seed_int(seed)          # day s, as run_day(s) plays it
        elif day_seed is None:
            day_seed = int(self.np_random.integers(0, _SEED_HIGH))
        elif isinstance(day_seed, bool) or not isinstance(day_seed, (int, np.integer)) or day_seed < 0:
            raise ValueError(f"TDGridEnv.reset: options['scenario_seed'] must be an int >= 0, got {day_seed!r}")
        from scenarios.day import sample_day

        if self._profiles is None:
            scenario = sample_day(self.grid, self.regime, int(day_seed), self.dt_minutes)
        else:                                 # day seed s plays date + (s - first seed)
            from scenarios.measured import profile_day

            date = self._profile_date + pd.Timedelta(days=int(day_seed) - self._profile_first_seed)
            scenario = profile_day(self.grid, self._profiles, date, self.regime, int(day_seed), self.dt_minutes,
                                   ev_sessions=self._ev_sessions)
        self.simulator = GridSimulator(self.grid, scenario, self.settings, model=self.model,
                                       projection=self._projection)
        self._projection = self.simulator.projection      # built once, shared by every day
        self.scenario_seed = int(day_seed)
        self.last_outcome = None
        self._q_next = None
        self._obs = self.simulator.observe()
        self._history = DayHistory() if self.render_mode == "rgb_array" else None
        return self._encoder.encode(self._obs), {"scenario_seed": self.scenario_seed, "step": 0}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Decode ``action`` (layout: ``Dispatch.layout``) and play one step.

        Raises:
            ValueError: wrong action shape, a non-real dtype (complex, bool, str, object), a
                NaN/inf entry or one whose physical value overflows (naming the field).
            RuntimeError: ``reset`` was not called, or the day is over.
        """
        if isinstance(action, Dispatch):
            return self.step_dispatch(action)
        sim = self._running()
        a = _real_array(action)
        if a.shape != self._action_shape or not _max_reduce(np.abs(a)) < _ACTION_FAST_MAX:
            # wrong shape, NaN/inf, or entries so large their decoded value overflows: raises
            # naming the entry (an entry beyond [-1, 1] that decodes finite is projected)
            return self._play(Dispatch.from_array(a, sim.limits()))
        # = self._play(Dispatch.from_array(action, sim.limits())) without building both
        q = None if self.reactive == "action" else self._q_next
        return self._finish_step(sim, sim.step_action(a, q))

    def step_dispatch(self, dispatch: Dispatch) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Play one step with a dispatch in physical units (projected like any action)."""
        self._running()
        if not isinstance(dispatch, Dispatch):
            raise ValueError(f"TDGridEnv.step_dispatch: expected a Dispatch, got {type(dispatch).__name__}")
        return self._play(dispatch)

    def _play(self, dispatch: Dispatch) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        sim = self.simulator
        assert sim is not None
        return self._finish_step(sim, sim.step(dispatch, None if dispatch.q_comp_mvar is not None else self._q_next))

    def _finish_step(self, sim: GridSimulator, outcome: StepOutcome
                     ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        self._q_next = None
        self.last_outcome = outcome
        self._obs = obs = sim.observe()
        if self._history is not None:
            self._history.record(outcome)
        reward = -outcome.cost["total"] * self.reward_scale      # x 1.0 is exact: unscaled by default
        return self._encoder.encode(obs), float(reward), sim.done, False, outcome.info()

    def render(self) -> np.ndarray | None:
        """``rgb_array``: the day so far (voltage envelope and dispatch, :mod:`env.render`) as an
        ``(H, W, 3)`` uint8 image; ``None`` when ``render_mode`` is ``None`` (Gymnasium's rule)."""
        if self.render_mode is None:
            return None
        from env.render import render_day

        if self._history is None:
            raise RuntimeError("TDGridEnv.render: call reset() first")
        feeders = self.grid.feeders
        limits = (min(float(f.bus.vmin_pu.min()) for f in feeders), max(float(f.bus.vmax_pu.max()) for f in feeders))
        title = f"{self.case} / {self.regime} / day {self.scenario_seed}: step {len(self._history)}"
        return render_day(self._history, title, limits)

    def _running(self) -> GridSimulator:
        if self.simulator is None:
            raise RuntimeError("TDGridEnv: call reset() before step()")
        if self.simulator.done:
            raise RuntimeError("TDGridEnv: the day is over (terminated); call reset()")
        return self.simulator

    def neutral_action(self) -> np.ndarray:
        """The do-nothing action of this step in the plain mode (float32, in [-1, 1]; docs/rl.md):
        the encoding of :func:`env.dispatch.neutral_dispatch` (EVs as fast as they can, storage
        idle, nothing curtailed, thermal units hold their last setpoint, no reserves offered,
        compensators at 0). Unlike the action ``0`` (the midpoint of every range: 50 %
        curtailment, mid-range EV power) it spills nothing and leaves the batteries alone."""
        sim = self._running()
        limits = sim.limits()
        return neutral_dispatch(self._obs, limits.sizes).to_array(limits)

    # ------------------------------------------------------------------ for controllers
    def project_dispatch(self, dispatch: Dispatch) -> Dispatch:
        """The dispatch :meth:`step_dispatch` would apply now, projected onto this step's limits
        (:meth:`env.simulator.GridSimulator.project`); nothing changes."""
        sim = self._running()
        return sim.project(dispatch, self._q_next)

    def set_reactive(self, q_comp_mvar: np.ndarray) -> None:
        """Compensator setpoints (MVAr, + = injecting) for the next step only (projected to limits).

        Raises:
            ValueError: wrong shape, non-real (e.g. complex) or non-finite values.
        """
        q = real_array(q_comp_mvar, "TDGridEnv.set_reactive: q_comp_mvar")
        n = self.model.sizes.n_comp
        if q.shape != (n,):
            raise ValueError(f"TDGridEnv.set_reactive: q_comp_mvar must have shape ({n},), got {q.shape}")
        if not np.isfinite(q).all():
            raise ValueError("TDGridEnv.set_reactive: q_comp_mvar must be finite")
        self._q_next = q

    @property
    def observation_typed(self) -> Observation:
        """The typed observation of the current step (with ``forecast``)."""
        if self._obs is None:
            raise RuntimeError("TDGridEnv: call reset() first")
        return self._obs

    def encode_observation(self, obs: Observation) -> dict[str, np.ndarray]:
        """The gym ``Dict`` encoding of a typed observation (what an agent sees)."""
        return self._encoder.encode(obs)

    @property
    def limits(self) -> ActionLimits:
        """The ranges of this step's action encoding."""
        return self._running().limits()

    def dispatch_layout(self) -> list[tuple[str, slice]]:
        """``(field, slice)`` of the flat action."""
        return self.model.sizes.layout()
