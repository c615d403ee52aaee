"""PPO from Stable-Baselines3 trains on D33 (fast reactive control in the env) and runs through
the rolling controller (slow)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest


def _example():  # noqa: ANN202 - the example module
    path = Path(__file__).parents[2] / "examples" / "train_ppo.py"
    spec = importlib.util.spec_from_file_location("train_ppo", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_ppo"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_ppo_trains_a_few_thousand_steps_and_is_evaluated_like_any_policy() -> None:
    pytest.importorskip("stable_baselines3", reason="the rl extra is needed: pip install -e '.[rl]'")
    example = _example()
    model = example.train(timesteps=2048, seed=0, reactive="fast")
    table = example.evaluate(model, days=1, seed=7)
    assert set(table.policy) == {"rl", "heuristic"}
    assert np.isfinite(table.total_cost).all()
    rl = table[table.policy == "rl"].iloc[0]
    # the agent's dispatch went through the same physics: EV energy charged and costs are real
    assert rl.ev_charged_mwh > 0 and rl.energy_imported_mwh > 0
    again = example.evaluate(model, days=1, seed=7)  # deterministic agent, same day: same result
    assert again.total_cost.tolist() == table.total_cost.tolist()
