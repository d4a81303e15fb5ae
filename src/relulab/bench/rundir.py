"""Run directories: atomic files, the run's config.json, and where each trial's files live.

Layout::

    runs/<timestamp>-<name>/
        config.json                      full config, versions, git hash, platform, trial list
        trials/<task>-<act>-s<seed>/
            metrics.jsonl                one line per epoch
            predictions.npy              test-set class probabilities (float32)
            result.json                  written last: its presence marks the trial finished
        summary.csv, report.md, *.png    rendered from the trials (relulab report DIR)

Every file is written to a temporary name in its directory, flushed to disk and renamed into
place, so a kill at any moment leaves either the old file, the new one, or none.
"""

from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
CONFIG = "config.json"
RESULT = "result.json"
METRICS = "metrics.jsonl"
PREDICTIONS = "predictions.npy"


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=True) + "\n")


def write_array_atomic(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    write_bytes_atomic(path, buffer.getvalue())


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def new_run_directory(parent: Path, name: str) -> Path:
    """``parent/<UTC timestamp>-<name>``, made unique with a counter if it exists."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = parent / f"{stamp}-{name}"
    candidate, counter = base, 1
    while True:
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            counter += 1
            candidate = base.with_name(f"{base.name}-{counter}")


def trial_directory(run: Path, trial_id: str) -> Path:
    return run / "trials" / trial_id


def is_finished(run: Path, trial_id: str) -> bool:
    return (trial_directory(run, trial_id) / RESULT).is_file()


def git_revision() -> dict[str, Any]:
    """The git commit of the relulab source tree this runs from, when it is a checkout."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10
        )
        if commit.returncode == 0:
            status = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=source, capture_output=True, text=True, timeout=10,
            )  # fmt: skip
            return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    return {"commit": _head_from_files(source), "dirty": None}


def _head_from_files(start: Path) -> str | None:
    """Fallback without a git binary: follow .git/HEAD by hand."""
    for directory in (start, *start.parents):
        head = directory / ".git" / "HEAD"
        if head.is_file():
            text = head.read_text().strip()
            if text.startswith("ref: "):
                ref = directory / ".git" / text[5:]
                return ref.read_text().strip() if ref.is_file() else None
            return text
    return None


def environment() -> dict[str, Any]:
    """Versions and platform, recorded in config.json."""
    versions = {"python": platform.python_version()}
    for package in (
        "relulab",
        "torch",
        "numpy",
        "scipy",
        "scikit-learn",
        "matplotlib",
        "mnist1d",
        "ray",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "versions": versions,
        "git": git_revision(),
        "platform": {
            "system": platform.platform(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
        },
    }


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
