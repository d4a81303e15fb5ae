"""Speed of the exact partition against a dense grid probe of activation patterns.

The probe is what one does without an exact method: evaluate the model on a ``grid x grid``
lattice over the domain and count the distinct activation patterns (a lower bound on the
region count). :func:`benchmark` times both on the same float64 model in the same process,
alternating them within each repetition so that both see the same machine load.

Example::

    >>> result = benchmark()  # doctest: +SKIP
    >>> result["ratio"], result["regions"], result["probe_patterns"]  # doctest: +SKIP
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from relulab.errors import UserError
from relulab.geometry.partition import Plane, partition


def mlp(depth: int, width: int, seed: int = 0, inputs: int = 2, outputs: int = 2) -> nn.Module:
    """A float64 ReLU MLP with ``depth`` hidden layers of ``width`` units, torch's default
    init drawn from ``torch.manual_seed(seed)``."""
    if depth < 1 or width < 1:
        raise UserError(f"benchmark: depth and width must be >= 1, got {depth}x{width}")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        layers: list[nn.Module] = []
        size = inputs
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.ReLU()]
            size = width
        layers.append(nn.Linear(size, outputs))
        return nn.Sequential(*layers).to(torch.float64).eval()
    finally:
        torch.random.set_rng_state(generator_state)


class ResidualCNN(nn.Module):
    """A small residual CNN for 8x8 images: a 3x3 convolution stem, one residual block of two
    3x3 convolutions (ReLU after the addition), 2x2 average pooling and a linear head."""

    def __init__(self, channels: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Linear(channels * 16, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.stem(x.reshape(-1, 1, 8, 8)))
        h = torch.relu(h + self.conv2(torch.relu(self.conv1(h))))
        return self.head(self.pool(h).flatten(1))


def residual_cnn_on_digits(channels: int = 4, seed: int = 0) -> tuple[nn.Module, Plane]:
    """A float64 :class:`ResidualCNN` (torch's default init from ``seed``) and the plane
    through the first three test images of the bench's digits task."""
    from relulab.bench.tasks import get_task

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = ResidualCNN(channels).to(torch.float64).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    images = get_task("digits").data().x_test[:3].to(torch.float64)
    return model, Plane.through(*images)


def pack(states: Tensor) -> Tensor:
    """0/1 states ``(N, units)`` as rows of int64 words ``(N, ceil(units / 64))``, one bit
    per unit, so that patterns compare and sort as short integer rows."""
    N, units = states.shape
    bits = torch.zeros(N, -(-units // 64) * 64, dtype=torch.uint8)
    bits[:, :units] = states != 0
    weights = (2 ** torch.arange(8, dtype=torch.int32)).to(torch.uint8)
    packed = (bits.reshape(N, -1, 8) * weights).sum(dim=-1, dtype=torch.uint8)
    return packed.view(torch.int64)


def grid_patterns(model: nn.Module, low: float, high: float, grid: int, batch: int) -> Tensor:
    """The distinct activation patterns of a ReLU ``model`` (its ``nn.ReLU`` modules) on a
    ``grid x grid`` lattice over ``[low, high]^2``, packed by :func:`pack`, sorted."""
    axis = torch.linspace(low, high, grid, dtype=torch.float64)
    points = torch.cartesian_prod(axis, axis)
    found: list[Tensor] = []
    handles = [
        m.register_forward_hook(lambda m, i, o: found.append(i[0] > 0))
        for m in model.modules()
        if isinstance(m, nn.ReLU)
    ]
    distinct = []
    try:
        with torch.no_grad():
            for i in range(0, len(points), batch):
                found.clear()
                model(points[i : i + batch])
                codes = pack(torch.cat([f.flatten(1) for f in found], dim=1))
                distinct.append(torch.unique(codes, dim=0))
    finally:
        for handle in handles:
            handle.remove()
    return torch.unique(torch.cat(distinct), dim=0)


def _timed(function, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def benchmark(
    depth: int = 4,
    width: int = 64,
    grid: int = 1024,
    repeats: int = 3,
    seed: int = 0,
    others: Sequence[tuple[int, int]] = ((2, 64), (8, 64), (4, 128)),
    half_width: float = 2.0,
    batch: int = 2**16,
    keep_patterns: bool = False,
    cnn_channels: int | None = 4,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Time the exact partition of a ``depth x width`` ReLU MLP on ``[-h, h]^2`` against a
    ``grid x grid`` probe that collects its distinct activation patterns.

    Args:
        depth, width: the main net (hidden layers, units per layer); float64, default init.
        grid: points per side of the probe's lattice.
        repeats: repetitions; each runs the partition then the probe, and times are medians.
        seed: the seed of the nets' initialisation.
        others: ``(depth, width)`` nets whose partition speed is reported in regions/s.
        half_width: ``h``, the domain is the square ``[-h, h]^2``.
        batch: probe points per forward pass.
        keep_patterns: also return both pattern sets, packed by :func:`pack`.
        cnn_channels: also time :func:`residual_cnn_on_digits` with this many channels on
            the plane through three digits images (None: skip it).
        progress: called with a line of text as each net's timing is done.

    Returns:
        A dict: ``partition_s``, ``probe_s``, ``ratio`` (probe time / partition time),
        ``regions``, ``probe_patterns`` (distinct patterns the probe saw), ``regions_per_s``,
        ``others`` (one dict per extra net: ``net`` (its name), ``regions``, ``partition_s``,
        ``regions_per_s``; ``depth`` and ``width`` for MLPs), ``torch_threads`` (torch's
        intra-op threads) and ``load_average_1min`` (the machine's, at the start; the
        partition's many small operations slow down most under load), and with
        ``keep_patterns`` the tensors ``partition_codes`` and ``probe_codes``.
    """
    if repeats < 1 or grid < 2 or batch < 1:
        raise UserError(
            f"benchmark: need repeats >= 1, grid >= 2, batch >= 1; got {repeats}, {grid}, {batch}"
        )
    threads, load = torch.get_num_threads(), os.getloadavg()[0]
    h = float(half_width)
    square = torch.tensor([[-h, -h], [h, -h], [h, h], [-h, h]], dtype=torch.float64)
    model = mlp(depth, width, seed)
    part_times, probe_times = [], []
    for _ in range(repeats):
        seconds, part = _timed(partition, model, square)
        part_times.append(seconds)
        seconds, codes = _timed(grid_patterns, model, -h, h, grid, batch)
        probe_times.append(seconds)
    partition_s, probe_s = statistics.median(part_times), statistics.median(probe_times)
    result = {
        "depth": depth,
        "width": width,
        "grid": grid,
        "partition_s": partition_s,
        "probe_s": probe_s,
        "ratio": probe_s / partition_s,
        "regions": part.count,
        "probe_patterns": len(codes),
        "regions_per_s": part.count / partition_s,
        "others": [],
        "torch_threads": threads,
        "load_average_1min": load,
    }
    if progress:
        progress(
            f"{depth}x{width} MLP: exact partition {partition_s:.3f} s ({part.count:,} regions), "
            f"grid probe {probe_s:.3f} s"
        )
    if keep_patterns:
        result["partition_codes"] = torch.unique(pack(part.pattern_matrix), dim=0)
        result["probe_codes"] = codes
    nets = [(f"{d}x{w} MLP", mlp(d, w, seed), square, {"depth": d, "width": w}) for d, w in others]
    if cnn_channels:
        cnn, plane = residual_cnn_on_digits(cnn_channels, seed)
        name = f"residual CNN ({cnn_channels} ch), digits plane"
        nets.append((name, cnn, plane, {"channels": cnn_channels}))
    for name, other, domain, shape in nets:
        timed = [_timed(partition, other, domain) for _ in range(repeats)]
        seconds, found = statistics.median(t for t, _ in timed), timed[-1][1]
        result["others"].append(
            {
                "net": name,
                **shape,
                "regions": found.count,
                "partition_s": seconds,
                "regions_per_s": found.count / seconds,
            }
        )
        if progress:
            progress(f"{name}: {found.count:,} regions in {seconds:.3f} s")
    return result
