"""Exponential-tail rectifiers (ELU, SELU, CELU) and softplus as modules."""

from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from relulab import functional as F
from relulab.activations.base import Activation, check_number
from relulab.kernels import definitions as kernels
from relulab.registry import TorchEquivalent, register


@register(
    "elu",
    formula="x if x > 0 else α·(eˣ − 1)",
    paper="Clevert, Unterthiner & Hochreiter 2015, Fast and Accurate Deep Network Learning by "
    "Exponential Linear Units (ELUs), arXiv:1511.07289",
    function=F.elu,
    smooth=True,
    monotonic=True,
    bounded_below=True,
    timm_equivalent="elu",
    kernel=kernels.elu,
    torch=TorchEquivalent(
        nn.ELU,
        ("alpha",),
        functions={TF.elu: ("alpha", "inplace"), TF.elu_: ("alpha", "_inplace")},
    ),
)
class ELU(Activation):
    r"""Exponential linear unit, :math:`x` for :math:`x > 0`, :math:`\alpha(e^x - 1)` otherwise.

    C¹ only for α = 1 (the default); bounded below by −α.

    Args:
        alpha: α. Default: 1.0

    Example::

        >>> ELU()(torch.tensor([-1.0, 2.0]))
        tensor([-0.6321,  2.0000])
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__(alpha=check_number("elu", "alpha", alpha))

    def reference(self, x: Tensor) -> Tensor:
        return F.elu(x, self.alpha)


@register(
    "selu",
    formula="λ·x if x > 0 else λ·α·(eˣ − 1), λ ≈ 1.0507, α ≈ 1.6733",
    paper="Klambauer et al. 2017, Self-Normalizing Neural Networks, arXiv:1706.02515",
    function=F.selu,
    monotonic=True,
    bounded_below=True,
    timm_equivalent="selu",
    kernel=kernels.selu,
    torch=TorchEquivalent(
        nn.SELU,
        functions={
            TF.selu: ("inplace",),
            torch.selu: (),
            TF.selu_: ("_inplace",),
            torch.selu_: ("_inplace",),
        },
    ),
)
class SELU(Activation):
    r"""Scaled ELU with the self-normalising constants.

    :math:`\lambda x` for :math:`x > 0`, :math:`\lambda\alpha(e^x - 1)` otherwise, with
    :math:`\lambda = 1.0507\ldots` and :math:`\alpha = 1.6733\ldots`.

    Example::

        >>> SELU()(torch.tensor([-1.0, 2.0]))
        tensor([-1.1113,  2.1014])
    """

    def reference(self, x: Tensor) -> Tensor:
        return F.selu(x)


@register(
    "celu",
    formula="max(0, x) + min(0, α·(e^{x/α} − 1))",
    paper="Barron 2017, Continuously Differentiable Exponential Linear Units, arXiv:1704.07483",
    function=F.celu,
    smooth=True,
    monotonic=True,
    bounded_below=True,
    timm_equivalent="celu",
    kernel=kernels.celu,
    torch=TorchEquivalent(
        nn.CELU,
        ("alpha",),
        functions={
            TF.celu: ("alpha", "inplace"),
            TF.celu_: ("alpha", "_inplace"),
            torch.celu_: ("alpha", "_inplace"),
        },
    ),
)
class CELU(Activation):
    r"""Continuously differentiable ELU, :math:`\max(0, x) + \min(0, \alpha(e^{x/\alpha} - 1))`.

    Args:
        alpha: α > 0. Default: 1.0

    Example::

        >>> CELU(alpha=2.0)(torch.tensor([-1.0, 2.0]))
        tensor([-0.7869,  2.0000])
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__(alpha=check_number("celu", "alpha", alpha, above=0.0))

    def reference(self, x: Tensor) -> Tensor:
        return F.celu(x, self.alpha)


@register(
    "softplus",
    formula="log(1 + e^{βx})/β (x where βx > threshold)",
    paper="Dugas et al. 2000, Incorporating Second-Order Functional Knowledge for Better Option "
    "Pricing (NeurIPS)",
    function=F.softplus,
    smooth=True,
    monotonic=True,
    bounded_below=True,
    notes="As in torch, x is returned where βx > threshold (an error below 2.1e-9 at the "
    "default); threshold=None gives the exact function everywhere.",
    kernel=kernels.softplus,
    torch=TorchEquivalent(
        nn.Softplus, ("beta", "threshold"), functions={TF.softplus: ("beta", "threshold")}
    ),
)
class Softplus(Activation):
    r"""Softplus, :math:`\frac{1}{\beta}\log(1 + e^{\beta x})`, a smooth ReLU.

    Like torch, returns x where :math:`\beta x` exceeds ``threshold``; pass
    ``threshold=None`` for the exact function (computed without overflow).

    Args:
        beta: β > 0. Default: 1.0
        threshold: above βx = threshold the output is x; None: never. Default: 20.0

    Example::

        >>> Softplus()(torch.tensor([-1.0, 0.0, 30.0]))
        tensor([ 0.3133,  0.6931, 30.0000])
    """

    def __init__(self, beta: float = 1.0, threshold: float | None = 20.0) -> None:
        if threshold is not None:
            threshold = check_number("softplus", "threshold", threshold)
        super().__init__(
            beta=check_number("softplus", "beta", beta, above=0.0), threshold=threshold
        )

    def reference(self, x: Tensor) -> Tensor:
        return F.softplus(x, self.beta, self.threshold)
