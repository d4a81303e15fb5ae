"""Dead units over training: AP's dynamic dead-neuron rate, per layer and epoch.

A unit (a channel) is dead when its activation's derivative is exactly 0 on every training
example and position (the bench's definition, :func:`relulab.bench.trainer.
activation_statistics`, which this reuses); sparsity is the fraction of exact zeros in the
activation's output. Liu et al. (AP, TMLR 2023) track the dead rate *during* optimisation;
:func:`dead_unit_history` does that for any model with activation modules, given one epoch of
training as a callable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from relulab.bench.trainer import activation_statistics
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
    train_one_epoch: Callable[[int], object],
    epochs: int,
    progress: Callable[[str], None] | None = None,
) -> DeadUnitHistory:
    """Measure the dead units and sparsity of ``model`` on ``x`` (the training inputs) before
    training and after each of ``epochs`` calls of ``train_one_epoch(epoch)``.

    The model is measured in eval mode and left in the mode it was in; ``train_one_epoch``
    puts it in train mode itself if it needs that.
    """
    if epochs < 0:
        raise UserError(f"epochs must be at least 0, got {epochs}")
    was_training = model.training
    rows = []
    for epoch in range(epochs + 1):
        if epoch:
            model.train(was_training)
            train_one_epoch(epoch)
        with torch.no_grad():
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
        list(range(epochs + 1)), layers, table("dead_fraction"), table("sparsity")
    )
