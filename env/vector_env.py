"""The native vector environment: ``N`` days stepped in one batched call (docs/rl.md).

``gym.make_vec("gridroll/D33-v0", num_envs=N)`` (every registered id has this
``vector_entry_point``; ``vectorization_mode="sync"`` still gives Gymnasium's
``SyncVectorEnv`` of single envs) returns a :class:`TDGridVectorEnv`: a
:class:`gymnasium.vector.VectorEnv` over one :class:`env.batched.BatchedSimulator`, so a step
costs one batched physics call whatever ``N``. It is ``N`` :class:`env.gym_env.TDGridEnv` with
the same equations, spaces and day seeds:

* ``reset(seed=s)`` plays days ``s, s+1, ..., s+N-1`` (a list gives one seed per env), as
  ``N`` single envs reset with those seeds; without a seed each env draws its next day from
  its own generator, seeded like the single env's ``np_random``;
* autoreset is Gymnasium 1.x's ``NEXT_STEP`` mode: the step after a day's last step resets
  (the action is ignored; reward 0, not terminated);
* all days have the same length, so the envs terminate and reset together (a partial reset
  is not supported);
* ``info`` follows Gymnasium's vector convention: ``info["cost"][key]`` and
  ``info["violations"][key]`` are ``(N,)`` arrays with ``"_key"`` masks (unscaled costs).

Compensators: ``reactive="action"`` takes their setpoints from the action; with ``"none"``
:meth:`set_reactive` sets them for the next step (else 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from env.batched import BatchedSimulator, BatchedStepOutcome
from env.gym_env import TDGridEnv

__all__ = ["TDGridVectorEnv", "make_case_vector"]

_SEED_HIGH = 2**31 - 1          # as env.gym_env: the range of drawn day seeds
_ACTION_FAST_MAX = 1e150


class TDGridVectorEnv(VectorEnv):
    """``num_envs`` gridroll days stepped together (module docstring).

    Args:
        num_envs: number of days stepped at once (>= 1).
        max_episode_steps: steps after which every env is truncated (None: the day's end only).
        **kwargs: :class:`env.gym_env.TDGridEnv` arguments (case, regime, dt_minutes, reactive,
            reward_scale, settings); checked the same way. ``render_mode`` is not supported.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None, **kwargs: Any) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"TDGridVectorEnv: num_envs must be an int >= 1, got {num_envs!r}")
        if kwargs.get("render_mode") is not None:
            raise ValueError("TDGridVectorEnv: render_mode is not supported; render a single TDGridEnv")
        if max_episode_steps is not None and (isinstance(max_episode_steps, bool)
                                              or not isinstance(max_episode_steps, (int, np.integer))
                                              or max_episode_steps < 1):
            raise ValueError(f"TDGridVectorEnv: max_episode_steps must be None or an int >= 1, "
                             f"got {max_episode_steps!r}")
        self._proto = proto = TDGridEnv(**kwargs)     # validates the arguments; shares grid and model
        if proto._profiles is not None:
            raise ValueError("TDGridVectorEnv: measured profiles are not supported yet; use TDGridEnv")
        if proto.settings.forecast_obs != "day_ahead":
            raise ValueError("TDGridVectorEnv: forecast_obs='intraday' is not supported yet; use TDGridEnv")
        self.num_envs = int(num_envs)
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.single_observation_space = proto.observation_space
        self.single_action_space = proto.action_space
        self.observation_space = batch_space(proto.observation_space, self.num_envs)
        self.action_space = batch_space(proto.action_space, self.num_envs)
        self.reward_scale = proto.reward_scale
        self.simulator: BatchedSimulator | None = None
        self.scenario_seeds = np.zeros(self.num_envs, dtype=np.int64)
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs
        self._autoreset = False
        self._elapsed = 0
        self._q_next: np.ndarray | None = None
        self.last_outcome: BatchedStepOutcome | None = None

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start ``num_envs`` new days (module docstring for the seeds); ``options`` may hold
        ``"scenario_seeds"`` (one day per env, whatever ``seed`` says)."""
        n = self.num_envs
        if seed is None:
            seeds: list[int | None] = [None] * n
        elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seeds = [int(seed) + i for i in range(n)]
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"TDGridVectorEnv.reset: {len(seeds)} seeds for {n} envs")
        super().reset(seed=seeds[0] if isinstance(seed, (int, np.integer)) else None)
        options = dict(options or {})
        unknown = sorted(set(options) - {"scenario_seeds"})
        if unknown:
            raise ValueError(f"TDGridVectorEnv.reset: unknown options {unknown}; valid: ['scenario_seeds']")
        for i, s in enumerate(seeds):
            if s is not None:
                if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
                    raise ValueError(f"TDGridVectorEnv.reset: seed {i} must be an int >= 0, got {s!r}")
                self._rngs[i] = seeding.np_random(int(s))[0]
            elif self._rngs[i] is None:
                self._rngs[i] = seeding.np_random(None)[0]
        days = options.get("scenario_seeds")
        if days is None:
            days = [s if s is not None else int(self._rngs[i].integers(0, _SEED_HIGH)) for i, s in enumerate(seeds)]
        elif len(days) != n or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0 for d in days):
            raise ValueError(f"TDGridVectorEnv.reset: options['scenario_seeds'] must be {n} ints >= 0, got {days!r}")
        return self._start([int(d) for d in days])

    def _start(self, days: list[int]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        from scenarios.day import sample_days

        proto = self._proto
        scenarios = sample_days(proto.grid, proto.regime, days, proto.dt_minutes)
        self.simulator = BatchedSimulator(proto.grid, scenarios, proto.settings, model=proto.model)
        self.scenario_seeds = np.array(days, dtype=np.int64)
        self._autoreset = False
        self._elapsed = 0
        self._q_next = None
        self.last_outcome = None
        ones = np.ones(self.num_envs, dtype=bool)
        return self._observe(), {"scenario_seed": self.scenario_seeds.copy(), "_scenario_seed": ones}

    def _observe(self) -> dict[str, np.ndarray]:
        sim = self.simulator
        assert sim is not None
        return self._proto._encoder.encode_batch(sim.t * sim.dt_h, sim.t, sim.observation_parts())

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Play one step of every env (or, after the days' end, autoreset them).

        Raises:
            ValueError: actions of the wrong shape, non-real, NaN/inf or overflowing.
            RuntimeError: ``reset`` was not called.
        """
        if self.simulator is None:
            raise RuntimeError("TDGridVectorEnv: call reset() before step()")
        n = self.num_envs
        if self._autoreset:
            days = [int(rng.integers(0, _SEED_HIGH)) for rng in self._rngs]
            obs, info = self._start(days)
            zeros = np.zeros(n, dtype=bool)
            return obs, np.zeros(n), zeros, zeros.copy(), info
        a = np.asarray(actions)
        if a.dtype.kind not in "fiu":
            raise ValueError(f"TDGridVectorEnv.step: actions must be real numbers, got dtype {a.dtype}")
        a = a.astype(np.float64)
        shape = (n,) + self.single_action_space.shape
        if a.shape != shape:
            raise ValueError(f"TDGridVectorEnv.step: actions must have shape {shape}, got {a.shape}")
        if not (np.abs(a) < _ACTION_FAST_MAX).all():
            bad = int(np.flatnonzero(~(np.abs(a) < _ACTION_FAST_MAX).all(axis=1))[0])
            raise ValueError(f"TDGridVectorEnv.step: env {bad}'s action has a NaN, inf or overflowing entry")
        q, self._q_next = self._q_next, None
        out = self.simulator.step_action(a, q)
        self.last_outcome = out
        self._elapsed += 1
        terminated = np.full(n, self.simulator.done)
        truncated = np.full(n, (not self.simulator.done and self.max_episode_steps is not None
                                and self._elapsed >= self.max_episode_steps))
        self._autoreset = bool(terminated[0] or truncated[0])
        reward = -out.cost["total"] * self.reward_scale
        ones = np.ones(n, dtype=bool)
        info = {"step": np.full(n, out.step), "_step": ones,
                "cost": {**out.cost, **{f"_{k}": ones for k in out.cost}}, "_cost": ones,
                "violations": {**out.violations, **{f"_{k}": ones for k in out.violations}}, "_violations": ones,
                "losses_mw": out.loss_mw.sum(axis=1), "_losses_mw": ones}
        return self._observe(), reward, terminated, truncated, info

    def set_reactive(self, q_comp_mvar: np.ndarray) -> None:
        """Compensator setpoints (N, n_comp) in MVAr for the next step only (projected to limits)."""
        q = np.asarray(q_comp_mvar, dtype=float)
        shape = (self.num_envs, self._proto.model.sizes.n_comp)
        if q.shape != shape or not np.isfinite(q).all():
            raise ValueError(f"TDGridVectorEnv.set_reactive: expected finite values of shape {shape}")
        self._q_next = q


def make_case_vector(_case: str, num_envs: int = 1, **kwargs: Any) -> TDGridVectorEnv:
    """Vector entry point of the case ids: ``TDGridVectorEnv(num_envs, case=_case, ...)``; a
    different ``case`` raises (the id is its case)."""
    case = kwargs.pop("case", _case)
    if case != _case:
        raise ValueError(f"{_case.upper()} vector env is the {_case!r} case, got case={case!r}")
    return TDGridVectorEnv(num_envs=num_envs, case=_case, **kwargs)
