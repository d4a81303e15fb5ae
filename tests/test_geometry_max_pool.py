"""Max-pooling as a piecewise-linear site: exact cells of the largest candidate, checked
against torch's own pooling indices (``return_indices=True``), plain forward passes, a grid
probe, and hand-built maxima with known region counts."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relulab.geometry import Plane, activation_codes, breakpoints, partition
from test_geometry_partition import SQUARE, breaks_of, check_exact

POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)


def torch_patterns(model: nn.Module, inputs: torch.Tensor) -> np.ndarray:
    """Per unit: the breakpoints below its pre-activation (activations), or the flat input
    position of the largest candidate that torch's pooling reports (max-pool)."""
    found = []

    def record(module, args, _output):
        x = args[0]
        if isinstance(module, POOLS):
            options = {"return_indices": True}
            if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d)):
                options |= {
                    k: getattr(module, k)
                    for k in ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
                }
                pool = F.max_pool1d if isinstance(module, nn.MaxPool1d) else F.max_pool2d
            else:
                options["output_size"] = module.output_size
                adaptive = isinstance(module, nn.AdaptiveMaxPool1d)
                pool = F.adaptive_max_pool1d if adaptive else F.adaptive_max_pool2d
            _, index = pool(x, **options)  # position within the channel's plane
            plane = math.prod(x.shape[2:])
            channel = torch.arange(x.shape[1]).reshape(1, -1, *[1] * (x.dim() - 2))
            found.append((index + channel * plane).flatten(1))
        else:
            found.append(sum((x > b).long() for b in breaks_of(module)).flatten(1))

    handles = [
        m.register_forward_hook(record)
        for m in model.modules()
        if isinstance(m, POOLS) or breaks_of(m) is not None
    ]
    with torch.no_grad():
        model(inputs)
    for h in handles:
        h.remove()
    return torch.cat(found, 1).numpy()


def partition_patterns(part) -> np.ndarray:
    """The partition's patterns in torch_patterns' terms: a max unit's state (its window
    position) becomes the input position that the window holds there."""
    columns = []
    for site, pattern in zip(part.sites, part.patterns):
        if site.kind == "max":
            pattern = site.windows[torch.arange(site.units), pattern.long()]
        columns.append(pattern.long())
    return torch.cat(columns, 1).numpy()


# the partition checks, with torch's own pooling indices as the oracle for max units
check_pooled = functools.partial(check_exact, oracle=torch_patterns, stated=partition_patterns)


def directions(k: int) -> nn.Sequential:
    """max_j (cos t_j, sin t_j) . x over k evenly spaced directions: k sectors at the origin."""
    net = nn.Sequential(nn.Linear(2, k), nn.Unflatten(1, (1, k)), nn.MaxPool1d(k), nn.Flatten())
    angle = torch.arange(k) * 2 * math.pi / k
    with torch.no_grad():
        net[0].weight.copy_(torch.stack([angle.cos(), angle.sin()], 1))
        net[0].bias.zero_()
    return net.double()


@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_max_of_k_directions_has_k_sectors(k):
    part = partition(directions(k), SQUARE)
    assert part.count == k
    check_pooled(
        directions(k),
        part,
        lambda p: p,
        SQUARE.numpy(),
        oracle=torch_patterns,
        stated=partition_patterns,
    )


def test_equal_candidates_give_one_cell_not_two():
    net = directions(4)
    with torch.no_grad():  # candidate 2 made a copy of candidate 0: three sectors remain
        net[0].weight[2] = net[0].weight[0]
    part = partition(net, SQUARE)
    assert part.count == 3
    assert abs(float(part.areas.sum()) - 16.0) <= 1e-12


@pytest.mark.parametrize(
    "pool",
    [
        nn.MaxPool1d(3, stride=2, padding=1, ceil_mode=True),
        nn.MaxPool1d(2, dilation=2),
        nn.AdaptiveMaxPool1d(3),
    ],
)
def test_strided_padded_and_adaptive_1d_pools(pool):
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Linear(2, 9), nn.Unflatten(1, (1, 9)), pool, nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)
    ).double()
    net(torch.zeros(1, 2, dtype=torch.float64))  # materialise the lazy layer
    part = partition(net, SQUARE)
    assert part.count > 5
    check_pooled(
        net, part, lambda p: p, SQUARE.numpy(), oracle=torch_patterns, stated=partition_patterns
    )


def test_cnn_with_max_pool_on_a_plane_through_three_images():
    torch.manual_seed(4)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d((2, 1)),
        nn.Flatten(),
        nn.Linear(8, 3),
    ).double()
    images = torch.rand(3, 1, 6, 6, dtype=torch.float64)
    plane = Plane.through(*images, margin=0.5)
    part = partition(net, plane)
    assert part.count > 10
    assert any(site.kind == "max" for site in part.sites)
    check_pooled(
        net,
        part,
        plane.inputs,
        plane.polygon().numpy(),
        grid=70,
        oracle=torch_patterns,
        stated=partition_patterns,
    )


def test_max_pool_breakpoints_along_a_segment_match_a_dense_scan():
    net = directions(6)
    a, b = torch.tensor([-1.5, -0.4]), torch.tensor([1.2, 1.7])
    pieces = breakpoints(net, a, b)
    u = torch.linspace(0, 1, 20001, dtype=torch.float64)
    with torch.no_grad():
        top = net[0](a.double() + u[:, None] * (b - a).double()).argmax(1)
    changes = u[1:][top[1:] != top[:-1]]
    assert pieces.count == len(changes) + 1
    assert torch.allclose(pieces.breakpoints, changes, atol=1e-4)


def test_codes_of_a_max_unit_name_its_largest_candidate():
    net = directions(5)
    x = torch.randn(200, 2, dtype=torch.float64)
    codes = activation_codes(net, x)
    with torch.no_grad():
        top = net[0](x).argmax(1)
    assert torch.equal(codes.bits.long().argmax(1), top)
    assert (codes.bits.sum(1) == 1).all()


def test_pooling_with_indices_is_refused():
    class Pool(nn.Module):
        def forward(self, x):
            return F.max_pool1d(x[:, None], 2, return_indices=True)[0].flatten(1)

    from relulab.errors import UserError

    with pytest.raises(UserError, match="return_indices"):
        partition(nn.Sequential(nn.Linear(2, 4), Pool()).double(), SQUARE)
