"""The ``relulab`` command line: a thin layer that adds printing, files and exit codes.

Subcommands live one per module; each exposes ``add_parser(subparsers)`` and ``run(args)``.
Errors caused by the user's input are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import difflib
import platform
import re
import sys
from collections.abc import Sequence

import torch

import relulab
from relulab.cli import bench, listing, plot, show, speed
from relulab.optional import MissingDependencyError

EXIT_USAGE = 2
COMMANDS = (bench, listing, show, plot, speed)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (argparse prints the usage block too)."""

    def error(self, message: str) -> None:
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            options = re.findall(r"'([^']*)'", choice.group(2))
            close = difflib.get_close_matches(choice.group(1), options, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (choose from {choice.group(2)})"
            message = f"unknown command {choice.group(1)!r}{hint}"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="relulab",
        description="ReLU and its relatives: an exact activation zoo for PyTorch.",
        epilog="examples:\n  relulab bench\n  relulab list '*relu*'\n  relulab show golu\n"
        "  relulab plot relu gelu mish --derivative -o zoo.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"relulab {relulab.__version__} (torch {torch.__version__}, "
        f"python {platform.python_version()})",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.run(args)
    except (ValueError, MissingDependencyError, OSError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"relulab {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("relulab: interrupted", file=sys.stderr)
        return 130
