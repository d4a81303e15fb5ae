"""ReLA attention (GPTConfig(attention="rela")): the output against a float64 formula written
out loop by loop, switched-off heads (all scores negative) give exact zeros and finite values
and gradients, causality, KV-cache decoding against recomputation, and the config's message."""

from __future__ import annotations

import math

import pytest
import torch

from relulab.errors import UserError
from relulab.transformers import GPT, GPTConfig
from relulab.transformers.gpt import CausalSelfAttention, relu_attention

C, H = 16, 2  # width and heads of the single-layer checks
HS = C // H


def rela_layer(seed: int = 0) -> CausalSelfAttention:
    """A ReLA layer with s, g and the biases away from their init, so the formula sees them."""
    torch.manual_seed(seed)
    layer = CausalSelfAttention(GPTConfig(n_embd=C, n_head=H, attention="rela"))
    with torch.no_grad():
        layer.qkv.bias.normal_(0.0, 0.1)
        layer.proj.bias.normal_(0.0, 0.1)
        layer.norm.weight.uniform_(0.5, 1.5)
        layer.norm.gate.normal_(0.0, 1.0)
    return layer


def rela_by_hand(layer: CausalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Section 11 of the reference, in float64 loops: w_ij = max(0, q_i·k_j/√d) for j ≤ i
    (0 after i), o_i = Σ_j w_ij v_j per head, heads concatenated, then
    s·o/√(mean(o²)+eps)·σ(g·o) over the C features, then the projection."""
    d = {name: p.detach().double() for name, p in layer.named_parameters()}
    eps = layer.norm.eps
    B, T, _ = x.shape
    out = torch.zeros(B, T, C, dtype=torch.float64)
    for b in range(B):
        qkv = x[b].double() @ d["qkv.weight"].T + d["qkv.bias"]
        q, k, v = qkv[:, :C], qkv[:, C : 2 * C], qkv[:, 2 * C :]
        for i in range(T):
            o = [0.0] * C
            for h in range(H):
                cols = slice(h * HS, (h + 1) * HS)
                for j in range(i + 1):
                    w = max(0.0, float(q[i, cols] @ k[j, cols]) / math.sqrt(HS))
                    for f in range(h * HS, (h + 1) * HS):
                        o[f] += w * float(v[j, f])
            rms = math.sqrt(sum(value * value for value in o) / C + eps)
            normed = torch.tensor(
                [
                    float(d["norm.weight"][f]) * o[f] / rms
                    / (1.0 + math.exp(-float(d["norm.gate"][f]) * o[f]))
                    for f in range(C)
                ],
                dtype=torch.float64,
            )  # fmt: skip
            out[b, i] = normed @ d["proj.weight"].T + d["proj.bias"]
    return out


def test_rela_matches_the_float64_formula():
    layer = rela_layer()
    x = torch.randn(2, 7, C, generator=torch.Generator().manual_seed(1))
    expected = rela_by_hand(layer, x)
    assert torch.allclose(layer(x).double(), expected, atol=1e-5, rtol=1e-4)


def test_relu_attention_has_no_normalisation_and_zero_above_the_diagonal():
    # Independent check of the kernel: one query, known scores 2, -1, and a masked key.
    q = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]]).expand(1, 2, 3, 2).clone()
    k = torch.tensor([[1.0, 0.0], [-0.5, 0.0], [9.0, 0.0]]).expand(1, 2, 3, 2)
    v = torch.tensor([[1.0, 10.0], [100.0, 1000.0], [7.0, 7.0]]).expand(1, 2, 3, 2)
    out = relu_attention(q, k, v, True)
    scale = math.sqrt(2)
    # Row 1 sees keys 0, 1: weights relu(2/√2), relu(-1/√2) = √2, 0 (they do not sum to 1).
    assert torch.allclose(out[0, 0, 1], torch.tensor([scale, 10 * scale]))
    assert torch.allclose(out[0, 0, 0], torch.tensor([scale, 10 * scale]))
    assert torch.equal(out[0, 1], torch.zeros(3, 2))  # zero queries: every weight is 0


def switched_off_layer(heads_off: list[int]) -> CausalSelfAttention:
    """The heads in ``heads_off`` have q = 1 and k = −1 for every token (zero weights, biases
    ±1), so every score of theirs is −d/√d = −√d < 0; the projection has no bias."""
    torch.manual_seed(0)
    layer = CausalSelfAttention(GPTConfig(n_embd=C, n_head=H, attention="rela"))
    with torch.no_grad():
        layer.qkv.bias.zero_()
        layer.proj.bias.zero_()
        for h in heads_off:
            for part, sign in ((0, 1.0), (1, -1.0)):  # q, k
                rows = slice(part * C + h * HS, part * C + (h + 1) * HS)
                layer.qkv.weight[rows] = 0.0
                layer.qkv.bias[rows] = sign
    return layer


def test_a_switched_off_head_gives_zero_rows_and_finite_output_and_gradients():
    layer = switched_off_layer([0])
    x = torch.randn(2, 6, C, generator=torch.Generator().manual_seed(2), requires_grad=True)
    q, k, v = (t.view(2, 6, H, HS).transpose(1, 2) for t in layer.qkv(x).detach().split(C, dim=2))
    scores = q[:, 0] @ k[:, 0].transpose(-2, -1)
    assert (scores < 0).all()
    assert torch.equal(relu_attention(q, k, v)[:, 0], torch.zeros(2, 6, HS))
    seen = {}
    layer.norm.register_forward_hook(lambda m, inputs, out: seen.update(i=inputs[0], o=out))
    y = layer(x)
    # The head's features are exactly 0 before and after the gated RMSNorm; the other head's
    # are not (so the test sees one head off, not the whole layer).
    assert torch.equal(seen["i"][..., :HS], torch.zeros(2, 6, HS))
    assert torch.equal(seen["o"][..., :HS], torch.zeros(2, 6, HS))
    assert (seen["o"][..., HS:] != 0).any()
    (y * torch.randn_like(y)).sum().backward()
    grads = [x.grad] + [p.grad for p in layer.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_every_head_switched_off_gives_zero_output_and_finite_gradients():
    # o = 0 everywhere: 0/√eps·σ(0) = 0, so the output is proj(0) = 0 without a bias; the
    # gradient of the norm at 0 is s·σ(0)/√eps, finite thanks to eps.
    layer = switched_off_layer([0, 1])
    x = torch.randn(1, 5, C, generator=torch.Generator().manual_seed(3), requires_grad=True)
    y = layer(x)
    assert torch.equal(y, torch.zeros_like(y))
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(layer.norm.weight.grad).all()
    assert torch.isfinite(layer.qkv.weight.grad).all()
    # dy/d(v part of qkv) is nonzero only through W, which is 0: v gets no gradient
    assert torch.equal(layer.qkv.weight.grad[2 * C :], torch.zeros(C, C))


def rela_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, attention="rela")
    return GPT(config).eval()


def test_later_tokens_do_not_change_earlier_outputs():
    model = rela_gpt()
    idx = torch.randint(0, 65, (2, 12), generator=torch.Generator().manual_seed(4))
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 65
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    assert torch.equal(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_kv_cache_decoding_equals_recomputation():
    model = rela_gpt()
    idx = torch.randint(0, 65, (2, 14), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full, _ = model(idx)
        caches = model.new_caches(2)
        prefix, _ = model(idx[:, :5], caches=caches, start=0)
        steps = [prefix] + [
            model(idx[:, t : t + 1], caches=caches, start=t)[0] for t in range(5, 14)
        ]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_rela_trains_its_norm_and_softmax_state_dict_is_unchanged():
    keys = {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}
    softmax = CausalSelfAttention(GPTConfig(n_embd=C, n_head=H))
    assert set(softmax.state_dict()) == keys
    rela = CausalSelfAttention(GPTConfig(n_embd=C, n_head=H, attention="rela"))
    assert set(rela.state_dict()) == keys | {"norm.weight", "norm.gate"}
    assert torch.equal(rela.norm.weight, torch.ones(C))
    model = rela_gpt()
    idx = torch.randint(0, 65, (2, 10), generator=torch.Generator().manual_seed(6))
    _, loss = model(idx, idx)
    loss.backward()
    gate_grad = model.blocks[0].attn.norm.gate.grad
    assert torch.isfinite(loss) and gate_grad is not None and gate_grad.abs().sum() > 0


@pytest.mark.parametrize("kind, hint", [("bogus", "choices: rela, softmax"), ("relu", "'rela'")])
def test_unknown_attention_kind_lists_rela(kind, hint):
    with pytest.raises(UserError, match="unknown GPT attention") as error:
        GPTConfig(attention=kind)
    assert hint in str(error.value) and "\n" not in str(error.value)
