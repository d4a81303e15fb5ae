"""One trial: train one task's model with one activation from one seed, and measure it.

A trial is a pure function of its :class:`TrialSpec` on CPU: the seed fixes the initial
weights (identical for every activation, see :func:`paired_init`) and the order of the data,
the thread count is fixed, and deterministic algorithms are enforced, so a rerun gives
bit-identical weights, predictions and metrics. Only the wall-clock timings differ.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import math
import re
import time
from collections.abc import Callable
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
from relulab.registry import (
    REQUIRED,
    ActivationInfo,
    activation_info,
    get_activation,
    parse_spec,
)
from relulab.sites import identify_module, module_sites


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
    # the trained weights; the driver writes them only for a run made with --save-models
    state: dict[str, torch.Tensor] | None = None


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
    if logits.dim() > 2:  # a sequence task's (N, classes, T): each position is one example
        logits = logits.movedim(1, -1).reshape(-1, logits.shape[1])
    return float(F.cross_entropy(logits, data.y_test)), torch.softmax(logits.double(), dim=1)


def evaluate_test_score(spec: TrialSpec, model: nn.Module) -> float:
    """A trained model's score on its task's test split (the metric ``run_trial`` reports)."""
    data = spec.task.data()
    with torch.no_grad():
        _, probabilities = _evaluate(model, data)
    return float(spec.task.score(probabilities, data.y_test))


def saved_bytes_per_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes that one training step keeps alive for backward, beyond weights and the batch:
    every tensor autograd saves during the forward pass and loss, counted once."""
    model.train()
    return saved_bytes(
        lambda: F.cross_entropy(model(x), y) + _auxiliary_loss(model),
        resident=[*model.parameters(), x, y],
    )


# The grid on which has_flat_region differentiates a module: step 1/64 over [-6, 6]. Wide enough
# for every registered flat region at ordinary arguments (ReLU6's and hard sigmoid's reach
# ±6 and ±3); narrow enough that float64 tails of smooth activations stay non-zero (GoLU's
# exp(-exp(-x)) underflows to 0 below about -6.6, tanh's 1 - tanh² above about 18).
FLAT_GRID = torch.linspace(-6.0, 6.0, 769, dtype=torch.float64)


def _registry_default(module: nn.Module) -> ActivationInfo | None:
    """The registry entry of ``module`` when it is that entry's own class at the entry's
    default arguments (required ones, such as a width, excepted), else None."""
    found = identify_module(module)
    if found is None:
        return None
    name, arguments = found
    info = activation_info(name)
    if type(module) is not info.module:  # torch's class, or a subclass with its own maths
        return None
    defaults = info.parameters
    same = all(
        key in defaults and (defaults[key] is REQUIRED or value == defaults[key])
        for key, value in arguments.items()
    )
    return info if same else None


def has_flat_region(module: nn.Module, channels: int = 1, ndim: int = 2) -> bool:
    """Whether the module's derivative is exactly 0 on some interval, so that a unit can die.

    A registered activation at its default arguments answers from the registry
    (``ActivationInfo.flat_region``). Any other module (other arguments, torch's or timm's
    class, a subclass) is measured: a float64 copy in eval mode is differentiated by
    autograd, i.e. with the backward that training uses, on :data:`FLAT_GRID` fed to every
    one of ``channels`` channels of an ``ndim``-dimensional input; two neighbouring grid
    points with derivative exactly 0 in the same channel make a flat region. A flat region
    lying wholly beyond ±6 is not seen.
    """
    info = _registry_default(module)
    if info is not None:
        return info.flat_region
    shape = (len(FLAT_GRID), channels, *([1] * (ndim - 2))) if ndim >= 2 else (len(FLAT_GRID),)
    grid = FLAT_GRID.reshape(-1, *([1] * (len(shape) - 1))).expand(shape).clone()
    grid.requires_grad_()
    probe = copy.deepcopy(module).double().eval()
    with torch.enable_grad():
        output = probe(grid.clone())  # a non-leaf copy, which in-place modules may overwrite
        (derivative,) = torch.autograd.grad(output.sum(), grid, allow_unused=True)
    if derivative is None:  # the output does not depend on the input at all
        return True
    zero = (derivative == 0).reshape(len(FLAT_GRID), -1)
    return bool((zero[1:] & zero[:-1]).any())


