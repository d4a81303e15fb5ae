"""``relulab speed --ffn``'s measurement: one token through a dense FFN and each sparse path.

Batch 1, at controlled sparsities: for each token the active neurons are drawn uniformly at
random, exactly (1 − s)·hidden of them, and so are the nonzero inputs of ``"up_down"``. (The
up bias of each token is set so that precisely the drawn neurons come out positive.) Calls
go round-robin (:func:`relulab.speed.round_robin`), and each path's speed-up over dense is
taken within each round: median and quartiles over rounds.

Each call takes the next of ``layers × pool`` tokens, through the next layer's weights, as
decoding does: a path that read the same rows call after call would find them in the CPU's
cache (32 MB of L3 holds the active rows of a d = 1024 FFN many times over), and time a
cache instead of memory. The cycle's dense weights total at least :data:`CYCLE_BYTES`.

Each row's ``bound`` is the memory-bandwidth bound of its speed-up: the weights dense reads
÷ the weights the path reads (see :func:`weights_read`), e.g. 1/(0.5 + 0.5·0.1) = 1.8 for
``"down"`` at 90% sparsity; ``of_bound`` is the measured speed-up ÷ that bound.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from relulab.errors import UserError
from relulab.speed import Timing, round_robin
from relulab.transformers.sparse_ffn import (
    FFNWeights,
    LowRankPredictor,
    dense_hidden,
    dense_step,
    exact_step,
    nonzero_index,
    predicted_step,
)

PATHS: dict[str, str] = {
    "dense": "the FFN as it is (F.linear twice, nn.Linear's layouts)",
    "down": "exact: dense up; embedding_bag over the active neurons' rows of W_down^T",
    "up_down": "exact: embedding_bag over the nonzero inputs' rows of W_up^T, then as down",
    "predictor": "approximate: top-k of a low-rank predictor; those neurons' rows only",
    "down_copy": "exact: dense up; index_select of the active rows of W_down^T, then h @ rows",
    "torch_coo": "exact: dense up; h as a sparse COO (1, hidden) tensor, torch.sparse.mm",
    "torch_csr": "exact: dense up; h as a sparse CSR (1, hidden) tensor @ W_down^T",
}
# The paths that only plain (ungated) FFNs get: they show the alternatives to "down".
PLAIN_ONLY = ("down_copy", "torch_coo", "torch_csr")
# A cycle of layers holds at least this many bytes of dense weights (8× the L3 of the
# machines this was written on), so that no path finds its rows in cache.
CYCLE_BYTES = 256 << 20
MAX_LAYERS = 8
POOL = 8


def weights_read(
    path: str, d: int, hidden: int, sparsity: float, input_sparsity: float, rank: int, gated: bool
) -> float:
    """The weights (numbers, biases aside) a path reads for one token.

    Dense reads d·hidden per projection (2, or 3 gated). ``"down"``: the first projection
    (up, or gate), and (1 − s)·d·hidden of each other; ``"up_down"`` reads (1 − s_in) of the
    first; ``"predictor"``: rank·(d + hidden), then (1 − s) of every projection.
    """
    matrix = d * hidden
    others = 2 if gated else 1  # projections read only for active neurons after the first
    active = (1 - sparsity) * matrix
    if path == "dense":
        return (1 + others) * matrix
    if path in ("down", *PLAIN_ONLY):
        return matrix + others * active
    if path == "up_down":
        return (1 - input_sparsity) * matrix + others * active
    if path == "predictor":
        return rank * (d + hidden) + (1 + others) * active
    raise ValueError(f"unknown path {path!r}")


def _check(sparsities: Iterable[float], input_sparsity: float | None, sizes, threads, rounds):
    for s in [*sparsities, *([] if input_sparsity is None else [input_sparsity])]:
        if not 0 <= s < 1:
            raise UserError(f"sparsities must be in [0, 1), got {s}")
    for d, hidden in sizes:
        if d < 1 or hidden < 1:
            raise UserError(f"FFN sizes must be positive, got d={d}, hidden={hidden}")
    if threads < 1 or rounds < 1:
        raise UserError(f"threads and rounds must be >= 1, got {threads} and {rounds}")


def _token(
    w: FFNWeights, sparsity: float, input_sparsity: float, generator: torch.Generator
) -> tuple[FFNWeights, Tensor]:
    """A token with exactly ``input_sparsity`` zeros, and the weights with the first
    projection's bias set so that exactly (1 − sparsity)·hidden neurons are active, drawn
    uniformly at random."""
    d, hidden = w.up.shape[1], w.up.shape[0]
    x = torch.randn(d, generator=generator).abs()  # positive: what a stage-2 ReLU passes
    x[torch.randperm(d, generator=generator)[: round(input_sparsity * d)]] = 0
    first = w.gate if w.gated else w.up
    active = torch.zeros(hidden, dtype=torch.bool)
    active[torch.randperm(hidden, generator=generator)[: round((1 - sparsity) * hidden)]] = True
    # Pre-activations of ±(0.5 + |N(0, 1)|): far from 0 next to rounding, so every path
    # agrees on which neurons are active.
    margin = 0.5 + torch.randn(hidden, generator=generator).abs()
    bias = torch.where(active, margin, -margin) - torch.mv(first, x)
    return (replace(w, gate_bias=bias) if w.gated else replace(w, up_bias=bias)), x


def _layer(d: int, hidden: int, gated: bool, generator: torch.Generator) -> FFNWeights:
    def matrix(rows: int, columns: int) -> Tensor:
        return torch.randn(rows, columns, generator=generator) / math.sqrt(columns)

    up, down_t = matrix(hidden, d), matrix(hidden, d)
    gate = matrix(hidden, d) if gated else None
    first = gate if gate is not None else up
    return FFNWeights(
        up=up,
        down_t=down_t,
        act=torch.relu,
        up_bias=torch.zeros(hidden),
        down_bias=torch.zeros(d),
        gate=gate,
        gate_bias=torch.zeros(hidden) if gated else None,
        up_t=None if gated else first.t().contiguous(),
        gate_t=first.t().contiguous() if gated else None,
    )


def _path_function(
    path: str, down: Tensor, predictor: LowRankPredictor, top_k: int
) -> Callable[[Tensor, FFNWeights], Tensor]:
    """One token through ``path``; ``down`` is the layer's W_down in nn.Linear's layout."""
    if path == "dense":
        # nn.Linear's own layout for W_down, as the model being sped up holds it
        return lambda x, w: F.linear(dense_hidden(x, w), down, w.down_bias)
    if path == "down":
        return lambda x, w: exact_step(x, w)
    if path == "up_down":
        return lambda x, w: exact_step(x, w, sparse_input=True)
    if path == "predictor":
        return lambda x, w: predicted_step(x, w, predictor.index(x, top_k=top_k))
    if path == "down_copy":

        def down_copy(x: Tensor, w: FFNWeights) -> Tensor:
            h = dense_hidden(x, w)
            index = nonzero_index(h)
            return w.down_bias + h.index_select(0, index) @ w.down_t.index_select(0, index)

        return down_copy
    if path == "torch_coo":
        return lambda x, w: (
            w.down_bias
            + torch.sparse.mm(dense_hidden(x, w).view(1, -1).to_sparse(), w.down_t).view(-1)
        )
    if path == "torch_csr":
        return lambda x, w: (
            w.down_bias + (dense_hidden(x, w).view(1, -1).to_sparse_csr() @ w.down_t).view(-1)
        )
    raise ValueError(f"unknown path {path!r}")


def _cycle(calls: list[Callable[[], Tensor]]) -> Callable[[], Tensor]:
    """A call that makes the next of ``calls`` each time it is called."""
    position = 0

    def call() -> Tensor:
        nonlocal position
        out = calls[position]()
        position = (position + 1) % len(calls)
        return out

    return call


def _one_size(
    d: int,
    hidden: int,
    *,
    sparsities: tuple[float, ...],
    input_sparsity: float | None,
    paths: tuple[str, ...],
    gated: bool,
    rank: int,
    threads: int,
    rounds: int,
    seed: int,
    progress: Callable[[str], None] | None,
) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    layer_bytes = (3 if gated else 2) * d * hidden * 4
    layers = max(1, min(MAX_LAYERS, math.ceil(CYCLE_BYTES / layer_bytes)))
    weights = [_layer(d, hidden, gated, generator) for _ in range(layers)]
    downs = [w.down_t.t().contiguous() for w in weights]  # dense's own layout
    predictors = []
    with torch.random.fork_rng(devices=[]):  # nn.Linear draws from the global generator
        for _ in range(layers):
            torch.manual_seed(int(torch.randint(1 << 30, (), generator=generator)))
            predictors.append(LowRankPredictor(d, hidden, rank).requires_grad_(False))
    calls: dict[tuple[str, float], Callable[[], Tensor]] = {}
    errors: dict[tuple[str, float], float] = {}
    measured: dict[float, tuple[float, float]] = {}
    for s in sparsities:
        s_in = s if input_sparsity is None else input_sparsity
        # Token p of layer l, in the order decoding meets them: every layer, then again.
        tokens = [
            (layer, *_token(weights[layer], s, s_in, generator))
            for _ in range(POOL)
            for layer in range(layers)
        ]
        h = dense_hidden(tokens[0][2], tokens[0][1])
        measured[s] = ((h == 0).float().mean().item(), (tokens[0][2] == 0).float().mean().item())
        top_k = round((1 - s) * hidden)
        for path in paths:
            if path == "dense" and s != sparsities[0]:
                continue  # one dense row: its time does not depend on the sparsity
            key = ("dense", 0.0) if path == "dense" else (path, s)
            steps = [
                partial(_path_function(path, downs[layer], predictors[layer], top_k), x, w)
                for layer, w, x in tokens
            ]
            calls[key] = _cycle(steps)
            if path != "predictor":
                _, w, x = tokens[0]
                errors[key] = (steps[0]() - dense_step(x, w)).abs().max().item()
    timings = round_robin(
        calls,
        {"to_dense": ("dense", 0.0)},
        rounds=rounds,
        threads=threads,
        progress=None if progress is None else (lambda line: progress(f"{d}x{hidden}: {line}")),
    )
    dense_reads = weights_read("dense", d, hidden, 0.0, 0.0, rank, gated)
    rows = []
    for (path, s), timing in timings.items():
        s_in = s if input_sparsity is None else input_sparsity
        speedups = [1 / r for r in timing.ratios["to_dense"]]
        summary = Timing(timing.seconds, {"speedup": speedups}).summary()
        reads = weights_read(path, d, hidden, s, s_in, rank, gated)
        row = {
            "path": path,
            "sparsity": s if path != "dense" else None,
            "input_sparsity": s_in if path == "up_down" else None,
            "measured_input_sparsity": measured[s][1] if path == "up_down" else None,
            "measured_sparsity": measured[s][0] if path != "dense" else None,
            "seconds": summary["seconds"],
            "speedup": summary["speedup"],
            "speedup_q1": summary["speedup_q1"],
            "speedup_q3": summary["speedup_q3"],
            "weights_read": reads,
            "bound": dense_reads / reads,
            "of_bound": summary["speedup"] * reads / dense_reads,
            "max_abs_error": errors.get((path, s)),
        }
        rows.append(row)
    return {
        "d": d,
        "hidden": hidden,
        "layers": layers,
        "dense_seconds": timings[("dense", 0.0)].summary()["seconds"],
        "rows": rows,
    }


def ffn_speed(
    d: int = 1024,
    hidden: int = 4096,
    sparsities: Iterable[float] = (0.5, 0.8, 0.9, 0.95),
    *,
    threads: int = 2,
    rounds: int = 11,
    extra_sizes: Iterable[tuple[int, int]] = ((2048, 8192),),
    input_sparsity: float | None = None,
    gated: bool = False,
    rank: int | None = None,
    paths: Iterable[str] | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time one token through a dense FFN and each sparse path (:data:`PATHS`), side by side.

    Args:
        d, hidden: the FFN's size; ``extra_sizes`` adds more (d, hidden) pairs.
        sparsities: shares of inactive neurons.
        threads: torch's intra-op threads while timing.
        rounds: timed rounds (see :func:`relulab.speed.round_robin`).
        input_sparsity: share of zero inputs for ``"up_down"``; None: the same as the
            neurons' sparsity.
        gated: time a gated FFN (reglu: ReLU on the gate) instead of a plain one.
        rank: the predictor's rank; None: d/16 (at least 8).
        paths: which of :data:`PATHS` ("dense" is always timed); None: all.
        seed: for the weights, tokens and active neurons.
        progress: called with a line before each warm-up and round.

    Returns:
        Per size, one row per path and sparsity: median ``seconds``; ``speedup`` (dense ÷
        path, within each round) with quartiles ``speedup_q1``/``speedup_q3``;
        ``weights_read``, the memory-bandwidth ``bound`` of the speed-up and ``of_bound``;
        ``max_abs_error`` of the exact paths against dense on one token.
    """
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    sparsities = tuple(float(s) for s in sparsities)
    sizes = [(d, hidden), *((int(a), int(b)) for a, b in extra_sizes)]
    _check(sparsities, input_sparsity, sizes, threads, rounds)
    chosen = tuple(PATHS) if paths is None else tuple(dict.fromkeys(["dense", *paths]))
    for path in chosen:
        if path not in PATHS:
            raise UserError(f"unknown FFN path {path!r}; choose from {', '.join(PATHS)}")
    if gated:
        chosen = tuple(p for p in chosen if p not in PLAIN_ONLY)
    results = []
    for size_d, size_hidden in sizes:
        size_rank = rank if rank is not None else max(8, size_d // 16)
        with warnings.catch_warnings():  # torch_csr's: that CSR support is in beta
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            results.append(
                _one_size(
                    size_d,
                    size_hidden,
                    sparsities=sparsities,
                    input_sparsity=input_sparsity,
                    paths=chosen,
                    gated=gated,
                    rank=size_rank,
                    threads=threads,
                    rounds=rounds,
                    seed=seed,
                    progress=progress,
                )
            )
    return {
        "threads": threads,
        "rounds": rounds,
        # On a machine whose cores are busy, each parallel region can wait a scheduler slice
        # for its second thread (measured: 16 ms per embedding_bag at load 5 on 2 cores).
        "load_average": {
            "before": load_before,
            "after": os.getloadavg() if load_before is not None else None,
        },
        "gated": gated,
        "pool": POOL,
        "paths": {p: PATHS[p] for p in chosen},
        "sizes": results,
    }


SUMMARY_HEADERS = (
    "FFN",
    "path",
    "sparsity",
    "input",
    "ms",
    "tokens/s",
    "speed-up (q1-q3)",
    "bound",
    "of bound",
)


def summary_rows(result: dict[str, Any]) -> list[list[str]]:
    """One line of text cells (see :data:`SUMMARY_HEADERS`) per row of :func:`ffn_speed`."""
    lines = []
    for size in result["sizes"]:
        for row in size["rows"]:
            lines.append(
                [
                    f"{size['d']}x{size['hidden']}",
                    row["path"],
                    "-" if row["sparsity"] is None else f"{row['sparsity']:.0%}",
                    "-" if row["input_sparsity"] is None else f"{row['input_sparsity']:.0%}",
                    f"{1000 * row['seconds']:.3g}",
                    f"{1 / row['seconds']:,.0f}",  # one FFN layer, one token at a time
                    f"{row['speedup']:.2f} ({row['speedup_q1']:.2f}-{row['speedup_q3']:.2f})",
                    f"{row['bound']:.2f}",
                    f"{row['of_bound']:.2f}",
                ]
            )
    return lines
