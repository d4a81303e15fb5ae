"""The ``relulab`` command line: a thin layer that adds printing, files and exit codes.

Subcommands live one per module; each exposes ``add_parser(subparsers)`` and ``run(args)``.
A :class:`~relulab.errors.UserError` (bad name, value or file) or a missing optional
dependency prints one line and exits with status 2. Any other exception is a bug in relulab:
its traceback is printed and the status is 1, so that a bug never passes for a usage error.
A reader that closes the pipe early (``relulab list | head``) ends the command quietly (141).
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import platform
import re
import select
import sys
import traceback
from collections.abc import Sequence

import torch

import relulab
from relulab.cli import (
    bench,
    codes,
    count,
    dead_units,
    entropy,
    gpt,
    listing,
    overconfidence,
    plot,
    prefer,
    reduce,
    regions,
    relufy,
    show,
    speed,
)
from relulab.errors import TrainingDiverged, UserError
from relulab.optional import MissingDependencyError

EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 128 + 13  # as if killed by SIGPIPE, like other Unix tools in a pipeline
COMMANDS = (
    bench,
    listing,
    show,
    plot,
    speed,
    regions,
    codes,
    overconfidence,
    dead_units,
    count,
    reduce,
    gpt,
    relufy,
    prefer,
    entropy,
)
# Library messages point to the Python API; at the command line, point to the command.
CLI_WORDING = {"relulab.list_activations()": "'relulab list'"}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (argparse prints the usage block too)."""

    def error(self, message: str) -> None:
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            options = re.findall(r"'([^']*)'", choice.group(2))
            close = difflib.get_close_matches(choice.group(1), options, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (choose from {choice.group(2)})"
            option = re.match(r"argument (-[^:]*): ", message)  # --model cnnn, not a command
            what = f"{option.group(1)} value" if option else "command"
            message = f"unknown {what} {choice.group(1)!r}{hint}"
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
    parser.command_parsers = subparsers.choices  # name -> its parser, for its own errors
    return parser


def _report_bug(command: str) -> int:
    """Print the exception being handled with its traceback: what is needed to fix it."""
    traceback.print_exc()
    print(
        f"relulab {command}: internal error (a bug in relulab {relulab.__version__}); "
        "please report it with the traceback above",
        file=sys.stderr,
    )
    return EXIT_BUG


def _reader_left() -> bool:
    """stdout is a pipe whose reading end is closed (poll flags it as an error)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows); stdout not a real file
        return False


def _reader_gone() -> int:
    """`relulab list | head -3`: neither a mistake nor a bug. Point stdout at /dev/null, so
    that the flush at interpreter exit does not raise again, and end as SIGPIPE would."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each message (a test's capture)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _show_library_messages(command: str) -> None:
    """relulab's own log lines (a small table's warning, Ray starting) on stderr, prefixed
    with the command as its errors are; a library user's logging setup is left alone."""
    logger = logging.getLogger("relulab")
    handler = next((h for h in logger.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        logger.addHandler(handler)
    handler.setFormatter(logging.Formatter(f"relulab {command}: %(message)s"))
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        try:
            args, unknown = parser.parse_known_args(argv)
            if unknown:  # named by the command they were given to, as its other errors are
                where = parser.command_parsers.get(args.command, parser)
                where.error(f"unrecognized arguments: {' '.join(unknown)}")
        finally:  # --help and --version print and exit in there; usage errors too
            sys.stdout.flush()
        if args.command is None:
            sys.stdout.write(parser.format_help())  # print_help would hide a closed pipe
            sys.stdout.flush()
            return EXIT_USAGE
    except BrokenPipeError:  # raised by stdout's flush: its reader has gone
        return _reader_gone()
    _show_library_messages(args.command)
    try:
        code = args.run(args)
        sys.stdout.flush()  # a closed pipe shows up here rather than at interpreter exit
        return code
    except BrokenPipeError:
        if not _reader_left():  # some other pipe (a worker's, say)
            return _report_bug(args.command)
        return _reader_gone()
    except (UserError, MissingDependencyError, TrainingDiverged) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if isinstance(error, TrainingDiverged):
            message += "; a lower learning rate (--lr) may help"
        for python, command in CLI_WORDING.items():
            message = message.replace(python, command)
        print(f"relulab {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("relulab: interrupted", file=sys.stderr)
        return 130
    except Exception:  # anything else is relulab's fault
        return _report_bug(args.command)
