"""One trial: train one task's model with one activation from one seed, and measure it.

A trial is a pure function of its :class:`TrialSpec` on CPU: the seed fixes the initial
weights (identical for every activation, see :func:`paired_init`) and the order of the data,
the thread count is fixed, and deterministic algorithms are enforced, so a rerun gives
bit-identical weights, predictions and metrics. Only the wall-clock timings differ.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from relulab.bench.models import paired_init
from relulab.bench.stats import expected_calibration_error
from relulab.bench.tasks import Task, TaskData
from relulab.kernels import compilation
from relulab.memory import saved_bytes
from relulab.registry import REQUIRED, activation_info, get_activation, parse_spec
from relulab.sites import module_sites


@dataclass(frozen=True)
class TrialSpec:
    """Everything that determines a trial's outcome."""

    task: Task
    activation: str
    seed: int
    epochs: int
    batch_size: int
    learning_rate: float
    threads: int = 1

    @property
    def trial_id(self) -> str:
        """``<task>-<activation>-s<seed>``, safe as a directory name.

        A spec with arguments also gets 8 hex digits of its hash, since the readable part
        drops punctuation (``leaky_relu(0.2)`` and ``leaky_relu(-0.2)`` must not collide).
        """
        slug = re.sub(r"[^A-Za-z0-9_.]+", "-", self.activation).strip("-")
        if slug != self.activation:
            slug += "-" + hashlib.sha1(self.activation.encode()).hexdigest()[:8]
        return f"{self.task.name}-{slug}-s{self.seed}"


@dataclass
class TrialOutcome:
    result: dict[str, Any]
    epochs: list[dict[str, Any]] = field(default_factory=list)
    probabilities: np.ndarray | None = None


def activation_for_width(spec: str, features: int) -> nn.Module:
    """``get_activation(spec)``, telling it the layer's width if it needs one (SmartMixed)."""
    name, arguments = parse_spec(spec)
    if activation_info(name).parameters.get("num_features", None) is REQUIRED:
        arguments.setdefault("num_features", features)
    return get_activation(name, **arguments)


def _auxiliary_loss(model: nn.Module) -> torch.Tensor | float:
    """Regularisers that activations ask for (VeLU's W₂ term): modules with ``aux_loss``."""
    terms = [m.aux_loss for m in model.modules() if getattr(m, "aux_loss", None) is not None]
    return sum(terms) if terms else 0.0


@torch.no_grad()
def _evaluate(model: nn.Module, data: TaskData) -> tuple[float, torch.Tensor]:
    model.eval()
    logits = model(data.x_test)
    return float(F.cross_entropy(logits, data.y_test)), torch.softmax(logits.double(), dim=1)


def saved_bytes_per_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes that one training step keeps alive for backward, beyond weights and the batch:
    every tensor autograd saves during the forward pass and loss, counted once."""
    model.train()
    return saved_bytes(
        lambda: F.cross_entropy(model(x), y) + _auxiliary_loss(model),
        resident=[*model.parameters(), x, y],
    )


@torch.no_grad()
def activation_statistics(model: nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """Per activation layer, on inputs ``x`` (eval mode):

    - ``dead_fraction``: units (channels, dim 1) whose pre-activation is ≤ 0 for every input
      and position, i.e. that never leave the activation's negative side;
    - ``sparsity``: the fraction of outputs that are exactly 0.
    """
    records: dict[str, dict[str, Any]] = {}
    handles = []
    for site in module_sites(model):

        def hook(module, inputs, output, path=site.path):
            pre = inputs[0]
            positive = (pre > 0).transpose(0, 1).reshape(pre.shape[1], -1).any(1)
            record = records.setdefault(
                path, {"ever_positive": torch.zeros_like(positive), "zeros": 0, "total": 0}
            )
            record["ever_positive"] |= positive
            record["zeros"] += int((output == 0).sum())
            record["total"] += output.numel()

        handles.append(site.module.register_forward_hook(hook))
    try:
        model.eval()
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return [
        {
            "layer": path,
            "dead_fraction": float((~r["ever_positive"]).double().mean()),
            "sparsity": r["zeros"] / r["total"],
        }
        for path, r in records.items()
    ]


@contextlib.contextmanager
def _repeatable(threads: int, seed: int):
    """Fixed threads, deterministic algorithms, a seeded global generator and eager kernels,
    all restored after."""
    saved = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.get_rng_state(),
    )
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)  # randomness inside activations, e.g. SmartMixed's sampling
    try:
        # Eager kernels: tiny models gain nothing from compiling, a cold compile costs seconds
        # per activation, and results must not depend on what a cache holds.
        with compilation(False):
            yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])
        torch.set_rng_state(saved[2])


def run_trial(spec: TrialSpec) -> TrialOutcome:
    """Train and measure one trial (see the module docstring for what makes it repeatable)."""
    with _repeatable(spec.threads, spec.seed):
        return _train(spec)


def _train(spec: TrialSpec) -> TrialOutcome:
    data = spec.task.data()
    model = spec.task.model(functools.partial(activation_for_width, spec.activation), data)
    paired_init(model, spec.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
    order = torch.Generator().manual_seed(spec.seed)
    saved_bytes = saved_bytes_per_step(
        model, data.x_train[: spec.batch_size], data.y_train[: spec.batch_size]
    )

    epochs: list[dict[str, Any]] = []
    status, diverged_at = "ok", None
    for epoch in range(1, spec.epochs + 1):
        model.train()
        start = time.perf_counter()
        total_loss = 0.0
        for batch in torch.randperm(len(data.y_train), generator=order).split(spec.batch_size):
            loss = F.cross_entropy(model(data.x_train[batch]), data.y_train[batch])
            loss = loss + _auxiliary_loss(model)
            if not torch.isfinite(loss):
                status, diverged_at = "diverged", epoch
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(batch)
        seconds = time.perf_counter() - start
        if status == "diverged":
            break
        test_loss, probabilities = _evaluate(model, data)
        epochs.append(
            {
                "epoch": epoch,
                "train_loss": total_loss / len(data.y_train),
                "test_loss": test_loss,
                "test_score": spec.task.score(probabilities, data.y_test),
                "seconds": seconds,
            }
        )

    test_loss, probabilities = _evaluate(model, data)
    finite = bool(torch.isfinite(probabilities).all())
    if not finite:
        status = "diverged"
    labels = data.y_test.numpy()
    result = {
        "task": spec.task.name,
        "task_description": spec.task.description,
        "metric": spec.task.metric,
        "activation": spec.activation,
        "seed": spec.seed,
        "status": status,
        "diverged_at_epoch": diverged_at,
        "test_score": spec.task.score(probabilities, data.y_test) if finite else math.nan,
        "test_loss": test_loss if finite else math.nan,
        "ece": expected_calibration_error(probabilities.numpy(), labels) if finite else math.nan,
        "saved_bytes_per_step": saved_bytes,
        "batch_size": spec.batch_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "layers": activation_statistics(model, data.x_train) if finite else [],
        "timing": {
            "seconds_per_epoch": [e["seconds"] for e in epochs],
            "mean_seconds_per_epoch": float(np.mean([e["seconds"] for e in epochs]))
            if epochs
            else math.nan,
        },
    }
    return TrialOutcome(result, epochs, probabilities.float().numpy())
