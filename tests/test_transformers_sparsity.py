"""Activation-sparsity measurement, checked against brute-force counts.

The known-pattern tests feed activations whose zeros are set by hand, and count them again
with plain Python loops; the GPT tests recompute the FFN's hidden units from the weights in
float64 (relu(x Wᵀ + b), relu(layer_norm(x))) and count their zeros directly.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from relulab.errors import UserError
from relulab.transformers import GPT, GPTConfig
from relulab.transformers.relufy import relufy
from relulab.transformers.sparsity import SparsityMeter, measure_sparsity


class Pattern(nn.Module):
    """An 'activation' that is nonzero exactly where ``pattern`` is True."""

    def __init__(self, pattern: torch.Tensor):
        super().__init__()
        self.pattern = pattern

    def forward(self, x):
        return self.pattern.reshape(x.shape).to(x.dtype) * (x.abs() + 1)


class ToyFFN(nn.Module):
    """relulab GPT's FFN layout (up, gate, act, down) with a hand-set zero pattern."""

    def __init__(self, d_in, hidden, d_out, pattern, gated=False):
        super().__init__()
        self.up = nn.Linear(d_in, hidden)
        self.gate = nn.Linear(d_in, hidden) if gated else None
        self.act = Pattern(pattern)
        self.down = nn.Linear(hidden, d_out)

    def forward(self, x):
        h = self.act(self.up(x) if self.gate is None else self.gate(x))
        return self.down(h if self.gate is None else h * (self.up(x).abs() + 1))


def brute_force(active, w):
    """Fraction of (window, neuron) pairs with no activation in a window of w tokens."""
    never = total = 0
    for sequence in active.tolist():
        for start in range(len(sequence) - w + 1):
            for j in range(len(sequence[0])):
                total += 1
                never += not any(sequence[t][j] for t in range(start, start + w))
    return never / total


def test_one_neuron_per_token_by_hand():
    # Neuron j fires at tokens t with t % 4 == j: a window of W tokens wakes min(W, 4) of 4.
    t = torch.arange(8)
    pattern = (t[:, None] % 4) == torch.arange(4)[None, :]  # (T=8, n=4)
    x = torch.tensor([1.0, 0.0, 2.0, 0.0]).repeat(1, 8, 1)  # half of the inputs are zero
    model = nn.Sequential(ToyFFN(4, 4, 3, pattern[None]))
    report = measure_sparsity(model, x, windows=(1, 2, 3, 4, 8))
    (layer,) = report.layers
    assert (layer.name, layer.tokens, layer.hidden) == ("0", 8, 4)
    assert layer.sparsity == 0.75
    assert layer.aggregated == {1: 0.75, 2: 0.5, 3: 0.25, 4: 0.0, 8: 0.0}
    assert layer.input_sparsity == 0.5 and layer.qkv_input_sparsity is None
    # Dense: 4·4 (up) + 4·3 (down) = 28 per token; one active unit leaves 16 + 3; two of
    # four inputs nonzero leave 2·4 + 3.
    assert (layer.dense_macs, layer.macs_skipping_down, layer.macs_skipping_both) == (28, 19, 11)
    assert layer.flops_removed_down == pytest.approx(9 / 28)
    assert report.flops_removed == pytest.approx(17 / 28)


@pytest.mark.parametrize("gated", [False, True])
def test_random_patterns_against_brute_force(gated):
    generator = torch.Generator().manual_seed(1)
    batch, tokens, d_in, hidden, d_out = 3, 11, 5, 7, 2
    # Neurons with very different firing rates, so that windows matter.
    rates = torch.linspace(0.02, 0.6, hidden)
    pattern = torch.rand(batch, tokens, hidden, generator=generator) < rates
    x = torch.randn(batch, tokens, d_in, generator=generator)
    x[torch.rand(x.shape, generator=generator) < 0.3] = 0.0
    model = ToyFFN(d_in, hidden, d_out, pattern, gated=gated)
    windows = (1, 2, 5, 11)
    report = measure_sparsity(model, x, windows)
    (layer,) = report.layers

    zeros = sum(not v for row in pattern.reshape(-1, hidden).tolist() for v in row)
    assert layer.sparsity == zeros / (batch * tokens * hidden)
    for w in windows:
        assert layer.aggregated[w] == pytest.approx(brute_force(pattern, w), abs=1e-15)
    nnz_x, nnz_h, ups = int((x != 0).sum()), int(pattern.sum()), 2 if gated else 1
    n_tokens = batch * tokens
    dense = n_tokens * (ups * d_in * hidden + hidden * d_out)
    assert layer.dense_macs * n_tokens == pytest.approx(dense)
    down_only = n_tokens * ups * d_in * hidden + nnz_h * d_out
    assert layer.flops_removed_down == pytest.approx(1 - down_only / dense)
    assert layer.flops_removed == pytest.approx(1 - (ups * nnz_x * hidden + nnz_h * d_out) / dense)
    assert layer.input_sparsity == pytest.approx(1 - nnz_x / x.numel())


def tiny_gpt(activation="gelu"):
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=40, block_size=32, n_layer=2, n_head=2, n_embd=16,
                       activation=activation, dropout=0.1)  # fmt: skip
    return GPT(config).double()


def layer_norm(x, norm):
    centred = x - x.mean(-1, keepdim=True)
    scaled = centred / torch.sqrt(centred.square().mean(-1, keepdim=True) + norm.eps)
    return scaled * norm.weight + norm.bias


