"""The reactive SOCP's scenarios of the coming interval, built from the forecast.

At step ``t`` the forecast made before the step is sampled ``n_samples`` times for step ``t``
alone (load, PV and wind: all the SOCP uses; :meth:`scenarios.forecast.Forecast.sample_next`),
the draws are reduced to ``n_scenarios`` by fast forward selection on those features, and each
is turned into per-bus net consumption of every feeder given the *applied* active dispatch
(the env's projection of what the policy asked for, :meth:`env.gym_env.TDGridEnv.project_dispatch`):

    p_bus = M_load p_load + M_ctrl [P_ev, P_storage, P_der_used]
    q_bus = M_load (p_load * q/p of each load)

(``M_*`` are the env's incidence maps, :class:`env.simulator.GridModel`); the compensators' Q is
what the SOCP decides. ``scenarios="nowcast"`` uses the observed step instead (one scenario:
the env's nowcast is the realized step). The step's prices come from :func:`env.pricing.step_prices`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from env.dispatch import Dispatch
from env.observation import Observation
from env.pricing import StepPrices, step_prices
from env.simulator import GridModel
from scenarios.reduction import block_features, reduce_features

SCENARIO_SOURCES: tuple[str, ...] = ("forecast", "nowcast")


@dataclass(frozen=True)
class ReactiveInputs:
    """Per feeder: (p_net_mw (S, n_bus), q_net_mvar (S, n_bus), probabilities (S,)); the step's prices."""

    per_feeder: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]
    prices: StepPrices


class ReactiveScenarioBuilder:
    """Builds :class:`ReactiveInputs` for every step of a grid (index maps precomputed).

    Args:
        model: the env's grid model.
        n_samples: draws of the coming step before reduction.
        n_scenarios: scenarios kept (the SOCP's size).
        source: ``"forecast"`` (draws of the forecast made before the step, seed 003's setting)
            or ``"nowcast"`` (the observed step as the single scenario).
    """

    def __init__(self, model: GridModel, n_samples: int = 30, n_scenarios: int = 10,
                 source: str = "forecast") -> None:
        for name, value in (("n_samples", n_samples), ("n_scenarios", n_scenarios)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"ReactiveScenarioBuilder.{name}: must be an integer >= 1, got {value!r}")
        if n_samples < n_scenarios:
            raise ValueError(f"ReactiveScenarioBuilder: need n_samples >= n_scenarios, got {n_samples} "
                             f"and {n_scenarios}")
        if source not in SCENARIO_SOURCES:
            raise ValueError(f"ReactiveScenarioBuilder.source: must be one of {SCENARIO_SOURCES}, got {source!r}")
        self.model = model
        self.n_samples = int(n_samples)
        self.n_scenarios = int(n_scenarios)
        self.source = source
        grid = model.grid
        p_base = np.concatenate([f.load.p_mw for f in grid.feeders])
        q_base = np.concatenate([f.load.q_mvar for f in grid.feeders])
        self._q_ratio = np.divide(q_base, p_base, out=np.zeros_like(p_base), where=p_base > 0)

    def build(self, obs: Observation, applied: Dispatch, rng: np.random.Generator) -> ReactiveInputs:
        """Sample, reduce and map the step-``obs.step`` scenarios onto feeder buses.

        ``applied`` must be the dispatch the env will play (already projected): its EV, storage
        and curtailment values are used as they are.
        """
        load_p, der_mw, prob = self._step_scenarios(obs, rng)
        m = self.model
        n = len(prob)
        der_used = der_mw[:, :m.n_der_f] * (1.0 - applied.der_curtail_frac[:m.n_der_f])
        ctrl = np.concatenate([np.broadcast_to(applied.ev_p_mw, (n, applied.ev_p_mw.shape[0])),
                               np.broadcast_to(applied.storage_p_mw, (n, applied.storage_p_mw.shape[0])),
                               der_used], axis=1)
        lf = load_p[:, :m.n_load_f]
        p_fb = lf @ m.m_load.T + ctrl @ m.m_ctrl.T + applied.tie_or_zeros(m.n_tie) @ m.tie_inc.T
        q_fb = (lf * self._q_ratio) @ m.m_load.T
        return ReactiveInputs(tuple((p_fb[:, sl], q_fb[:, sl], prob) for sl in m.feeder_bus_slices),
                              step_prices(m, obs))

    def _step_scenarios(self, obs: Observation, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(load_p (S, n_load), der_mw (S, n_der), probabilities (S,)) of step ``obs.step``.

        Without a forecast (none available), or with ``source="nowcast"``, the observed step is
        the single scenario.
        """
        fc = obs.forecast
        if self.source == "nowcast" or fc is None or fc.horizon == 0:
            return obs.load_p_mw[None, :], obs.der_avail_mw[None, :], np.ones(1)
        load, pv, wind = fc.sample_next(self.n_samples, rng)
        prob = np.full(self.n_samples, 1.0 / self.n_samples)
        if self.n_scenarios < self.n_samples:
            sel, prob = reduce_features(block_features([load, pv, wind]), prob, self.n_scenarios)
            load, pv, wind = load[sel], pv[sel], wind[sel]
        return load, self.model.der_mw(pv, wind), prob
