"""``relulab list [PATTERN] [--json]``: the activations of the zoo."""

from __future__ import annotations

import argparse

from relulab.cli.output import format_table, mark, print_json, shorten
from relulab.errors import UserError
from relulab.registry import activation_info, did_you_mean, list_activations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "list",
        help="list the activations (optionally matching a wildcard pattern)",
        description="List the activations of the zoo with their formulas and properties.",
        epilog="examples:\n  relulab list\n  relulab list '*relu*'\n  relulab list 'x*' --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pattern", nargs="?", help="shell-style wildcard, e.g. '*relu*'")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    names = list_activations(args.pattern)
    if not names:  # exit status 1 is kept for bugs, so an empty answer is the user's error
        hint = (
            ""
            if any(c in args.pattern for c in "*?[")
            else did_you_mean(args.pattern.lower(), list_activations())
        )
        raise UserError(f"no activation matches {args.pattern!r}{hint}")
    if args.json:
        print_json([activation_info(n).to_dict() for n in names])
        return 0
    rows = []
    for name in names:
        info = activation_info(name)
        rows.append(
            [
                name,
                shorten(info.formula, 58),
                mark(info.piecewise_linear),
                mark(info.smooth),
                mark(info.monotonic),
                mark(info.bounded_below),
                ", ".join(info.trainable) or "-",
            ]
        )
    headers = ["name", "formula", "piecewise-linear", "C1", "monotonic", "bounded-below", "trains"]
    print(format_table(headers, rows))
    print(f"\n{len(names)} activation(s); 'relulab show NAME' for details")
    return 0
