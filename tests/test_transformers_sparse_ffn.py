"""Sparse FFN decoding: every exact path equals the dense FFN (a float64 formula) to 1e-5."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

import relulab
from relulab.errors import UserError
from relulab.transformers import sparse_ffn
from relulab.transformers.ffn_speed import (
    PATHS,
    SUMMARY_HEADERS,
    ffn_speed,
    summary_rows,
    weights_read,
)
from relulab.transformers.sparse_ffn import (
    EXACT_MODES,
    LowRankPredictor,
    SparseFFN,
    fit_predictor,
    indexed_rows_times,
    predictor_quality,
    weighted_rows,
)

D, HIDDEN = 48, 160


class StandInFFN(nn.Module):
    """The interface of gpt.FeedForward (up, gate, act, down), built here independently."""

    def __init__(self, d: int, hidden: int, act: str, gated: bool, bias: bool) -> None:
        super().__init__()
        self.up = nn.Linear(d, hidden, bias=bias)
        self.gate = nn.Linear(d, hidden, bias=bias) if gated else None
        self.act = relulab.get_activation(act)
        self.down = nn.Linear(hidden, d, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is None:
            return self.down(self.act(self.up(x)))
        return self.down(self.act(self.gate(x)) * self.up(x))


def ffn(act="relu", gated=False, bias=True, seed=0) -> StandInFFN:
    torch.manual_seed(seed)
    return StandInFFN(D, HIDDEN, act, gated, bias)


def reference(module: StandInFFN, x: torch.Tensor, keep: torch.Tensor | None = None):
    """The FFN in float64, written out: W_down·h + b_down, h = act(W_up·x + b_up) (gated:
    act(W_gate·x + b_gate)·(W_up·x + b_up)); ``keep`` zeroes the neurons it leaves out."""

    def affine(linear: nn.Linear, v: torch.Tensor) -> torch.Tensor:
        out = v.double() @ linear.weight.double().T
        return out if linear.bias is None else out + linear.bias.double()

    first = module.gate if module.gate is not None else module.up
    h = module.act.reference(affine(first, x))  # the activation's own formula, not its kernel
    if module.gate is not None:
        h = h * affine(module.up, x)
    if keep is not None:
        h = h * keep
    return affine(module.down, h)


def set_active(module: StandInFFN, x: torch.Tensor, active: torch.Tensor) -> None:
    """Set the first projection's bias so that exactly ``active`` neurons are positive at x."""
    first = module.gate if module.gate is not None else module.up
    with torch.no_grad():
        pre = x.double() @ first.weight.double().T
        margin = 0.5 + torch.rand(HIDDEN, dtype=torch.float64)
        first.bias.copy_(torch.where(active, margin, -margin) - pre)


