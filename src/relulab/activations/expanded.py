"""Expanded gating ranges (xATLU, xGELU, xSiLU, ATLU) and SAU as modules."""

from __future__ import annotations

from torch import Tensor

from relulab import functional as F
from relulab.activations.base import Activation, check_number, scalar_parameter
from relulab.kernels import definitions as kernels
from relulab.registry import register

_EXPANDED_PAPER = (
    "Huang 2024, Expanded Gating Ranges Improve Activation Functions, arXiv:2405.20768"
)
_EXPANDED_NOTES = "α is one trainable scalar per module (the authors use one per MLP block)."


class _ExpandedGate(Activation):
    """x·g̃(x) with g̃ = (1 + 2α)·g − α and a trainable scalar α (0 gives the plain gate)."""

    def __init__(self, alpha: float = 0.0) -> None:
        super().__init__(alpha=check_number(self.activation_name, "alpha", alpha))
        self.alpha = scalar_parameter(alpha)


@register(
    "xatlu",
    formula="x·((1 + 2α)·(arctan(x) + π/2)/π − α), α trainable (init 0)",
    paper=_EXPANDED_PAPER,
    function=F.xatlu,
    smooth=True,
    monotonic=True,
    bounded_below=True,
    trainable=("alpha",),
    notes=_EXPANDED_NOTES,
    kernel=kernels.xatlu,
)
class XATLU(_ExpandedGate):
    r"""Arctan-gated linear unit with an expanded gate range.

    .. math::
        \mathrm{xATLU}(x) = x\left((1 + 2\alpha)\,\tfrac{\arctan(x) + \pi/2}{\pi} - \alpha\right)

    The gate's range grows from (0, 1) to (−α, 1 + α). The gate is computed as
    atan2(1, −x)/π, equal to the above and exact for x ≪ 0.

    Args:
        alpha: initial α (trainable). Default: 0.0

    Example::

        >>> XATLU()(torch.tensor([-1.0, 1.0]))
        tensor([-0.2500,  0.7500], grad_fn=<FusedActivationBackward>)
    """

    def reference(self, x: Tensor) -> Tensor:
        return F.xatlu(x, self.alpha)


@register(
    "xgelu",
    formula="x·((1 + 2α)·Φ(x) − α), α trainable (init 0)",
    paper=_EXPANDED_PAPER,
    function=F.xgelu,
    smooth=True,
    bounded_below=True,
    trainable=("alpha",),
    notes=_EXPANDED_NOTES,
    kernel=kernels.xgelu,
)
class XGELU(_ExpandedGate):
    r"""GELU with an expanded gate range, :math:`x((1 + 2\alpha)\Phi(x) - \alpha)`.

    Args:
        alpha: initial α (trainable). Default: 0.0

    Example::

        >>> XGELU()(torch.tensor([-1.0, 1.0]))
        tensor([-0.1587,  0.8413], grad_fn=<FusedActivationBackward>)
    """

    def reference(self, x: Tensor) -> Tensor:
        return F.xgelu(x, self.alpha)


@register(
    "xsilu",
    formula="x·((1 + 2α)·σ(x) − α), α trainable (init 0)",
    paper=_EXPANDED_PAPER,
    function=F.xsilu,
    smooth=True,
    bounded_below=True,
    trainable=("alpha",),
    notes=_EXPANDED_NOTES,
    kernel=kernels.xsilu,
)
class XSiLU(_ExpandedGate):
    r"""SiLU with an expanded gate range, :math:`x((1 + 2\alpha)\sigma(x) - \alpha)`.

    Args:
        alpha: initial α (trainable). Default: 0.0

    Example::

        >>> XSiLU()(torch.tensor([-1.0, 1.0]))
        tensor([-0.2689,  0.7311], grad_fn=<FusedActivationBackward>)
    """

    def reference(self, x: Tensor) -> Tensor:
        return F.xsilu(x, self.alpha)


@register(
    "atlu",
    formula="x·(arctan(x) + π/2)/π",
    paper=_EXPANDED_PAPER,
    function=F.atlu,
    smooth=True,
    monotonic=True,
    bounded_below=True,
    kernel=kernels.atlu,
)
class ATLU(Activation):
    r"""Arctan-gated linear unit, :math:`x\,(\arctan(x) + \pi/2)/\pi` (xATLU at α = 0, fixed).

    Example::

        >>> ATLU()(torch.tensor([-1.0, 1.0]))
        tensor([-0.2500,  0.7500])
    """

    def reference(self, x: Tensor) -> Tensor:
        return F.atlu(x)


@register(
    "sau",
    formula="αx + (1 − α)·(x·Φ(x/σ) + σ·φ(x/σ)), α trainable",
    paper="Biswas et al. 2021, SAU: Smooth Activation Function Using Convolution with "
    "Approximate Identities, arXiv:2109.13210",
    function=F.sau,
    smooth=True,
    monotonic=True,
    trainable=("alpha",),
    notes="No official code; the closed form is derived in shared/reference/activations.md. "
    "The authors' σ (5e-5 in a secondary source) is not confirmed; the default here is 1.",
    kernel=kernels.sau,
)
class SAU(Activation):
    r"""Smooth activation unit: Leaky-ReLU (slope α) convolved with a Gaussian of width σ.

    .. math::
        \mathrm{SAU}(x) = \tfrac{1+\alpha}{2}x + \tfrac{1-\alpha}{2}x\,
        \mathrm{erf}\!\left(\tfrac{x}{\sigma\sqrt2}\right)
        + (1-\alpha)\tfrac{\sigma}{\sqrt{2\pi}} e^{-x^2/(2\sigma^2)}
        = \alpha x + (1-\alpha)\left(x\,\Phi(x/\sigma) + \sigma\,\varphi(x/\sigma)\right)

    At α = 0, σ = 1 it is :math:`\mathbb E[\mathrm{ReLU}(x + Z)]`, Z ~ N(0, 1); as σ → 0 it
    tends to Leaky-ReLU.

    Args:
        alpha: initial α, the negative slope (trainable). Default: 0.15
        sigma: σ > 0, the width of the Gaussian (fixed). Default: 1.0

    Example::

        >>> SAU()(torch.tensor([-1.0, 0.0, 1.0]))
        tensor([-0.0792,  0.3391,  1.0708], grad_fn=<FusedActivationBackward>)
    """

    def __init__(self, alpha: float = 0.15, sigma: float = 1.0) -> None:
        super().__init__(
            alpha=check_number("sau", "alpha", alpha),
            sigma=check_number("sau", "sigma", sigma, above=0.0),
        )
        self.alpha = scalar_parameter(alpha)

    def reference(self, x: Tensor) -> Tensor:
        return F.sau(x, self.alpha, self.sigma)
