"""The CIFAR-style ResNet-18 that private-inference papers count ReLUs on.

The layout of kuangliu/pytorch-cifar's ``ResNet18`` (the model DeepReDuce, SNL and AutoReP
start from): a 3×3 stem convolution with 64 channels and no max-pool, four stages of two
:class:`BasicBlock` (64, 128, 256, 512 channels; strides 1, 2, 2, 2), global average pooling
and a linear classifier. Each activation is a module made by a factory, so that a reduction
method can find, replace or remove it by name (``layer2.1.act2``); kuangliu calls ``F.relu``.
The one other change: an adaptive average pool instead of ``F.avg_pool2d(out, 4)``, the same
for 32×32 inputs, so that other input sizes run too.

For a 3×32×32 input it evaluates 557,056 ReLUs: 64·32·32 in the stem, then two per block of
C·H·W each — 4·(64·32·32 + 128·16·16 + 256·8·8 + 512·4·4).
"""

from __future__ import annotations

import torch
from torch import nn

from relulab.bench.models import ActivationFactory


def _relu(_channels: int) -> nn.Module:
    return nn.ReLU()


def _conv_bn(in_planes: int, planes: int, kernel: int, stride: int) -> nn.Sequential:
    """A bias-free convolution (padding ``kernel // 2``) and its BatchNorm."""
    conv = nn.Conv2d(in_planes, planes, kernel, stride=stride, padding=kernel // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(planes))


class BasicBlock(nn.Module):
    """conv3×3 → BN → act → conv3×3 → BN, plus the shortcut (identity, or a strided 1×1
    conv with BN where the shape changes), → act."""

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, activation: ActivationFactory = _relu
    ):
        super().__init__()
        # conv + BN pairs as Sequentials, so that budget.fold merges each into one conv
        self.conv1 = _conv_bn(in_planes, planes, 3, stride)
        self.act1 = activation(planes)
        self.conv2 = _conv_bn(planes, planes, 3, 1)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = _conv_bn(in_planes, planes, 1, stride)
        self.act2 = activation(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.act1(self.conv1(x)))
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    """(N, 3, H, W) → stem → stages of :class:`BasicBlock` → global average pool → linear.

    Args:
        blocks: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        num_classes: outputs of the classifier.
        activation: makes each activation module from its number of channels (default
            ``nn.ReLU``).
        widths: channels of the stages; the stem has ``widths[0]``.
    """

    def __init__(
        self,
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        num_classes: int = 10,
        activation: ActivationFactory = _relu,
        widths: tuple[int, ...] = (64, 128, 256, 512),
    ):
        super().__init__()
        if len(blocks) != len(widths):
            raise ValueError(f"expected one width per stage, got {widths} for {blocks}")
        self.stem = _conv_bn(3, widths[0], 3, 1)
        self.act = activation(widths[0])
        in_planes = widths[0]
        for stage, (count, planes) in enumerate(zip(blocks, widths), 1):
            layers = []
            for block in range(count):
                stride = 2 if stage > 1 and block == 0 else 1
                layers.append(BasicBlock(in_planes, planes, stride, activation))
                in_planes = planes
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
        self.stages = len(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.stem(x))
        for stage in range(1, self.stages + 1):
            out = getattr(self, f"layer{stage}")(out)
        return self.linear(self.pool(out).flatten(1))


def resnet18(num_classes: int = 10, activation: ActivationFactory = _relu) -> ResNet:
    """CIFAR ResNet-18 (kuangliu/pytorch-cifar): 11,173,962 parameters for 10 classes.

    Example::

        >>> from relulab.budget.count import count_relus
        >>> count_relus(resnet18(), (3, 32, 32)).total
        557056
    """
    return ResNet((2, 2, 2, 2), num_classes, activation)
