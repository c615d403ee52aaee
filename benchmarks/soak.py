"""Invariant soak: random-action days through the env, every step checked against the physics
invariants; prints, per kind of violation, how many steps had it and how many of those the env
recorded (in ``info["violations"]`` / the cost) — the target is 0 unrecorded.

    python benchmarks/soak.py --cases d33,t30d2 --steps 100000 --seed 1

Actions per day (chosen at random per day): uniform in the Box [-1, 1]; bang-bang (each entry
-1 or +1); out of the box (uniform in [-3, 3], projected by the env).

Invariants (tolerance ``--tol-mw``, 1e-6 MW):

* ``feeder_balance``: per feeder, head P + DER used = load served + losses + storage + EV (never recorded: must not happen);
* ``transmission_balance``: thermal + T wind used = T loads served + sum of feeder heads (T-D; never recorded);
* ``thermal_limits``: every unit within [p_min, p_max]; recorded iff ``ref_unit_limit_mw`` is the amount outside;
* ``thermal_ramp``: applied setpoints within the ramp of the last ones (never recorded; the outputs may
  move further by reserve deployment and the loss residual);
* ``ev_power``: each station's delivered power within this step's [p_min, p_max] of its connected EVs
  (never recorded);
* ``storage_energy``: 0 <= e <= e_max, |p| <= p_max (never recorded);
* ``ev_energy``: each EV's energy within [0, its capacity] (never recorded);
* ``voltage_finite``: every bus voltage finite and > 0 (never recorded);
* ``reward_cost``: reward = -cost["total"] = -(sum of the parts) (never recorded);
* ``der_used``: 0 <= used <= available; ``load_served``: 0 <= served <= demand (never recorded);
* ``voltage_band``: a bus outside [vmin, vmax]; recorded iff ``voltage_puh`` > 0;
* ``load_shed``: served < demand; recorded iff ``load_shed_mwh`` > 0;
* ``curtailment``: used < available; recorded iff ``curtailment_mwh`` > 0;
* ``line_overload``: a rated line above its rating; recorded iff ``line_overload_max`` > 0;
* ``boundary``: TSO call not delivered; recorded iff ``boundary_violation_mwh`` > 0;
* ``unbalanced``: imbalance left after the balancing chain (it is its own record, ``unbalanced_mw``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium as gym  # noqa: E402

import env  # noqa: E402,F401  (registers the envs)

KINDS = ("feeder_balance", "transmission_balance", "thermal_limits", "thermal_ramp", "ev_power", "storage_energy",
         "ev_energy",
         "voltage_finite", "reward_cost", "der_used", "load_served", "voltage_band", "load_shed", "curtailment",
         "line_overload", "boundary", "unbalanced")


class Soak:
    """Counts of (kind, recorded) over the steps of one case."""

    def __init__(self, case: str, tol_mw: float) -> None:
        self.env = gym.make("gridroll/TDGrid-v0", case=case).unwrapped
        self.case = case
        self.tol = tol_mw
        self.count: Counter[tuple[str, bool]] = Counter()
        self.steps = 0
        self.worst: dict[str, float] = {}
        grid = self.env.grid
        m = self.env.model
        self.m = m
        self.grid = grid
        self.n_load_f = sum(len(f.load) for f in grid.feeders)
        self.n_der_f = sum(len(f.der) for f in grid.feeders)
        self.splits = {table: np.cumsum([len(getattr(f, table)) for f in grid.feeders])[:-1]
                       for table in ("load", "der", "evcs", "storage")}
        bus_counts = [f.n_bus for f in grid.feeders]
        self.bus_splits = np.cumsum(bus_counts)[:-1]
        self.vmin = np.concatenate([f.bus.vmin_pu for f in grid.feeders])
        self.vmax = np.concatenate([f.bus.vmax_pu for f in grid.feeders])
        st = [f.storage for f in grid.feeders]
        self.e_max = np.concatenate([s.e_max_mwh for s in st]) if st else np.zeros(0)
        self.p_max_st = np.concatenate([s.p_max_mw for s in st]) if st else np.zeros(0)
        self.sl_ev = dict(self.env.dispatch_layout())["ev_p_mw"]

    def _hit(self, kind: str, recorded: bool, amount: float) -> None:
        self.count[(kind, recorded)] += 1
        if not recorded:
            self.worst[kind] = max(self.worst.get(kind, 0.0), float(amount))

    def day(self, seed: int, rng: np.random.Generator) -> None:
        e = self.env
        e.reset(seed=seed, options={"scenario_seed": seed})
        mode = rng.integers(3)
        n = e.action_space.shape[0]
        done = False
        while not done:
            if mode == 0:
                a = rng.uniform(-1.0, 1.0, n)
            elif mode == 1:
                a = rng.choice([-1.0, 1.0], n)
            else:
                a = rng.uniform(-3.0, 3.0, n)
            lim = e.limits
            ev_range = (lim.low[self.sl_ev], lim.high[self.sl_ev])
            p_last = e.simulator.thermal_p_last_mw.copy() if self.m.is_td else None
            _, reward, done, _, info = e.step(a)
            self.check(reward, info, e.last_outcome)
            out = e.last_outcome
            bad = max(float(np.max(ev_range[0] - out.ev_p_mw, initial=0.0)),
                      float(np.max(out.ev_p_mw - ev_range[1], initial=0.0)))
            if bad > self.tol:
                self._hit("ev_power", False, bad)
            if p_last is not None:
                ramp = self.m.g_ramp * e.simulator.dt_h
                step = float(np.max(np.abs(out.setpoints["thermal_p_mw"] - p_last) - ramp, initial=0.0))
                if step > self.tol:
                    self._hit("thermal_ramp", False, step)
            self.steps += 1

    def check(self, reward: float, info: dict, out: object) -> None:  # noqa: C901
        tol, m, viol = self.tol, self.m, info["violations"]
        o = out  # StepOutcome
        loads = np.split(o.load_served_mw[:self.n_load_f], self.splits["load"])
        ders = np.split(o.der_used_mw[:self.n_der_f], self.splits["der"])
        evs = np.split(o.ev_p_mw, self.splits["evcs"])
        sts = np.split(o.storage_p_mw, self.splits["storage"])
        worst = max(abs(o.head_p_mw[k] + ders[k].sum() - loads[k].sum() - o.loss_mw[k] - sts[k].sum() - evs[k].sum())
                    for k in range(len(self.grid.feeders)))
        if not worst <= tol:
            self._hit("feeder_balance", False, worst)
        if m.is_td:
            gap = abs(o.thermal_p_mw.sum() + o.der_used_mw[self.n_der_f:].sum()
                      - o.load_served_mw[self.n_load_f:].sum() - o.head_p_mw.sum())
            if not gap <= tol:
                self._hit("transmission_balance", False, gap)
            outside = float(max(np.max(m.g_p_min - o.thermal_p_mw), np.max(o.thermal_p_mw - m.g_p_max), 0.0))
            if outside > tol:
                self._hit("thermal_limits", abs(viol["ref_unit_limit_mw"] - outside) <= tol, outside)
            bv = np.abs(o.tso_requirement_mw - o.tso_delivered_mw).max(initial=0.0)
            if bv > tol:
                self._hit("boundary", viol["boundary_violation_mwh"] > 0, bv)
            if m.any_rated and o.line_loading.max(initial=0.0) > 1.0 + 1e-9:
                self._hit("line_overload", viol["line_overload_max"] > 0, o.line_loading.max())
        if o.storage_e_mwh.size:
            bad = max(float(np.max(-o.storage_e_mwh)), float(np.max(o.storage_e_mwh - self.e_max)),
                      float(np.max(np.abs(o.storage_p_mw) - self.p_max_st)))
            if bad > tol:
                self._hit("storage_energy", False, bad)
        fleet = self.env.simulator.fleet
        e_kwh = fleet.e_kwh
        cap = self.env.simulator.scenario.ev.e_capacity_kwh
        if e_kwh.size:
            bad = max(float(np.max(-e_kwh)), float(np.max(e_kwh - cap)))
            if bad > tol * 1e3:
                self._hit("ev_energy", False, bad)
        if not (np.isfinite(o.v_pu).all() and (o.v_pu > 0).all()):
            self._hit("voltage_finite", False, 1.0)
        parts = sum(v for k, v in o.cost.items() if k not in ("total", "boundary_energy"))
        if not (math.isfinite(reward) and abs(reward + o.cost["total"]) <= 1e-9 * max(1.0, abs(reward))
                and abs(parts - o.cost["total"]) <= 1e-9 * max(1.0, abs(parts))):
            self._hit("reward_cost", False, abs(reward + o.cost["total"]))
        if (o.der_used_mw < -tol).any() or (o.der_used_mw > o.der_avail_mw + tol).any():
            self._hit("der_used", False, 1.0)
        if (o.load_served_mw < -tol).any() or (o.load_served_mw > o.load_p_mw + tol).any():
            self._hit("load_served", False, 1.0)
        band = np.maximum(self.vmin - o.v_pu, o.v_pu - self.vmax).max(initial=0.0)
        if band > 0:
            self._hit("voltage_band", viol["voltage_puh"] > 0, band)
        if (o.load_p_mw - o.load_served_mw).max(initial=0.0) > tol:
            self._hit("load_shed", viol["load_shed_mwh"] > 0, 1.0)
        if (o.der_avail_mw - o.der_used_mw).max(initial=0.0) > tol:
            self._hit("curtailment", viol["curtailment_mwh"] > 0, 1.0)
        if abs(viol["unbalanced_mw"]) > tol:
            self._hit("unbalanced", True, abs(viol["unbalanced_mw"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="d33,t30d2")
    p.add_argument("--steps", type=int, default=9600, help="steps per case (rounded up to whole days)")
    p.add_argument("--seed", type=int, default=1, help="day k of a case uses scenario seed seed + k")
    p.add_argument("--tol-mw", type=float, default=1e-6)
    args = p.parse_args(argv)
    total_unrecorded = 0
    for case in args.cases.split(","):
        soak = Soak(case, args.tol_mw)
        rng = np.random.default_rng([args.seed, 12])
        t0 = time.perf_counter()
        k = 0
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)          # a numpy warning is a failure too
            while soak.steps < args.steps:
                soak.day(args.seed + k, rng)
                k += 1
        wall = time.perf_counter() - t0
        print(f"\n== {case}: {soak.steps} steps ({k} days, seeds {args.seed}..{args.seed + k - 1}), {wall:.0f} s ==")
        print(f"{'kind':<22}{'recorded':>10}{'unrecorded':>12}  worst unrecorded")
        for kind in KINDS:
            rec, unrec = soak.count[(kind, True)], soak.count[(kind, False)]
            total_unrecorded += unrec
            worst = f"{soak.worst[kind]:.3g}" if kind in soak.worst else ""
            print(f"{kind:<22}{rec:>10}{unrec:>12}  {worst}")
    print(f"\nunrecorded violations in all: {total_unrecorded}")
    return 0 if total_unrecorded == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
