"""count_relus: counts against hand-computed ones (layer shapes worked out here), max-pool
comparisons against torch's own pooling of a ones tensor, and ResNet-18's published total."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relulab import get_activation
from relulab.budget.count import check_budget, count_relus
from relulab.budget.resnet import resnet18
from relulab.errors import UserError
from relulab.geometry import affine


def counts(result) -> list[tuple[str, int]]:
    return [(layer.kind, layer.count) for layer in result.relus + result.max_pools]


def test_mlp_counts_one_relu_per_hidden_unit():
    net = nn.Sequential(
        nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3), nn.ReLU(inplace=True), nn.Linear(3, 2)
    )
    result = count_relus(net, (5,))
    assert counts(result) == [("relu", 7), ("relu", 3)]
    assert result.total == 10 and result.by_kind == {"relu": 10}
    assert result.max_pool_comparisons == 0 and result.uncounted == []
    assert [layer.name for layer in result.relus] == ["1 (ReLU): F.relu", "3 (ReLU): F.relu"]


def valid_candidates(shape, kernel, stride, padding, ceil_mode=False) -> int:
    """Candidates inside the input over all windows: torch's sum pooling of ones (padding
    adds zeros), independent of relulab's window bookkeeping."""
    ones = torch.ones(shape, dtype=torch.float64)
    sums = F.avg_pool2d(ones, kernel, stride, padding, ceil_mode, divisor_override=1)
    return int(sums.sum()), sums.numel()


class SmallCNN(nn.Module):
    """3×10×10 → conv 4 (pad 1) → ReLU → max 2 → conv 6 (no pad) → F.relu → max 3/2 pad 1."""

    def __init__(self):
        super().__init__()
        self.conv1, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.pool2 = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x):
        x = self.pool1(self.act(self.conv1(x)))  # 4×10×10 ReLUs, then 4×5×5 windows of 4
        return self.pool2(F.relu(self.conv2(x))).flatten(1)  # 6×3×3 ReLUs, 6×2×2 windows


def test_cnn_relus_and_max_pool_comparisons():
    result = count_relus(SmallCNN(), (3, 10, 10))
    assert [(layer.kind, layer.count) for layer in result.relus] == [
        ("relu", 4 * 10 * 10),
        ("relu", 6 * 3 * 3),
    ]
    inside, outputs = valid_candidates((1, 6, 3, 3), 3, 2, 1)
    assert (inside, outputs) == (6 * 4 * 4, 6 * 2 * 2)  # each padded window keeps 2×2 inside
    expected = [4 * 5 * 5 * (4 - 1), inside - outputs]
    assert [layer.count for layer in result.max_pools] == expected
    assert result.max_pool_comparisons == 300 + 72
    assert result.total == 454  # max-pool comparisons are apart from the ReLU total
    assert [layer.units for layer in result.max_pools] == [100, 24]


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "ceil_mode"),
    [(7, 3, 2, 1, False), (8, 3, 3, 0, True), (9, 4, 2, 2, True), (6, 2, 2, 0, False)],
)
def test_max_pool_costs_one_less_than_the_candidates_inside_each_window(
    size, kernel, stride, padding, ceil_mode
):
    net = nn.Sequential(
        nn.Conv2d(1, 2, 1), nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    )
    result = count_relus(net, (1, size, size))
    inside, outputs = valid_candidates((1, 2, size, size), kernel, stride, padding, ceil_mode)
    assert result.max_pools[0].units == outputs
    assert result.max_pool_comparisons == inside - outputs


def test_adaptive_max_pool_windows():
    # 5 rows into 2: rows 0-2 and 2-4; 7 columns into 3: 0-2, 2-4, 4-6: 3×3 = 9 per window
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.AdaptiveMaxPool2d((2, 3)))
    result = count_relus(net, (1, 5, 7))
    assert result.max_pool_comparisons == 2 * 6 * (9 - 1)
    global_pool = count_relus(nn.Sequential(nn.Conv2d(1, 3, 1), nn.AdaptiveMaxPool2d(1)), (1, 4, 4))
    assert global_pool.max_pool_comparisons == 3 * (16 - 1)


