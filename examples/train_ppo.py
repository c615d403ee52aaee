"""Train a PPO agent on gridroll/D33-v0 with reactive control on, and judge it in the loop.

Needs the ``rl`` extra: ``pip install -e ".[rl]"`` (stable-baselines3 and torch; the README
says how to get the CPU build of torch).

    nice -n 5 python examples/train_ppo.py --out runs/ppo_d33

**Training** (docs/rl.md, "A worked example"): the agent sets the battery's power itself and
leaves every other entry at the heuristic's dispatch (residual action mode,
``policies.residual``, with ``--entries storage_p_mw --absolute storage_p_mw``: the action is
one number mapped onto the battery's range ``-p_max .. +p_max``, ``a = 0`` = idle; ``--entries
all --absolute none`` is the plain residual mode, whose zero action is the heuristic's day), in
the setting it is judged in: the fast reactive controller in the env
(``ReactiveCompensationWrapper(method="fast")``, the loop's 30 draws reduced to 10 scenarios;
``--reactive socp|none`` for the others). Its reward is measured against the heuristic's day
(``policies.baseline_reward.BaselineRewardWrapper``: a twin env plays the heuristic on the same
day, and the reward is ``-(c_t - c_t^heuristic)``; the heuristic's costs do not depend on the
agent, so the objective is still the env's cost, without the day's own variance;
``--no-baseline-reward`` trains on the env's reward itself). PPO (``MultiInputPolicy``, a 64x64
net, lr 3e-4, initial log-std ``-1``, gamma 0.999: the payoff of charging at night comes hours
later) under ``VecNormalize`` (observations and rewards), ``--envs`` envs stepped in this one
process (``DummyVecEnv``), torch on one thread. Optionally a first phase without reactive
control (``--pretrain-minutes``, ~800-1,000 steps/s instead of ~120-200) trains the same model,
whose ``VecNormalize`` statistics carry over into the phase with reactive control. Training
plays day ``--seed + i`` first in env ``i``, then fresh days drawn from the envs' generators,
never an evaluation day. It logs timesteps, days played, the mean day return of the last days,
steps/s and the elapsed time, and each phase stops at its step cap or wall-time budget
(``--pretrain-minutes`` + ``--budget-minutes``, 0 + 25 min by default).

**Saving**: ``policies.sb3.save_agent``: the folder holds the model, its ``VecNormalize``
statistics and ``agent.json`` (residual mode, scale, entries, absolute groups), so
``sb3:FOLDER`` loads it anywhere and plays it as trained.

**Evaluation**: the same closed loop users run, ``gridroll compare --policies
heuristic,sb3:FOLDER,perfect_information --regimes cloudy --reactive-method fast`` on
``--eval-days`` days from ``--eval-seed`` (reactive control on, common random numbers), and
the paired comparison: mean daily cost difference vs the heuristic with its paired 95 %
interval, and the share of the heuristic-to-perfect-information gap the agent closes.

Measured (docs/rl.md, "A worked example"): with the defaults (25 min in one process, 180,464
steps, 1,876 days) the agent beats the heuristic by 778.1 CNY/day, paired 95 % interval
[-798.5, -757.6], on 20 evaluation days (cheaper on all of them; 50.4 % of the gap to perfect
information); the same settings trained on the env's reward itself do not (-53.4 [-134.0, +27.3]).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# run as a script, this folder is sys.path[0]; keep it from shadowing the packages
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import gymnasium as gym  # noqa: E402
import pandas as pd  # noqa: E402

import env  # noqa: E402,F401  (registers the envs)
from controller.wrappers import ReactiveCompensationWrapper  # noqa: E402
from env.registration import case_env_id  # noqa: E402
from policies.baseline_reward import BaselineRewardWrapper  # noqa: E402
from policies.residual import DEFAULT_RESIDUAL_SCALE, ResidualActionWrapper  # noqa: E402
from policies.sb3 import agent_label, save_agent  # noqa: E402

REGIME = "cloudy"
#: the loop's scenario settings (LoopSettings: 30 draws reduced to 10), used in training too
N_SAMPLES, N_SCENARIOS = 30, 10
#: the agent's action groups and those it sets outright (docs/rl.md, "A worked example")
DEFAULT_ENTRIES: tuple[str, ...] | None = ("storage_p_mw",)
DEFAULT_ABSOLUTE: tuple[str, ...] = ("storage_p_mw",)


class TrainingDays(gym.Wrapper):
    """Records the days an env plays and never plays a held-out (evaluation) day: a drawn day
    among them is redrawn from the env's generator; an explicitly asked one is an error."""

    def __init__(self, inner: gym.Env, held_out: frozenset[int] = frozenset()) -> None:
        super().__init__(inner)
        self.held_out = frozenset(held_out)
        self.days_played: list[int] = []

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        if info["scenario_seed"] in self.held_out and (kwargs.get("seed") is not None or kwargs.get("options")):
            raise ValueError(f"TrainingDays: day {info['scenario_seed']} is held out for evaluation")
        while info["scenario_seed"] in self.held_out:
            obs, info = self.env.reset()
        self.days_played.append(int(info["scenario_seed"]))
        return obs, info


