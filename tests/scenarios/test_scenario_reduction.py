"""Scenario reduction by fast forward selection."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenarios import Layout, ScenarioSet, reduce, sample_day
from scenarios.reduction import fast_forward_selection, pairwise_distances, path_features


@pytest.fixture(scope="module")
def big_set(td: Layout) -> ScenarioSet:
    return sample_day(td, "highly_fluctuating", 8).forecast(40).sample(60, np.random.default_rng(2))


def _row(ss: ScenarioSet, i: int) -> np.ndarray:
    return np.concatenate([getattr(ss, k)[i].ravel() for k in ("load_pu", "pv_pu", "wind_pu",
                                                                "tso_requirement_mw", "ev_connected")])


def test_reduce_keeps_members_and_probability(big_set: ScenarioSet) -> None:
    red = reduce(big_set, 7)
    assert len(red) == 7 and np.isclose(red.probabilities.sum(), 1.0) and np.all(red.probabilities > 0)
    originals = [_row(big_set, i) for i in range(len(big_set))]
    for j in range(7):
        matches = [i for i, row in enumerate(originals) if np.array_equal(row, _row(red, j))]
        assert matches, "reduced path is not a member of the set"
        i = matches[0]
        for k, v in red.ev_sessions[j].to_dict().items():
            assert np.array_equal(v, big_set.ev_sessions[i].to_dict()[k])
    again = reduce(big_set, 7)
    assert np.array_equal(again.load_pu, red.load_pu) and np.array_equal(again.probabilities, red.probabilities)
    assert reduce(big_set, 60) is big_set and reduce(big_set, 100) is big_set
    with pytest.raises(ValueError, match="positive integer"):
        reduce(big_set, 0)


def test_duplicates_collapse_with_multiplicities(big_set: ScenarioSet) -> None:
    idx = np.array([0, 1, 2, 0, 0, 1, 2, 2, 2, 0])
    dup = big_set.select(idx, np.full(10, 0.1))
    red = reduce(dup, 3)
    picked = sorted(int(np.flatnonzero([np.array_equal(_row(red, j), _row(big_set, i)) for i in range(3)])[0])
                    for j in range(3))
    assert picked == [0, 1, 2]
    probs = {int(np.flatnonzero([np.array_equal(_row(red, j), _row(big_set, i)) for i in range(3)])[0]): p
             for j, p in enumerate(red.probabilities)}
    np.testing.assert_allclose([probs[0], probs[1], probs[2]], [0.4, 0.2, 0.4])


def test_first_pick_minimizes_expected_distance(big_set: ScenarioSet) -> None:
    d = pairwise_distances(path_features(big_set))
    sel, prob = fast_forward_selection(d, big_set.probabilities, 1)
    assert sel[0] == int(np.argmin(big_set.probabilities @ d)) and prob[0] == pytest.approx(1.0)


def _transport_cost(d: np.ndarray, p: np.ndarray, sel: np.ndarray) -> float:
    """Kantorovich distance to a subset with optimal redistribution: sum_i p_i min_{j in sel} d(i, j)."""
    return float(p @ d[:, sel].min(axis=1))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(5, 30), s=st.integers(1, 5))
def test_forward_selection_beats_random_subsets(seed: int, n: int, s: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) * rng.uniform(0.1, 3, size=4)
    p = rng.dirichlet(np.ones(n))
    d = pairwise_distances(x)
    sel, prob = fast_forward_selection(d, p, s)
    assert len(set(sel.tolist())) == min(s, n) and np.isclose(prob.sum(), 1.0)
    ours = _transport_cost(d, p, sel)
    randoms = [_transport_cost(d, p, rng.choice(n, size=min(s, n), replace=False)) for _ in range(30)]
    assert ours <= np.mean(randoms) + 1e-12
    # redistributed probability: each member collects the mass of the paths closest to it
    nearest = sel[np.argmin(d[:, sel], axis=1)]
    nearest[sel] = sel
    np.testing.assert_allclose(prob, [p[nearest == j].sum() for j in sel])


def test_pairwise_distances_match_direct() -> None:
    x = np.random.default_rng(0).normal(size=(6, 3))
    direct = np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.testing.assert_allclose(pairwise_distances(x), direct, atol=1e-7)


def test_constant_blocks_are_ignored(big_set: ScenarioSet) -> None:
    flat = dataclasses.replace(big_set, ev_connected=np.zeros_like(big_set.ev_connected))
    assert path_features(flat).shape[1] == path_features(big_set).shape[1] - big_set.ev_connected[0].size
