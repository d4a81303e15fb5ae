"""Run-directory files: written with the umask's mode; the run's lock is exclusive, and its file
is gone once the run ends, without a moment where two processes could both hold it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from relulab.bench import rundir
from relulab.errors import UserError

WRITE_UNDER_UMASK = """
import os, sys
from pathlib import Path
os.umask(int(sys.argv[2], 8))  # before relulab reads it
import numpy as np
from relulab.bench import rundir
run = Path(sys.argv[1])
rundir.write_text_atomic(run / "report.md", "x")
rundir.write_array_atomic(run / "trials" / "t" / "predictions.npy", np.zeros(2))
with rundir.exclusive(run):
    lock = (run / ".lock").stat().st_mode & 0o777
for name in ("report.md", "trials/t/predictions.npy"):
    print(name, oct((run / name).stat().st_mode & 0o777))
print("trials/t/", oct((run / "trials" / "t").stat().st_mode & 0o777))
print(".lock", oct(lock))
"""


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_run_files_take_the_umask_mode(tmp_path, umask):
    """mkstemp makes its files 0600; a run's files must be as readable as the umask allows,
    like any file the user's other tools write (0644 under the usual umask 022)."""
    done = subprocess.run(
        [sys.executable, "-c", WRITE_UNDER_UMASK, str(tmp_path), oct(umask)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    modes = dict(line.split() for line in done.stdout.splitlines())
    file_mode, directory_mode = oct(0o666 & ~umask), oct(0o777 & ~umask)
    assert modes == {
        "report.md": file_mode,
        "trials/t/predictions.npy": file_mode,
        "trials/t/": directory_mode,
        ".lock": file_mode,
    }


def test_the_lock_file_is_gone_when_the_holder_ends(tmp_path):
    with rundir.exclusive(tmp_path):
        assert (tmp_path / ".lock").is_file()
    assert not (tmp_path / ".lock").exists()
    with pytest.raises(RuntimeError), rundir.exclusive(tmp_path):
        raise RuntimeError("a trial failed")
    assert not (tmp_path / ".lock").exists()
    with pytest.raises(KeyboardInterrupt), rundir.exclusive(tmp_path):
        raise KeyboardInterrupt
    assert not list(tmp_path.iterdir())


def test_a_refused_process_leaves_the_holders_lock_alone(tmp_path):
    with rundir.exclusive(tmp_path):
        locked = (tmp_path / ".lock").stat()
        refused = pytest.raises(UserError, match="is being run by another process")
        with refused, rundir.exclusive(tmp_path):
            pass
        assert os.path.samestat((tmp_path / ".lock").stat(), locked)  # not removed or replaced
    assert not (tmp_path / ".lock").exists()


def test_a_lock_won_on_a_removed_file_is_not_held(tmp_path, monkeypatch):
    """The race that removing the lock file opens: B opens .lock, then A (the holder) removes
    it and ends, C creates a new .lock and takes it, and only then B's lock call goes through,
    on A's removed file. B must see that its file is no longer the one at the path, try again
    on C's, and be refused, rather than run alongside C."""
    holder_a = rundir.exclusive(tmp_path)
    holder_a.__enter__()
    holder_c = rundir.exclusive(tmp_path)
    real_try_lock, calls = rundir._try_lock, []

    def b_is_slow(descriptor: int) -> bool:
        calls.append(descriptor)
        if len(calls) == 1:  # B has opened A's file and is about to lock it
            holder_a.__exit__(None, None, None)
            holder_c.__enter__()  # C's own _try_lock call is the second one
        return real_try_lock(descriptor)

    monkeypatch.setattr(rundir, "_try_lock", b_is_slow)
    try:
        refused = pytest.raises(UserError, match="is being run by another process")
        with refused, rundir.exclusive(tmp_path):
            pass
        # B's first lock call succeeded (A's file was free), its second found C's file held.
        assert len(calls) == 3
        assert (tmp_path / ".lock").exists()  # C still holds its lock
    finally:
        holder_c.__exit__(None, None, None)
    assert not (tmp_path / ".lock").exists()


CONTEND = """
import os, sys, time
from pathlib import Path
from relulab.bench import rundir
from relulab.errors import UserError
run, inside = Path(sys.argv[1]), Path(sys.argv[1]) / "inside"
deadline, held = time.monotonic() + float(sys.argv[2]), 0
while time.monotonic() < deadline:
    try:
        with rundir.exclusive(run):
            try:  # only one holder at a time, or this file would exist already
                os.close(os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                print("two holders at once", flush=True)
                os._exit(1)
            held += 1
            os.unlink(inside)
    except UserError:
        pass
print(held)
"""


def test_contending_processes_never_hold_the_lock_together(tmp_path):
    """Three processes take and drop the lock as fast as they can for two seconds; the file
    that each creates exclusively while it holds the lock must never exist already."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CONTEND, str(tmp_path), "2.0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, out + err
    assert sum(int(out) for out, _ in outputs) > 100  # they did contend
    assert not list(tmp_path.iterdir())


def test_no_lock_file_without_a_run_directory(tmp_path):
    with pytest.raises(UserError, match="cannot lock"), rundir.exclusive(tmp_path / "missing"):
        pass
    assert not (tmp_path / "missing").exists()
