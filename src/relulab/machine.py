"""The machine a measurement ran on, as a reader of its numbers needs to know it."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC 7B13"), from /proc/cpuinfo where there is one, else
    what :mod:`platform` knows ("arm", "x86_64")."""
    fallback = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open(CPUINFO, encoding="utf-8") as info:
        for line in info:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return fallback
