"""The small GPT, checked against formulas written out here with torch.nn.functional (float64)
and against full recomputation: shapes, causality, the KV cache, gated FFNs, norms, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relulab.errors import UserError
from relulab.transformers import gpt
from relulab.transformers.gpt import GPT, FeedForward, GPTConfig, KVCache

TINY = {"vocab_size": 11, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16}


def _model(**changes) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **changes})).double().eval()


def _tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(
        TINY["vocab_size"], (batch, length), generator=torch.Generator().manual_seed(seed)
    )


def _reference_attention(q, k, v):
    """Causal softmax attention, written out; queries are the last positions of k."""
    t_query, t_key = q.shape[-2], k.shape[-2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    query_position = torch.arange(t_key - t_query, t_key)[:, None]
    scores = scores.masked_fill(torch.arange(t_key)[None, :] > query_position, -math.inf)
    return torch.softmax(scores, -1) @ v


def _reference_gpt(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The whole forward pass from the model's weights, with F.* calls (LayerNorm models)."""
    c = model.config
    B, T = idx.shape
    x = model.token_embedding.weight[idx] + model.position_embedding.weight[:T]
    hs = c.n_embd // c.n_head

    def ln(x, m):
        return F.layer_norm(x, (c.n_embd,), m.weight, m.bias, m.eps)

    for block in model.blocks:
        h = F.linear(ln(x, block.norm_attn), block.attn.qkv.weight, block.attn.qkv.bias)
        q, k, v = (t.reshape(B, T, c.n_head, hs).transpose(1, 2) for t in h.split(c.n_embd, 2))
        y = _reference_attention(q, k, v).transpose(1, 2).reshape(B, T, c.n_embd)
        x = x + F.linear(y, block.attn.proj.weight, block.attn.proj.bias)
        f = block.ffn
        h = F.gelu(F.linear(ln(x, block.norm_ffn), f.up.weight, f.up.bias))
        x = x + F.linear(h, f.down.weight, f.down.bias)
    x = ln(x, model.norm_final)
    return x @ model.token_embedding.weight.T


def test_forward_equals_the_transformer_written_out_and_loss_is_cross_entropy():
    model = _model()
    idx, targets = _tokens(3, 12), _tokens(3, 12, seed=2)
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 12, TINY["vocab_size"])
    torch.testing.assert_close(logits, _reference_gpt(model, idx), rtol=0, atol=1e-10)
    nll = -torch.log_softmax(logits, -1).gather(2, targets[..., None]).mean()
    torch.testing.assert_close(loss, nll, rtol=0, atol=1e-12)
    assert model(idx)[1] is None


def test_head_is_tied_to_the_token_embedding():
    model = _model()
    assert model.head.weight is model.token_embedding.weight


