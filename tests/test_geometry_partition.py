"""Exact 2-D partitions against independent oracles: shoelace areas, point-in-polygon counts,
activation patterns read by forward hooks, plain forward passes and a dense grid probe."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relulab.errors import UserError
from relulab.geometry import Plane, partition

SQUARE = torch.tensor([[-2.0, -2.0], [2.0, -2.0], [2.0, 2.0], [-2.0, 2.0]])


class Abs(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.abs(x)


BREAKS = {nn.ReLU: (0.0,), nn.LeakyReLU: (0.0,), nn.PReLU: (0.0,), Abs: (0.0,)}


def breaks_of(module: nn.Module) -> tuple[float, ...] | None:
    if isinstance(module, nn.Hardtanh):  # ReLU6 is a Hardtanh(0, 6)
        return (module.min_val, module.max_val)
    return BREAKS.get(type(module))


def hooked_patterns(model: nn.Module, inputs: torch.Tensor) -> np.ndarray:
    """States (breakpoints below the pre-activation) of every unit, by forward hooks."""
    found = []
    handles = [
        m.register_forward_hook(
            lambda m, i, o: found.append(
                sum((i[0] > b).to(torch.int8) for b in breaks_of(m)).flatten(1)
            )
        )
        for m in model.modules()
        if breaks_of(m) is not None
    ]
    with torch.no_grad():
        model(inputs)
    for h in handles:
        h.remove()
    return torch.cat(found, 1).numpy()


def inside_counts(vertices: list[np.ndarray], points: np.ndarray) -> np.ndarray:
    """How many polygons hold each point strictly (numpy cross products)."""
    counts = np.zeros(len(points), dtype=int)
    for poly in vertices:
        edges = np.roll(poly, -1, axis=0) - poly
        rel = points[:, None, :] - poly[None]
        cross = edges[None, :, 0] * rel[..., 1] - edges[None, :, 1] * rel[..., 0]
        counts += (cross > 0).all(axis=1)
    return counts


def shoelace(p: np.ndarray) -> float:
    return 0.5 * float(
        np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1))
    )


def check_exact(
    model, part, inputs_of, domain: np.ndarray, grid: int = 120, oracle=None, stated=None
) -> None:
    """Tiling, per-region pattern and affine map, and a grid probe, for a partition.

    ``oracle(model, inputs)``: the patterns found independently (default: forward hooks);
    ``stated(part)``: the partition's patterns in the oracle's terms (default: as they are).
    """
    oracle = oracle or hooked_patterns
    stated = stated(part) if stated else part.pattern_matrix.numpy()
    model = model.double().eval()
    domain = np.asarray(domain, dtype=np.float64)
    polys = [r.vertices.numpy() for r in part.regions]
    areas = np.array([shoelace(p) for p in polys])
    assert (areas > 0).all()
    assert abs(areas.sum() - shoelace(domain)) <= 1e-9 * abs(shoelace(domain))
    rng = np.random.default_rng(1)
    low, high = domain.min(0), domain.max(0)
    samples = rng.uniform(low, high, size=(3000, 2))
    assert (inside_counts(polys, samples) <= 1).all()  # no overlaps
    # An interior point of each polygon: its pattern and output, from plain forward passes.
    centres = torch.tensor(np.stack([p.mean(0) for p in polys]))
    with torch.no_grad():
        outputs = model(inputs_of(centres)).flatten(1)
    assert (oracle(model, inputs_of(centres)) == stated).all()
    predicted = (part.A @ centres[..., None]).squeeze(-1) + part.b
    assert torch.allclose(predicted, outputs, rtol=1e-9, atol=1e-9)
    # A dense grid finds no pattern the partition lacks.
    axes = [np.linspace(low[k], high[k], grid) for k in range(2)]
    points = np.stack(np.meshgrid(*axes), -1).reshape(-1, 2)
    if len(domain) != 4:
        points = points[inside_counts([domain], points) == 1]
    probe = {row.tobytes() for row in oracle(model, inputs_of(torch.tensor(points)))}
    assert probe <= {row.tobytes() for row in stated}


def mlp(activation: nn.Module, widths=(2, 12, 12, 3), gain: float = 1.0, seed: int = 0):
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(activation)
    net = nn.Sequential(*layers).double()
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(gain)
    return net


ACTIVATIONS = {
    "relu": (nn.ReLU(), 1.0),
    "leaky_relu": (nn.LeakyReLU(0.1), 1.0),
    "prelu": (nn.PReLU(1, init=0.3), 1.0),
    "relu6": (nn.ReLU6(), 6.0),  # large weights so that pre-activations pass 6
    "hardtanh": (nn.Hardtanh(-0.5, 0.5), 1.0),
    "abs": (Abs(), 1.0),
}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_mlp_partition_is_exact(name):
    activation, gain = ACTIVATIONS[name]
    net = mlp(activation, gain=gain)
    part = partition(net, SQUARE)
    assert part.count > 20
    if name in ("relu6", "hardtanh"):  # the upper breakpoint is met
        assert (part.pattern_matrix == 2).any()
    check_exact(net, part, lambda p: p, SQUARE.numpy())


def test_non_rectangular_domain():
    net = mlp(nn.ReLU())
    triangle = torch.tensor([[-2.0, -1.0], [2.0, -1.5], [0.3, 2.0]])
    check_exact(net, partition(net, triangle), lambda p: p, triangle.numpy())


def test_arrangement_of_lines_in_general_position():
    n = 11
    rng = np.random.default_rng(3)
    normals, offsets = rng.normal(size=(n, 2)), rng.normal(size=n)
    crossings = np.array(
        [
            np.linalg.solve(normals[[i, j]], -offsets[[i, j]])
            for i, j in itertools.combinations(range(n), 2)
        ]
    )
    low, high = crossings.min(0) - 1.0, crossings.max(0) + 1.0
    box = torch.tensor([[low[0], low[1]], [high[0], low[1]], [high[0], high[1]], [low[0], high[1]]])
    net = nn.Sequential(nn.Linear(2, n), nn.ReLU(), nn.Linear(n, 1)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(normals))
        net[0].bias.copy_(torch.tensor(offsets))
    assert partition(net, box).count == 1 + n + n * (n - 1) // 2


class Residual(nn.Module):
    """Two residual blocks (F.relu, x.relu(), in-place relu_), a concatenation and a clamp."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.inp = nn.Linear(2, 6)
        self.f1, self.f2 = nn.Linear(6, 6), nn.Linear(6, 6)
        self.side = nn.Linear(2, 3)
        self.out = nn.Linear(9, 2)
        self.record: list[torch.Tensor] | None = None

    def act(self, x: torch.Tensor, kind: int) -> torch.Tensor:
        if self.record is not None:
            self.record.append((x > 0).to(torch.int8).flatten(1))
        if kind == 0:
            return F.relu(x)
        return x.relu() if kind == 1 else x.clone().relu_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.inp(x), 0)
        h = h + self.act(self.f1(h), 1)
        h = h + self.act(self.f2(h), 2)
        return self.out(torch.cat([h, self.side(x)], dim=1))


