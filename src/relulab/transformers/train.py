"""Train a :class:`~relulab.transformers.gpt.GPT` on the character corpus, resumably.

:func:`train_gpt` runs AdamW with a linear warm-up and a cosine decay (nanoGPT's recipe) on
random windows of the training text, evaluates the validation loss on fixed windows every
``eval_interval`` steps and hands each evaluation to a callback (which saves a checkpoint and
writes the metrics: :mod:`relulab.cli.gpt`). A checkpoint is a plain dict of tensors and
numbers (:func:`checkpoint`), loadable with ``torch.load(weights_only=True)``; training
continues from one exactly, its random windows included.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from relulab.errors import TrainingDiverged, UserError
from relulab.transformers.gpt import GPT, GPTConfig

FORMAT = "relulab-gpt-1"  # a checkpoint's mark, so that another file is refused in one line


@dataclass
class TrainConfig:
    """How :func:`train_gpt` trains; defaults reach ~1.7 nats/char in a few minutes on 2 cores."""

    steps: int = 1500
    batch_size: int = 32
    learning_rate: float = 2e-3
    min_learning_rate: float = 2e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_windows: int = 256  # validation windows of block_size tokens, the same every time
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_interval", "eval_windows"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        if not self.learning_rate > 0:
            raise UserError(f"learning rate must be > 0, got {self.learning_rate!r}")

    def learning_rate_at(self, step: int) -> float:
        """Linear warm-up to ``learning_rate``, cosine decay to ``min_learning_rate``."""
        if step < self.warmup_steps:
            return self.learning_rate * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return self.min_learning_rate + cosine * (self.learning_rate - self.min_learning_rate)


def windows(
    ids: torch.Tensor, block: int, count: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random windows of ``block`` tokens and, for each, the next tokens."""
    if len(ids) <= block:
        raise UserError(f"the text has {len(ids)} tokens, too few for windows of {block}")
    starts = torch.randint(len(ids) - block, (count,), generator=generator)
    offsets = torch.arange(block)
    return ids[starts[:, None] + offsets], ids[starts[:, None] + offsets + 1]


