"""``gridroll stvs``: time-domain simulation (ANDES) of one step of a T-D day, the critical buses'
voltages after a three-phase fault, TVCI / VDSI and the surrogate's estimate (docs/stvs.md)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stvs", help="short-term voltage stability of one step by time-domain simulation (ANDES)")
    p.add_argument("--case", default="t14d2", help="a case14-based T-D case (t14d2)")
    p.add_argument("--regime", default="cloudy", help="scenario regime of the day")
    p.add_argument("--seed", type=int, default=1, help="day seed (same seed, same day)")
    p.add_argument("--step", type=int, default=48, help="step of the day whose operating point is simulated")
    p.add_argument("--policy", default="heuristic", help="policy that plays the day up to --step")
    p.add_argument("--clear", type=float, default=0.4, help="fault clearing time, s (fault at 0.2 s)")
    p.add_argument("--fault-bus", type=int, default=3, help="faulted transmission bus (0-based)")
    p.add_argument("--plot", default=None, help="PNG path for the critical buses' voltages")
    p.set_defaults(func=run)


def play_operating_points(grid: Any, regime: str, seed: int, policy: Any, dt_minutes: int = 15,
                          last_step: int | None = None) -> Iterator[tuple[Any, Any]]:
    """Play day ``seed`` of ``grid`` with ``policy`` (an object, reset here) and yield
    (StepOutcome, STVS operating point) per step, through ``last_step`` (default: the whole day)."""
    from env.simulator import GridModel, GridSimulator
    from env.stvs.operating_point import operating_point_from_outcome
    from scenarios.day import sample_day

    model = GridModel(grid)
    sim = GridSimulator(grid, sample_day(grid, regime, seed, dt_minutes=dt_minutes), model=model)
    policy.reset(seed)
    while not sim.done:
        out = sim.step(policy.act(sim.observe()))
        yield out, operating_point_from_outcome(grid, model, out)
        if last_step is not None and out.step >= last_step:
            return


def step_operating_point(case: str, regime: str, seed: int, step: int, policy: str) -> tuple[Any, Any]:
    """Play day ``seed`` with ``policy`` through ``step``; (grid, operating point of that step)."""
    import env
    from policies import make_policy

    grid = env.load_case(case)
    if not grid.is_td:
        raise ValueError(f"stvs: case {case!r} has no transmission network (a T-D case is required)")
    out = op = None
    for out, op in play_operating_points(grid, regime, seed, make_policy(policy, grid), last_step=step):
        pass
    if out is None or out.step != step:
        raise ValueError(f"--step {step} is outside the day (0..{out.step if out else -1})")
    return grid, op


def run(args: argparse.Namespace) -> int:
    from env.stvs.andes_sim import FaultSpec, simulate
    from env.stvs.surrogate import surrogate_for

    if args.seed < 0 or args.step < 0:
        raise ValueError("--seed and --step must be >= 0")
    grid, op = step_operating_point(args.case, args.regime, args.seed, args.step, args.policy)
    fault = FaultSpec(bus=args.fault_bus, t_clear_s=args.clear)
    res = simulate(op, fault)
    print(f"{args.case} seed {args.seed} step {args.step}: fault at bus {args.fault_bus} 0.2 s, cleared "
          f"{args.clear} s; time-domain TVCI {res.tvci}, VDSI {res.vdsi:.4f} ({res.wall_s:.2f} s)")
    sur = surrogate_for(grid)
    if sur is not None and fault != FaultSpec():
        print("surrogate: trained on the default fault only (bus 3 at 0.2 s, cleared 0.4 s); not evaluated")
    elif sur is not None:
        tv, vd = sur.predict(sur.features(grid, op))
        print(f"surrogate: TVCI {int(tv[0])}, VDSI {float(vd[0]):.4f}")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for j, b in enumerate(res.critical_bus):
            ax.plot(res.t_s, res.v_pu[:, j], label=f"IEEE 14 bus {b + 1}")
        ax.axvspan(res.fault.t_fault_s, res.fault.t_clear_s, color="0.9", label="fault")
        ax.set(xlabel="time (s)", ylabel="voltage (p.u.)",
               title=f"{args.case} step {args.step}: TVCI {res.tvci}, VDSI {res.vdsi:.3f}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        plt.close(fig)
        print(f"wrote {args.plot}")
    return 0
