"""Run directories: atomic, resumable after kill -9, identical across executors; bad names fail
before anything trains."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from relulab.bench import rundir
from relulab.cli import main

SMALL = ["--tasks", "spirals", "--acts", "relu", "gelu", "--seeds", "2", "--epochs", "3"]


def bench(tmp_path: Path, *extra: str) -> tuple[int, Path | None]:
    code = main(["bench", *SMALL, "--out", str(tmp_path), "--quiet", *extra])
    runs = sorted(tmp_path.glob("*-bench"))
    return code, (runs[-1] if runs else None)


def trial_files(run: Path) -> dict[str, tuple[dict, np.ndarray, list[dict]]]:
    """Every finished trial's deterministic content: result (no timing), predictions, curve."""
    files = {}
    for directory in sorted((run / "trials").iterdir()):
        result = json.loads((directory / "result.json").read_text())
        for volatile in ("timing", "finished"):
            result.pop(volatile)
        curve = [
            json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()
        ]
        for epoch in curve:
            epoch.pop("seconds")
        files[directory.name] = (result, np.load(directory / "predictions.npy"), curve)
    return files


def assert_same_trials(a: Path, b: Path) -> None:
    first, second = trial_files(a), trial_files(b)
    assert sorted(first) == sorted(second)
    for name in first:
        assert first[name][0] == second[name][0], name
        assert np.array_equal(first[name][1], second[name][1]), name
        assert first[name][2] == second[name][2], name


def test_a_run_directory_has_config_trials_summary_report_and_plots(tmp_path):
    code, run = bench(tmp_path)
    assert code == 0
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["seeds"] == 2 and config["config"]["activations"] == ["relu", "gelu"]
    assert {"relulab", "torch", "python", "numpy"} <= set(config["versions"])
    assert "commit" in config["git"] and config["platform"]["cpu_count"]
    assert config["trials"] == [f"spirals-{a}-s{s}" for a in ("relu", "gelu") for s in (0, 1)]
    for trial in config["trials"]:
        assert sorted(p.name for p in (run / "trials" / trial).iterdir()) == [
            "metrics.jsonl", "predictions.npy", "result.json"
        ]  # fmt: skip
    for name in (
        "summary.csv",
        "report.md",
        "accuracy.png",
        "curves.png",
        "prediction_difference.png",
        "cost.png",
    ):
        assert (run / name).is_file(), name
    assert not list(run.rglob("*.tmp"))


