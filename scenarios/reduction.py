"""Scenario reduction by fast forward selection (Heitsch & Römisch 2003).

Distance between paths: Euclidean norm of the concatenated blocks (load, PV, wind,
TSO requirement, EV connected counts), each block divided by its overall standard
deviation over the set so that no unit dominates (a block that never varies is
ignored). Deterministic: ties go to the lowest index.
"""

from __future__ import annotations

import numpy as np

from scenarios.forecast import ScenarioSet

_BLOCKS: tuple[str, ...] = ("load_pu", "pv_pu", "wind_pu", "tso_requirement_mw", "ev_connected")


def path_features(scenario_set: ScenarioSet) -> np.ndarray:
    """(n, F) feature matrix of the blocks of :data:`_BLOCKS` (see :func:`block_features`)."""
    return block_features([np.asarray(getattr(scenario_set, name)) for name in _BLOCKS])


def pairwise_distances(features: np.ndarray) -> np.ndarray:
    """Euclidean distance matrix ``c(i, j) = ||x_i - x_j||_2``."""
    sq = np.sum(features**2, axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * features @ features.T
    d = np.sqrt(np.maximum(d2, 0.0))
    np.fill_diagonal(d, 0.0)
    return d


def fast_forward_selection(dist: np.ndarray, probabilities: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Select s of n paths and redistribute probabilities.

    Step 1: ``u = argmin_u sum_i p_i c(i, u)``. Step k: ``c_k(i, u) = min(c_{k-1}(i, u), c_{k-1}(i, u_{k-1}))``
    and ``u_k = argmin_{u not selected} sum_{i not selected, i != u} p_i c_k(i, u)``.
    Each dropped path gives its probability to its nearest selected path.

    Returns:
        (selected indices in selection order, their new probabilities).
    """
    n = dist.shape[0]
    p = np.asarray(probabilities, dtype=float)
    c = dist.copy()
    free = np.ones(n, dtype=bool)
    chosen: list[int] = []
    for _ in range(min(s, n)):
        if chosen:
            c = np.minimum(c, c[:, [chosen[-1]]])
        w = np.where(free, p, 0.0)
        score = w @ c                      # sum over free i of p_i c(i, u); c(u, u) = 0 drops i = u
        score[~free] = np.inf
        u = int(np.argmin(score))
        chosen.append(u)
        free[u] = False
    sel = np.array(chosen, dtype=int)
    nearest = sel[np.argmin(dist[:, sel], axis=1)]
    nearest[sel] = sel
    new_p = np.array([p[nearest == j].sum() for j in sel])
    return sel, new_p / new_p.sum()


def block_features(blocks: list[np.ndarray]) -> np.ndarray:
    """(n, F): each (n, ...) block flattened and divided by its pooled sd (RMS deviation from the
    block mean); blocks that never vary are left out."""
    parts = []
    for block in blocks:
        x = np.asarray(block, dtype=float).reshape(block.shape[0], -1)
        if x.shape[1] == 0:
            continue
        sd = np.sqrt(np.mean((x - x.mean(axis=0)) ** 2))
        if sd > 0:
            parts.append(x / sd)
    n = blocks[0].shape[0] if blocks else 0
    return np.concatenate(parts, axis=1) if parts else np.zeros((n, 0))


def reduce_features(features: np.ndarray, probabilities: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Fast forward selection of ``s`` rows of a feature matrix: (selected rows, new probabilities)."""
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
        raise ValueError(f"reduce: s must be a positive integer, got {s!r}")
    return fast_forward_selection(pairwise_distances(features), probabilities, int(s))


def reduce(scenario_set: ScenarioSet, s: int) -> ScenarioSet:
    """A set of ``s`` representative members of ``scenario_set`` with redistributed probabilities.

    Raises:
        ValueError: if s < 1.
    """
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
        raise ValueError(f"reduce: s must be a positive integer, got {s!r}")
    if s >= len(scenario_set):
        return scenario_set
    sel, prob = reduce_features(path_features(scenario_set), scenario_set.probabilities, int(s))
    return scenario_set.select(sel, prob)
