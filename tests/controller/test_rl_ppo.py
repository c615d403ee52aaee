"""examples/train_ppo.py: PPO trains on D33 in the residual mode with the fast reactive
controller in the env, under VecNormalize, logs its progress, never plays an evaluation day,
and the saved folder runs as an ``sb3:`` policy in the rolling loop (issue 14, docs/rl.md)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("stable_baselines3", reason="the rl extra is needed: pip install -e '.[rl]'")

import gymnasium as gym  # noqa: E402

import env  # noqa: E402,F401  (registers the envs)
from controller.loop import LoopSettings, RollingController  # noqa: E402
from policies import make_policy  # noqa: E402
from policies.sb3 import SB3Policy, agent_label  # noqa: E402


def _example():  # noqa: ANN202 - the example module
    path = Path(__file__).parents[2] / "examples" / "train_ppo.py"
    spec = importlib.util.spec_from_file_location("train_ppo", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_ppo"] = module
    spec.loader.exec_module(module)
    return module


def test_training_days_never_include_a_held_out_day() -> None:
    example = _example()
    twin = gym.make("gridroll/D33-v0")
    twin.reset(seed=5)
    _, info = twin.reset()                       # the day a plain env draws after day 5
    drawn = info["scenario_seed"]
    e = example.TrainingDays(gym.make("gridroll/D33-v0"), held_out=frozenset({drawn}))
    e.reset(seed=5)
    _, info = e.reset()
    assert info["scenario_seed"] != drawn and e.unwrapped.scenario_seed == info["scenario_seed"]
    assert e.days_played == [5, info["scenario_seed"]]
    with pytest.raises(ValueError, match="held out"):
        e.reset(seed=drawn)


def test_train_logs_saves_a_normalised_residual_agent_that_runs_a_day_in_the_loop(tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(1)
    example = _example()
    lines: list[str] = []
    folder = tmp_path / "agent"
    model, venv, days = example.train(192, seed=8300, reactive="fast", out=folder, n_envs=1, n_steps=96,
                                      batch_size=96, log_every=96, held_out=frozenset({8301}), printer=lines.append)
    assert model.num_timesteps == 192
    assert days[:1] == [8300] and 8301 not in days and len(days) == 3    # two days played, a third begun
    progress = [line for line in lines if line.startswith("steps ")]
    assert len(progress) == 2 and "days      1" in progress[0] and "days      2" in progress[1]
    assert all("steps/s" in line and "elapsed" in line and "mean day return" in line for line in progress)
    last = re.search(r"mean day return \(last +(\d+)\) +(-?[\d,.]+)", progress[1])
    assert last is not None, progress[1]
    # the reward is measured against the heuristic's day (the defaults): a day's return is the
    # heuristic's cost minus the agent's, small next to a day's cost (~46,000 CNY)
    assert int(last[1]) == 2 and abs(float(last[2].replace(",", ""))) < 1e4
    assert any("the heuristic's day cost - the agent's" in line for line in lines)
    assert isinstance(venv.venv.envs[0].env, example.BaselineRewardWrapper)
    assert venv.obs_rms["voltage"].count >= 192                        # trained under VecNormalize

    policy = make_policy(f"sb3:{folder}", env.load_case("d33"))
    assert isinstance(policy, SB3Policy) and policy.name == agent_label(folder)
    assert policy.action_mode == "residual" and policy.normalizer is not None and not policy.normalizer.training
    assert policy.residual.entries == example.DEFAULT_ENTRIES and policy.residual.absolute == example.DEFAULT_ABSOLUTE
    assert model.action_space.shape == (1,)                            # the battery alone (the defaults)
    np.testing.assert_array_equal(policy.normalizer.obs_rms["voltage"].mean, venv.obs_rms["voltage"].mean)
    e = gym.make("gridroll/D33-v0")
    settings = LoopSettings(reactive_method="fast", n_samples=4, n_scenarios=2)
    day = RollingController(e, policy, settings=settings).run_day(8390)
    heuristic = RollingController(gym.make("gridroll/D33-v0"), make_policy("heuristic", e.unwrapped.grid),
                                  settings=settings).run_day(8390)
    assert day.steps.step.nunique() == 96 and np.isfinite(day.summary["total_cost"])
    # the heuristic but for the battery (idle at a = 0, the defaults' absolute storage entry): close to its day
    assert day.summary["total_cost"] != heuristic.summary["total_cost"]
    assert abs(day.summary["total_cost"] / heuristic.summary["total_cost"] - 1) < 0.02


def test_pretraining_without_reactive_control_hands_the_same_model_and_statistics_on(tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(1)
    example = _example()
    lines: list[str] = []
    model, venv, days = example.train(96, seed=8300, reactive="fast", n_envs=1, n_steps=96, batch_size=96,
                                      pretrain_timesteps=96, log_every=96, entries=("ev_p_mw", "storage_p_mw"),
                                      absolute=(), printer=lines.append)
    assert model.num_timesteps == 192 and model.env is venv and model.action_space.shape == (12,)
    progress = [line for line in lines if "elapsed" in line]
    assert len(progress) == 2 and progress[0].startswith("pretrain steps        96  days      1")
    assert progress[1].startswith("steps       192  days      1")          # the step count goes on
    assert any("phase 1 (pretrain): reactive none" in line for line in lines)
    assert any("phase 2 (fine-tune): reactive fast" in line for line in lines)
    assert venv.obs_rms["voltage"].count > 192          # the pretraining's statistics went on updating
    inner = venv.venv.envs[0]
    while not isinstance(inner, example.ReactiveCompensationWrapper):   # reactive control in the second phase
        inner = inner.env
    assert days[:2] == [8300, 8301] and len(days) == 4  # a day (and the next begun) per phase


@pytest.mark.slow
def test_the_worked_example_end_to_end_prints_the_paired_comparison(tmp_path: Path) -> None:
    example = _example()
    folder = tmp_path / "agent"
    example.train(2048, seed=8300, out=folder, n_envs=2, log_every=1024, held_out=frozenset({8390, 8391}))
    table = example.evaluate(folder, seed=8390, days=2, out=tmp_path / "cmp")
    label = agent_label(folder)
    assert set(table.policy) == {"heuristic", label, "perfect_information"}
    report = example.paired_report(table, label)
    assert report.startswith(f"{label} vs heuristic over 2 days") and "gap closed vs perfect_information" in report
