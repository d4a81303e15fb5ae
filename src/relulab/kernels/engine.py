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
import math
import os
import threading
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from relulab.functional._common import like, to_compute_dtype
from relulab.kernels.definitions import KernelDef

# Below this many elements a compiled kernel's call overhead (guards, launch) costs more
# than it saves, and a first call would spend seconds compiling for microseconds of work.
COMPILE_MIN_NUMEL = 1 << 16


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
    except Exception as error:  # the compiler's failure, or the call's own error: see below
        compile_error = error
    # Run eagerly, outside the except block (so that a user's error is raised without the
    # compiler's traceback chained to it). If this raises too, the call itself was wrong (a
    # shape mismatch, say): that error is the user's, and the compiler is not to blame.
    result = function(x, *args)
    reason = f"{type(compile_error).__name__}: {_first_line(compile_error)}"
    if not failures:  # one warning: a missing compiler would otherwise warn per kernel
        warnings.warn(
            f"relulab: could not compile {label} ({reason}); running eager kernels where "
            "compiling fails (relulab.kernels.engine.failures lists each)",
            RuntimeWarning,
            stacklevel=3,
        )
    failures[label] = reason
    return result


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _as_condition(mask: Tensor, grad: Tensor) -> Tensor:
    """The saved mask (its bytes, as uint8) as the bool a kernel's backward selects with.

    Compiled, from a comparison in the gradient's dtype: inductor's CPU code vectorises a
    select on that, but not on a loaded bool or byte, which it runs some 15× slower as
    scalar code. Eager, the same bytes viewed as bool, at no cost.
    """
    if torch.compiler.is_compiling():
        return mask.to(grad.dtype) != 0
    return mask.view(torch.bool)


@functools.cache
def _backward_of(kernel: KernelDef, needs: tuple[bool, ...]) -> Callable:
    """(saved, grad, *params) ↦ (grad_x, *summed parameter grads), in the compute dtype."""

    def backward(saved: Tensor, grad: Tensor, *params) -> tuple[Tensor | None, ...]:
        upstream, grad = grad, to_compute_dtype(grad)
        if saved.dtype == torch.uint8:  # a mask
            saved = _as_condition(saved, grad)
        else:
            saved = to_compute_dtype(saved)
        grads = kernel.backward(saved, grad, *params)
        out: list[Tensor | None] = [like(grads[0], upstream)]
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
        # rest spelled out, not -1, which is ambiguous (and refused) for an empty batch
        return x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))
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
        flat = _layout(kernel, x, params)
        y = _forward(kernel, flat, params).view(x.shape)
        if kernel.saves == "mask":
            # ATen writes bools fast, inductor's CPU code slowly: the mask is always eager.
            saved = kernel.mask(flat, *params)
        else:
            saved = x if kernel.saves == "input" else y
        # Tensor parameters are saved too, so that autograd's version counter catches an
        # in-place change before backward (as torch's own modules do); numbers stay on ctx.
        ctx.tensor_at = tuple(i for i, p in enumerate(params) if isinstance(p, Tensor))
        ctx.save_for_backward(saved, *(params[i] for i in ctx.tensor_at))
        ctx.kernel, ctx.shape = kernel, x.shape
        ctx.numbers = [None if i in ctx.tensor_at else p for i, p in enumerate(params)]
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        kernel = ctx.kernel
        saved, *tensors = ctx.saved_tensors
        params = list(ctx.numbers)
        for i, tensor in zip(ctx.tensor_at, tensors):
            params[i] = tensor
        needs = tuple(
            isinstance(p, Tensor) and need for p, need in zip(params, ctx.needs_input_grad[2:])
        )
        if torch.is_grad_enabled() and kernel.saves == "input":
            return (None, *_reference_gradients(kernel, saved, grad, params, needs))
        grad, saved = _layout(kernel, grad, params), _layout(kernel, saved, params)
        if saved.dtype == torch.bool:  # inductor loads uint8 fast, bools slowly: same bytes
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


# Set once torch was found without a private attribute _transformed reads: warned once.
_missing_private_api: str | None = None


def _transformed(x: Any) -> bool:
    """Is autograd, fx or a compiler looking at this call in a way a Function cannot serve?"""
    if not isinstance(x, Tensor) or torch.compiler.is_compiling():
        return True
    try:  # private torch attributes, which a torch release may rename
        is_wrapped = torch._C._functorch.is_functorch_wrapped_tensor
        forward_ad_level = torch.autograd.forward_ad._current_level
    except AttributeError as error:
        _warn_missing_private_api(error)
        return True  # cannot tell: the reference formula serves every case
    return is_wrapped(x) or forward_ad_level >= 0


def _warn_missing_private_api(error: AttributeError) -> None:
    global _missing_private_api
    if _missing_private_api is None:
        _missing_private_api = str(error)
        warnings.warn(
            f"relulab: this torch lacks an attribute the fused kernels read ({error}); "
            "activations run their reference formulas instead (same values, plain autograd)",
            RuntimeWarning,
            stacklevel=4,
        )


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