def _reactive(e: gym.Env, reactive: str) -> gym.Env:
    if reactive == "none":
        return e
    return ReactiveCompensationWrapper(e, n_samples=N_SAMPLES, n_scenarios=N_SCENARIOS, method=reactive)


def make_env(case: str = "d33", reactive: str = "fast", *, action_mode: str = "residual",
             residual_scale: float = DEFAULT_RESIDUAL_SCALE, entries: tuple[str, ...] | None = None,
             absolute: tuple[str, ...] = (), held_out: frozenset[int] = frozenset(),
             baseline_reward: bool = False) -> gym.Env:
    """The training env: the case's id, its days filtered by :class:`TrainingDays`, reactive
    control (``fast``/``socp``) in the env, then the residual action mode (its options
    ``entries``/``absolute``: :class:`policies.residual.ResidualMode`); with ``baseline_reward``
    the reward is measured against the heuristic on the same day, played in a twin env with the
    same reactive control (:class:`policies.baseline_reward.BaselineRewardWrapper`, outermost)."""
    e: gym.Env = _reactive(TrainingDays(gym.make(case_env_id(case), regime=REGIME), held_out), reactive)
    if action_mode == "residual":
        e = ResidualActionWrapper(e, scale=residual_scale, entries=entries, absolute=absolute)
    elif action_mode != "plain":
        raise ValueError(f"make_env: action_mode must be 'plain' or 'residual', got {action_mode!r}")
    elif entries is not None or absolute:
        raise ValueError("make_env: entries/absolute need action_mode='residual'")
    if baseline_reward:
        e = BaselineRewardWrapper(e, _reactive(gym.make(case_env_id(case), regime=REGIME), reactive))
    return e


def _progress_callback(budget_s: float | None, log_every: int, printer: Any, phase: str = ""):  # noqa: ANN202 - an SB3 callback
    from stable_baselines3.common.callbacks import BaseCallback

    class ProgressLog(BaseCallback):
        """Prints progress every ``log_every`` steps; stops training past the wall-time budget."""

        def _on_training_start(self) -> None:
            self.t0 = time.perf_counter()
            self.start = self.num_timesteps                # > 0 when a phase continues a model
            self.next_log = self.start + log_every
            self.days = 0
            self.returns: deque[float] = deque(maxlen=100)     # the last days' returns (Monitor's)

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", ()):
                if "episode" in info:
                    self.days += 1
                    self.returns.append(float(info["episode"]["r"]))
            elapsed = time.perf_counter() - self.t0
            over = budget_s is not None and elapsed >= budget_s
            if self.num_timesteps >= self.next_log or over:
                self.next_log += log_every
                self.log_line(elapsed)
            if over:
                printer(f"{phase}budget of {budget_s / 60:.1f} min reached at {self.num_timesteps:,} steps: stopping")
            return not over

        def log_line(self, elapsed: float) -> None:
            buf = self.returns
            ret = f"{sum(buf) / len(buf):12,.1f}" if buf else f"{'-':>12}"
            rate = (self.num_timesteps - self.start) / max(elapsed, 1e-9)
            printer(f"{phase}steps {self.num_timesteps:9,d}  days {self.days:6,d}  mean day return (last {len(buf):3d}) "
                    f"{ret}  {rate:7.1f} steps/s  elapsed {elapsed / 60:6.2f} min")

    return ProgressLog()


