"""Exact 1-D pieces against known breakpoints (the sawtooth), dense sampling and counts of
lines crossed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from relulab.errors import UserError
from relulab.geometry import breakpoints, region_density


def sawtooth(k: int) -> nn.Sequential:
    """The tent map T(x) = 2 relu(x) - 4 relu(x - 1/2) composed k times: 2**k pieces on [0, 1]."""
    layers: list[nn.Module] = []
    for i in range(k):
        first = nn.Linear(1 if i == 0 else 2, 2)
        with torch.no_grad():
            if i == 0:
                first.weight.copy_(torch.tensor([[1.0], [1.0]]))
            else:  # the previous layer's two relus combined into T, then fanned out
                first.weight.copy_(torch.tensor([[2.0, -4.0], [2.0, -4.0]]))
            first.bias.copy_(torch.tensor([0.0, -0.5]))
        layers += [first, nn.ReLU()]
    last = nn.Linear(2, 1)
    with torch.no_grad():
        last.weight.copy_(torch.tensor([[2.0, -4.0]]))
        last.bias.zero_()
    return nn.Sequential(*layers, last).double()


@pytest.mark.parametrize("k", [1, 2, 3, 5, 7])
def test_sawtooth_has_2_to_the_k_pieces(k):
    pieces = breakpoints(sawtooth(k), torch.tensor([0.0]), torch.tensor([1.0]))
    assert pieces.count == 2**k
    expected = torch.arange(1, 2**k, dtype=torch.float64) / 2**k
    assert torch.allclose(pieces.breakpoints, expected, atol=1e-12, rtol=0)
    slopes = pieces.slope[:, 0]
    assert torch.allclose(slopes.abs(), torch.full_like(slopes, 2.0**k))
    assert (slopes[1:] * slopes[:-1] < 0).all()  # up, down, up, ...


def test_random_mlp_along_a_segment():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 16), nn.Hardtanh(), nn.Linear(16, 2)
    ).double()
    a, b = torch.randn(3, dtype=torch.float64) * 3, torch.randn(3, dtype=torch.float64) * 3
    pieces = breakpoints(net, a, b)
    ends = pieces.ends
    assert ends[0, 0] == 0 and ends[-1, 1] == 1 and torch.equal(ends[1:, 0], ends[:-1, 1])
    assert (ends[:, 1] > ends[:, 0]).all()
    u = (ends[:, 0] + ends[:, 1]) / 2
    with torch.no_grad():
        assert torch.allclose(
            net(a + u[:, None] * (b - a)), pieces.offset + u[:, None] * pieces.slope, atol=1e-9
        )
    # Dense sampling: the number of pattern changes is at most the number of breakpoints,
    # and every change between neighbours lies in a bracket holding a breakpoint.
    found = []
    handles = [
        m.register_forward_hook(lambda m, i, o: found.append(i[0]))
        for m in net
        if isinstance(m, (nn.ReLU, nn.Hardtanh))
    ]
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)
    with torch.no_grad():
        net(a + grid[:, None] * (b - a))
    for h in handles:
        h.remove()
    code = torch.cat([(found[0] > 0), (found[1] > -1), (found[1] > 1)], 1)
    changes = torch.nonzero((code[1:] != code[:-1]).any(1)).flatten()
    for k in changes.tolist():
        assert ((pieces.breakpoints >= grid[k]) & (pieces.breakpoints <= grid[k + 1])).any()
    assert len(changes) >= 10


def test_region_density_counts_lines_crossed():
    torch.manual_seed(1)
    n = 20
    net = nn.Sequential(nn.Linear(2, n), nn.ReLU(), nn.Linear(n, 1)).double()
    data = torch.randn(50, 2, dtype=torch.float64)
    result = region_density(net, data, lines=15, seed=3)
    # Repeat the draws; a segment crosses a unit's line when its ends are on opposite sides.
    generator = torch.Generator().manual_seed(3)
    w, c = net[0].weight.detach(), net[0].bias.detach()
    expected, lengths = [], []
    for _ in range(15):
        i, j = torch.randperm(50, generator=generator)[:2].tolist()
        sides = torch.sign(data[[i, j]] @ w.T + c)
        expected.append(1 + int((sides[0] != sides[1]).sum()))
        lengths.append(float((data[i] - data[j]).norm()))
    assert result.counts.tolist() == expected
    assert result.density == pytest.approx(float(np.mean(np.array(expected) / np.array(lengths))))


def test_bad_segment():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with pytest.raises(UserError, match="same point"):
        breakpoints(net, torch.zeros(2), torch.zeros(2))


def test_relulab_modules_that_flatten_the_batch_count_every_unit():
    # relulab's activation modules run on the batch flattened to one dimension: each of
    # their units must still be a unit of the site, or breakpoints would see only the first.
    import relulab

    torch.manual_seed(3)
    act = relulab.get_activation
    net = nn.Sequential(
        nn.Linear(2, 12), act("relu"), nn.Linear(12, 12), act("relu"), nn.Linear(12, 2)
    ).double()  # fmt: skip
    a, b = torch.tensor([-2.0, -1.0]), torch.tensor([2.0, 1.5])
    pieces = breakpoints(net, a, b)
    assert [site.units for site in pieces.sites] == [12, 12]
    u = torch.linspace(0, 1, 40001, dtype=torch.float64)
    with torch.no_grad():
        x = a.double() + u[:, None] * (b - a).double()
        h1 = net[0](x)
        h2 = net[2](torch.relu(h1))
    pattern = torch.cat([h1 > 0, h2 > 0], 1)
    changes = (pattern[1:] != pattern[:-1]).any(1).sum()
    assert pieces.count == int(changes) + 1