def validation_windows(
    ids: torch.Tensor, block: int, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed windows every validation uses: :func:`windows` from a generator seeded 1234."""
    return windows(ids, block, count, torch.Generator().manual_seed(1234))


@torch.no_grad()
def validation_loss(model: nn.Module, ids: torch.Tensor, config: TrainConfig) -> float:
    """Mean next-token cross entropy (nats per token) on ``eval_windows`` fixed windows."""
    x, y = validation_windows(ids, _block_size(model), config.eval_windows)
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(x), 64):
        logits = _logits(model, x[start : start + 64])
        total += float(
            nn.functional.cross_entropy(
                logits.flatten(0, 1), y[start : start + 64].flatten(), reduction="sum"
            )
        )
    model.train(was_training)
    return total / y.numel()


def _block_size(model: nn.Module) -> int:
    return model.config.block_size


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out[0] if isinstance(out, tuple) else out


Evaluation = Callable[
    [int, dict[str, float], nn.Module, torch.optim.Optimizer, torch.Generator], None
]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW, with weight decay on matrices only (not on biases, norms or embeddings' rows
    as vectors), as nanoGPT."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": other, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.99))


def train_gpt(
    model: nn.Module,
    train_ids: torch.Tensor,
    val_ids: torch.Tensor,
    config: TrainConfig,
    *,
    on_eval: Evaluation | None = None,
    state: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place for ``config.steps`` steps; the evaluations made.

    ``state`` (from :func:`checkpoint`) continues an interrupted run: its optimizer state,
    step and window generator. Every ``eval_interval`` steps, and after the last,
    ``on_eval(step, metrics, model, optimizer, generator)`` is called; ``metrics`` holds
    ``train_loss`` (mean over the interval), ``val_loss``, ``seconds`` and ``learning_rate``.
    """
    block = _block_size(model)
    optimizer = make_optimizer(model, config)
    generator = torch.Generator().manual_seed(config.seed)
    step = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step = int(state["step"])
    history: list[dict[str, float]] = []
    model.train()
    interval_loss, interval_steps, start = 0.0, 0, time.perf_counter()
    while step < config.steps:
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate_at(step)
        x, y = windows(train_ids, block, config.batch_size, generator)
        loss = nn.functional.cross_entropy(_logits(model, x).flatten(0, 1), y.flatten())
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"the loss diverged at step {step + 1} ({loss.item()})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        interval_loss, interval_steps = interval_loss + loss.item(), interval_steps + 1
        if step % config.eval_interval == 0 or step == config.steps:
            metrics = {
                "step": step,
                "train_loss": interval_loss / interval_steps,
                "val_loss": validation_loss(model, val_ids, config),
                "seconds": time.perf_counter() - start,
                "learning_rate": config.learning_rate_at(step - 1),
            }
            history.append(metrics)
            if progress is not None:
                progress(
                    f"step {step}/{config.steps}: train {metrics['train_loss']:.3f}, "
                    f"val {metrics['val_loss']:.3f} nats/char ({metrics['seconds']:.0f} s)"
                )
            if on_eval is not None:
                on_eval(step, metrics, model, optimizer, generator)
            interval_loss, interval_steps, start = 0.0, 0, time.perf_counter()
    return history


def checkpoint(
    model: GPT,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    step: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """A dict that ``torch.load(weights_only=True)`` reads back: the model's config and
    weights, and to continue training the optimizer, window generator and step."""
    found = {
        "format": FORMAT,
        "model_config": dataclasses.asdict(model.config),
        "weights": model.state_dict(),  # not "state_dict": loaders unwrap that
        "step": step,
        **extra,
    }
    if optimizer is not None:
        found["optimizer"] = optimizer.state_dict()
    if generator is not None:
        found["generator"] = generator.get_state()
    return found


def checkpoint_file(source: str | Path) -> Path:
    """The checkpoint a path names: the file itself, or in a run directory its relufied.pt
    (``relulab relufy``) or checkpoint.pt (``relulab gpt train``)."""
    source = Path(source)
    if not source.is_dir():
        return source
    for name in ("relufied.pt", "checkpoint.pt"):
        if (source / name).is_file():
            return source / name
    # runs that hold GPTs a level down: an experiment's cells, prefer's base model
    inside = sorted(source.glob("cells/*/checkpoint.pt")) + sorted(
        source.glob("base/checkpoint.pt")
    )
    hint = f"; it holds GPT runs, e.g. {inside[0].parent}" if inside else ""
    raise UserError(
        f"{source} has no checkpoint.pt or relufied.pt (relulab gpt train and relulab relufy "
        f"write them){hint}"
    )


def load_checkpoint(source: str | Path) -> tuple[GPT, dict[str, Any]]:
    """The GPT in a checkpoint written by :func:`checkpoint` (a file, or a run directory: see
    :func:`checkpoint_file`), and the checkpoint's dict; a one-line UserError for anything
    else."""
    from relulab.cli.model_source import load_state_file

    path = checkpoint_file(source)
    found = load_state_file(path, option="")
    if found.get("format") != FORMAT:
        raise UserError(f"{path} is not a relulab GPT checkpoint (relulab gpt train writes one)")
    model = GPT(GPTConfig(**found["model_config"]))
    if found.get("relufied"):  # relufication renames the norms' weights: redo it first
        from relulab.transformers.relufy import relufy

        relufy(model, **found["relufied"])
    model.load_state_dict(found["weights"])
    return model, found


def train_in(
    run: Path, settings: dict[str, Any], progress: Callable[[str], None]
) -> tuple[GPT, list[dict[str, float]]]:
    """Train the GPT that ``settings`` describe in ``run`` (checkpoint.pt, metrics.jsonl),
    continuing from its checkpoint if there is one; the model and its evaluations."""
    from relulab.bench import rundir
    from relulab.transformers.corpus import load_corpus

    torch.set_num_threads(settings["threads"])
    train_config = TrainConfig(**settings["train"])
    corpus = load_corpus()
    state, saved = None, run / "checkpoint.pt"
    if saved.is_file():
        model, state = load_checkpoint(str(saved))
    else:
        torch.manual_seed(train_config.seed)
        model = GPT(GPTConfig(**settings["model"]))
    parameters = sum(p.numel() for p in model.parameters())
    done = 0 if state is None else int(state["step"])
    resumed = f", resuming after step {done}" if done else ""
    progress(f"{parameters:,} parameters, {train_config.steps} steps{resumed}")

    def on_eval(step, metrics, model, optimizer, generator) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint(model, optimizer, generator, step), buffer)
        rundir.write_bytes_atomic(saved, buffer.getvalue())
        with open(run / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(metrics) + "\n")

    if state is None or state["step"] < train_config.steps:
        train_gpt(
            model, corpus.train, corpus.val, train_config,
            on_eval=on_eval, state=state, progress=progress,
        )  # fmt: skip
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return model.eval(), list({h["step"]: h for h in history}.values())  # resumed: once
