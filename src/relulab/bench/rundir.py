"""Run directories: atomic files, the run's config.json, and where each trial's files live.

Layout::

    runs/<timestamp>-<name>/
        config.json                      full config, versions, code identity (git commit and
                                         a hash of relulab's source), platform, trial list,
                                         and every resume of the run
        .lock                            exists while a process runs the run: its lock
        trials/<task>-<act>-s<seed>/
            metrics.jsonl                one line per epoch
            predictions.npy              test-set class probabilities (float32)
            result.json                  written last: its presence marks the trial finished
        summary.csv, report.md, *.png    rendered from the trials (relulab report DIR)

Every file is written to a temporary name in its directory, flushed to disk and renamed into
place, so a kill at any moment leaves either the old file, the new one, or none. The lock is
``flock`` on POSIX and ``msvcrt.locking`` on Windows, which the operating system releases when
its process dies; :func:`exclusive` says how ``.lock`` is removed at the end of a run without
ever letting two processes hold it. (Not :mod:`filelock`: its Unix lock keeps the file by
design, and checking that a locked file is still the one at the path needs the descriptor,
which it keeps private.)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from relulab.errors import UserError
from relulab.machine import cpu_model

try:
    import fcntl
except ImportError:  # Windows: msvcrt instead
    fcntl = None

SCHEMA_VERSION = 1
CONFIG = "config.json"
RESULT = "result.json"
METRICS = "metrics.jsonl"
PREDICTIONS = "predictions.npy"
MODEL = "model.pt"  # the trained weights (a state_dict), with --save-models
LOCK = ".lock"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # read once: os.umask can only be read by setting it


def _temporary_beside(path: Path) -> tuple[int, str]:
    # A read-only or full file system, or a folder of someone else's, is the user's to fix:
    # one line naming the file, not a traceback.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None


def check_writable(path: Path) -> None:
    """Before long work whose result goes to ``path``: a one-line UserError if no file can
    be written there."""
    descriptor, temporary = _temporary_beside(path)
    os.close(descriptor)
    Path(temporary).unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    descriptor, temporary = _temporary_beside(path)
    try:
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes it private; results are not
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
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read {path}: {str(error).splitlines()[0]}") from None


def read_config(run: Path) -> dict[str, Any]:
    """A run directory's config.json, or a one-line ValueError saying it is not one."""
    if not (run / CONFIG).is_file():
        if not run.is_dir():
            raise UserError(f"{run}: no such run directory")
        inside = sorted(p.parent for p in run.glob(f"*/{CONFIG}"))
        hint = f"; the runs in it: {', '.join(map(str, inside[-3:]))}" if inside else ""
        raise UserError(f"{run} is not a relulab run directory (no {CONFIG}){hint}")
    return read_json(run / CONFIG)


def remove_leftovers(run: Path) -> None:
    """Temporary files of writes that a kill cut short (trial files, report, plots).

    Only while holding the run's lock (:func:`exclusive`): the temporary files of a run in
    progress are that run's writes, not leftovers.
    """
    for leftover in run.rglob(".*.tmp"):
        leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive(run: Path) -> Iterator[None]:
    """Hold the run's lock: two processes running the same run would duplicate its work.

    Raises UserError at once, without waiting, when another holder has it. Each call takes
    the lock anew, so a second call in the same process is refused too.

    The lock is on the file ``run/.lock``, which the holder removes as it ends, so that a
    finished run leaves none behind (a killed one does; the next holder takes it over). A
    lock on a file no longer at that path would guard nothing: a third process could create
    a new ``.lock`` and run alongside. Two rules exclude that. The holder removes the file
    while it still holds the lock (on Windows, where an open file cannot be removed, after
    closing it, and then only if no other process has it open). And a process that wins the
    lock checks that the file it locked is still the one at the path; if not, the file was
    removed by a holder that has finished, and it tries again on the file there now.
    """
    path = run / LOCK
    try:
        descriptor = _take_lock(path)
    except OSError as error:
        raise UserError(f"cannot lock {run}: {error.strerror or error}") from None
    if descriptor is None:
        raise UserError(f"{run} is being run by another process")
    try:
        yield
    finally:
        _drop_lock(path, descriptor)