def record_inputs(modules):
    """Inputs each module receives, captured with our own hooks."""
    seen, hooks = {}, []
    for name, module in modules.items():
        hooks.append(
            module.register_forward_pre_hook(lambda _, a, n=name: seen.setdefault(n, a[0]))
        )
    return seen, hooks


@pytest.mark.parametrize("stage", [1, 2])
def test_relufied_gpt_sparsity_equals_a_direct_count(stage):
    model = tiny_gpt()
    relufy(model, stage)
    idx = torch.randint(0, 40, (3, 32))
    # Our own hooks take each block's residual stream at the inputs of its two norms.
    norms = {}
    for i, block in enumerate(model.blocks):
        norm_attn, norm_ffn = (
            (block.norm_attn, block.norm_ffn)
            if stage == 1
            else (block.norm_attn[0], block.norm_ffn[0])
        )
        norms |= {f"{i}.attn": norm_attn, f"{i}.ffn": norm_ffn}
    seen, hooks = record_inputs(norms)
    with torch.no_grad():
        model.eval()(idx)  # dropout off, as measure_sparsity runs it
    for hook in hooks:
        hook.remove()
    model.train()
    report = measure_sparsity(model, idx, windows=(1, 4, 32))
    assert model.training and all(m.training for m in model.modules())  # modes restored
    assert not model.blocks[0].ffn.down._forward_hooks  # hooks removed

    for i, (block, layer) in enumerate(zip(model.blocks, report.layers)):
        up = block.ffn.up
        x_ffn = layer_norm(seen[f"{i}.ffn"], norms[f"{i}.ffn"])
        x_attn = layer_norm(seen[f"{i}.attn"], norms[f"{i}.attn"])
        if stage == 2:
            x_ffn, x_attn = x_ffn.clamp(min=0), x_attn.clamp(min=0)
        h = (x_ffn @ up.weight.T + up.bias).clamp(min=0)
        assert layer.name == f"blocks.{i}.ffn"
        assert 0 < layer.sparsity < 1
        assert layer.sparsity == (h == 0).double().mean().item()
        windows = h.unfold(1, 4, 1)  # (B, T − 3, n, 4)
        assert layer.aggregated[4] == pytest.approx((windows == 0).all(-1).double().mean().item())
        assert layer.aggregated[32] == pytest.approx((h == 0).all(1).double().mean().item())
        assert layer.input_sparsity == (x_ffn == 0).double().mean().item()
        assert layer.qkv_input_sparsity == (x_attn == 0).double().mean().item()
        # up d·n, down n·d: skipping zeros of h removes sparsity/2 of the FFN's work.
        assert layer.flops_removed_down == pytest.approx(layer.sparsity / 2)
        expected_both = (layer.sparsity + layer.input_sparsity) / 2
        assert layer.flops_removed == pytest.approx(expected_both)
        assert (layer.input_sparsity > 0.2) == (stage == 2)
    assert report.sparsity == pytest.approx(sum(r.sparsity for r in report.layers) / 2)
    json.dumps(report.to_dict())
    assert report.summary().splitlines()[-1].startswith("mean")


def test_gelu_model_is_dense():
    report = measure_sparsity(tiny_gpt(), torch.randint(0, 40, (2, 8)), windows=(1, 8))
    assert report.sparsity == 0 and report.flops_removed == 0


def test_llama_gated_sparsity_by_hand():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config).double()
    relufy(model, 2)
    mlps = {str(i): layer.mlp for i, layer in enumerate(model.model.layers)}
    seen, hooks = record_inputs(mlps)
    report = measure_sparsity(model, torch.randint(0, 100, (2, 16)), windows=(1, 16))
    for hook in hooks:
        hook.remove()
    for name, layer in zip(mlps, report.layers):
        mlp, x = mlps[name], seen[name]
        h = (x @ mlp.gate_proj.weight.T).clamp(min=0) * (x @ mlp.up_proj.weight.T)
        assert layer.sparsity == (h == 0).double().mean().item() and layer.sparsity > 0
        assert layer.input_sparsity == (x == 0).double().mean().item() > 0
        n, d = h.shape[-1], x.shape[-1]
        nnz_h, nnz_x = (h != 0).sum().item(), (x != 0).sum().item()
        dense = 32 * 3 * d * n  # gate, up, down: d·n each, over 32 tokens
        assert layer.flops_removed == pytest.approx(1 - (2 * nnz_x * n + nnz_h * d) / dense)
        assert layer.qkv_input_sparsity > 0


def test_token_by_token_passes_have_no_long_windows():
    model = tiny_gpt("relu")
    with SparsityMeter(model, windows=(1, 4)) as meter, torch.no_grad():
        model.eval()
        for _ in range(3):
            model(torch.randint(0, 40, (1, 1)))
    report = meter.report()
    assert report.layers[0].tokens == 3
    assert report.layers[0].aggregated[1] == report.layers[0].sparsity
    assert math.isnan(report.layers[0].aggregated[4])


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        ((1, 64), r"^window 64 is longer than the sequences \(32 tokens\)$"),
        ((0,), "window lengths must be positive integers, got 0"),
        ((), "give at least one window length"),
    ],
)
def test_bad_windows(windows, message):
    with pytest.raises(UserError, match=message):
        measure_sparsity(tiny_gpt(), torch.randint(0, 40, (1, 32)), windows)


def test_unknown_architecture():
    with pytest.raises(UserError, match="found no feed-forward block in Sequential"):
        SparsityMeter(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