def _per_unit(tensor: torch.Tensor) -> torch.Tensor:
    """(N, C, *) → (C, N·∏*): one row per unit (channel, dim 1); (N,) → one unit."""
    if tensor.dim() < 2:
        return tensor.reshape(1, -1)
    return tensor.transpose(0, 1).reshape(tensor.shape[1], -1)


@torch.no_grad()
def activation_statistics(model: nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """Per activation layer, from one forward pass on ``x`` in eval mode (the bench passes
    the training set):

    - ``dead_fraction``: the fraction of units (channels, dim 1) whose activation has
      derivative exactly 0 at every example and position of ``x``, which is what stops a
      unit from learning. The derivative is d(Σ output)/d(input) by autograd through the
      module itself, so it is the backward that training uses (for HeLU its hysteresis
      gradient, not ReLU's). ``None`` when the activation has no zero-derivative region
      (:func:`has_flat_region`): no unit can die that way, and 0.0 would claim a measurement.
    - ``sparsity``: the fraction of outputs that are exactly 0.

    Each call of an activation module is one layer, counted once. A module applied at
    several places (one module shared by two layers) gives one record per call, named
    ``path#1``, ``path#2``, ... in call order; a module called once is named by its path.
    """
    first_path: dict[int, str] = {}
    for site in module_sites(model):
        first_path.setdefault(id(site.module), site.path)
    modules = {id(m): m for m in model.modules() if id(m) in first_path}
    flat: dict[int, bool] = {}  # per module, decided at its first call
    calls: list[tuple[int, torch.Tensor | None, int, int]] = []
    pending: list[tuple[torch.Tensor, bool] | None] = []
    probing = False

    def before(module, inputs):
        nonlocal probing
        if probing:  # has_flat_region's copy of the module carries these hooks too
            return None
        key, x = id(module), inputs[0]
        if key not in flat:
            probing = True
            try:
                flat[key] = has_flat_region(module, x.shape[1] if x.dim() > 1 else 1, x.dim())
            finally:
                probing = False
        if not flat[key]:  # no unit can die: the derivative is not needed
            pending.append(None)
            return None
        # Grad mode for this module alone: the rest of the model runs without a graph.
        leaf = x.detach().requires_grad_()
        pending.append((leaf, torch.is_grad_enabled()))
        torch.set_grad_enabled(True)
        # An in-place activation may not overwrite a leaf that requires grad.
        return (leaf.clone() if getattr(module, "inplace", False) else leaf, *inputs[1:])

    def after(module, inputs, output):
        if probing:
            return None
        entry, alive = pending.pop(), None
        if entry is not None:
            leaf, grad_was_enabled = entry
            derivative = None
            if output.requires_grad:
                (derivative,) = torch.autograd.grad(output.sum(), leaf, allow_unused=True)
            torch.set_grad_enabled(grad_was_enabled)
            alive = (
                _per_unit(derivative != 0).any(1)
                if derivative is not None  # the output does not depend on the input
                else torch.zeros(_per_unit(leaf).shape[0], dtype=torch.bool)
            )
            output = output.detach()
        calls.append((id(module), alive, int((output == 0).sum()), output.numel()))
        return output

    handles = []
    for module in modules.values():
        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after))
    try:
        model.eval()
        model(x)
    finally:
        for handle in handles:
            handle.remove()

    count = {key: sum(call[0] == key for call in calls) for key in flat}
    seen: dict[int, int] = {}
    records = []
    for key, alive, zeros, total in calls:
        seen[key] = seen.get(key, 0) + 1
        name = first_path[key] + (f"#{seen[key]}" if count[key] > 1 else "")
        dead = float((~alive).double().mean()) if alive is not None else None
        records.append({"layer": name, "dead_fraction": dead, "sparsity": zeros / total})
    return records


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


