"""ReLU and its piecewise-linear (or piecewise-polynomial) relatives as modules."""

from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from relulab import functional as F
from relulab.activations.base import Activation, check_count, check_number
from relulab.kernels import definitions as kernels
from relulab.registry import TorchEquivalent, register


@register(
    "identity",
    formula="x",
    paper="none: the identity, i.e. a removed activation (ReLU culling, linearisation)",
    aliases=("linear",),
    function=F.identity,
    piecewise_linear=True,
    smooth=True,
    monotonic=True,
    torch=TorchEquivalent(nn.Identity, in_models=False),
)
class Identity(Activation):
    r"""The identity, :math:`f(x) = x`: what an activation site becomes once its ReLU is cut.

    Example::

        >>> Identity()(torch.tensor([-1.0, 2.0]))
        tensor([-1.,  2.])
    """

    def reference(self, x: Tensor) -> Tensor:
        return x


@register(
    "relu",
    formula="max(0, x)",
    paper="Nair & Hinton 2010, Rectified Linear Units Improve Restricted Boltzmann Machines (ICML)",
    function=F.relu,
    piecewise_linear=True,
    monotonic=True,
    bounded_below=True,
    timm_equivalent="relu",
    kernel=kernels.relu,
    flat_region=True,
    torch=TorchEquivalent(
        nn.ReLU,
        functions={
            TF.relu: ("inplace",),
            torch.relu: (),
            TF.relu_: ("_inplace",),
            torch.relu_: ("_inplace",),
        },
        methods=("relu", "relu_"),
    ),
)
class ReLU(Activation):
    r"""Rectified linear unit, :math:`\mathrm{ReLU}(x) = \max(0, x)`.

    Example::

        >>> ReLU()(torch.tensor([-1.0, 0.0, 2.0]))
        tensor([0., 0., 2.])
    """

    def reference(self, x: Tensor) -> Tensor:
        return F.relu(x)


@register(
    "relu6",
    formula="min(max(0, x), 6)",
    paper="Krizhevsky 2010, Convolutional Deep Belief Networks on CIFAR-10",
    function=F.relu6,
    piecewise_linear=True,
    monotonic=True,
    bounded_below=True,
    timm_equivalent="relu6",
    kernel=kernels.relu6,
    flat_region=True,
    torch=TorchEquivalent(nn.ReLU6, functions={TF.relu6: ("inplace",)}),
)
class ReLU6(Activation):
    r"""ReLU capped at 6, :math:`\min(\max(0, x), 6)`.

    Example::

        >>> ReLU6()(torch.tensor([-1.0, 3.0, 9.0]))
        tensor([0., 3., 6.])
    """

    def reference(self, x: Tensor) -> Tensor:
        return F.relu6(x)


