"""The rolling loop: observe -> policy.act -> reactive SOCP -> env.step -> records.

Results are tidy: :meth:`DayResult.steps` has one row per step and *area*
(``"system"`` for the grid-wide KPIs and costs, ``"f0"``, ``"f1"``, ... for each
feeder's voltages, losses, compensation and SOCP diagnostics), so every value
appears once; :meth:`DayResult.summary` is one row for the day.

Fallbacks are never silent: the system rows' ``policy_fallback`` holds the reasons the
policy logged during that step's ``act`` (``""`` if none; see :mod:`policies.base`), the
summary's ``fallback_steps`` / ``fallback_reason`` count them and give the first; the
reactive SOCP's are ``socp_fallback`` per feeder row and ``socp_fallbacks`` per day.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from controller.reactive import ReactiveCompensator, ReactiveResult, ReactiveSettings
from controller.reactive_inputs import ReactiveScenarioBuilder
from env.dispatch import Dispatch
from env.gym_env import TDGridEnv
from env.physics.grid_flow import GridPhysics
from env.simulator import COST_KEYS, StepOutcome
from policies.base import Policy, new_fallbacks


@dataclass(frozen=True)
class LoopSettings:
    """Settings of the rolling loop.

    Attributes:
        reactive: run the reactive SOCP each step (else compensators stay at 0).
        n_samples: forecast paths drawn per step for the SOCP, before reduction.
        n_scenarios: scenarios S after reduction (the SOCP's size).
        socp: the SOCP's settings (solver, objective, formulation).
        scenarios: where the SOCP's scenarios come from: ``"forecast"`` (draws of the step
            from the forecast made before it, seed 003) or ``"nowcast"`` (the observed step).
        reactive_method: ``"socp"`` (the scenario SOCP) or ``"fast"`` (the same env-cost
            objective on the AC sweep, :mod:`controller.reactive_fast`; what RL training uses).
    """

    reactive: bool = True
    n_samples: int = 30
    n_scenarios: int = 10
    socp: ReactiveSettings = ReactiveSettings()
    scenarios: Literal["forecast", "nowcast"] = "forecast"
    reactive_method: Literal["socp", "fast"] = "socp"

    def __post_init__(self) -> None:
        """Check the fields by type (``reactive`` a bool, the counts integers, ``socp`` a
        :class:`ReactiveSettings`; :func:`env.settings.check_field_types`) and
        ``1 <= n_scenarios <= n_samples``."""
        from env.settings import check_field_types

        check_field_types(self)
        if not 1 <= self.n_scenarios <= self.n_samples:
            raise ValueError(f"LoopSettings: need 1 <= n_scenarios <= n_samples, got {self.n_scenarios}, "
                             f"{self.n_samples}")


@dataclass(frozen=True)
class DayResult:
    """One closed-loop day: the tidy step table and the day's summary row."""

    steps: pd.DataFrame
    summary: dict[str, Any]


