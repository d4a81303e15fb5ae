"""Run a model as the affine map it is on one linear region, by intercepting its activations.

A network built from linear layers and continuous piecewise-linear activations is affine on
each set of inputs that share an activation pattern. :func:`run` executes the model under a
:class:`~torch.overrides.TorchFunctionMode` that sees every torch call, functional
(``F.relu(x)``, ``x.clamp(0, 6)``) or made by a module (``nn.ReLU`` calls ``F.relu``), in
execution order. (Run-time interception rather than :mod:`relulab.sites`, which reads
modules and source: the geometry must replace each call's *value* per region, in the order
the calls run, and know which tensors depend on the input; a static finder sees neither.)

Each piecewise-linear call is an activation *site*; given a fixed pattern for the sites
before site ``stop``, the run applies, row by row, the linear piece that the pattern names,
and stops at site ``stop``, returning its pre-activation. Calls on data derived from the
input that are not known to be affine (a smooth activation, softmax, a product of two
activations) raise :class:`~relulab.errors.UserError` naming the call and the module that
made it; arithmetic on parameters alone is left alone. With ``strict=False`` (for counting
sites, as :func:`relulab.budget.count_relus` does) such calls run as they are instead, each
recorded as a site of kind ``"other"``, and their outputs are still followed, so that the
piecewise-linear calls after them are found too.

Supported pieces, with breakpoints ``b`` (the state of a unit is the number of breakpoints
strictly below its pre-activation): relu, leaky_relu, prelu, abs (``b = 0``), relu6,
hardtanh and clamp/clip with number bounds (``b = low, high``). Max-pooling (1-D and 2-D,
with stride, padding, dilation and ceil mode, and adaptive) is a site of kind ``"max"``:
each output unit is the largest of the ``k`` candidates in its window, its pre-activation
is the candidates' values, and its state is the position of the largest (the first, on a
tie).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from relulab.errors import UserError


@dataclass(frozen=True)
class Site:
    """One piecewise-linear activation call, as met in execution order.

    Attributes:
        name: the call and the module that made it (``"net.1: relu"``).
        kind: relu, leaky_relu, prelu, abs, clamp (relu6 and hardtanh are clamps) or max;
            with ``strict=False``, other for a call that is not piecewise linear (a smooth
            activation, softmax, a product of two input-dependent tensors).
        units: the number of activations per sample.
        breaks: the breakpoints of every unit (``(0.0,)`` or ``(low, high)``; ``()`` for max).
        windows: for max, ``(units, k)`` the flat input position of each candidate of each
            unit, -1 where the window overhangs the input (padding, ceil mode).
    """

    name: str
    kind: str
    units: int
    breaks: tuple[float, ...]
    windows: Tensor | None = field(default=None, compare=False, repr=False)

    @property
    def window(self) -> int:
        """Candidates per unit: ``k`` for max, else 1."""
        return 1 if self.windows is None else int(self.windows.shape[1])


class _Stop(Exception):
    def __init__(self, pre: Tensor) -> None:
        self.pre = pre


def _fn(*names: str) -> list[Any]:
    found = []
    for owner in (torch, F, Tensor, torch._C._nn):
        for name in names:
            if hasattr(owner, name):
                found.append(getattr(owner, name))
    return found


_RELU = _fn("relu", "relu_")
_LEAKY = _fn("leaky_relu", "leaky_relu_")
_PRELU = _fn("prelu", "_prelu_kernel")
_ABS = _fn("abs", "abs_", "absolute", "absolute_")
_RELU6 = _fn("relu6")
_HARDTANH = _fn("hardtanh", "hardtanh_")
_CLAMP = _fn("clamp", "clamp_", "clip", "clip_")
_MAX_POOL = {
    id(f): name
    for name in (
        "max_pool1d",
        "max_pool2d",
        "max_pool1d_with_indices",
        "max_pool2d_with_indices",
        "adaptive_max_pool1d",
        "adaptive_max_pool2d",
        "adaptive_max_pool1d_with_indices",
        "adaptive_max_pool2d_with_indices",
    )
    for f in _fn(name)
}

# Calls that are affine in their data argument(s); mul/div/matmul are affine only while at
# most one factor depends on the input (checked below).
_AFFINE_NAMES = [
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "flatten",
    "unflatten",
    "reshape",
    "view",
    "view_as",
    "reshape_as",
    "cat",
    "concat",
    "concatenate",
    "stack",
    "hstack",
    "vstack",
    "add",
    "add_",
    "sub",
    "sub_",
    "subtract",
    "neg",
    "negative",
    "__add__",
    "__radd__",
    "__iadd__",
    "__sub__",
    "__rsub__",
    "__isub__",
    "__neg__",
    "__pos__",
    "squeeze",
    "unsqueeze",
    "transpose",
    "permute",
    "t",
    "contiguous",
    "expand",
    "expand_as",
    "repeat",
    "split",
    "chunk",
    "narrow",
    "select",
    "index_select",
    "unbind",
    "__getitem__",
    "clone",
    "sum",
    "mean",
    "flip",
    "roll",
    "pad",
    "identity",
    "double",
    "to",
    "cumsum",
    "movedim",
    "swapaxes",
    "__setitem__",
    "copy_",
    "zero_pad2d",
]
_PRODUCT_NAMES = [
    "mul",
    "mul_",
    "multiply",
    "__mul__",
    "__rmul__",
    "__imul__",
    "matmul",
    "__matmul__",
    "__rmatmul__",
    "mm",
    "bmm",
    "addmm",
    "einsum",
]
_DIVIDE_NAMES = ["div", "div_", "divide", "true_divide", "__truediv__", "__itruediv__"]
_AFFINE = {id(f) for f in _fn(*_AFFINE_NAMES)}
_PRODUCT = {id(f) for f in _fn(*_PRODUCT_NAMES)}
_DIVIDE = {id(f) for f in _fn(*_DIVIDE_NAMES)}
_TRAINING_SWITCH = {
    id(f) for f in _fn("batch_norm", "dropout", "dropout1d", "dropout2d", "dropout3d")
}


def _call_name(func: Any) -> str:
    name = getattr(func, "__name__", repr(func))
    if func in _fn(name) and getattr(Tensor, name, None) is func:
        return f"Tensor.{name}"
    module = getattr(func, "__module__", "") or ""
    return f"F.{name}" if module.endswith("functional") else f"torch.{name}"


def _user_line() -> str | None:
    """file:line of the innermost frame of the model's own code (outside torch and relulab),
    or None when the call comes from torch's or relulab's modules alone."""
    package = os.path.dirname(os.path.dirname(__file__))
    torch_dir = os.path.dirname(torch.__file__)
    for frame in inspect.stack(context=0)[2:]:
        path = frame.filename
        if path == __file__ and frame.function == "run":
            return None  # out of the model: what called the geometry is not the culprit
        if path.startswith((package, torch_dir)) or "contextlib" in path:
            continue
        return f"{os.path.basename(path)}:{frame.lineno}"
    return None


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise UserError("clamp with tensor bounds is not supported by relulab.geometry")
        return float(value)
    return float(value)


class _Mode(TorchFunctionMode):
    """Applies fixed patterns to sites before ``stop``; see :func:`run`."""

    def __init__(
        self,
        model: nn.Module,
        patterns: Sequence[Tensor],
        stop: int | None,
        sites: list[Site] | None,
        strict: bool = True,
    ) -> None:
        super().__init__()
        self.patterns, self.stop, self.sites = patterns, stop, sites
        self.strict = strict
        self.recording = sites is None
        self.batch = 1
        self.found: list[Site] = []
        self.derived: dict[int, Tensor] = {}  # id -> tensor (kept alive so ids stay unique)
        self.stack: list[str] = []
        self.names = {m: n for n, m in model.named_modules()}

    def mark(self, value: Any) -> None:
        for leaf in tree_flatten(value)[0]:
            if isinstance(leaf, Tensor):
                self.derived[id(leaf)] = leaf

    def is_derived(self, value: Any) -> bool:
        return any(isinstance(v, Tensor) and id(v) in self.derived for v in tree_flatten(value)[0])

    def where(self, func: Any) -> str:
        module = self.stack[-1] if self.stack else "the model"
        line = _user_line()
        return f"{_call_name(func)} in {module}" + (f" ({line})" if line else "")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = (args, kwargs)
        if not self.is_derived(inputs):
            return func(*args, **kwargs)
        if id(func) in _MAX_POOL:
            return self._max_site(func, args, kwargs)
        piece = self._piece(func, args, kwargs)
        if piece is not None:
            return self._site(func, args, kwargs, *piece)
        key = id(func)
        if key in _TRAINING_SWITCH:
            position = 5 if "batch_norm" in func.__name__ else 2
            default = "batch_norm" not in func.__name__
            training = kwargs.get("training", args[position] if len(args) > position else default)
            if training:
                raise UserError(
                    f"relulab.geometry: {self.where(func)} runs in training mode; call "
                    "model.eval() first (batch statistics and dropout are not affine)"
                )
        elif key in _PRODUCT or key in _DIVIDE:
            tensors = [a for a in tree_flatten(inputs)[0] if isinstance(a, Tensor)]
            derived = [a for a in tensors if id(a) in self.derived]
            denominator = args[1] if len(args) > 1 else kwargs.get("other")
            if len(derived) > 1 or (key in _DIVIDE and self.is_derived(denominator)):
                if not self.strict:
                    return self._other(func, args, kwargs)
                raise UserError(
                    f"relulab.geometry: {self.where(func)} multiplies two input-dependent "
                    "tensors, which is not piecewise linear"
                )
        elif key not in _AFFINE:
            if not self.strict:
                return self._other(func, args, kwargs)
            out = func(*args, **kwargs)
            if any(isinstance(v, Tensor) for v in tree_flatten(out)[0]):
                raise UserError(
                    f"relulab.geometry: {self.where(func)} is not piecewise linear; supported are "
                    "linear layers, convolutions, eval-mode BatchNorm, average pooling, "
                    "reshapes, additions, concatenations and relu, leaky_relu, prelu, relu6, "
                    "hardtanh, abs, clamp and 1-D/2-D max-pooling"
                )
            return out
        out = func(*args, **kwargs)
        self.mark(out)
        return out

    def _piece(self, func: Any, args: tuple, kwargs: dict) -> tuple | None:
        """(kind, breaks, slopes, consts) of a piecewise-linear call, else None."""
        if func in _RELU:
            return "relu", (0.0,), (0.0, 1.0), (0.0, 0.0)
        if func in _LEAKY:
            slope = float(args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01))
            return "leaky_relu", (0.0,), (slope, 1.0), (0.0, 0.0)
        if func in _ABS:
            return "abs", (0.0,), (-1.0, 1.0), (0.0, 0.0)
        if func in _PRELU:
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            return "prelu", (0.0,), (weight, 1.0), (0.0, 0.0)
        if func in _RELU6:
            low, high = 0.0, 6.0
        elif func in _HARDTANH:
            low = float(args[1] if len(args) > 1 else kwargs.get("min_val", -1.0))
            high = float(args[2] if len(args) > 2 else kwargs.get("max_val", 1.0))
        elif func in _CLAMP:
            low = _number(args[1] if len(args) > 1 else kwargs.get("min"))
            high = _number(args[2] if len(args) > 2 else kwargs.get("max"))
        else:
            return None
        breaks = tuple(b for b in (low, high) if b is not None)
        slopes = (0.0,) * (low is not None) + (1.0,) + (0.0,) * (high is not None)
        consts = (
            ((low,) if low is not None else ()) + (0.0,) + ((high,) if high is not None else ())
        )
        return "clamp", breaks, slopes, consts

    def _enter(self, site: Site) -> int:
        """Record ``site``; check it against the recording run's; return its index."""
        index = len(self.found)
        self.found.append(site)
        if not self.recording:
            expected = self.sites[index] if index < len(self.sites) else None
            if expected is None or (expected.kind, expected.units, expected.breaks) != (
                site.kind,
                site.units,
                site.breaks,
            ):
                raise UserError(
                    f"relulab.geometry: the model's activation calls changed between runs at "
                    f"{site.name}; data-dependent control flow is not supported"
                )
        return index

    def _name(self, func: Any) -> str:
        return f"{self.stack[-1] if self.stack else 'model'}: {_call_name(func)}"

    def _other(self, func, args, kwargs):
        """A call that is not piecewise linear, run as it is; its tensor outputs are a site of
        kind ``"other"`` and stay marked as input-dependent (so later sites are still found)."""
        out = func(*args, **kwargs)
        tensors = [v for v in tree_flatten(out)[0] if isinstance(v, Tensor)]
        if tensors:  # x.size(), x.dim() and the like return no tensor: nothing to follow
            units = sum(t.numel() for t in tensors) // self.batch
            self._enter(Site(self._name(func), "other", units, ()))
            self.mark(out)
        return out

    def _max_site(self, func, args, kwargs):
        name = _MAX_POOL[id(func)]
        options = _pool_options(name, args, kwargs)
        if options.pop("return_indices", False):
            raise UserError(
                f"relulab.geometry: {self.where(func)} returns indices, which are not "
                "piecewise linear in the input; pool without return_indices"
            )
        x = args[0] if args else kwargs["input"]
        out = func(x, **options)
        dims = 2 if "2d" in name else 1
        if x.dim() != dims + 2:
            raise UserError(
                f"relulab.geometry: {self.where(func)} on an unbatched input of shape "
                f"{tuple(x.shape)}; give it a batch dimension"
            )
        windows = _pool_windows(name, tuple(x.shape[1:]), tuple(out.shape[2:]), options)
        site = Site(self._name(func), "max", windows.shape[0], (), windows)
        index = self._enter(site)
        candidates = x.reshape(len(x), -1)[:, windows.clamp(min=0)]  # (B, units, k)
        if index == self.stop:
            raise _Stop(candidates)
        if index < len(self.patterns):
            state = self.patterns[index].reshape(len(x), -1, 1).long()
            out = candidates.gather(2, state).reshape(out.shape)
        self.mark(out)
        return out

    def _site(self, func, args, kwargs, kind, breaks, slopes, consts):
        pre = args[0] if args else kwargs["input"]
        # per sample: an activation may run on the batch flattened (relulab's own modules do)
        site = Site(self._name(func), kind, pre.numel() // self.batch, breaks)
        index = self._enter(site)
        if index == self.stop:
            raise _Stop(pre)
        if index >= len(self.patterns):
            out = func(*args, **kwargs)  # the recording run: plain forward
        else:
            state = self.patterns[index].reshape(pre.shape).to(pre.dtype)
            out = _apply(pre, state, slopes, consts)
            if getattr(func, "__name__", "")[-1:] == "_":  # in place, as the call promised
                pre.copy_(out)
                out = pre
        self.mark(out)
        return out


def _apply(pre: Tensor, state: Tensor, slopes: tuple, consts: tuple) -> Tensor:
    """The linear piece ``state`` (0, 1, ...) of each unit applied to ``pre``."""
    if slopes == (0.0, 1.0) and consts == (0.0, 0.0):  # relu, the common case: one pass
        return pre * state
    if len(slopes) == 2:  # two pieces: a slope and offset that interpolate in the 0/1 state
        low = slopes[0]
        if isinstance(low, Tensor) and low.numel() > 1:  # prelu: one slope per channel
            low = low.reshape([1, -1] + [1] * (pre.dim() - 2))
        out = pre * (low + (slopes[1] - low) * state)
        return out + consts[0] + (consts[1] - consts[0]) * state if any(consts) else out
    out = torch.zeros_like(pre)
    for s, (slope, const) in enumerate(zip(slopes, consts)):
        out = torch.where(state == s, pre * slope + const, out)
    return out


_POOL_PARAMETERS = {
    "max": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "adaptive": ("output_size", "return_indices"),
}


def _pool_options(name: str, args: tuple, kwargs: dict) -> dict[str, Any]:
    """A pooling call's arguments by name (the input excluded)."""
    names = _POOL_PARAMETERS["adaptive" if name.startswith("adaptive") else "max"]
    options = dict(zip(names, args[1:]))
    options.update({k: v for k, v in kwargs.items() if k != "input"})
    return options


def _along(value: Any, dim: int, default: int) -> int:
    """A pooling size for spatial dimension ``dim`` (an int, or one per dimension)."""
    if value is None or (isinstance(value, (tuple, list)) and not value):
        return default
    return int(value[dim] if isinstance(value, (tuple, list)) else value)


def _pool_windows(
    name: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...], options: dict[str, Any]
) -> Tensor:
    """``(units, k)``: the flat input positions (within one sample) of every output unit's
    window, -1 where the window overhangs the input. Units are in output order (channel,
    then spatial), candidates in the window's row-major order, as torch scans them."""
    channels, spatial = in_shape[0], in_shape[1:]
    per_dim = []  # per spatial dim: (out, k_d) positions along that dim, -1 outside
    for d, (size, outputs) in enumerate(zip(spatial, out_shape)):
        if name.startswith("adaptive"):
            o = torch.arange(outputs)
            start, end = (o * size) // outputs, -((-(o + 1) * size) // outputs)  # floor, ceil
            width = int((end - start).max())
            pos = start[:, None] + torch.arange(width)[None, :]
            pos = torch.where(pos < end[:, None], pos, -1)
        else:
            kernel = _along(options.get("kernel_size"), d, 1)
            stride = _along(options.get("stride"), d, kernel) or kernel
            pad, dilation = (
                _along(options.get("padding"), d, 0),
                _along(options.get("dilation"), d, 1),
            )
            pos = (torch.arange(outputs) * stride - pad)[:, None] + dilation * torch.arange(kernel)
            pos = torch.where((pos >= 0) & (pos < size), pos, -1)
        per_dim.append(pos)
    if len(per_dim) == 1:
        flat = per_dim[0]
    else:
        rows, cols = per_dim  # (oH, kH), (oW, kW)
        flat = rows[:, None, :, None] * spatial[1] + cols[None, :, None, :]
        flat = torch.where((rows[:, None, :, None] < 0) | (cols[None, :, None, :] < 0), -1, flat)
        flat = flat.reshape(rows.shape[0] * cols.shape[0], -1)
    plane = int(torch.tensor(spatial).prod())
    offsets = (torch.arange(channels) * plane)[:, None, None]
    windows = torch.where(flat[None] < 0, -1, flat[None] + offsets)
    return windows.reshape(-1, windows.shape[-1])


