"""``gridroll p2p``: seed 001's DSO-led bilevel P2P market against the TSO-led scheme (docs/p2p.md).

Example::

    gridroll p2p --case t30d5 --seed 8700
    gridroll p2p --case t30d5 --seed 8700 --adns 1..5

solves one day-ahead horizon of the seed's day (its day-ahead forecast) by both schemes and prints
their BESS throughput and cycles, self-consumption, TN imports, P2P volumes within / across ADNs,
costs per DSO and of the TSO, solve time and MIP gap; ``--adns`` instead prints the scaling
study (variables, constraints, binaries, solve time of the DSO-led MISOCP against the number of
ADNs). ``--out DIR`` writes the figures to ``DIR/p2p.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    from scenarios.regimes import regime_names

    p = sub.add_parser("p2p", help="DSO-led bilevel P2P market (KKT -> MISOCP, SCIP) vs the TSO-led scheme")
    p.add_argument("--case", default="t30d5", help="a T-D case with PV and storage in its feeders (t30d5)")
    p.add_argument("--seed", type=int, default=8700, help="day seed (the day-ahead forecast)")
    p.add_argument("--regime", default="sunny", help=f"one of: {', '.join(regime_names())}")
    p.add_argument("--period-minutes", type=int, default=60, help="planning period (a multiple of 15)")
    p.add_argument("--time-limit", type=float, default=300.0, help="SCIP time limit per MISOCP (s)")
    p.add_argument("--mip-gap", type=float, default=1e-3, help="SCIP relative gap")
    p.add_argument("--adns", default=None, help="scaling study: 'A..B' or a list '1,2,5' of ADN counts")
    p.add_argument("--out", default=None, help="directory for p2p.json")
    p.set_defaults(func=run)


def parse_adns(spec: str) -> list[int]:
    """``"1..5"`` -> [1, 2, 3, 4, 5]; ``"1,3,10"`` -> [1, 3, 10].

    Raises:
        ValueError: malformed or not >= 1.
    """
    try:
        if ".." in spec:
            a, b = (int(x) for x in spec.split(".."))
            out = list(range(a, b + 1))
        else:
            out = [int(x) for x in spec.split(",")]
    except ValueError:
        raise ValueError(f"--adns: expected 'A..B' or 'a,b,c' with integers, got {spec!r}") from None
    if not out or min(out) < 1:
        raise ValueError(f"--adns: ADN counts must be >= 1, got {spec!r}")
    return out


def _day(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    import env
    from policies.p2p.data import P2PSettings, p2p_day
    from scenarios.day import sample_day

    grid = env.load_case(args.case)
    if not grid.is_td:
        raise ValueError(f"case {args.case} is not a T-D case; the P2P market needs a transmission network")
    settings = P2PSettings(period_minutes=args.period_minutes, time_limit_s=args.time_limit, mip_gap=args.mip_gap)
    scenario = sample_day(grid, args.regime, args.seed)
    return grid, p2p_day(grid, scenario.day_ahead, settings), settings


def compare_schemes(grid: Any, day: Any, settings: Any) -> dict[str, dict[str, Any]]:
    """Both schemes' figures (:func:`policies.p2p.market.evaluate`) plus their solve statistics."""
    from policies.p2p.market import evaluate, solve_dso_led, solve_tso_led

    out = {}
    for name, solve in (("dso_led", solve_dso_led), ("tso_led", solve_tso_led)):
        res = solve(grid, day, settings)
        ev = evaluate(res, grid, settings)
        ev.update(status=res.info.status, optimal=res.info.optimal, n_variables=res.info.n_variables, n_constraints=res.info.n_constraints,
                  n_binaries=res.info.n_binaries)
        if res.kkt.get("complementarity_max") is not None:
            ev.update(complementarity_max=res.kkt["complementarity_max"], dual_bound_active=res.kkt["dual_bound_active"])
        out[name] = ev
    return out


def scaling(grid: Any, day: Any, settings: Any, counts: list[int]) -> list[dict[str, Any]]:
    """DSO-led MISOCP size and solve time for each number of ADNs (a failed solve is a row with its
    status, the study goes on)."""
    from policies.p2p.market import solve_dso_led
    from policies.p2p.scaling import grid_with_adns

    rows = []
    for k in counts:
        g, d = grid_with_adns(grid, day, k)
        try:
            res = solve_dso_led(g, d, settings)
        except RuntimeError as exc:          # no incumbent in the time limit: a row that says so
            rows.append({"adns": k, "optimal": False, "status": f"failed: {exc}"})
            continue
        rows.append({"adns": k, "optimal": res.info.optimal, "variables": res.info.n_variables, "constraints": res.info.n_constraints,
                     "binaries": res.info.n_binaries, "solve_s": round(res.info.solve_s, 2),
                     "mip_gap": res.info.mip_gap, "status": res.info.status})
    return rows


def _table(figures: dict[str, dict[str, Any]], grid: Any, currency: str) -> str:
    import pandas as pd

    rows: dict[str, dict[str, Any]] = {}
    keys = [("BESS throughput (MWh)", "bess_throughput_mwh"), ("BESS cycles", "bess_cycles"),
            ("self-consumption", "self_consumption"), ("TN imports (MWh)", "tn_imports_mwh"),
            ("TN exports (MWh)", "tn_exports_mwh"), ("P2P within ADNs (MWh)", "p2p_intra_mwh"),
            ("P2P across ADNs (MWh)", "p2p_cross_mwh"), (f"DSOs' cost ({currency})", "dso_cost_total"),
            (f"TSO generation cost ({currency})", "tso_generation_cost"),
            (f"TSO net cost ({currency})", "tso_net_cost"), (f"system cost ({currency})", "system_cost"),
            ("solve time (s)", "solve_s"), ("SCIP status", "status"), ("MIP gap", "mip_gap"),
            ("binaries", "n_binaries")]
    for scheme, ev in figures.items():
        col = {label: ev[key] for label, key in keys}
        for k, c in enumerate(ev["dso_cost"]):
            col[f"DSO {k} cost ({currency})"] = c
        rows[scheme] = col
    df = pd.DataFrame(rows)
    return df.to_string(float_format=lambda x: f"{x:,.3f}")


def run(args: argparse.Namespace) -> int:
    """Solve and print (see the module docstring)."""
    import pandas as pd

    grid, day, settings = _day(args)
    result: dict[str, Any] = {"case": args.case, "seed": args.seed, "regime": args.regime,
                              "period_minutes": args.period_minutes}
    if args.adns is not None:
        rows = scaling(grid, day, settings, parse_adns(args.adns))
        print(pd.DataFrame(rows).set_index("adns").to_string())
        result["scaling"] = rows
    else:
        figures = compare_schemes(grid, day, settings)
        print(f"{args.case} / {args.regime} / seed {args.seed}: DSO-led bilevel (KKT MISOCP) vs TSO-led")
        print(_table(figures, grid, grid.tariff.currency))
        kkt = figures["dso_led"]
        print(f"KKT: max |slack x dual| {kkt['complementarity_max']:.2e}, dual big-M active: {kkt['dual_bound_active']}")
        for scheme, ev in figures.items():
            if not ev["optimal"]:
                print(f"NOT OPTIMAL: {scheme} stopped at the time limit ({ev['status']}, gap {ev['mip_gap']:.2%})")
        result["schemes"] = figures
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "p2p.json").write_text(json.dumps(result, indent=1, default=float))
        print(f"wrote {out / 'p2p.json'}")
    return 0