class Functional(nn.Module):
    """Residual adds and functional calls of every ReLU-like kind."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 4)
        self.prelu = nn.PReLU(4)

    def forward(self, x):
        h = F.relu(x + torch.relu(self.a(x)))  # 6 + 6 relu
        h = h + x.clamp(min=0)  # one bound: 6
        h = F.relu6(h) + F.hardtanh(h) + h.clamp(-1.0, 1.0)  # two bounds each: 3 × 12
        g = self.b(h)
        return F.leaky_relu(g, 0.1) + self.prelu(g) + g.abs()  # 4 each


def test_functional_calls_and_residual_adds_by_kind():
    result = count_relus(Functional(), (6,))
    assert [(layer.kind, layer.units, layer.count) for layer in result.relus] == [
        ("relu", 6, 6),
        ("relu", 6, 6),
        ("clamp", 6, 6),
        ("clamp", 6, 12),
        ("clamp", 6, 12),
        ("clamp", 6, 12),
        ("leaky_relu", 4, 4),
        ("prelu", 4, 4),
        ("abs", 4, 4),
    ]
    assert result.by_kind == {"relu": 12, "clamp": 42, "leaky_relu": 4, "prelu": 4, "abs": 4}
    assert result.total == 66


def test_a_module_used_twice_counts_twice():
    act = nn.ReLU()
    net = nn.Sequential(nn.Linear(3, 5), act, nn.Linear(5, 2), act)
    result = count_relus(net, (3,))
    assert [layer.count for layer in result.relus] == [5, 2] and result.total == 7


class Smooth(nn.Module):
    """GELU, an attention-like product and softmax between ReLUs: none may stop the count."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.gelu = nn.GELU()

    def forward(self, x):
        h = self.gelu(self.a(x))
        h = torch.relu(self.b(h)) * torch.sigmoid(h)  # product of two input-dependent tensors
        weights = F.softmax(h, dim=1)
        return F.relu(self.c(weights * h))


def test_softmax_gelu_and_products_do_not_stop_the_count():
    with pytest.raises(UserError, match="not piecewise linear"):
        affine.run(Smooth().double(), torch.randn(1, 4, dtype=torch.float64))  # strict
    result = count_relus(Smooth(), (4,))
    assert [(layer.name, layer.count) for layer in result.relus] == [
        ("model (Smooth): torch.relu", 8),
        ("model (Smooth): F.relu", 3),
    ]
    assert [layer.name for layer in result.uncounted] == [
        "gelu (GELU): torch.gelu",
        "model (Smooth): torch.sigmoid",
        "model (Smooth): Tensor.mul",
        "model (Smooth): F.softmax",
        "model (Smooth): Tensor.mul",
    ]
    assert [layer.units for layer in result.uncounted] == [8, 8, 8, 8, 8]
    assert all(layer.count == 0 for layer in result.uncounted)
    assert result.total == 11


def test_relulab_smooth_activation_is_one_uncounted_call_not_its_range_clamps():
    # relulab's gelu clamps erfc's argument (numerics, not a ReLU): 0 ReLUs, 2 gelu calls
    net = nn.Sequential(nn.Linear(3, 5), get_activation("gelu"), nn.Linear(5, 4))
    net.append(get_activation("gelu"))
    result = count_relus(net, (3,))
    assert result.total == 0
    assert [(layer.name, layer.units) for layer in result.uncounted] == [
        ("1 (GELU): gelu", 5),
        ("3 (GELU): gelu", 4),
    ]
    relu6 = nn.Sequential(nn.Linear(3, 5), get_activation("relu6"))
    assert count_relus(relu6, (3,)).by_kind == {"clamp": 10}


def resnet18_by_hand(height: int, width: int) -> list[int]:
    """Stem 64·H·W, then per stage (64, 128, 256, 512 channels; the map halves from stage 2
    on) two blocks of two ReLUs of C·h·w each."""
    found = [64 * height * width]
    for stage, channels in enumerate((64, 128, 256, 512)):
        h, w = height // 2**stage, width // 2**stage
        found += [channels * h * w] * 4
    return found


def test_resnet18_count_matches_the_hand_derivation_and_the_published_total():
    net = resnet18()
    result = count_relus(net, (3, 32, 32))
    assert [layer.count for layer in result.relus] == resnet18_by_hand(32, 32)
    assert result.total == sum(resnet18_by_hand(32, 32)) == 557_056
    assert result.uncounted == [] and result.max_pool_comparisons == 0
    assert sum(p.numel() for p in net.parameters()) == 11_173_962  # kuangliu's ResNet18
    assert count_relus(net, (3, 64, 64)).total == 4 * 557_056


def test_resnet18_count_agrees_with_relu_module_outputs():
    """A second, independent path: the outputs of every nn.ReLU call, seen by hooks."""
    net = resnet18().eval()
    seen = []
    for module in net.modules():
        if isinstance(module, nn.ReLU):
            module.register_forward_hook(lambda m, i, out: seen.append(out.numel()))
    with torch.no_grad():
        assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    expected = list(seen)  # the hooks fire again while counting
    assert len(expected) == 17
    assert [layer.count for layer in count_relus(net, (3, 32, 32)).relus] == expected


def test_modes_and_fused_flags_are_restored():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), get_activation("gelu"), nn.Dropout())
    net.train()
    count_relus(net, (3,))  # batch norm in training mode would refuse a batch of 1
    assert all(module.training for module in net.modules())
    assert net[2].fused is True


