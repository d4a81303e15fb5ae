"""Reduce a trained model's ReLUs to budgets with several methods, and measure each result.

:func:`reduce` trains the task's full ReLU model as the bench does (or takes one), then, for
every method and budget, makes a reduced model, fine-tunes it with the bench's recipe and
records its ReLU count (traced, :func:`relulab.budget.count_relus`), test score, estimated
private-inference cost (:func:`relulab.budget.private.cost_model`) and time taken.

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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from relulab.bench.models import paired_init
from relulab.bench.trainer import TrialSpec, activation_for_width, run_trial
from relulab.budget.count import count_relus
from relulab.budget.deepreduce import Stage, linearized, plan, relu_stages
from relulab.budget.private import cost_model
from relulab.errors import UserError


@dataclass
class Context:
    """What the methods share: the spec, the trained full model, its stages and ranking."""

    spec: TrialSpec
    full: nn.Module
    input_shape: tuple[int, ...]
    stages: list[Stage]
    fine_tune_epochs: int
    progress: Callable[[str], None]
    criticality: list[float] | None = None

    def fresh(self) -> nn.Module:
        """The task's ReLU model at the spec's initial weights."""
        data = self.spec.task.data()
        model = self.spec.task.model(functools.partial(activation_for_width, "relu"), data)
        paired_init(model, self.spec.seed)
        return model

    def train(self, model: nn.Module, epochs: int) -> float:
        """Train ``model`` in place with the bench's recipe; its test score."""
        spec = dataclasses.replace(self.spec, epochs=epochs)
        return float(run_trial(spec, model=model).result["test_score"])

    def order(self) -> list[int]:
        """Stages, most critical first: test score with only that stage's ReLUs kept."""
        if self.criticality is None:
            self.criticality = []
            for stage in self.stages:
                self.progress(f"criticality of {stage.name} ({stage.total:,} ReLUs)")
                model = linearized(self.fresh(), stage.layers, self.stages)
                self.criticality.append(self.train(model, self.spec.epochs))
        return sorted(range(len(self.stages)), key=lambda i: -self.criticality[i])


@dataclass
class Reduced:
    """A method's result before fine-tuning: the model and its ReLU evaluations per input."""

    model: nn.Module
    relus: int


def _deepreduce(method: str, context: Context, budget: int) -> Reduced:
    chosen = plan(context.stages, context.order(), budget, method)
    model = linearized(context.full, chosen.keep, context.stages)
    return Reduced(model, count_relus(model, context.input_shape).total)


def _masked(method: str, context: Context, budget: int) -> Reduced:
    """SNL or AutoReP masks on a copy of the full model, trained to the budget by
    :func:`~relulab.budget.mask_training.train_to_budget`; :func:`reduce` then fine-tunes it
    with the bench's recipe, as it does every method's model, so that the methods differ only
    in what they cut. The count is the masks' kept units: a private-inference runtime
    evaluates ReLU on those only (the dense PyTorch module computes relu everywhere and
    selects)."""
    from relulab.budget.mask_training import train_to_budget
    from relulab.budget.masks import insert_masks

    model = copy.deepcopy(context.full)
    data = context.spec.task.data()
    masks = insert_masks(model, data.x_train[:2], kind=method)
    outcome = train_to_budget(
        model, masks, data, budget, method,
        finetune_epochs=0, batch_size=context.spec.batch_size, seed=context.spec.seed,
    )  # fmt: skip
    return Reduced(model, outcome.relu_count)


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


def _cost(model: nn.Module, input_shape: Sequence[int], relus: int | None = None) -> dict:
    counted = count_relus(model, input_shape)
    layers = sum(1 for layer in counted.relus if layer.count)
    return cost_model(
        counted.total if relus is None else relus,
        maxpool_comparisons=counted.max_pool_comparisons,
        relu_layers=max(layers, 1),
        maxpool_layers=max(len(counted.max_pools), 1),
    )


def reduce(
    spec: TrialSpec,
    methods: Sequence[str],
    budgets: Sequence[int],
    depth: int | None = None,
    fine_tune_epochs: int | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> tuple[dict[str, Any], list[Reduction]]:
    """Train ``spec``'s full ReLU model, then reduce it to every budget with every method.

    Returns the full model's record (ReLUs, test score, cost) and one :class:`Reduction` per
    method and budget. ``fine_tune_epochs`` defaults to half the spec's epochs.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown method {unknown[0]!r} (choose from {', '.join(METHODS)})")
    data = spec.task.data()
    input_shape = tuple(data.x_train.shape[1:])
    progress(f"training the full model ({spec.epochs} epochs)")
    start = time.perf_counter()
    full = Context(spec, nn.Identity(), input_shape, [], 0, progress).fresh()
    full_score = float(run_trial(spec, model=full).result["test_score"])
    total = count_relus(full, input_shape).total
    record = {
        "relus": total,
        "test_score": full_score,
        "seconds": time.perf_counter() - start,
        "cost": _cost(full, input_shape),
    }
    context = Context(
        spec,
        full,
        input_shape,
        relu_stages(full, input_shape, depth),
        fine_tune_epochs or max(1, spec.epochs // 2),
        progress,
    )
    if any(m in ("cull", "thin") for m in methods):  # ranked once, timed on its own
        start = time.perf_counter()
        context.order()
        record["criticality_seconds"] = time.perf_counter() - start
    results = []
    for method in methods:
        for budget in budgets:
            progress(f"{method} to {budget:,} ReLUs")
            start = time.perf_counter()
            reduced = METHODS[method](context, budget)
            if reduced.relus > budget:  # the method's own promise
                raise RuntimeError(f"{method} gave {reduced.relus} ReLUs for {budget}")
            score = context.train(reduced.model, context.fine_tune_epochs)
            results.append(
                Reduction(
                    method,
                    budget,
                    reduced.relus,
                    score,
                    time.perf_counter() - start,
                    _cost(reduced.model, input_shape, reduced.relus),
                )
            )
    if context.criticality is not None:
        record["criticality"] = {
            stage.name: score
            for stage, score in zip(context.stages, context.criticality, strict=True)
        }
    return record, results


def summarise(runs: Sequence[tuple[dict, Sequence[Any]]]) -> tuple[dict, list[dict]]:
    """Per-seed results of :func:`reduce` as the figure's mean and
    standard deviation (0 for one seed) per method and budget."""
    fulls = [full for full, _ in runs]
    full = {
        "relus": fulls[0]["relus"],
        "score": float(np.mean([f["test_score"] for f in fulls])),
        "score_std": float(np.std([f["test_score"] for f in fulls])),
        "bytes": fulls[0]["cost"]["bytes"],
        "seeds": len(fulls),
    }
    cells: dict[tuple[str, int], list[Any]] = {}
    for _, reductions in runs:
        for r in reductions:
            cells.setdefault((r.method, r.budget), []).append(r)
    rows = []
    for (method, budget), found in cells.items():
        rows.append(
            {
                "method": method,
                "budget": budget,
                "relus": float(np.mean([r.relus for r in found])),
                "score": float(np.mean([r.test_score for r in found])),
                "score_std": float(np.std([r.test_score for r in found])),
                "bytes": float(np.mean([r.cost["bytes"] for r in found])),
                "seconds": float(np.mean([r.seconds for r in found])),
                "seeds": len(found),
            }
        )
    return full, rows
