"""The 24 h flexibility picture of a played day (seed 002 Figure 9 / Table 5, docs/flexibility.md §7).

:func:`flex_day` samples the day, plays it with a policy (the heuristic by default) to get
the operating point, takes the hour marks, computes the p-box demand of the system, of the
transmission and of each feeder from the forecast model's own error samples
(:mod:`scenarios.flex_demand`), and the supplies and margins (:mod:`env.flex_supply`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from env.flex_supply import FlexMargins, FlexSchedule, margins
from scenarios.flex_demand import MODELS, demand_of, over_estimation

#: seed 002 Table 5: maximum up / down margins (MW) by source type
SEED_TABLE5 = {"demand": (65.0, -61.0), "thermal": (89.0, -49.0), "hydro": (56.0, -48.0),
               "distribution": (31.0, -56.0)}
#: the interface limit of each feeder: the IEEE 13 node feeder's 5 MVA substation transformer (Kersting)
BOUNDARY_P_MAX_MW = 5.0


@dataclass(frozen=True)
class FlexDay:
    """Hourly demand, supplies and margins of one day, and the demand models' over-estimation."""

    frame: pd.DataFrame
    margins: FlexMargins
    table5: pd.DataFrame
    over_estimation: pd.DataFrame


def play_schedule(grid: Any, scenario: Any, policy: Any, stride: int) -> FlexSchedule:
    """Play ``scenario`` with ``policy`` and keep the operating point at every ``stride``-th step
    (storage energy before the step, so the supply is what the step could still move)."""
    from env.simulator import GridModel, GridSimulator

    sim = GridSimulator(grid, scenario, model=GridModel(grid))
    policy.reset(0)
    n_der_f = sum(len(f.der) for f in grid.feeders)
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("th", "da", "du", "sp", "se", "ev", "lo", "hi", "head")}
    while not sim.done:
        t = sim.t
        e_before = np.array(sim.storage_e_mwh)
        lim = sim.limits()
        lo, hi = lim.bounds("ev_p_mw")
        out = sim.step(policy.act(sim.observe()))
        if t % stride:
            continue
        for key, val in (("th", out.thermal_p_mw), ("da", out.der_avail_mw[:n_der_f]),
                         ("du", out.der_used_mw[:n_der_f]), ("sp", out.storage_p_mw), ("se", e_before),
                         ("ev", out.ev_p_mw), ("lo", lo), ("hi", hi), ("head", out.head_p_mw)):
            rows[key].append(np.array(val, dtype=float))
    a = {k: np.vstack(v) for k, v in rows.items()}
    return FlexSchedule(dt_h=scenario.dt_minutes * stride / 60.0, thermal_p_mw=a["th"], der_avail_mw=a["da"],
                        der_used_mw=a["du"], storage_p_mw=a["sp"], storage_e_mwh=a["se"], ev_p_mw=a["ev"],
                        ev_lo_mw=a["lo"], ev_hi_mw=a["hi"], head_p_mw=a["head"])


