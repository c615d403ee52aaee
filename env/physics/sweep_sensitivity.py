"""First-order sensitivities of the sweep's fixed point (docs/math.md section 1).

Around a converged operating point of ``V = V0 - DLF conj(S / V)``
(:func:`env.physics.sweep.fixed_point`), how the bus voltage magnitudes and the head power
move with small real injection changes. The Rollout's lookahead uses it to price many
changed operating points without a sweep each (:mod:`policies.lookahead`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["fixed_point_sensitivities"]


def fixed_point_sensitivities(dlf: np.ndarray, v: np.ndarray, s: np.ndarray, m_loc: np.ndarray, slack: int,
                              v0: complex) -> tuple[np.ndarray, np.ndarray]:
    """Derivatives of ``|V|`` and the head power of the sweep's fixed point w.r.t. real injections.

    At ``V = V0 - DLF conj(S / V)`` (per unit, ``v``, ``s`` of shape (H, n_bus), ``S`` = net
    consumption), a consumption change ``dp = m_loc u`` gives
    ``dV = -DLF (dp / conj(V)) + DLF diag(conj(S) / conj(V)^2) conj(dV)``, a real linear system
    in ``(Re dV, Im dV)`` solved per row; then ``d|V_j| = Re(conj(V_j) dV_j) / |V_j|`` and
    ``dP_head = Re(V0 conj(sum_j dI_j))`` with ``dI = dp / conj(V) - conj(S) conj(dV) / conj(V)^2``.

    Returns:
        sv (H, n_u, n_bus): ``d|V_j| / du_i``; hf (H, n_u): ``dP_head / du_i`` (both per unit).
    """
    H, n = v.shape
    s = s.copy()
    s[:, slack] = 0.0
    cv = np.conj(v)
    d2 = np.conj(s) / (cv * cv)                                                  # (H, n)
    B = dlf[None] * d2[:, None, :]                                               # (H, n, n)
    K = np.block([[B.real, B.imag], [B.imag, -B.real]])                          # (H, 2n, 2n)
    A = np.eye(2 * n)[None] - K
    c = -np.einsum("jb,hb,bi->hji", dlf, 1.0 / cv, m_loc)                       # (H, n, n_u)
    x = np.linalg.solve(A, np.concatenate([c.real, c.imag], axis=1))           # (H, 2n, n_u)
    dv = x[:, :n] + 1j * x[:, n:]
    sv = ((v.real[:, :, None] * dv.real + v.imag[:, :, None] * dv.imag) / np.abs(v)[:, :, None])
    di = m_loc[None] / cv[:, :, None] - d2[:, :, None] * np.conj(dv)            # (H, n, n_u)
    di[:, slack] = 0.0
    hf = (v0 * np.conj(di.sum(axis=1))).real
    return np.swapaxes(sv, 1, 2), hf
