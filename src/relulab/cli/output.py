"""Plain-text tables, JSON, checked PNG paths and progress lines shared by the subcommands."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from relulab.errors import UserError


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces, with a rule under the header."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def mark(flag: bool) -> str:
    return "yes" if flag else "-"


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def check_png_output(path: str, option: str = "-o") -> None:
    """Before any long work: matplotlib is there and the PNG ``path`` names can be written
    (its folder exists, it is not a folder, and it opens for writing)."""
    from relulab.optional import require
    from relulab.plot.figure import png_path

    if not Path(path).name:
        raise UserError(f"{option} must name a file, got {path!r}")
    require("matplotlib", extra="plot", purpose=option)
    target = png_path(path)
    if target.is_dir():
        raise UserError(f"cannot write {target}: it is a directory; try {target / 'plot.png'}")
    if not target.parent.is_dir():
        problem = "is not a directory" if target.parent.exists() else "does not exist"
        raise UserError(f"cannot write {target}: {str(target.parent)!r} {problem}")
    # Opening it is the one exact test (permissions, a read-only file system, root's rights);
    # appending leaves a file that is there unchanged, and one made here goes again.
    existed = target.exists()
    try:
        with open(target, "ab"):
            pass
    except OSError as error:
        raise UserError(f"cannot write {target}: {error.strerror or error}") from None
    if not existed:
        target.unlink(missing_ok=True)


def given_options(args: Any, options: Mapping[str, tuple]) -> list[str]:
    """The options of ``options`` (option -> (argparse dest, ...)) given on the command line."""
    return [option for option, (dest, *_) in options.items() if getattr(args, dest) is not None]


def resume_config(
    resume: str, command: str, given: Sequence[str] = ()
) -> tuple[Path, dict[str, Any]]:
    """``--resume DIR``: the run directory and its config.json. One-line UserErrors when
    options that the config fixes were given too (``given``, the first one named) or when DIR
    is not a run of ``relulab COMMAND``."""
    from relulab.bench import rundir

    if given:
        raise UserError(f"--resume takes its settings from {resume}/config.json; drop {given[0]}")
    run = Path(resume)
    config = rundir.read_config(run)
    if config.get("command") != command:
        raise UserError(f"{run} is not a relulab {command} run")
    return run, config


def progress_printer() -> Callable[[str], None]:
    """A function printing a progress line on stderr with the seconds since it was made."""
    start = time.perf_counter()

    def progress(line: str) -> None:
        print(f"  [{time.perf_counter() - start:5.0f} s] {line}", file=sys.stderr, flush=True)

    return progress