def _vec_env(seed: int, n_envs: int, gamma: float, env_kwargs: dict[str, Any], stats: Any = None) -> Any:
    """``n_envs`` envs of :func:`make_env` under a fresh ``VecNormalize`` (observations and
    rewards); with ``stats`` (an earlier phase's ``VecNormalize``) it starts from a copy of its
    running statistics, so the model's inputs keep their meaning and the statistics go on
    updating."""
    import copy

    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    venv = VecNormalize(make_vec_env(make_env, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs),
                        norm_obs=True, norm_reward=True, gamma=gamma)
    if stats is not None:
        venv.obs_rms, venv.ret_rms = copy.deepcopy(stats.obs_rms), copy.deepcopy(stats.ret_rms)
    return venv


def train(timesteps: int, seed: int, reactive: str = "fast", case: str = "d33", *, out: Path | str | None = None,
          action_mode: str = "residual", residual_scale: float = DEFAULT_RESIDUAL_SCALE,
          entries: tuple[str, ...] | None = DEFAULT_ENTRIES, absolute: tuple[str, ...] = DEFAULT_ABSOLUTE,
          n_envs: int = 4, budget_minutes: float | None = None, pretrain_timesteps: int = 0,
          pretrain_minutes: float | None = None, held_out: frozenset[int] = frozenset(), log_every: int = 4096,
          n_steps: int = 192, batch_size: int = 192, n_epochs: int = 10, learning_rate: float = 3e-4,
          gamma: float = 0.999, log_std_init: float = -1.0, baseline_reward: bool = True,
          printer: Any = print) -> tuple[Any, Any, list[int]]:
    """PPO under ``VecNormalize`` on ``n_envs`` envs of :func:`make_env` in this process.

    With ``pretrain_timesteps > 0`` the model first trains on the same wrapper stack without
    reactive control (``reactive="none"``, many times faster) for at most that many steps or
    ``pretrain_minutes``, then goes on (the same model, its ``VecNormalize`` statistics carried
    over) with ``reactive`` in the env for at most ``timesteps`` more steps or
    ``budget_minutes``.

    Returns:
        ``(model, vec_normalize, days played)`` (the days of both phases); with ``out`` the
        agent folder is written there (:func:`policies.sb3.save_agent`).
    """
    from stable_baselines3 import PPO

    kwargs = {"case": case, "action_mode": action_mode, "residual_scale": residual_scale, "entries": entries,
              "absolute": absolute, "held_out": frozenset(held_out), "baseline_reward": baseline_reward}
    pretrain = pretrain_timesteps > 0
    first = _vec_env(seed, n_envs, gamma, {**kwargs, "reactive": "none" if pretrain else reactive})
    model = PPO("MultiInputPolicy", first, n_steps=n_steps, batch_size=batch_size, n_epochs=n_epochs,
                learning_rate=learning_rate, gamma=gamma, gae_lambda=0.95, clip_range=0.2, seed=seed,
                policy_kwargs={"net_arch": [64, 64], "log_std_init": log_std_init}, verbose=0, device="cpu")
    mode = f"{action_mode} actions"
    if action_mode == "residual":
        mode += (f" (scale {residual_scale}, entries {'all' if entries is None else ','.join(entries)}"
                 f"{f', absolute {chr(44).join(absolute)}' if absolute else ''})")
    ret = ("day return = the heuristic's day cost - the agent's (CNY; > 0: the agent is cheaper)"
           if baseline_reward else "day return = -day cost (CNY)")
    printer(f"training PPO on {case_env_id(case)} ({REGIME}), {mode}, {n_envs} envs, gamma {gamma:g}, "
            f"lr {learning_rate:g}; {ret}")
    venvs = [first]
    if pretrain:
        printer(f"phase 1 (pretrain): reactive none, up to {pretrain_timesteps:,} steps"
                f"{f' or {pretrain_minutes:g} min' if pretrain_minutes is not None else ''}")
        model.learn(total_timesteps=pretrain_timesteps,
                    callback=_progress_callback(_seconds(pretrain_minutes), log_every, printer, "pretrain "))
        venvs.append(_vec_env(seed + n_envs, n_envs, gamma, {**kwargs, "reactive": reactive}, stats=first))
        model.set_env(venvs[-1])                          # resets the envs; the model and its optimiser go on
    printer(f"{'phase 2 (fine-tune): ' if pretrain else ''}reactive {reactive}, up to {timesteps:,} steps"
            f"{f' or {budget_minutes:g} min' if budget_minutes is not None else ''}")
    model.learn(total_timesteps=timesteps, reset_num_timesteps=not pretrain,
                callback=_progress_callback(_seconds(budget_minutes), log_every, printer))
    venv = venvs[-1]
    days = sorted(d for v in venvs for per_env in v.get_attr("days_played") for d in per_env)
    if out is not None:
        save_agent(out, model, venv, action_mode=action_mode, residual_scale=residual_scale,
                   residual_entries=entries if action_mode == "residual" else None,
                   residual_absolute=absolute if action_mode == "residual" else ())
    return model, venv, days


