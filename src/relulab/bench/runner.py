"""Plan a benchmark's trials and run the missing ones in-process, in a local process pool or
on a Ray cluster; the driver alone writes the run directory."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from relulab.bench import rundir, user_data
from relulab.bench.tasks import Table, Task, TaskData, canonical_task_name, get_task
from relulab.bench.trainer import TrialOutcome, TrialSpec, activation_for_width, run_trial
from relulab.errors import UserError
from relulab.optional import require
from relulab.registry import canonical_spec, did_you_mean

log = logging.getLogger(__name__)

DEFAULT_TASKS = ("spirals", "digits", "mnist1d")
DEFAULT_ACTIVATIONS = ("relu", "leaky_relu", "gelu", "silu", "mish", "golu", "smelu", "xsilu")
SUITES = {"quick": {"seeds": 3}, "full": {"seeds": 10}}
# The options that define an experiment: a resumed run must keep them.
EXPERIMENT_FIELDS = (
    "tasks", "activations", "suite", "seeds", "epochs", "learning_rate", "batch_size",
    "threads", "data", "target",
)  # fmt: skip


def _unique(kind: str, names: list[str], given: list[str] | None = None) -> list[str]:
    """``names`` (canonical), refused where one is there twice, naming how it was given."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        spellings = [g for g, n in zip(given or names, names) if n == repeated[0]]
        how = f" (as {' and '.join(map(repr, spellings))})" if len(set(spellings)) > 1 else ""
        raise UserError(f"{kind} {repeated[0]!r} is given twice{how}")
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
    save_models: bool = False  # each trial's trained weights, for relulab regions and codes

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
        activations = _unique(
            "activation", [canonical_spec(s) for s in self.activations], list(self.activations)
        )
        for spec in activations:  # unbuildable arguments fail here, before anything trains
            activation_for_width(spec, 4)
        data, digest = self.data, self.data_sha256
        if "table" in tasks:
            if not self.data:
                raise UserError("the csv/npz task needs --data FILE and --target COLUMN")
            data = str(Path(self.data).resolve())
            user_data.read_bytes(data)  # a missing file or a directory: say so now
            if not self.target:
                choices = user_data.target_choices(data)
                listed = f" (in {self.data}: {', '.join(choices)})" if choices else ""
                raise UserError(f"--data needs --target, the label column or array{listed}")
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


def _table(config: BenchConfig) -> Task:
    """The table task of ``config``, carrying its file's bytes (see :class:`Table`), after
    checking that they are the bytes the run recorded."""
    task = Table.from_file(config.data, config.target)
    if config.data_sha256 and task.sha256 != config.data_sha256:
        raise UserError(
            f"{config.data} changed since the run started (sha256 {config.data_sha256[:12]} "
            f"→ {task.sha256[:12]}); start a new run"
        )
    return task


# Below these, test scores move in steps too coarse to compare activations by.
MIN_TEST_EXAMPLES = 20
MIN_TEST_PER_CLASS = 2


def warn_if_small(task: Task, data: TaskData) -> None:
    """Log one warning when ``task``'s test set is too small to tell activations apart: fewer
    than :data:`MIN_TEST_EXAMPLES` examples, or fewer than :data:`MIN_TEST_PER_CLASS` of
    some class. A task whose classes are a vocabulary, some of it rightly missing from the
    test set (charlm's rare characters), sets ``per_class_check = False`` to skip the second
    check."""
    # getattr: only the tasks that opt out declare the attribute
    per_class = getattr(task, "per_class_check", True)
    counts = np.bincount(data.y_test.numpy(), minlength=data.classes)
    total, fewest = int(counts.sum()), int(counts.min())
    if total >= MIN_TEST_EXAMPLES and (fewest >= MIN_TEST_PER_CLASS or not per_class):
        return
    source = getattr(task, "path", "") or task.name
    held_out = " (a table's test split is 20% of its rows)" if isinstance(task, Table) else ""
    smallest = f" ({fewest} in the smallest class)" if per_class else ""
    also = f" and {MIN_TEST_PER_CLASS} per class" if per_class else ""
    log.warning(
        "warning: %s: only %d test examples%s, so each is worth %.1f points of %s, too coarse "
        "to compare activations by; use at least %d test examples%s%s",
        source, total, smallest, 100 / total, task.metric, MIN_TEST_EXAMPLES, also, held_out,
    )  # fmt: skip


def plan(config: BenchConfig) -> list[TrialSpec]:
    """Every (task, activation, seed) trial of a resolved config, in a stable order.

    Runs on the driver: it reads the data of every task (so that unreadable data fails here,
    not in a worker) and warns about a test set too small to compare by (:func:`warn_if_small`).
    """
    specs = []
    for task_name in config.tasks:
        task = _table(config) if task_name == "table" else get_task(task_name)
        warn_if_small(task, task.data())
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