def _take_lock(path: Path) -> int | None:
    """An open descriptor of the file at ``path``, locked by it; None if another holds it."""
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies
        try:
            locked = _try_lock(descriptor)
            if locked and _still_at(path, descriptor):
                return descriptor
        except BaseException:
            os.close(descriptor)
            raise
        os.close(descriptor)
        if not locked:
            return None


def _still_at(path: Path, descriptor: int) -> bool:
    try:
        return os.path.samestat(os.stat(path), os.fstat(descriptor))
    except FileNotFoundError:
        return False


def _try_lock(descriptor: int) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    import msvcrt

    try:
        msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EDEADLK):  # another process holds the byte
            return False
        raise
    return True


def _drop_lock(path: Path, descriptor: int) -> None:
    if fcntl is not None:
        try:
            path.unlink(missing_ok=True)  # still holding the lock: see exclusive
        finally:
            os.close(descriptor)  # releases the lock
        return
    import msvcrt

    try:
        msvcrt.locking(descriptor, msvcrt.LK_UNLCK, 1)
    finally:
        os.close(descriptor)
    with contextlib.suppress(OSError):  # refused while another process has it open
        path.unlink()


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
        except OSError as error:  # e.g. --out names a file, or a directory we may not write
            raise UserError(
                f"cannot create a run directory in {parent}: {error.strerror or error}"
            ) from None


def trial_directory(run: Path, trial_id: str) -> Path:
    return run / "trials" / trial_id


def is_finished(run: Path, trial_id: str) -> bool:
    return (trial_directory(run, trial_id) / RESULT).is_file()


def git_revision() -> dict[str, Any]:
    """The git commit of the relulab source tree this runs from, when it is a checkout.

    Only when this very file is tracked by that repository: relulab installed inside some
    other project's virtual environment must not record that project's commit.
    """
    source = Path(__file__).resolve().parent
    try:
        tracked = subprocess.run(
            ["git", "ls-files", "--error-unmatch", Path(__file__).name],
            cwd=source, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        if tracked.returncode != 0:
            return {"commit": None, "dirty": None}
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
        if head.is_file() and (directory / "src" / "relulab").is_dir():  # relulab's own checkout
            text = head.read_text().strip()
            if text.startswith("ref: "):
                ref = directory / ".git" / text[5:]
                return ref.read_text().strip() if ref.is_file() else None
            return text
    return None


def source_digest(package: Path | None = None) -> dict[str, Any]:
    """SHA-256 over the sorted relative paths and contents of the package's ``.py`` files.

    Identifies the code that runs even where there is no git checkout (an installed wheel, a
    copied tree) and, in a checkout, also uncommitted edits. ``package`` defaults to relulab's
    own directory.
    """
    package = package or Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    files = sorted(package.rglob("*.py"), key=lambda p: p.relative_to(package).as_posix())
    for path in files:
        relative = path.relative_to(package).as_posix().encode()
        content = path.read_bytes()
        # Lengths first, so that no two different trees hash the same byte stream.
        digest.update(f"{len(relative)}:{len(content)}:".encode())
        digest.update(relative)
        digest.update(content)
    return {"sha256": digest.hexdigest(), "files": len(files)}


def environment() -> dict[str, Any]:
    """Versions, code identity and platform, recorded in config.json."""
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
        "source": source_digest(),
        "platform": {
            "system": platform.platform(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(),
        },
    }


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def record_resume(run: Path, config: dict[str, Any], **details: Any) -> None:
    """Append this resume to ``config["resumes"]`` (when, the code's versions, git commit and
    source hash, and ``details``) and write config.json back atomically."""
    now = environment()
    resume = {"resumed": now_iso(), **details, **{k: now[k] for k in ("versions", "git", "source")}}
    config["resumes"] = [*config.get("resumes", []), resume]
    write_json_atomic(run / CONFIG, config)
