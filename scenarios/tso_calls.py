"""The TSO's real-time requirement deviation: a Markov on/off "call" signal inside a budget.

A call (magnitude U(0.4, 1), random sign) starts with probability ``p_start`` per step when
idle and ends with ``p_end``; the realized normalized deviation ``delta`` (in [-1, 1]) keeps
``sum_k |delta_k| <= Gamma``, the boundary's budget (docs/design.md "Uncertainty").
The day sampler draws one path per day (``scenarios.day``), the intraday forecast many
(``scenarios.forecast``). Split into the draws and the recursion so that many days, each with
its own generator, run one recursion on a leading axis.
"""

from __future__ import annotations

import numpy as np

from scenarios.regimes import RegimeParams

__all__ = ["TSO_CALL_MAGNITUDE", "tso_call_draws", "tso_call_paths", "tso_call_probabilities", "tso_call_recursion"]

TSO_CALL_MAGNITUDE: tuple[float, float] = (0.4, 1.0)  # |delta| of a TSO call, uniform (our choice)


def tso_call_probabilities(params: RegimeParams, dt_minutes: int) -> tuple[float, float]:
    """Per-step probabilities (start a call when idle, end an active call):
    ``p_start = calls_per_day dt / 24 h``, ``p_end = 1 - exp(-dt / call_h)``."""
    dt_h = dt_minutes / 60.0
    return min(1.0, params.tso_calls_per_day * dt_h / 24.0), 1.0 - float(np.exp(-dt_h / params.tso_call_h))


def tso_call_paths(rng: np.random.Generator, n_paths: int, n_steps_: int, delta0: np.ndarray,
                   budget_left: np.ndarray, p_start: float, p_end: float) -> np.ndarray:
    """Normalized requirement deviation ``delta`` (n_paths, n_steps, n_boundary) in [-1, 1].

    A call (magnitude U(0.4, 1), random sign) starts with p_start when idle and ends with
    p_end; the realized ``|delta_k| <= min(1, Gamma - sum_{j<k} |delta_j|)`` keeps the
    path inside the budget set. ``delta0`` is the value at the last observed step.
    """
    u, mag = tso_call_draws(rng, (n_paths, n_steps_, np.asarray(delta0).shape[0]))
    return tso_call_recursion(u, mag, delta0, budget_left, p_start, p_end)


def tso_call_draws(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The draws of :func:`tso_call_paths`, shape ``(n_paths, n_steps, n_boundary)``: uniforms
    ``u`` (call start / end) and signed magnitudes ``U(0.4, 1) x (+-1)``."""
    u = rng.random(shape)
    mag = rng.uniform(*TSO_CALL_MAGNITUDE, size=shape) * np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    return u, mag


def tso_call_recursion(u: np.ndarray, mag: np.ndarray, delta0: np.ndarray, budget_left: np.ndarray,
                       p_start: float, p_end: float) -> np.ndarray:
    """:func:`tso_call_paths` from its draws (``u``, ``mag``: ``(n_paths, n_steps, n_boundary)``;
    ``delta0``, ``budget_left``: ``(n_boundary,)`` or one row per path)."""
    n_paths, n_steps_, nb = u.shape
    state = np.broadcast_to(np.asarray(delta0, dtype=float), (n_paths, nb)).copy()
    left = np.broadcast_to(np.asarray(budget_left, dtype=float), (n_paths, nb)).copy()
    if u.size == 0:
        return np.zeros(u.shape)
    if n_paths * nb <= _FEW_PATHS:
        return _tso_call_paths_few(u, mag, state, left, p_start, p_end)
    out = np.zeros(u.shape)
    for k in range(n_steps_):
        active = state != 0
        state = np.where(active, np.where(u[:, k] < p_end, 0.0, state), np.where(u[:, k] < p_start, mag[:, k], 0.0))
        cap = np.clip(left, 0.0, 1.0)
        out[:, k] = np.clip(state, -cap, cap)
        left = left - np.abs(out[:, k])
    return out


_FEW_PATHS = 16   # up to this many (path, boundary) series the recursion runs on Python floats


def _tso_call_paths_few(u: np.ndarray, mag: np.ndarray, state: np.ndarray, left: np.ndarray,
                        p_start: float, p_end: float) -> np.ndarray:
    """:func:`tso_call_paths`'s recursion series by series on Python floats (a sampled day
    has one path: ~50x fewer calls than the array loop; the same draws and the same
    arithmetic, ``clip(x, lo, hi) = min(max(x, lo), hi)``)."""
    n_paths, n_steps_, nb = u.shape
    out = np.zeros(u.shape)
    us, ms = u.tolist(), mag.tolist()
    for p in range(n_paths):
        for b in range(nb):
            s, rest = float(state[p, b]), float(left[p, b])
            col = []
            for k in range(n_steps_):
                uk = us[p][k][b]
                if s != 0:
                    s = 0.0 if uk < p_end else s
                else:
                    s = ms[p][k][b] if uk < p_start else 0.0
                cap = min(max(rest, 0.0), 1.0)
                o = min(max(s, -cap), cap) + 0.0     # + 0.0: a zero is +0.0, as numpy's clip gives
                col.append(o)
                rest = rest - abs(o)
            out[p, :, b] = col
    return out
