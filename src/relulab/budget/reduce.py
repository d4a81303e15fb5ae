"""Reduce a trained model's ReLUs to budgets with several methods, and measure each result.

:func:`reduce` trains the task's full ReLU model as the bench does (or takes a trained one),
then, for every method and budget, makes a reduced model, fine-tunes it with the bench's
recipe and records its ReLU count (traced, :func:`relulab.budget.count_relus`), test score,
estimated private-inference cost of its nonlinear layers
(:func:`relulab.budget.private.cost_model`) and the time taken. Given a directory, each
finished step (the full model's weights, each stage's criticality, each method and budget)
is written there atomically and read back instead of recomputed, so an interrupted run
resumes after its last finished step.

Methods are functions ``(context, budget) -> Reduced`` in :data:`METHODS`: DeepReDuce's
``cull`` and ``thin`` (:mod:`relulab.budget.deepreduce`; the stages are ranked once per run
by criticality, one training per stage), SNL's and AutoReP's learned masks
(:mod:`relulab.budget.masks`, trained to the budget by
:func:`relulab.budget.mask_training.train_to_budget`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from relulab.bench import rundir
from relulab.bench.models import paired_init
from relulab.bench.trainer import (
    TrialSpec,
    activation_for_width,
    evaluate_test_score,
    run_trial,
)
from relulab.budget.count import count_relus
from relulab.budget.deepreduce import Stage, linearized, plan, relu_stages
from relulab.budget.private import cost_model
from relulab.errors import UserError

# Each communication round cost about 3 ms between two processes on this machine's loopback
# (private.py); with it, cost_model reproduces the measured encrypted latencies (e.g. an MLP
# with 200 ReLUs in 2 layers: 66.7 ms estimated, 65.9 ms measured).
ROUND_TRIP_S = 3e-3


def initial_model(spec: TrialSpec) -> nn.Module:
    """The task's ReLU model at the spec's initial weights."""
    data = spec.task.data()
    model = spec.task.model(functools.partial(activation_for_width, "relu"), data)
    paired_init(model, spec.seed)
    return model


class Steps:
    """One seed's finished steps, kept in ``directory`` (nowhere when it is None).

    :meth:`record` and :meth:`trained` compute a step only if the directory does not
    already hold it, and write it atomically once computed.
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def record(self, name: str, compute: Callable[[], dict]) -> dict:
        path = None if self.directory is None else self.directory / f"{name}.json"
        if path is not None and path.is_file():
            return rundir.read_json(path)
        value = compute()
        if path is not None:
            rundir.write_json_atomic(path, value)
        return value

    def trained(self, name: str, model: nn.Module, train: Callable[[nn.Module], dict]) -> dict:
        """``train(model)``'s record, or the stored weights loaded into ``model``."""
        if self.directory is not None:
            weights = self.directory / f"{name}.pt"
            if weights.is_file() and (self.directory / f"{name}.json").is_file():
                model.load_state_dict(torch.load(weights, weights_only=True))
                return rundir.read_json(self.directory / f"{name}.json")

        def train_and_save() -> dict:
            value = train(model)
            self.save_weights(name, model)  # before the record, which marks the step done
            return value

        return self.record(name, train_and_save)

    def save_weights(self, name: str, model: nn.Module) -> None:
        if self.directory is not None:
            buffer = io.BytesIO()
            torch.save(model.state_dict(), buffer)
            rundir.write_bytes_atomic(self.directory / f"{name}.pt", buffer.getvalue())


@dataclass
class Context:
    """What the methods share: the spec, the trained full model, its stages and ranking."""

    spec: TrialSpec
    full: nn.Module
    input_shape: tuple[int, ...]
    stages: list[Stage]
    fine_tune_epochs: int
    progress: Callable[[str], None]
    steps: Steps = field(default_factory=lambda: Steps(None))
    criticality: list[float] | None = None
    criticality_seconds: float = 0.0

    def train(self, model: nn.Module, epochs: int, teacher: nn.Module | None = None) -> float:
        """Train ``model`` in place with the bench's recipe (distilled from ``teacher`` if
        given); its test score."""
        spec = dataclasses.replace(self.spec, epochs=epochs)
        return float(run_trial(spec, model=model, teacher=teacher).result["test_score"])

    def order(self) -> list[int]:
        """Stages, most critical first: test score with only that stage's ReLUs kept."""
        if self.criticality is None:
            self.criticality = []
            for stage in self.stages:

                def score(stage: Stage = stage) -> dict:
                    self.progress(f"criticality of {stage.name} ({stage.total:,} ReLUs)")
                    start = time.perf_counter()
                    model = linearized(initial_model(self.spec), stage.layers, self.stages)
                    score = self.train(model, self.spec.epochs)
                    return {"test_score": score, "seconds": time.perf_counter() - start}

                found = self.steps.record(f"criticality-{stage.name}", score)
                self.criticality.append(found["test_score"])
                self.criticality_seconds += found["seconds"]
        return sorted(range(len(self.stages)), key=lambda i: -self.criticality[i])