def trial_spec(run: str | Path, trial: str) -> TrialSpec:
    """The spec of one trial of a run (its task, activation, seed, schedule)."""
    run = Path(run)
    recorded = rundir.read_config(run)
    if "config" not in recorded:  # another command's run directory (relulab reduce's, say)
        kind = f"relulab {recorded['command']}" if "command" in recorded else "another kind of"
        raise UserError(f"{run} is a {kind} run, not a bench run (relulab bench --save-models)")
    config = BenchConfig.from_dict(recorded["config"])
    specs = {spec.trial_id: spec for spec in plan(config)}
    if trial not in specs:
        hint = did_you_mean(trial, list(specs)) or f" (trials: {', '.join(list(specs)[:5])}, ...)"
        raise UserError(f"{run}: no trial {trial!r}{hint}")
    return specs[trial]


def load_model(run: str | Path, trial: str | TrialSpec) -> nn.Module:
    """The trained model of a trial (its id or :func:`trial_spec`) of a run made with
    ``--save-models``, in eval mode: built by its task's factory with its activation, weights
    loaded with ``torch.load(weights_only=True)``."""
    spec = trial if isinstance(trial, TrialSpec) else trial_spec(run, trial)
    path = rundir.trial_directory(Path(run), spec.trial_id) / rundir.MODEL
    if not path.is_file():
        raise UserError(f"{path}: no saved weights; make the run with relulab bench --save-models")
    data = spec.task.data()
    model = spec.task.model(functools.partial(activation_for_width, spec.activation), data)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def _spec_record(spec: TrialSpec) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(spec).items() if k != "task"}


def write_trial(
    run: Path, spec: TrialSpec, outcome: TrialOutcome, save_model: bool = False
) -> None:
    """A trial's files; result.json last, so that its presence means the trial is complete."""
    directory = rundir.trial_directory(run, spec.trial_id)
    if save_model and outcome.state is not None:
        buffer = io.BytesIO()
        torch.save(outcome.state, buffer)
        rundir.write_bytes_atomic(directory / rundir.MODEL, buffer.getvalue())
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


RAY_CONNECT_TIMEOUT = 10.0  # seconds to wait for a cluster's address to answer


