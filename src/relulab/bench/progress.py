"""A one-line progress bar with an ETA, drawn on stderr only when it is a terminal."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class ProgressBar:
    """``[######------] 12/72 trials  0m41s elapsed  ETA 2m03s  digits-gelu-s1 0.967``.

    Disabled (it draws nothing) with ``enabled=False`` or when the stream is not a TTY.
    The ETA assumes the remaining trials take as long, on average, as those run so far.
    """

    def __init__(
        self, total: int, done: int = 0, *, enabled: bool = True, stream: TextIO | None = None
    ):
        self.stream = stream or sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self.total, self.done, self.run_here = total, done, 0
        self.started = time.monotonic()
        self.last = ""
        self._draw()

    def advance(self, label: str) -> None:
        self.done += 1
        self.run_here += 1
        self.last = label
        self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        remaining = self.total - self.done
        eta = f"ETA {_duration(elapsed / self.run_here * remaining)}" if self.run_here else "ETA ?"
        width = 24
        filled = width * self.done // max(self.total, 1)
        text = (
            f"[{'#' * filled}{'-' * (width - filled)}] {self.done}/{self.total} trials  "
            f"{_duration(elapsed)} elapsed  {eta}  {self.last}"
        )
        columns = shutil.get_terminal_size((100, 20)).columns
        self.stream.write("\r" + text[: columns - 1].ljust(columns - 1))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
