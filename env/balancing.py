"""T-D real-time balancing: the TSO call on the stations, the imbalance chain and the
reference unit (docs/design.md "Physics truth", items 2, 5 and 6).

The one home of these rules. Every function takes a leading batch axis of ``B`` days
(the simulator :class:`env.batched.BatchedSimulator` passes its batch, ``B = 1`` for the
one-day :class:`env.simulator.GridSimulator`) and uses only elementwise arithmetic and row sums, so each day gets the numbers
it would get alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from env.grid_model import GridModel

__all__ = ["TOL_MW", "balance", "curtail", "imbalance_mw", "initial_thermal", "settle_reference", "tso_call"]

TOL_MW = 1e-9       # imbalances within this are balanced


def initial_thermal(model: GridModel, load_mw: np.ndarray, der_avail_mw: np.ndarray) -> np.ndarray:
    """Thermal setpoints before the day: the step-0 net demand shared pro rata to the units' room,
    ``P = p_min + (p_max - p_min) clip(D - sum p_min, 0, sum(p_max - p_min)) / sum(p_max - p_min)``
    with ``D`` = all loads - all renewable availability of step 0 (losses and EVs ignored);
    empty on a single feeder."""
    m = model
    if not m.is_td:
        return np.zeros(0)
    demand = load_mw.sum() - der_avail_mw.sum()
    room = m.g_p_max - m.g_p_min
    share = np.clip(demand - m.g_p_min.sum(), 0.0, room.sum()) / max(room.sum(), 1e-12)
    return m.g_p_min + room * share


def imbalance_mw(load_t_mw: Any, head_mw: Any, thermal_mw: Any, wind_mw: Any) -> Any:
    """The real-time imbalance ``D = T loads + sum feeder head P - thermal - T wind used`` (MW;
    each argument already summed per day; + = deficit)."""
    return load_t_mw + head_mw - thermal_mw - wind_mw


def tso_call(model: GridModel, requirement_mw: np.ndarray, r_up_mw: np.ndarray, r_dn_mw: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """The TSO's call on each boundary, clipped to the feeder's cleared station reserves, and the
    stations' deviation delivering it, pro rata to their reserve:

    ``call = clip(requirement, -sum r_dn, sum r_up)`` per boundary; a station of a feeder called up
    (``call > 0``) charges ``r_up call / sum r_up`` less, one called down ``r_dn (-call) / sum r_dn``
    more. ``requirement_mw`` (B, n_boundary), reserves (B, n_evcs); returns (call, deviation)."""
    m = model
    cap_up, cap_dn = r_up_mw @ m.f_ev.T, r_dn_mw @ m.f_ev.T
    call = np.minimum(np.maximum(requirement_mw, -cap_dn), cap_up)
    up = np.divide(call, cap_up, out=np.zeros_like(call), where=cap_up > 0)
    dn = np.divide(-call, cap_dn, out=np.zeros_like(call), where=cap_dn > 0)
    f = m.ev_feeder
    return call, np.where(call[:, f] > 0, -r_up_mw * up[:, f], r_dn_mw * np.maximum(dn[:, f], 0.0))


def _pro_rata(values: np.ndarray, capacity: np.ndarray, need: np.ndarray, sign: float, rows: np.ndarray
              ) -> np.ndarray:
    """On the days ``rows``, move ``values`` by ``sign capacity share`` to cover ``need``:
    ``used = min(need, sum capacity)``, ``values += sign capacity used / sum capacity``
    (in place); returns what is left of ``need``."""
    total = capacity.sum(axis=1)
    act = rows & (need > 0) & (total > 0)
    if not act.any():
        return need
    if act.all():                       # (one day, or all days moving: no masks)
        used = np.minimum(need, total)
        values += sign * capacity * (used / total)[:, None]
        return need - used
    used = np.where(act, np.minimum(need, total), 0.0)
    share = np.divide(used, total, out=np.zeros_like(used), where=act)
    np.copyto(values, values + sign * capacity * share[:, None], where=act[:, None])
    return need - used


def _curtail(used: np.ndarray, need: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """On the days ``rows``, reduce ``used`` (a view) pro rata to cover ``need``:
    ``cut = min(need, sum used)``, ``used *= 1 - cut / sum used``; returns what is left."""
    total = used.sum(axis=1)
    act = rows & (need > 0) & (total > 0)
    if not act.any():
        return need
    if act.all():
        cut = np.minimum(need, total)
        used *= (1.0 - cut / total)[:, None]
        return need - cut
    cut = np.where(act, np.minimum(need, total), 0.0)
    keep = 1.0 - np.divide(cut, total, out=np.zeros_like(cut), where=act)
    np.copyto(used, used * keep[:, None], where=act[:, None])
    return need - cut


def curtail(used_mw: np.ndarray, need_mw: float) -> float:
    """One day's :func:`_curtail`: reduce ``used_mw`` (n,) pro rata by ``min(need, sum used)``
    (in place); returns what is left of ``need_mw`` (the env's curtailment of a surplus)."""
    return float(_curtail(used_mw[None, :], np.array((need_mw,)), np.ones(1, dtype=bool))[0])


def balance(model: GridModel, imbalance_mw: np.ndarray, x: dict[str, np.ndarray], dev_mw: np.ndarray,
            der_used_mw: np.ndarray, load_t_mw: np.ndarray, load_f_mw: np.ndarray) -> dict[str, Any]:
    """Cover the real-time imbalance ``D`` (B,) in MW of each day.

    ``D > 0`` (deficit): thermal up-reserves pro rata to the cleared ``r_up``; then station
    up-reserves (charge less, within ``r_up`` minus what the TSO call used); then shed
    transmission loads proportionally, then feeder loads.
    ``D < 0`` (surplus): thermal down-reserves pro rata to ``r_dn``; station down-reserves
    (charge more); curtail transmission wind; curtail feeder DER; back thermal units off below
    ``P - r_dn`` towards ``p_min`` (counted as curtailment); what is left is ``unbalanced``
    (signed: + deficit, - surplus; taken by the reference unit).

    ``x`` holds the projected setpoints (B, ...); ``dev_mw`` the stations' TSO deviation,
    ``der_used_mw`` the DER output (neither is modified). Returns (B,)-arrays ``shed_t``,
    ``shed_f`` (load shares), ``feeder_changed``, ``backoff``, ``unbalanced`` and the new
    ``thermal``, ``dev``, ``der_used``.
    """
    m = model
    thermal = x["thermal_p_mw"].copy()
    dev = dev_mw.copy()
    der_used = der_used_mw.copy()
    n = imbalance_mw.shape[0]
    zero = np.zeros(n)
    deficit, surplus = imbalance_mw > TOL_MW, imbalance_mw < -TOL_MW
    shed_t, shed_f, backoff, unbalanced = zero, zero, zero, zero
    changed = np.zeros(n, dtype=bool)
    if deficit.any():                   # (a branch no day takes changes nothing: skipped)
        rest = _pro_rata(thermal, x["thermal_r_up_mw"], np.where(deficit, imbalance_mw, 0.0), +1.0, deficit)
        left = _pro_rata(dev, np.maximum(x["ev_r_up_mw"] + dev, 0.0), rest, -1.0, deficit)
        changed = left < rest
        rest = left
        cut_t = deficit & (rest > TOL_MW) & (load_t_mw > 0)
        if cut_t.any():
            shed = np.where(cut_t, np.minimum(rest, load_t_mw), 0.0)
            shed_t = np.divide(shed, load_t_mw, out=zero.copy(), where=cut_t)
            rest = np.where(cut_t, rest - shed, rest)
        cut_f = deficit & (rest > TOL_MW) & (load_f_mw > 0)
        if cut_f.any():
            shed_f = np.where(cut_f, np.minimum(1.0, np.divide(rest, load_f_mw, out=zero.copy(), where=cut_f)), 0.0)
            rest = np.where(cut_f, np.maximum(rest - load_f_mw, 0.0), rest)
        unbalanced = np.where(deficit, rest, 0.0)
    if surplus.any():
        need = np.where(surplus, -imbalance_mw, 0.0)
        need = _pro_rata(thermal, x["thermal_r_dn_mw"], need, -1.0, surplus)
        left = _pro_rata(dev, np.maximum(x["ev_r_dn_mw"] - dev, 0.0), need, +1.0, surplus)
        changed = changed | (left < need)
        need = _curtail(der_used[:, m.n_der_f:], left, surplus)
        left = _curtail(der_used[:, :m.n_der_f], need, surplus)
        changed |= left < need
        floor = np.minimum(m.g_p_min, thermal)
        room = thermal - floor
        total = room.sum(axis=1)
        back = np.minimum(left, total)
        act = surplus & (back > 0)
        share = np.divide(back, total, out=zero.copy(), where=act)
        np.copyto(thermal, thermal - room * share[:, None], where=act[:, None])
        backoff = np.where(act, back, 0.0)
        unbalanced = np.where(surplus, -np.where(act, left - back, left), unbalanced)
    return {"shed_t": shed_t, "shed_f": shed_f, "feeder_changed": changed, "backoff": backoff,
            "unbalanced": unbalanced, "thermal": thermal, "dev": dev, "der_used": der_used}


def settle_reference(model: GridModel, thermal: np.ndarray, der_used: np.ndarray, load_t: np.ndarray,
                     shed_t: float) -> tuple[float, float]:
    """Bring the reference unit of one day back within ``[p_min, p_max]`` after it took the residual.

    The residual (feeder loss changes after the balancing, and any ``unbalanced`` remainder of
    :func:`balance`) can push the reference unit past its limits. The excess goes, in order,
    to the other thermal units pro rata to their room within ``[p_min, p_max]`` (ramps are not
    applied to the residual), then for a surplus to curtailing transmission wind (counted as
    curtailment), for a deficit to shedding transmission loads (counted as load shed). What
    is left stays at the reference unit outside its limits and is returned as the violation
    ``ref_unit_limit_mw`` (priced at the load-shed penalty, cost key ``unit_limit``). Updates
    ``thermal`` (n_gen,) and ``der_used`` (n_der,) in place; returns (transmission shed share,
    MW left outside the limits).
    """
    m = model
    k = m.ref_unit
    lo, hi = float(m.g_p_min[k]), float(m.g_p_max[k])
    p = float(thermal[k])
    others = np.ones(thermal.shape[0], dtype=bool)
    others[k] = False
    if p < lo:                              # surplus: others down, then spill T wind
        need = lo - p
        thermal[k] = lo
        room = np.where(others, np.maximum(thermal - m.g_p_min, 0.0), 0.0)
        total = float(room.sum())
        take = min(need, total)
        if take > 0:
            thermal -= room * (take / total)
            need -= take
        if need > TOL_MW:
            need = curtail(der_used[m.n_der_f:], need)
        if need > TOL_MW:
            thermal[k] = lo - need
            return shed_t, need
        return shed_t, 0.0
    need = p - hi                           # deficit: others up, then shed T loads
    thermal[k] = hi
    room = np.where(others, np.maximum(m.g_p_max - thermal, 0.0), 0.0)
    total = float(room.sum())
    take = min(need, total)
    if take > 0:
        thermal += room * (take / total)
        need -= take
    served = float(load_t.sum()) * (1.0 - shed_t)
    if need > TOL_MW and served > 0:
        shed = min(need, served)
        shed_t = 1.0 - (1.0 - shed_t) * (1.0 - shed / served)
        need -= shed
    if need > TOL_MW:
        thermal[k] = hi + need
        return shed_t, need
    return shed_t, 0.0
