"""Attention statistics against independent references: entropy formulas in float64, torch's
own attention kernel, and a by-hand forward pass of the first layer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from relulab.errors import UserError
from relulab.transformers import GPT, GPTConfig
from relulab.transformers.attention_stats import (
    attention_entropy,
    attention_statistics,
    row_entropy,
)
from relulab.transformers.gpt import relu_weights, softmax_weights


def tiny(attention: str = "softmax", seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=12, attention=attention))


def test_entropy_of_uniform_one_hot_and_unnormalised_rows():
    rows = torch.tensor([[1 / 4] * 4, [0, 0, 1.0, 0], [3.0, 3.0, 0, 0], [0, 0, 0, 0]])
    entropy = row_entropy(rows)
    assert entropy[0].item() == pytest.approx(math.log(4), abs=1e-12)
    assert entropy[1].item() == 0.0
    assert entropy[2].item() == pytest.approx(math.log(2), abs=1e-12)  # divided by its sum
    assert math.isnan(entropy[3].item())  # a switched-off row has no distribution


@pytest.mark.parametrize("t_query", [7, 3])
def test_softmax_weights_are_what_torch_kernel_applies(t_query):
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 3, t_query, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    mask = torch.ones(t_query, 7, dtype=torch.bool).tril(7 - t_query)  # queries are the last
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(softmax_weights(q, k) @ v, expected, rtol=1e-5, atol=1e-6)


def test_untrained_scores_of_zero_give_uniform_softmax_and_switched_off_rela():
    for attention in ("softmax", "rela"):
        model = tiny(attention)
        for block in model.blocks:  # q = k = 0: every score 0
            torch.nn.init.zeros_(block.attn.qkv.weight)
            torch.nn.init.zeros_(block.attn.qkv.bias)
        stats = attention_statistics(model, torch.randint(65, (5, 10)))
        assert stats.rows == 5 * 9
        if attention == "softmax":
            mean_log_keys = np.mean([math.log(n) for n in range(2, 11)])  # queries 1..9
            torch.testing.assert_close(
                stats.entropy, torch.full((2, 2), mean_log_keys, dtype=torch.float64)
            )
            torch.testing.assert_close(
                stats.normalized_entropy, torch.ones(2, 2, dtype=torch.float64)
            )
            assert stats.zero_fraction.eq(0).all() and stats.off_fraction.eq(0).all()
        else:  # relu(0) = 0: every row is off
            assert stats.off_fraction.eq(1).all() and stats.zero_fraction.eq(1).all()
            assert stats.entropy.isnan().all()


def test_first_layer_matches_a_forward_pass_by_hand_in_float64():
    model = tiny("softmax", seed=3)
    data = torch.randint(65, (3, 12))
    stats = attention_statistics(model, data)
    with torch.no_grad():
        sd = {k: v.double() for k, v in model.state_dict().items()}
        x = sd["token_embedding.weight"][data] + sd["position_embedding.weight"][:12]
        x = F.layer_norm(x, (16,), sd["blocks.0.norm_attn.weight"], sd["blocks.0.norm_attn.bias"])
        qkv = x @ sd["blocks.0.attn.qkv.weight"].T + sd["blocks.0.attn.qkv.bias"]
    q, k = qkv[..., :16].numpy(), qkv[..., 16:32].numpy()
    for head in range(2):
        part = slice(8 * head, 8 * head + 8)
        entropies, normalized = [], []
        for b in range(3):
            for i in range(1, 12):
                scores = q[b, i, part] @ k[b, : i + 1, part].T / math.sqrt(8)
                p = np.exp(scores - scores.max())
                p /= p.sum()
                entropies.append(-(p * np.log(p)).sum())
                normalized.append(entropies[-1] / math.log(i + 1))
        assert stats.entropy[0, head].item() == pytest.approx(np.mean(entropies), rel=1e-5)
        assert stats.normalized_entropy[0, head].item() == pytest.approx(
            np.mean(normalized), rel=1e-5
        )


def test_rela_zero_weights_and_off_rows_are_counted_from_the_weights():
    model = tiny("rela", seed=5)
    data = torch.randint(65, (4, 12))
    stats = attention_statistics(model, data)
    with torch.no_grad():  # the layer's weights, recomputed from its input by hand
        x = model.token_embedding(data) + model.position_embedding(torch.arange(12))
        q, k, _ = model.blocks[0].attn.heads(model.blocks[0].norm_attn(x))
        scores = (q.double() @ k.double().transpose(-2, -1)) / math.sqrt(8)
    visible = torch.ones(12, 12, dtype=torch.bool).tril()
    positive = (scores > 0) & visible
    rows = positive[:, :, 1:].any(-1)  # queries 1..11
    zero = (~positive & visible)[:, :, 1:].sum((0, 2, 3)).double() / (4 * visible[1:].sum())
    torch.testing.assert_close(stats.zero_fraction[0], zero, atol=2e-3, rtol=0)  # float32 ties
    torch.testing.assert_close(
        stats.off_fraction[0], 1 - rows.double().mean((0, 2)), atol=1e-3, rtol=0
    )
    assert 0 < stats.zero_fraction.mean() < 1


def test_the_model_is_left_as_found():
    model = tiny()
    model.train()
    attention_entropy(model, torch.randint(65, (2, 6)), normalized=True)
    assert model.training
    assert all(not block.attn._forward_pre_hooks for block in model.blocks)


def test_relu_weights_mask_later_keys_with_zero():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 4)
    weights = relu_weights(q, k)
    assert weights.triu(1).eq(0).all()
    torch.testing.assert_close(weights.tril(), torch.relu(q @ k.transpose(-2, -1) / 2).tril())


@pytest.mark.parametrize(
    ("shape", "message"), [((4,), "shape (N, T)"), ((2, 1), "T >= 2"), ((1, 13), "block_size 12")]
)
def test_bad_data_is_refused(shape, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        attention_statistics(tiny(), torch.zeros(shape, dtype=torch.long))