def _hooks(model: nn.Module, mode: _Mode) -> list[Any]:
    def enter(module: nn.Module, _inputs: Any) -> None:
        mode.stack.append(f"{mode.names.get(module) or 'model'} ({type(module).__name__})")

    def leave(module: nn.Module, _inputs: Any, _output: Any) -> None:
        mode.stack.pop()

    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    return handles


def run(
    model: nn.Module,
    inputs: Tensor,
    patterns: Sequence[Tensor] = (),
    stop: int | None = None,
    sites: list[Site] | None = None,
    strict: bool = True,
) -> tuple[Tensor, list[Site]]:
    """Run ``model`` on ``inputs`` with the sites before ``stop`` fixed to ``patterns``.

    Args:
        model: a float64 model in eval mode.
        inputs: ``(B, *input_shape)``.
        patterns: for site ``k``, ``(B, units_k)`` integer states (breakpoints below).
        stop: return the pre-activation of this site, ``(B, units)``; None runs to the end.
        sites: the sites found by an earlier recording run (checked against this run).
        strict: raise :class:`~relulab.errors.UserError` on a call that is not piecewise
            linear; False runs it and records it as a site of kind ``"other"`` (for counting
            sites; patterns do not apply to such sites, and an output that is not a tensor
            is returned as it is).

    Returns:
        ``(values, sites)``: the pre-activation of ``stop`` (or the flattened output,
        ``(B, out)``) and the sites met.
    """
    mode = _Mode(model, patterns, stop, sites, strict)
    mode.batch = len(inputs)
    mode.mark(inputs)
    handles = _hooks(model, mode)
    try:
        with mode, torch.no_grad():
            out = model(inputs)
    except _Stop as stopped:
        return stopped.pre.reshape(len(inputs), -1), mode.found
    finally:
        for handle in handles:
            handle.remove()
    if stop is not None:
        raise UserError(f"relulab.geometry: site {stop} was not reached")
    if not isinstance(out, Tensor):
        if not strict:  # counting needs the sites alone: a tuple or dict output is fine
            return out, mode.found
        raise UserError(f"relulab.geometry: the model returned {type(out).__name__}, not a tensor")
    return out.reshape(len(inputs), -1), mode.found


def states(pre: Tensor, site: Site) -> Tensor:
    """The state of each unit, ``(B, units)``, from the site's pre-activation ``(B, units *
    window)``: how many of its breakpoints lie strictly below it, or for max the position of
    the largest candidate in its window (the first, on a tie)."""
    if site.kind == "max":
        candidates = pre.reshape(len(pre), site.units, site.window)
        candidates = candidates.masked_fill(site.windows[None] < 0, -torch.inf)
        dtype = torch.int8 if site.window <= 127 else torch.int16
        return candidates.argmax(dim=2).to(dtype)
    count = torch.zeros(pre.shape, dtype=torch.int8)
    for b in site.breaks:
        count += (pre > b).to(torch.int8)
    return count


def as_float64(model: nn.Module) -> nn.Module:
    """A float64 copy of ``model`` (the original is left as it is)."""
    import copy

    return copy.deepcopy(model).to(torch.float64)


def chunked(function: Callable[[slice], Tensor], total: int, size: int) -> Tensor:
    """``function`` over consecutive slices of ``range(total)``, concatenated."""
    return torch.cat([function(slice(i, min(i + size, total))) for i in range(0, total, size)])
