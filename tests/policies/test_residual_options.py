"""The residual mode's options (issue 14 item 5, docs/rl.md): ``entries`` narrows the agent's
action to some groups and leaves the others at the base policy's dispatch; ``absolute`` groups
are set outright on their full range (a = +-1 the range's ends); both survive an agent folder."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import env  # noqa: F401  (registers the envs)
from policies import make_policy
from policies.residual import ResidualActionWrapper, ResidualMode
from policies.sb3 import SB3Policy


def _stepped_env(steps: int = 30) -> gym.Env:
    e = gym.make("gridroll/D33-v0").unwrapped
    e.reset(seed=2)
    for _ in range(steps):
        e.step(e.neutral_action())
    return e


class _Recorder(gym.Wrapper):
    """Keeps the dispatches the outer wrapper hands down."""

    def __init__(self, inner: gym.Env) -> None:
        super().__init__(inner)
        self.played: list[np.ndarray] = []

    def step(self, action):  # noqa: ANN001, ANN201 - a gym wrapper
        self.played.append(action.to_flat())
        return self.env.step(action)


def test_entries_shrink_the_action_and_leave_the_other_entries_at_the_base_dispatch() -> None:
    e = gym.make("gridroll/D33-v0")
    sizes = e.unwrapped.model.sizes
    assert sizes.n_evcs == 11 and sizes.n_storage == 1 and e.action_space.shape == (18,)
    assert ResidualActionWrapper(e).action_space is e.action_space                 # no options: unchanged
    assert ResidualActionWrapper(e, entries=("storage_p_mw",)).action_space.shape == (1,)
    both = ResidualActionWrapper(e, entries=("storage_p_mw", "ev_p_mw"))
    assert both.action_space.shape == (12,) and both.mode.entries == ("ev_p_mw", "storage_p_mw")  # layout order

    u = _stepped_env()
    obs, limits = u.observation_typed, u.limits
    base = make_policy("heuristic", u.grid).act(obs, obs.forecast).to_flat()
    codec = limits.sizes.codec
    ev, st = codec.field_slice("ev_p_mw"), codec.field_slice("storage_p_mw")
    rng = np.random.default_rng(3)
    for mode in (ResidualMode(0.5, ("storage_p_mw",)), ResidualMode(1.0, ("ev_p_mw", "storage_p_mw"))):
        n = mode.agent_index(limits.sizes).size
        a = rng.uniform(-1, 1, n)
        played = mode.dispatch(make_policy("heuristic", u.grid).act(obs, obs.forecast), a, limits).to_flat()
        untouched = np.ones(limits.sizes.n_action, dtype=bool)
        untouched[mode.agent_index(limits.sizes)] = False
        np.testing.assert_array_equal(played[untouched], base[untouched])
        np.testing.assert_allclose(played[st], base[st] + mode.scale * a[-1] * limits.half_span[st], rtol=1e-12)
        if n == 12:
            np.testing.assert_allclose(played[ev], base[ev] + a[:11] * limits.half_span[ev], rtol=1e-12)
    # a zero action without absolute groups is the base dispatch itself
    b = make_policy("heuristic", u.grid).act(obs, obs.forecast)
    assert ResidualMode(0.5, ("storage_p_mw",)).dispatch(b, np.zeros(1), limits) is b


def test_absolute_groups_span_the_range_and_zero_is_its_midpoint() -> None:
    u = _stepped_env()
    obs, limits = u.observation_typed, u.limits
    st = limits.sizes.codec.field_slice("storage_p_mw")
    lo, hi = limits.bounds("storage_p_mw")
    assert hi[0] > 0 and lo[0] == -hi[0]                                  # -p_max .. +p_max, + = charging
    base = make_policy("heuristic", u.grid).act(obs, obs.forecast)
    mode = ResidualMode(0.5, ("storage_p_mw",), ("storage_p_mw",))
    for a, want in ((1.0, hi), (-1.0, lo), (3.0, hi), (0.0, np.zeros(1))):   # |a| > 1 clipped; 0 = idle
        played = mode.dispatch(base, np.array([a]), limits)
        np.testing.assert_allclose(played.storage_p_mw, want, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(np.delete(played.to_flat(), st), np.delete(base.to_flat(), st))
    # absolute = the plain mode's decoding of the same entry
    a = np.zeros(limits.sizes.n_action)
    a[st] = 0.3
    np.testing.assert_allclose(mode.dispatch(base, np.array([0.3]), limits).storage_p_mw,
                               limits.decode(a)[st], rtol=0, atol=0)


def test_bad_options_raise() -> None:
    for kwargs, match in (({"entries": ("battery",)}, "unknown action group"),
                          ({"entries": ()}, "at least one"),
                          ({"entries": ("ev_p_mw", "ev_p_mw")}, "twice"),
                          ({"entries": ("ev_p_mw",), "absolute": ("storage_p_mw",)}, "not among"),
                          ({"absolute": ("nope",)}, "unknown action group"),
                          ({"entries": 3}, "sequence"),
                          ({"scale": 2.0}, "residual_scale")):
        with pytest.raises(ValueError, match=match):
            ResidualMode(**kwargs)
    with pytest.raises(ValueError, match="no action entry"):           # d33 has no thermal unit
        ResidualActionWrapper(gym.make("gridroll/D33-v0"), entries=("thermal_p_mw",))
    with pytest.raises(ValueError, match="action_mode='residual'"):
        SB3Policy(_Zero(1), action_mode="plain", residual_entries=("storage_p_mw",))
    u = _stepped_env(1)
    base = make_policy("heuristic", u.grid).act(u.observation_typed, None)
    with pytest.raises(ValueError, match="shape"):
        ResidualMode(0.5, ("storage_p_mw",)).dispatch(base, np.zeros(18), u.limits)


class _Zero:
    def __init__(self, n: int) -> None:
        self.n = n

    def predict(self, observation: dict, deterministic: bool = True) -> tuple[np.ndarray, None]:
        return np.zeros(self.n), None


def test_a_saved_agent_with_options_plays_the_training_wrappers_dispatch(tmp_path: Path) -> None:
    sb3 = pytest.importorskip("stable_baselines3", reason="the rl extra is needed: pip install -e '.[rl]'")
    import torch
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from policies.sb3 import load_agent, save_agent

    torch.set_num_threads(1)
    options = {"entries": ("storage_p_mw", "ev_p_mw"), "absolute": ("storage_p_mw",)}
    venv = VecNormalize(DummyVecEnv([lambda: ResidualActionWrapper(gym.make("gridroll/D33-v0"), **options)]))
    model = sb3.PPO("MultiInputPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu",
                    policy_kwargs={"net_arch": [8]})
    model.learn(32)
    folder = save_agent(tmp_path / "agent", model, venv, action_mode="residual", residual_scale=0.5,
                        residual_entries=options["entries"], residual_absolute=options["absolute"])
    meta = json.loads((folder / "agent.json").read_text())
    assert meta["residual_entries"] == ["ev_p_mw", "storage_p_mw"] and meta["residual_absolute"] == ["storage_p_mw"]
    policy = load_agent(folder)
    assert policy.residual == ResidualMode(0.5, ("ev_p_mw", "storage_p_mw"), ("storage_p_mw",))

    # the training stack, stepped by the model on normalised observations (frozen statistics) ...
    venv.training = False
    recorder = _Recorder(gym.make("gridroll/D33-v0"))
    train_env = ResidualActionWrapper(recorder, **options)
    obs, _ = train_env.reset(seed=7)
    # ... and the loaded agent acting in a plain env on the same day
    plain = gym.make("gridroll/D33-v0")
    plain.reset(seed=7)
    policy.attach(plain)
    policy.reset(7)
    for _ in range(5):
        action, _ = model.predict(venv.normalize_obs(obs), deterministic=True)
        obs, *_ = train_env.step(action)
        u = plain.unwrapped
        dispatch = policy.act(u.observation_typed, u.observation_typed.forecast)
        np.testing.assert_array_equal(dispatch.to_flat(), recorder.played[-1])
        plain.step(dispatch)
    assert np.ptp(np.array(recorder.played)[:, 11]) > 0                          # the battery moved
    with pytest.raises(ValueError, match="another action space"):             # the options are checked
        SB3Policy(model, gym.make("gridroll/D33-v0"), action_mode="residual")
