"""Trained agents as policies: any object with ``predict(obs, deterministic=True)`` (a
Stable-Baselines3 model), with the observation normalisation it was trained under, runs
through the same rolling controller as every other policy (docs/rl.md).

* :class:`SB3Policy` wraps a predictor. It acts in the env the controller steps: the
  controller hands it that env (:meth:`SB3Policy.attach`), whose gym encoding of the
  observation the agent sees and whose step limits decode its action. With a ``normalizer``
  (SB3's ``VecNormalize``, or anything with ``normalize_obs``) the agent sees the
  observation normalised with the *training* statistics, frozen, as SB3 evaluates it.
* :func:`save_agent` writes an agent folder: ``model.zip`` (``model.save``), ``agent.json``
  (algorithm, action mode, and the residual mode's options when set: ``residual_entries``,
  ``residual_absolute``) and, when trained under ``VecNormalize``, ``vecnormalize.pkl``.
  :func:`load_agent` reads it back as an :class:`SB3Policy`; ``make_policy("sb3:FOLDER", grid)``
  and the CLI (``gridroll run --policy sb3:FOLDER``, ``gridroll compare --policies
  heuristic,sb3:FOLDER``) go through it. The policy's name, :func:`agent_label`, names the
  folder and a hash of its files, so a retrained agent is never mistaken for an earlier one
  in a resumed sweep.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from env.dispatch import Dispatch
from env.observation import Observation
from policies.residual import DEFAULT_RESIDUAL_SCALE, ResidualMode

__all__ = ["ACTION_MODES", "AGENT_PREFIX", "SB3Policy", "agent_label", "load_agent", "save_agent"]

ACTION_MODES: tuple[str, ...] = ("plain", "residual")
AGENT_PREFIX = "sb3:"
AGENT_FILE, MODEL_FILE, NORMALIZER_FILE = "agent.json", "model.zip", "vecnormalize.pkl"
_AGENT_KEYS = ("algorithm", "action_mode", "residual_scale", "normalized")
#: written only when set (an agent folder without them is a residual agent over the whole action)
_OPTIONAL_KEYS = ("residual_entries", "residual_absolute")
_SLUG = re.compile(r"[^A-Za-z0-9_.\-]+")


class Predictor(Protocol):
    def predict(self, observation: Any, deterministic: bool = True) -> tuple[Any, Any]: ...


class SB3Policy:
    """A trained agent as a :class:`~policies.base.Policy`.

    Args:
        model: an SB3 model (or anything with ``predict``).
        env: the ``TDGridEnv`` (or a wrapper) the controller steps; ``None`` until
            :meth:`attach` (the controller calls it).
        normalizer: the training ``VecNormalize`` (or anything with ``normalize_obs(obs)``);
            ``None`` = the agent sees the raw encoding.
        action_mode: ``"plain"`` (the action is the env's ``Box(-1, 1)`` action) or
            ``"residual"`` (a correction of the heuristic's dispatch, :mod:`policies.residual`).
        residual_scale: the residual mode's largest correction, in (0, 1].
        residual_entries, residual_absolute: the residual mode's options
            (:class:`policies.residual.ResidualMode`; off by default).
        deterministic: use the agent's deterministic action.
        name: the policy's name in results.

    Raises:
        ValueError: unknown action mode, bad residual options (or any in the plain mode), a model without ``predict`` or a normalizer
            without ``normalize_obs``.
    """

    def __init__(self, model: Predictor, env: Any = None, *, normalizer: Any = None, action_mode: str = "plain",
                 residual_scale: float = DEFAULT_RESIDUAL_SCALE, residual_entries: tuple[str, ...] | None = None,
                 residual_absolute: tuple[str, ...] = (), deterministic: bool = True, name: str = "rl") -> None:
        if not callable(getattr(model, "predict", None)):
            raise ValueError(f"SB3Policy: the model must have predict(obs, deterministic), got {type(model).__name__}")
        if normalizer is not None and not callable(getattr(normalizer, "normalize_obs", None)):
            raise ValueError(f"SB3Policy: the normalizer must have normalize_obs(obs), got {type(normalizer).__name__}")
        if action_mode not in ACTION_MODES:
            raise ValueError(f"SB3Policy: action_mode must be one of {list(ACTION_MODES)}, got {action_mode!r}")
        self.model, self.normalizer, self.action_mode = model, normalizer, action_mode
        self.residual = ResidualMode(residual_scale, residual_entries, residual_absolute)
        if action_mode == "plain" and not self.residual.is_default:
            raise ValueError("SB3Policy: residual_entries/residual_absolute need action_mode='residual'")
        self.residual_scale = self.residual.scale
        self.deterministic = bool(deterministic)
        self.name = name
        self.env: Any = None
        self.base_policy: Any = None
        if env is not None:
            self.attach(env)

    def attach(self, env: Any) -> None:
        """Act in ``env`` (called by :class:`controller.loop.RollingController`).

        Raises:
            ValueError: the env's observation or action space is not the one the model was
                trained on (another case, step length or observation setting).
        """
        base = env.unwrapped
        expected = {"observation_space": base.observation_space, "action_space": base.action_space}
        if self.action_mode == "residual":
            expected["action_space"] = self.residual.action_space(base.action_space, base.model.sizes)
        for kind, space in expected.items():
            trained = getattr(self.model, kind, None)
            if trained is not None and trained != space:
                raise ValueError(f"SB3Policy {self.name!r}: the agent was trained on another {kind.split('_')[0]} "
                                 f"space than this env's ({base.case}, dt {base.dt_minutes} min): "
                                 f"trained {trained}, env {space}")
        self.env = base
        if self.action_mode == "residual":
            from policies.heuristic import HeuristicPolicy

            self.base_policy = HeuristicPolicy(base.grid)

    def reset(self, seed: int | None = None) -> None:
        """Stateless (a recurrent agent would reset its state here)."""
        if self.base_policy is not None:
            self.base_policy.reset(seed)

    def agent_observation(self, obs: Observation) -> dict[str, np.ndarray]:
        """What the agent sees: the gym encoding of ``obs``, normalised if trained so."""
        if self.env is None:
            raise RuntimeError(f"SB3Policy {self.name!r}: not attached to an env (the controller attaches it; "
                               "or pass env=...)")
        encoded = self.env.encode_observation(obs)
        return self.normalizer.normalize_obs(encoded) if self.normalizer is not None else encoded

    def act(self, obs: Observation, forecast: Any = None) -> Dispatch:
        """Predict on :meth:`agent_observation` and decode with this step's limits (plain), or
        correct the heuristic's dispatch (residual)."""
        action, _ = self.model.predict(self.agent_observation(obs), deterministic=self.deterministic)
        action = np.asarray(action, dtype=np.float64)
        limits = self.env.limits
        if self.action_mode == "residual":
            return self.residual.dispatch(self.base_policy.act(obs, forecast), action, limits)
        return Dispatch.from_array(action, limits)


# --------------------------------------------------------------------------- agent folders


def save_agent(folder: Path | str, model: Any, vec_normalize: Any = None, *, action_mode: str = "plain",
               residual_scale: float = DEFAULT_RESIDUAL_SCALE, residual_entries: tuple[str, ...] | None = None,
               residual_absolute: tuple[str, ...] = ()) -> Path:
    """Write an agent folder (``model.zip``, ``agent.json``, ``vecnormalize.pkl`` when given).

    Args:
        folder: created if needed.
        model: an SB3 model (saved with ``model.save``); its class must be importable from
            ``stable_baselines3`` by name (PPO, A2C, SAC, TD3, DDPG, DQN).
        vec_normalize: the ``VecNormalize`` the model was trained under, or ``None``.
        action_mode, residual_scale, residual_entries, residual_absolute: the mode the agent was
            trained in (the options are written to ``agent.json`` only when set).

    Returns:
        The folder.
    """
    if action_mode not in ACTION_MODES:
        raise ValueError(f"save_agent: action_mode must be one of {list(ACTION_MODES)}, got {action_mode!r}")
    mode = ResidualMode(residual_scale, residual_entries, residual_absolute)
    if action_mode == "plain" and not mode.is_default:
        raise ValueError("save_agent: residual_entries/residual_absolute need action_mode='residual'")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / MODEL_FILE)
    if vec_normalize is not None:
        vec_normalize.save(str(folder / NORMALIZER_FILE))
    else:
        (folder / NORMALIZER_FILE).unlink(missing_ok=True)
    meta = {"algorithm": type(model).__name__, "action_mode": action_mode,
            "residual_scale": mode.scale, "normalized": vec_normalize is not None}
    if mode.entries is not None:
        meta["residual_entries"] = list(mode.entries)
    if mode.absolute:
        meta["residual_absolute"] = list(mode.absolute)
    (folder / AGENT_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return folder


def _read_meta(folder: Path) -> dict[str, Any]:
    path = folder / AGENT_FILE
    if not folder.is_dir() or not path.is_file():
        raise ValueError(f"agent folder {folder} has no {AGENT_FILE} (write it with policies.sb3.save_agent)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or not set(_AGENT_KEYS) <= set(meta) <= {*_AGENT_KEYS, *_OPTIONAL_KEYS}:
        raise ValueError(f"{path}: expected the keys {list(_AGENT_KEYS)} (and optionally "
                         f"{list(_OPTIONAL_KEYS)}), got {meta!r}")
    if meta["normalized"] != (folder / NORMALIZER_FILE).is_file():
        raise ValueError(f"{path} says normalized={meta['normalized']} but {NORMALIZER_FILE} is "
                         f"{'absent' if meta['normalized'] else 'present'} in {folder}")
    return meta


def agent_label(folder: Path | str) -> str:
    """The policy name of an agent folder: ``sb3-<folder name>-<8 hex of its files' SHA-256>``.

    Raises:
        ValueError: not an agent folder.
    """
    folder = Path(folder)
    meta = _read_meta(folder)
    digest = hashlib.sha256()
    for name in (AGENT_FILE, MODEL_FILE, *((NORMALIZER_FILE,) if meta["normalized"] else ())):
        path = folder / name
        if not path.is_file():
            raise ValueError(f"agent folder {folder}: {name} is missing")
        digest.update(path.read_bytes())
    slug = _SLUG.sub("_", folder.resolve().name).strip("_") or "agent"
    return f"sb3-{slug}-{digest.hexdigest()[:8]}"


def load_agent(folder: Path | str, env: Any = None) -> SB3Policy:
    """The agent of a folder written by :func:`save_agent`, as an :class:`SB3Policy` named
    :func:`agent_label` (needs ``stable-baselines3``: the ``rl`` extra).

    Raises:
        ValueError: not an agent folder, inconsistent files, an unknown algorithm, or
            stable-baselines3 missing.
    """
    folder = Path(folder)
    meta = _read_meta(folder)
    label = agent_label(folder)
    try:
        import stable_baselines3
    except ImportError as exc:
        raise ValueError("an sb3: policy needs stable-baselines3: pip install -e '.[rl]'") from exc
    algorithm = getattr(stable_baselines3, str(meta["algorithm"]), None)
    if not isinstance(algorithm, type) or not hasattr(algorithm, "load"):
        raise ValueError(f"{folder / AGENT_FILE}: algorithm {meta['algorithm']!r} is not a stable_baselines3 class")
    model = algorithm.load(folder / MODEL_FILE, device="cpu")
    normalizer = None
    if meta["normalized"]:
        with open(folder / NORMALIZER_FILE, "rb") as fh:   # what VecNormalize.load reads, without a venv
            normalizer = pickle.load(fh)  # noqa: S301 - the user's own agent file
        normalizer.training = False
    return SB3Policy(model, env, normalizer=normalizer, action_mode=meta["action_mode"],
                     residual_scale=meta["residual_scale"], residual_entries=meta.get("residual_entries"),
                     residual_absolute=meta.get("residual_absolute", ()), name=label)
