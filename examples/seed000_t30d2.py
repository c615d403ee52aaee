"""Seed 000's comparison on t30d2: the DRO-ARO variants on the same sampled days, next to the paper.

Runs (or resumes) the sweep of ``gridroll compare`` for ``heuristic``, the seven DRO-ARO
variants and the perfect-information bound, then prints the compare table and the figures
seed 000 reports (relative total cost aro_dro vs aro_ro, worst-day curtailment and shedding vs
aro_so, boundary violation vs aro_so and dro_only, evcs_both vs evcs_dso_only and evcs_none)::

    python examples/seed000_t30d2.py --days 10 --out runs/seed000            # the recourse in the cleared band
    python examples/seed000_t30d2.py --days 10 --redispatch 50 --out runs/seed000_rd  # + re-dispatch at 50 $/MWh

The loop's reactive SOCP runs by default (``--no-reactive`` keeps the compensators at 0). The
compare table has a ``fallbacks d/steps`` column (days / steps on which a policy played something
other than its own rule, e.g. no day-ahead plan) and ``SOCP fallbacks``; a warning line names every
policy that fell back, with the first reason.

``--redispatch P`` gives every DRO-ARO variant ``AroDroSettings(redispatch_price_per_mwh=P)``
(thermal setpoints may leave the cleared band at that price); use a separate ``--out`` per
setting (the sweep folder does not record policy settings).
"""

from __future__ import annotations

import argparse
import functools
import os
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pandas as pd  # noqa: E402

from controller.cli_compare import print_comparison  # noqa: E402
from controller.experiments import SweepConfig, run_sweep  # noqa: E402
from controller.stats import COMPARE_WORST_KPIS, KEY_KPIS, compare_policies  # noqa: E402
from policies import TD_ONLY_POLICIES, make_policy  # noqa: E402
from policies.aro_dro import AroDroSettings  # noqa: E402

POLICIES = ("heuristic", "aro_dro", "aro_ro", "aro_so", "dro_only", "evcs_both", "evcs_dso_only", "evcs_none",
            "perfect_information")

# (what, ours, reference, paper's figure) - seed 000, T30D2, section "Numerical results"
PAPER = (
    ("total cost", "aro_dro", "aro_ro", "-10.11 %"),
    ("worst curtailment", "aro_dro", "aro_so", "-11.75 MW"),
    ("worst load shed", "aro_dro", "aro_so", "-8.93 MW"),
    ("boundary violation", "aro_dro", "aro_so", "-50.12 %"),
    ("boundary violation", "aro_dro", "dro_only", "(less)"),
    ("total cost", "evcs_both", "evcs_dso_only", "-13.95 %"),
    ("total cost", "evcs_both", "evcs_none", "-20.63 %"),
)
_COLUMN = {"total cost": "total_cost", "worst curtailment": "worst_curtailment_mwh",
           "worst load shed": "worst_load_shed_mwh", "boundary violation": "boundary_violation_mw"}


def _factory(redispatch: float | None, name: str, grid: Any, compensators: bool = True) -> Any:
    if name in TD_ONLY_POLICIES:
        return make_policy(name, grid, settings=AroDroSettings(redispatch_price_per_mwh=redispatch))
    return make_policy(name, grid, compensators=compensators)


def paper_table(table: pd.DataFrame) -> pd.DataFrame:
    """Ours next to seed 000's figures: the difference of each pair, absolute and relative."""
    rows = table.set_index("policy")
    out = []
    for what, ours, ref, paper in PAPER:
        col = _COLUMN[what]
        a, b = float(rows.at[ours, col]), float(rows.at[ref, col])
        rel = (a - b) / abs(b) if b else float("nan")
        out.append({"figure": what, "policy": ours, "vs": ref, "ours": a, "reference": b, "diff": a - b,
                    "diff_%": 100 * rel, "paper": paper})
    return pd.DataFrame(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--regime", default="cloudy")
    p.add_argument("--redispatch", type=float, default=None, help="re-dispatch price beyond the band ($/MWh)")
    p.add_argument("--no-reactive", action="store_true",
                   help="keep the compensators at 0 (default: the loop's reactive SOCP, as in gridroll compare)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="runs/seed000")
    args = p.parse_args()
    config = SweepConfig(case="t30d2", policies=POLICIES, regimes=(args.regime,), days=args.days, seed=args.seed,
                         reactive=not args.no_reactive)
    factory = functools.partial(_factory, args.redispatch, compensators=not args.no_reactive)
    result = run_sweep(config, args.out, workers=args.workers, policy_factory=factory)
    table = compare_policies(result.summary, kpis=KEY_KPIS, worst=COMPARE_WORST_KPIS)
    print(f"{result.n_ran} runs done, {result.n_reused} reused from {result.out}")
    print_comparison(table, result.summary, baseline="heuristic", confidence=0.95)
    band = "hard cleared band" if args.redispatch is None else f"re-dispatch at {args.redispatch:g} $/MWh"
    print(f"\nseed 000's figures (t30d2, {args.days} {args.regime} days, recourse: {band}; ours in MWh per day)")
    with pd.option_context("display.width", 200, "display.float_format", "{:,.2f}".format):
        print(paper_table(table).to_string(index=False))


if __name__ == "__main__":
    main()
