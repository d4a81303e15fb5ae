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

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from relulab.bench import trainer
from relulab.bench.models import paired_init
from relulab.bench.trainer import TrialSpec, activation_for_width, activation_statistics
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
    """Train ``spec`` as :func:`relulab.bench.trainer.run_trial` does and measure its dead
    units and sparsity on the training set before training and after every epoch.

    The recipe is the bench's, step for step: the task's model and data, :func:`paired_init`
    from the seed, Adam on the task's schedule, the seed's batch order, the same thread count
    and deterministic kernels, and the same draws from torch's generator (measuring draws
    none), so the trained weights are bit-identical to the bench trial's.
    """
    # The bench's loop, repeated here because run_trial offers no per-epoch hook; keep the two
    # in step (tests/test_geometry_dead_units.py checks the weights are identical).
    with trainer._repeatable(spec.threads, spec.seed):
        data = spec.task.data()
        model = spec.task.model(functools.partial(activation_for_width, spec.activation), data)
        paired_init(model, spec.seed)
        schedule = spec.task.schedule(spec.epochs, spec.batch_size, spec.learning_rate)
        optimizer = torch.optim.Adam(
            model.parameters(), lr=schedule.learning_rate, weight_decay=schedule.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor)
        order = torch.Generator().manual_seed(spec.seed)
        # run_trial measures this before training; its forward pass may draw random numbers
        trainer.saved_bytes_per_step(
            model, data.x_train[: spec.batch_size], data.y_train[: spec.batch_size]
        )

        def score() -> float:
            with torch.random.fork_rng(devices=[]):  # the bench scores the epochs, not epoch 0
                return spec.task.score(trainer._evaluate(model, data)[1], data.y_test)

        scores = [score()]
        diverged_at = None

        def one_epoch(epoch: int) -> bool:
            nonlocal diverged_at
            model.train()
            batches = torch.randperm(len(data.y_train), generator=order).split(spec.batch_size)
            for batch in batches:
                loss = F.cross_entropy(model(data.x_train[batch]), data.y_train[batch])
                loss = loss + trainer._auxiliary_loss(model)
                if not torch.isfinite(loss):
                    diverged_at = epoch
                    return False
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
            _, probabilities = trainer._evaluate(model, data)
            scores.append(spec.task.score(probabilities, data.y_test))
            return True

        history = dead_unit_history(model, data.x_train, one_epoch, spec.epochs, progress)
    return TrackedTrial(spec, history, scores, diverged_at, model)
