"""Dispatch policies behind one protocol (:class:`Policy`), and a registry by name."""

from __future__ import annotations

from typing import Any, Callable

from env.network import Grid
from policies.base import FeederIndex, Policy
from policies.heuristic import HeuristicPolicy
from policies.rollout import RolloutPolicy

def _named(policy: Any, name: str) -> Any:
    """Give a configured variant its registry name (results are keyed by ``policy.name``)."""
    policy.name = name
    return policy


_REGISTRY: dict[str, Callable[..., Policy]] = {
    "heuristic": HeuristicPolicy,
    "heuristic_no_exchange": lambda grid, **kw: HeuristicPolicy(grid, no_exchange=True, **kw),
    # seed 003's three cases: multi-simulation, single simulation, no power exchange
    "rollout": RolloutPolicy,
    "rollout_m1": lambda grid, **kw: _named(RolloutPolicy(grid, n_sims=1, **kw), "rollout_m1"),
    "rollout_no_exchange": lambda grid, **kw: RolloutPolicy(grid, no_exchange=True, **kw),
}


def policy_names() -> tuple[str, ...]:
    """Names :func:`make_policy` accepts."""
    return tuple(_REGISTRY)


def make_policy(name: str, grid: Grid, **kwargs: Any) -> Policy:
    """Build a registered policy for ``grid``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown policy {name!r}; known policies: {', '.join(_REGISTRY)}")
    return _REGISTRY[name](grid, **kwargs)


__all__ = ["FeederIndex", "HeuristicPolicy", "Policy", "RolloutPolicy", "make_policy", "policy_names"]