class RollingController:
    """Runs a policy and the reactive compensator in one rolling loop over an env.

    Args:
        env: a :class:`~env.gym_env.TDGridEnv` (or a wrapper of one).
        policy: any :class:`~policies.base.Policy`; one with ``attach(env)`` (a trained agent,
            :class:`policies.sb3.SB3Policy`) is attached to this env's unwrapped base first.
        compensator: the reactive SOCP; built from the env's grid when ``None`` and
            ``settings.reactive`` is true.
        settings: loop settings.
    """

    def __init__(self, env: Any, policy: Policy, compensator: ReactiveCompensator | None = None,
                 settings: LoopSettings = LoopSettings()) -> None:
        self.env = env
        self.base: TDGridEnv = env.unwrapped
        if self.base.reactive == "action":
            raise ValueError("RollingController: use an env with reactive='none' (the controller sets Q)")
        self.policy = policy
        if callable(getattr(policy, "attach", None)):   # a trained agent acts in this env (policies.sb3)
            policy.attach(self.base)
        self.settings = settings
        if compensator is None and settings.reactive:
            compensator = ReactiveCompensator(self.base.grid, settings.socp, method=settings.reactive_method)
        self.compensator = compensator
        self.builder = ReactiveScenarioBuilder(self.base.model, settings.n_samples, settings.n_scenarios,
                                               settings.scenarios)
        self.physics = GridPhysics(self.base.grid)
        self._comp_splits = np.cumsum([0] + [len(f.compensator) for f in self.base.grid.feeders])
        from env.stvs.surrogate import surrogate_for
        self.stvs = surrogate_for(self.base.grid)     # STVS surrogate of the case (docs/stvs.md), or None

    def run_day(self, seed: int, on_step: Callable[[int, int], None] | None = None) -> DayResult:
        """Play one day; the day is ``sample_day(grid, regime, seed)`` (same seed, same day).

        Args:
            seed: day seed (common random numbers across policies).
            on_step: called as ``on_step(t, n_steps)`` after every step (progress bars).
        """
        self.env.reset(seed=seed, options={"scenario_seed": int(seed)})
        self.policy.reset(seed)
        if hasattr(self.policy, "observe_day"):  # clairvoyant yardsticks only (perfect information)
            self.policy.observe_day(self.base.simulator.scenario)
        if self.compensator is not None:
            self.compensator.reset()
        rng = np.random.default_rng([int(seed), 2])  # the SOCP's sampling stream, per day
        rows: list[dict[str, Any]] = []
        decision_ms: list[float] = []
        terminated = False
        _, n_logged = new_fallbacks(self.policy, 0)
        while not terminated:
            obs = self.base.observation_typed
            t0 = time.perf_counter()
            dispatch = self.policy.act(obs, obs.forecast)
            if not isinstance(dispatch, Dispatch):
                raise TypeError(f"policy {getattr(self.policy, 'name', type(self.policy).__name__)!r} returned "
                                f"{type(dispatch).__name__} at step {obs.step}; act() must return an env.Dispatch")
            decision_ms.append((time.perf_counter() - t0) * 1e3)
            fallback, n_logged = new_fallbacks(self.policy, n_logged)
            # a policy that sets the compensators itself (perfect information) overrides the
            # SOCP's setpoints in the env, so the SOCP is not solved for it
            reactive, inputs = ((None, None) if dispatch.q_comp_mvar is not None
                                else self._compensate(obs, dispatch, rng))
            _, _, terminated, truncated, _ = self.base.step_dispatch(dispatch)
            outcome = self.base.last_outcome
            n_ev = int(obs.ev.n_connected.sum()) if obs.ev is not None else 0
            step_rows = self._records(outcome, reactive, inputs, decision_ms[-1], n_ev)
            step_rows[0]["policy_fallback"] = fallback          # the system row
            rows.extend(step_rows)
            if on_step is not None:
                on_step(outcome.step, self.base.n_steps)
            terminated = terminated or truncated
        steps = pd.DataFrame(rows)
        summary = day_summary(steps, self.base.grid.tariff.currency)
        if callable(getattr(self.policy, "day_stats", None)):   # the policy's own day KPIs (prefixed by it)
            summary.update({k: v for k, v in self.policy.day_stats().items() if k not in summary})
        return DayResult(steps, summary)

    def _compensate(self, obs: Any, dispatch: Any, rng: np.random.Generator
                    ) -> tuple[list[ReactiveResult] | None, Any]:
        """Solve the SOCP for this step and hand its setpoints to the env."""
        if self.compensator is None:
            return None, None
        applied = self.base.project_dispatch(dispatch)    # what the env will play, not what was asked
        inputs = self.builder.build(obs, applied, rng)
        results = self.compensator.solve(inputs.per_feeder, inputs.prices)
        self.base.set_reactive(np.concatenate([r.q_mvar for r in results]))
        return results, inputs

    def _records(self, out: StepOutcome, reactive: list[ReactiveResult] | None, inputs: Any,
                 decision_ms: float, n_ev: int) -> list[dict[str, Any]]:
        """One system row and one row per feeder for this step."""
        dt = out.dt_h
        system: dict[str, Any] = {
            "step": out.step, "time_h": out.time_h, "area": "system", "decision_ms": decision_ms,
            **{f"cost_{k}": v for k, v in out.cost.items()},
            "import_mw": out.import_mw, "losses_mw": float(out.loss_mw.sum()),
            "load_mw": float(out.load_p_mw.sum()), "load_served_mw": float(out.load_served_mw.sum()),
            "der_avail_mw": float(out.der_avail_mw.sum()), "der_used_mw": float(out.der_used_mw.sum()),
            "pv_used_mw": float(out.der_used_mw[self.base.model.der_is_pv].sum()),
            "wind_used_mw": float(out.der_used_mw[~self.base.model.der_is_pv].sum()),
            "ev_p_mw": float(out.ev_p_mw.sum()), "storage_p_mw": float(out.storage_p_mw.sum()),
            "storage_e_mwh": float(out.storage_e_mwh.sum()), "thermal_p_mw": float(out.thermal_p_mw.sum()),
            "ev_connected": n_ev,
            "ev_charged_mwh": float(out.ev.charged_kwh.sum()) / 1e3,
            "imbalance_mw": out.imbalance_mw,
            "boundary_violation_mw": float(np.abs(out.boundary_violation_mw).sum()),
            "max_line_loading": float(out.line_loading.max()) if self.base.model.any_rated else float("nan"),
            **({"tie_p_mw": float(out.setpoints["tie_p_mw"].sum())} if self.base.model.n_tie else {}),
            **{f"viol_{k}": v for k, v in out.violations.items()},
        }
        m = self.base.model
        if self.stvs is not None:
            from env.stvs.surrogate import assess
            system["stvs_tvci"], system["stvs_vdsi"] = assess(self.base.grid, self.stvs, out, m)
        rows = [system]
        q_applied, n_comp = out.setpoints["q_comp_mvar"], self._comp_splits
        for k, sl in enumerate(m.feeder_bus_slices):
            net = self.base.grid.feeders[k]
            v = out.v_pu[sl]
            under = np.maximum(net.bus.vmin_pu - v, 0.0) + np.maximum(v - net.bus.vmax_pu, 0.0)
            row = {"step": out.step, "time_h": out.time_h, "area": f"f{k}", "v_min_pu": float(out.v_min_pu[k]),
                   "v_max_pu": float(out.v_max_pu[k]), "voltage_violation_puh": float(under.sum() * dt),
                   "losses_mw": float(out.loss_mw[k]), "head_p_mw": float(out.head_p_mw[k]),
                   "head_q_mvar": float(out.head_q_mvar[k]),
                   "q_comp_mvar": float(q_applied[n_comp[k]:n_comp[k + 1]].sum())}
            if reactive is not None:
                row.update(self._socp_columns(k, v, reactive[k], inputs.per_feeder[k]))
            rows.append(row)
        return rows

    def _socp_columns(self, k: int, v_ac: np.ndarray, res: ReactiveResult,
                      inputs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, Any]:
        """SOCP diagnostics: setpoints, prediction vs the env's AC voltages, and the
        relaxation check (SOCP voltages vs an AC sweep of the same scenarios at the same Q)."""
        p, q, prob = inputs
        net = self.base.grid.feeders[k]
        live = prob > 0
        v_pred = res.v_pred_pu[live]
        v_expected = prob[live] @ v_pred if v_pred.size and np.isfinite(v_pred).all() else np.full(net.n_bus, np.nan)
        q_bus = np.zeros(net.n_bus)
        np.add.at(q_bus, net.compensator.bus, res.q_mvar)
        ac = self.physics.solve_feeder(k, p[live].T, (q[live] - q_bus).T).v_pu.T
        return {
            "socp_status": res.status, "socp_solver": res.solver_used,
            "socp_fallback": res.fallback or "", "socp_ms": res.solve_ms, "socp_solver_ms": res.solver_ms,
            "socp_relaxation_gap_pu": res.relaxation_gap_pu,
            "socp_v_ac_dev_pu": _nan_max(np.abs(v_pred - ac)),
            "socp_v_pred_min_pu": -_nan_max(-v_expected),
            "socp_v_pred_err_pu": _nan_max(np.abs(v_expected - v_ac)),
        }


