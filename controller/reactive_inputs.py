"""The reactive SOCP's scenarios of the coming interval, built from the forecast.

At step ``t`` the forecast (conditioned on steps < t) is sampled ``n_samples``
times, reduced to ``n_scenarios`` representative paths (fast forward
selection), and each path's step-``t`` values are turned into per-bus net
consumption of every feeder given the policy's active dispatch:

    p_bus = M_load p_load + M_ctrl [P_ev, P_storage, P_der_used]
    q_bus = M_load (p_load * q/p of each load)

(``M_*`` are the env's incidence maps, :class:`env.simulator.GridModel`);
the compensators' Q is what the SOCP decides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from env.dispatch import Dispatch
from env.observation import Observation
from env.simulator import GridModel
from scenarios.reduction import reduce


@dataclass(frozen=True)
class ReactiveInputs:
    """Per feeder: (p_net_mw (S, n_bus), q_net_mvar (S, n_bus), probabilities (S,))."""

    per_feeder: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]


class ReactiveScenarioBuilder:
    """Builds :class:`ReactiveInputs` for every step of a grid (index maps precomputed)."""

    def __init__(self, model: GridModel, n_samples: int = 30, n_scenarios: int = 10) -> None:
        if n_samples < n_scenarios or n_scenarios < 1:
            raise ValueError(f"need n_samples >= n_scenarios >= 1, got {n_samples} and {n_scenarios}")
        self.model = model
        self.n_samples = int(n_samples)
        self.n_scenarios = int(n_scenarios)
        grid = model.grid
        p_base = np.concatenate([f.load.p_mw for f in grid.feeders])
        q_base = np.concatenate([f.load.q_mvar for f in grid.feeders])
        self._q_ratio = np.divide(q_base, p_base, out=np.zeros_like(p_base), where=p_base > 0)
        self._is_pv, self._col = model.der_columns()

    def build(self, obs: Observation, dispatch: Dispatch, rng: np.random.Generator) -> ReactiveInputs:
        """Sample, reduce and map the step-``obs.step`` scenarios onto feeder buses."""
        load_p, der_mw, prob = self._step_scenarios(obs, rng)
        m = self.model
        ev = np.clip(dispatch.ev_p_mw, obs.ev.p_min_kw / 1e3, obs.ev.p_max_kw / 1e3) if obs.ev is not None \
            else dispatch.ev_p_mw
        der_used = der_mw[:, :m.n_der_f] * (1.0 - np.clip(dispatch.der_curtail_frac[:m.n_der_f], 0.0, 1.0))
        ctrl = np.concatenate([np.broadcast_to(ev, (len(prob), ev.shape[0])),
                               np.broadcast_to(dispatch.storage_p_mw, (len(prob), dispatch.storage_p_mw.shape[0])),
                               der_used], axis=1)
        lf = load_p[:, :m.n_load_f]
        p_fb = lf @ m.m_load.T + ctrl @ m.m_ctrl.T
        q_fb = (lf * self._q_ratio) @ m.m_load.T
        return ReactiveInputs(tuple((p_fb[:, sl], q_fb[:, sl], prob) for sl in m.feeder_bus_slices))

    def _step_scenarios(self, obs: Observation, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(load_p (S, n_load), der_mw (S, n_der), probabilities (S,)) of step ``obs.step``.

        Without a forecast (none available) the nowcast is the single scenario.
        """
        fc = obs.forecast
        if fc is None or fc.horizon == 0:
            return obs.load_p_mw[None, :], obs.der_avail_mw[None, :], np.ones(1)
        k = obs.step - (fc.t + 1)  # the forecast at t-1 covers steps t .. T-1
        sampled = fc.sample(self.n_samples, rng, ev_sessions=False)
        reduced = reduce(sampled, self.n_scenarios) if self.n_scenarios < self.n_samples else sampled
        load = reduced.load_p_mw[:, k, :]
        pv, wind = reduced.pv_p_mw[:, k, :], reduced.wind_p_mw[:, k, :]
        der = np.zeros((len(reduced), self._is_pv.shape[0]))
        der[:, self._is_pv] = pv[:, self._col[self._is_pv]]
        der[:, ~self._is_pv] = wind[:, self._col[~self._is_pv]]
        return load, der, reduced.probabilities
