"""relulab.budget.fold and RepVGG re-parameterization: the folded model equals the unfolded one.

The reference is always the unfolded model's own forward (torch's conv, linear and batch-norm
kernels on the original graph) run in float64; the folded model runs in float32 and must
agree to 1e-5. BatchNorm statistics and affine parameters are random, so a mistake in any
folding formula shows.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from relulab.budget.fold import compose_convs, fold, fold_speed, randomize_batchnorms
from relulab.budget.repvgg import RepVGGBlock, fuse_batchnorm, reparameterize
from relulab.errors import UserError

CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
BATCHNORMS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for module in model.modules():  # default inits, reseeded so each case is reproducible
        if hasattr(module, "reset_parameters") and not isinstance(module, nn.BatchNorm1d):
            module.reset_parameters()
    randomize_batchnorms(model, torch.Generator().manual_seed(seed))
    return model.eval()


def assert_folds_exactly(model: nn.Module, x: torch.Tensor, **options) -> nn.Module:
    """fold(model) in float32 against the unfolded model in float64; returns the folded."""
    folded = fold(model, **options)
    with torch.no_grad():
        reference = copy.deepcopy(model).double().eval()(x.double())
        unfolded32 = model.eval()(x)
        out = folded(x)
    assert out.dtype == torch.float32
    # the tolerance is one the unfolded model itself meets in float32
    torch.testing.assert_close(unfolded32.double(), reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.double(), reference, atol=1e-5, rtol=1e-5)
    return folded


def convs(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]


# (dims, first conv's kwargs, second conv's kwargs, channels c0 -> c1 -> c2)
FOLDED = {
    "3x3 pad1 then 3x3 unpadded": (
        2, dict(kernel_size=3, padding=1), dict(kernel_size=3), (3, 6, 5),
    ),
    "stride 2 then dilated 2": (
        2, dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3, dilation=2), (3, 4, 5),
    ),
    "dilated 2 then stride 2": (
        2, dict(kernel_size=3, dilation=2, padding=2), dict(kernel_size=3, stride=2), (2, 4, 3),
    ),
    "dilated merged kernel": (
        2, dict(kernel_size=3, dilation=2, stride=2), dict(kernel_size=2), (2, 3, 4),
    ),
    "1d reflect-padded then strided": (
        1, dict(kernel_size=5, stride=3, padding=2, padding_mode="reflect"),
        dict(kernel_size=2, stride=2), (3, 4, 2),
    ),
    "3d grouped then 1x1x1 grouped": (
        3, dict(kernel_size=3, padding=1, groups=2), dict(kernel_size=1, groups=4), (4, 8, 8),
    ),
    "groups 4 then groups 6": (
        2, dict(kernel_size=3, padding=1, groups=4), dict(kernel_size=1, groups=6), (4, 12, 6),
    ),
    "depthwise then depthwise": (
        2, dict(kernel_size=3, padding=1, groups=6), dict(kernel_size=3, groups=6), (6, 6, 6),
    ),
    "non-square kernels": (
        2, dict(kernel_size=(1, 3), padding=(0, 1)), dict(kernel_size=(3, 1)), (3, 4, 5),
    ),
    "padding='same' then 'valid'": (
        2, dict(kernel_size=3, padding="same"), dict(kernel_size=3, padding="valid"), (3, 4, 4),
    ),
    "1x1 without bias then padded 3x3": (
        2, dict(kernel_size=1, bias=False), dict(kernel_size=3, padding=1), (5, 3, 4),
    ),
    "1x1 with bias then reflect-padded 3x3": (
        2, dict(kernel_size=1), dict(kernel_size=3, padding=1, padding_mode="reflect"), (5, 3, 4),
    ),
    "1x1 then circular dilated strided": (
        2, dict(kernel_size=1),
        dict(kernel_size=3, padding=2, dilation=2, stride=2, padding_mode="circular"), (5, 3, 4),
    ),
}  # fmt: skip

REFUSED = {
    "3x3 then zero-padded 3x3": (2, dict(kernel_size=3, padding=1), dict(kernel_size=3, padding=1)),
    "1x1 with bias then zero-padded 3x3": (2, dict(kernel_size=1), dict(kernel_size=3, padding=1)),
    "strided 1x1 then padded 3x3": (
        2, dict(kernel_size=1, stride=2, bias=False), dict(kernel_size=3, padding=1),
    ),
    "padded 1x1 then padded 3x3": (
        2, dict(kernel_size=1, padding=1, bias=False), dict(kernel_size=3, padding=1),
    ),
    "uneven 'same' padding": (1, dict(kernel_size=4, padding="same"), dict(kernel_size=1)),
}  # fmt: skip


@pytest.mark.parametrize("with_batchnorm", [False, True])
@pytest.mark.parametrize("case", FOLDED)
def test_conv_conv_folded_exactly(case, with_batchnorm):
    dims, first, second, (c0, c1, c2) = FOLDED[case]
    conv, bn = CONVS[dims], BATCHNORMS[dims]
    layers = [conv(c0, c1, **first), nn.Identity(), conv(c1, c2, **second)]
    if with_batchnorm:  # a BatchNorm gives the first conv a bias: padded cases are refused
        layers[1:2] = [bn(c1), nn.Identity()]
        layers.append(bn(c2))
    model = randomized(nn.Sequential(*layers))
    x = torch.randn(2, c0, *[11, 9, 7][:dims])
    folded = assert_folds_exactly(model, x, costlier=True)
    bias_breaks_it = second.get("padding", 0) not in (0, "valid") and (
        second.get("padding_mode", "zeros") == "zeros"
    )
    expected = 2 if with_batchnorm and bias_breaks_it else 1
    assert len(convs(folded)) == expected, folded
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("case", REFUSED)
def test_conv_conv_refused_where_borders_differ(case):
    dims, first, second = REFUSED[case]
    model = randomized(nn.Sequential(CONVS[dims](3, 4, **first), CONVS[dims](4, 5, **second)))
    folded = assert_folds_exactly(model, torch.randn(2, 3, *[10, 9, 7][:dims]), costlier=True)
    assert len(convs(folded)) == 2
    assert compose_convs(*model, costlier=True) is None


@pytest.mark.parametrize(
    "first, second, geometry",
    [
        (  # taps of the first every 2 input pixels, of the second every 2*1: a dilated kernel
            nn.Conv2d(2, 3, 3, dilation=2, stride=2),
            nn.Conv2d(3, 4, 2),
            dict(kernel_size=(4, 4), dilation=(2, 2), stride=(2, 2), groups=1),
        ),
        (  # groups 4 and 6 over 12 channels share blocks of 6: 2 groups
            nn.Conv2d(4, 12, 3, groups=4),
            nn.Conv2d(12, 6, 1, stride=3, groups=6),
            dict(kernel_size=(3, 3), dilation=(1, 1), stride=(3, 3), groups=2),
        ),
        (  # d1=2 and d2*s1=3 share no step: taps 0,2 and 0,3 span 6, dilation 1
            nn.Conv1d(2, 2, 2, dilation=2, stride=3),
            nn.Conv1d(2, 2, 2),
            dict(kernel_size=(6,), dilation=(1,), stride=(3,), groups=1),
        ),
    ],
)
def test_merged_conv_geometry(first, second, geometry):
    merged = compose_convs(first, second, costlier=True)
    assert {key: getattr(merged, key) for key in geometry} == geometry
    x = torch.randn(2, first.in_channels, *[25] * (first.weight.dim() - 2))
    with torch.no_grad():
        torch.testing.assert_close(merged(x), second(first(x)), atol=1e-5, rtol=1e-5)


def test_refused_case_really_is_not_one_conv():
    """A zero-padded 3x3 after a 1x1 with a bias: merging as if it had none is wrong only at
    the border, which is why the bias must be zero (or the padding not zeros) to fold."""
    first, second = nn.Conv2d(2, 3, 1), nn.Conv2d(3, 2, 3, padding=1)
    bias_free = copy.deepcopy(first)
    with torch.no_grad():
        bias_free.bias.zero_()
    merged = compose_convs(bias_free, second)
    with torch.no_grad():  # put the first bias back in as a constant, as a naive merge would
        merged.bias += second.weight.sum(dim=(2, 3)) @ first.bias
        x = torch.randn(1, 2, 6, 6)
        difference = (merged(x) - second(first(x))).abs()
    assert difference[..., 1:-1, 1:-1].max() < 1e-5
    assert difference.max() > 1e-3


def test_costlier_merges_refused_by_default():
    two_3x3 = randomized(nn.Sequential(nn.Conv2d(16, 16, 3), nn.Conv2d(16, 16, 3)))
    x = torch.randn(2, 16, 9, 9)
    assert len(convs(assert_folds_exactly(two_3x3, x))) == 2  # 25*16² > 2*9*16²
    assert len(convs(assert_folds_exactly(two_3x3, x, costlier=True))) == 1
    # a strided second conv reads 4 outputs of the first per output: 25*8² < 9*8² + 4*9*8²
    strided = randomized(nn.Sequential(nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3, stride=2)))
    assert len(convs(assert_folds_exactly(strided, torch.randn(2, 8, 11, 11)))) == 1
    bottleneck = randomized(nn.Sequential(nn.Linear(40, 2), nn.Linear(2, 40)))
    x = torch.randn(3, 40)
    assert len(assert_folds_exactly(bottleneck, x)) == 2
    assert len(assert_folds_exactly(bottleneck, x, costlier=True)) == 1


def test_linear_chain_with_batchnorm_dropout_identity():
    model = randomized(
        nn.Sequential(
            nn.Linear(12, 10),
            nn.BatchNorm1d(10),
            nn.Identity(),
            nn.Dropout(0.5),
            nn.Linear(10, 8, bias=False),
            nn.BatchNorm1d(8, affine=False),
            nn.Linear(8, 4),
        )
    )
    folded = assert_folds_exactly(model, torch.randn(7, 12))
    assert len(folded) == 1 and isinstance(folded[0], nn.Linear)


def test_flatten_is_a_barrier_and_nested_sequentials_fold_across():
    model = randomized(
        nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)),
            nn.Sequential(nn.Identity(), nn.Sequential(nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4))),
            nn.Flatten(),
            nn.Linear(4 * 6 * 6, 5),
            nn.Sequential(nn.Linear(5, 3)),
        )
    )
    folded = assert_folds_exactly(model, torch.randn(2, 3, 6, 6))
    assert [type(m) for m in folded] == [nn.Conv2d, nn.Flatten, nn.Linear]


class Residual(nn.Module):
    """A custom forward: folded inside, kept as it is."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Identity())
        self.block = RepVGGBlock(4, 4)

    def forward(self, x):
        return self.block(x + self.body(x))


