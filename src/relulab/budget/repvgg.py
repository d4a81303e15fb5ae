"""RepVGG structural re-parameterization: three parallel branches trained, one conv deployed.

A :class:`RepVGGBlock` trains as ``act(BN(conv3x3 x) + BN(conv1x1 x) + BN(x))`` (Ding et al.,
"RepVGG: Making VGG-style ConvNets Great Again", CVPR 2021; code: DingXiaoH/RepVGG
``repvgg.py``). Every branch is linear in eval mode, so :func:`reparameterize` merges them
into one 3x3 conv followed by the block's activation. The formulas, per branch:

* BatchNorm into the preceding conv: with :math:`s = \\gamma/\\sqrt{\\sigma^2+\\epsilon}`
  per output channel, :math:`W' = W s` and :math:`b' = (b - \\mu) s + \\beta`
  (:func:`fuse_batchnorm`);
* the 1x1 kernel is zero-padded to 3x3 (its tap at the centre);
* the identity branch is the 3x3 kernel with a 1 at ``[i, i mod (c_in/groups), 1, 1]``;
* :math:`K = K_3 + \\mathrm{pad}(K_1) + K_{id}`, :math:`b = b_3 + b_1 + b_{id}`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from relulab.errors import UserError


def fuse_batchnorm(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(layer(x))`` in eval mode, for a conv or linear ``layer``.

    Args:
        weight: the layer's weight, output channels first.
        bias: the layer's bias, or None.
        bn: a BatchNorm with running statistics; its eval-mode map is used.

    Returns:
        ``(W * s, (b - running_mean) * s + beta)`` with ``s = gamma / sqrt(running_var + eps)``
        broadcast over the output channels, in the dtype of ``weight``.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise UserError(
            f"{type(bn).__name__} has no running statistics (track_running_stats=False); "
            "only a BatchNorm with running statistics has a fixed eval-mode map to fold"
        )
    var, mean = bn.running_var.to(weight), bn.running_mean.to(weight)
    scale = torch.rsqrt(var + bn.eps)
    shift = -mean * scale
    if bn.weight is not None:
        scale = scale * bn.weight.to(weight)
        shift = shift * bn.weight.to(weight) + bn.bias.to(weight)
    if bias is not None:
        shift = shift + bias.to(weight) * scale
    return weight * scale.reshape(-1, *[1] * (weight.dim() - 1)), shift


class RepVGGBlock(nn.Module):
    """RepVGG's training-time block: ``act(BN(conv3x3 x) + BN(conv1x1 x) + BN(x))``.

    The identity branch exists only when ``in_channels == out_channels`` and ``stride == 1``.
    Both convs have no bias (their BatchNorm has one), the 3x3 is padded by 1 so that the
    branches' outputs align, and both are grouped by ``groups``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of both convs.
        groups: groups of both convs; must divide both channel counts.

    Shape:
        - Input: :math:`(N, C_{in}, H, W)`.
        - Output: :math:`(N, C_{out}, \\lceil H/s \\rceil, \\lceil W/s \\rceil)`.

    Examples::

        >>> block = RepVGGBlock(8, 8, groups=2).eval()
        >>> x = torch.randn(2, 8, 5, 5)
        >>> torch.allclose(reparameterize(block)(x), block(x), atol=1e-5)
        True
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise UserError(
                f"groups={groups} must divide in_channels={in_channels} and "
                f"out_channels={out_channels}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.groups = stride, groups

        def conv_bn(kernel_size: int) -> nn.Sequential:
            conv = nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                groups=groups, bias=False,
            )  # fmt: skip
            return nn.Sequential(conv, nn.BatchNorm2d(out_channels))

        self.branch3x3 = conv_bn(3)
        self.branch1x1 = conv_bn(1)
        self.identity = (
            nn.BatchNorm2d(in_channels) if in_channels == out_channels and stride == 1 else None
        )
        self.act: nn.Module = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch3x3(x) + self.branch1x1(x)
        if self.identity is not None:
            out = out + self.identity(x)
        return self.act(out)

    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 3x3 kernel and bias of the eval-mode sum of the branches (differentiable).

        The identity branch is a 3x3 kernel with a 1 at ``[i, i mod (c_in/groups), 1, 1]``
        passed through its BatchNorm like the conv branches.
        """
        conv3, bn3 = self.branch3x3
        conv1, bn1 = self.branch1x1
        kernel, bias = fuse_batchnorm(conv3.weight, conv3.bias, bn3)
        kernel1, bias1 = fuse_batchnorm(conv1.weight, conv1.bias, bn1)
        kernel = kernel + F.pad(kernel1, [1, 1, 1, 1])  # the 1x1 tap at the centre
        bias = bias + bias1
        if self.identity is not None:
            per_group = self.in_channels // self.groups
            eye = torch.zeros_like(conv3.weight)
            channels = torch.arange(self.in_channels)
            eye[channels, channels % per_group, 1, 1] = 1
            kernel_id, bias_id = fuse_batchnorm(eye, None, self.identity)
            kernel, bias = kernel + kernel_id, bias + bias_id
        return kernel, bias


def reparameterize(block: RepVGGBlock) -> nn.Sequential:
    """One 3x3 conv followed by a copy of the block's activation, equal to ``block`` in eval mode.

    The kernel is computed in float64 and stored in the block's dtype. The block is not
    changed; the result is in eval mode (its conv has no BatchNorm left to train).

    Args:
        block: a :class:`RepVGGBlock`; its BatchNorms' running statistics are used.

    Returns:
        ``nn.Sequential(conv, act)``: ``conv`` a 3x3 conv with stride, padding 1, groups and a
        bias; ``act`` a deep copy of ``block.act`` (``nn.ReLU`` unless it was replaced).
    """
    if not isinstance(block, RepVGGBlock):
        raise UserError(f"reparameterize expects a RepVGGBlock, got {type(block).__name__}")
    dtype = block.branch3x3[0].weight.dtype
    with torch.no_grad():
        kernel, bias = copy.deepcopy(block).double().equivalent_kernel_bias()
        conv = nn.Conv2d(
            block.in_channels, block.out_channels, 3, block.stride, 1, groups=block.groups,
            device=kernel.device, dtype=dtype,
        )  # fmt: skip
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
    return nn.Sequential(conv, copy.deepcopy(block.act)).eval()
