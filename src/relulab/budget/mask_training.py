"""Train learned linearization masks (SNL, AutoReP) until a model meets a ReLU budget.

Three phases, for either method:

1. Penalty: cross-entropy plus λ times the masks' penalty, SNL's Σ|a| (λ from 1e-5) or
   AutoReP's ReLU density (λ from 10). Every ``check_every`` optimizer steps the ReLU count is
   read; if it has not dropped since the last check, λ grows ×1.1 (SNL's rule, applied by steps
   rather than epochs because our tasks have few batches per epoch, and to AutoReP as well so
   that it too always gets there). The phase ends when the count is at or below the budget, or
   after ``max_penalty_steps``.
2. Selection: the ``budget`` units with the largest a (SNL's α, AutoReP's auxiliary a) keep
   their ReLU, all others become linear (identity or polynomial). Ties go to the unit that
   comes first (mask order, then position), so the choice is deterministic. The count then
   equals the budget exactly: it may raise a count that the penalty pushed below the budget,
   which only gives ReLUs back, and it meets the budget even where the penalty phase ran out
   of steps. Per channel, channels are taken greedily by a while they fit, so the count is
   the budget or just below it.
3. Fine-tuning: SNL's masks are binarised, AutoReP's frozen (its polynomials stay
   trainable), and the model trains ``finetune_epochs`` epochs on cross-entropy alone.

Neither method's knowledge distillation from the full model (SNL's KD at T = 4) is done here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from relulab.bench.tasks import TaskData
from relulab.budget.masks import HysteresisGate, LinearizationMask, Mask
from relulab.errors import UserError

Method = Literal["snl", "autorep"]
START_PENALTY = {"snl": 1e-5, "autorep": 10.0}  # SNL's default λ; AutoReP's README λ


@dataclass(frozen=True)
class BudgetOutcome:
    """What :func:`train_to_budget` did.

    Attributes:
        method, budget: as given.
        relu_total: the masked ReLUs before training.
        relu_count: those left after selection (== budget per element, <= per channel).
        penalty_steps: optimizer steps in the penalty phase.
        penalty_count: the ReLUs the masks kept when it ended (before the selection).
        penalty_met_budget: whether the penalty phase alone brought the count to the budget
            (if not, the selection forced it).
        final_penalty: λ at the end of the penalty phase.
        test_accuracy: on ``data.x_test`` after fine-tuning.
        seconds: wall-clock time of the whole call.
    """

    method: str
    budget: int
    relu_total: int
    relu_count: int
    penalty_steps: int
    penalty_count: int
    penalty_met_budget: bool
    final_penalty: float
    test_accuracy: float
    seconds: float


def relu_count(masks: list[Mask]) -> int:
    """ReLU evaluations per input that the masks keep."""
    return sum(mask.relu_count() for mask in masks)


def keep_largest(masks: list[Mask], budget: int) -> list[Tensor]:
    """For each mask, a bool tensor of its entries: the largest scores that fit in ``budget``.

    Entries are ranked by score, ties by order (mask, then flattened position); an entry
    covering k ReLUs is kept if k more still fit, so per element exactly ``min(budget, total)``
    entries are kept.
    """
    scores = torch.cat([mask.score().flatten().double().cpu() for mask in masks])
    sizes = [mask.elements_per_entry for mask in masks]
    size_of = torch.cat([torch.full((mask.score().numel(),), s) for mask, s in zip(masks, sizes)])
    order = torch.sort(-scores, stable=True).indices  # descending, earlier entry first in ties
    kept = torch.zeros(scores.numel(), dtype=torch.bool)
    if all(s == 1 for s in sizes):
        kept[order[:budget]] = True
    else:
        used = 0
        for index, size in zip(order.tolist(), size_of[order].tolist()):
            if used + size <= budget:
                kept[index] = True
                used += size
    pieces = kept.split([mask.score().numel() for mask in masks])
    return [piece.reshape(mask.entry_shape) for piece, mask in zip(pieces, masks)]


@torch.no_grad()
def calibrate_gates(model: nn.Module, gates: list[HysteresisGate], x: Tensor) -> None:
    """Re-initialise each gate's polynomial from its pre-activations on ``x`` (DaPa), with the
    model in eval mode."""
    handles = [
        gate.register_forward_pre_hook(lambda g, args: g.calibrate(args[0])) for gate in gates
    ]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes:
            module.train(mode)


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    mode = model.training
    model.eval()
    with torch.no_grad():
        correct = (model(x).argmax(1) == y).sum().item()
    model.train(mode)
    return correct / len(y)


def _batches(count: int, batch_size: int, generator: torch.Generator):
    """Index batches over shuffled epochs, forever."""
    while True:
        order = torch.randperm(count, generator=generator)
        yield from order.split(batch_size)


def _check(model, masks, data, budget, method) -> Method:
    if not masks:
        raise UserError("train_to_budget: masks is empty; make them with insert_masks")
    kinds = {type(mask) for mask in masks}
    inferred = {LinearizationMask: "snl", HysteresisGate: "autorep"}
    if len(kinds) != 1 or next(iter(kinds)) not in inferred:
        raise UserError(
            "train_to_budget: masks must all be LinearizationMask (snl) or all HysteresisGate "
            f"(autorep), got {sorted(k.__name__ for k in kinds)}"
        )
    kind = inferred[next(iter(kinds))]
    if method is not None and method != kind:
        raise UserError(f"train_to_budget: method {method!r} does not fit {kind} masks")
    if any(bool(mask.frozen) for mask in masks):
        raise UserError("train_to_budget: the masks are already binarised/frozen")
    total = sum(mask.relu_total for mask in masks)
    if isinstance(budget, bool) or not isinstance(budget, int) or not 0 < budget <= total:
        raise UserError(f"train_to_budget: budget must be an integer in 1..{total}, got {budget!r}")
    for name in ("x_train", "y_train", "x_test", "y_test"):
        if not isinstance(getattr(data, name, None), Tensor):
            raise UserError(f"train_to_budget: data needs a tensor {name} (a TaskData)")
    return kind


def train_to_budget(
    model: nn.Module,
    masks: list[Mask],
    data: TaskData,
    budget: int,
    method: Method | None = None,
    *,
    penalty: float | None = None,
    growth: float = 1.1,
    check_every: int = 10,
    max_penalty_steps: int = 3000,
    finetune_epochs: int = 5,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    mask_learning_rate: float = 1e-2,
    seed: int = 0,
) -> BudgetOutcome:
    """Train ``model`` and its ``masks`` (from :func:`~relulab.budget.masks.insert_masks`)
    until at most ``budget`` ReLUs remain, then fine-tune (see the module docstring).

    Args:
        model: the network with masks inserted; trained in place.
        masks: its masks, all of one kind.
        data: the task's data (x_train, y_train, x_test, y_test).
        budget: ReLU evaluations per input to keep, 1 ... the masks' total.
        method: ``"snl"`` or ``"autorep"``; ``None`` infers it from the masks.
        penalty: the starting λ (default 1e-5 for SNL, 10 for AutoReP).
        growth: λ's factor when the count has not dropped since the last check.
        check_every: optimizer steps between checks of the count.
        max_penalty_steps: the penalty phase's limit; the selection then forces the budget.
        finetune_epochs: epochs of cross-entropy training after the selection.
        batch_size: examples per step.
        learning_rate, mask_learning_rate: Adam's step for the weights (and polynomials) and
            for the mask parameters.
        seed: seeds the batch order.

    Returns:
        A :class:`BudgetOutcome`.
    """
    start = time.perf_counter()
    method = _check(model, masks, data, budget, method)
    total = sum(mask.relu_total for mask in masks)
    generator = torch.Generator().manual_seed(seed)
    if method == "autorep":
        calibrate_gates(model, masks, data.x_train)
        mask_parameters = [mask.a for mask in masks]
    else:
        mask_parameters = [mask.alpha for mask in masks]
    chosen = {id(p) for p in mask_parameters}
    weights = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen]
    optimizer = torch.optim.Adam(
        [{"params": weights}, {"params": mask_parameters, "lr": mask_learning_rate}],
        lr=learning_rate,
    )
    lam = START_PENALTY[method] if penalty is None else float(penalty)
    batches = _batches(len(data.y_train), batch_size, generator)
    model.train()
    steps, last = 0, relu_count(masks)
    met = last <= budget
    while not met and steps < max_penalty_steps:
        index = next(batches)
        loss = TF.cross_entropy(model(data.x_train[index]), data.y_train[index])
        if method == "snl":
            term = sum(mask.penalty() for mask in masks)
        else:
            term = sum(mask.density() for mask in masks) / total
        optimizer.zero_grad()
        (loss + lam * term).backward()
        optimizer.step()
        steps += 1
        if steps % check_every == 0:
            count = relu_count(masks)
            met = count <= budget
            if count >= last:
                lam *= growth
            last = count

    penalty_count = relu_count(masks)
    for mask, keep in zip(masks, keep_largest(masks, budget)):
        if isinstance(mask, LinearizationMask):
            mask.binarize(keep)
        else:
            mask.freeze(keep)

    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    for _ in range(finetune_epochs * math.ceil(len(data.y_train) / batch_size)):
        index = next(batches)
        loss = TF.cross_entropy(model(data.x_train[index]), data.y_train[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return BudgetOutcome(
        method=method,
        budget=budget,
        relu_total=total,
        relu_count=relu_count(masks),
        penalty_steps=steps,
        penalty_count=penalty_count,
        penalty_met_budget=met,
        final_penalty=lam,
        test_accuracy=_accuracy(model, data.x_test, data.y_test),
        seconds=time.perf_counter() - start,
    )
