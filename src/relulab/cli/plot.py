"""``relulab plot NAME... [--derivative] [-o FILE.png]``: draw activations."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from relulab.errors import UserError
from relulab.plot import plot_activations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="plot activations (and their derivatives) to a PNG",
        description="Plot activations, and with --derivative their first derivatives "
        "(by autograd), in one figure.",
        epilog="examples:\n  relulab plot relu gelu mish golu sau --derivative -o zoo.png\n"
        "  relulab plot 'leaky_relu(0.2)' 'smelu(beta=1.0)' --range -3 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="+", metavar="NAME", help="activation names or specs")
    parser.add_argument("--derivative", action="store_true", help="add a panel with f'(x)")
    parser.add_argument("-o", "--output", default="activations.png", help="PNG file to write")
    parser.add_argument(
        "--range", nargs=2, type=float, default=(-5.0, 5.0), metavar=("LOW", "HIGH"),
        help="x range (default: -5 5)",
    )  # fmt: skip
    parser.set_defaults(run=run)


def _is_output(error: OSError, output: Path) -> bool:
    """The error is about the file the user asked for (to which '.png' may have been added)."""
    if error.filename is None:
        return False
    failed = Path(os.fsdecode(error.filename))
    return failed.parent == output.parent and failed.name.startswith(output.name)


def run(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if not output.name:  # '', '.', '/': a directory, not a file
        raise UserError(f"-o/--output must name a file, got {args.output!r}")
    try:
        path = plot_activations(
            args.names, output, derivative=args.derivative, x_range=tuple(args.range)
        )
    except OSError as error:
        # Only the user's own path is their mistake; any other OSError stays a bug report.
        if not _is_output(error, output):
            raise
        raise UserError(f"cannot write {error.filename}: {error.strerror or error}") from None
    extra = ", with derivatives" if args.derivative else ""
    print(f"wrote {path} ({len(args.names)} activation(s){extra})")
    return 0