def test_custom_module_children_folded_and_input_untouched():
    model = randomized(nn.Sequential(Residual(), nn.Conv2d(4, 2, 1)))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 4, 5, 5)
    folded = fold(model)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert isinstance(folded[0], Residual) and not folded.training
    assert len(folded[0].body) == 1
    own = {p.data_ptr() for p in model.parameters()}
    assert not own & {p.data_ptr() for p in folded.parameters()}
    assert_folds_exactly(model, x)  # against the eval-mode forward


def test_batchnorm_without_running_stats_left_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    folded = fold(model)
    assert isinstance(folded[1], nn.BatchNorm2d)
    x = torch.randn(4, 3, 6, 6)
    torch.testing.assert_close(folded(x), model.eval()(x))
    with pytest.raises(UserError, match="running statistics"):
        fuse_batchnorm(model[0].weight, model[0].bias, model[1])


class SquareConv(nn.Conv2d):
    """A subclass whose constructor takes other arguments; its forward is Conv2d's."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, 3, padding=1, bias=False)


def test_subclass_with_own_constructor_folded_into_plain_conv():
    model = randomized(nn.Sequential(SquareConv(3), nn.BatchNorm2d(3), nn.Conv2d(3, 2, 1)))
    folded = assert_folds_exactly(model, torch.randn(2, 3, 6, 6))
    assert [type(m) for m in folded] == [nn.Conv2d]


def test_lazy_modules_not_yet_run_left_alone():
    folded = fold(nn.Sequential(nn.Sequential(nn.LazyConv2d(4, 3), nn.BatchNorm2d(4))))
    assert [type(m) for m in folded] == [nn.LazyConv2d, nn.BatchNorm2d]


@pytest.mark.parametrize(
    "in_channels, out_channels, stride, groups",
    [(4, 4, 1, 1), (4, 6, 1, 1), (4, 4, 2, 1), (6, 6, 1, 3), (6, 9, 2, 3), (8, 8, 1, 8)],
)
def test_repvgg_reparameterize(in_channels, out_channels, stride, groups):
    block = randomized(RepVGGBlock(in_channels, out_channels, stride, groups))
    assert (block.identity is not None) == (in_channels == out_channels and stride == 1)
    deployed = reparameterize(block)
    conv, act = deployed
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.groups == groups
    assert isinstance(act, nn.ReLU)
    x = torch.randn(2, in_channels, 7, 8)
    with torch.no_grad():
        reference = copy.deepcopy(block).double()(x.double())
        torch.testing.assert_close(deployed(x).double(), reference, atol=1e-5, rtol=1e-5)
    folded = assert_folds_exactly(nn.Sequential(block), x)
    assert [type(m) for m in folded] == [nn.Conv2d, nn.ReLU]


def test_repvgg_without_relu_folds_into_next_conv():
    block = RepVGGBlock(4, 4)
    block.act = nn.Identity()  # what a ReLU-removal method leaves
    model = randomized(nn.Sequential(block, nn.Conv2d(4, 3, 1), nn.BatchNorm2d(3)))
    folded = assert_folds_exactly(model, torch.randn(2, 4, 6, 6))
    assert [type(m) for m in folded] == [nn.Conv2d]


def test_repvgg_rejects_bad_groups_and_non_blocks():
    with pytest.raises(UserError, match="groups=3"):
        RepVGGBlock(4, 6, groups=3)
    with pytest.raises(UserError, match="RepVGGBlock"):
        reparameterize(nn.Conv2d(2, 2, 3))


def test_fold_speed_reports_both_models():
    results = fold_speed(batch=2, rounds=1)
    assert set(results) == {"stack", "repvgg"}
    for result in results.values():
        assert result["layers_folded"] < result["layers_unfolded"]
        assert result["max_abs_difference"] < 1e-5
        assert result["unfolded_seconds"] > 0 and result["folded_seconds"] > 0


def test_resnet18_folds_every_batchnorm_and_keeps_its_outputs():
    from relulab.budget.fold import randomize_batchnorms
    from relulab.budget.resnet import resnet18

    torch.manual_seed(0)
    model = resnet18().eval()
    randomize_batchnorms(model, torch.Generator().manual_seed(1))
    folded = fold(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 20
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model.double()(x.double())
        assert torch.allclose(folded(x).double(), reference, atol=1e-4, rtol=1e-4)
