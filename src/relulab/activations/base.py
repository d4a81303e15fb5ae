"""Base class of relulab's activation modules and argument checks shared by them."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from relulab.errors import UserError
from relulab.kernels import KernelDef, fused
from relulab.registry import activation_info, format_arguments, format_spec


class Activation(nn.Module):
    """An activation module that remembers its constructor arguments and runs fused kernels.

    Subclasses define :meth:`reference`, the formula of :mod:`relulab.functional`. Calling
    the module runs the fused kernel of :mod:`relulab.kernels` instead, where the activation
    has one and ``fused`` is true (the default): the same values, a hand-derived backward,
    and only a mask, the output or the input kept for it. ``fused = False`` runs the
    reference formula under plain autograd.

    Each argument also becomes an attribute (a subclass may then replace one by an
    ``nn.Parameter`` of the same name). ``extra_repr`` prints them as ``key=value`` pairs,
    so ``f"{name}({m.extra_repr()})"`` is a spec string that :func:`relulab.get_activation`
    turns back into an equal module.
    """

    activation_name: ClassVar[str] = ""
    fused: bool = True

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self._config = config
        for key, value in config.items():
            setattr(self, key, value)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = fused_kernel_of(type(self)) if self.fused else None
        if kernel is None:
            return self.reference(x)
        return fused(kernel, x, [getattr(self, p) for p in kernel.params], self.reference)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments."""
        return dict(self._config)

    @property
    def spec(self) -> str:
        """The spec string that rebuilds this module, e.g. ``"elu(alpha=2.0)"``."""
        return format_spec(self.activation_name, self._config)

    def extra_repr(self) -> str:
        return format_arguments(self._config)


_KERNEL_OF_CLASS: dict[type, KernelDef | None] = {}


def fused_kernel_of(cls: type[Activation]) -> KernelDef | None:
    """The fused kernel that instances of ``cls`` run: the one declared where ``cls`` (or the
    registered class it derives from) was registered, unless ``cls`` overrides
    :meth:`~Activation.reference`. A subclass with maths of its own then runs its own
    maths, not its parent's kernel."""
    if cls not in _KERNEL_OF_CLASS:  # once per class: forward is on every call's path
        kernel = None
        if cls.activation_name:
            info = activation_info(cls.activation_name)
            if info.kernel is not None and cls.reference is info.module.reference:
                kernel = info.kernel
        _KERNEL_OF_CLASS[cls] = kernel
    return _KERNEL_OF_CLASS[cls]


def check_number(
    owner: str,
    name: str,
    value: Any,
    *,
    at_least: float | None = None,
    above: float | None = None,
) -> float:
    """``value`` as a finite float, or a one-line ValueError naming owner, argument and value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{owner}: {name} must be a finite number, got {value!r}")
    if at_least is not None and value < at_least:
        raise UserError(f"{owner}: {name} must be >= {at_least}, got {value!r}")
    if above is not None and value <= above:
        raise UserError(f"{owner}: {name} must be > {above}, got {value!r}")
    return float(value)


def check_flag(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{owner}: {name} must be True or False, got {value!r}")
    return value


def check_count(owner: str, name: str, value: Any, *, at_least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < at_least:
        raise UserError(f"{owner}: {name} must be an integer >= {at_least}, got {value!r}")
    return value


def scalar_parameter(value: float) -> nn.Parameter:
    return nn.Parameter(torch.tensor(float(value)))