def flex_day(case: str, seed: int, regime: str = "cloudy", beta: float = 0.95, n_samples: int = 400,
             policy: str = "heuristic", boundary_p_max_mw: float = BOUNDARY_P_MAX_MW) -> FlexDay:
    """The hourly flexibility demand, supplies and margins of day ``seed`` of ``case``."""
    import env
    from policies import make_policy
    from scenarios.day import sample_day
    from scenarios.flex_demand import day_ahead_errors

    grid = env.load_case(case)
    if not grid.is_td:
        raise ValueError(f"flex: case {case!r} has no transmission network (a T-D case is required)")
    scenario = sample_day(grid, regime, seed)
    stride = 60 // scenario.dt_minutes
    errors = {k: v.every(stride) for k, v in
              day_ahead_errors(scenario, n_samples, np.random.default_rng([seed, 1])).items()}
    held_out = {k: v.every(stride) for k, v in
                day_ahead_errors(scenario, n_samples, np.random.default_rng([seed, 2])).items()}
    feeders = [f"f{k}" for k in range(len(grid.feeders))]
    system = errors["t"]
    for k in feeders:
        system = system + errors[k]
    d_sys = demand_of(system, beta)
    d_t = demand_of(errors["t"], beta)
    d_f = [demand_of(errors[k], beta) for k in feeders]
    sched = play_schedule(grid, scenario, make_policy(policy, grid), stride)
    # demand of step t (for t -> t+1) against the supply at the operating point of step t
    cut = lambda s: FlexSchedule(**{f: (getattr(s, f)[:-1] if f != "dt_h" else s.dt_h)  # noqa: E731
                                    for f in FlexSchedule.__dataclass_fields__})
    m = margins(grid, cut(sched), d_t.up_mw, d_t.down_mw, np.column_stack([d.up_mw for d in d_f]),
                np.column_stack([d.down_mw for d in d_f]), boundary_p_max_mw)
    hours = np.arange(d_sys.up_mw.shape[0])
    frame = pd.DataFrame({"hour": hours, "demand_up_mw": d_sys.up_mw, "demand_down_mw": d_sys.down_mw})
    for kind in ("thermal", "hydro", "distribution"):
        frame[f"{kind}_up_mw"] = m.supply_up[kind]
        frame[f"{kind}_down_mw"] = -m.supply_down[kind]
    for j, k in enumerate(feeders):
        frame[f"{k}_margin_up_mw"] = m.feeder_margin_up[:, j]
        frame[f"{k}_margin_down_mw"] = -m.feeder_margin_down[:, j]
    frame["shortfall_up_mw"], frame["shortfall_down_mw"] = m.shortfall_up, m.shortfall_down
    ours = {"demand": (d_sys.up_mw.max(), d_sys.down_mw.min())}
    for kind in ("thermal", "hydro", "distribution"):
        ours[kind] = (m.supply_up[kind].max(), -m.supply_down[kind].max())
    table5 = pd.DataFrame([{"source": k, "seed_up_mw": SEED_TABLE5[k][0], "seed_down_mw": SEED_TABLE5[k][1],
                            "ours_up_mw": ours[k][0], "ours_down_mw": ours[k][1]} for k in SEED_TABLE5])
    over = []
    for model in MODELS:
        d = demand_of(system, beta, model=model)
        row = over_estimation(d, system.net_load_mw, held_out_net(held_out, feeders))
        over.append({"model": model, "peak_up_mw": d.up_mw.max(), "peak_down_mw": d.down_mw.min(), **row})
    return FlexDay(frame, m, table5.set_index("source"), pd.DataFrame(over).set_index("model"))


def held_out_net(held_out: dict, feeders: list[str]) -> np.ndarray:
    """System net-load error samples of the held-out draws (realized days for the over-estimation)."""
    net = held_out["t"].net
    for k in feeders:
        net = net + held_out[k].net
    return net


def plot_flex(day: FlexDay, path: str) -> str:
    """Figure 9 of seed 002: 24 h demand and each source's up / down margins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = day.frame
    fig, ax = plt.subplots(figsize=(9, 4.5))
    x = f.hour.to_numpy()
    ax.plot(x, f.demand_up_mw, "k-", lw=2, label="demand up")
    ax.plot(x, f.demand_down_mw, "k--", lw=2, label="demand down")
    up, down = np.zeros(len(x)), np.zeros(len(x))
    for kind, color in (("thermal", "tab:red"), ("hydro", "tab:blue"), ("distribution", "tab:green")):
        ax.bar(x, f[f"{kind}_up_mw"], bottom=up, width=0.8, alpha=0.45, color=color, label=f"{kind} up / down")
        ax.bar(x, f[f"{kind}_down_mw"], bottom=down, width=0.8, alpha=0.45, color=color)
        up, down = up + f[f"{kind}_up_mw"].to_numpy(), down + f[f"{kind}_down_mw"].to_numpy()
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("hour")
    ax.set_ylabel("MW")
    ax.set_title("System flexibility demand (p-box) and supply by source (stacked)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
