"""The speed benchmark on a tiny net: it runs, reports consistent numbers, and its grid probe
(plain forward hooks on every ReLU) finds no pattern that the exact partition lacks."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from relulab.geometry.benchmark import benchmark, grid_patterns, mlp, pack


def test_benchmark_runs_and_probe_patterns_are_a_subset_of_the_partition():
    lines = []
    result = benchmark(
        progress=lines.append,
        depth=2,
        width=6,
        grid=96,
        repeats=1,
        others=((1, 4),),
        batch=1000,
        keep_patterns=True,
        cnn_channels=1,
    )
    probe = {tuple(row) for row in result["probe_codes"].tolist()}
    exact = {tuple(row) for row in result["partition_codes"].tolist()}
    assert probe <= exact
    assert result["probe_patterns"] == len(probe) > 1
    assert result["regions"] == len(exact)  # one pattern per region for a plain ReLU MLP
    assert result["ratio"] == result["probe_s"] / result["partition_s"]
    other, cnn = result["others"]
    assert (other["net"], other["depth"], other["width"]) == ("1x4 MLP", 1, 4)
    assert cnn["net"].startswith("residual CNN (1 ch)") and cnn["regions"] > 1
    for entry in (other, cnn):
        assert entry["regions_per_s"] == entry["regions"] / entry["partition_s"]
    # one progress line per net, and the conditions the times were taken under
    assert [line.split(":")[0] for line in lines] == ["2x6 MLP", "1x4 MLP", cnn["net"]]
    assert f"{cnn['regions']:,} regions" in lines[-1]
    assert result["torch_threads"] == torch.get_num_threads()
    assert result["load_average_1min"] >= 0


def test_grid_patterns_match_a_numpy_forward_pass():
    model = mlp(2, 5, seed=3)
    found = grid_patterns(model, -2.0, 2.0, 40, batch=333)
    axis = np.linspace(-2.0, 2.0, 40)
    x = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    bits = []
    for layer in [m for m in model if isinstance(m, nn.Linear)][:-1]:
        x = x @ layer.weight.detach().numpy().T + layer.bias.detach().numpy()
        bits.append(x > 0)
        x = np.maximum(x, 0.0)
    expected = {sum(1 << i for i, b in enumerate(row) if b) for row in np.hstack(bits)}
    assert found.shape[1] == 1  # 10 units fit one word
    assert {w & (2**64 - 1) for w in found[:, 0].tolist()} == expected
    assert len(found) == len(expected)
    assert pack(torch.tensor([[1, 0, 1]])).tolist() == [[5]]
