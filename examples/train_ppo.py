"""Train a PPO agent on gridroll/D33-v0 and evaluate it through the rolling controller.

Needs the ``rl`` extra: ``pip install -e ".[rl]"`` (stable-baselines3, torch 2.13.0 CPU).

    python examples/train_ppo.py --timesteps 20000 --eval-days 3 --out runs/ppo

The agent acts on active power (EV stations, storage, curtailment); inside
training reactive control runs in the env (``ReactiveCompensationWrapper``):
``--reactive fast`` (default: the SOCP's objective on the AC sweep, docs/rl.md),
``socp`` (the loop's SOCP) or ``none``; evaluation runs the agent as a Policy (``SB3Policy``) in
the same ``RollingController`` as every other policy, on the same seeded days
as the heuristic, and prints both.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402
import pandas as pd  # noqa: E402

import env  # noqa: E402,F401  (registers the envs)
from controller.loop import LoopSettings, RollingController  # noqa: E402
from controller.wrappers import ReactiveCompensationWrapper  # noqa: E402
from policies import make_policy  # noqa: E402
from policies.sb3 import SB3Policy  # noqa: E402


def train(timesteps: int, seed: int, reactive: str, case: str = "d33"):  # noqa: ANN201 - an SB3 model
    """PPO with SB3's MultiInputPolicy on the Dict observation."""
    from stable_baselines3 import PPO

    train_env = gym.make("gridroll/TDGrid-v0", case=case, regime="cloudy")
    if reactive != "none":
        train_env = ReactiveCompensationWrapper(train_env, n_samples=10, n_scenarios=3, method=reactive)
    model = PPO("MultiInputPolicy", train_env, n_steps=512, batch_size=128, seed=seed, verbose=0, device="cpu")
    model.learn(total_timesteps=timesteps)
    return model


def evaluate(model, days: int, seed: int, case: str = "d33") -> pd.DataFrame:  # noqa: ANN001
    """Day summaries of the agent and the heuristic on the same seeded days."""
    rows = []
    for name in ("rl", "heuristic"):
        e = gym.make("gridroll/TDGrid-v0", case=case, regime="cloudy")
        policy = SB3Policy(model, e) if name == "rl" else make_policy(name, e.unwrapped.grid)
        controller = RollingController(e, policy, settings=LoopSettings(n_samples=10, n_scenarios=3))
        for day in range(days):
            result = controller.run_day(seed + day)
            rows.append({"policy": name, "day": day, "seed": seed + day, **result.summary})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=20_000)
    parser.add_argument("--eval-days", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reactive", choices=("fast", "socp", "none"), default="fast",
                        help="reactive control in the training env (evaluation: the loop's SOCP)")
    parser.add_argument("--out", default="runs/ppo")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = train(args.timesteps, args.seed, reactive=args.reactive)
    model.save(out / "ppo_d33")
    table = evaluate(model, args.eval_days, seed=1000 + args.seed)
    table.to_parquet(out / "eval.parquet", index=False)
    cols = ["total_cost", "ev_unmet_mwh", "voltage_violation_puh", "energy_imported_mwh"]
    print(table.groupby("policy")[cols].mean().to_string(float_format="{:,.3f}".format))
    print(f"wrote {out / 'ppo_d33.zip'} and {out / 'eval.parquet'}")


if __name__ == "__main__":
    main()
