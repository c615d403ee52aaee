"""Time-domain simulation of a T-D operating point with ANDES (optional ``stvs`` extra).

The transmission system is ANDES's IEEE 14 dynamic case shipped in the package
(``ieee14/ieee14_fault.xlsx``: GENROU machines, ESST3A / EXST1 exciters, TGOV1 governors).
Each feeder is an aggregate load at its PCC drawing the head exchange gridroll computed;
loads are ANDES PQ loads, converted to constant impedance in the time domain (a
voltage-dependent static load). See docs/stvs.md for the model and its limits.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

from env.stvs.indices import tvci, vdsi
from env.stvs.operating_point import StvsOperatingPoint

ANDES_CASE = "ieee14/ieee14_fault.xlsx"
N_BUS_IEEE14 = 14


@dataclass(frozen=True)
class FaultSpec:
    """A three-phase fault at ``bus`` (0-based) applied at ``t_fault_s``, cleared at ``t_clear_s``."""

    bus: int = 3                # IEEE 14 bus 4 (ANDES numbering), next to both feeders' paths
    t_fault_s: float = 0.2
    t_clear_s: float = 0.4
    t_end_s: float = 3.0
    x_fault_pu: float = 1e-4

    def __post_init__(self) -> None:
        if not 0.0 < self.t_fault_s < self.t_clear_s < self.t_end_s:
            raise ValueError(f"FaultSpec: need 0 < t_fault_s < t_clear_s < t_end_s; got {self}")
        if self.bus < 0 or self.x_fault_pu <= 0:
            raise ValueError(f"FaultSpec: bus must be >= 0 and x_fault_pu > 0; got {self}")


DELAYED_CLEARING = FaultSpec(t_clear_s=0.6)   # the unstable case (seed 002 Figure 1's delayed clearing)


@dataclass(frozen=True)
class StvsRun:
    """One time-domain run: critical-bus voltages (0-based bus numbers) and the indices;
    ``v_all_pu`` (n, 14) every bus's voltage (the stress case's band index, docs/stvs.md)."""

    t_s: np.ndarray
    v_pu: np.ndarray
    critical_bus: tuple[int, ...]
    reached_end: bool
    tvci: int
    vdsi: float
    wall_s: float
    fault: FaultSpec
    v_all_pu: np.ndarray


def critical_buses(op: StvsOperatingPoint, fault: FaultSpec) -> tuple[int, ...]:
    """The fault bus and the feeders' PCCs (seed 002 keeps the key nodes of the fault area)."""
    return tuple(sorted({fault.bus, *op.pcc_bus}))


def _system(op: StvsOperatingPoint, fault: FaultSpec):  # noqa: ANN202 - andes.System
    import andes

    if op.n_bus != N_BUS_IEEE14:
        raise ValueError(f"STVS time-domain simulation maps onto ANDES's IEEE 14 case; this operating point "
                         f"has {op.n_bus} buses (only case14-based T-D cases such as t14d2)")
    if not 0 <= fault.bus < N_BUS_IEEE14:
        raise ValueError(f"FaultSpec.bus {fault.bus} outside 0..13")
    andes.config_logger(stream_level=50)
    ss = andes.load(andes.get_case(ANDES_CASE), setup=False, no_output=True, default_config=True)
    base = float(ss.config.mva)
    net_p, net_q = op.net_load_mw()
    pv_bus = {int(b): i for b, i in zip(ss.PV.bus.v, ss.PV.idx.v)}
    slack_bus = int(ss.Slack.bus.v[0])
    gen = op.gen_p_mw.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for b, idx in pv_bus.items():              # machines keep their place; t14d2 has none at bus 8
            ss.PV.alter("p0", idx, gen[b - 1] / base)
            gen[b - 1] = 0.0
        gen[slack_bus - 1] = 0.0                   # the slack machine balances
        net_p = net_p - gen                        # a unit where ANDES has no machine: a negative load
        pq_bus = {int(b): i for b, i in zip(ss.PQ.bus.v, ss.PQ.idx.v)}
        for b in range(1, N_BUS_IEEE14 + 1):
            p, q = net_p[b - 1] / base, net_q[b - 1] / base
            if b in pq_bus:
                ss.PQ.alter("p0", pq_bus[b], p)
                ss.PQ.alter("q0", pq_bus[b], q)
            elif abs(p) > 1e-9 or abs(q) > 1e-9:
                vn = float(ss.Bus.Vn.v[list(ss.Bus.idx.v).index(b)])
                ss.add("PQ", {"idx": f"PQ_gr{b}", "name": f"PQ_gr{b}", "bus": b, "Vn": vn, "p0": p, "q0": q})
        ss.Fault.alter("bus", ss.Fault.idx.v[0], fault.bus + 1)
        ss.Fault.alter("tf", ss.Fault.idx.v[0], fault.t_fault_s)
        ss.Fault.alter("tc", ss.Fault.idx.v[0], fault.t_clear_s)
        ss.Fault.alter("xf", ss.Fault.idx.v[0], fault.x_fault_pu)
    return ss


def simulate(op: StvsOperatingPoint, fault: FaultSpec = FaultSpec()) -> StvsRun:
    """Power flow and time-domain simulation of ``op`` under ``fault``; TVCI and VDSI of the
    critical buses. Raises RuntimeError when the pre-fault power flow does not converge."""
    t0 = time.perf_counter()
    ss = _system(op, fault)
    ss.setup()
    if not ss.PFlow.run() or not ss.PFlow.converged:
        raise RuntimeError("ANDES power flow did not converge for this operating point")
    ss.TDS.config.tf = fault.t_end_s
    ss.TDS.config.no_tqdm = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ss.TDS.run()
    t_s = np.asarray(ss.dae.ts.t, dtype=float)
    crit = critical_buses(op, fault)
    order = [list(ss.Bus.idx.v).index(b + 1) for b in range(N_BUS_IEEE14)]    # 0-based bus b in column b
    v_all = np.asarray(ss.dae.ts.y[:, ss.Bus.v.a[order]], dtype=float)
    v = v_all[:, list(crit)]
    reached = bool(t_s[-1] >= fault.t_end_s - 1e-6)
    return StvsRun(t_s, v, crit, reached, tvci(t_s, v, fault.t_end_s, reached),
                   vdsi(t_s, v, fault.t_clear_s, fault.t_end_s), time.perf_counter() - t0, fault, v_all)
