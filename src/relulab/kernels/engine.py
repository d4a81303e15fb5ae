"""The engine behind the fused activations: one autograd Function for every kernel, compiled
kernels where they pay off, and the plain formulas wherever autograd must see through.

- Forward and backward each run as one fused kernel: torch.compile (inductor: C++/OpenMP on
  CPU, Triton on CUDA), compiled lazily on first use and cached on disk by inductor.
  Tensors below :data:`COMPILE_MIN_NUMEL` elements, and every call when compilation is off
  or unavailable, run the same formulas eagerly (timm's memory-efficient pattern).
- Backward keeps only what :mod:`relulab.kernels.definitions` names: a 1-byte mask, the
  output, or the input.
- Under torch.func transforms, forward-mode AD, torch.fx tracing and the user's own
  torch.compile, the activation runs its reference formula instead, which all of those
  handle natively (and which the user's compiler fuses into its own graph). Double backward
  through the fused Function differentiates the formulas again.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from relulab.kernels.definitions import KernelDef

# Below this many elements a compiled kernel's call overhead (guards, launch) costs more
# than it saves, and a first call would spend seconds compiling for microseconds of work.
COMPILE_MIN_NUMEL = 1 << 16
_LOW_PRECISION = (torch.float16, torch.bfloat16)


class _CompileState(threading.local):
    enabled = os.environ.get("RELULAB_COMPILE", "1") != "0"


_state = _CompileState()
# Functions whose compilation failed, with the reason; they run eagerly from then on.
failures: dict[str, str] = {}


@contextlib.contextmanager
def compilation(enabled: bool) -> Iterator[None]:
    """Turn compiled kernels on or off in this thread (``RELULAB_COMPILE=0``: off by default)."""
    previous, _state.enabled = _state.enabled, enabled
    try:
        yield
    finally:
        _state.enabled = previous


def compiled_kernels_available() -> bool:
    """Compilation is on here, and nothing has failed to compile."""
    return _state.enabled and not failures


@functools.cache
def _compiled(function: Callable) -> Callable:
    # torch.compile caches, and limits recompiles, per code object; the kernels' functions
    # share code (one decorator's wrapper, one closure), so each gets a copy of its own.
    own = types.FunctionType(
        function.__code__.replace(), function.__globals__, function.__name__,
        function.__defaults__, function.__closure__,
    )  # fmt: skip
    functools.update_wrapper(own, function)
    return torch.compile(own, dynamic=True, fullgraph=True)


def _label(function: Callable) -> str:
    return getattr(function, "__qualname__", repr(function))


def _run(function: Callable, x: Tensor, *args) -> Any:
    """``function(x, *args)``, compiled when it pays off; eager if compiling it fails (warned)."""
    label = _label(function)
    if not (_state.enabled and x.numel() >= COMPILE_MIN_NUMEL) or label in failures:
        return function(x, *args)
    try:
        return _compiled(function)(x, *args)
    except Exception as error:  # any compiler failure means: run this one eagerly
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        if not failures:  # one warning: a missing compiler would otherwise warn per kernel
            warnings.warn(
                f"relulab: could not compile {label} ({type(error).__name__}: {first_line}); "
                "running eager kernels where compiling fails (relulab.kernels.engine.failures "
                "lists each)",
                RuntimeWarning,
                stacklevel=3,
            )
        failures[label] = f"{type(error).__name__}: {first_line}"
        return function(x, *args)


def _compute(t: Tensor) -> Tensor:
    return t.float() if t.dtype in _LOW_PRECISION else t


@functools.cache
def _backward_of(kernel: KernelDef, needs: tuple[bool, ...]) -> Callable:
    """(saved, grad, *params) ↦ (grad_x, *summed parameter grads), in the compute dtype."""

    def backward(saved: Tensor, grad: Tensor, *params) -> tuple[Tensor | None, ...]:
        dtype = grad.dtype
        saved = saved if saved.dtype == torch.uint8 else _compute(saved)
        grads = kernel.backward(saved, _compute(grad), *params)
        out: list[Tensor | None] = [grads[0].to(dtype)]
        for partial, param, needed in zip(grads[1:], params, needs):
            out.append(_reduce(partial, param) if needed and partial is not None else None)
        return tuple(out)

    backward.__qualname__ = f"{kernel.name}_backward"
    return backward


def _reduce(partial: Tensor, param: Tensor) -> Tensor:
    """Sum an elementwise parameter gradient to the parameter's shape (scalar or per channel)."""
    if partial.shape == param.shape:
        return partial.to(param.dtype)
    if param.numel() == 1:
        return partial.sum().reshape(param.shape).to(param.dtype)
    return partial.sum(dim=(0, 2)).reshape(param.shape).to(param.dtype)  # (N, C, rest) → (C,)