def test_unknown_names_fail_before_anything_runs(tmp_path, capsys):
    assert main(["bench", "--acts", "relu", "mihs", "--out", str(tmp_path)]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "relulab bench: error: unknown activation 'mihs'; did you mean 'mish'?"
    )
    assert main(["bench", "--tasks", "spiral", "--out", str(tmp_path)]) == 2
    assert "unknown task 'spiral'; did you mean 'spirals'?" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_resume_after_kill_minus_9_finishes_only_the_missing_trials(tmp_path):
    """A real process killed mid-run, then resumed: the same files as an uninterrupted run."""
    killed_parent, clean_parent = tmp_path / "killed", tmp_path / "clean"
    command = [sys.executable, "-m", "relulab", "bench", "--tasks", "spirals", "digits",
               "--acts", "relu", "silu", "--seeds", "2", "--epochs", "4", "--workers", "1",
               "--quiet", "--out"]  # fmt: skip
    process = subprocess.Popen(
        [*command, str(killed_parent)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    run = None
    while time.monotonic() < deadline:  # wait until some, not all, trials are done
        runs = list(killed_parent.glob("*-bench"))
        if runs and len(list(runs[0].glob("trials/*/result.json"))) >= 2:
            run = runs[0]
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert run is not None, "the run never got going"
    done_before = {p.parent.name for p in run.glob("trials/*/result.json")}
    planned = json.loads((run / "config.json").read_text())["trials"]
    assert 2 <= len(done_before) < len(planned)
    mtimes = {
        name: (run / "trials" / name / "result.json").stat().st_mtime_ns for name in done_before
    }

    resumed = subprocess.run(
        [sys.executable, "-m", "relulab", "bench", "--resume", str(run), "--quiet"],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.parent.name for p in run.glob("trials/*/result.json")) == sorted(planned)
    assert all(
        (run / "trials" / n / "result.json").stat().st_mtime_ns == t for n, t in mtimes.items()
    )  # not rerun
    assert not list(run.rglob("*.tmp"))

    subprocess.run([*command, str(clean_parent)], check=True, capture_output=True)
    assert_same_trials(run, next(clean_parent.glob("*-bench")))


def test_resume_refuses_a_different_experiment(tmp_path, capsys):
    _, run = bench(tmp_path)
    assert main(["bench", "--resume", str(run), "--seeds", "5", "--quiet"]) == 2
    assert "--resume: this run has seeds=2, not 5" in capsys.readouterr().err
    assert main(["bench", "--resume", str(tmp_path / "nothing"), "--quiet"]) == 2
    assert "is not a relulab run directory" in capsys.readouterr().err


def test_a_process_pool_gives_the_same_trials_as_one_process(tmp_path):
    _, serial = bench(tmp_path / "one", "--workers", "1")
    _, pooled = bench(tmp_path / "two", "--workers", "2")
    assert_same_trials(serial, pooled)


def test_atomic_writes_leave_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    rundir.write_json_atomic(path, {"version": 1})

    def fail(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeyboardInterrupt):
        rundir.write_json_atomic(path, {"version": 2})
    assert json.loads(path.read_text()) == {"version": 1} and list(tmp_path.iterdir()) == [path]


def test_json_output(tmp_path, capsys):
    code = main(["bench", *SMALL, "--out", str(tmp_path), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and Path(data["report"]).is_file()
    assert {r["activation"] for r in data["summary"]} == {"relu", "gelu"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--acts", "relu", "ReLU"], "activation 'relu' is given twice"),
        (["--acts", "relu", "--acts", "relu"], "activation 'relu' is given twice"),
        (["--tasks", "spirals", "spirals"], "task 'spirals' is given twice"),
        (["--tasks", "cvs"], "unknown task 'cvs'; did you mean 'csv'?"),
        (
            ["--baseline", "rleu"],
            "unknown activation 'rleu'; did you mean 'relu'?",
        ),
        (["--baseline", "mish"], "baseline 'mish' is not among the activations"),
        (["--workers", "0"], "--workers must be at least 1, got 0"),
        (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
        (["--batch-size", "-5"], "--batch-size must be an integer >= 1, got -5"),
        (["--epochs", "-1"], "--epochs must be an integer >= 1, got -1"),
        (["--lr", "0"], "--lr must be a finite number > 0, got 0.0"),
        (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
        (["--name", "a/b"], "--name may use letters, digits"),
    ],
)
def test_bad_options_fail_in_one_line_before_a_run_directory_exists(
    tmp_path, capsys, options, message
):
    base = [
        "bench",
        "--tasks",
        "spirals",
        "--acts",
        "relu",
        "gelu",
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
        "--quiet",
    ]
    assert main([*base, *options]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_specs_that_differ_only_in_sign_get_their_own_trials(tmp_path):
    code = main(["bench", "--tasks", "spirals", "--acts", "leaky_relu(0.2)", "leaky_relu(-0.2)",
                 "--seeds", "2", "--epochs", "1", "--out", str(tmp_path), "--quiet"])  # fmt: skip
    run = next(tmp_path.glob("*-bench"))
    assert code == 0 and len(list(run.glob("trials/*/result.json"))) == 4
    rows = list(csv.DictReader((run / "summary.csv").open()))
    assert sorted(r["activation"] for r in rows) == [
        "leaky_relu(negative_slope=-0.2)",
        "leaky_relu(negative_slope=0.2)",
    ]
    assert all(r["score_n"] == "2" for r in rows)


def test_resume_checks_what_it_would_change(tmp_path, capsys, monkeypatch):
    _, run = bench(tmp_path)
    assert main(["bench", "--resume", str(run), "--out", str(tmp_path)]) == 2
    assert "--out and --name do not apply" in capsys.readouterr().err
    config = json.loads((run / "config.json").read_text())
    config["plan"]["spirals-relu-s0"]["epochs"] = 99  # as if the task's defaults had changed
    (run / "config.json").write_text(json.dumps(config))
    assert main(["bench", "--resume", str(run), "--quiet"]) == 2
    assert "the trials planned now differ" in capsys.readouterr().err


def test_resume_of_a_table_checks_the_file_and_accepts_the_same_options(
    tmp_path, capsys, monkeypatch
):
    data = tmp_path / "t.csv"
    data.write_text("a,b,kind\n" + "".join(f"{i},{i % 3},{'xy'[i % 2]}\n" for i in range(20)))
    monkeypatch.chdir(tmp_path)
    options = [
        "--data",
        "t.csv",
        "--target",
        "kind",
        "--acts",
        "relu",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--quiet",
    ]
    assert main(["bench", *options, "--out", "runs"]) == 0
    run = next((tmp_path / "runs").glob("*-bench"))
    assert main(["bench", "--resume", str(run), *options]) == 0  # same file, same options
    data.write_text(data.read_text() + "99,1,x\n")
    assert main(["bench", "--resume", str(run), "--quiet"]) == 2
    assert "t.csv changed since the run started" in capsys.readouterr().err


def test_a_run_in_progress_is_not_run_twice(tmp_path, capsys):
    from relulab.bench import rundir

    _, run = bench(tmp_path)
    with rundir.exclusive(run):
        assert main(["bench", "--resume", str(run), "--quiet"]) == 2
    assert "is being run by another process" in capsys.readouterr().err


HOLD_LOCK = """
import sys
from pathlib import Path
from relulab.bench import rundir
with rundir.exclusive(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


def test_a_refused_resume_leaves_a_live_runs_temporary_files(tmp_path, capsys):
    """Another process holds the run's lock and is writing a trial: the resume is refused
    and deletes nothing; once the holder has gone, the same file is a leftover and goes."""
    _, run = bench(tmp_path)
    (run / "trials" / "spirals-gelu-s1" / "result.json").unlink()  # a trial still to run
    live = run / "trials" / "spirals-gelu-s1" / ".metrics.jsonl.x1y2z3.tmp"
    live.write_text("being written\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["bench", "--resume", str(run), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith("is being run by another process") and "\n" not in err
        assert live.read_text() == "being written\n"
        assert not (run / "trials" / "spirals-gelu-s1" / "result.json").exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert main(["bench", "--resume", str(run), "--quiet"]) == 0
    assert not live.exists() and (run / "trials" / "spirals-gelu-s1" / "result.json").is_file()


def test_relulab_bench_imports_without_fcntl():
    """fcntl exists on POSIX only; relulab.bench must import where it does not (Windows)."""
    code = "import sys; sys.modules['fcntl'] = None; import relulab.bench.runner, relulab.cli.bench"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _pretend_code(monkeypatch, commit: str | None, source: str) -> None:
    monkeypatch.setattr(rundir, "git_revision", lambda: {"commit": commit, "dirty": False})
    monkeypatch.setattr(rundir, "source_digest", lambda: {"sha256": source, "files": 1})


def _unfinish_one(run: Path) -> None:
    (run / "trials" / "spirals-relu-s1" / "result.json").unlink()


def test_resume_with_the_same_code_is_recorded_as_not_forced(tmp_path, monkeypatch):
    _pretend_code(monkeypatch, "a" * 40, "1" * 64)
    _, run = bench(tmp_path)
    _unfinish_one(run)
    assert main(["bench", "--resume", str(run), "--quiet"]) == 0
    (resume,) = json.loads((run / "config.json").read_text())["resumes"]
    assert resume["forced"] is False and resume["differences"] == []
    assert "--force" not in (run / "report.md").read_text()


@pytest.mark.parametrize(
    ("started", "now", "difference"),
    [
        (("a" * 40, "1" * 64), ("b" * 40, "1" * 64), "git commit aaaaaaaaaaaa → bbbbbbbbbbbb"),
        ((None, "1" * 64), (None, "2" * 64), "source sha256 111111111111 → 222222222222"),
        (("a" * 40, "1" * 64), ("a" * 40, "2" * 64), "source sha256 111111111111 → 222222222222"),
    ],
    ids=["other commit", "no git, other source", "same commit, uncommitted edits"],
)
def test_resume_across_code_changes_needs_force(
    tmp_path, monkeypatch, capsys, started, now, difference
):
    _pretend_code(monkeypatch, *started)
    _, run = bench(tmp_path)
    _unfinish_one(run)
    _pretend_code(monkeypatch, *now)
    assert main(["bench", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert difference in err and "pass --force to resume" in err and "\n" not in err
    assert not (run / "trials" / "spirals-relu-s1" / "result.json").exists()

    assert main(["bench", "--resume", str(run), "--force", "--quiet"]) == 0
    assert (run / "trials" / "spirals-relu-s1" / "result.json").is_file()
    (resume,) = json.loads((run / "config.json").read_text())["resumes"]
    assert resume["forced"] is True and resume["differences"] == [difference]
    assert resume["source"]["sha256"] == now[1]
    assert (
        f"Resumed with --force across code changes: {resume['resumed']} ({difference})"
        in (run / "report.md").read_text()
    )


def test_force_without_resume_is_a_usage_error(tmp_path, capsys):
    assert main(["bench", *SMALL, "--out", str(tmp_path), "--force", "--quiet"]) == 2
    assert "--force applies to --resume DIR only" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_source_digest_identifies_the_python_files_by_path_and_content(tmp_path):
    def tree(root: Path, files: dict[str, str]) -> Path:
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        return root

    base = {"a.py": "x = 1\n", "sub/b.py": "y = 2\n", "notes.txt": "hello\n"}
    digest = rundir.source_digest(tree(tmp_path / "one", base))["sha256"]
    assert rundir.source_digest(tree(tmp_path / "two", base))["sha256"] == digest  # same tree
    for changed in (
        {**base, "a.py": "x = 2\n"},  # an edit
        {"b.py": "x = 1\n", "sub/b.py": "y = 2\n"},  # a rename
        {**base, "sub/c.py": ""},  # a new, empty file
        {"a.py": "x = 1\nsub/b.py", "sub/b.py": "\ny = 2\n"},  # bytes moved across files
    ):
        assert (
            rundir.source_digest(tree(tmp_path / str(len(list(tmp_path.iterdir()))), changed))[
                "sha256"
            ]
            != digest
        ), changed
    assert (
        rundir.source_digest(tree(tmp_path / "txt", {**base, "notes.txt": "bye"}))["sha256"]
        == digest
    )  # not Python


def test_user_mistakes_in_files_raise_user_error(tmp_path, monkeypatch, capsys):
    """Each is the one exception type for user mistakes, printed as one line with exit 2."""
    from relulab.bench import runner
    from relulab.errors import UserError

    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    with pytest.raises(UserError, match="cannot create a run directory in"):
        runner.start_run(runner.BenchConfig(tasks=["spirals"], activations=["relu"]),
                         not_a_directory)  # fmt: skip
    assert main(["bench", *SMALL, "--out", str(not_a_directory), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot create a run directory in" in err and "\n" not in err

    data = tmp_path / "t.csv"
    data.write_text("a,kind\n1,x\n2,y\n3,x\n4,y\n")

    def unreadable(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(runner, "open", unreadable, raising=False)
    with pytest.raises(UserError, match=f"cannot read {data}: Permission denied"):
        runner.BenchConfig(tasks=["csv"], data=str(data), target="kind").resolved()
    monkeypatch.undo()
    assert main(["bench", "--data", str(tmp_path / "none.csv"), "--target", "kind",
                 "--out", str(tmp_path / "runs"), "--quiet"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"cannot read {tmp_path / 'none.csv'}: no such file")
    with pytest.raises(UserError, match="is not a relulab run directory"):
        runner.resume_run(tmp_path)
    assert not (tmp_path / ".lock").exists()


_ORPHAN = """
import multiprocessing, os, sys, time
from relulab.bench.runner import exit_with_parent

def worker(parent):
    exit_with_parent(parent, interval=0.05)
    time.sleep(60)

if __name__ == "__main__":
    child = multiprocessing.get_context("spawn").Process(target=worker, args=(os.getpid(),))
    child.start()
    print(child.pid, flush=True)
    time.sleep(1.0)  # the child is up and watching
    os._exit(0)  # as after a kill -9: no chance to stop the child
"""


def test_a_worker_ends_when_its_parent_is_killed(tmp_path):
    script, pids = tmp_path / "orphan.py", tmp_path / "pids.txt"
    script.write_text(_ORPHAN)  # a file: spawn re-imports the worker function from it
    with pids.open("w") as out:  # not a pipe, which the orphan would hold open
        subprocess.run([sys.executable, str(script)], stdout=out, timeout=60, check=True)
    child = int(pids.read_text().split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child), "the orphaned worker is still running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) counts as gone
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


def test_run_files_are_readable_as_the_umask_allows(tmp_path):
    previous = os.umask(0o022)
    try:
        rundir._UMASK = 0o022
        rundir.write_text_atomic(tmp_path / "report.md", "x")
    finally:
        os.umask(previous)
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o644
