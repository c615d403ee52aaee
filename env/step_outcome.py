"""The record of one simulated step and the keys of its cost and violation breakdowns.

:class:`StepOutcome` is what :meth:`env.simulator.GridSimulator.step` returns: the projected
setpoints, the physics (voltages, flows, losses, EV and storage results) and the step's cost
in the tariff's currency by :data:`COST_KEYS` (``reward = -cost["total"]``; docs/design.md,
"Physics truth", item 8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from env.dispatch import Dispatch
from env.evcs import EVStepResult
from env.hydro import spill_cost_per_h
from env.thermal_cost import deep_peak_extra_per_h

__all__ = ["COST_KEYS", "VIOLATION_KEYS", "StepOutcome", "boundary_violation_mw", "cost_breakdown",
           "curtailment_mwh", "energy_terms"]

#: Cost breakdown keys (``total`` sums all but ``boundary_energy``; reward = -total).
COST_KEYS: tuple[str, ...] = (
    "energy_bought", "energy_sold", "thermal_fuel", "water_spillage", "reserves", "ev_revenue", "ev_subsidy",
    "renewable_generation", "storage_degradation", "curtailment", "load_shed", "ev_unmet",
    "voltage_violation", "boundary_violation", "unit_limit", "total", "boundary_energy",
)

#: Violation keys of :attr:`StepOutcome.violations`.
VIOLATION_KEYS: tuple[str, ...] = (
    "voltage_puh", "voltage_worst_pu", "voltage_buses", "load_shed_mwh", "curtailment_mwh",
    "ev_unmet_kwh", "boundary_violation_mwh", "line_overload_max", "unbalanced_mw", "ref_unit_limit_mw",
)


_SUMMED = COST_KEYS[:-2]
assert COST_KEYS[-2:] == ("total", "boundary_energy")


def cost_breakdown(tariff: Any, dt_h: float, bought: Any, sold: Any, fuel: Any, spillage: Any, reserves: Any,
                   boundary_energy: Any, ev_mwh: Any, der_cost_per_h: Any, storage_abs_mw: Any,
                   curtailment_mwh: Any, shed_mwh: Any, unmet_kwh: Any, voltage_puh: Any,
                   boundary_violation_mwh: Any, ref_limit_mw: Any) -> dict[str, Any]:
    """The step's cost by :data:`COST_KEYS` (the one home of the tariff's accounting;
    docs/design.md "Physics truth"): the energy terms as given, then

    ``ev_revenue = -E_ev c_ev``, ``ev_subsidy = E_ev s_ev``, ``renewable_generation = C_der dt``,
    ``storage_degradation = sum|P_st| dt c_st``, ``curtailment = E_curt pi_curt``,
    ``load_shed = E_shed VOLL``, ``ev_unmet = 1e-3 E_unmet,kWh pi_ev``,
    ``voltage_violation = V_puh pi_V``, ``boundary_violation = E_b pi_b``,
    ``unit_limit = P_lim dt VOLL``; ``total`` sums them all in this order (``boundary_energy``,
    the T-D boundary purchase, is reported, not summed). Elementwise only, on arrays of any shape
    (the simulator's ``(B,)`` days, :mod:`env.batched`; the Rollout's day model's points)
    or Python floats."""
    tar = tariff
    parts = (
        bought, sold, fuel, spillage, reserves,
        -ev_mwh * tar.ev_charging_price_per_mwh,
        ev_mwh * tar.ev_subsidy_per_mwh,
        der_cost_per_h * dt_h,
        storage_abs_mw * dt_h * tar.storage_cost_per_mwh,
        curtailment_mwh * tar.penalty_curtailment_per_mwh,
        shed_mwh * tar.penalty_load_shed_per_mwh,
        unmet_kwh * 1e-3 * tar.penalty_ev_unmet_per_mwh,
        voltage_puh * tar.penalty_voltage_per_puh,
        boundary_violation_mwh * tar.penalty_boundary_per_mwh,
        ref_limit_mw * dt_h * tar.penalty_load_shed_per_mwh,
    )
    cost = dict(zip(_SUMMED, parts))
    cost["total"] = sum(parts)
    cost["boundary_energy"] = boundary_energy
    return cost


def curtailment_mwh(avail_mw: Any, used_mw: Any, backoff_mw: Any, dt_h: float) -> Any:
    """Renewable energy not used in the step: ``(sum available - sum used + thermal back-off) dt``
    (the balancing's back-off of thermal units below ``P - r_dn`` counts as curtailment)."""
    return (avail_mw - used_mw + backoff_mw) * dt_h


def boundary_violation_mw(requirement_mw: np.ndarray, delivered_mw: Any) -> np.ndarray:
    """Each boundary's TSO requirement left undelivered, ``|requirement - delivered|`` (MW)."""
    return np.abs(requirement_mw - delivered_mw)


def energy_terms(model: Any, dt_h: float, price_buy: Any, price_sell: float, head_mw: np.ndarray,
                 thermal_mw: np.ndarray, r_up_mw: np.ndarray, r_dn_mw: np.ndarray, ev_reserve_mw: Any,
                 ev_reserve_price: float) -> tuple[Any, ...]:
    """The energy terms of :func:`cost_breakdown` with any leading batch axes (``head_mw`` the
    summed feeder head power (...), thermal outputs and reserves (..., n_gen), ``ev_reserve_mw``
    the stations' summed reserves up + down (...)): ``(bought, sold, fuel, spillage, reserves,
    boundary_energy)``.

    Single feeder: ``bought = max(P_head, 0) dt pi_buy``, ``sold = -max(-P_head, 0) dt pi_sell``.
    T-D: ``fuel = sum_g (c2 P^2 + c1 P + deep-peak extra) dt``, ``spillage = c_S (W - P)+ dt``,
    ``reserves = (c_r . (r_up + r_dn) + pi_ev_res sum r_ev) dt``, ``boundary_energy = P_head dt pi_buy``
    (docs/design.md "Physics truth", item 8)."""
    m = model
    zero = np.zeros(np.shape(head_mw))
    if not m.is_td:
        return (np.maximum(head_mw, 0.0) * dt_h * price_buy, -np.maximum(-head_mw, 0.0) * dt_h * price_sell,
                zero, zero, zero, zero)
    th = thermal_mw
    fuel = (m.g_c2 * th * th + m.g_c1 * th).sum(axis=-1) * dt_h
    if m.g_deep_peak:
        fuel += deep_peak_extra_per_h(m.gen, th).sum(axis=-1) * dt_h
    spillage = zero
    if m.g_spill:
        units_first = th if th.ndim == 1 else th.reshape(-1, th.shape[-1]).T     # (n_gen[, K])
        spillage = spill_cost_per_h(m.gen, units_first).reshape(th.shape[:-1]) * dt_h
    reserves = ((r_up_mw + r_dn_mw) @ m.g_cr + ev_reserve_price * ev_reserve_mw) * dt_h
    return zero, zero, fuel, spillage, reserves, head_mw * dt_h * price_buy


@dataclass(frozen=True)
class StepOutcome:
    """Everything that happened in one step (arrays in dispatch / layout order, MW unless named).

    Attributes:
        step, time_h, dt_h: the step played.
        cost: breakdown, keys :data:`COST_KEYS` (tariff currency); ``reward = -cost["total"]``.
        violations: keys :data:`VIOLATION_KEYS`.
        projection: per dispatch field, applied setpoint minus requested (0 where feasible).
        setpoints: per dispatch field, the setpoint after projection (before reserve deployment);
            :attr:`applied` gives them as a :class:`Dispatch` (``q_comp_mvar`` included).
        ev: the EV fleet's result (kW / kWh per station).
        load_p_mw: (n_load,) realized demand, ``Layout`` order (feeder loads, then T loads).
        load_served_mw: (n_load,) after shedding.
        der_avail_mw, der_used_mw: (n_der,) available and used renewable output.
        storage_p_mw: (n_storage,) applied (+ charge); storage_e_mwh: energy after the step.
        ev_p_mw: (n_evcs,) delivered station power; ev_deployed_mw: delivered minus setpoint.
        thermal_p_mw: (n_gen,) actual output (setpoint + deployment + residual at the reference unit).
        thermal_deployed_mw: (n_gen,) actual minus setpoint.
        head_p_mw, head_q_mvar, loss_mw: (n_feeder,) feeder head power and series losses.
        v_pu: (N_fb,) bus voltage magnitudes, feeders stacked; v_min_pu, v_max_pu per feeder.
        line_p_mw, line_loading: (n_line,) transmission flows and |flow| / rating (0 on an
            unrated line); ``info()["line_loading_max"]`` is absent when no line is rated
            (feeders, t118d10): there is no loading to report (not 0; NaN in tables).
        imbalance_mw: real-time imbalance D before balancing (after the TSO calls; 0 single-feeder).
        tso_requirement_mw, tso_delivered_mw, boundary_violation_mw: (n_boundary,).
        residual_mw: mismatch closed by the reference unit (feeder loss changes).
        import_mw: single feeder: head P (+ buys); T-D: sum of feeder heads.
        info_scalars: (losses MW, EV unmet kWh, max line loading) of :meth:`info` when the
            simulator computed them anyway; None to compute them from the fields.
    """

    step: int
    time_h: float
    dt_h: float
    cost: dict[str, float]
    violations: dict[str, float]
    projection: dict[str, np.ndarray]
    setpoints: dict[str, np.ndarray]
    ev: EVStepResult
    load_p_mw: np.ndarray
    load_served_mw: np.ndarray
    der_avail_mw: np.ndarray
    der_used_mw: np.ndarray
    storage_p_mw: np.ndarray
    storage_e_mwh: np.ndarray
    ev_p_mw: np.ndarray
    ev_deployed_mw: np.ndarray
    thermal_p_mw: np.ndarray
    thermal_deployed_mw: np.ndarray
    head_p_mw: np.ndarray
    head_q_mvar: np.ndarray
    loss_mw: np.ndarray
    v_pu: np.ndarray
    v_min_pu: np.ndarray
    v_max_pu: np.ndarray
    line_p_mw: np.ndarray
    line_loading: np.ndarray
    imbalance_mw: float
    tso_requirement_mw: np.ndarray
    tso_delivered_mw: np.ndarray
    boundary_violation_mw: np.ndarray
    residual_mw: float
    import_mw: float
    info_scalars: tuple[float, float, float] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        missing = set(COST_KEYS) - set(self.cost)
        if missing:
            raise ValueError(f"StepOutcome.cost: missing keys {sorted(missing)}")
        if not np.isfinite(self.cost["total"]):
            raise ValueError(f"StepOutcome.cost: total is {self.cost['total']}")

    @property
    def applied(self) -> Dispatch:
        """The projected dispatch (built on each access from ``setpoints``)."""
        return Dispatch(**self.setpoints)

    @property
    def reward(self) -> float:
        """Minus the step's total cost."""
        return -self.cost["total"]

    def info(self) -> dict[str, Any]:
        """The gym ``info`` dict of this step (plain floats and small arrays; ``line_loading_max``
        only when the grid has rated lines)."""
        d = self.__dict__   # a plain read of the fields, no write
        scalars = self.info_scalars
        if scalars is None:
            scalars = (float(self.loss_mw.sum()), float(self.ev.unmet_kwh.sum()),
                       float(self.line_loading.max()) if self.line_loading.size else math.nan)
        return {
            "step": d["step"], "time_h": d["time_h"], "cost": d["cost"], "violations": d["violations"],
            "projection": d["projection"], "v_min_pu": d["v_min_pu"], "v_max_pu": d["v_max_pu"],
            "losses_mw": scalars[0], "import_mw": d["import_mw"],
            "head_p_mw": d["head_p_mw"], "imbalance_mw": d["imbalance_mw"], "residual_mw": d["residual_mw"],
            "ev_p_mw": d["ev_p_mw"], "ev_unmet_kwh": scalars[1],
            "thermal_p_mw": d["thermal_p_mw"], "tso_requirement_mw": d["tso_requirement_mw"],
            "tso_delivered_mw": d["tso_delivered_mw"],
            **({} if math.isnan(scalars[2]) else {"line_loading_max": scalars[2]}),
        }
