"""Token-by-token decoding of a GPT with sparse FFNs: its tokens/s, and the predictor's cost.

:func:`decode_speed` swaps every block's FFN for a :class:`~relulab.transformers.sparse_ffn.
SparseFFN` of each mode in turn (restoring the model afterwards) and times greedy decoding
with the KV cache, the modes round-robin (:func:`relulab.speed.round_robin`), so that a
machine that slows down slows every mode alike. The prompt is fed once per mode, before
timing: each timed call starts from a copy of those caches, so the rate is that of decoding
alone. The exact modes must generate dense's tokens; that is checked before timing.

:func:`predictor_effect` fits one low-rank predictor per layer (Deja Vu) on the FFN inputs
of training windows and reports, per layer, the recall of active neurons on validation
windows, and the validation loss with every FFN computing only its predicted neurons.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from relulab.errors import UserError
from relulab.speed import Timing, round_robin
from relulab.transformers.gpt import GPT, KVCache
from relulab.transformers.sparse_ffn import (
    EXACT_MODES,
    MODES,
    LowRankPredictor,
    SparseFFN,
    fit_predictor,
    predictor_quality,
)
from relulab.transformers.train import TrainConfig, validation_loss, windows


def _check_modes(modes: Iterable[str]) -> tuple[str, ...]:
    modes = tuple(dict.fromkeys(modes))
    for mode in modes:
        if mode not in MODES:
            raise UserError(f"unknown sparse FFN mode {mode!r}; choose from {', '.join(MODES)}")
    return modes


def _sparse(
    model: GPT,
    mode: str,
    predictors: Sequence[LowRankPredictor] | None,
    top_k: int | None,
    threshold: float,
) -> list[SparseFFN]:
    """A SparseFFN of ``mode`` for every block's FFN (with ``predictors[i]`` for block i)."""
    if mode == "predictor" and (predictors is None or len(predictors) != len(model.blocks)):
        got = "none" if predictors is None else len(predictors)
        raise UserError(
            f"mode 'predictor' needs one predictor per layer ({len(model.blocks)}), got {got}"
        )
    return [
        SparseFFN.from_feedforward(
            block.ffn,
            mode,
            predictor=None if predictors is None else predictors[i],
            top_k=top_k,
            threshold=threshold,
        )
        for i, block in enumerate(model.blocks)
    ]


@contextlib.contextmanager
def swapped_ffns(model: GPT, ffns: Sequence[nn.Module]) -> Iterator[GPT]:
    """Within the block, ``model.blocks[i].ffn`` is ``ffns[i]``; the originals are put back
    on exit."""
    originals = [block.ffn for block in model.blocks]
    try:
        for block, ffn in zip(model.blocks, ffns, strict=True):
            block.ffn = ffn
        yield model
    finally:
        for block, ffn in zip(model.blocks, originals, strict=True):
            block.ffn = ffn


def sparse_ffns(
    model: GPT,
    mode: str,
    *,
    predictors: Sequence[LowRankPredictor] | None = None,
    top_k: int | None = None,
    threshold: float = 0.0,
) -> contextlib.AbstractContextManager[GPT]:
    """Within the block, every FFN of ``model`` is a SparseFFN of ``mode``::

    with sparse_ffns(model, "down"):
        model.generate(prompt, 100)
    """
    return swapped_ffns(model, _sparse(model, mode, predictors, top_k, threshold))


def _copy(caches: list[KVCache]) -> list[KVCache]:
    """New caches holding the same tensors (append concatenates: the originals stay as they
    are)."""
    copies = []
    for cache in caches:
        copy = KVCache()
        copy.k, copy.v = cache.k, cache.v
        copies.append(copy)
    return copies


@torch.no_grad()
def _prefill(model: GPT, prompt: Tensor) -> tuple[list[KVCache], Tensor]:
    """The caches after the prompt (1, T), and the first greedy token (1, 1)."""
    caches = model.new_caches(1)
    logits, _ = model(prompt, caches=caches, start=0)
    return caches, logits[:, -1].argmax(-1, keepdim=True)


