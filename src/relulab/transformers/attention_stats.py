"""What each attention head of a :class:`~relulab.transformers.gpt.GPT` does on some text:
the entropy of its weights, its exactly-zero weights and its switched-off rows.

"ReLU's Revival" (Jha & Reagen 2024) measures per head the Shannon entropy of the attention
weights, ``H_i = -Σ_j A_ij log A_ij`` averaged over the queries ``i``, and calls a LayerNorm-free
GELU model's early heads near their maximal entropy "entropic overload" (near-uniform
attention). Causal rows differ in length (query ``i`` sees ``i + 1`` keys, so a uniform row has
entropy ``log(i + 1)``), so besides the entropy in nats this module reports it normalised per
row, ``H_i / log(i + 1)``: 1 is uniform over the visible keys, 0 a single key, whatever the
position. The first query sees one key (entropy 0 for every head) and is left out of both.

ReLA's weights (``relu(q kᵀ/√d)``) do not sum to one: their entropy is that of each row divided
by its sum, over the rows that are not all zero; all-zero rows (the head switched off for that
query) are counted apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from relulab.errors import UserError
from relulab.transformers.gpt import GPT


@dataclass
class AttentionStats:
    """Per layer and head (each tensor (n_layer, n_head), float64), over the rows of queries
    that see at least two keys.

    Attributes:
        entropy: mean row entropy in nats, of the rows that are not all zero.
        normalized_entropy: mean of ``H_i / log(i + 1)`` over the same rows (1 = uniform).
        zero_fraction: share of the visible (causal) weights that are exactly 0.
        off_fraction: share of the rows that are all zero (ReLA's switched-off head; never
            for softmax).
        nan_count: weights that are NaN (a diverged model), per layer and head.
        rows: query rows measured per head.
    """

    entropy: torch.Tensor
    normalized_entropy: torch.Tensor
    zero_fraction: torch.Tensor
    off_fraction: torch.Tensor
    nan_count: torch.Tensor
    rows: int

    def to_dict(self) -> dict[str, object]:
        """Nested lists (layer, head) for a JSON file; NaN as None, NaN counts as integers."""

        def rows_of(t: torch.Tensor) -> list[list[float | None]]:
            return [[None if math.isnan(v) else v for v in row] for row in t.tolist()]

        names = ("entropy", "normalized_entropy", "zero_fraction", "off_fraction")
        return {
            **{name: rows_of(getattr(self, name)) for name in names},
            "nan_count": self.nan_count.long().tolist(),
            "rows": self.rows,
        }


def row_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of each row of non-negative ``weights`` (..., keys), each row
    divided by its sum first (0 log 0 = 0); NaN for a row that is all zero."""
    weights = weights.double()
    total = weights.sum(-1, keepdim=True)
    p = weights / total
    terms = torch.where(p > 0, -p * torch.log(p), torch.zeros_like(p))
    return terms.sum(-1).masked_fill(total.squeeze(-1) == 0, math.nan)


@torch.no_grad()
def attention_statistics(model: GPT, data: torch.Tensor, batch_size: int = 64) -> AttentionStats:
    """Entropy, zero weights and switched-off rows of every head of ``model`` on ``data``.

    Args:
        model: a GPT (any attention kind of :data:`~relulab.transformers.gpt.ATTENTIONS`).
        data: token ids, (N, T) with 2 ≤ T ≤ block_size; each row is a sequence from position 0.
        batch_size: sequences per forward pass.

    Example:
        >>> from relulab.transformers import GPT, GPTConfig
        >>> _ = torch.manual_seed(0)
        >>> model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8))
        >>> stats = attention_statistics(model, torch.randint(65, (4, 8)))
        >>> stats.normalized_entropy.shape  # near 1: an untrained model attends uniformly
        torch.Size([2, 2])
    """
    if data.dim() != 2 or data.shape[1] < 2:
        raise UserError(
            f"data must be token ids of shape (N, T) with T >= 2, got {tuple(data.shape)}"
        )
    if data.shape[1] > model.config.block_size:
        raise UserError(
            f"sequences of {data.shape[1]} tokens are longer than the model's block_size "
            f"{model.config.block_size}"
        )
    shape = (model.config.n_layer, model.config.n_head)
    names = ("entropy", "normalized", "measured", "zero", "off", "nan")
    sums = {name: torch.zeros(shape, dtype=torch.float64) for name in names}
    T = data.shape[1]
    visible = torch.ones(T, T, dtype=torch.bool).tril()[1:]  # rows of queries 1..T-1
    keys = torch.arange(2, T + 1, dtype=torch.float64)  # keys each of those rows sees
    captured: list[torch.Tensor] = []

    def capture(module, args) -> None:
        captured.append(module.weights(args[0])[:, :, 1:])

    hooks = [block.attn.register_forward_pre_hook(capture) for block in model.blocks]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(data), batch_size):
            captured.clear()
            model(data[start : start + batch_size])
            for layer, weights in enumerate(captured):  # (B, heads, T-1, T)
                entropy = row_entropy(weights)
                measured = entropy.isfinite()  # neither switched off nor NaN
                sums["entropy"][layer] += entropy.where(measured, 0.0).sum((0, 2))
                sums["normalized"][layer] += (entropy / keys.log()).where(measured, 0.0).sum((0, 2))
                sums["measured"][layer] += measured.sum((0, 2))
                sums["off"][layer] += (weights.sum(-1) == 0).sum((0, 2))
                sums["zero"][layer] += ((weights == 0) & visible).sum((0, 2, 3))
                sums["nan"][layer] += weights.isnan().sum((0, 2, 3))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    rows = len(data) * (T - 1)
    return AttentionStats(
        entropy=sums["entropy"] / sums["measured"],  # NaN where no row was measured
        normalized_entropy=sums["normalized"] / sums["measured"],
        zero_fraction=sums["zero"] / (len(data) * int(visible.sum())),
        off_fraction=sums["off"] / rows,
        nan_count=sums["nan"],
        rows=rows,
    )


def attention_entropy(model: GPT, data: torch.Tensor, normalized: bool = False) -> torch.Tensor:
    """Mean attention entropy per layer and head, (n_layer, n_head): in nats, or with
    ``normalized`` as a share of the uniform row's (see :func:`attention_statistics`)."""
    stats = attention_statistics(model, data)
    return stats.normalized_entropy if normalized else stats.entropy
