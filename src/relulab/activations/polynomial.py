"""Polynomial replacements of ReLU (AutoReP) as a module."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from relulab import functional as F
from relulab.activations.base import Activation, check_count, check_number
from relulab.errors import UserError
from relulab.kernels import definitions as kernels
from relulab.registry import register


@register(
    "poly_relu",
    formula="Σₖ cₖ·xᵏ, cₖ trainable; default: DaPa fit of ReLU under N(0, 1) = "
    "0.1995 + 0.5x + 0.1995x²",
    paper="Peng et al. 2023, AutoReP: Automatic ReLU Replacement for Fast Private Network "
    "Inference, arXiv:2308.10134 (ICCV)",
    aliases=("polyrelu", "poly"),
    function=F.poly_relu,
    smooth=True,
    bounded_below=True,
    trainable=("coefficients",),
    notes="One set of coefficients per module; AutoReP also learns them per channel.",
    kernel=kernels.poly_relu,
)
class PolyReLU(Activation):
    r"""A trainable polynomial standing in for ReLU, :math:`\sum_{k=0}^{d} c_k x^k`.

    Polynomials cost far less than ReLU's comparison under encryption (private inference).
    By default the coefficients start at :func:`relulab.functional.dapa_coefficients`, the
    least-squares fit of ReLU for inputs distributed as N(0, 1).

    Args:
        degree: d ≥ 0. Default: 2
        coefficients: c₀ ... c_d to start from; None: the DaPa fit. Default: None

    Example::

        >>> PolyReLU()(torch.tensor([-1.0, 0.0, 1.0]))
        tensor([-0.1011,  0.1995,  0.8989], grad_fn=<FusedActivationBackward>)
    """

    def __init__(self, degree: int = 2, coefficients: Sequence[float] | None = None) -> None:
        degree = check_count("poly_relu", "degree", degree, at_least=0)
        if coefficients is None:
            start = F.dapa_coefficients(0.0, 1.0, degree).to(torch.get_default_dtype())
        else:
            if isinstance(coefficients, (str, bytes)) or not isinstance(coefficients, Sequence):
                raise UserError(f"poly_relu: coefficients must be a sequence, got {coefficients!r}")
            if len(coefficients) != degree + 1:
                raise UserError(
                    f"poly_relu: degree {degree} needs {degree + 1} coefficients, "
                    f"got {len(coefficients)}"
                )
            coefficients = tuple(check_number("poly_relu", "coefficient", c) for c in coefficients)
            start = torch.tensor(coefficients)
        super().__init__(degree=degree, coefficients=coefficients)
        self.coefficients = nn.Parameter(start)

    def reference(self, x: Tensor) -> Tensor:
        return F.poly_relu(x, [self.coefficients[k] for k in range(self.degree + 1)])
