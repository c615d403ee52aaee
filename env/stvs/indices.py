"""STVS indices from voltage trajectories (docs/stvs.md "Indices"): pure numpy.

TVCI (transient voltage collapse index): 1 stable, 0 unstable.
VDSI (voltage deviation severity index): the post-clearing time average, over the critical
buses, of the deviation D_i(t) = |U_i(t) - U0| / U0 where it reaches the threshold eps (else 0).
"""

from __future__ import annotations

import numpy as np

EPS_DEVIATION = 0.2      # seed 002 §2.1: 20 % threshold (industrial standard)
U0_PU = 1.0              # rated voltage
RECOVERY_WINDOW_S = 0.5  # TVCI looks at the last 0.5 s of the window (chosen)
EPS_BAND = 0.05          # the admissible band 0.95-1.05 p.u. (seed 002 §5.1) as VDSI's threshold (stress case)


def _check(t_s: np.ndarray, v_pu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t_s = np.asarray(t_s, dtype=float)
    v_pu = np.asarray(v_pu, dtype=float)
    if v_pu.ndim != 2 or v_pu.shape[0] != t_s.shape[0] or t_s.size < 2:
        raise ValueError(f"need t (n,) and v (n, n_bus) with n >= 2; got {t_s.shape} and {v_pu.shape}")
    if np.any(np.diff(t_s) < 0):
        raise ValueError("time stamps must be non-decreasing")
    return t_s, v_pu


def deviation(v_pu: np.ndarray, eps: float = EPS_DEVIATION, u0_pu: float = U0_PU) -> np.ndarray:
    """D_i,t = |U - U0| / U0 where it is >= eps, else 0."""
    d = np.abs(np.asarray(v_pu, dtype=float) - u0_pu) / u0_pu
    return np.where(d >= eps, d, 0.0)


def vdsi(t_s: np.ndarray, v_pu: np.ndarray, t_clear_s: float, t_end_s: float,
         eps: float = EPS_DEVIATION) -> float:
    """VDSI = (1 / (N_C (T - T_C))) * integral_{T_C}^{T} sum_i D_i(t) dt (trapezoid on the samples).

    A trajectory that stops before ``t_end_s`` (the simulation diverged: collapse) counts as
    U = 0 (D = 1) from its last sample to ``t_end_s``.
    """
    t_s, v_pu = _check(t_s, v_pu)
    if not t_end_s > t_clear_s:
        raise ValueError(f"t_end_s ({t_end_s}) must exceed t_clear_s ({t_clear_s})")
    keep = (t_s >= t_clear_s) & (t_s <= t_end_s)
    t, d = t_s[keep], deviation(v_pu[keep], eps)
    n_c = v_pu.shape[1]
    integral = float(np.trapezoid(d.sum(axis=1), t)) if t.size >= 2 else 0.0
    t_last = float(t[-1]) if t.size else t_clear_s
    integral += n_c * max(0.0, t_end_s - t_last)          # collapsed after the last sample
    return integral / (n_c * (t_end_s - t_clear_s))


def settled_voltage(t_s: np.ndarray, v_pu: np.ndarray, t_end_s: float,
                    window_s: float = RECOVERY_WINDOW_S) -> np.ndarray:
    """Each bus's mean voltage over the last ``window_s`` before ``t_end_s`` (the post-fault settled value)."""
    t_s, v_pu = _check(t_s, v_pu)
    return v_pu[t_s >= t_end_s - window_s].mean(axis=0)


def tvci(t_s: np.ndarray, v_pu: np.ndarray, t_end_s: float, reached_end: bool,
         eps: float = EPS_DEVIATION, window_s: float = RECOVERY_WINDOW_S) -> int:
    """1 if the run reached ``t_end_s`` and every critical bus's mean voltage over the last
    ``window_s`` is within ``eps`` of U0 (recovered), else 0 (collapse or sustained low voltage)."""
    t_s, v_pu = _check(t_s, v_pu)
    if not reached_end or t_s[-1] < t_end_s - 1e-9:
        return 0
    return int(np.all(np.abs(settled_voltage(t_s, v_pu, t_end_s, window_s) - U0_PU) < eps * U0_PU))
