"""The ``gridroll`` command line: ``gridroll cases | scenarios | run | compare | stress | plan | flex | p2p | stvs``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import pandas as pd


def cases_table() -> pd.DataFrame:
    """One row per case: size, DER by kind (count and MW), EV stations, compensators."""
    from env import case_names, load_case

    rows = []
    for name in case_names():
        grid = load_case(name)
        nets = list(grid.feeders) + ([grid.transmission] if grid.transmission is not None else [])
        kinds = [(k, p) for net in nets for k, p in zip(net.der.kind, net.der.p_max_mw)]
        row = {
            "case": name,
            "buses": sum(n.n_bus for n in nets),
            "branches": sum(len(n.branch) for n in nets),
            "feeders": len(grid.feeders),
            "thermal_units": sum(len(n.gen) for n in nets),
            "load_mw": round(sum(float(n.load.p_mw.sum()) for n in nets), 2),
        }
        for kind in ("pv", "wind"):
            mw = [p for k, p in kinds if k == kind]
            row[f"{kind}_units"] = len(mw)
            row[f"{kind}_mw"] = round(float(sum(mw)), 2)
        row["storage_mwh"] = round(sum(float(n.storage.e_max_mwh.sum()) for n in nets), 2)
        row["evcs"] = sum(len(n.evcs) for n in nets)
        row["compensators"] = sum(len(n.compensator) for n in nets)
        rows.append(row)
    return pd.DataFrame(rows).set_index("case")


def _cmd_cases(args: argparse.Namespace) -> int:
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(cases_table().to_string())
    return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` shows every option's default and keeps the descriptions' line breaks."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose ``--help`` lists the default of every option, also of options
    declared without a help text."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        if not kwargs.get("help") and args and args[0].startswith("--"):
            kwargs["help"] = args[0].removeprefix("--").replace("-", " ")
        return super().add_argument(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gridroll", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser,
                                title="commands (`gridroll COMMAND --help` for each)")
    p = sub.add_parser("cases", help="list the named grid cases")
    p.set_defaults(func=_cmd_cases)
    for register in _registrars():
        register(sub)
    return parser


def _registrars() -> list[Callable[[argparse._SubParsersAction], None]]:
    """The sub-commands defined in their own modules."""
    from controller import cli_compare, cli_flex, cli_p2p, cli_plan, cli_run, cli_scenarios, cli_stvs

    return [cli_scenarios.add_parser, cli_run.add_parser, cli_compare.add_parser, cli_plan.add_parser,
            cli_flex.add_parser, cli_p2p.add_parser, cli_stvs.add_parser]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gridroll`` console command.

    Expected user errors (a ``ValueError``: unknown names, bad values, an ``--out`` that is a
    file, unwritable or holds other results; an ``OSError`` from the file system) print one line
    ``gridroll <command>: error: ...`` on stderr and return 2; argparse's own usage errors also
    exit 2. Anything else is a bug and keeps its traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as exc:  # bad input, unusable paths: one clear line, no traceback
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"gridroll {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gridroll {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
