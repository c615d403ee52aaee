"""Q-factors of one step's candidate actions on common random numbers (docs/math.md section 7).

:class:`Lookahead` prices candidates of the step at one state on one set of sampled paths:
``Q(u)[m]`` is row 0 played with ``u`` plus the base rule on the rest of path ``m``, by
:class:`policies.surrogate.DaySurrogate`. The current choice's trajectory is the reference:
a candidate re-solves only the feeder points whose controls differ from it (sweeps
warm-started at its voltages, :func:`env.physics.sweep.fixed_point`; beyond ``max_columns``
points per feeder, the first-order expansion
:func:`env.physics.sweep_sensitivity.fixed_point_sensitivities`), reuses its rows where the
inputs match (:meth:`DaySurrogate.trajectory`), and candidates leaving the same state after
row 0 share its rows 1.. outright.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from env.physics.sweep import fixed_point, slack_power_pu
from env.physics.sweep_sensitivity import fixed_point_sensitivities
from policies.day_inputs import ActionBatch, DayPaths, SurrogateState, same_state
from policies.ev_knowledge import EVSplit
from policies.surrogate import DaySurrogate, FeederRows, Trajectory, take_rows

__all__ = ["Lookahead"]


@dataclass
class _Reference:
    """The trajectory candidates are priced against (initially the reference action's; after a
    :meth:`Lookahead.commit`, the committed action's), with its feeder operating points."""

    ctrl: np.ndarray            # (H, 1, M, n_ctrl)
    head: np.ndarray            # (H, 1, M, F)
    viol: np.ndarray            # (H, 1, M)
    feeders: list[dict[str, Any]]
    row0_shared: bool           # row 0 (the nowcast) identical on every path
    key: np.ndarray             # state after row 0
    rows: np.ndarray            # (H, M) total cost per row
    traj: Trajectory            # its dispatch trajectory (rows reused by candidates, see DaySurrogate.trajectory)


class Lookahead:
    """Q-factors of first-step actions at one state, on one set of paths (common random numbers).

    ``Q(u)[m] = cost of row 0 with u + cost of the base rule on rows 1.. of path m``. The
    reference action is simulated with AC sweeps on every row and path; other candidates re-solve
    only the (row, path) points where their controls differ from the current reference (warm-started
    sweeps), and candidates whose state after row 0 equals the reference's (e.g. a curtailment
    change) share its rows 1.. . :meth:`commit` moves the reference to a chosen candidate.

    Args:
        max_columns: per feeder and evaluation, at most this many operating points are re-solved
            by sweeps; beyond, the first-order expansion of the module docstring is used.
    """

    def __init__(self, sur: DaySurrogate, state: SurrogateState, paths: DayPaths, reference: ActionBatch,
                 max_columns: int = 4096) -> None:
        if len(reference) != 1:
            raise ValueError("Lookahead: the reference must be one action")
        self.sur, self.state, self.paths, self.max_columns = sur, state, paths, int(max_columns)
        H = paths.horizon
        self._split = EVSplit(state.ev, state.step, paths.dt_h, sur.n_station)     # shared by every evaluation
        tr = sur.trajectory(state, paths, reference, row0=sur.first_row(state, paths, reference, self._split))
        ph, feeders = sur.feeder_physics(paths, tr, H)
        shared = bool(np.ptp(paths.load_p_mw[0], axis=0).max(initial=0.0) == 0.0
                      and np.ptp(paths.der_avail_mw[0], axis=0).max(initial=0.0) == 0.0
                      and np.ptp(paths.load_q_mvar[0], axis=0).max(initial=0.0) == 0.0)
        self._bviol = sur.unserved_boundary_mwh(paths, H) if sur.is_td else None
        rows = sur.costs(paths, tr, ph, H, self._bviol)["total"][:, 0]
        self._ref = _Reference(sur.controls(tr).copy(), ph.head_mw.copy(), ph.v_viol_pu.copy(), feeders, shared,
                               tr.next_key[0].copy(), rows, tr)
        self.reference_cost = rows.sum(axis=0)                                               # (M,)
        self.current_cost = self.reference_cost.copy()

    def evaluate(self, actions: ActionBatch) -> np.ndarray:
        """Q (C, M) of ``actions`` on every path."""
        sur, paths, ref = self.sur, self.paths, self._ref
        H = paths.horizon
        out = np.empty((len(actions), paths.n_paths))
        self._last: list[tuple[Any, ...]] = []
        tr1 = sur.first_row(self.state, paths, actions, self._split)
        same = same_state(tr1.next_key, ref.key)
        for sel, rows in ((same, 1), (~same, H)):
            if not sel.any():
                continue
            idx = np.flatnonzero(sel)
            tr = take_rows(tr1, idx)
            if rows > 1:
                tr = sur.trajectory(self.state, paths, actions.take(idx), ref=ref.traj, row0=tr)
            keep: list[tuple[Any, ...]] = []
            ph = self._delta_physics(tr, rows, keep=keep)
            cost = sur.costs(paths, tr, ph, rows, None if self._bviol is None else self._bviol[:rows])["total"]
            out[idx] = cost.sum(axis=0) + (ref.rows[1:].sum(axis=0) if rows == 1 else 0.0)
            self._last.append((idx, tr, rows, ph, keep, cost))
        return out

    def commit_last(self, i: int) -> np.ndarray:
        """:meth:`commit` candidate ``i`` of the last :meth:`evaluate` (no re-simulation)."""
        ref = self._ref
        for idx, tr, rows, ph, keep, cost in self._last:
            hit = np.flatnonzero(idx == i)
            if not hit.size:
                continue
            j = int(hit[0])
            for k, h, c, mm, v, vm, s_new, row0 in keep:
                L, on = ref.feeders[k], c == j
                L["v"][h[on], 0, mm[on]], L["vm"][h[on], 0, mm[on]], L["s"][h[on], 0, mm[on]] = v[on], vm[on], \
                    s_new[on]
                if row0 and (h[on] == 0).any():
                    for name in ("v", "vm", "s"):
                        L[name][0, 0, 1:] = L[name][0, 0, :1]
                L.pop("sv", None)
                L.pop("hf", None)
            ref.ctrl[:rows] = self.sur.controls(tr)[:, j:j + 1]
            ref.head[:rows] = ph.head_mw[:, j:j + 1]
            ref.viol[:rows] = ph.v_viol_pu[:, j:j + 1]
            ref.rows[:rows] = cost[:, j]
            ref.key = tr.next_key[j].copy()
            if rows == ref.traj.ev_mw.shape[0]:
                ref.traj = take_rows(tr, np.array([j]))
            self.current_cost = ref.rows.sum(axis=0)
            return self.current_cost
        raise ValueError(f"Lookahead.commit_last: no candidate {i} in the last evaluation")

    def commit(self, action: ActionBatch) -> np.ndarray:
        """Make ``action`` (one) the reference candidates are priced against; returns its Q (M,)."""
        self.evaluate(action)
        return self.commit_last(0)

    def _delta_physics(self, tr: Trajectory, n_rows: int, keep: list | None = None) -> FeederRows:
        """Feeder results of candidates against the reference trajectory ``ref``.

        Where a (row, candidate, path) has the reference's controls, the reference's results are
        reused; the others are re-solved by AC sweeps warm-started at the reference voltages
        (row 0, the nowcast, once per candidate when it is common to all paths); beyond
        ``max_columns`` columns per feeder the first-order expansion is used instead; ``keep``
        receives the re-solved points ``(k, h, c, m, V, |V|, S, row0)`` (for :meth:`Lookahead.commit_last`).
        """
        sur, ref, max_columns = self.sur, self._ref, self.max_columns
        m = sur.model
        ctrl = sur.controls(tr)
        H, C, M = ctrl.shape[:3]
        d = ctrl - ref.ctrl[:n_rows]                                                        # (H, C, M, n_ctrl)
        head = np.broadcast_to(ref.head[:n_rows], (H, C, M, m.n_feeder)).copy()
        viol = np.broadcast_to(ref.viol[:n_rows], (H, C, M)).copy()
        for k in range(m.n_feeder):
            L = ref.feeders[k]
            dk = d[..., L["ctrl_idx"]]
            changed = np.abs(dk).max(axis=-1, initial=0.0) > 1e-12
            if ref.row0_shared and M > 1:
                changed[0, :, 1:] = False                                                  # solved once, copied below
            if not changed.any():
                continue
            h, c, mm = np.nonzero(changed)
            du = dk[h, c, mm]                                                               # (n_col, n_i)
            g = L["group"]
            s_new = L["s"][h, 0, mm] + (du @ L["m_loc"].T) / g.base_mva                     # (n_col, n_bus)
            vm_old = L["vm"][h, 0, mm]
            if h.shape[0] <= max_columns:
                v, head_pu = _warm_sweep(np.asarray(g.sweep.dlf), s_new.T, L["v"][h, 0, mm].T, g.v0,
                                         g.sweep.slack_bus, sur.settings.sweep_tol_pu)
                v = v.T
                vm = np.abs(v)
                dhead = head_pu * g.base_mva - ref.head[h, 0, mm, k]
            else:
                sv, hf = _feeder_sensitivities(L)
                vm = vm_old + np.einsum("ni,nij->nj", du, sv[h])
                dhead = np.einsum("ni,ni->n", du, hf[h])
                v = L["v"][h, 0, mm] * (vm / vm_old)
            dviol = sur.feeder_violation_pu(k, vm) - sur.feeder_violation_pu(k, vm_old)
            head[h, c, mm, k] += dhead
            viol[h, c, mm] += dviol
            row0 = ref.row0_shared and M > 1 and bool((h == 0).any())
            if row0:                                                                        # copy to all paths
                r0 = h == 0
                head[0, c[r0], :, k] = head[0, c[r0], :1, k]
                viol[0, c[r0], :] = viol[0, c[r0], :1]
            if keep is not None:
                keep.append((k, h, c, mm, v, vm, s_new, row0))
        return FeederRows(head, viol)


def _warm_sweep(dlf: np.ndarray, s: np.ndarray, v_start: np.ndarray, v0: complex, slack: int, tol: float,
                max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The sweep kernel (:func:`env.physics.sweep.fixed_point`) from ``v_start`` (columns =
    operating points, per unit); returns (V (n_bus, K) complex, head P ``Re(V0 conj(sum I))`` (K,)).

    Raises:
        PowerFlowError: no convergence (an overloaded feeder).
    """
    s_conj = np.conjugate(s, dtype=complex, order="C")
    s_conj[slack] = 0.0
    v = np.array(v_start, dtype=complex, order="C")
    v, i_bus, _ = fixed_point(dlf.dot, v0, s_conj, v, tol, max_iter, "surrogate")
    return v, slack_power_pu(v0, i_bus).real


def _feeder_sensitivities(L: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(sv, hf) of a feeder at the path-mean operating point of each row, computed on first
    use (:func:`env.physics.sweep_sensitivity.fixed_point_sensitivities`; sv per MW)."""
    if "sv" not in L:
        g, v, s = L["group"], L["v"], L["s"]
        H, nb = v.shape[0], v.shape[-1]
        vbar = v.reshape(H, -1, nb).mean(axis=1)
        sbar = s.reshape(H, -1, nb).mean(axis=1)
        sv, hf = fixed_point_sensitivities(np.asarray(g.sweep.dlf), vbar, sbar, L["m_loc"], g.sweep.slack_bus, g.v0)
        L["sv"], L["hf"] = sv / g.base_mva, hf
    return L["sv"], L["hf"]
