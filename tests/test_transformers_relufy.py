"""Relufication changes exactly the intended modules, and they compute what the paper says.

References are independent of relufy: formulas evaluated in float64 from the weights, and the
same architecture built with a ReLU activation from its own config (relulab's GPT, and
Hugging Face's GPT-2 and Llama) and given the same weights.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from relulab.errors import UserError
from relulab.transformers import GPT, GPTConfig
from relulab.transformers.gpt import FeedForward
from relulab.transformers.relufy import relufy, relufy_plan


def our_gpt(activation: str = "gelu", norm: str = "layernorm") -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16, activation=activation,
        norm=norm,
    )  # fmt: skip
    return GPT(config).double()


def gpt2(activation: str = "gelu_new") -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=2, vocab_size=100, n_positions=32,
        bos_token_id=0, eos_token_id=0, activation_function=activation,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config).double().eval()


def llama(activation: str = "silu") -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
        hidden_act=activation, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).double().eval()


BUILDERS = {"gpt": our_gpt, "gpt_swiglu": lambda: our_gpt("swiglu"), "gpt2": gpt2, "llama": llama}

# Hand-listed: stage 1 touches the FFN activations, stage 2 also the two norms per block,
# never the final norm (norm_final, transformer.ln_f, model.norm).
STAGE1 = {
    "gpt": {"blocks.0.ffn.act", "blocks.1.ffn.act"},
    "gpt_swiglu": {"blocks.0.ffn.act", "blocks.1.ffn.act"},
    "gpt2": {"transformer.h.0.mlp.act", "transformer.h.1.mlp.act"},
    "llama": {"model.layers.0.mlp.act_fn", "model.layers.1.mlp.act_fn"},
}
NORMS = {
    "gpt": {f"blocks.{i}.{n}" for i in (0, 1) for n in ("norm_attn", "norm_ffn")},
    "gpt2": {f"transformer.h.{i}.{n}" for i in (0, 1) for n in ("ln_1", "ln_2")},
    "llama": {
        f"model.layers.{i}.{n}"
        for i in (0, 1)
        for n in ("input_layernorm", "post_attention_layernorm")
    },
}
NORMS["gpt_swiglu"] = NORMS["gpt"]


def module_ids(model: nn.Module) -> dict[str, int]:
    return {name: id(m) for name, m in model.named_modules()}


@pytest.mark.parametrize("arch", sorted(BUILDERS))
@pytest.mark.parametrize("stage", [1, 2])
def test_changes_exactly_the_intended_modules(arch, stage):
    model = BUILDERS[arch]()
    before, params = module_ids(model), dict(model.named_parameters())
    expected = STAGE1[arch] | (NORMS[arch] if stage == 2 else set())

    assert {c.path for c in relufy_plan(model, stage)} == expected
    assert module_ids(model) == before  # the plan changes nothing
    changed = relufy(model, stage)

    assert len(changed) == len(set(changed)) and set(changed) == expected
    after = module_ids(model)
    assert {n for n in before if after.get(n) != before[n]} == expected
    # A stage-2 norm is the old norm object followed by a ReLU; nothing else is new.
    wrapped = NORMS[arch] if stage == 2 else set()
    assert set(after) - set(before) == {f"{p}.{i}" for p in wrapped for i in (0, 1)}
    for path in wrapped:
        assert after[f"{path}.0"] == before[path]
    # Every weight is the same tensor, under its old name (an ".0" inserted for the norms).
    renamed = {}
    for name, p in model.named_parameters():
        for path in wrapped:
            name = name.replace(f"{path}.0.", f"{path}.")
        renamed[name] = p
    assert renamed.keys() == params.keys()
    assert all(renamed[n] is params[n] for n in params)


def linear(x, w, b=None):
    """x Wᵀ + b in float64 (nn.Linear's layout)."""
    return x @ w.T + (0 if b is None else b)


def test_our_ffn_stage1_is_down_relu_up():
    model = our_gpt()
    relufy(model, 1)
    ffn = model.blocks[1].ffn
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    h = torch.clamp(linear(x, ffn.up.weight, ffn.up.bias), min=0)
    expected = linear(h, ffn.down.weight, ffn.down.bias)
    torch.testing.assert_close(ffn(x), expected, rtol=1e-12, atol=1e-12)


def test_our_gated_ffn_becomes_reglu_with_shift():
    model = our_gpt("swiglu")
    relufy(model, 1, shift=0.25)
    ffn = model.blocks[0].ffn
    x = torch.randn(4, 16, dtype=torch.float64)
    gate = torch.clamp(linear(x, ffn.gate.weight, ffn.gate.bias) - 0.25, min=0)
    expected = linear(gate * linear(x, ffn.up.weight, ffn.up.bias), ffn.down.weight, ffn.down.bias)
    torch.testing.assert_close(ffn(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_our_gpt_stage1_equals_a_gpt_built_with_relu(shift):
    model = our_gpt()
    reference = our_gpt("relu" if shift == 0 else f"shifted_relu(shift={shift})")
    reference.load_state_dict(model.state_dict())
    idx = torch.randint(0, 50, (2, 16))
    assert not torch.allclose(model(idx)[0], reference(idx)[0])
    relufy(model, 1, shift)
    torch.testing.assert_close(model(idx)[0], reference(idx)[0], rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_hf_stage1_equals_the_model_built_with_relu(arch):
    model = BUILDERS[arch]()
    reference = gpt2("relu") if arch == "gpt2" else llama("relu")
    reference.load_state_dict(model.state_dict())
    idx = torch.randint(0, 100, (2, 12))
    relufy(model, 1)
    torch.testing.assert_close(model(idx).logits, reference(idx).logits, rtol=0, atol=0)


def test_gpt2_ffn_with_shift_by_hand():
    model = gpt2()
    relufy(model, 1, shift=0.5)
    mlp = model.transformer.h[0].mlp  # Conv1D: x W + b, W of shape (in, out)
    x = torch.randn(2, 3, 64, dtype=torch.float64)
    h = torch.clamp(x @ mlp.c_fc.weight + mlp.c_fc.bias - 0.5, min=0)
    torch.testing.assert_close(mlp(x), h @ mlp.c_proj.weight + mlp.c_proj.bias)


def test_llama_ffn_becomes_reglu_by_hand():
    model = llama()
    relufy(model, 1)
    mlp = model.model.layers[1].mlp
    x = torch.randn(2, 3, 32, dtype=torch.float64)
    gate = torch.clamp(linear(x, mlp.gate_proj.weight), min=0)
    expected = linear(gate * linear(x, mlp.up_proj.weight), mlp.down_proj.weight)
    torch.testing.assert_close(mlp(x), expected)


def layer_norm(x, norm):
    centred = x - x.mean(-1, keepdim=True)
    return centred / torch.sqrt(centred.square().mean(-1, keepdim=True) + norm.eps) * (
        norm.weight
    ) + (0 if norm.bias is None else norm.bias)


def test_stage2_norms_are_relu_of_the_norm():
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    model = our_gpt()
    with torch.no_grad():
        model.blocks[0].norm_ffn.weight.normal_()  # not all ones, so the affine part counts
    relufy(model, 2)
    norm = model.blocks[0].norm_ffn
    torch.testing.assert_close(norm(x), torch.clamp(layer_norm(x, norm[0]), min=0))

    mlp_model = llama()
    relufy(mlp_model, 2)
    rms = mlp_model.model.layers[0].input_layernorm
    x = torch.randn(2, 3, 32, dtype=torch.float64)
    scale = torch.rsqrt(x.square().mean(-1, keepdim=True) + rms[0].variance_epsilon)
    torch.testing.assert_close(rms(x), torch.clamp(x * scale * rms[0].weight, min=0))


def test_stage2_makes_qkv_and_ffn_inputs_nonnegative_and_keeps_the_final_norm():
    model = our_gpt(norm="none")  # Identity norms: the ReLU still goes in after them
    inputs = []
    hooks = [
        m.register_forward_pre_hook(lambda _, args: inputs.append(args[0]))
        for b in model.blocks
        for m in (b.attn.qkv, b.ffn.up)
    ]
    relufy(model, 2)
    model(torch.randint(0, 50, (2, 16)))
    for hook in hooks:
        hook.remove()
    assert len(inputs) == 4 and all((x >= 0).all() and (x == 0).any() for x in inputs)
    assert isinstance(model.norm_final, nn.Identity)


def test_relufying_twice_is_relufying_once():
    model = gpt2()
    first = relufy(model, 2, shift=0.5)
    ids, idx = module_ids(model), torch.randint(0, 100, (1, 8))
    logits = model(idx).logits
    assert relufy(model, 2, shift=0.5) == [] and relufy_plan(model, 2, 0.5) == []
    assert module_ids(model) == ids
    torch.testing.assert_close(model(idx).logits, logits, rtol=0, atol=0)
    assert len(first) == 6
    # Stage 2 after stage 1 adds only the norms; a new shift replaces the activations again.
    model = llama()
    relufy(model, 1)
    assert set(relufy(model, 2)) == NORMS["llama"]
    assert set(relufy(model, 2, shift=0.5)) == STAGE1["llama"]


def test_a_model_that_already_uses_relu_has_nothing_to_change_in_stage1():
    assert relufy(our_gpt("relu"), 1) == []
    assert relufy(our_gpt("reglu"), 1) == []
    assert relufy(gpt2("relu"), 1) == []


def test_unknown_architectures_error_in_one_line_naming_the_class():
    plain = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 4))
    with pytest.raises(UserError, match=r"^found no feed-forward block in Sequential \(") as err:
        relufy(plain)
    assert "\n" not in str(err.value) and "c_fc/act/c_proj" in str(err.value)
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32,
    )  # fmt: skip
    bert = transformers.BertModel(config)
    with pytest.raises(UserError, match="in BertModel"):
        relufy(bert, 1)


def test_stage2_needs_blocks_and_leaves_the_model_alone_if_none():
    ffn = FeedForward(GPTConfig(n_embd=16, activation="gelu"))
    act = ffn.act
    with pytest.raises(UserError, match=r"^found no transformer block with its norms in "):
        relufy(ffn, 2)
    assert ffn.act is act
    assert relufy(ffn, 1) == ["act"]


@pytest.mark.parametrize(
    ("stage", "shift", "message"),
    [
        (3, 0.0, "stage must be 1 or 2, got 3"),
        (True, 0.0, "stage must be 1 or 2, got True"),
        (1, -0.5, r"shift must be finite and >= 0 .*got -0.5"),
        (1, float("nan"), "shift must be finite"),
        (1, "big", "shift must be a number, got 'big'"),
    ],
)
def test_bad_stage_or_shift(stage, shift, message):
    with pytest.raises(UserError, match=message):
        relufy(our_gpt(), stage, shift)


def test_relu_units_are_relulabs_and_gradients_flow():
    model = our_gpt()
    relufy(model, 2, shift=0.1)
    assert model.blocks[0].ffn.act.spec == "shifted_relu(shift=0.1)"
    idx = torch.randint(0, 50, (2, 16))
    _, loss = model(idx, targets=idx)
    loss.backward()
    assert model.blocks[0].ffn.up.weight.grad.abs().sum() > 0