def connect_ray(
    address: str | None = None,
    *,
    workers: int | None = None,
    threads: int = 1,
    timeout: float = RAY_CONNECT_TIMEOUT,
) -> Any:
    """Ray, initialised (unless it already is) to run trials.

    With an ``address`` (else $RAY_ADDRESS): connect to that cluster (``HOST:PORT`` of its
    head, ``ray://HOST:PORT`` for Ray Client, or ``auto`` for one started by ``ray start`` on
    this machine). The address must answer within ``timeout`` seconds: Ray itself would
    retry an unreachable one for many minutes. Without either: start a local Ray instance,
    as ``ray.init()`` does, with ``workers × threads`` CPUs, so that ``workers`` trials of
    ``threads`` torch threads each run at once (all the machine's CPUs when ``workers`` is
    None), and log one line saying so. Raises UserError in one line when the cluster cannot
    be reached.
    """
    ray = require("ray", extra="ray", purpose="--executor ray")
    if ray.is_initialized():
        return ray
    given = address or os.environ.get("RAY_ADDRESS") or None
    # Ray's own log lines (token authentication, dashboard) are not the user's business here.
    quiet = {"logging_level": logging.ERROR, "include_dashboard": False}
    if given is None:
        try:
            ray.init(address="local", num_cpus=workers and workers * threads, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise UserError(f"cannot start a local Ray instance: {_first_line(error)}") from None
        cpus = int(ray.cluster_resources().get("CPU", 0))
        log.warning(
            "no --ray-address or $RAY_ADDRESS: started a local Ray instance with %d CPUs; "
            "give a cluster's address to run on it",
            cpus,
        )
        return ray
    where = given if address else f"{given} ($RAY_ADDRESS)"
    _check_reachable(given, where, timeout)
    try:  # Ray Client (ray://) would pass the quieting options on to the cluster's ray.init
        ray.init(address=given, **({} if given.startswith("ray://") else quiet))
    except (ConnectionError, RuntimeError, ValueError) as error:
        reason = _first_line(error)
        if "InvalidAuthToken" in f"{error} {error.__cause__}":
            # Ray sends its token to an explicit address only when told to.
            reason = (
                "the cluster wants its authentication token: set RAY_AUTH_MODE=token, with "
                "the head's token in ~/.ray/auth_token or $RAY_AUTH_TOKEN"
            )
        raise UserError(f"cannot reach a Ray cluster at {where}: {reason}") from None
    return ray


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _check_reachable(address: str, where: str, timeout: float) -> None:
    """A TCP connection to ``address`` (``[ray://]HOST:PORT``) opens within ``timeout``
    seconds; ``auto`` and ``local`` are left to Ray."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(
            f"a Ray address is HOST:PORT (the head's, e.g. 10.0.0.5:6379) or auto, got {where}"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except TimeoutError:
        reason = f"no answer within {timeout:g} s"
    except OSError as error:
        reason = error.strerror or str(error)
    else:
        return
    raise UserError(
        f"cannot reach a Ray cluster at {where}: {reason} (is `ray start --head` running "
        "there? Leave out --ray-address and $RAY_ADDRESS to run on a local Ray instance)"
    )


def _trial_of(task: Task, fields: dict[str, Any]) -> TrialOutcome:
    """A trial on a Ray worker: ``task`` comes from Ray's object store, one copy for every
    trial of the task (a table task carries its file's bytes)."""
    return run_trial(TrialSpec(task=task, **fields))


def _ray(
    specs: list[TrialSpec], address: str | None, workers: int | None
) -> Iterator[tuple[TrialSpec, TrialOutcome]]:
    threads = max(spec.threads for spec in specs) if specs else 1
    ray = connect_ray(address, workers=workers, threads=threads)
    remote_trial = ray.remote(_trial_of)
    shared = {task: ray.put(task) for task in dict.fromkeys(spec.task for spec in specs)}
    references = {}
    for spec in specs:
        fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
        task = shared[fields.pop("task")]
        references[remote_trial.options(num_cpus=spec.threads).remote(task, fields)] = spec
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
    """Run ``specs`` and yield each (spec, outcome) as it finishes, in any order.

    ``workers`` is the number of trials at a time; with ``executor="ray"`` it sizes the local
    Ray instance, when one has to be started (see :func:`connect_ray`).
    """
    if executor == "ray":
        return _ray(specs, ray_address, workers)
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


def _data_for_resume(stored: BenchConfig, given: str | None) -> str:
    """Where the data of the run ``stored`` is now: its recorded path, or ``given`` (--data)
    when that file holds the same bytes (the file moved). Raises UserError when the file is
    gone or its content differs from the run's."""
    recorded, digest = stored.data, stored.data_sha256
    if given is None:
        if not Path(recorded).is_file():
            raise UserError(
                f"--resume: the run's data file {recorded} is gone; if it moved, add "
                f"--data NEW_PATH (the same content: sha256 {digest[:12]}…)"
            )
        path = recorded
    else:
        path = str(Path(given).resolve())
        if not Path(path).is_file():
            raise UserError(f"cannot read {given}: no such file")
    now = _file_digest(path)
    if now == digest:
        return path
    if path == recorded:
        raise UserError(
            f"--resume: {recorded} changed since the run started (sha256 {digest[:12]} → "
            f"{now[:12]}); start a new run"
        )
    raise UserError(
        f"--resume: {path} (sha256 {now[:12]}) is not the file this run started with, "
        f"{recorded} (sha256 {digest[:12]}); give --data a copy of that or start a new run"
    )


def resume_run(
    run: Path, requested: dict[str, Any] | None = None, *, force: bool = False
) -> tuple[BenchConfig, list[TrialSpec]]:
    """The stored config of ``run`` and its trials, after checking that nothing has drifted.

    ``requested`` holds experiment options given again on the command line; any that differ
    from the stored run are an error, and so are a changed data file and a changed plan (the
    code's defaults moved): a resumed run must finish the experiment it started. A data file
    that moved is given as ``requested["data"]``: accepted when its sha256 is the run's, and
    its new path recorded in config.json (and in the resume's ``data_moved``). Other code
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
        moved = None
        if stored.data:
            data = _data_for_resume(stored, requested.pop("data", None))
            if data != stored.data:
                moved = {"from": stored.data, "to": data}
                stored = dataclasses.replace(stored, data=data)
                stored_file["config"]["data"] = data
        if requested:
            again = dataclasses.replace(stored, **requested, data_sha256=None).resolved()
            for key in requested:
                if getattr(again, key) != getattr(stored, key):
                    has, given = getattr(stored, key), requested[key]
                    raise UserError(
                        f"--resume: this run has {key}={has!r}, not {given!r}; "
                        "drop the option or start a new run"
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
        details = {"forced": bool(differences), "differences": differences}
        if moved:
            details["data_moved"] = moved
        rundir.record_resume(run, stored_file, **details)
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
        save_models = bool(rundir.read_config(run)["config"].get("save_models"))
        missing = [s for s in specs if not rundir.is_finished(run, s.trial_id)]
        if on_start:
            on_start(missing)
        for spec, outcome in execute(
            missing, workers=workers, executor=executor, ray_address=ray_address
        ):
            write_trial(run, spec, outcome, save_model=save_models)
            if on_trial:
                on_trial(spec, outcome)
    return len(missing)