@register(
    "leaky_relu",
    formula="x if x ≥ 0 else negative_slope·x",
    paper="Maas, Hannun & Ng 2013, Rectifier Nonlinearities Improve Neural Network Acoustic "
    "Models (ICML workshop)",
    aliases=("leakyrelu", "lrelu"),
    function=F.leaky_relu,
    piecewise_linear=True,
    monotonic=True,
    timm_equivalent="leaky_relu",
    kernel=kernels.leaky_relu,
    torch=TorchEquivalent(
        nn.LeakyReLU,
        ("negative_slope",),
        functions={
            TF.leaky_relu: ("negative_slope", "inplace"),
            TF.leaky_relu_: ("negative_slope", "_inplace"),
        },
    ),
)
class LeakyReLU(Activation):
    r"""Leaky ReLU, :math:`f(x) = x` for :math:`x \ge 0` and :math:`a x` otherwise.

    Args:
        negative_slope: a, the slope for negative x. Default: 0.01

    Example::

        >>> LeakyReLU(negative_slope=0.2)(torch.tensor([-1.0, 2.0]))
        tensor([-0.2000,  2.0000])
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__(
            negative_slope=check_number("leaky_relu", "negative_slope", negative_slope)
        )

    def reference(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)


@register(
    "prelu",
    formula="x if x ≥ 0 else a·x, a learned (one per channel or shared)",
    paper="He et al. 2015, Delving Deep into Rectifiers, arXiv:1502.01852",
    function=F.prelu,
    piecewise_linear=True,
    monotonic=True,
    trainable=("weight",),
    timm_equivalent="prelu",
    kernel=kernels.prelu,
    torch=TorchEquivalent(nn.PReLU, ("num_parameters", "init")),
)
class PReLU(Activation):
    r"""Parametric ReLU: leaky ReLU whose negative slope :math:`a` is learned.

    Args:
        num_parameters: 1 (one shared a) or the number of channels (dim 1 of the input).
            Default: 1
        init: initial a. Default: 0.25

    Shape:
        - Input: :math:`(*)` with one slope, or :math:`(N, C, *)` with C = num_parameters.
        - Output: the shape of the input.

    Example::

        >>> PReLU()(torch.tensor([-1.0, 2.0]))
        tensor([-0.2500,  2.0000], grad_fn=<FusedActivationBackward>)
    """

    def __init__(self, num_parameters: int = 1, init: float = 0.25) -> None:
        super().__init__(
            num_parameters=check_count("prelu", "num_parameters", num_parameters),
            init=check_number("prelu", "init", init),
        )
        self.weight = nn.Parameter(torch.full((num_parameters,), float(init)))

    def reference(self, x: Tensor) -> Tensor:
        return F.prelu(x, self.weight)


@register(
    "shifted_relu",
    formula="max(0, x − shift)",
    paper="Mirzadeh et al. 2023, ReLU Strikes Back: Exploiting Activation Sparsity in Large "
    "Language Models, arXiv:2310.04564",
    aliases=("shiftedrelu",),
    function=F.shifted_relu,
    piecewise_linear=True,
    monotonic=True,
    bounded_below=True,
    notes="The paper picks the shift from the pre-activation distribution; the value it used "
    "(about 1 in its example) is not confirmed.",
    kernel=kernels.shifted_relu,
    flat_region=True,
)
class ShiftedReLU(Activation):
    r"""ReLU with a shifted threshold, :math:`\max(0, x - b)`, for sparser activations.

    Args:
        shift: b. Default: 1.0

    Example::

        >>> ShiftedReLU()(torch.tensor([0.5, 3.0]))
        tensor([0., 2.])
    """

    def __init__(self, shift: float = 1.0) -> None:
        super().__init__(shift=check_number("shifted_relu", "shift", shift))

    def reference(self, x: Tensor) -> Tensor:
        return F.shifted_relu(x, self.shift)


@register(
    "squared_relu",
    formula="max(0, x)²",
    paper="So et al. 2021, Primer: Searching for Efficient Transformers for Language Modeling, "
    "arXiv:2109.08668",
    aliases=("relu2", "relu_squared", "squaredrelu"),
    function=F.squared_relu,
    smooth=True,
    monotonic=True,
    bounded_below=True,
    kernel=kernels.squared_relu,
    flat_region=True,
)
class SquaredReLU(Activation):
    r"""Squared ReLU, :math:`\max(0, x)^2` (Primer).

    Example::

        >>> SquaredReLU()(torch.tensor([-1.0, 3.0]))
        tensor([0., 9.])
    """

    def reference(self, x: Tensor) -> Tensor:
        return F.squared_relu(x)


@register(
    "hard_sigmoid",
    formula="relu6(x + 3)/6",
    paper="Howard et al. 2019, Searching for MobileNetV3, arXiv:1905.02244",
    aliases=("hardsigmoid",),
    function=F.hard_sigmoid,
    piecewise_linear=True,
    monotonic=True,
    bounded_below=True,
    timm_equivalent="hard_sigmoid",
    kernel=kernels.hard_sigmoid,
    flat_region=True,
    torch=TorchEquivalent(nn.Hardsigmoid, functions={TF.hardsigmoid: ("inplace",)}),
    timm_modules=("HardSigmoid", "HardSigmoidMe"),
)
class HardSigmoid(Activation):
    r"""Piecewise-linear sigmoid, :math:`\mathrm{relu6}(x + 3)/6` (torch's definition).

    Example::

        >>> HardSigmoid()(torch.tensor([-4.0, 0.0, 4.0]))
        tensor([0.0000, 0.5000, 1.0000])
    """

    def reference(self, x: Tensor) -> Tensor:
        return F.hard_sigmoid(x)


@register(
    "hard_swish",
    formula="x·relu6(x + 3)/6",
    paper="Howard et al. 2019, Searching for MobileNetV3, arXiv:1905.02244",
    aliases=("hardswish",),
    function=F.hard_swish,
    bounded_below=True,
    timm_equivalent="hard_swish",
    kernel=kernels.hard_swish,
    flat_region=True,
    torch=TorchEquivalent(nn.Hardswish, functions={TF.hardswish: ("inplace",)}),
    timm_modules=("HardSwish", "HardSwishMe"),
)
class HardSwish(Activation):
    r"""Piecewise-quadratic swish, :math:`x \cdot \mathrm{relu6}(x + 3)/6` (torch's definition).

    Example::

        >>> HardSwish()(torch.tensor([-4.0, 1.0, 4.0]))
        tensor([-0.0000, 0.6667, 4.0000])
    """

    def reference(self, x: Tensor) -> Tensor:
        return F.hard_swish(x)


@register(
    "hard_mish",
    formula="x·clamp(x + 2, 0, 2)/2",
    paper="Wightman, timm (no paper): a piecewise-quadratic Mish",
    aliases=("hardmish",),
    function=F.hard_mish,
    bounded_below=True,
    timm_equivalent="hard_mish",
    kernel=kernels.hard_mish,
    flat_region=True,
    timm_modules=("HardMish", "HardMishMe"),
)
class HardMish(Activation):
    r"""Piecewise-quadratic Mish, :math:`\tfrac12 x \cdot \mathrm{clamp}(x + 2, 0, 2)` (timm's).

    Example::

        >>> HardMish()(torch.tensor([-3.0, -1.0, 2.0]))
        tensor([-0.0000, -0.5000,  2.0000])
    """

    def reference(self, x: Tensor) -> Tensor:
        return F.hard_mish(x)


@register(
    "smelu",
    formula="0 if x ≤ −β; (x + β)²/(4β) if |x| ≤ β; x if x ≥ β",
    paper="Shamir, Lin & Coviello 2020, Smooth Activations and Reproducibility in Deep Networks, "
    "arXiv:2010.09931",
    function=F.smelu,
    smooth=True,
    monotonic=True,
    bounded_below=True,
    kernel=kernels.smelu,
    flat_region=True,
)
class SmeLU(Activation):
    r"""Smooth reLU: ReLU with a quadratic joint of half-width :math:`\beta`.

    .. math::
        \mathrm{SmeLU}(x) = \begin{cases} 0 & x \le -\beta \\
        (x + \beta)^2 / (4\beta) & |x| \le \beta \\ x & x \ge \beta \end{cases}

    It equals ReLU convolved with a box of width :math:`2\beta` and is C¹.

    Args:
        beta: β > 0, half-width of the quadratic joint. Default: 2.0

    Example::

        >>> SmeLU()(torch.tensor([-3.0, 0.0, 3.0]))
        tensor([0.0000, 0.5000, 3.0000])
    """

    def __init__(self, beta: float = 2.0) -> None:
        super().__init__(beta=check_number("smelu", "beta", beta, above=0.0))

    def reference(self, x: Tensor) -> Tensor:
        return F.smelu(x, self.beta)


@register(
    "helu",
    formula="max(0, x); backward passes the gradient where x > −α",
    paper="Kimhi et al. 2024, Hysteresis Activation Function for Efficient Inference, "
    "arXiv:2411.10573",
    function=F.helu,
    piecewise_linear=True,
    monotonic=True,
    bounded_below=True,
    kernel=kernels.helu,
    flat_region=True,
)
class HeLU(Activation):
    r"""Hysteresis ReLU: ReLU forward, a gradient that also flows for slightly negative x.

    Forward :math:`\max(0, x)`, so inference is ReLU's one-bit sign test; backward
    :math:`\partial L/\partial x = g \cdot 1[x > -\alpha]` lets units just below zero recover
    (a fix for dying ReLUs). The backward is deliberately not the derivative of the forward.

    Args:
        alpha: α ≥ 0, how far below zero the gradient still passes. Default: 0.05

    Example::

        >>> x = torch.tensor([-0.01, -1.0, 2.0], requires_grad=True)
        >>> HeLU()(x).sum().backward()
        >>> x.grad
        tensor([1., 0., 1.])
    """

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__(alpha=check_number("helu", "alpha", alpha, at_least=0.0))

    def reference(self, x: Tensor) -> Tensor:
        return F.helu(x, self.alpha)
