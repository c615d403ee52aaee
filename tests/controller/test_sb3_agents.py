"""Stable-Baselines3 through its standard routes, and trained agents in ``run`` / ``compare``
(issue 14, docs/rl.md). Needs the ``rl`` extra (stable-baselines3, torch)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sb3 = pytest.importorskip("stable_baselines3", reason="the rl extra is needed: pip install -e '.[rl]'")

import gymnasium as gym  # noqa: E402
from stable_baselines3.common.env_checker import check_env  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import SubprocVecEnv, VecNormalize  # noqa: E402

import env  # noqa: E402,F401  (registers the envs)
from controller.cli import main  # noqa: E402
from policies import make_policy  # noqa: E402
from policies.sb3 import SB3Policy, agent_label, load_agent, save_agent  # noqa: E402


def test_sb3_check_env_passes_on_every_case_id() -> None:
    for env_id in ("gridroll/D33-v0", "gridroll/T30D2-v0"):
        with warnings.catch_warnings():
            # SB3 only recommends flat vectors for the 2-D 'ev' and 'forecast' entries (its
            # MultiInputPolicy flattens them); anything else it says is an error here
            warnings.simplefilter("error")
            warnings.filterwarnings("ignore", message="Your observation (ev|forecast) has an unconventional shape")
            check_env(gym.make(env_id).unwrapped)


def test_make_vec_env_spawned_subprocesses_and_vecnormalize_step_a_d33_day() -> None:
    venv = VecNormalize(make_vec_env("env:gridroll/D33-v0", n_envs=2, seed=11, vec_env_cls=SubprocVecEnv,
                                     vec_env_kwargs={"start_method": "spawn"}), gamma=0.99)
    try:
        assert venv.get_attr("render_mode") == ["rgb_array", "rgb_array"]   # make_vec_env's default
        assert venv.get_attr("scenario_seed") == [None, None]
        obs = venv.reset()
        assert venv.get_attr("scenario_seed") == [11, 12]                    # reset(seed=s) plays day s
        assert obs["voltage"].shape == (2, 33)
        rng = np.random.default_rng(0)
        dones = []
        for _ in range(96):
            obs, reward, done, info = venv.step(rng.uniform(-1, 1, (2, venv.action_space.shape[0])))
            assert np.isfinite(reward).all() and all(np.isfinite(v).all() for v in obs.values())
            dones.append(done)
        assert np.array(dones)[:-1].sum() == 0 and np.array(dones)[-1].all()   # one day each, then autoreset
        assert all("terminal_observation" in i for i in info)
        assert venv.obs_rms["voltage"].count > 96                              # statistics were gathered
    finally:
        venv.close()


@pytest.fixture(scope="module")
def agent_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PPO agent trained 64 steps on D33 under VecNormalize, saved as an agent folder."""
    import torch

    torch.set_num_threads(1)
    venv = VecNormalize(make_vec_env("gridroll/D33-v0", n_envs=1, seed=0))
    model = sb3.PPO("MultiInputPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(64)
    return save_agent(tmp_path_factory.mktemp("agent") / "ppo_d33", model, venv)


def test_agent_folder_round_trip_and_its_checks(agent_folder: Path, tmp_path: Path) -> None:
    meta = json.loads((agent_folder / "agent.json").read_text())
    assert meta == {"algorithm": "PPO", "action_mode": "plain", "residual_scale": 0.5, "normalized": True}
    policy = make_policy(f"sb3:{agent_folder}", env.load_case("d33"))
    assert isinstance(policy, SB3Policy) and policy.name == agent_label(agent_folder)
    assert policy.name.startswith("sb3-ppo_d33-") and policy.normalizer.training is False
    with pytest.raises(ValueError, match="another observation space.*d69"):
        policy.attach(gym.make("gridroll/D69-v0"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "agent.json").write_text((agent_folder / "agent.json").read_text())
    with pytest.raises(ValueError, match="normalized=True but vecnormalize.pkl is absent"):
        load_agent(broken)
    with pytest.raises(ValueError, match="has no agent.json"):
        make_policy(f"sb3:{tmp_path / 'nowhere'}", env.load_case("d33"))


def test_saved_agent_runs_in_compare_on_normalised_observations(agent_folder: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    seen: list[dict] = []
    predict = sb3.PPO.predict

    def spy(self, observation, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(observation)
        return predict(self, observation, *args, **kwargs)

    monkeypatch.setattr(sb3.PPO, "predict", spy)
    out = tmp_path / "cmp"
    code = main(["compare", "--case", "d33", "--policies", f"heuristic,sb3:{agent_folder}", "--regimes", "cloudy",
                 "--days", "2", "--seed", "3", "--no-reactive", "--no-plots", "--no-progress", "--out", str(out)])
    assert code == 0
    label = agent_label(agent_folder)
    assert label in capsys.readouterr().out
    summary = pd.read_parquet(out / "summary.parquet")
    assert sorted(set(summary.policy)) == sorted({"heuristic", label})
    for policy in ("heuristic", label):      # common random numbers: the same seeded days
        assert summary[summary.policy == policy].seed.tolist() == [3, 4]
    assert np.isfinite(summary.total_cost).all()
    assert len(seen) == 2 * 96
    # what the agent saw is the env's encoding normalised with the training statistics
    e = gym.make("gridroll/D33-v0").unwrapped
    raw, _ = e.reset(seed=3)
    normalizer = load_agent(agent_folder).normalizer
    expected = normalizer.normalize_obs(raw)
    for key in raw:
        np.testing.assert_allclose(seen[0][key], expected[key], rtol=1e-6)
    assert any(not np.allclose(seen[0][k], raw[k]) for k in raw)
    # and the agent acted: its day differs from the heuristic's
    costs = summary.set_index(["policy", "day"]).total_cost
    assert costs[label].tolist() != costs["heuristic"].tolist()


def test_run_takes_an_agent(agent_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["run", "--case", "d33", "--policy", f"sb3:{agent_folder}", "--no-reactive", "--no-plots",
                 "--seed", "3", "--out", str(out)]) == 0
    summary = pd.read_parquet(out / "summary.parquet")
    assert summary.policy.tolist() == [agent_label(agent_folder)] and summary.seed.tolist() == [3]
