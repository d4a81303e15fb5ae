"""Numerical helpers shared by the functional activations.

Every formula here keeps its value finite wherever the true value is finite and keeps its
autograd backward free of ``0 * inf``: a ``torch.where`` that discards a branch still
multiplies that branch's local derivative by zero, so discarded branches are evaluated on
safe inputs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

_LOW_PRECISION = (torch.float16, torch.bfloat16)

F = TypeVar("F", bound=Callable[..., Tensor])


def upcast_low_precision(fn: F) -> F:
    """Evaluate ``fn`` in float32 for float16/bfloat16 input and cast the result back.

    Transcendental formulas lose most of their digits, and overflow early, in 16-bit
    arithmetic; torch's own CPU kernels compute these dtypes in float32 for the same reason.
    """

    @functools.wraps(fn)
    def wrapper(x: Tensor, *args, **kwargs) -> Tensor:
        if x.dtype in _LOW_PRECISION:
            return fn(x.float(), *args, **kwargs).to(x.dtype)
        return fn(x, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def normal_cdf(x: Tensor) -> Tensor:
    """Φ(x) through erfc, accurate in both tails (1 + erf(x/√2) cancels to 0 for x ≪ 0)."""
    return 0.5 * torch.special.erfc(-x * INV_SQRT_2)


def normal_pdf(x: Tensor) -> Tensor:
    """φ(x) = exp(-x²/2)/√(2π)."""
    return torch.exp(-0.5 * x * x) * INV_SQRT_2PI


def log_max(dtype: torch.dtype) -> float:
    """Largest t with exp(t) finite in ``dtype``, less a margin of 1."""
    return math.log(torch.finfo(dtype).max) - 1.0
