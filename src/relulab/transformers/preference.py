"""Preference tuning of the GPT on synthetic preferences: RePO beside SimPO.

The preferences are over the model's own outputs. :func:`make_pairs` samples two completions
of each prompt (a window of the text) and prefers the one with the larger share of vowels
among its letters (:func:`vowel_share`). This property is decided by counting, so no
reward model or judgment is needed and a test can recount it. Its signal is dense (every
letter counts, unlike a rare word or a length) and the model's own samples already differ in
it (about 0.41 chosen against 0.35 rejected for the default GPT), so the preference can be
learnt from a few hundred pairs. Its exact ties (no letters, or equal shares) are the only
pairs dropped. :func:`tune` then runs one preference loss
(:data:`LOSSES`: RePO's ReLU hinge or SimPO's logistic loss, :mod:`relulab.losses`) from a
given start. It records the length-normalised margin, the filtered fraction (the share of
pairs with margin >= gamma, which RePO's gradient ignores), the vowel share of fresh samples
and the drift of the language-model loss::

    train, heldout = make_pairs(model, corpus, config, torch.Generator().manual_seed(0))
    history = tune(copy.deepcopy(model), train, "repo", config, heldout=heldout)

Two runs of :func:`tune` with one ``config`` see the same pairs in the same batch order.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from relulab.errors import TrainingDiverged, UserError
from relulab.losses import preference_margin, repo_loss, simpo_loss
from relulab.registry import did_you_mean
from relulab.transformers.corpus import CharCorpus, load_corpus
from relulab.transformers.train import TrainConfig, validation_loss, windows

VOWELS = "aeiouAEIOU"
# loss name -> the loss of a batch's margins under a config
LOSSES: dict[str, Callable[[Tensor, PreferenceConfig], Tensor]] = {
    "repo": lambda margin, config: repo_loss(margin, config.gamma),
    "simpo": lambda margin, config: simpo_loss(margin, config.beta, config.gamma),
}
_BATCH = 256  # sequences per forward pass when sampling or measuring, not a training setting


@dataclass
class PreferenceConfig:
    """The pairs and the tuning of :func:`make_pairs` and :func:`tune`; checked when made.

    The defaults are sized for the default 4x128 GPT of ``relulab gpt train``: each loss
    takes about 1.5 minutes on one core, and on that GPT trained 800 steps RePO takes the
    held-out margin from 0.05 to 0.60 and the filtered fraction of the training pairs from
    7% to 94%. ``prompt_length + completion_length`` must fit the model's block size (64
    for that GPT). ``learning_rate`` is constant, for AdamW without weight decay, so that
    weights move only where a loss pushes them (a smaller rate moves the margin and the
    validation loss alike, only later). ``gamma`` is the target margin in nats per
    character, as in :func:`~relulab.losses.repo_loss`; ``beta`` is SimPO's (RePO has none).
    """

    pairs: int = 512  # training pairs (ties are dropped and replaced by new draws)
    heldout: int = 128  # pairs on prompts from the validation text, never trained on
    prompt_length: int = 16
    completion_length: int = 32
    temperature: float = 1.0  # of the sampling of the pairs and of the evaluation samples
    steps: int = 200
    batch_size: int = 32
    learning_rate: float = 5e-5
    gamma: float = 0.5
    beta: float = 10.0
    eval_interval: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("pairs", "heldout", "prompt_length", "completion_length", "steps",
                     "batch_size", "eval_interval"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        if self.batch_size > self.pairs:
            raise UserError(
                f"batch_size {self.batch_size} is larger than pairs {self.pairs}; give at "
                f"least {self.batch_size} pairs or a batch size <= {self.pairs}"
            )
        for name, least in (("learning_rate", 0.0), ("temperature", 0.0), ("beta", 0.0)):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > least):
                raise UserError(f"{name} must be a finite number > 0, got {value!r}")
        # gamma < 0 would ask the model to keep preferring the rejected completion
        if not (isinstance(self.gamma, (int, float)) and math.isfinite(self.gamma)):
            raise UserError(f"gamma must be a finite number >= 0, got {self.gamma!r}")
        if self.gamma < 0:
            raise UserError(f"gamma must be >= 0 (a target margin), got {self.gamma!r}")


@dataclass(eq=False)  # tensors: == would compare element by element
class Pairs:
    """Preference pairs with one prompt length and one completion length.

    Attributes:
        prompts: token ids, (N, P).
        chosen, rejected: the preferred and the other completion, (N, C).
        chosen_score, rejected_score: their vowel shares, (N,); chosen's is the larger.
        ties: pairs drawn but dropped because both completions scored the same.
    """

    prompts: Tensor
    chosen: Tensor
    rejected: Tensor
    chosen_score: Tensor
    rejected_score: Tensor
    ties: int = 0

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, index: Tensor) -> Pairs:
        """The pairs at ``index`` (a batch)."""
        tensors = {f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)
                   if f.name != "ties"}  # fmt: skip
        return Pairs(**tensors)

    def to_dict(self) -> dict[str, Any]:
        """Tensors and numbers, for ``torch.save``; :meth:`from_dict` reads it back."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, found: dict[str, Any]) -> Pairs:
        return cls(**found)

    def stats(self) -> dict[str, int | float]:
        """Count, ties and the mean vowel share of each side."""
        return {
            "pairs": len(self),
            "ties_dropped": self.ties,
            "chosen_vowel_share": float(self.chosen_score.mean()),
            "rejected_vowel_share": float(self.rejected_score.mean()),
        }


