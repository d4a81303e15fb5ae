"""Decoding with sparse FFNs: the exact modes generate dense's greedy tokens (against a full
recomputation without a cache), the model is restored, and the predictor's recall and
validation loss match a computation by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from relulab.errors import UserError
from relulab.transformers import GPT, GPTConfig, relufy
from relulab.transformers.decode import decode_speed, predictor_effect, sparse_ffns
from relulab.transformers.sparse_ffn import SparseFFN


def tiny_model(stage: int = 2, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=65,
                          activation="gelu"))  # fmt: skip
    relufy(model, stage=stage)  # stage 2: the FFN inputs are sparse too, for up_down
    return model.eval()


@torch.no_grad()
def greedy_by_recomputation(model: GPT, prompt: torch.Tensor, tokens: int) -> list[int]:
    """Greedy tokens, each from the whole sequence again (no cache), dense FFNs."""
    idx = prompt.view(1, -1)
    for _ in range(tokens):
        logits, _ = model(idx)
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx[0, prompt.numel() :].tolist()


@pytest.mark.parametrize("stage", [1, 2])
def test_exact_modes_generate_the_tokens_of_dense_recomputation(stage):
    model = tiny_model(stage)
    prompt = torch.randint(0, 65, (6,), generator=torch.Generator().manual_seed(1))
    expected = greedy_by_recomputation(model, prompt, 12)
    ffns = [block.ffn for block in model.blocks]
    result = decode_speed(model, prompt, 12, modes=("down", "up_down"), rounds=1, threads=1)
    assert result["generated"] == expected
    assert result["same_tokens"] == {"dense": True, "down": True, "up_down": True}
    assert [block.ffn for block in model.blocks] == ffns  # restored
    assert not model.training
    for mode in ("down", "up_down"):
        with sparse_ffns(model, mode):
            assert all(isinstance(b.ffn, SparseFFN) for b in model.blocks)
            assert greedy_by_recomputation(model, prompt, 12) == expected
    assert [block.ffn for block in model.blocks] == ffns


def test_an_exact_mode_that_strays_is_caught(monkeypatch):
    model = tiny_model()
    exact = SparseFFN.forward

    def off(self, x):  # a broken "down" path: a large error on every single token
        y = exact(self, x)
        return y + 10.0 * torch.randn_like(y) if self.mode == "down" else y

    monkeypatch.setattr(SparseFFN, "forward", off)
    ffns = [block.ffn for block in model.blocks]
    with pytest.raises(RuntimeError, match="down"):
        decode_speed(model, torch.arange(4), 10, modes=("down",), rounds=1, threads=1)
    assert [block.ffn for block in model.blocks] == ffns


@torch.no_grad()
def by_hand(model: GPT, predictors, window: torch.Tensor, targets: torch.Tensor, top_k: int):
    """Per layer (recall, active count), and the loss with and without the predicted neurons
    only, in float64 from the weights."""
    inputs, masks, recalls = {}, {}, []  # per layer

    def record(i):
        def hook(module, args, output):
            inputs[i] = output.reshape(-1, output.shape[-1]).double()

        return hook

    def masked(i):
        def hook(module, args, output):
            x = args[0].double()
            pre = x @ module.up.weight.double().T + module.up.bias.double()
            h = torch.relu(pre) * masks[i]
            return (h @ module.down.weight.double().T + module.down.bias.double()).float()

        return hook

    handles = [b.norm_ffn.register_forward_hook(record(i)) for i, b in enumerate(model.blocks)]
    logits, _ = model(window.view(1, -1))
    dense_loss = F.cross_entropy(logits[0].double(), targets).item()
    for h in handles:
        h.remove()
    for i, (block, p) in enumerate(zip(model.blocks, predictors, strict=True)):
        x = inputs[i]
        pre = x @ block.ffn.up.weight.double().T + block.ffn.up.bias.double()
        active = pre > 0
        scores = x @ p.inner.weight.double().T @ p.outer.weight.double().T + p.outer.bias.double()
        predicted = torch.zeros_like(active)
        for row, order in enumerate(scores.argsort(dim=1, descending=True)):
            predicted[row, order[:top_k]] = True
        recalls.append((active & predicted).sum().item() / active.sum().item())
    # With predicted neurons only, each layer's mask comes from its own (changed) inputs.
    handles = []
    for i, (block, p) in enumerate(zip(model.blocks, predictors, strict=True)):

        def choose(module, args, i=i, p=p):
            x = args[0].reshape(-1, args[0].shape[-1]).double()
            scores = x @ p.inner.weight.double().T @ p.outer.weight.double().T
            scores = scores + p.outer.bias.double()
            mask = torch.zeros_like(scores)
            for row, order in enumerate(scores.argsort(dim=1, descending=True)):
                mask[row, order[:top_k]] = 1.0
            masks[i] = mask.view((*args[0].shape[:-1], -1))

        handles.append(block.ffn.register_forward_pre_hook(choose))
        handles.append(block.ffn.register_forward_hook(masked(i)))
    logits, _ = model(window.view(1, -1))
    for h in handles:
        h.remove()
    predictor_loss = F.cross_entropy(logits[0].double(), targets).item()
    return recalls, dense_loss, predictor_loss


def test_predictor_recall_and_loss_change_match_a_computation_by_hand():
    model = tiny_model(stage=1)
    block = model.config.block_size
    ids = torch.randint(0, 65, (400,), generator=torch.Generator().manual_seed(2))
    # Validation text of block + 1 tokens: every window is the one window.
    val = ids[-(block + 1) :]
    top_k = 40
    effect = predictor_effect(model, ids[:300], val, rank=4, top_k=top_k, steps=20,
                              fit_windows=8, eval_windows=3)  # fmt: skip
    recalls, dense, predicted = by_hand(model, effect.predictors, val[:-1], val[1:], top_k)
    assert [layer["recall"] for layer in effect.layers] == pytest.approx(recalls, abs=1e-9)
    assert all(layer["predicted_fraction"] == pytest.approx(top_k / 128) for layer in effect.layers)
    assert effect.val_loss_dense == pytest.approx(dense, abs=1e-5)
    assert effect.val_loss_predictor == pytest.approx(predicted, abs=1e-5)
    assert not math.isclose(dense, predicted, abs_tol=1e-4)  # the check sees a change
    report = effect.to_dict()
    assert report["val_loss_change"] == pytest.approx(predicted - dense, abs=2e-5)
    assert "predictors" not in report and report["top_k"] == top_k


def test_predictor_mode_decodes_with_the_fitted_predictors():
    model = tiny_model()
    ids = torch.randint(0, 65, (300,), generator=torch.Generator().manual_seed(3))
    # Every neuron chosen: the predictor path is then exact, whatever the predictor says.
    effect = predictor_effect(model, ids, ids, rank=4, top_k=128, steps=5, fit_windows=4,
                              eval_windows=2)  # fmt: skip
    assert all(layer["recall"] == 1.0 for layer in effect.layers)
    assert effect.val_loss_predictor == pytest.approx(effect.val_loss_dense, abs=1e-5)
    prompt = ids[:5]
    result = decode_speed(model, prompt, 8, predictors=effect.predictors, top_k=128,
                          rounds=1, threads=1)  # fmt: skip
    assert result["generated"] == greedy_by_recomputation(model, prompt, 8)
    assert result["same_tokens"]["predictor"]
    assert set(result["modes"]) == {"dense", "down", "up_down", "predictor"}
    assert all(row["tokens_per_second"] > 0 for row in result["modes"].values())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: decode_speed(m, torch.arange(4), 4, modes=("dwon",)), "unknown sparse FFN"),
        (lambda m: decode_speed(m, torch.arange(30), 4), "block_size 32"),
        (lambda m: decode_speed(m, torch.arange(4), 0), "must be >= 1"),
        (lambda m: decode_speed(m, torch.arange(4), 4, modes=("predictor",)), "one predictor"),
        (lambda m: predictor_effect(m, torch.arange(99), torch.arange(99), 4), "exactly one"),
        (
            lambda m: predictor_effect(m, torch.arange(99), torch.arange(99), 4, top_k=999),
            "top_k must be in",
        ),
    ],
)
def test_bad_input_is_one_line(call, message):
    with pytest.raises(UserError, match=message) as caught:
        call(tiny_model())
    assert "\n" not in str(caught.value)
