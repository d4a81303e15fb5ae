"""Fold what became linear: merge adjacent linear maps once the ReLUs between them are gone.

:func:`fold` returns a new model, equal to the input's eval-mode forward, in which

* every :class:`~relulab.budget.repvgg.RepVGGBlock` is one 3x3 conv plus its activation
  (:func:`~relulab.budget.repvgg.reparameterize`);
* within every ``nn.Sequential`` chain (nested plain Sequentials are flattened into their
  parent chain first), ``nn.Identity`` and dropout modules (identities in eval mode) are
  dropped, and then, left to right:

  - a BatchNorm with running statistics is folded into the Conv or Linear right before it:
    ``BatchNorm{n}d`` after ``Conv{n}d``; ``BatchNorm1d`` after ``Linear``, which assumes
    the Linear's output is ``(N, features)`` (the only shape on which BatchNorm1d normalises
    the Linear's features);
  - ``Linear`` after ``Linear`` becomes one ``Linear``;
  - ``Conv`` after ``Conv`` becomes one ``Conv`` in the two cases where that is exact
    everywhere, borders included (:func:`compose_convs`).

Conv after Conv, the cases folded: (a) the second conv has no padding: the first conv's
padding (in any padding mode) acts on the input, the second's window only reads outputs of
the first, so the pair is one conv with the first's padding, stride ``s1*s2``, and a kernel
that spans both windows; (b) the first conv is pointwise (1x1, stride 1, no padding) and
either has no bias (all zeros) or the second pads by reflect/replicate/circular: a pointwise
map commutes with those paddings, so the pair is the second conv's geometry with its kernel
mixed by the first's channels. Refused (left unfolded): a padded second conv after a conv with
a spatial kernel, stride or padding, and a zero-padded second conv after a pointwise conv
with a nonzero bias: the second conv reads zeros at the border where a single conv would read
the first conv's output of the padded input (its bias, or its window over real pixels).

A merge is also refused, unless ``costlier=True``, where the merged layer takes more
multiply-accumulates per output than the pair, the first conv counted as often as it runs
per output of the second (``prod(s2)`` times): two unstrided 3x3 convs make a 5x5 conv, 25 c²
against 18 c²; a depthwise conv after a pointwise one makes a dense conv; a Linear bottleneck
``in -> h -> out`` with ``h`` small. Folding is meant to make the model faster.

Merged layers are plain ``nn.Conv{n}d``/``nn.Linear`` with a bias. Not handled: anything
outside an ``nn.Sequential`` chain (a custom module's own forward is kept; its child
Sequentials are folded), BatchNorm before a layer, Linear after Flatten after Conv (a Flatten
is a barrier), transposed convs, lazy modules not yet run, and subclasses that override
``forward`` (all left as they are).
"""

from __future__ import annotations

import copy
import itertools
import math
import statistics
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from relulab.budget.repvgg import RepVGGBlock, fuse_batchnorm, reparameterize

_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BATCHNORMS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
             nn.FeatureAlphaDropout)  # fmt: skip


def _plain(module: nn.Module, classes: type | tuple[type, ...]) -> bool:
    """``module`` is one of ``classes`` and computes what that class's forward computes."""
    if not isinstance(module, classes) or any(
        isinstance(p, nn.parameter.UninitializedParameter) for p in module.parameters(recurse=False)
    ):  # a lazy module not yet run has no weights to fold
        return False
    bases = classes if isinstance(classes, tuple) else (classes,)
    return any(type(module).forward is base.forward for base in bases if isinstance(module, base))


def _conv_dims(module: nn.Module) -> int | None:
    for dims, cls in _CONVS.items():
        if _plain(module, cls):
            return dims
    return None


def _padding(conv: nn.modules.conv._ConvNd) -> tuple[int, ...] | None:
    """Per-dimension symmetric padding, or None where ``padding='same'`` pads unevenly."""
    if conv.padding == "valid":
        return (0,) * len(conv.kernel_size)
    if conv.padding == "same":
        totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        return None if any(t % 2 for t in totals) else tuple(t // 2 for t in totals)
    return tuple(conv.padding)


def _new_conv(
    like: nn.modules.conv._ConvNd, weight: torch.Tensor, bias: torch.Tensor, **geometry: Any
) -> nn.modules.conv._ConvNd:
    """A plain conv of ``like``'s dimensions, device, dtype and geometry (overridable).

    Plain: a subclass's own ``__init__`` may not take these arguments.
    """
    settings = dict(
        stride=like.stride, padding=like.padding, dilation=like.dilation, groups=like.groups,
        padding_mode=like.padding_mode,
    )  # fmt: skip
    settings.update(geometry)
    groups = settings["groups"]
    conv = _CONVS[len(like.kernel_size)](
        weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), **settings,
        device=like.weight.device, dtype=like.weight.dtype,
    )  # fmt: skip
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    return conv