def _layout(kernel: KernelDef, x: Tensor, params: Sequence) -> Tensor:
    """The shape the kernel works on: flat, or (N, C, rest) for a per-channel parameter."""
    if kernel.per_channel and params[0].numel() > 1:
        return x.reshape(x.shape[0], x.shape[1], -1)
    return x.reshape(-1)


def _forward(kernel: KernelDef, flat: Tensor, params: Sequence) -> Tensor:
    """f(x) in one kernel, on x in the kernel's layout (one kernel for every rank and stride)."""
    if kernel.single_op and flat.dtype in (torch.float32, torch.float64):
        return kernel.forward(flat, *params)  # one ATen kernel already
    return _run(kernel.forward, flat, *params)


class FusedActivation(torch.autograd.Function):
    """y = f(x) in one kernel; backward in one kernel from a mask, y, or x alone."""

    @staticmethod
    def forward(ctx, kernel: KernelDef, x: Tensor, *params) -> Tensor:
        ctx.kernel, ctx.params, ctx.shape = kernel, params, x.shape
        flat = _layout(kernel, x, params)
        y = _forward(kernel, flat, params).view(x.shape)
        if kernel.saves == "mask":
            # ATen writes bools fast, inductor's CPU code slowly: the mask is always eager.
            ctx.save_for_backward(kernel.mask(flat, *params))
        else:
            ctx.save_for_backward(x if kernel.saves == "input" else y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        kernel, params = ctx.kernel, ctx.params
        (saved,) = ctx.saved_tensors
        needs = tuple(
            isinstance(p, Tensor) and need for p, need in zip(params, ctx.needs_input_grad[2:])
        )
        if torch.is_grad_enabled() and kernel.saves == "input":
            return (None, *_reference_gradients(kernel, saved, grad, params, needs))
        grad, saved = _layout(kernel, grad, params), _layout(kernel, saved, params)
        if saved.dtype == torch.bool:  # and loads uint8 fast, bools slowly: same bytes, 0 or 1
            saved = saved.view(torch.uint8)
        function = _backward_of(kernel, needs)
        if torch.is_grad_enabled():  # a graph of the backward itself: stay differentiable
            grads = function(saved, grad, *params)
        else:
            grads = _run(function, saved, grad, *params)
        return (None, grads[0].view(ctx.shape), *grads[1:])


def _reference_gradients(kernel: KernelDef, x: Tensor, grad: Tensor, params, needs) -> tuple:
    """Gradients by autograd through the reference formula, for higher-order derivatives."""
    with torch.enable_grad():
        x = x.detach().requires_grad_() if not x.requires_grad else x
        inputs = [x] + [p for p, need in zip(params, needs) if need]
        y = kernel.forward(x, *params)
        grads = iter(torch.autograd.grad(y, inputs, grad, create_graph=True, allow_unused=True))
        grad_x = next(grads)
        return (grad_x, *(next(grads) if need else None for need in needs))


def _transformed(x: Any) -> bool:
    """Is autograd, fx or a compiler looking at this call in a way a Function cannot serve?"""
    if not isinstance(x, Tensor) or torch.compiler.is_compiling():
        return True
    is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    if is_wrapped is not None and is_wrapped(x):
        return True
    return torch.autograd.forward_ad._current_level >= 0


def fused(
    kernel: KernelDef, x: Tensor, params: Sequence, reference: Callable[[Tensor], Tensor]
) -> Tensor:
    """``kernel`` applied to x, or ``reference(x)`` where the kernel cannot serve the call."""
    if _transformed(x) or (kernel.accepts is not None and not kernel.accepts(x, *params)):
        return reference(x)
    if not _needs_grad(x, params):  # inference: no mask to write, no graph to record
        return _forward(kernel, _layout(kernel, x, params), params).view(x.shape)
    return FusedActivation.apply(kernel, x, *params)


def _needs_grad(x: Tensor, params: Sequence) -> bool:
    if not torch.is_grad_enabled():
        return False
    return x.requires_grad or any(isinstance(p, Tensor) and p.requires_grad for p in params)