@torch.no_grad()
def test_init_is_nanogpts():
    """normal(0, 0.02), residual projections 0.02/√(2·n_layer), zero biases (wide layers so
    that the sample std is within a few percent)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, n_layer=8, n_embd=256, n_head=4))
    block = model.blocks[3]
    assert float(block.attn.qkv.weight.std()) == pytest.approx(0.02, rel=0.02)
    assert float(block.ffn.up.weight.std()) == pytest.approx(0.02, rel=0.02)
    assert float(block.attn.proj.weight.std()) == pytest.approx(0.02 / 4, rel=0.02)
    assert float(block.ffn.down.weight.std()) == pytest.approx(0.02 / 4, rel=0.02)
    assert float(model.position_embedding.weight.std()) == pytest.approx(0.02, rel=0.05)
    assert not block.ffn.up.bias.any()


def test_init_does_not_depend_on_activations_that_draw_parameters():
    torch.manual_seed(0)
    plain = GPT(GPTConfig(**TINY, activation="relu"))
    torch.manual_seed(0)
    drawing = GPT(GPTConfig(**TINY, activation="smartmixed"))  # draws its logits at init
    torch.testing.assert_close(plain.blocks[1].ffn.up.weight, drawing.blocks[1].ffn.up.weight)
    torch.testing.assert_close(plain.token_embedding.weight, drawing.token_embedding.weight)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm", "none"])
def test_later_tokens_do_not_change_earlier_logits(norm):
    model = _model(norm=norm)
    idx = _tokens(2, 14)
    changed = idx.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % TINY["vocab_size"]
    before, after = model(idx)[0], model(changed)[0]
    torch.testing.assert_close(after[:, :9], before[:, :9], rtol=0, atol=0)
    assert (after[:, 9:] - before[:, 9:]).abs().amax() > 1e-3  # the later ones do change


@pytest.mark.parametrize(
    ("activation", "norm"),
    [("gelu", "layernorm"), ("relu", "rmsnorm"), ("swiglu", "none"), ("squared_relu", "layernorm")],
)
def test_kv_cache_decoding_equals_full_recomputation(activation, norm):
    model = GPT(GPTConfig(**TINY, activation=activation, norm=norm)).eval()  # float32
    idx = _tokens(3, TINY["block_size"])
    full = model(idx)[0]
    caches = model.new_caches(3)
    steps = [model(idx[:, :5], caches=caches, start=0)[0]]  # a prompt, then one at a time
    for t in range(5, idx.shape[1]):
        steps.append(model(idx[:, t : t + 1], caches=caches, start=t)[0])
    assert len(caches[0]) == TINY["block_size"]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=0, atol=1e-5)


def test_softmax_attention_with_shorter_queries_masks_from_the_last_positions():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 9, 8), torch.randn(2, 3, 9, 8)
    for query in (q, q[:, :, -1:], k.clone()):
        got = gpt.softmax_attention(query, k, v, True)
        torch.testing.assert_close(got, _reference_attention(query, k, v), atol=1e-6, rtol=0)


def test_attention_is_looked_up_in_the_attentions_seam(monkeypatch):
    calls = []

    def recording(q, k, v, causal):
        calls.append((q.shape, causal))
        return gpt.softmax_attention(q, k, v, causal)

    monkeypatch.setitem(gpt.ATTENTIONS, "recording", recording)
    model = _model(attention="recording")
    torch.testing.assert_close(model(_tokens(2, 5))[0], _reference_gpt(model, _tokens(2, 5)))
    assert calls == [((2, 2, 5, 8), True)] * TINY["n_layer"]


@pytest.mark.parametrize(
    ("kind", "act"), [("swiglu", F.silu), ("geglu", F.gelu), ("reglu", F.relu)]
)
def test_gated_ffn_is_down_of_act_gate_times_up(kind, act):
    config = GPTConfig(**{**TINY, "n_embd": 24}, activation=kind)
    assert config.ffn_hidden == 64  # 8/3 · 24 = 64
    torch.manual_seed(0)
    ffn = FeedForward(config).double()
    x = torch.randn(2, 5, 24, dtype=torch.float64)
    gate = act(x @ ffn.gate.weight.T + ffn.gate.bias)
    expected = (gate * (x @ ffn.up.weight.T + ffn.up.bias)) @ ffn.down.weight.T + ffn.down.bias
    torch.testing.assert_close(ffn(x), expected, rtol=0, atol=1e-12)


def test_plain_ffn_is_down_of_act_up_and_has_no_gate():
    torch.manual_seed(0)
    ffn = FeedForward(GPTConfig(**TINY, activation="relu")).double()
    assert ffn.gate is None and ffn.up.out_features == 4 * TINY["n_embd"]
    x = torch.randn(3, 4, TINY["n_embd"], dtype=torch.float64)
    expected = F.relu(x @ ffn.up.weight.T + ffn.up.bias) @ ffn.down.weight.T + ffn.down.bias
    torch.testing.assert_close(ffn(x), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("n_embd", "hidden"), [(128, 344), (64, 176), (48, 128)])
def test_gated_hidden_default_is_8_thirds_rounded_up_to_8(n_embd, hidden):
    # by hand: 8/3·128 = 341.3 → 344; 8/3·64 = 170.7 → 176; 8/3·48 = 128
    assert GPTConfig(n_embd=n_embd, activation="swiglu").ffn_hidden == hidden
    assert GPTConfig(n_embd=n_embd, hidden=100, activation="reglu").ffn_hidden == 100


def test_per_channel_activations_see_hidden_units_on_dim_1():
    """PReLU with one slope per hidden unit: unit j's negative inputs are scaled by slope j."""
    model = _model(activation="prelu(num_parameters=64)")
    ffn = model.blocks[0].ffn
    with torch.no_grad():
        ffn.act.weight.copy_(torch.linspace(-1, 1, 64))
    x = torch.randn(2, 3, TINY["n_embd"], dtype=torch.float64)
    h = x @ ffn.up.weight.T + ffn.up.bias
    h = torch.where(h > 0, h, h * ffn.act.weight.double())
    torch.testing.assert_close(ffn(x), h @ ffn.down.weight.T + ffn.down.bias)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm", "none"])