def _nan_max(x: np.ndarray) -> float:
    """``max`` over the finite entries; NaN when there are none (a fallback step has no SOCP voltages)."""
    finite = x[np.isfinite(x)]
    return float(finite.max()) if finite.size else float("nan")


_SUM_COLUMNS = {"curtailment_mwh": "viol_curtailment_mwh", "load_shed_mwh": "viol_load_shed_mwh",
                "boundary_violation_mwh": "viol_boundary_violation_mwh"}


def day_summary(steps: pd.DataFrame, currency: str = "") -> dict[str, Any]:
    """One row of day KPIs from a step table (sums of energies and costs, worst values)."""
    sys_rows = steps[steps.area == "system"]
    feeders = steps[steps.area != "system"]
    dt_h = float(sys_rows.time_h.diff().dropna().iloc[0]) if len(sys_rows) > 1 else 0.25
    out: dict[str, Any] = {f"cost_{k}": float(sys_rows[f"cost_{k}"].sum()) for k in COST_KEYS}
    out["total_cost"] = out.pop("cost_total")
    out.update({k: float(sys_rows[c].sum()) for k, c in _SUM_COLUMNS.items()})
    out["ev_unmet_mwh"] = float(sys_rows.viol_ev_unmet_kwh.sum()) / 1e3
    out["voltage_violation_puh"] = float(feeders.voltage_violation_puh.sum())
    out["v_min_pu"] = float(feeders.v_min_pu.min())
    out["v_max_pu"] = float(feeders.v_max_pu.max())
    out["losses_mwh"] = float(sys_rows.losses_mw.sum() * dt_h)
    out["energy_imported_mwh"] = float(sys_rows.import_mw.clip(lower=0).sum() * dt_h)
    out["ev_charged_mwh"] = float(sys_rows.ev_charged_mwh.sum())
    out["max_line_loading"] = float(sys_rows.max_line_loading.max())
    out["boundary_violation_mw"] = float(sys_rows.boundary_violation_mw.max())
    out["decision_ms_mean"] = float(sys_rows.decision_ms.mean())
    # the policy's own fallbacks (policies.base: fallback_log), read after every act
    fell = sys_rows.policy_fallback.fillna("") if "policy_fallback" in sys_rows else pd.Series([], dtype=str)
    fell = fell[fell != ""]
    out["fallback_steps"] = int(fell.size)
    out["fallback_reason"] = str(fell.iloc[0]) if fell.size else ""
    if "socp_ms" in feeders:
        out["socp_ms_mean"] = float(feeders.socp_ms.mean())
        out["socp_relaxation_gap_max_pu"] = float(feeders.socp_relaxation_gap_pu.max())
        out["socp_v_ac_dev_max_pu"] = float(feeders.socp_v_ac_dev_pu.max())
        out["socp_fallbacks"] = int((feeders.socp_fallback != "").sum())
    out["currency"] = currency
    return out