@dataclass
class Reduced:
    """A method's result before fine-tuning: the model, its ReLU evaluations per input and
    the estimated private-inference cost of its nonlinear layers (:func:`nonlinear_cost`)."""

    model: nn.Module
    relus: int
    cost: dict[str, Any]
    kept: dict[str, Any] = field(default_factory=dict)


def nonlinear_cost(
    relus_per_layer: Sequence[int],
    products_per_layer: Sequence[int] = (),
    maxpool_comparisons: int = 0,
    maxpool_layers: int = 0,
) -> dict[str, Any]:
    """:func:`~relulab.budget.private.cost_model` of a model's ReLU layers, the layers of
    degree-2 polynomials that replaced ReLUs (one secret product per element) and its
    max-pools, with this machine's loopback round trip (:data:`ROUND_TRIP_S`). Linear layers
    are left out: they cost the same whatever a method cuts."""
    return cost_model(
        sum(relus_per_layer),
        sum(products_per_layer),
        maxpool_comparisons=maxpool_comparisons,
        relu_layers=sum(1 for n in relus_per_layer if n),
        multiplication_layers=sum(1 for n in products_per_layer if n),
        maxpool_layers=maxpool_layers,
        round_trip_s=ROUND_TRIP_S,
    )


def traced_cost(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, dict[str, Any]]:
    """A model's traced ReLU count and :func:`nonlinear_cost`."""
    counted = count_relus(model, input_shape)
    cost = nonlinear_cost(
        [layer.count for layer in counted.relus],
        maxpool_comparisons=counted.max_pool_comparisons,
        maxpool_layers=len(counted.max_pools),
    )
    return counted.total, cost


def _deepreduce(method: str, context: Context, budget: int) -> Reduced:
    chosen = plan(context.stages, context.order(), budget, method)
    model = linearized(context.full, chosen.keep, context.stages)
    kept = {"layers": list(chosen.keep)}
    return Reduced(model, *traced_cost(model, context.input_shape), kept)


def _masked(method: str, context: Context, budget: int) -> Reduced:
    """SNL or AutoReP masks on a copy of the full model, trained to the budget by
    :func:`~relulab.budget.mask_training.train_to_budget`; :func:`reduce` then fine-tunes it
    with the bench's recipe, as it does every method's model, so that the methods differ only
    in what they cut. The count is the masks' kept units: a private-inference runtime
    evaluates ReLU on those only (the dense PyTorch module computes relu everywhere and
    selects); AutoReP's other units each cost one secret product (x squared), SNL's none."""
    from relulab.budget.mask_training import train_to_budget
    from relulab.budget.masks import insert_masks

    model = copy.deepcopy(context.full)
    data = context.spec.task.data()
    with torch.random.fork_rng(devices=[]):  # AutoReP's gates start random: from the seed
        torch.manual_seed(context.spec.seed)
        masks = insert_masks(model, data.x_train[:2], kind=method)
    outcome = train_to_budget(
        model, masks, data, budget, method,
        finetune_epochs=0, batch_size=context.spec.batch_size, seed=context.spec.seed,
    )  # fmt: skip
    kept = [mask.relu_count() for mask in masks]
    products = [mask.relu_total - n for mask, n in zip(masks, kept, strict=True)]
    pools = count_relus(context.full, context.input_shape)
    cost = nonlinear_cost(
        kept,
        products if method == "autorep" else (),
        pools.max_pool_comparisons,
        len(pools.max_pools),
    )
    return Reduced(model, outcome.relu_count, cost, {"relus_per_mask": kept})


METHODS: dict[str, Callable[[Context, int], Reduced]] = {
    "cull": functools.partial(_deepreduce, "cull"),
    "thin": functools.partial(_deepreduce, "thin"),
    "snl": functools.partial(_masked, "snl"),
    "autorep": functools.partial(_masked, "autorep"),
}


@dataclass
class Reduction:
    """One reduced model's measurements."""

    method: str
    budget: int
    relus: int
    test_score: float
    seconds: float
    cost: dict[str, Any] = field(default_factory=dict)
    kept: dict[str, Any] = field(default_factory=dict)


