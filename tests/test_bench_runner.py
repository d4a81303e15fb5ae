"""Run directories: atomic, resumable after kill -9, identical across executors; bad names fail
before anything trains."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from relulab.bench import rundir
from relulab.cli import main
from relulab.errors import UserError

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
    assert not (run / ".lock").exists()  # the lock's file goes with the process that held it


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
    assert not (run / ".lock").exists()  # left by the killed process, removed by the resume

    subprocess.run([*command, str(clean_parent)], check=True, capture_output=True)
    assert_same_trials(run, next(clean_parent.glob("*-bench")))


def test_resume_refuses_a_different_experiment(tmp_path, capsys):
    _, run = bench(tmp_path)
    assert main(["bench", "--resume", str(run), "--seeds", "5", "--quiet"]) == 2
    assert "--resume: this run has seeds=2, not 5" in capsys.readouterr().err
    assert main(["bench", "--resume", str(tmp_path / "nothing"), "--quiet"]) == 2
    assert "nothing: no such run directory" in capsys.readouterr().err


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
    assert "--out, --name and --save-models do not apply" in capsys.readouterr().err
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
    assert not (run / ".lock").exists()


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


def _table_file(path: Path, rows: int, extra: str = "") -> Path:
    """A two-class table with ``rows`` rows: features a, b and the label kind."""
    path.write_text(
        "a,b,kind\n" + "".join(f"{i},{(7 * i) % 11},{'xy'[i % 2]}\n" for i in range(rows)) + extra
    )
    return path


def test_resume_finds_a_moved_table_by_its_content(tmp_path, monkeypatch, capsys):
    """The run's CSV moved: resuming says so in one line and how to point at it; --data NEW
    is accepted for a file with the recorded sha256 (and recorded), refused for another."""
    data = _table_file(tmp_path / "t.csv", 40)
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    monkeypatch.chdir(tmp_path)
    options = ["--acts", "relu", "--seeds", "2", "--epochs", "1", "--quiet"]
    assert main(["bench", "--data", "t.csv", "--target", "kind", *options, "--out", "runs"]) == 0
    assert "only 8 test examples" in capsys.readouterr().err  # 40 rows: warned, not refused
    run = next((tmp_path / "runs").glob("*-bench"))
    (run / "trials" / "table-relu-s1" / "result.json").unlink()
    (tmp_path / "moved").mkdir()
    moved = data.rename(tmp_path / "moved" / "t.csv")

    assert main(["bench", "--resume", str(run), "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"relulab bench: error: --resume: the run's data file {data} is gone; if it moved, add "
        f"--data NEW_PATH (the same content: sha256 {digest[:12]}…)\n"
    )
    other = _table_file(tmp_path / "other.csv", 40, extra="99,1,x\n")
    other_digest = hashlib.sha256(other.read_bytes()).hexdigest()
    assert main(["bench", "--resume", str(run), "--data", "other.csv", "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"relulab bench: error: --resume: {other} (sha256 {other_digest[:12]}) is not the file "
        f"this run started with, {data} (sha256 {digest[:12]}); give --data a copy of that or "
        "start a new run\n"
    )
    assert not (run / "trials" / "table-relu-s1" / "result.json").exists()

    assert main(["bench", "--resume", str(run), "--data", "moved/t.csv", "--quiet"]) == 0
    assert (run / "trials" / "table-relu-s1" / "result.json").is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["data"] == str(moved) and config["config"]["data_sha256"] == digest
    assert config["resumes"][-1]["data_moved"] == {"from": str(data), "to": str(moved)}
    first = run / "trials" / "table-relu-s0" / "result.json"
    first.unlink()
    assert main(["bench", "--resume", str(run), "--quiet"]) == 0  # the new path is the run's now
    assert first.is_file()


@pytest.mark.parametrize(
    ("per_class", "warned"),
    [((10, 9), True), ((10, 10), False), ((19, 1), True), ((18, 2), False)],
    ids=["19 examples", "20 examples", "a class of 1", "a class of 2"],
)
def test_a_test_set_under_20_examples_or_2_of_a_class_is_warned_about(caplog, per_class, warned):
    import torch

    from relulab.bench import runner
    from relulab.bench.tasks import TaskData, get_task

    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    data = TaskData(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]), torch.zeros(len(labels), 2),
                    labels, len(per_class))  # fmt: skip
    with caplog.at_level("WARNING", logger="relulab"):
        runner.warn_if_small(get_task("spirals"), data)
    total = sum(per_class)
    expected = [
        f"warning: spirals: only {total} test examples ({min(per_class)} in the smallest "
        f"class), so each is worth {100 / total:.1f} points of accuracy, too coarse to compare "
        "activations by; use at least 20 test examples and 2 per class"
    ]
    assert caplog.messages == (expected if warned else [])


def test_a_small_table_is_warned_about_in_one_line_on_the_driver(tmp_path):
    """6 rows of 2 classes: the stratified 20% test split holds round(3 × 0.2) = 1 row of each.
    The warning comes once, from the driver, not once per worker."""
    six = _table_file(tmp_path / "six.csv", 6)
    done = subprocess.run(
        [sys.executable, "-m", "relulab", "bench", "--data", str(six), "--target", "kind",
         "--acts", "relu", "--seeds", "2", "--epochs", "1", "--workers", "2", "--quiet",
         "--out", str(tmp_path / "runs")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.endswith(
        f"warning: {six}: only 2 test examples (1 in the smallest class), so each is worth "
        "50.0 points of accuracy, too coarse to compare activations by; use at least 20 test "
        "examples and 2 per class (a table's test split is 20% of its rows)"
    )
    _table_file(tmp_path / "hundred.csv", 100)  # 10 test rows of each class: no warning
    done = subprocess.run(
        [sys.executable, "-m", "relulab", "bench", "--data", str(tmp_path / "hundred.csv"),
         "--target", "kind", "--acts", "relu", "--seeds", "1", "--epochs", "1", "--quiet",
         "--out", str(tmp_path / "runs")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == ""


class _Reference:
    def __init__(self, value):
        self.value = value


class FakeRay:
    """The part of Ray that the runner uses, run in this process: what init was asked is
    recorded, put and remote pass values through pickle as Ray would ship them."""

    def __init__(self, init_error: BaseException | None = None):
        self.inits: list[dict] = []
        self.puts: list = []
        self.calls: list[tuple] = []
        self.init_error = init_error
        self.initialized = False

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, address=None, **options):
        self.inits.append({"address": address, **options})
        if self.init_error is not None:
            raise self.init_error
        self.initialized, self.cpus = True, options.get("num_cpus") or os.cpu_count()

    def cluster_resources(self) -> dict:
        return {"CPU": float(self.cpus)}

    def put(self, value):
        self.puts.append(value)
        return _Reference(pickle.dumps(value))

    def remote(self, function):
        fake = self

        class Remote:
            def options(self, **options):
                return self

            def remote(self, *arguments):
                fake.calls.append(arguments)
                values = [
                    pickle.loads(a.value)
                    if isinstance(a, _Reference)
                    else pickle.loads(pickle.dumps(a))
                    for a in arguments
                ]
                return _Reference(function(*values))

        return Remote()

    def wait(self, pending, num_returns):
        return pending[:num_returns], pending[num_returns:]

    def get(self, reference):
        return reference.value


@pytest.fixture
def fake_ray(monkeypatch):
    from relulab.bench import runner

    fake = FakeRay()
    monkeypatch.setattr(runner, "require", lambda *args, **kwargs: fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return fake


def _listening_port() -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    return server, server.getsockname()[1]


def test_ray_without_an_address_starts_a_local_instance_sized_by_workers(fake_ray, caplog):
    from relulab.bench import runner

    with caplog.at_level("WARNING", logger="relulab"):
        assert runner.connect_ray(None, workers=3, threads=2) is fake_ray
    ((address, cpus),) = [(i["address"], i["num_cpus"]) for i in fake_ray.inits]
    assert (address, cpus) == ("local", 6)  # 3 trials at once of 2 threads each
    assert caplog.messages == [
        "no --ray-address or $RAY_ADDRESS: started a local Ray instance with 6 CPUs; give a "
        "cluster's address to run on it"
    ]
    runner.connect_ray(None, workers=3)  # already up: nothing more
    assert len(fake_ray.inits) == 1


@pytest.mark.parametrize("through", ["option", "environment"])
def test_ray_with_an_address_connects_to_it_and_starts_nothing(
    fake_ray, monkeypatch, caplog, through
):
    from relulab.bench import runner

    server, port = _listening_port()
    with server:
        if through == "environment":
            monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
        runner.connect_ray(f"127.0.0.1:{port}" if through == "option" else None, workers=3)
    ((init,),) = [fake_ray.inits]
    assert init["address"] == f"127.0.0.1:{port}" and "num_cpus" not in init
    assert caplog.messages == []


def test_an_unreachable_ray_address_fails_in_one_line_at_once(fake_ray, monkeypatch):
    from relulab.bench import runner

    server, port = _listening_port()
    server.close()  # nothing listens there now: the connection is refused
    started = time.monotonic()
    with pytest.raises(UserError) as error:
        runner.connect_ray(f"127.0.0.1:{port}")
    assert time.monotonic() - started < 5
    assert str(error.value).startswith(
        f"cannot reach a Ray cluster at 127.0.0.1:{port}: Connection refused (is `ray start "
        "--head` running there?"
    )
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(UserError, match=rf"at 127\.0\.0\.1:{port} \(\$RAY_ADDRESS\): "):
        runner.connect_ray()
    with pytest.raises(UserError, match=r"a Ray address is HOST:PORT .* got nowhere"):
        runner.connect_ray("nowhere")
    assert fake_ray.inits == []  # Ray, which would retry for minutes, was never asked


def test_a_silent_ray_address_fails_after_the_timeout(fake_ray, monkeypatch):
    """An address where nothing answers (a dropped SYN): the probe gives up after its timeout,
    which is what bounds the wait (Ray itself retries for many minutes)."""
    from relulab.bench import runner

    asked = []

    def silent(address, timeout):
        asked.append((address, timeout))
        raise TimeoutError("timed out")

    monkeypatch.setattr(runner.socket, "create_connection", silent)
    with pytest.raises(UserError) as error:
        runner.connect_ray("10.255.255.1:6379")
    assert asked == [(("10.255.255.1", 6379), runner.RAY_CONNECT_TIMEOUT)]
    assert str(error.value).startswith(
        "cannot reach a Ray cluster at 10.255.255.1:6379: no answer within 10 s"
    )
    assert fake_ray.inits == []


def test_a_ray_cluster_that_wants_a_token_says_so(monkeypatch):
    from relulab.bench import runner

    refusal = ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379")
    refusal.__cause__ = RuntimeError("AuthenticationError: RPC error: InvalidAuthToken: ...")
    fake = FakeRay(init_error=refusal)
    monkeypatch.setattr(runner, "require", lambda *args, **kwargs: fake)
    server, port = _listening_port()
    with server, pytest.raises(UserError) as error:
        runner.connect_ray(f"127.0.0.1:{port}")
    assert str(error.value) == (
        f"cannot reach a Ray cluster at 127.0.0.1:{port}: the cluster wants its authentication "
        "token: set RAY_AUTH_MODE=token, with the head's token in ~/.ray/auth_token or "
        "$RAY_AUTH_TOKEN"
    )


@pytest.mark.parametrize("executor", ["one process", "process pool", "ray"])
def test_trials_never_open_the_users_file(tmp_path, monkeypatch, fake_ray, executor):
    """The driver reads the table once; the trials get its bytes. With the file gone after
    planning (as on a worker machine that never had it), every trial still runs, and gives
    what it gives with the file there."""
    from relulab.bench import runner, tasks
    from relulab.bench.trainer import run_trial

    data = _table_file(tmp_path / "t.csv", 40)
    config = runner.BenchConfig(tasks=["csv"], activations=["relu", "gelu"], seeds=1, epochs=1,
                                data=str(data), target="kind").resolved()  # fmt: skip
    specs = runner.plan(config)
    expected = {spec.trial_id: run_trial(spec) for spec in specs}
    content = data.read_bytes()
    data.unlink()
    tasks._cached_data.cache_clear()  # what a fresh worker process starts with

    workers, kind = {"one process": (1, "local"), "process pool": (2, "local"),
                     "ray": (2, "ray")}[executor]  # fmt: skip
    outcomes = dict(runner.execute(specs, workers=workers, executor=kind))
    assert sorted(s.trial_id for s in outcomes) == sorted(expected)
    for spec, outcome in outcomes.items():
        reference = expected[spec.trial_id]
        assert outcome.result["status"] == "ok"
        assert np.array_equal(outcome.probabilities, reference.probabilities)
        assert outcome.result["test_score"] == reference.result["test_score"]
    if executor == "ray":  # the task, with the file's bytes, went to the object store once
        ((task,),) = [fake_ray.puts]
        assert task.content == content and task.sha256 == hashlib.sha256(content).hexdigest()
        assert all("task" not in fields for _, fields in fake_ray.calls)


RAY_LOCAL = """
import os, sys
from pathlib import Path
from relulab.bench import runner
data, parent = Path(sys.argv[1]), Path(sys.argv[2])
config = runner.BenchConfig(tasks=["csv"], activations=["relu", "gelu"], seeds=2, epochs=1,
                            data=str(data), target="kind")