def test_residual_functional_model():
    net = Residual().double()
    part = partition(net, SQUARE)
    polys = [r.vertices.numpy() for r in part.regions]
    assert abs(sum(shoelace(p) for p in polys) - 16.0) < 1e-9 * 16
    centres = torch.tensor(np.stack([p.mean(0) for p in polys]))
    net.record = []
    with torch.no_grad():
        outputs = net(centres)
    assert (torch.cat(net.record, 1) == part.pattern_matrix).all()
    assert torch.allclose(
        (part.A @ centres[..., None]).squeeze(-1) + part.b, outputs, rtol=1e-9, atol=1e-9
    )
    grid = torch.cartesian_prod(*[torch.linspace(-2, 2, 150, dtype=torch.float64)] * 2)
    net.record = []
    with torch.no_grad():
        net(grid)
    probe = {tuple(r) for r in torch.cat(net.record, 1).tolist()}
    assert probe <= {tuple(r) for r in part.pattern_matrix.tolist()}


def test_cnn_on_a_plane_through_three_images():
    torch.manual_seed(5)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(12, 5),
        nn.LeakyReLU(0.2),
        nn.Linear(5, 3),
    ).double()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
    net.eval()
    images = torch.rand(3, 1, 6, 6, dtype=torch.float64)
    plane = Plane.through(*images, margin=0.5)
    part = partition(net, plane)
    assert part.count > 10
    check_exact(net, part, plane.inputs, plane.polygon().numpy(), grid=80)
    # The three images sit at (0, 0), (|p1 - p0|, 0) and above the s axis.
    assert torch.allclose(plane.inputs(torch.tensor([[0.0, 0.0]]))[0], images[0])


def test_sequential_of_blocks_with_inplace_relu_is_exact():
    # The Sequential is cut into its children (one child holds two sites), and the cached
    # rows pass through in-place activations.
    torch.manual_seed(2)
    net = nn.Sequential(
        nn.Linear(2, 10),
        nn.ReLU(inplace=True),
        nn.Sequential(nn.Linear(10, 10), nn.ReLU(inplace=True), nn.Linear(10, 10), nn.ReLU()),
        nn.Linear(10, 3),
    ).double()
    part = partition(net, SQUARE)
    assert part.count > 20
    check_exact(net, part, lambda p: p, SQUARE.numpy())