def random_active(share: float, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    active = torch.zeros(HIDDEN, dtype=torch.bool)
    active[torch.randperm(HIDDEN, generator=generator)[: round(share * HIDDEN)]] = True
    return active


def sparse_input(zeros: float, seed: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(D, generator=generator).abs()
    x[torch.randperm(D, generator=generator)[: round(zeros * D)]] = 0
    return x


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual.double(), expected, rtol=0, atol=1e-5)


EXACT = EXACT_MODES


@pytest.mark.parametrize("mode", EXACT)
@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
@pytest.mark.parametrize("share", [0.0, 1 / HIDDEN, 0.1, 0.5, 1.0])
def test_exact_paths_equal_dense_at_controlled_sparsity(mode, gated, share):
    module = ffn(gated=gated)
    x = sparse_input(0.6)
    set_active(module, x, random_active(share))
    sparse = SparseFFN.from_feedforward(module, mode=mode)
    for shape in [(D,), (1, D), (1, 1, D)]:
        y = sparse(x.reshape(shape))
        assert y.shape == shape
        close(y.reshape(D), reference(module, x))


@pytest.mark.parametrize("mode", EXACT)
@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("act", ["relu", "shifted_relu", "squared_relu", "gelu"])
def test_exact_paths_equal_dense_for_each_activation(mode, gated, bias, act):
    module = ffn(act=act, gated=gated, bias=bias)
    sparse = SparseFFN.from_feedforward(module, mode=mode)
    for zeros in (0.0, 0.5, 1.0):  # a dense input, a half-sparse one, all zeros
        x = sparse_input(zeros)
        close(sparse(x), reference(module, x))


@pytest.mark.parametrize("mode", EXACT)
def test_zero_rows_are_skipped_exactly(mode):
    """Dead neurons (zero weights and bias) and zero rows of W_down change nothing."""
    module = ffn()
    with torch.no_grad():
        module.up.weight[::3] = 0
        module.up.bias[::3] = 0
        module.down.weight[:, 1::3] = 0
    x = sparse_input(0.3)
    close(SparseFFN.from_feedforward(module, mode=mode)(x), reference(module, x))


@pytest.mark.parametrize("mode", EXACT)
@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_several_tokens_are_exact(mode, gated):
    module = ffn(gated=gated)
    x = torch.randn(2, 5, D).relu()
    y = SparseFFN.from_feedforward(module, mode=mode)(x)
    assert y.shape == (2, 5, D)
    close(y, reference(module, x))


@pytest.mark.parametrize("mode", ["down", "up_down"])
def test_exact_paths_with_two_threads(mode):
    """The rows are summed in one bag per thread: two bags must add up to the same."""
    module = StandInFFN(256, 1024, "relu", gated=False, bias=True)
    x = torch.randn(256).relu()
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        y = SparseFFN.from_feedforward(module, mode=mode)(x)
    finally:
        torch.set_num_threads(previous)
    close(y, reference(module, x))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("count", [0, 1, 7, 300])
def test_weighted_rows_is_the_weighted_sum_of_rows(threads, count):
    generator = torch.Generator().manual_seed(count)
    table = torch.randn(400, 256, generator=generator)
    index = torch.randperm(400, generator=generator)[:count]
    weights = torch.randn(count, generator=generator) / max(1, count) ** 0.5  # sums of O(1)
    bias = torch.randn(256, generator=generator)
    expected = bias.double() + sum(
        (w * table[i].double() for i, w in zip(index.tolist(), weights.double())),
        torch.zeros(256, dtype=torch.float64),
    )
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        close(weighted_rows(table, index, weights, bias), expected)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("copy", [sparse_ffn.COPY, 256, 1])  # one copy; chunks; row by row
@pytest.mark.parametrize("count", [0, 1, 7, 300])
def test_indexed_rows_times_is_the_dot_product_of_each_row(monkeypatch, copy, count):
    monkeypatch.setattr(sparse_ffn, "COPY", copy)
    generator = torch.Generator().manual_seed(count)
    matrix = torch.randn(400, 64, generator=generator) / 8
    index = torch.randperm(400, generator=generator)[:count]
    x, bias = torch.randn(64, generator=generator), torch.randn(400, generator=generator)
    expected = torch.tensor(
        [
            sum(a * b for a, b in zip(matrix[i].tolist(), x.tolist())) + bias[i].item()
            for i in index
        ],
        dtype=torch.float64,
    )
    close(indexed_rows_times(matrix, index, x, bias), expected)


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_predictor_path_computes_exactly_the_predicted_neurons(gated):
    module = ffn(gated=gated)
    torch.manual_seed(3)
    predictor = LowRankPredictor(D, HIDDEN, 8).requires_grad_(False)
    x = sparse_input(0.2)
    for top_k, threshold in [(None, 0.0), (None, 0.3), (17, 0.0), (0, 0.0)]:
        sparse = SparseFFN.from_feedforward(
            module, mode="predictor", predictor=predictor, top_k=top_k, threshold=threshold
        )
        inner = x.double() @ predictor.inner.weight.double().T
        logits = inner @ predictor.outer.weight.double().T + predictor.outer.bias.double()
        if top_k is None:
            keep = (logits > threshold).double()
        else:
            keep = torch.zeros(HIDDEN, dtype=torch.float64)
            keep[logits.argsort(descending=True)[:top_k]] = 1
        close(sparse(x), reference(module, x, keep))
        batch = torch.stack([x, sparse_input(0.5, seed=9)])  # batches zero the same neurons
        close(sparse(batch)[0], reference(module, x, keep))


def test_predictor_that_keeps_every_neuron_is_exact():
    module = ffn(gated=True)
    predictor = LowRankPredictor(D, HIDDEN, 4).requires_grad_(False)
    sparse = SparseFFN.from_feedforward(module, "predictor", predictor=predictor, top_k=HIDDEN)
    x = torch.randn(D)
    close(sparse(x), reference(module, x))


def test_fitted_predictor_finds_the_active_neurons():
    """Active neurons that depend on a few directions of x: a rank-8 predictor finds them;
    its recall is counted here by brute force, and an untrained one does worse."""
    module = ffn()
    generator = torch.Generator().manual_seed(4)
    basis = torch.randn(6, D, generator=generator)
    x = torch.randn(3000, 6, generator=generator) @ basis
    with torch.no_grad():
        module.up.bias.fill_(-0.5)
    train, test = x[:2000], x[2000:]
    predictor = fit_predictor(module, train, rank=8, steps=300, lr=1e-2)
    quality = predictor_quality(predictor, module, test)
    active = (test @ module.up.weight.T + module.up.bias) > 0
    predicted = predictor(test) > 0
    assert quality["recall"] == pytest.approx(
        (active & predicted).sum().item() / active.sum().item()
    )
    assert quality["active_fraction"] == pytest.approx(active.float().mean().item())
    assert quality["recall"] > 0.9 and quality["precision"] > 0.9
    untrained = predictor_quality(LowRankPredictor(D, HIDDEN, 8), module, test)
    assert untrained["recall"] < 0.8
    # fitted on (x, active mask) pairs given directly: the same data, the same predictor
    given = fit_predictor(
        None,
        train,
        active=(train @ module.up.weight.T + module.up.bias) > 0,
        rank=8,
        steps=300,
        lr=1e-2,
    )
    torch.testing.assert_close(given(test), predictor(test))


def test_bad_input_is_a_user_error():
    module = ffn()
    with pytest.raises(UserError, match="unknown sparse FFN mode 'sparse'"):
        SparseFFN.from_feedforward(module, mode="sparse")
    with pytest.raises(UserError, match="needs a predictor"):
        SparseFFN.from_feedforward(module, mode="predictor")
    with pytest.raises(UserError, match=r"predictor is for \(d, hidden\) = \(48, 10\)"):
        SparseFFN.from_feedforward(module, "predictor", predictor=LowRankPredictor(D, 10, 2))
    with pytest.raises(UserError, match=r"not a FeedForward.*'up'"):
        SparseFFN.from_feedforward(nn.Linear(3, 4))
    with pytest.raises(UserError, match=r"sparsities must be in \[0, 1\), got 1.0"):
        ffn_speed(8, 16, sparsities=(1.0,), extra_sizes=())
    with pytest.raises(UserError, match="unknown FFN path 'sparse'"):
        ffn_speed(8, 16, paths=("sparse",), extra_sizes=())


def test_block_can_swap_its_ffn():
    """A SparseFFN in place of a block's ffn, token by token, equals the block's own ffn."""
    block = nn.Module()
    block.ffn = ffn()
    xs = torch.randn(4, D)
    expected = torch.stack([reference(block.ffn, x) for x in xs])
    block.ffn = SparseFFN.from_feedforward(block.ffn, "down")
    close(torch.stack([block.ffn(x.view(1, 1, D)).view(D) for x in xs]), expected)
    assert "mode='down'" in repr(block.ffn)


def test_weights_read_gives_the_issue_bounds():
    d, hidden = 1024, 4096
    dense = weights_read("dense", d, hidden, 0.9, 0.0, 64, gated=False)
    assert dense == 2 * d * hidden
    assert dense / weights_read("down", d, hidden, 0.9, 0.0, 64, False) == pytest.approx(
        1 / (0.5 + 0.05)
    )
    up_down = weights_read("up_down", d, hidden, 0.9, 0.5, 64, False)
    assert up_down == pytest.approx(0.5 * d * hidden + 0.1 * d * hidden)
    predicted = weights_read("predictor", d, hidden, 0.9, 0.0, 64, False)
    assert predicted == pytest.approx(64 * (d + hidden) + 0.2 * d * hidden)
    gated = weights_read("down", d, hidden, 0.9, 0.0, 64, True)
    assert gated == pytest.approx(d * hidden + 0.2 * d * hidden)


def test_ffn_speed_runs_small_and_fast():
    start = time.perf_counter()
    result = ffn_speed(32, 128, sparsities=(0.5, 0.9), rounds=2, extra_sizes=((16, 64),))
    assert time.perf_counter() - start < 5
    assert [(s["d"], s["hidden"]) for s in result["sizes"]] == [(32, 128), (16, 64)]
    rows = result["sizes"][0]["rows"]
    assert {r["path"] for r in rows} == set(PATHS)
    assert len(rows) == 1 + (len(PATHS) - 1) * 2
    for row in rows:
        if row["path"] == "dense":
            assert row["speedup"] == 1
            continue
        assert row["measured_sparsity"] == pytest.approx(row["sparsity"], abs=1 / 128)
        assert row["speedup_q1"] <= row["speedup"] <= row["speedup_q3"]
        if row["path"] != "predictor":
            assert row["max_abs_error"] < 1e-5
    lines = summary_rows(result)
    assert len(lines) == len(rows) + len(result["sizes"][1]["rows"])
    assert all(len(line) == len(SUMMARY_HEADERS) for line in lines)
    assert lines[1][:4] == ["32x128", rows[1]["path"], "50%", lines[1][3]]
    tokens = SUMMARY_HEADERS.index("tokens/s")
    assert float(lines[1][tokens].replace(",", "")) == pytest.approx(1 / rows[1]["seconds"], abs=1)


@pytest.mark.parametrize("activation", ["relu", "reglu"])
def test_gpt_feedforward_swaps_for_sparse(activation):
    """Against the GPT's own FeedForward, where gpt.py is there (written alongside)."""
    gpt = pytest.importorskip("relulab.transformers.gpt")
    torch.manual_seed(5)
    module = gpt.FeedForward(gpt.GPTConfig(n_embd=32, activation=activation)).eval()
    x = torch.randn(1, 1, 32)
    with torch.no_grad():
        expected = module(x).double()
    for mode in ("down", "up_down"):
        actual = SparseFFN.from_feedforward(module, mode=mode)(x.relu())
        with torch.no_grad():
            close(actual, module(x.relu()).double())
    close(SparseFFN.from_feedforward(module, mode="down")(x), expected)
