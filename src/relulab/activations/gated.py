"""Self-gated activations x·g(x) (GELU, SiLU, Swish, Mish, GoLU) and the plain gates."""

from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from relulab import functional as F
from relulab.activations.base import Activation, check_flag, check_number, scalar_parameter
from relulab.kernels import definitions as kernels
from relulab.registry import TorchEquivalent, register

_GELU_PAPER = "Hendrycks & Gimpel 2016, Gaussian Error Linear Units (GELUs), arXiv:1606.08415"


@register(
    "sigmoid",
    formula="1/(1 + e^{−x})",
    paper="the logistic function; e.g. Rumelhart, Hinton & Williams 1986 (Nature)",
    aliases=("logistic",),
    function=F.sigmoid,
    smooth=True,
    monotonic=True,
    bounded_below=True,
    timm_equivalent="sigmoid",
    kernel=kernels.sigmoid,
    torch=TorchEquivalent(
        nn.Sigmoid,
        functions={torch.sigmoid: (), TF.sigmoid: ()},
        methods=("sigmoid", "sigmoid_"),
    ),
    timm_modules=("Sigmoid",),
)
class Sigmoid(Activation):
    r"""Logistic sigmoid, :math:`\sigma(x) = 1/(1 + e^{-x})`.

    Example::

        >>> Sigmoid()(torch.tensor([0.0, 2.0]))
        tensor([0.5000, 0.8808])
    """

    def reference(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


@register(
    "tanh",
    formula="tanh(x)",
    paper="LeCun, Bottou, Orr & Müller 1998, Efficient BackProp",
    function=F.tanh,
    smooth=True,
    monotonic=True,
    bounded_below=True,
    timm_equivalent="tanh",
    kernel=kernels.tanh,
    torch=TorchEquivalent(
        nn.Tanh, functions={torch.tanh: (), TF.tanh: ()}, methods=("tanh", "tanh_")
    ),
    timm_modules=("Tanh",),
)
class Tanh(Activation):
    r"""Hyperbolic tangent, :math:`\tanh(x)`.

    Example::

        >>> Tanh()(torch.tensor([0.0, 1.0]))
        tensor([0.0000, 0.7616])
    """

    def reference(self, x: Tensor) -> Tensor:
        return F.tanh(x)


@register(
    "gelu",
    formula="x·Φ(x) = x/2·(1 + erf(x/√2))",
    paper=_GELU_PAPER,
    aliases=("gelu_erf",),
    function=F.gelu,
    smooth=True,
    bounded_below=True,
    timm_equivalent="gelu",
    kernel=kernels.gelu,
    torch=TorchEquivalent(
        nn.GELU, selects={"approximate": "none"}, functions={TF.gelu: ("approximate",)}
    ),
    timm_modules=("GELU",),
)
class GELU(Activation):
    r"""Gaussian error linear unit, :math:`x\,\Phi(x)` with the exact normal CDF.

    Φ is computed from erfc, so the left tail keeps full relative precision where
    torch's ``1 + erf`` form cancels to zero (x < −8 in float64).

    Example::

        >>> GELU()(torch.tensor([-1.0, 0.0, 1.0]))
        tensor([-0.1587,  0.0000,  0.8413])
    """

    def reference(self, x: Tensor) -> Tensor:
        return F.gelu(x)


@register(
    "gelu_tanh",
    formula="x/2·(1 + tanh(√(2/π)·(x + 0.044715x³)))",
    paper=_GELU_PAPER,
    aliases=("gelu_new", "gelu_pytorch_tanh", "gelutanh"),
    function=F.gelu_tanh,
    smooth=True,
    bounded_below=True,
    timm_equivalent="gelu_tanh",
    kernel=kernels.gelu_tanh,
    torch=TorchEquivalent(
        nn.GELU, selects={"approximate": "tanh"}, functions={TF.gelu: ("approximate",)}
    ),
    timm_modules=("GELUTanh",),
)
class GELUTanh(Activation):
    r"""GELU's tanh approximation, :math:`\tfrac{x}{2}(1 + \tanh(\sqrt{2/\pi}(x + 0.044715x^3)))`.

    Computed as :math:`x\,\sigma(2u)`, which equals it and does not cancel for x ≪ 0.

    Example::

        >>> GELUTanh()(torch.tensor([-1.0, 0.0, 1.0]))
        tensor([-0.1588,  0.0000,  0.8412])
    """

    def reference(self, x: Tensor) -> Tensor:
        return F.gelu_tanh(x)


@register(
    "quick_gelu",
    formula="x·σ(1.702x)",
    paper=_GELU_PAPER + " (the sigmoid approximation; used by CLIP)",
    aliases=("quickgelu", "gelu_sigmoid"),
    function=F.quick_gelu,
    smooth=True,
    bounded_below=True,
    timm_equivalent="quick_gelu",
    kernel=kernels.quick_gelu,
    timm_modules=("QuickGELU",),
)
class QuickGELU(Activation):
    r"""GELU's sigmoid approximation, :math:`x\,\sigma(1.702x)`.

    Example::

        >>> QuickGELU()(torch.tensor([-1.0, 1.0]))
        tensor([-0.1542,  0.8458])
    """

    def reference(self, x: Tensor) -> Tensor:
        return F.quick_gelu(x)


@register(
    "silu",
    formula="x·σ(x)",
    paper="Elfwing, Uchibe & Doya 2017, Sigmoid-Weighted Linear Units for Neural Network "
    "Function Approximation in Reinforcement Learning, arXiv:1702.03118",
    function=F.silu,
    smooth=True,
    bounded_below=True,
    timm_equivalent="silu",
    kernel=kernels.silu,
    torch=TorchEquivalent(nn.SiLU, functions={TF.silu: ("inplace",)}),
    timm_modules=("Swish", "SwishMe"),
)
class SiLU(Activation):
    r"""Sigmoid linear unit, :math:`x\,\sigma(x)` (Swish with β = 1).

    Example::

        >>> SiLU()(torch.tensor([-1.0, 1.0]))
        tensor([-0.2689,  0.7311])
    """

    def reference(self, x: Tensor) -> Tensor:
        return F.silu(x)


@register(
    "swish",
    formula="x·σ(βx)",
    paper="Ramachandran, Zoph & Le 2017, Searching for Activation Functions, arXiv:1710.05941",
    function=F.swish,
    smooth=True,
    bounded_below=True,
    timm_equivalent="swish",
    notes="trainable=True learns one β shared by all units; the paper's per-channel β is "
    "not confirmed.",
    kernel=kernels.swish,
)
class Swish(Activation):
    r"""Swish, :math:`x\,\sigma(\beta x)`: SiLU at β = 1, x/2 at β = 0, ReLU as β → ∞.

    Args:
        beta: β. Default: 1.0
        trainable: learn β (one scalar). Default: False

    Example::

        >>> Swish(beta=2.0)(torch.tensor([-1.0, 1.0]))
        tensor([-0.1192,  0.8808])
    """

    def __init__(self, beta: float = 1.0, trainable: bool = False) -> None:
        super().__init__(
            beta=check_number("swish", "beta", beta),
            trainable=check_flag("swish", "trainable", trainable),
        )
        if trainable:
            self.beta = scalar_parameter(beta)

    def reference(self, x: Tensor) -> Tensor:
        return F.swish(x, self.beta)


@register(
    "mish",
    formula="x·tanh(softplus(x))",
    paper="Misra 2019, Mish: A Self Regularized Non-Monotonic Activation Function, "
    "arXiv:1908.08681",
    function=F.mish,
    smooth=True,
    bounded_below=True,
    timm_equivalent="mish",
    kernel=kernels.mish,
    torch=TorchEquivalent(nn.Mish, functions={TF.mish: ("inplace",)}),
    timm_modules=("Mish", "MishMe"),
)
class Mish(Activation):
    r"""Mish, :math:`x \tanh(\mathrm{softplus}(x))`; minimum ≈ −0.3088 at x ≈ −1.1924.

    Example::

        >>> Mish()(torch.tensor([-1.0, 1.0]))
        tensor([-0.3034,  0.8651])
    """

    def reference(self, x: Tensor) -> Tensor:
        return F.mish(x)


@register(
    "golu",
    formula="scale·x·exp(−shift·exp(−growth·x))",
    paper="Das et al. 2025, Gompertz Linear Units: Leveraging Asymmetry for Enhanced Learning "
    "Dynamics, arXiv:2502.03654",
    function=F.golu,
    smooth=True,
    bounded_below=True,
    kernel=kernels.golu,
)
class GoLU(Activation):
    r"""Gompertz linear unit, :math:`a\,x\,\exp(-b\,e^{-c x})`.

    The gate is the CDF of the standard Gumbel distribution (at a = b = c = 1), right-skewed,
    with a smaller slope at 0 than GELU's or Swish's. Computed without overflow: far left,
    where :math:`e^{-cx}` overflows, the gate is exactly 0.

    Args:
        scale: a. Default: 1.0
        shift: b ≥ 0. Default: 1.0
        growth: c ≥ 0. Default: 1.0
        trainable: learn a, b and c. Default: False (as the authors' default)

    Example::

        >>> GoLU()(torch.tensor([-1.0, 0.0, 1.0]))
        tensor([-0.0660,  0.0000,  0.6922])
    """

    def __init__(
        self, scale: float = 1.0, shift: float = 1.0, growth: float = 1.0, trainable: bool = False
    ) -> None:
        super().__init__(
            scale=check_number("golu", "scale", scale),
            shift=check_number("golu", "shift", shift, at_least=0.0),
            growth=check_number("golu", "growth", growth, at_least=0.0),
            trainable=check_flag("golu", "trainable", trainable),
        )
        if trainable:
            self.scale = scalar_parameter(scale)
            self.shift = scalar_parameter(shift)
            self.growth = scalar_parameter(growth)

    def reference(self, x: Tensor) -> Tensor:
        return F.golu(x, self.scale, self.shift, self.growth)
