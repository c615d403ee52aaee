"""The simulator with a batch axis: ``B`` independent days stepped together (docs/design.md
"Batched simulation").

``BatchedSimulator(grid, scenarios)`` plays ``len(scenarios)`` days of one grid in lockstep:
``step_action(a)`` takes a ``(B, n_action)`` array in the gym action layout and returns a
:class:`BatchedStepOutcome` whose every field has the batch axis first. One step is the
single simulator's step (:mod:`env.simulator`, docs/design.md "Physics truth") on every day:

1. decoding ``(a + 1) span / 2 + x(-1)`` and projection onto each day's feasible set
   (:class:`env.projection.StepProjection`, the single simulator's);
2. the EV split of all days at once: one :class:`env.evcs.EVFleet` over the ``B x n_station``
   stations of the merged sessions (day ``b``'s station ``s`` is station ``b n_station + s``);
3. the AC sweeps of all days' feeders at once, each day stopping on its own rule
   (:func:`env.physics.sweep.fixed_point_blocks`); a day whose sweep fails sheds load as the
   single simulator does;
4. T-D: the TSO call, the balancing and the reference unit (:mod:`env.balancing`, the
   single simulator's code) and the DC flows of every day;
5. the accounting of :data:`env.step_outcome.COST_KEYS` per day.

Each day's results equal a :class:`env.simulator.GridSimulator` stepped alone with the same
action, to floating-point rounding (BLAS may sum in another order for a wider matrix;
``tests/env/test_batched.py`` checks every field on random actions, every case). The per-day
data and the initial state come from one ``GridSimulator`` per day (built at construction);
the balancing (:mod:`env.balancing`), a failed sweep's load shedding and the head power and
losses (:mod:`env.feeder_flow`) and the accounting (:func:`env.step_outcome.cost_breakdown`)
are the single simulator's own functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from env.balancing import TOL_MW, balance, imbalance_mw, settle_reference, tso_call
from env.evcs import EVFleet
from env.fastpath import unchecked
from env.feeder_flow import head_and_losses, shed_group, voltage_violation_pu
from env.grid_model import GridModel
from env.network import Grid
from env.projection import der_used_mw, storage_energy_next
from env.physics.sweep import V_COLLAPSE_PU, fixed_point_blocks
from env.simulator import GridSimulator, SimulatorSettings
from env.step_outcome import boundary_violation_mw, cost_breakdown, curtailment_mwh, energy_terms
from scenarios import EVSessions

__all__ = ["BatchedSimulator", "BatchedStepOutcome", "merge_sessions"]



@dataclass(frozen=True)
class BatchedStepOutcome:
    """One step of ``B`` days: every array has the batch axis first (``(B,)`` or ``(B, n)``);
    the fields mean what :class:`env.step_outcome.StepOutcome`'s do. ``cost`` and
    ``violations`` map each key of ``COST_KEYS`` / ``VIOLATION_KEYS`` to a ``(B,)`` array."""

    step: int
    cost: dict[str, np.ndarray]
    violations: dict[str, np.ndarray]
    setpoints: dict[str, np.ndarray]
    projection: dict[str, np.ndarray]
    load_p_mw: np.ndarray
    load_served_mw: np.ndarray
    der_used_mw: np.ndarray
    storage_p_mw: np.ndarray
    storage_e_mwh: np.ndarray
    ev_p_mw: np.ndarray
    thermal_p_mw: np.ndarray
    head_p_mw: np.ndarray
    head_q_mvar: np.ndarray
    loss_mw: np.ndarray
    v_pu: np.ndarray
    v_min_pu: np.ndarray
    v_max_pu: np.ndarray
    line_p_mw: np.ndarray
    line_loading: np.ndarray
    imbalance_mw: np.ndarray
    residual_mw: np.ndarray
    tso_requirement_mw: np.ndarray
    tso_delivered_mw: np.ndarray
    import_mw: np.ndarray


def merge_sessions(sessions: Sequence[EVSessions], n_station: int) -> EVSessions:
    """The EV sessions of several days as one table: day ``b``'s station ``s`` becomes station
    ``b n_station + s``; sorted by arrival step, then day, then the day's own order."""
    fields = ("station", "arrival_step", "departure_step", "e_arrival_kwh", "e_request_kwh",
              "e_capacity_kwh", "p_max_kw", "efficiency")
    cols = {f: np.concatenate([np.asarray(getattr(s, f)) for s in sessions]) for f in fields}
    day = np.concatenate([np.full(len(s), b) for b, s in enumerate(sessions)])
    cols["station"] = cols["station"] + n_station * day
    order = np.lexsort((np.arange(day.shape[0]), cols["station"], cols["arrival_step"]))
    return EVSessions(**{f: v[order] for f, v in cols.items()})