def _seconds(minutes: float | None) -> float | None:
    return None if minutes is None else 60.0 * minutes


def evaluate(folder: Path | str, *, case: str = "d33", seed: int = 8380, days: int = 20,
             reactive_method: str = "fast", out: Path | str, bound: bool = True) -> pd.DataFrame:
    """``gridroll compare`` of the heuristic, the agent folder (and perfect information) on
    ``days`` days from ``seed``, reactive control on; returns its comparison table (cloudy)."""
    from controller.cli import main as gridroll

    policies = ["heuristic", f"sb3:{folder}", *(["perfect_information"] if bound else [])]
    code = gridroll(["compare", "--case", case, "--policies", ",".join(policies), "--regimes", REGIME,
                     "--days", str(days), "--seed", str(seed), "--reactive-method", reactive_method,
                     "--out", str(out), "--no-plots", "--no-progress"])
    if code != 0:
        raise RuntimeError(f"gridroll compare exited with {code}")
    return pd.read_parquet(Path(out) / "comparison.parquet")


def paired_report(table: pd.DataFrame, agent: str) -> str:
    """The agent's line: mean daily cost difference vs the heuristic [paired 95 % CI], gap closed."""
    row = table.set_index("policy").loc[agent]
    base = table.set_index("policy").loc["heuristic", "total_cost"]
    gap = row.get("gap_closed", float("nan"))
    verdict = ("beats the heuristic (the interval is below 0)" if row.diff_vs_heuristic_hi < 0 else
               "is worse than the heuristic (the interval is above 0)" if row.diff_vs_heuristic_lo > 0 else
               "is not distinguishable from the heuristic (the interval holds 0)")
    return (f"{agent} vs heuristic over {int(row.n_days)} days: mean daily cost {row.total_cost:,.1f} vs {base:,.1f} "
            f"CNY, difference {row.diff_vs_heuristic:+,.1f} [{row.diff_vs_heuristic_lo:+,.1f}, "
            f"{row.diff_vs_heuristic_hi:+,.1f}] CNY/day ({row.diff_vs_heuristic / base:+.2%}), "
            f"gap closed vs perfect_information {gap:.1%}: the agent {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="d33")
    parser.add_argument("--timesteps", type=int, default=1_000_000,
                        help="training steps with reactive control at most (after any pretraining)")
    parser.add_argument("--budget-minutes", type=float, default=25.0,
                        help="wall time of training with reactive control at most")
    parser.add_argument("--pretrain-minutes", type=float, default=0.0,
                        help="wall time of the pretraining phase without reactive control at most (0 = none)")
    parser.add_argument("--pretrain-timesteps", type=int, default=5_000_000, help="pretraining steps at most")
    parser.add_argument("--envs", type=int, default=4, help="envs stepped in this process (DummyVecEnv)")
    parser.add_argument("--seed", type=int, default=8300, help="PPO seed; env i plays day seed + i first")
    parser.add_argument("--reactive", choices=("fast", "socp", "none"), default="fast",
                        help="reactive control in the training env (evaluation: --reactive-method fast)")
    parser.add_argument("--action-mode", choices=("residual", "plain"), default="residual")
    parser.add_argument("--residual-scale", type=float, default=DEFAULT_RESIDUAL_SCALE,
                        help="largest correction (residual mode)")
    parser.add_argument("--entries", default=",".join(DEFAULT_ENTRIES or ("all",)),
                        help="residual mode: the action groups the agent controls, comma-separated (all = every one)")
    parser.add_argument("--absolute", default=",".join(DEFAULT_ABSOLUTE) or "none",
                        help="residual mode: groups the agent sets outright instead of correcting (none = no group)")
    parser.add_argument("--gamma", type=float, default=0.999, help="discount (PPO and VecNormalize)")
    parser.add_argument("--n-steps", type=int, default=192, help="PPO rollout steps per env (a day is 96)")
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--n-epochs", type=int, default=10, help="PPO epochs per rollout")
    parser.add_argument("--log-std-init", type=float, default=-1.0, help="initial log-std of the actions")
    parser.add_argument("--no-baseline-reward", action="store_true",
                        help="train on the env's reward itself, not measured against the heuristic's day")
    parser.add_argument("--eval-days", type=int, default=20)
    parser.add_argument("--eval-seed", type=int, default=8380, help="evaluation days: eval-seed .. + eval-days - 1")
    parser.add_argument("--no-bound", action="store_true", help="skip perfect_information (no gap closed)")
    parser.add_argument("--out", default="runs/ppo_d33")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)                  # one process on a shared 2-core machine
    out = Path(args.out)
    agent_dir, eval_dir = out / "agent", out / "compare"
    held_out = frozenset(range(args.eval_seed, args.eval_seed + args.eval_days))
    entries = None if args.entries == "all" else tuple(args.entries.split(","))
    absolute = () if args.absolute == "none" else tuple(args.absolute.split(","))
    if args.action_mode == "plain":
        entries, absolute = None, ()
    pretrain = args.pretrain_timesteps if args.pretrain_minutes > 0 else 0
    t0 = time.perf_counter()
    _, _, days = train(args.timesteps, args.seed, args.reactive, args.case, out=agent_dir,
                       action_mode=args.action_mode, residual_scale=args.residual_scale, entries=entries,
                       absolute=absolute, n_envs=args.envs, budget_minutes=args.budget_minutes,
                       pretrain_timesteps=pretrain, pretrain_minutes=args.pretrain_minutes, held_out=held_out,
                       log_std_init=args.log_std_init, learning_rate=args.learning_rate, n_epochs=args.n_epochs,
                       gamma=args.gamma, n_steps=args.n_steps, batch_size=args.n_steps,
                       baseline_reward=not args.no_baseline_reward)
    print(f"trained in {(time.perf_counter() - t0) / 60:.1f} min on {len(days):,} days "
          f"({len(set(days) & held_out)} of them evaluation days); wrote {agent_dir}")
    table = evaluate(agent_dir, case=args.case, seed=args.eval_seed, days=args.eval_days, out=eval_dir,
                     bound=not args.no_bound)
    print(paired_report(table, agent_label(agent_dir)))


if __name__ == "__main__":
    main()