def check_boundary(net, part) -> None:
    """The boundary against plain forward passes: ties at its ends, and every change of
    argmax between neighbours on horizontal lines is crossed by a segment."""
    ends = part.boundary.reshape(-1, 2)
    with torch.no_grad():
        logits = net(ends)
    top2 = logits.topk(2, dim=1).values
    assert torch.allclose(top2[:, 0], top2[:, 1], atol=1e-9)  # a tie for the top at each end
    # Every change of argmax between neighbours on horizontal lines is crossed by a segment.
    xs = torch.linspace(-2, 2, 400, dtype=torch.float64)
    for y in torch.linspace(-1.9, 1.9, 7, dtype=torch.float64).tolist():
        row = torch.stack([xs, torch.full_like(xs, y)], 1)
        with torch.no_grad():
            label = net(row).argmax(1)
        for k in torch.nonzero(label[1:] != label[:-1]).flatten().tolist():
            a, b = part.boundary[:, 0], part.boundary[:, 1]
            t = (y - a[:, 1]) / (b[:, 1] - a[:, 1])
            x = a[:, 0] + t * (b[:, 0] - a[:, 0])
            hit = (t >= 0) & (t <= 1) & (x >= xs[k] - 1e-12) & (x <= xs[k + 1] + 1e-12)
            assert hit.any()


def test_decision_boundary_three_classes():
    net = mlp(nn.ReLU(), widths=(2, 10, 10, 3), seed=6)
    part = partition(net, SQUARE)
    assert len(part.boundary) > 0
    check_boundary(net, part)


def test_decision_boundary_of_ten_classes_skips_uncontested_regions_and_reports_progress():
    from relulab.geometry.partition import _boundary, _contested

    net = mlp(nn.ReLU(), widths=(2, 16, 16, 10), seed=2)
    lines = []
    part = partition(net, SQUARE, progress=lines.append)
    assert len(part.boundary) > 0
    check_boundary(net, part)
    # the same segments, in the same order, as clipping every region
    every = _boundary(part.vertices, part.counts, part.A, part.b, every=True)
    assert torch.equal(part.boundary, every[0]) and torch.equal(part.boundary_regions, every[1])
    # most regions have one top class at all their vertices: only the others are clipped
    contested = _contested(part.vertices, part.counts, part.A, part.b)
    assert set(part.boundary_regions.tolist()) <= set(contested.tolist())
    assert len(contested) < part.count / 2
    assert sum(line.startswith("decision boundary: class pair") for line in lines) == 45


def test_locate_matches_point_in_polygon():
    net = mlp(nn.ReLU(), seed=7)
    part = partition(net, SQUARE)
    points = torch.rand(500, 2, dtype=torch.float64) * 4 - 2
    where = part.locate(points)
    polys = [r.vertices.numpy() for r in part.regions]
    for p, w in zip(points.numpy(), where.tolist()):
        assert inside_counts([polys[w]], p[None])[0] == 1


class Gelu(nn.Module):
    def forward(self, x):
        return F.gelu(x)


@pytest.mark.parametrize(
    ("layer", "words"),
    [(nn.GELU(), ["gelu", "GELU"]), (Gelu(), ["gelu", "Gelu"]), (nn.Softmax(1), ["softmax"])],
)
def test_unsupported_nonlinearity_is_named(layer, words):
    net = nn.Sequential(nn.Linear(2, 4), layer, nn.Linear(4, 2))
    with pytest.raises(UserError) as info:
        partition(net, SQUARE)
    assert all(w in str(info.value) for w in words)


def test_training_batchnorm_is_refused():
    net = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).train()
    with pytest.raises(UserError, match="eval"):
        partition(net, SQUARE)


def test_a_region_limit_stops_early_with_a_clear_error_and_progress_is_reported():
    net = mlp(nn.ReLU(), seed=3)
    lines = []
    full = partition(net, SQUARE, progress=lines.append)
    cuts = [line for line in lines if line.startswith("site 2/2")]
    assert cuts and f"{full.count:,} regions" in cuts[-1]
    with pytest.raises(UserError, match=f"more than {full.count - 1:,} linear regions"):
        partition(net, SQUARE, max_regions=full.count - 1)
    assert partition(net, SQUARE, max_regions=full.count).count == full.count
    with pytest.raises(UserError, match="max_regions must be >= 1"):
        partition(net, SQUARE, max_regions=0)


def test_the_region_limit_holds_within_one_group():
    # One site over the whole square: one parent, so one group; 60 lines in general position
    # make about 1,800 regions. Each round at most doubles the pieces, so the limit is
    # caught by twice its value, long before the group ends.
    net = mlp(nn.ReLU(), widths=(2, 60, 2), seed=4)
    full = partition(net, SQUARE)
    assert full.count > 1000
    lines = []
    with pytest.raises(UserError, match="more than 50 linear regions") as info:
        partition(net, SQUARE, max_regions=50, progress=lines.append)
    found = int(str(info.value).split("(")[1].split(")")[0].replace(",", ""))
    assert 50 < found <= 100
    assert "max_regions" not in str(info.value) and "slice" not in str(info.value)
    assert len(lines) > 1  # progress within the group too


class ClampNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.clamp(self.layer(x), min=0.0))


def test_a_site_in_the_top_level_module_is_named_in_progress():
    lines = []
    partition(ClampNet(), SQUARE, progress=lines.append)
    cut = next(line for line in lines if line.startswith("site 1/1"))
    assert "( " not in cut and "(model (ClampNet): torch.clamp)" in cut
