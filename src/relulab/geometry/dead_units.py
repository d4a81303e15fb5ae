"""Dead units over training: AP's dynamic dead-neuron rate, per layer and epoch.

A unit (a channel) is dead when its activation's derivative is exactly 0 on every training
example and position (the bench's definition, :func:`relulab.bench.trainer.
activation_statistics`, which this reuses); sparsity is the fraction of exact zeros in the
activation's output. Liu et al. (AP, TMLR 2023) track the dead rate *during* optimisation;
:func:`dead_unit_history` does that for any model with activation modules, given one epoch of
training as a callable; :func:`track_trial` runs it on a bench trial, trained by the bench's
own recipe.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from relulab.bench.trainer import TrialSpec, activation_statistics, run_trial
from relulab.errors import UserError


@dataclass(frozen=True)
class DeadUnitHistory:
    """Per layer (columns) and epoch (rows, 0 = before training): the dead-unit fraction
    (NaN where the activation has no flat region, so no unit can die) and the sparsity."""

    epochs: list[int]
    layers: list[str]
    dead: np.ndarray
    sparsity: np.ndarray

    def to_dict(self) -> dict:
        def cells(array: np.ndarray) -> list[list[float | None]]:
            return [[None if math.isnan(v) else float(v) for v in row] for row in array]

        return {
            "epochs": self.epochs,
            "layers": self.layers,
            "dead_fraction": cells(self.dead),
            "sparsity": cells(self.sparsity),
        }


def dead_unit_history(
    model: nn.Module,
    x: torch.Tensor,
    train_one_epoch: Callable[[int], bool | None],
    epochs: int,
    progress: Callable[[str], None] | None = None,
) -> DeadUnitHistory:
    """Measure the dead units and sparsity of ``model`` on ``x`` (the training inputs) before
    training and after each of ``epochs`` calls of ``train_one_epoch(epoch)``.

    The model is measured in eval mode and left in the mode it was in; ``train_one_epoch``
    puts it in train mode itself if it needs that. A ``train_one_epoch`` that returns
    ``False`` (its loss diverged, say) ends the history before that epoch's row. Measuring
    draws nothing from torch's global generator (it is restored after each measurement), so
    training sees the random stream it would see unmeasured.
    """
    if epochs < 0:
        raise UserError(f"epochs must be at least 0, got {epochs}")
    was_training = model.training
    rows = []
    for epoch in range(epochs + 1):
        if epoch:
            model.train(was_training)
            if train_one_epoch(epoch) is False:
                break
        # An activation that samples (SmartMixed) would otherwise draw in the forward pass.
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            rows.append(activation_statistics(model, x))
        if progress:
            progress(f"epoch {epoch}/{epochs}")
    model.train(was_training)
    return _history(rows, model)


def _history(rows: list[list[dict]], model: nn.Module) -> DeadUnitHistory:
    """The per-epoch records of :func:`activation_statistics` as a :class:`DeadUnitHistory`."""
    layers = [record["layer"] for record in rows[0]]
    if not layers:
        raise UserError(f"{type(model).__name__} has no activation modules to measure")

    def table(key: str) -> np.ndarray:
        return np.array(
            [[math.nan if r[key] is None else r[key] for r in row] for row in rows], dtype=float
        )

    return DeadUnitHistory(
        list(range(len(rows))), layers, table("dead_fraction"), table("sparsity")
    )


@dataclass(frozen=True)
class TrackedTrial:
    """A bench trial trained with its dead units tracked: the history, the test score before
    training and after each epoch (``scores[e]``, the task's metric), the epoch whose loss
    was not finite (training stopped there; None when it finished) and the trained model."""

    spec: TrialSpec
    history: DeadUnitHistory
    scores: list[float]
    diverged_at: int | None
    model: nn.Module


def track_trial(spec: TrialSpec, progress: Callable[[str], None] | None = None) -> TrackedTrial:
    """Train ``spec`` with :func:`relulab.bench.trainer.run_trial` (so the weights are the
    bench trial's, bit for bit) and measure its dead units and sparsity on the training set
    before training and after every epoch, through the trainer's per-epoch hook."""
    data = spec.task.data()
    rows: list[list[dict]] = []
    before: list[float] = []
    trained: list[nn.Module] = []

    def measure(epoch: int, model: nn.Module) -> None:
        with torch.no_grad():
            rows.append(activation_statistics(model, data.x_train))
            if epoch == 0:  # the bench scores the epochs only
                logits = model(data.x_test)
                before.append(spec.task.score(torch.softmax(logits.double(), 1), data.y_test))
        trained[:] = [model]
        if progress:
            progress(f"epoch {epoch}/{spec.epochs}")

    outcome = run_trial(spec, on_epoch=measure)
    scores = before + [epoch["test_score"] for epoch in outcome.epochs]
    diverged = outcome.result["diverged_at_epoch"]
    return TrackedTrial(spec, _history(rows, trained[0]), scores, diverged, trained[0])