class BatchedSimulator:
    """``B`` days of one grid stepped together (module docstring).

    Args:
        grid: the grid.
        scenarios: the days (``scenarios.day.Scenario`` of this grid, same step length).
        settings: :class:`SimulatorSettings` (defaults when None).
        model: a prebuilt :class:`GridModel` of ``grid``.

    Raises:
        ValueError: no scenario, or days of different lengths.
    """

    def __init__(self, grid: Grid, scenarios: Sequence[Any], settings: SimulatorSettings | None = None,
                 model: GridModel | None = None) -> None:
        if not scenarios:
            raise ValueError("BatchedSimulator: at least one scenario is needed")
        self.model = m = model if model is not None else GridModel(grid)
        self.settings = settings or SimulatorSettings()
        d0 = GridSimulator(grid, scenarios[0], self.settings, model=m)
        self.days = [d0] + [GridSimulator(grid, sc, self.settings, model=m, projection=d0.projection)
                            for sc in scenarios[1:]]
        if any(d.n_steps != d0.n_steps or d.dt_h != d0.dt_h for d in self.days):
            raise ValueError("BatchedSimulator: all days must have the same number and length of steps")
        self.n_batch = B = len(scenarios)
        self.n_steps, self.dt_h = d0.n_steps, d0.dt_h
        stack = np.stack
        self.load_p = stack([d.load_p for d in self.days], 1)           # (T, B, n_load)
        self.s_load_pu = stack([d.s_load_fb_pu for d in self.days], 1)   # (T, B, N_fb)
        self.der_avail = stack([d.der_avail for d in self.days], 1)      # (T, B, n_der)
        self.der_avail_sum = stack([d.der_avail_sum for d in self.days], 1)
        self.tso = stack([d.tso for d in self.days], 1)
        self.pv_pu = stack([np.asarray(sc.pv_pu) for sc in scenarios], 1)
        self.wind_pu = stack([np.asarray(sc.wind_pu) for sc in scenarios], 1)
        self.fc_rows = stack([d._fc_rows for d in self.days], 1)         # (T, B, n_rows, h)
        self.n_station = ns = max(len(m.evcs_ports), 1)
        self.fleet = EVFleet(merge_sessions([sc.ev for sc in scenarios], ns), B * ns, self.dt_h, self.n_steps,
                             v2g=self.settings.v2g, enforce_must_run=self.settings.enforce_must_run)
        self._d0 = d0
        self._lay = dict(m.sizes_q.layout())
        self._proj = d0.projection             # env.projection: decoding and projection, batch axis first
        self._init_state()

    def _init_state(self) -> None:
        m, days = self.model, self.days
        self.t = 0
        states = [d._state for d in days]
        self.e_mwh = np.stack([s.e_mwh for s in states]).reshape(self.n_batch, -1)
        self.p_last = np.stack([s.p_last for s in states]).reshape(self.n_batch, -1)
        self.tso_last = np.zeros((self.n_batch, m.n_boundary))
        self.line_loading = np.zeros((self.n_batch, m.n_line))
        self.q_last = np.zeros((self.n_batch, m.sizes.n_comp))
        self.v_groups = [np.hstack([s.v_ns[gi] for s in states]) for gi in range(len(m.groups))]
        self.vm = np.stack([s.vm for s in states])

    @property
    def done(self) -> bool:
        return self.t >= self.n_steps

    # ------------------------------------------------------------------ observation
    def ev_limits_mw(self) -> np.ndarray:
        """(2, B, n_station) ``p_min, p_max`` of the stations at the current step (MW)."""
        return self.fleet._limits_mw(self.t).reshape(2, self.n_batch, self.n_station)

    def observation_parts(self) -> dict[str, np.ndarray]:
        """The raw (unscaled) observation of every day, per key of
        :class:`env.observation.ObservationEncoder` (batch axis first): what
        :meth:`GridSimulator.observe` gives each day (after the last step: the last step's
        data, no EVs)."""
        t, n, B = self.t, self.n_steps, self.n_batch
        tc = min(t, n - 1)
        if t < n:
            bd = self.fleet.bounds(t)
            r = lambda a: np.asarray(a, dtype=float).reshape(B, -1)   # noqa: E731
            need = np.maximum(r(bd.e_target_kwh) - r(bd.e_kwh), 0.0)
            ev = np.concatenate((r(bd.p_min_kw), r(bd.p_max_kw), r(bd.n_connected), need), axis=1)
        else:
            ev = np.zeros((B, 4 * self.n_station))
        return {"load": self.load_p[tc], "pv": self.pv_pu[tc], "wind": self.wind_pu[tc], "ev": ev,
                "storage_soc": self.e_mwh, "voltage": self.vm, "forecast": self.fc_rows[tc].reshape(B, -1),
                "thermal": self.p_last, "line_loading": self.line_loading, "boundary": self.tso_last}

    # ------------------------------------------------------------------ the step
    def step_action(self, a: np.ndarray, q_comp_mvar: np.ndarray | None = None) -> BatchedStepOutcome:
        """Play the current step of every day with actions ``a`` (B, n_action) in the flat
        layout (finite; the caller checks), compensators at ``q_comp_mvar`` (B, n_comp) when
        the action carries none (zeros when None), and advance."""
        if self.done:
            raise RuntimeError(f"BatchedSimulator: the day is over (step {self.t} of {self.n_steps})")
        m = self.model
        lims = self.ev_limits_mw()
        req = self._proj.decode(a, lims, q_comp_mvar)
        x = self._proj.project(req, lims, self.e_mwh, self.p_last)
        diff = x - req
        lay = self._lay
        xs = {name: x[:, sl] for name, sl in lay.items()}
        r = self._step_td(xs) if m.is_td else self._step_feeder(xs)
        return self._finish(xs, {name: diff[:, sl] for name, sl in lay.items()}, r)

    # .................................................................. feeders
    def _injection(self, rows: Any, ev_mw: np.ndarray, x: dict[str, np.ndarray], der_f: np.ndarray,
                   shed_f: np.ndarray) -> np.ndarray:
        """(b, N_fb) stacked complex net consumption (p.u.) of the days ``rows``
        (:meth:`GridSimulator._feeder_injection` with the loads kept at ``1 - shed``)."""
        m = self.model
        s = m.control_injection_pu(np.concatenate((ev_mw, x["storage_p_mw"][rows], der_f), axis=1),
                                   x["q_comp_mvar"][rows], x["tie_p_mw"][rows] if m.n_tie else None)
        return s + self.s_load_pu[self.t][rows] * (1.0 - shed_f[:, m.bus_feeder])

    def _solve(self, s: np.ndarray, rows: np.ndarray, shed_f: np.ndarray) -> dict[str, Any]:
        """AC sweeps of the days ``rows`` from their last voltages (:func:`env.feeder_flow.solve_feeders`):
        all their feeders at once; a day whose group fails is solved alone with load shedding
        (``s`` and ``shed_f`` updated in place)."""
        m, cfg = self.model, self.settings
        nb, B = rows.shape[0], self.n_batch
        load = self.s_load_pu[self.t][rows] * (1.0 - shed_f[:, m.bus_feeder])
        vm = np.empty((nb, m.n_fb))
        hp, hq, lp, lq = (np.empty((nb, m.n_feeder)) for _ in range(4))
        v_out = []
        for gi, g in enumerate(m.groups):
            n, k = g.idx_cov.shape
            s_conj = np.conjugate(s[:, g.idx_cov]).transpose(1, 0, 2).reshape(n, nb * k)
            if g.slack_row >= 0:
                s_conj[g.slack_row] = 0.0
            start = self.v_groups[gi].reshape(n, B, k)[:, rows].reshape(n, nb * k)
            v, i_bus, ok = fixed_point_blocks(g.dlf.dot, g.v0, s_conj, start, cfg.sweep_tol_pu,
                                              cfg.sweep_max_iter, k)
            v3 = v.reshape(n, nb, k)
            ok &= ~((v3.real * v3.real + v3.imag * v3.imag) < V_COLLAPSE_PU ** 2).any(axis=(0, 2))
            for j in np.flatnonzero(~ok):            # shed this day's load (as the single simulator)
                vj, ij = shed_group(g, s[j], load[j], shed_f[j], cfg.sweep_tol_pu, cfg.sweep_max_iter)
                v[:, j * k:(j + 1) * k] = vj
                i_bus[:, j * k:(j + 1) * k] = ij
            v_out.append(v)
            vm[:, g.idx] = abs(g.v0)
            vm[:, g.idx_cov] = np.abs(v).reshape(n, nb, k).transpose(1, 0, 2)
            s_head, lp_g, lq_g = head_and_losses(g, i_bus)
            hp[:, g.feeders] = s_head.real.reshape(nb, k)
            hq[:, g.feeders] = s_head.imag.reshape(nb, k)
            lp[:, g.feeders] = lp_g.reshape(nb, k)
            lq[:, g.feeders] = lq_g.reshape(nb, k)
        return {"vm": vm, "v": v_out, "hp": hp, "hq": hq, "lp": lp, "lq": lq}

    def _merge(self, sol: dict[str, Any], rows: np.ndarray, part: dict[str, Any]) -> None:
        """Write the re-solved days ``rows`` (``part``) into ``sol``."""
        for key in ("vm", "hp", "hq", "lp", "lq"):
            sol[key][rows] = part[key]
        for gi, g in enumerate(self.model.groups):
            n, k = g.idx_cov.shape
            sol["v"][gi].reshape(n, self.n_batch, k)[:, rows] = part["v"][gi].reshape(n, rows.shape[0], k)

    def _step_feeder(self, x: dict[str, np.ndarray]) -> dict[str, Any]:
        m, t, B = self.model, self.t, self.n_batch
        res = self.fleet.step(t, (x["ev_p_mw"] * 1e3).reshape(-1))
        ev = res.p_kw.reshape(B, -1) * 1e-3
        der_used = der_used_mw(self.der_avail[t], x["der_curtail_frac"])
        shed_f = np.zeros((B, m.n_feeder))
        rows = np.arange(B)
        s = self._injection(rows, ev, x, der_used[:, :m.n_der_f], shed_f)
        z = np.zeros(B)
        return {"fleet": res, "ev": ev, "der_used": der_used, "sol": self._solve(s, rows, shed_f),
                "shed_f": shed_f, "shed_t": z, "thermal": np.zeros((B, 0)), "imbalance": z, "residual": z,
                "tso_delivered": np.zeros((B, 0)), "backoff": z, "unbalanced": z,
                "line_p": np.zeros((B, 0)), "ref_limit": z}

    # .................................................................. T-D
    def _step_td(self, x: dict[str, np.ndarray]) -> dict[str, Any]:
        m, t, B = self.model, self.t, self.n_batch
        nd_f, nl_f = m.n_der_f, m.n_load_f
        call, dev = tso_call(m, self.tso[t], x["ev_r_up_mw"], x["ev_r_dn_mw"])
        der_used = der_used_mw(self.der_avail[t], x["der_curtail_frac"])
        ev1 = x["ev_p_mw"] + dev
        shed_f = np.zeros((B, m.n_feeder))
        rows = np.arange(B)
        sol = self._solve(self._injection(rows, ev1, x, der_used[:, :nd_f], shed_f), rows, shed_f)
        load_t = self.load_p[t][:, nl_f:]
        load_t_mw = load_t.sum(axis=1)
        load_f_mw = self.load_p[t][:, :nl_f].sum(axis=1)
        imbalance = imbalance_mw(load_t_mw, sol["hp"].sum(axis=1), x["thermal_p_mw"].sum(axis=1),
                                 der_used[:, nd_f:].sum(axis=1))
        bal = balance(m, imbalance, x, dev, der_used, load_t_mw, load_f_mw)
        thermal, dev2, der_used = bal["thermal"], bal["dev"], bal["der_used"]
        shed_t, shed_fb, changed = bal["shed_t"], bal["shed_f"], bal["feeder_changed"]
        backoff, unbalanced = bal["backoff"], bal["unbalanced"]
        ev_set = x["ev_p_mw"] + dev2
        res = self.fleet.step(t, (ev_set * 1e3).reshape(-1))
        ev = res.p_kw.reshape(B, -1) * 1e-3
        changed |= (shed_fb > 0) | (np.abs(ev - ev1).max(axis=1, initial=0.0) > 1e-12)
        rows = np.flatnonzero(changed)
        if rows.size:                            # re-solve the days the balancing changed
            shed_f[rows] = 1.0 - (1.0 - shed_f[rows]) * (1.0 - shed_fb[rows, None])
            sub_shed = shed_f[rows]
            s2 = self._injection(rows, ev[rows], x, der_used[rows, :nd_f], sub_shed)
            self._merge(sol, rows, self._solve(s2, rows, sub_shed))
            shed_f[rows] = sub_shed
        served_t = load_t * (1.0 - shed_t)[:, None]
        residual = served_t.sum(axis=1) + sol["hp"].sum(axis=1) - thermal.sum(axis=1) - der_used[:, nd_f:].sum(axis=1)
        k = m.ref_unit
        thermal[:, k] += residual
        ref_limit = np.zeros(B)
        outside = ~((m.g_p_min[k] - TOL_MW <= thermal[:, k]) & (thermal[:, k] <= m.g_p_max[k] + TOL_MW))
        for b in np.flatnonzero(outside):
            shed_t[b], ref_limit[b] = settle_reference(m, thermal[b], der_used[b], load_t[b], float(shed_t[b]))
            served_t[b] = load_t[b] * (1.0 - shed_t[b])
        inj = np.concatenate((thermal, der_used[:, nd_f:], served_t, sol["hp"]), axis=1) @ m.m_inj_t.T
        line_p = m.dc.flows_pu((inj / m.base_mva_t).T).T * m.base_mva_t
        miss = (ev - ev_set) @ m.f_ev.T
        return {"fleet": res, "ev": ev, "der_used": der_used, "sol": sol, "shed_f": shed_f, "shed_t": shed_t,
                "thermal": thermal, "imbalance": imbalance, "residual": residual, "tso_delivered": call - miss,
                "backoff": backoff, "unbalanced": unbalanced, "line_p": line_p, "ref_limit": ref_limit}

    # .................................................................. accounting
    def _finish(self, x: dict[str, np.ndarray], proj: dict[str, np.ndarray], r: dict[str, Any]) -> BatchedStepOutcome:
        """Storage, served load, violations and :meth:`GridSimulator._costs` of every day; advance."""
        m, t, dt, B = self.model, self.t, self.dt_h, self.n_batch
        sol = r["sol"]
        p_st = x["storage_p_mw"]
        e_new = storage_energy_next(m, self.e_mwh, p_st, dt)
        load = self.load_p[t]
        served = load.copy()
        served[:, :m.n_load_f] *= 1.0 - r["shed_f"][:, m.load_feeder]
        served[:, m.n_load_f:] *= (1.0 - r["shed_t"])[:, None]
        shed_mwh = (load.sum(axis=1) - served.sum(axis=1)) * dt
        vm = sol["vm"]
        viol = voltage_violation_pu(vm, m.vmin_fb, m.vmax_fb)
        ev, der_used, head = r["ev"], r["der_used"], sol["hp"]
        ev_mwh = ev.sum(axis=1) * dt
        unmet_kwh = r["fleet"].unmet_kwh.reshape(B, -1).sum(axis=1)
        curt_mwh = curtailment_mwh(self.der_avail_sum[t], der_used.sum(axis=1), r["backoff"], dt)
        v_puh = viol.sum(axis=1) * dt
        head_mw = head.sum(axis=1)
        if m.is_td:
            req = self.tso[t]
            bviol = boundary_violation_mw(req, r["tso_delivered"])
            bviol_mwh = bviol.sum(axis=1) * dt
            line_p = r["line_p"]
            loading = np.abs(line_p) * m.inv_rate
            loading_max = loading.max(axis=1) if m.any_rated else np.full(B, math.nan)
        else:
            req, line_p, loading = np.zeros((B, 0)), r["line_p"], np.zeros((B, 0))
            bviol_mwh, loading_max = np.zeros(B), np.full(B, math.nan)
        cost = self._costs(x, r, der_used, p_st, ev_mwh, unmet_kwh, shed_mwh, curt_mwh, v_puh, bviol_mwh, head_mw)
        violations = {
            "voltage_puh": v_puh, "voltage_worst_pu": viol.max(axis=1), "voltage_buses": np.count_nonzero(viol, axis=1)
            .astype(float), "load_shed_mwh": shed_mwh, "curtailment_mwh": curt_mwh, "ev_unmet_kwh": unmet_kwh,
            "boundary_violation_mwh": bviol_mwh,
            "line_overload_max": np.maximum(loading_max - 1.0, 0.0) if m.any_rated else np.zeros(B),
            "unbalanced_mw": r["unbalanced"], "ref_unit_limit_mw": r["ref_limit"],
        }
        v_min = np.minimum.reduceat(vm, m.fb_offset, axis=1)
        v_max = np.maximum.reduceat(vm, m.fb_offset, axis=1)
        if not np.isfinite(cost["total"]).all():
            raise ValueError(f"BatchedStepOutcome.cost: total is {cost['total']}")
        out = unchecked(BatchedStepOutcome, dict(
            step=t, cost=cost, violations=violations, setpoints=x, projection=proj, load_p_mw=load,
            load_served_mw=served, der_used_mw=der_used, storage_p_mw=p_st, storage_e_mwh=e_new, ev_p_mw=ev,
            thermal_p_mw=r["thermal"], head_p_mw=head, head_q_mvar=sol["hq"], loss_mw=sol["lp"], v_pu=vm,
            v_min_pu=v_min, v_max_pu=v_max, line_p_mw=line_p, line_loading=loading, imbalance_mw=r["imbalance"],
            residual_mw=r["residual"], tso_requirement_mw=req, tso_delivered_mw=r["tso_delivered"], import_mw=head_mw))
        # advance
        self.t = t + 1
        self.e_mwh = e_new
        if m.is_td:
            self.p_last, self.tso_last, self.line_loading = x["thermal_p_mw"].copy(), req, loading
        self.v_groups, self.vm = sol["v"], vm
        self.q_last = x["q_comp_mvar"]
        return out

    def _costs(self, x: dict[str, np.ndarray], r: dict[str, Any], der_used: np.ndarray, p_st: np.ndarray,
               ev_mwh: np.ndarray, unmet_kwh: np.ndarray, shed_mwh: np.ndarray, curt_mwh: np.ndarray,
               v_puh: np.ndarray, bviol_mwh: np.ndarray, head_mw: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`GridSimulator._costs` with a batch axis (the same terms in the same order)."""
        m, d0, dt = self.model, self._d0, self.dt_h
        ev_res = (x["ev_r_up_mw"] + x["ev_r_dn_mw"]).sum(axis=1) if m.is_td else 0.0
        bought, sold, fuel, spillage, reserves, boundary_energy = energy_terms(
            m, dt, d0._price_list[self.t], d0.price_sell, head_mw, r.get("thermal"), x["thermal_r_up_mw"],
            x["thermal_r_dn_mw"], ev_res, d0.ev_reserve_price)
        return cost_breakdown(d0._tar, dt, bought, sold, fuel, spillage, reserves, boundary_energy, ev_mwh,
                              der_used @ m.der_cost, np.abs(p_st).sum(axis=1), curt_mwh, shed_mwh, unmet_kwh,
                              v_puh, bviol_mwh, r["ref_limit"])
