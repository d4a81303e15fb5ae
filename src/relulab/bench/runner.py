"""Plan a benchmark's trials and run the missing ones in-process, in a local process pool or
on a Ray cluster; the driver alone writes the run directory."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from relulab.bench import rundir
from relulab.bench.tasks import canonical_task_name, get_task
from relulab.bench.trainer import TrialOutcome, TrialSpec, activation_for_width, run_trial
from relulab.errors import UserError
from relulab.optional import require
from relulab.registry import did_you_mean, format_spec, parse_spec

DEFAULT_TASKS = ("spirals", "digits", "mnist1d")
DEFAULT_ACTIVATIONS = ("relu", "leaky_relu", "gelu", "silu", "mish", "golu", "smelu", "xsilu")
SUITES = {"quick": {"seeds": 3}, "full": {"seeds": 10}}
# The options that define an experiment: a resumed run must keep them.
EXPERIMENT_FIELDS = (
    "tasks", "activations", "suite", "seeds", "epochs", "learning_rate", "batch_size",
    "threads", "data", "target",
)  # fmt: skip


def canonical_spec(spec: str) -> str:
    """One spelling per activation: ``"ReLU"`` → ``"relu"``, ``"leaky_relu(0.2)"`` →
    ``"leaky_relu(negative_slope=0.2)"``."""
    return format_spec(*parse_spec(spec))


def _unique(kind: str, names: list[str]) -> list[str]:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"{kind} {repeated[0]!r} is given twice")
    return names


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror or error}") from None
    return digest.hexdigest()


@dataclass
class BenchConfig:
    """What a benchmark compares. ``None`` means the suite's or the task's default."""

    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    activations: list[str] = field(default_factory=lambda: list(DEFAULT_ACTIVATIONS))
    suite: str = "quick"
    seeds: int | None = None
    epochs: int | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    threads: int = 1  # per trial; fixed so that results do not depend on the worker count
    data: str | None = None
    target: str | None = None
    data_sha256: str | None = None
    name: str = "bench"
    baseline: str | None = None  # None: relu if it is compared, else the first activation

    def resolved(self) -> BenchConfig:
        """A copy with defaults filled in, names made canonical, and every value checked."""
        if self.suite not in SUITES:
            raise UserError(f"unknown suite {self.suite!r} (choose from {', '.join(SUITES)})")
        for key in ("seeds", "epochs", "batch_size", "threads"):
            value = getattr(self, key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise UserError(f"--{key.replace('_', '-')} must be an integer >= 1, got {value!r}")
        if self.learning_rate is not None and not (
            math.isfinite(self.learning_rate) and self.learning_rate > 0
        ):
            raise UserError(f"--lr must be a finite number > 0, got {self.learning_rate!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name or ""):
            raise UserError(
                f"--name may use letters, digits, '_', '.' and '-' only, got {self.name!r}"
            )
        tasks = _unique("task", [canonical_task_name(t) for t in self.tasks])
        activations = _unique("activation", [canonical_spec(s) for s in self.activations])
        for spec in activations:  # unbuildable arguments fail here, before anything trains
            activation_for_width(spec, 4)
        data, digest = self.data, self.data_sha256
        if "table" in tasks:
            if not (self.data and self.target):
                raise UserError("the csv/npz task needs --data FILE and --target COLUMN")
            data = str(Path(self.data).resolve())
            if not Path(data).is_file():
                raise UserError(f"cannot read {self.data}: no such file")
            digest = _file_digest(data)
        baseline = canonical_spec(self.baseline) if self.baseline else None
        if baseline is None:
            baseline = "relu" if "relu" in activations else activations[0]
        elif baseline not in activations:
            hint = did_you_mean(baseline, activations) or f" (compared: {', '.join(activations)})"
            raise UserError(f"baseline {self.baseline!r} is not among the activations{hint}")
        return dataclasses.replace(
            self,
            tasks=tasks,
            activations=activations,
            seeds=self.seeds or SUITES[self.suite]["seeds"],
            data=data,
            data_sha256=digest,
            baseline=baseline,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def plan(config: BenchConfig) -> list[TrialSpec]:
    """Every (task, activation, seed) trial of a resolved config, in a stable order."""
    specs = []
    for task_name in config.tasks:
        arguments = {"path": config.data, "target": config.target} if task_name == "table" else {}
        task = get_task(task_name, **arguments)
        task.data()  # unreadable data fails here, not in a worker
        for activation in config.activations:
            for seed in range(config.seeds):
                specs.append(
                    TrialSpec(
                        task=task,
                        activation=activation,
                        seed=seed,
                        epochs=config.epochs or task.epochs[config.suite],
                        batch_size=config.batch_size or task.batch_size,
                        learning_rate=config.learning_rate or task.learning_rate,
                        threads=config.threads,
                    )
                )
    return specs


def _spec_record(spec: TrialSpec) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(spec).items() if k != "task"}


def write_trial(run: Path, spec: TrialSpec, outcome: TrialOutcome) -> None:
    """A trial's files; result.json last, so that its presence means the trial is complete."""
    directory = rundir.trial_directory(run, spec.trial_id)
    lines = "".join(json.dumps(epoch, sort_keys=True) + "\n" for epoch in outcome.epochs)
    rundir.write_text_atomic(directory / rundir.METRICS, lines)
    rundir.write_array_atomic(directory / rundir.PREDICTIONS, outcome.probabilities)
    result = {
        **outcome.result,
        "schema": rundir.SCHEMA_VERSION,
        "trial": spec.trial_id,
        "spec": _spec_record(spec),
        "finished": rundir.now_iso(),
    }
    rundir.write_json_atomic(directory / rundir.RESULT, result)