run, config, specs = runner.start_run(config, parent)
data.unlink()  # the Ray workers must not need it
runner.run_missing(run, specs, workers=2, executor="ray")
print(run)
"""


@pytest.mark.slow
def test_ray_starts_a_local_instance_and_ships_the_table(tmp_path):
    """For real: no address, so a local Ray instance with --workers CPUs; the table's file is
    deleted before the trials start, and they match a local run of the same table."""
    pytest.importorskip("ray")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    data = _table_file(tmp_path / "t.csv", 40)
    (tmp_path / "copy").mkdir()
    copy = _table_file(tmp_path / "copy" / "t.csv", 40)
    done = subprocess.run(
        [sys.executable, "-c", RAY_LOCAL, str(data), str(tmp_path / "ray")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (
        "no --ray-address or $RAY_ADDRESS: started a local Ray instance with 2 CPUs" in done.stderr
    )
    on_ray = Path(done.stdout.strip().splitlines()[-1])
    assert main(["bench", "--data", str(copy), "--target", "kind", "--acts", "relu", "gelu",
                 "--seeds", "2", "--epochs", "1", "--workers", "1", "--quiet",
                 "--out", str(tmp_path / "local")]) == 0  # fmt: skip
    assert_same_trials(on_ray, next((tmp_path / "local").glob("*-bench")))
