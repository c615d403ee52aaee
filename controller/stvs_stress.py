"""The STVS stress case (seed 002 Figure 8, docs/stvs.md "Stress case"): ``flex_coordinated`` on a
high-penetration t14d2 day without and with the STVS terms, each schedule's stress hours simulated
in ANDES (three-phase fault at bus 4, 0.2 s -> 0.4 s) with every transmission bus's voltage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

STRESS_REGIME = "stvs_stress"
V_LIMIT_PU = 1.05          # the admissible band's upper limit (seed 002 §5.1: 0.95-1.05 p.u.)


@dataclass(frozen=True)
class ScheduleRuns:
    """One schedule of the stress day: its cost, the env's feeder voltages and the ANDES runs."""

    label: str
    cost_total: float
    feeder_v_max_pu: float
    steps: tuple[int, ...]
    runs: tuple[Any, ...]           # env.stvs.andes_sim.StvsRun per simulated step
    surrogate: tuple[tuple[int, float], ...]   # the band surrogate's (TVCI, band VDSI) per simulated step


def play_schedule(grid: Any, regime: str, seed: int, flex: Any) -> tuple[list[Any], list[Any]]:
    """One hourly day of ``flex_coordinated`` with ``flex`` (FlexSettings): (outcomes, operating
    points) per step; a fallback to the heuristic raises (the comparison would be meaningless)."""
    from controller.cli_stvs import play_operating_points
    from policies.flex_coordinated import FlexCoordinatedPolicy

    pol = FlexCoordinatedPolicy(grid, flex=flex)
    played = list(play_operating_points(grid, regime, seed, pol, dt_minutes=60))
    if pol.fallback_log:
        raise RuntimeError(f"stress day {seed}: flex_coordinated fell back to the heuristic: {pol.fallback_log}")
    return [o for o, _ in played], [op for _, op in played]


def stress_steps(grid: Any, ops: list[Any], n: int) -> tuple[int, ...]:
    """The ``n`` steps with the largest transmission PV output (the PV site raises the voltages)."""
    pv_bus = np.unique(grid.transmission.der.bus[np.asarray(grid.transmission.der.kind) == "pv"])
    pv = np.array([op.der_p_mw[pv_bus].sum() for op in ops])
    return tuple(sorted(int(k) for k in np.argsort(-pv, kind="stable")[:n]))


def compare(seed: int, risk_per_h: float, deviation_per_h: float, regime: str = STRESS_REGIME,
            n_steps: int = 3) -> tuple[ScheduleRuns, ScheduleRuns]:
    """The stress day ``seed`` without (``stvs_*`` = 0) and with the STVS terms read from the band
    surrogate; ANDES at the ``n_steps`` stress steps of the schedule without STVS (the same steps
    for both)."""
    import env
    from env.stvs.andes_sim import FaultSpec, simulate
    from env.stvs.surrogate import surrogate_for
    from policies.flex_coordinated import FlexSettings

    grid = env.load_case("t14d2")
    sur = surrogate_for(grid, band=True)
    aware = FlexSettings(stvs_risk_per_h=risk_per_h, stvs_deviation_per_h=deviation_per_h, stvs_surrogate="band")
    plays = {label: play_schedule(grid, regime, seed, flex) for label, flex in (("without STVS", FlexSettings()),
                                                                        ("STVS-aware", aware))}
    steps = stress_steps(grid, plays["without STVS"][1], n_steps)
    out = []
    for label, (outcomes, ops) in plays.items():
        runs = tuple(simulate(ops[k], FaultSpec()) for k in steps)
        est = tuple((int(a[0]), float(b[0])) for a, b in (sur.predict(sur.features(grid, ops[k])) for k in steps))
        out.append(ScheduleRuns(label, float(sum(o.cost["total"] for o in outcomes)),
                                float(max(np.max(o.v_max_pu) for o in outcomes)), steps, runs, est))
    return out[0], out[1]


def summary_row(seed: int, s: ScheduleRuns) -> dict[str, float | int | str]:
    """The figures of one schedule: ANDES voltages (pre-fault, transient peak, settled after the
    fault), TVCI / VDSI (seed's) and the band VDSI over the stress steps, cost, feeder max V."""
    from env.stvs.indices import EPS_BAND, settled_voltage, vdsi

    pre, peak, settled, band = [], [], [], []
    for r in s.runs:
        f = r.fault
        pre.append(float(r.v_all_pu[r.t_s < f.t_fault_s].max()))
        peak.append(float(r.v_all_pu[r.t_s >= f.t_clear_s].max()))
        settled.append(float(settled_voltage(r.t_s, r.v_all_pu, f.t_end_s).max()) if r.tvci else float("nan"))
        band.append(vdsi(r.t_s, r.v_all_pu, f.t_clear_s, f.t_end_s, eps=EPS_BAND))
    return {"seed": seed, "schedule": s.label, "cost_total": s.cost_total,
            "v_prefault_max_pu": max(pre), "v_settled_max_pu": max(settled), "v_transient_peak_pu": max(peak),
            "tvci_min": min(r.tvci for r in s.runs), "vdsi_max": max(r.vdsi for r in s.runs),
            "vdsi_band_max": max(band), "surrogate_tvci_min": min(c for c, _ in s.surrogate),
            "surrogate_band_max": max(v for _, v in s.surrogate),
            "feeder_v_max_pu": s.feeder_v_max_pu, "steps": " ".join(map(str, s.steps))}


def plot(seed: int, pair: tuple[ScheduleRuns, ScheduleRuns], path: str) -> None:
    """Every transmission bus's voltage at the worst stress step of each schedule (two panels)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from env.stvs.indices import settled_voltage

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, s in zip(axes, pair):
        j = int(np.argmax([settled_voltage(r.t_s, r.v_all_pu, r.fault.t_end_s).max() for r in s.runs]))
        r = s.runs[j]
        for b in range(r.v_all_pu.shape[1]):
            ax.plot(r.t_s, r.v_all_pu[:, b], lw=1.0 if b != 11 else 2.0,
                    label=f"bus {b + 1}" if b in (11, 12, 13, 3) else None)
        ax.axhline(V_LIMIT_PU, color="k", ls="--", lw=0.8, label=f"{V_LIMIT_PU} p.u.")
        ax.axvspan(r.fault.t_fault_s, r.fault.t_clear_s, color="0.9")
        ax.set(xlabel="time (s)", title=f"{s.label}: step {s.steps[j]} (h), cost {s.cost_total:,.0f}",
               ylim=(0.8, 1.25))
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("voltage (p.u.)")
    fig.suptitle(f"t14d2 {STRESS_REGIME} seed {seed}: IEEE 14 bus voltages, fault at bus 4 0.2-0.4 s (ANDES)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
