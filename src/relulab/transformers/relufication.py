"""Relufication as an experiment: how much a trained GELU/SiLU GPT loses when its FFNs (and,
in stage 2, the inputs of its attention and FFN) go through ReLU, how fast fine-tuning wins it
back, and how sparse its activations become.

:func:`relufication` measures the model before, right after :func:`~relulab.transformers.
relufy.relufy` and during a short fine-tuning; a copy of the unchanged model is fine-tuned
for the same steps as the control, so that the comparison is not "more training" against
"less".
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from relulab.transformers.relufy import relufy
from relulab.transformers.sparsity import measure_sparsity
from relulab.transformers.train import TrainConfig, train_gpt, validation_loss, windows


@dataclass
class RelufyConfig:
    """What :func:`relufication` does: the stage and shift of :func:`relufy`, the fine-tuning
    (``steps`` at a constant ``learning_rate`` after a short warm-up, evaluated
    ``evaluations`` times) and the windows of the sparsity measurement."""

    stage: int = 1
    shift: float = 0.0
    steps: int = 300
    learning_rate: float = 5e-4
    evaluations: int = 6
    sparsity_windows: int = 32  # validation windows of block_size tokens
    control: bool = True
    seed: int = 0


def sparsity_sample(model: nn.Module, val_ids: torch.Tensor, count: int) -> torch.Tensor:
    """Fixed validation windows for the sparsity measurement."""
    block = model.config.block_size
    return windows(val_ids, block, count, torch.Generator().manual_seed(4321))[0]


def _windows(block: int) -> tuple[int, ...]:
    return (*(w for w in (1, 8, 32, 64, 128) if w < block), block)


def relufication(
    model: nn.Module,
    train_ids: torch.Tensor,
    val_ids: torch.Tensor,
    config: RelufyConfig,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Relufy ``model`` (in place) and fine-tune it; the measurements as a JSON-ready dict:
    ``before``, ``relufied`` (right after), ``after`` (fine-tuned) and ``control`` (the
    original fine-tuned alike), each with ``val_loss`` and ``sparsity``
    (:meth:`~relulab.transformers.sparsity.SparsityReport.to_dict`); ``changed`` (the modules
    replaced) and ``history`` / ``control_history`` (fine-tuning evaluations, each with the
    sparsity at that step)."""
    sample = sparsity_sample(model, val_ids, config.sparsity_windows)
    span = _windows(model.config.block_size)
    evaluation = TrainConfig(steps=1, eval_windows=256, seed=config.seed)

    def measure(m: nn.Module) -> dict[str, Any]:
        return {
            "val_loss": validation_loss(m, val_ids, evaluation),
            "sparsity": measure_sparsity(m, sample, span).to_dict(),
        }

    fine_tuning = TrainConfig(
        steps=config.steps,
        learning_rate=config.learning_rate,
        min_learning_rate=config.learning_rate,
        warmup_steps=min(20, config.steps),
        eval_interval=max(1, config.steps // config.evaluations),
        seed=config.seed,
    )
    control = copy.deepcopy(model) if config.control else None
    result: dict[str, Any] = {"config": dataclasses.asdict(config), "before": measure(model)}
    progress(f"before: val loss {result['before']['val_loss']:.3f}")
    result["changed"] = relufy(model, config.stage, config.shift)
    result["relufied"] = measure(model)
    progress(
        f"relufied (stage {config.stage}, shift {config.shift}): val loss "
        f"{result['relufied']['val_loss']:.3f}, FFN sparsity "
        f"{result['relufied']['sparsity']['sparsity']:.3f}"
    )

    def tune(m: nn.Module, label: str) -> list[dict[str, Any]]:
        history: list[dict[str, Any]] = []

        def on_eval(step, metrics, m, optimizer, generator) -> None:
            history.append({**metrics, "sparsity": measure_sparsity(m, sample, span).sparsity})

        train_gpt(
            m, train_ids, val_ids, fine_tuning, on_eval=on_eval,
            progress=lambda line: progress(f"{label} {line}"),
        )  # fmt: skip
        return history

    result["history"] = tune(model, "fine-tuning the relufied model:")
    result["after"] = measure(model.eval())
    if control is not None:
        result["control_history"] = tune(control, "control (not relufied):")
        result["control"] = measure(control.eval())
    return result
