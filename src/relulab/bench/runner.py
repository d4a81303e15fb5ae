"""Plan a benchmark's trials and run the missing ones in-process, in a local process pool or
on a Ray cluster; the driver alone writes the run directory."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from relulab.bench import rundir
from relulab.bench.tasks import get_task
from relulab.bench.trainer import TrialOutcome, TrialSpec, activation_for_width, run_trial
from relulab.optional import require

DEFAULT_TASKS = ("spirals", "digits", "mnist1d")
DEFAULT_ACTIVATIONS = ("relu", "leaky_relu", "gelu", "silu", "mish", "golu", "smelu", "xsilu")
SUITES = {"quick": {"seeds": 3}, "full": {"seeds": 10}}
TABLE_TASKS = {"csv": "table", "npz": "table"}  # the user's table, by file type


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
    name: str = "bench"
    baseline: str = "relu"

    def resolved(self) -> BenchConfig:
        """A copy with the suite's defaults filled in and every name checked."""
        if self.suite not in SUITES:
            raise ValueError(f"unknown suite {self.suite!r} (choose from {', '.join(SUITES)})")
        for key, value in (
            ("seeds", self.seeds),
            ("epochs", self.epochs),
            ("threads", self.threads),
        ):
            if value is not None and value < 1:
                raise ValueError(f"--{key} must be at least 1, got {value}")
        tasks = [TABLE_TASKS.get(t, t) for t in self.tasks]
        if "table" in tasks and not (self.data and self.target):
            raise ValueError("the csv/npz task needs --data FILE and --target COLUMN")
        for spec in self.activations:  # fails on unknown names before anything trains
            activation_for_width(spec, 4)
        seeds = self.seeds or SUITES[self.suite]["seeds"]
        return dataclasses.replace(self, tasks=tasks, seeds=seeds)

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
        epochs = config.epochs or task.epochs[config.suite]
        for activation in config.activations:
            for seed in range(config.seeds):
                specs.append(
                    TrialSpec(
                        task=task,
                        activation=activation,
                        seed=seed,
                        epochs=epochs,
                        batch_size=config.batch_size or task.batch_size,
                        learning_rate=config.learning_rate or task.learning_rate,
                        threads=config.threads,
                    )
                )
    return specs


def write_trial(run: Path, spec: TrialSpec, outcome: TrialOutcome) -> None:
    """A trial's files; result.json last, so that its presence means the trial is complete."""
    directory = rundir.trial_directory(run, spec.trial_id)
    lines = "".join(json.dumps(epoch, sort_keys=True) + "\n" for epoch in outcome.epochs)
    rundir.write_text_atomic(directory / rundir.METRICS, lines)
    if outcome.probabilities is not None:
        rundir.write_array_atomic(directory / rundir.PREDICTIONS, outcome.probabilities)
    result = {
        **outcome.result,
        "schema": rundir.SCHEMA_VERSION,
        "trial": spec.trial_id,
        "spec": {k: v for k, v in dataclasses.asdict(spec).items() if k != "task"},
        "finished": rundir.now_iso(),
    }
    rundir.write_json_atomic(directory / rundir.RESULT, result)


def _in_process(specs: list[TrialSpec]) -> Iterator[tuple[TrialSpec, TrialOutcome]]:
    for spec in specs:
        yield spec, run_trial(spec)


def _process_pool(specs: list[TrialSpec], workers: int) -> Iterator[tuple[TrialSpec, TrialOutcome]]:
    # spawn, not fork: a forked child would inherit torch's thread pools mid-state.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
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


def _ray(specs: list[TrialSpec], address: str | None) -> Iterator[tuple[TrialSpec, TrialOutcome]]:
    ray = require("ray", extra="ray", purpose="--executor ray")
    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or "auto")
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
        raise ValueError(f"unknown executor {executor!r} (choose from local, ray)")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if workers == 1 or len(specs) <= 1:
        return _in_process(specs)
    return _process_pool(specs, min(workers, len(specs)))


def start_run(config: BenchConfig, parent: Path) -> tuple[Path, BenchConfig, list[TrialSpec]]:
    """Create a new run directory with its config.json."""
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
            **rundir.environment(),
        },
    )
    return run, config, specs


EXPERIMENT_FIELDS = (
    "tasks",
    "activations",
    "suite",
    "seeds",
    "epochs",
    "learning_rate",
    "batch_size",
    "threads",
    "data",
    "target",
)


def resume_run(
    run: Path, requested: dict[str, Any] | None = None
) -> tuple[BenchConfig, list[TrialSpec]]:
    """The stored config of ``run`` and its trials.

    ``requested`` holds experiment options given again on the command line; any that differ
    from the stored run are an error (a resumed run must finish the experiment it started).
    """
    path = run / rundir.CONFIG
    if not path.is_file():
        raise ValueError(f"{run} is not a relulab run directory (no {rundir.CONFIG})")
    stored = BenchConfig.from_dict(rundir.read_json(path)["config"])
    for key, value in (requested or {}).items():
        if key in EXPERIMENT_FIELDS and value is not None and value != getattr(stored, key):
            raise ValueError(
                f"--resume: this run has {key}={getattr(stored, key)!r}, not {value!r}; "
                "drop the option or start a new run"
            )
    for leftover in run.glob("trials/*/.*.tmp"):  # a write cut short by a kill
        leftover.unlink()
    return stored, plan(stored)


def run_missing(
    run: Path,
    specs: list[TrialSpec],
    *,
    workers: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
    on_trial: Callable[[TrialSpec, TrialOutcome], None] | None = None,
) -> int:
    """Run the trials of ``specs`` that ``run`` does not have yet; returns how many ran."""
    missing = [s for s in specs if not rundir.is_finished(run, s.trial_id)]
    for spec, outcome in execute(
        missing, workers=workers, executor=executor, ray_address=ray_address
    ):
        write_trial(run, spec, outcome)
        if on_trial:
            on_trial(spec, outcome)
    return len(missing)