def vowel_share(text: str) -> float:
    """Share of vowels (aeiouAEIOU) among the letters of ``text``; 0 when it has none.

    Example::

        >>> vowel_share("Oh, sir!")
        0.4
    """
    letters = [c for c in text if c.isalpha()]
    return sum(c in VOWELS for c in letters) / len(letters) if letters else 0.0


def vowel_shares(ids: Tensor, corpus: CharCorpus) -> Tensor:
    """:func:`vowel_share` of each row of token ids (N, C), as a float tensor (N,)."""
    letter = torch.tensor([c.isalpha() for c in corpus.vocab])[ids]
    vowel = torch.tensor([c in VOWELS for c in corpus.vocab])[ids]
    letters = letter.sum(dim=1)
    return vowel.sum(dim=1) / letters.clamp(min=1)


def make_pairs(
    model: nn.Module, corpus: CharCorpus, config: PreferenceConfig, generator: torch.Generator
) -> tuple[Pairs, Pairs]:
    """``config.pairs`` training pairs on windows of the training text and ``config.heldout``
    pairs on windows of the validation text, sampled from ``model`` at ``config.temperature``.

    Each prompt gets two completions; the one with the larger vowel share is chosen. Ties are
    dropped (counted in :attr:`Pairs.ties`) and replaced by new draws.
    """
    block = model.config.block_size
    if config.prompt_length + config.completion_length > block:
        raise UserError(
            f"prompt_length {config.prompt_length} + completion_length "
            f"{config.completion_length} is longer than the model's block_size {block}"
        )
    if model.config.vocab_size != len(corpus.vocab):
        raise UserError(
            f"the model has a vocabulary of {model.config.vocab_size}, the corpus "
            f"{len(corpus.vocab)}: it was not trained on this text"
        )
    was_training = model.training
    model.eval()
    try:
        train = _sample_pairs(model, corpus, corpus.train, config.pairs, config, generator)
        heldout = _sample_pairs(model, corpus, corpus.val, config.heldout, config, generator)
    finally:
        model.train(was_training)
    return train, heldout