def test_norm_kinds_compute_their_formula(norm):
    block = _model(norm=norm).blocks[0]
    with torch.no_grad():
        for module in (block.norm_attn, block.norm_ffn):
            if hasattr(module, "weight"):
                module.weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 5, TINY["n_embd"], dtype=torch.float64) * 3 + 1
    got = block.norm_attn(x)
    if norm == "none":
        assert isinstance(block.norm_attn, nn.Identity)
        torch.testing.assert_close(got, x, rtol=0, atol=0)
        return
    weight = block.norm_attn.weight
    if norm == "layernorm":
        centred = x - x.mean(-1, keepdim=True)
        expected = centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + 1e-5) * weight
        expected = expected + block.norm_attn.bias
    else:
        eps = torch.finfo(torch.float64).eps  # nn.RMSNorm's default for eps=None
        expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_generate_with_and_without_cache_sample_the_same_tokens():
    model = _model()
    prompt = _tokens(2, 3)
    draws = [
        model.generate(prompt, 13, top_k=4, use_cache=c, generator=torch.Generator().manual_seed(5))
        for c in (True, False)
    ]
    assert draws[0].shape == (2, 16) and torch.equal(draws[0][:, :3], prompt)
    assert torch.equal(draws[0], draws[1])


def test_greedy_generation_takes_the_argmax_of_the_full_forward():
    model = _model()
    out = model.generate(_tokens(1, 2), 6, top_k=1)
    for t in range(2, 8):
        assert out[0, t] == model(out[:, :t])[0][0, -1].argmax()


def test_generation_continues_past_block_size():
    model = _model()
    out = model.generate(_tokens(2, 10), 30, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 40) and int(out.max()) < TINY["vocab_size"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"n_embd": 30, "n_head": 4},
            "n_embd 30 is not divisible by n_head 4; nearest valid n_head: 3",
        ),
        ({"activation": "rleu"}, "unknown activation 'rleu'; did you mean 'relu'"),
        ({"activation": "swiglue"}, "unknown activation 'swiglue'; did you mean 'swiglu'"),
        ({"norm": "rmsnrom"}, "unknown GPT norm 'rmsnrom'; did you mean 'rmsnorm'"),
        ({"attention": "sofmax"}, "unknown GPT attention 'sofmax'; did you mean 'softmax'"),
        ({"n_layer": 0}, "GPT n_layer must be a positive integer, got 0"),
        ({"dropout": 1.0}, "GPT dropout must be in [0, 1), got 1.0"),
    ],
)
def test_bad_config_is_a_one_line_user_error(changes, message):
    with pytest.raises(UserError) as caught:
        GPTConfig(**{**TINY, **changes})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_sequence_longer_than_block_size_is_a_user_error():
    model = _model()
    with pytest.raises(
        UserError, match="sequence of 17 tokens is longer than the model's block_size 16"
    ):
        model(_tokens(1, 17))
    caches = model.new_caches(1)
    model(_tokens(1, 16), caches=caches)
    with pytest.raises(UserError, match="17 tokens"):
        model(_tokens(1, 1), caches=caches, start=16)


def test_kv_cache_appends_along_time():
    cache = KVCache()
    k1, k2 = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 1, 4)
    cache.append(k1, k1)
    k, v = cache.append(k2, k2)
    assert len(cache) == 4 and torch.equal(k, torch.cat([k1, k2], 2)) and torch.equal(v, k)