def _new_linear(like: nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    linear = nn.Linear(
        weight.shape[1], weight.shape[0], device=like.weight.device, dtype=like.weight.dtype
    )
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    return linear


def _bias(layer: nn.Module) -> torch.Tensor:
    if layer.bias is not None:
        return layer.bias.detach().double()
    return torch.zeros(layer.weight.shape[0], dtype=torch.float64, device=layer.weight.device)


def _dense(conv: nn.modules.conv._ConvNd) -> torch.Tensor:
    """The conv's kernel with its groups spelled out: (C_out, C_in, *k), float64."""
    weight = conv.weight.detach().double()
    out_per, in_per = conv.out_channels // conv.groups, conv.in_channels // conv.groups
    dense = weight.new_zeros(conv.out_channels, conv.in_channels, *weight.shape[2:])
    for g in range(conv.groups):
        dense[g * out_per : (g + 1) * out_per, g * in_per : (g + 1) * in_per] = weight[
            g * out_per : (g + 1) * out_per
        ]
    return dense


def _grouped(dense: torch.Tensor, groups: int) -> torch.Tensor:
    """The diagonal blocks of a block-diagonal dense kernel, as a grouped conv's weight."""
    out_per, in_per = dense.shape[0] // groups, dense.shape[1] // groups
    return torch.cat(
        [
            dense[g * out_per : (g + 1) * out_per, g * in_per : (g + 1) * in_per]
            for g in range(groups)
        ]
    )


def _macs(conv: nn.modules.conv._ConvNd) -> int:
    """Multiply-accumulates per output position."""
    return conv.out_channels * (conv.in_channels // conv.groups) * math.prod(conv.kernel_size)


def compose_convs(
    first: nn.Module, second: nn.Module, *, costlier: bool = False
) -> nn.modules.conv._ConvNd | None:
    """One conv equal to ``second(first(x))`` for every input, or None where there is none.

    See the module docstring for the two cases that are folded and why the rest are not.
    The kernel is computed in float64 and stored in ``second``'s dtype.

    Args:
        first: the conv applied first.
        second: the conv applied to its output.
        costlier: merge even where the merged conv takes more multiply-accumulates per
            output than the pair.
    """
    dims = _conv_dims(first)
    if dims is None or dims != _conv_dims(second) or first.out_channels != second.in_channels:
        return None
    pad1, pad2 = _padding(first), _padding(second)
    if pad1 is None or pad2 is None:
        return None
    pointwise = (
        all(k == 1 for k in first.kernel_size)
        and all(s == 1 for s in first.stride)
        and not any(pad1)
    )
    if any(pad2):
        bias_free = first.bias is None or not bool(first.bias.detach().any())
        if not (pointwise and (bias_free or second.padding_mode != "zeros")):
            return None
        geometry = dict(padding=pad2, padding_mode=second.padding_mode)
    else:
        geometry = dict(padding=pad1, padding_mode=first.padding_mode)
    # The second conv's tap j2 reads the first's output j2*d2 steps on, i.e. the input
    # j2*d2*s1 steps on, and the first's tap j1 reads it j1*d1 further: the merged taps lie
    # on a grid of step gcd(d1, d2*s1), counting a dilation only where it spans taps.
    dilation, taps1, taps2 = [], [], []
    for d1, s1, k1, d2, k2 in zip(first.dilation, first.stride, first.kernel_size,
                                  second.dilation, second.kernel_size):  # fmt: skip
        steps = [s for s, k in ((d1, k1), (d2 * s1, k2)) if k > 1]
        step = math.gcd(*steps) if steps else 1
        dilation.append(step)
        taps1.append([j * d1 // step for j in range(k1)])
        taps2.append([j * d2 * s1 // step for j in range(k2)])
    stride = tuple(s1 * s2 for s1, s2 in zip(first.stride, second.stride))
    groups = math.gcd(first.groups, second.groups)
    size = [max(a) + max(b) + 1 for a, b in zip(taps1, taps2)]
    # The first conv runs prod(s2) times per output of the second.
    macs = second.out_channels * first.in_channels // groups * math.prod(size)
    if not costlier and macs > _macs(second) + _macs(first) * math.prod(second.stride):
        return None
    kernel1, kernel2 = _dense(first), _dense(second)
    kernel = kernel2.new_zeros(second.out_channels, first.in_channels, *size)
    for j1 in itertools.product(*(range(len(t)) for t in taps1)):
        for j2 in itertools.product(*(range(len(t)) for t in taps2)):
            at = tuple(taps1[d][j1[d]] + taps2[d][j2[d]] for d in range(dims))
            kernel[(slice(None), slice(None), *at)] += kernel2[(..., *j2)] @ kernel1[(..., *j1)]
    bias = _bias(second) + kernel2.sum(dim=tuple(range(2, 2 + dims))) @ _bias(first)
    return _new_conv(second, _grouped(kernel, groups), bias, stride=stride,
                     dilation=tuple(dilation), groups=groups, **geometry)  # fmt: skip


def _merge(previous: nn.Module, module: nn.Module, costlier: bool) -> nn.Module | None:
    """The single layer equal to ``module(previous(x))``, or None."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.running_mean is None:
            return None
        dims = _conv_dims(previous)
        follows_conv = dims is not None and type(module) is _BATCHNORMS[dims]
        follows_linear = _plain(previous, nn.Linear) and type(module) is nn.BatchNorm1d
        if not (follows_conv or follows_linear) or previous.weight.shape[0] != module.num_features:
            return None
        weight, bias = fuse_batchnorm(previous.weight.detach().double(), _bias(previous),
                                      copy.deepcopy(module).double())  # fmt: skip
        if dims is not None:
            return _new_conv(previous, weight, bias)
        return _new_linear(previous, weight, bias)
    if _plain(previous, nn.Linear) and _plain(module, nn.Linear):
        if previous.out_features != module.in_features:
            return None
        inner, outer = previous.weight.detach().double(), module.weight.detach().double()
        if not costlier and outer.shape[0] * inner.shape[1] > inner.numel() + outer.numel():
            return None
        return _new_linear(module, outer @ inner, outer @ _bias(previous) + _bias(module))
    return compose_convs(previous, module, costlier=costlier)


def _fold_chain(modules: Sequence[nn.Module], costlier: bool) -> list[nn.Module]:
    chain: list[nn.Module] = []
    for module in modules:
        if _plain(module, (nn.Identity, *_DROPOUTS)):
            continue
        merged = _merge(chain[-1], module, costlier) if chain else None
        if merged is None:
            chain.append(module)
        else:
            chain[-1] = merged
    return chain


def _is_chain(module: nn.Module) -> bool:
    return _plain(module, nn.Sequential)


def _fold(module: nn.Module, costlier: bool) -> nn.Module:
    if isinstance(module, RepVGGBlock):
        return reparameterize(module)
    if _is_chain(module):
        flat: list[nn.Module] = []
        for child in module:
            child = _fold(child, costlier)
            flat.extend(child if _is_chain(child) else [child])
        return nn.Sequential(*_fold_chain(flat, costlier))
    for name, child in list(module.named_children()):
        setattr(module, name, _fold(child, costlier))
    return module


def fold(model: nn.Module, *, costlier: bool = False) -> nn.Module:
    """A new model, equal to ``model`` in eval mode, with adjacent linear maps merged.

    What is merged and what is left is in the module docstring (:mod:`relulab.budget.fold`).
    The input model is not changed. The result is in eval mode and meant for inference:
    its BatchNorms and dropouts are gone where they were folded. Merged weights are computed
    in float64 and stored in the dtype of the layer they replace.

    Args:
        model: any module; its ``nn.Sequential`` chains and RepVGG blocks are folded.
        costlier: merge even where the merged layer takes more multiply-accumulates than
            the pair it replaces.

    Examples::

        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Identity(),
        ...                       nn.Conv2d(8, 4, 1), nn.Flatten(), nn.Linear(4, 2))
        >>> fold(model)
        Sequential(
          (0): Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1))
          (1): Flatten(start_dim=1, end_dim=-1)
          (2): Linear(in_features=4, out_features=2, bias=True)
        )
    """
    folded = copy.deepcopy(model).eval()
    return _fold(folded, costlier).eval()


def _speed_stack() -> nn.Sequential:
    """Conv-BN-(ReLU removed) layers, then Linear-BN-(removed)-Dropout-Linear-Linear."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.Identity(),
        nn.Conv2d(32, 32, 1), nn.BatchNorm2d(32), nn.Identity(),
        nn.Conv2d(32, 64, 3, stride=2), nn.BatchNorm2d(64), nn.Identity(),
        nn.Conv2d(64, 64, 1), nn.BatchNorm2d(64), nn.Identity(),
        nn.Flatten(), nn.Linear(64 * 15 * 15, 64), nn.BatchNorm1d(64), nn.Identity(),
        nn.Dropout(0.1), nn.Linear(64, 64), nn.Identity(), nn.Linear(64, 10),
    )  # fmt: skip


def _speed_repvgg() -> nn.Sequential:
    return nn.Sequential(
        RepVGGBlock(3, 32, stride=2), RepVGGBlock(32, 32), RepVGGBlock(32, 64, stride=2),
        RepVGGBlock(64, 64, groups=4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip


def randomize_batchnorms(model: nn.Module, generator: torch.Generator) -> None:
    """Random affine parameters and running statistics for every BatchNorm of ``model``."""
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.running_mean is not None:
                n = bn.num_features
                bn.running_mean.copy_(torch.randn(n, generator=generator))
                bn.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
                if bn.weight is not None:
                    bn.weight.copy_(torch.randn(n, generator=generator))
                    bn.bias.copy_(torch.randn(n, generator=generator))


def fold_speed(
    *, batch: int = 64, rounds: int = 15, threads: int = 2, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Eval-mode forward time of two models, unfolded and folded, timed side by side.

    The models: ``stack``, Conv-BN-Identity x4 (3x3 pad 1, 1x1, 3x3 stride 2, 1x1), Flatten,
    Linear-BN1d-Identity-Dropout-Linear-Identity-Linear on 3x32x32 inputs, which folds to
    one 5x5 conv, Flatten and one Linear; and ``repvgg``, four :class:`RepVGGBlock` (the
    last grouped), average pooling and a Linear, which folds to four 3x3 convs with ReLU.
    BatchNorm statistics are random. All four calls go round-robin
    (:func:`relulab.speed.round_robin`), and each folded/unfolded ratio is taken within a
    round.

    Returns:
        Per model: ``unfolded_seconds`` and ``folded_seconds`` (median per forward, under
        ``torch.no_grad``), ``speedup`` (median over rounds of unfolded/folded) with its
        quartiles ``speedup_q1``/``speedup_q3``, ``layers_unfolded``/``layers_folded``
        (leaf modules) and ``max_abs_difference`` between the two outputs.
    """
    from relulab.speed import round_robin  # the timing machinery; heavy imports

    generator = torch.Generator().manual_seed(seed)
    calls, details = {}, {}
    for name, build in (("stack", _speed_stack), ("repvgg", _speed_repvgg)):
        torch.manual_seed(seed)
        model = build()
        randomize_batchnorms(model, generator)
        model.eval()
        folded = fold(model)
        x = torch.randn(batch, 3, 32, 32, generator=generator)
        with torch.no_grad():
            difference = (folded(x) - model(x)).abs().max().item()

        def leaves(m: nn.Module) -> int:
            return sum(1 for c in m.modules() if not list(c.children()))

        details[name] = {"layers_unfolded": leaves(model), "layers_folded": leaves(folded),
                         "max_abs_difference": difference}  # fmt: skip
        for form, m in (("unfolded", model), ("folded", folded)):
            calls[name, form] = torch.no_grad()(lambda m=m, x=x: m(x))
    timings = round_robin(calls, {}, rounds=rounds, threads=threads)
    results = {}
    for name, detail in details.items():
        unfolded, folded_timing = timings[name, "unfolded"], timings[name, "folded"]
        unfolded.relative_to("speedup", folded_timing)
        summary = unfolded.summary()
        results[name] = {
            "unfolded_seconds": summary["seconds"],
            "folded_seconds": statistics.median(folded_timing.seconds),
            "speedup": summary["speedup"],
            "speedup_q1": summary["speedup_q1"],
            "speedup_q3": summary["speedup_q3"],
            **detail,
        }
    return results