def _sample_pairs(
    model: nn.Module,
    corpus: CharCorpus,
    ids: Tensor,
    count: int,
    config: PreferenceConfig,
    generator: torch.Generator,
) -> Pairs:
    kept: list[Pairs] = []
    have, ties = 0, 0
    for _ in range(50):  # a model whose samples nearly always tie could loop forever
        need = min(count - have, _BATCH // 2)
        prompts = windows(ids, config.prompt_length, need, generator)[0]
        # (2·need, C): the two completions of a prompt are rows 2i and 2i+1
        both = _complete(model, prompts.repeat_interleave(2, dim=0), config, generator)
        first, second = both[0::2], both[1::2]
        scores = vowel_shares(both, corpus).view(need, 2)
        keep = scores[:, 0] != scores[:, 1]
        ties += int((~keep).sum())
        swap = (scores[:, 1] > scores[:, 0])[:, None]
        kept.append(
            Pairs(
                prompts[keep],
                torch.where(swap, second, first)[keep],
                torch.where(swap, first, second)[keep],
                scores.max(dim=1).values[keep],
                scores.min(dim=1).values[keep],
            )
        )
        have += int(keep.sum())
        if have == count:
            break
    else:
        raise RuntimeError(f"only {have} of {count} pairs after 50 draws: nearly all tie")
    merged = {f.name: torch.cat([getattr(p, f.name) for p in kept])
              for f in dataclasses.fields(Pairs) if f.name != "ties"}  # fmt: skip
    return Pairs(**merged, ties=ties)


@torch.no_grad()
def _complete(
    model: nn.Module, prompts: Tensor, config: PreferenceConfig, generator: torch.Generator
) -> Tensor:
    """Sampled completions (N, C) of the prompts (N, P)."""
    out = model.generate(prompts, config.completion_length, config.temperature, None,
                         generator=generator)  # fmt: skip
    return out[:, prompts.shape[1] :]


def pair_margins(model: nn.Module, pairs: Pairs) -> Tensor:
    """Length-normalised margins (N,) of the pairs: mean log-probability per character of the
    chosen completion minus the rejected one's, each given its prompt; the prompt's own
    tokens are masked out of both."""
    prompt = pairs.prompts.shape[1]
    sequences = torch.cat(
        [torch.cat([pairs.prompts, pairs.chosen], 1), torch.cat([pairs.prompts, pairs.rejected], 1)]
    )
    logits, _ = model(sequences[:, :-1])  # logits[:, t] predicts token t + 1
    labels = sequences[:, 1:]
    # the completion starts at token `prompt`, so it is predicted from position prompt - 1
    mask = (torch.arange(labels.shape[1]) >= prompt - 1).expand_as(labels)
    n = len(pairs)
    return preference_margin(logits[:n], labels[:n], mask[:n], logits[n:], labels[n:], mask[n:])


@torch.no_grad()
def _all_margins(model: nn.Module, pairs: Pairs) -> Tensor:
    starts = range(0, len(pairs), _BATCH // 2)
    batches = [torch.arange(i, min(i + _BATCH // 2, len(pairs))) for i in starts]
    return torch.cat([pair_margins(model, pairs.select(batch)) for batch in batches])


def check_loss(loss: str) -> None:
    """UserError naming an unknown loss and the nearest of :data:`LOSSES`."""
    if loss not in LOSSES:
        hint = did_you_mean(loss, list(LOSSES)) or f" (choose from {', '.join(LOSSES)})"
        raise UserError(f"unknown loss {loss!r}{hint}")


def evaluate(
    model: nn.Module,
    pairs: Pairs,
    heldout: Pairs,
    loss: str,
    config: PreferenceConfig,
    corpus: CharCorpus,
) -> dict[str, float]:
    """The figures :func:`tune` records: ``loss`` on all training pairs, mean margin
    (``train_margin``, ``heldout_margin``) and filtered fraction (share with margin >= gamma:
    ``train_filtered``, ``heldout_filtered``), ``vowel_share`` of fresh completions of the
    held-out prompts (the same random draws at every evaluation) and ``val_loss``."""
    was_training = model.training
    model.eval()
    try:
        train_margin, heldout_margin = _all_margins(model, pairs), _all_margins(model, heldout)
        completions = _complete(model, heldout.prompts, config,
                                torch.Generator().manual_seed(config.seed + 1))  # fmt: skip
        measured = {
            "loss": float(LOSSES[loss](train_margin, config)),
            "train_margin": float(train_margin.mean()),
            "train_filtered": float((train_margin >= config.gamma).float().mean()),
            "heldout_margin": float(heldout_margin.mean()),
            "heldout_filtered": float((heldout_margin >= config.gamma).float().mean()),
            "vowel_share": float(vowel_shares(completions, corpus).mean()),
            "val_loss": validation_loss(model, corpus.val, TrainConfig()),
        }
    finally:
        model.train(was_training)
    return measured


def tune(
    model: nn.Module,
    pairs: Pairs,
    loss: str,
    config: PreferenceConfig,
    *,
    heldout: Pairs,
    corpus: CharCorpus | None = None,
    on_eval: Callable[[dict[str, float]], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, float]]:
    """Tune ``model`` in place with the preference loss ``loss`` ("repo" or "simpo") for
    ``config.steps`` steps of ``config.batch_size`` pairs; the evaluations made.

    The batches are epochs of random permutations of the pairs drawn from a generator seeded
    by ``config.seed``, so every loss sees the same batches. :func:`evaluate` runs before the
    first step, every ``eval_interval`` steps and after the last; each result, with ``step``
    and ``seconds`` since the previous evaluation, goes to ``on_eval``.
    """
    check_loss(loss)
    corpus = corpus or load_corpus()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    start = time.perf_counter()

    def record(step: int) -> None:
        nonlocal start
        metrics = {"step": step, **evaluate(model, pairs, heldout, loss, config, corpus)}
        metrics["seconds"] = time.perf_counter() - start
        history.append(metrics)
        if progress is not None:
            progress(
                f"{loss} step {step}/{config.steps}: held-out margin "
                f"{metrics['heldout_margin']:+.3f}, filtered {metrics['train_filtered']:.1%} "
                f"(train) {metrics['heldout_filtered']:.1%} (held-out), vowels "
                f"{metrics['vowel_share']:.3f}, val {metrics['val_loss']:.3f}"
            )
        if on_eval is not None:
            on_eval(metrics)
        start = time.perf_counter()

    record(0)
    model.train()
    order = torch.empty(0, dtype=torch.long)
    for step in range(1, config.steps + 1):
        if len(order) < config.batch_size:  # a new epoch; a short remainder is dropped
            order = torch.randperm(len(pairs), generator=generator)
        batch, order = order[: config.batch_size], order[config.batch_size :]
        value = LOSSES[loss](pair_margins(model, pairs.select(batch)), config)
        if not torch.isfinite(value):
            raise TrainingDiverged(f"the {loss} loss diverged at step {step} ({value.item()})")
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        if step % config.eval_interval == 0 or step == config.steps:
            record(step)
    return history