def _in_process(specs: list[TrialSpec]) -> Iterator[tuple[TrialSpec, TrialOutcome]]:
    for spec in specs:
        yield spec, run_trial(spec)


def exit_with_parent(parent: int, interval: float = 0.5) -> None:
    """A worker's initializer: end this process once ``parent`` is gone. A parent killed
    with SIGKILL cannot tell its pool to stop, and its workers would live on, idle, for good."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="relulab-exit-with-parent", daemon=True).start()


def _process_pool(specs: list[TrialSpec], workers: int) -> Iterator[tuple[TrialSpec, TrialOutcome]]:
    # spawn, not fork: a forked child would inherit torch's thread pools mid-state.
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=exit_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        futures = {pool.submit(run_trial, spec): spec for spec in specs}
        try:
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield futures[future], future.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def connect_ray(address: str | None) -> Any:
    """Ray, connected to ``address`` ($RAY_ADDRESS, else a running cluster) unless it is already."""
    ray = require("ray", extra="ray", purpose="--executor ray")
    if not ray.is_initialized():
        try:
            ray.init(address=address or os.environ.get("RAY_ADDRESS") or "auto")
        except (ConnectionError, RuntimeError) as error:
            raise UserError(
                f"cannot reach a Ray cluster: {str(error).strip().splitlines()[0]}"
            ) from None
    return ray


def _ray(specs: list[TrialSpec], address: str | None) -> Iterator[tuple[TrialSpec, TrialOutcome]]:
    ray = connect_ray(address)
    remote_trial = ray.remote(run_trial)
    references = {remote_trial.options(num_cpus=spec.threads).remote(spec): spec for spec in specs}
    pending = list(references)
    while pending:
        finished, pending = ray.wait(pending, num_returns=1)
        for reference in finished:
            yield references[reference], ray.get(reference)


def execute(
    specs: list[TrialSpec],
    *,
    workers: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
) -> Iterable[tuple[TrialSpec, TrialOutcome]]:
    """Run ``specs`` and yield each (spec, outcome) as it finishes, in any order."""
    if executor == "ray":
        return _ray(specs, ray_address)
    if executor != "local":
        raise UserError(f"unknown executor {executor!r} (choose from local, ray)")
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if workers == 1 or len(specs) <= 1:
        return _in_process(specs)
    return _process_pool(specs, min(workers, len(specs)))


def start_run(config: BenchConfig, parent: Path) -> tuple[Path, BenchConfig, list[TrialSpec]]:
    """Create a new run directory with its config.json (only once everything has checked out)."""
    config = config.resolved()
    specs = plan(config)
    run = rundir.new_run_directory(parent, config.name)
    rundir.write_json_atomic(
        run / rundir.CONFIG,
        {
            "schema": rundir.SCHEMA_VERSION,
            "created": rundir.now_iso(),
            "config": config.to_dict(),
            "trials": [s.trial_id for s in specs],
            "plan": {s.trial_id: _spec_record(s) for s in specs},
            **rundir.environment(),
        },
    )
    return run, config, specs


def code_differences(started: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """How the code running ``now`` differs from the code a run ``started`` with (both as
    :func:`rundir.environment` records them); empty when it is the same code.

    Compares the relulab and torch versions, the git commit where both runs have one, and
    the hash of relulab's source files always (it also catches uncommitted edits, and is all
    there is without a git checkout). A run that recorded no source hash (made before relulab
    recorded one) counts as differing.
    """
    differences = []
    for package in ("relulab", "torch"):
        was, is_ = started.get("versions", {}).get(package), now["versions"].get(package)
        if was != is_:
            differences.append(f"{package} {was} → {is_}")
    was, is_ = (started.get("git") or {}).get("commit"), now["git"].get("commit")
    if was and is_ and was != is_:
        differences.append(f"git commit {was[:12]} → {is_[:12]}")
    was, is_ = (started.get("source") or {}).get("sha256"), now["source"]["sha256"]
    if was != is_:
        differences.append(f"source sha256 {was[:12] if was else 'not recorded'} → {is_[:12]}")
    return differences


def resume_run(
    run: Path, requested: dict[str, Any] | None = None, *, force: bool = False
) -> tuple[BenchConfig, list[TrialSpec]]:
    """The stored config of ``run`` and its trials, after checking that nothing has drifted.

    ``requested`` holds experiment options given again on the command line; any that differ
    from the stored run are an error, and so are a changed data file and a changed plan (the
    code's defaults moved): a resumed run must finish the experiment it started. Other code
    (:func:`code_differences`: versions, git commit, source hash) is an error too unless
    ``force``; each resume is appended to config.json's ``resumes``, with what it forced.

    Runs under the run's lock, so a run in progress is refused before anything is read or
    written; :func:`run_missing` takes the lock again before it touches the run's files.
    """
    rundir.read_config(run)  # not a run directory: say so, and leave no lock file there
    with rundir.exclusive(run):
        stored_file = rundir.read_config(run)
        stored = BenchConfig.from_dict(stored_file["config"])
        requested = {
            k: v for k, v in (requested or {}).items() if k in EXPERIMENT_FIELDS and v is not None
        }
        if requested:
            again = dataclasses.replace(stored, **requested, data_sha256=None).resolved()
            for key in requested:
                if getattr(again, key) != getattr(stored, key):
                    has, given = getattr(stored, key), requested[key]
                    raise UserError(
                        f"--resume: this run has {key}={has!r}, not {given!r}; "
                        "drop the option or start a new run"
                    )
        if stored.data and _file_digest(stored.data) != stored.data_sha256:
            raise UserError(
                f"--resume: {stored.data} changed since the run started; start a new run"
            )
        now = rundir.environment()
        differences = code_differences(stored_file, now)
        if differences and not force:
            raise UserError(
                f"--resume: the code differs from the run's ({'; '.join(differences)}), so "
                "results would not be comparable; start a new run, or pass --force to resume"
            )
        specs = plan(stored)
        if {s.trial_id: _spec_record(s) for s in specs} != stored_file.get("plan"):
            raise UserError(
                "--resume: the trials planned now differ from the run's (defaults changed?)"
            )
        resume = {
            "resumed": rundir.now_iso(),
            "forced": bool(differences),
            "differences": differences,
        }
        resume.update({k: now[k] for k in ("versions", "git", "source")})
        stored_file["resumes"] = [*stored_file.get("resumes", []), resume]
        rundir.write_json_atomic(run / rundir.CONFIG, stored_file)
    return stored, specs


def run_missing(
    run: Path,
    specs: list[TrialSpec],
    *,
    workers: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
    on_start: Callable[[list[TrialSpec]], None] | None = None,
    on_trial: Callable[[TrialSpec, TrialOutcome], None] | None = None,
) -> int:
    """Run the trials of ``specs`` that ``run`` does not have yet; returns how many ran.

    Holds the run's lock throughout, and only under it removes the temporary files that a
    killed run left and decides which trials are missing (a refused caller touches nothing).
    ``on_start`` gets the missing trials once they are known; ``on_trial`` each finished one.
    """
    with rundir.exclusive(run):
        rundir.remove_leftovers(run)
        missing = [s for s in specs if not rundir.is_finished(run, s.trial_id)]
        if on_start:
            on_start(missing)
        for spec, outcome in execute(
            missing, workers=workers, executor=executor, ray_address=ray_address
        ):
            write_trial(run, spec, outcome)
            if on_trial:
                on_trial(spec, outcome)
    return len(missing)