EpochHook = Callable[[int, nn.Module], None]


def run_trial(
    spec: TrialSpec,
    on_epoch: EpochHook | None = None,
    model: nn.Module | None = None,
    teacher: nn.Module | None = None,
) -> TrialOutcome:
    """Train and measure one trial (see the module docstring for what makes it repeatable).

    ``on_epoch(epoch, model)``, if given, is called before training (epoch 0) and after each
    epoch, with the model in eval mode and torch's random generator saved and restored
    around it, so that what it measures cannot change the trial's outcome. ``model``, if
    given, is trained (in place, from the weights it has) instead of the task's model for
    ``spec.activation``: fine-tuning a model whose ReLUs were cut, say. With a ``teacher``
    (a trained model, left unchanged), the loss is :func:`distillation_loss` from its logits.
    """
    with _repeatable(spec.threads, spec.seed):
        return _train(spec, on_epoch, model, teacher)


def _call_hook(on_epoch: EpochHook | None, epoch: int, model: nn.Module) -> None:
    if on_epoch is None:
        return
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        on_epoch(epoch, model)
    model.train(was_training)


def distillation_loss(
    logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 4.0,
    weight: float = 0.9,
) -> torch.Tensor:
    r"""Knowledge distillation (Hinton et al., 2015), as DeepReDuce and SNL fine-tune:

    .. math::
        (1 - w)\,\mathrm{CE}(z, y) + w\,T^2\,\mathrm{KL}(\mathrm{softmax}(z_t/T)\,\|\,
        \mathrm{softmax}(z/T))

    the :math:`T^2` keeping the soft term's gradient on the scale of the hard one's.
    """
    soft = F.kl_div(
        F.log_softmax(logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        log_target=True,
        reduction="batchmean",
    )
    hard = F.cross_entropy(logits, labels)
    return (1 - weight) * hard + weight * temperature**2 * soft


def _train(
    spec: TrialSpec,
    on_epoch: EpochHook | None = None,
    model: nn.Module | None = None,
    teacher: nn.Module | None = None,
) -> TrialOutcome:
    data = spec.task.data()
    if model is None:
        model = spec.task.model(functools.partial(activation_for_width, spec.activation), data)
        paired_init(model, spec.seed)
    if teacher is not None:
        teacher.eval()
    schedule = spec.task.schedule(spec.epochs, spec.batch_size, spec.learning_rate)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=schedule.learning_rate, weight_decay=schedule.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor)
    order = torch.Generator().manual_seed(spec.seed)
    saved_bytes = saved_bytes_per_step(
        model, data.x_train[: spec.batch_size], data.y_train[: spec.batch_size]
    )
    _call_hook(on_epoch, 0, model)

    epochs: list[dict[str, Any]] = []
    status, diverged_at = "ok", None
    for epoch in range(1, spec.epochs + 1):
        model.train()
        start = time.perf_counter()
        total_loss = 0.0
        for batch in torch.randperm(len(data.y_train), generator=order).split(spec.batch_size):
            logits = model(data.x_train[batch])
            if teacher is None:
                loss = F.cross_entropy(logits, data.y_train[batch])
            else:
                with torch.no_grad():
                    teacher_logits = teacher(data.x_train[batch])
                loss = distillation_loss(logits, teacher_logits, data.y_train[batch])
            loss = loss + _auxiliary_loss(model)
            if not torch.isfinite(loss):
                status, diverged_at = "diverged", epoch
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
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
        _call_hook(on_epoch, epoch, model)

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
        "schedule": {**dataclasses.asdict(schedule), "text": str(schedule)},
        "parameters": sum(p.numel() for p in model.parameters()),
        "layers": activation_statistics(model, data.x_train) if finite else [],
        "timing": {
            "seconds_per_epoch": [e["seconds"] for e in epochs],
            "mean_seconds_per_epoch": float(np.mean([e["seconds"] for e in epochs]))
            if epochs
            else math.nan,
        },
    }
    state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    return TrialOutcome(result, epochs, probabilities.float().numpy(), state)