def reduce(
    spec: TrialSpec,
    methods: Sequence[str],
    budgets: Sequence[int],
    depth: int | None = None,
    fine_tune_epochs: int | None = None,
    progress: Callable[[str], None] = lambda line: None,
    *,
    full: nn.Module | None = None,
    directory: str | Path | None = None,
    distill: bool = False,
) -> tuple[dict[str, Any], list[Reduction]]:
    """Train ``spec``'s full ReLU model (or take ``full``, trained), then reduce it to every
    budget with every method.

    Returns the full model's record (ReLUs, test score, cost) and one :class:`Reduction` per
    method and budget. ``fine_tune_epochs`` defaults to half the spec's epochs; with
    ``distill``, fine-tuning distils from the full model
    (:func:`~relulab.bench.trainer.distillation_loss`). With a ``directory``, finished steps
    are kept there and reused (see the module's docstring).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown method {unknown[0]!r} (choose from {', '.join(METHODS)})")
    steps = Steps(None if directory is None else Path(directory))
    input_shape = tuple(spec.task.data().x_train.shape[1:])
    model = initial_model(spec) if full is None else full

    def train_full(model: nn.Module) -> dict:
        start = time.perf_counter()
        if full is None:
            progress(f"training the full model ({spec.epochs} epochs)")
            score = float(run_trial(spec, model=model).result["test_score"])
        else:
            score = evaluate_test_score(spec, model)
        relus, cost = traced_cost(model, input_shape)
        seconds = time.perf_counter() - start
        return {"relus": relus, "test_score": score, "seconds": seconds, "cost": cost}

    record = dict(steps.trained("full", model, train_full))
    record["trained_here"] = full is None
    context = Context(
        spec,
        model,
        input_shape,
        relu_stages(model, input_shape, depth),
        fine_tune_epochs or max(1, spec.epochs // 2),
        progress,
        steps,
    )
    if any(m in ("cull", "thin") for m in methods):  # ranked once, timed on its own
        context.order()
        record["criticality_seconds"] = context.criticality_seconds
        record["criticality"] = {
            stage.name: score
            for stage, score in zip(context.stages, context.criticality, strict=True)
        }
    results = []
    for method in methods:
        for budget in budgets:

            def cut(method: str = method, budget: int = budget) -> dict:
                progress(f"{method} to {budget:,} ReLUs")
                start = time.perf_counter()
                reduced = METHODS[method](context, budget)
                if reduced.relus > budget:  # the method's own promise
                    raise RuntimeError(f"{method} gave {reduced.relus} ReLUs for {budget}")
                teacher = context.full if distill else None
                score = context.train(reduced.model, context.fine_tune_epochs, teacher)
                seconds = time.perf_counter() - start
                found = Reduction(
                    method, budget, reduced.relus, score, seconds, reduced.cost, reduced.kept
                )
                steps.save_weights(f"{method}-{budget}", reduced.model)
                return dataclasses.asdict(found)

            results.append(Reduction(**steps.record(f"{method}-{budget}", cut)))
    return record, results


def _mean(values: Sequence[float]) -> float | int:
    """The mean, as an int when every value is the same int (a count)."""
    if all(v == values[0] for v in values) and float(values[0]).is_integer():
        return int(values[0])
    return float(np.mean(values))


def _stats(records: Sequence[dict]) -> dict[str, Any]:
    """Means over seeds, and the score's sample standard deviation (ddof 1, as the bench's
    statistics; 0 for one seed)."""
    scores = [r["test_score"] for r in records]
    return {
        "relus": _mean([r["relus"] for r in records]),
        "test_score": float(np.mean(scores)),
        "test_score_std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
        **{key: _mean([r["cost"][key] for r in records]) for key in ("bytes", "rounds")},
        "latency_s": float(np.mean([r["cost"]["latency_s"] for r in records])),
        "seconds": float(np.mean([r["seconds"] for r in records])),
        "seeds": len(records),
    }


def summarise(runs: Sequence[tuple[dict, Sequence[Reduction]]]) -> tuple[dict, list[dict]]:
    """Per-seed results of :func:`reduce` as means over seeds and the test score's standard
    deviation: the full model's, and one row per method and budget."""
    cells: dict[tuple[str, int], list[dict]] = {}
    for _, reductions in runs:
        for r in reductions:
            cells.setdefault((r.method, r.budget), []).append(dataclasses.asdict(r))
    rows = [
        {"method": method, "budget": budget, **_stats(found)}
        for (method, budget), found in cells.items()
    ]
    fulls = [full for full, _ in runs]
    full = _stats(fulls)
    if all("criticality_seconds" in f for f in fulls):
        full["criticality_seconds"] = float(np.mean([f["criticality_seconds"] for f in fulls]))
    return full, rows