def test_a_model_returning_a_tuple_is_counted():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 3)

        def forward(self, x):
            return F.relu(self.a(x)), x

    assert count_relus(Pair(), (2,)).total == 3


class HiddenReLU(nn.ReLU):
    def forward(self, x):
        return torch.ops.aten.relu(x)  # not the F.relu/torch.relu that the trace knows


def test_untraceable_relus_are_named():
    net = nn.Sequential(nn.Linear(3, 4), HiddenReLU())
    with pytest.raises(UserError, match=r"^cannot count the ReLUs of 1 \(HiddenReLU\): .*relu"):
        count_relus(net, (3,))
    scripted = nn.Sequential(nn.Linear(3, 3), torch.jit.script(nn.Sequential(nn.ReLU())))
    with pytest.raises(UserError, match=r"^cannot count the ReLUs of 1: it is a TorchScript"):
        count_relus(scripted, (3,))


def test_bad_shapes_are_user_errors():
    with pytest.raises(UserError, match=r"does not accept an input of shape \[4\]"):
        count_relus(nn.Sequential(nn.Linear(3, 3), nn.ReLU()), (4,))
    with pytest.raises(UserError, match="positive integers, got"):
        count_relus(nn.ReLU(), (3, 0))


def test_check_budget_names_the_valid_range():
    assert check_budget(5, 10) == 5 and check_budget(10, 10) == 10
    for bad in (0, -3, 11, 2.5):
        with pytest.raises(UserError, match=r"from 1 to 10 \(the model's count\), got"):
            check_budget(bad, 10)
    with pytest.raises(UserError, match="no ReLUs"):
        check_budget(1, 0)


class HandWritten(nn.Module):
    """ReLUs written without F.relu, each on a Linear(4, 6)'s output: 6 outputs per call."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(4, 6)

    def forward(self, x):
        a, b, zero = self.a(x), self.b(x), torch.zeros(())
        counted = a.clamp_min(0) + torch.clamp_max(a, 1.0) + torch.maximum(a, zero)  # 6 each
        counted = counted + torch.max(zero, a) + torch.where(a > 0, a, 0.0)  # 6 each
        counted = counted + F.hardswish(a)  # relu6 inside: 2 per output
        maybe = torch.maximum(a, b) + b * (b > 0) + torch.where(b > 0, b, 0.1 * b)
        return counted + maybe


def test_relus_written_by_hand_are_counted_or_named_never_dropped():
    result = count_relus(HandWritten(), (4,))
    assert [(layer.name.partition(": ")[2], layer.kind, layer.count) for layer in result.relus] == [
        ("Tensor.clamp_min", "clamp", 6),
        ("torch.clamp_max", "clamp", 6),
        ("torch.maximum", "clamp", 6),
        ("torch.max", "clamp", 6),
        ("torch.where", "relu", 6),  # its comparison a > 0 is the ReLU: not counted twice
        ("F.hardswish", "clamp", 12),
    ]
    assert result.total == 5 * 6 + 12
    # a max of two computed tensors, a product with a comparison, and a where that is a
    # leaky ReLU (its other branch is computed): named, one line for the module
    assert [layer.name.partition(": ")[2] for layer in result.hidden] == [
        "torch.maximum",
        "Tensor.gt",
        "Tensor.gt",
        "torch.where",
    ]
    assert result.warnings == [
        "possible hidden ReLU: torch.maximum, Tensor.gt, torch.where in model (HandWritten)"
    ]
    assert result.to_dict()["warnings"] == result.warnings


def test_hidden_relu_warnings_name_the_submodule():
    class MaxOfTwo(nn.Module):
        def forward(self, x):
            return torch.max(x, x.flip(1)), x.max()  # computed against computed; a reduction

    net = nn.Sequential(nn.Linear(3, 5), MaxOfTwo())
    result = count_relus(net, (3,))
    assert result.total == 0
    assert result.warnings == ["possible hidden ReLU: torch.max, Tensor.max in 1 (MaxOfTwo)"]


@pytest.mark.parametrize(
    ("name", "breaks"),
    [
        ("hard_swish", 2),  # x·relu6(x + 3)/6: comparisons at -3 and 3
        ("hard_sigmoid", 2),  # its formula clamps twice at ±3 (for the gradient): still 2
        ("hard_mish", 2),  # clamp(x + 2, 0, 2)
        ("smelu", 2),  # pieces meet at -β and β
        ("squared_relu", 1),  # relu(x)²
        ("relu6", 2),
        ("gelu", 0),  # smooth: its clamp keeps erfc's argument in range
    ],
)
def test_relulab_piecewise_activations_count_their_breakpoints(name, breaks):
    net = nn.Sequential(nn.Linear(3, 5), get_activation(name))
    result = count_relus(net, (3,))
    assert result.total == 5 * breaks
    assert result.warnings == []