@torch.no_grad()
def _greedy(model: GPT, caches: list[KVCache], first: Tensor, tokens: int) -> Tensor:
    """``tokens`` greedy tokens (1, tokens) after the prefill, one forward pass each but the
    first (which the prefill chose)."""
    caches = _copy(caches)
    out = [first]
    for _ in range(tokens - 1):
        logits, _ = model(out[-1], caches=caches, start=len(caches[0]))
        out.append(logits[:, -1].argmax(-1, keepdim=True))
    return torch.cat(out, dim=1)


def decode_speed(
    model: GPT,
    prompt_ids: Tensor,
    tokens: int,
    modes: Iterable[str] = MODES,
    *,
    predictors: Sequence[LowRankPredictor] | None = None,
    top_k: int | None = None,
    threshold: float = 0.0,
    rounds: int = 5,
    threads: int = 2,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Tokens/s of greedy decoding with the KV cache, the FFNs in each of ``modes``.

    Args:
        model: relulab's GPT (left as it was: eval mode during, its FFNs restored after).
        prompt_ids: the prompt, shape (T,) or (1, T), T >= 1.
        tokens: tokens to generate; prompt + tokens must fit the model's ``block_size``.
        modes: of :data:`~relulab.transformers.sparse_ffn.MODES`; ``"dense"`` is always
            timed, and every ratio divides by it.
        predictors, top_k, threshold: for ``"predictor"`` (see :func:`predictor_effect`).
        rounds, threads: see :func:`relulab.speed.round_robin`.
        progress: called with a line before each warm-up and round.

    Returns:
        ``generated``: dense's greedy tokens (a list of ``tokens`` ids);
        ``modes``: per mode, median ``seconds`` for the ``tokens``, ``tokens_per_second``,
        and ``speedup`` over dense (within each round) with quartiles; ``same_tokens``, per
        mode, whether it generated dense's tokens (True for every exact mode: checked);
        ``load_average`` before and after.

    Raises:
        UserError: an unknown mode, a prompt or token count that does not fit.
        RuntimeError: an exact mode generated other tokens than dense (a bug).
    """
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    modes = _check_modes(["dense", *modes])
    prompt = prompt_ids.reshape(1, -1)
    block = model.config.block_size
    if prompt.shape[1] < 1 or tokens < 1 or prompt.shape[1] + tokens > block:
        raise UserError(
            f"a prompt of {prompt.shape[1]} tokens and {tokens} new ones must be >= 1 each and "
            f"fit the model's block_size {block}"
        )
    if rounds < 1 or threads < 1:
        raise UserError(f"rounds and threads must be >= 1, got {rounds} and {threads}")
    was_training = model.training
    model.eval()
    generated: dict[str, Tensor] = {}
    calls: dict[str, Callable[[], Tensor]] = {}
    try:
        for mode in modes:
            ffns = _sparse(model, mode, predictors, top_k, threshold)
            with swapped_ffns(model, ffns):
                caches, first = _prefill(model, prompt)
                generated[mode] = _greedy(model, caches, first, tokens)

            def call(ffns=ffns, caches=caches, first=first) -> Tensor:
                with swapped_ffns(model, ffns):
                    return _greedy(model, caches, first, tokens)

            calls[mode] = call
        same = {m: bool(torch.equal(generated[m], generated["dense"])) for m in modes}
        wrong = [m for m in modes if m in EXACT_MODES and not same[m]]
        if wrong:
            raise RuntimeError(f"exact modes {wrong} generated other tokens than dense")
        timings = round_robin(
            calls, {"to_dense": "dense"}, rounds=rounds, threads=threads, progress=progress
        )
    finally:
        model.train(was_training)
    rows = {}
    for mode, timing in timings.items():
        speedups = [1 / r for r in timing.ratios["to_dense"]]
        summary = Timing(timing.seconds, {"speedup": speedups}).summary()
        rows[mode] = {
            "seconds": summary["seconds"],
            "tokens_per_second": tokens / summary["seconds"],
            "speedup": summary["speedup"],
            "speedup_q1": summary["speedup_q1"],
            "speedup_q3": summary["speedup_q3"],
        }
    return {
        "prompt_tokens": prompt.shape[1],
        "tokens": tokens,
        "rounds": rounds,
        "threads": threads,
        "generated": generated["dense"][0].tolist(),
        "same_tokens": same,
        "modes": rows,
        "load_average": {
            "before": load_before,
            "after": os.getloadavg() if load_before is not None else None,
        },
    }


@torch.no_grad()
def ffn_inputs(model: GPT, ids: Tensor) -> list[Tensor]:
    """Per block, the inputs of its FFN (the output of ``norm_ffn``, after any stage-2 ReLU)
    for the token windows ``ids`` (B, T), flattened to (B·T, d)."""
    found: list[Tensor] = []
    hooks = [
        block.ffn.register_forward_pre_hook(
            lambda _module, args: found.append(args[0].reshape(-1, args[0].shape[-1]))
        )
        for block in model.blocks
    ]
    was_training = model.training
    model.eval()
    try:
        model(ids)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return found


@dataclass
class PredictorEffect:
    """What :func:`predictor_effect` found; ``predictors`` serve :func:`decode_speed`."""

    predictors: list[LowRankPredictor]
    layers: list[dict[str, float]]  # per block: recall, precision, active/predicted shares
    val_loss_dense: float
    val_loss_predictor: float
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def val_loss_change(self) -> float:
        return self.val_loss_predictor - self.val_loss_dense

    def to_dict(self) -> dict[str, Any]:
        """All but the predictors, for JSON."""
        return {
            **self.settings,
            "layers": self.layers,
            "val_loss_dense": self.val_loss_dense,
            "val_loss_predictor": self.val_loss_predictor,
            "val_loss_change": self.val_loss_change,
        }


def predictor_effect(
    model: GPT,
    train_ids: Tensor,
    val_ids: Tensor,
    rank: int,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    fit_windows: int = 32,
    eval_windows: int = 64,
    steps: int = 300,
    seed: int = 0,
) -> PredictorEffect:
    """Fit a :class:`LowRankPredictor` per layer; its recall and the validation loss it costs.

    Each layer's predictor is fit (:func:`~relulab.transformers.sparse_ffn.fit_predictor`) on
    the FFN inputs of ``fit_windows`` random training windows of ``block_size`` tokens; recall
    and precision are measured on ``eval_windows`` validation windows, with the neurons chosen
    as decoding will choose them: the ``top_k`` best-scored, or those whose logit exceeds
    ``threshold``. Exactly one of ``top_k`` and ``threshold`` is given. The validation loss
    (:func:`~relulab.transformers.train.validation_loss` on ``eval_windows`` windows) is taken
    with the dense FFNs and with every FFN computing only its predicted neurons.
    """
    if (top_k is None) == (threshold is None):
        raise UserError("give the predictor exactly one of top_k and threshold")
    hidden = model.config.ffn_hidden
    if top_k is not None and not 1 <= top_k <= hidden:
        raise UserError(f"top_k must be in [1, {hidden}] (the FFN's neurons), got {top_k}")
    if rank < 1:
        raise UserError(f"predictor rank must be >= 1, got {rank}")
    block = model.config.block_size
    generator = torch.Generator().manual_seed(seed)
    fit_x, _ = windows(train_ids, block, fit_windows, generator)
    val_x, _ = windows(val_ids, block, eval_windows, generator)
    chosen = {"top_k": top_k} if top_k is not None else {"threshold": threshold}
    predictors, layers = [], []
    fitted_on = ffn_inputs(model, fit_x)
    measured_on = ffn_inputs(model, val_x)
    for i, block_module in enumerate(model.blocks):
        predictor = fit_predictor(block_module.ffn, fitted_on[i], rank=rank, steps=steps, seed=seed)
        quality = predictor_quality(predictor, block_module.ffn, measured_on[i], **chosen)
        predictors.append(predictor)
        layers.append({"layer": i, **quality})
    config = TrainConfig(eval_windows=eval_windows)
    dense = validation_loss(model, val_ids, config)
    with sparse_ffns(model, "predictor", predictors=predictors, top_k=top_k,
                     threshold=0.0 if threshold is None else threshold):  # fmt: skip
        sparse = validation_loss(model, val_ids, config)
    settings = {"rank": rank, **chosen, "fit_windows": fit_windows, "eval_windows": eval_windows}
    return PredictorEffect(predictors, layers, dense, sparse, settings)
