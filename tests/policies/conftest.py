"""Shared fixtures of the policy tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from env.dispatch import Dispatch


def _play_checked(base: Any, policy: Any, n_steps: int) -> list[np.ndarray]:
    """Step ``base`` (a reset TDGridEnv) ``n_steps`` times with ``policy``, checking each action's
    type, sizes and finiteness and each step's cost; returns the flat actions."""
    actions = []
    for _ in range(n_steps):
        obs = base.observation_typed
        d = policy.act(obs, obs.forecast)
        assert isinstance(d, Dispatch)
        d.check_sizes(base.model.sizes)
        assert all(np.isfinite(getattr(d, f)).all() for f, _ in base.dispatch_layout())
        base.step_dispatch(d)
        assert np.isfinite(base.last_outcome.cost["total"])
        actions.append(d.to_flat())
    return actions


@pytest.fixture
def play_checked() -> Callable[[Any, Any, int], list[np.ndarray]]:
    """:func:`_play_checked`: play a policy on an env step by step under the contract's checks."""
    return _play_checked
