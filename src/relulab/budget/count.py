"""Count the nonlinear evaluations that private inference pays for, on one input.

:func:`count_relus` runs the model once under :func:`relulab.geometry.affine.run`, which sees
every torch call in execution order, made by a module (``nn.ReLU``) or functional
(``F.relu(x)``, ``x.clamp(min=0)``), and counts per call what PI papers count:

- ``relu``, ``leaky_relu``, ``prelu``, ``abs``: one comparison (one ReLU, ``x > 0``) per
  output unit; leaky_relu, prelu and abs are ReLU-like in cost and counted in the total, and
  reported by kind.
- ``clamp`` (``relu6``, ``hardtanh``, ``clamp``/``clip`` with number bounds): one comparison
  per bound per unit, so ``relu6`` costs 2 per unit. That is how MPC frameworks evaluate it
  (CrypTen: ``hardtanh(x) = relu(x - low) - relu(x - high) + low``); a one-sided clamp
  (``x.clamp(min=0)``) is one ReLU.
- max-pooling (``max``): a window of ``k`` candidates costs ``k - 1`` comparisons per output
  (``k`` counts only the candidates inside the input, so padding and ceil mode cost less).
  Counted apart from the ReLU total, as papers do.
- a ReLU written by hand, a call on one computed tensor and a constant (a number, or a
  tensor that does not depend on the input): ``torch.maximum(x, zero)``, ``torch.max``,
  ``minimum``, ``fmax``/``fmin``, ``x.clamp_min(0)``/``clamp_max`` (one comparison per
  output, kind clamp) and ``torch.where(x > c, x, constant)`` (one, kind relu; its
  comparison is not counted again). Their operands are seen by a second function mode
  entered before :func:`~relulab.geometry.affine.run`, which records such calls by name only.
  ``F.hardswish`` and ``F.hardsigmoid`` (relu6 inside) cost 2, ``F.threshold`` 1.
- relulab's own activations with a flat region (hard_swish, hard_mish, squared_relu, smelu,
  hard_sigmoid): one entry per call, one comparison per output per distinct breakpoint of
  the ReLU-like calls of their formula (hard_sigmoid's formula clamps twice at -3 and 3:
  2, not 4). Smooth ones (GELU, ...) clamp for numerics only: one uncounted entry.
- everything else that depends on the input and is not known to be affine (softmax, GELU,
  sigmoid, layer norm, a product of two input-dependent tensors, an unknown call) is not
  counted; it is listed by name as ``other``, so that what the budget leaves out is in sight.
  Of these, the calls that may still hide a ReLU (a max or min of two computed tensors,
  ``x * (x > 0)``'s comparison, a where with a computed other branch, ``x.max()``) are
  also ``hidden``, and :attr:`ReLUCount.warnings` names them, one line per module, so
  that nothing ReLU-like leaves the total unseen.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from relulab.errors import UserError

RELU_KINDS = ("relu", "leaky_relu", "prelu", "abs", "clamp")
MAX_KIND = "max"
OTHER_KIND = "other"
# Activation modules that must show up as a counted call when they run; if one runs and no
# call is seen inside it, its computation was hidden from the trace (a compiled kernel).
_TRACED_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.Hardtanh,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
)
# Calls recorded as "other" whose name alone fixes their comparisons per output: torch's
# hardswish and hardsigmoid are relu6(x + 3) inside, the shrinks compare with ±lambda.
_COUNTED_BY_NAME = {
    "threshold": 1,
    "_threshold": 1,
    "hardswish": 2,
    "hardsigmoid": 2,
    "hardshrink": 2,
    "softshrink": 2,
}
# One comparison per output when one operand depends on the input and the other does not
# (torch.maximum(x, zero), x.clamp_min(0)); with two computed operands (or as a reduction,
# x.max()) it is a max of computed values, not a ReLU: named, not counted.
_ONE_BOUND = {
    "maximum", "minimum", "max", "min", "fmax", "fmin", "clamp_min", "clamp_min_",
    "clamp_max", "clamp_max_",
}  # fmt: skip
_COMPARISONS = {
    "gt", "ge", "lt", "le", "greater", "greater_equal", "less", "less_equal", "__gt__",
    "__ge__", "__lt__", "__le__",
}  # fmt: skip
# Calls that may be a ReLU written by hand when not judged to be one: named in a warning.
_MAYBE_RELU = _ONE_BOUND | _COMPARISONS | {
    "amax", "amin", "where", "sign", "sgn", "heaviside", "signbit",
}  # fmt: skip
# Outputs that do not depend on the input's values, though made from it.
_SHAPE_ONLY = {
    "zeros_like", "ones_like", "full_like", "empty_like", "new_zeros", "new_ones", "new_full",
    "new_empty", "size", "dim", "numel",
}  # fmt: skip


@dataclass(frozen=True)
class LayerCount:
    """One traced call, in execution order.

    Attributes:
        index: position among the traced calls.
        name: the module that made the call and the call (``"layer1.0.act1 (ReLU): F.relu"``).
        kind: relu, leaky_relu, prelu, abs, clamp, max or other.
        units: outputs per input.
        count: comparisons per input (ReLU evaluations; for max, max-pool comparisons; 0 for
            other, which is not counted).
        hidden: an uncounted call that may be a ReLU written by hand (``torch.maximum``,
            ``torch.where``, a comparison).
    """

    index: int
    name: str
    kind: str
    units: int
    count: int
    hidden: bool = False


@dataclass(frozen=True)
class ReLUCount:
    """The result of :func:`count_relus`: every traced call, and the totals.

    Attributes:
        input_shape: the shape of one input, without the batch dimension.
        layers: every traced call (:class:`LayerCount`), in execution order.
    """

    input_shape: tuple[int, ...]
    layers: tuple[LayerCount, ...] = field(default=())

    @property
    def relus(self) -> list[LayerCount]:
        """The calls counted as ReLU evaluations."""
        return [layer for layer in self.layers if layer.kind in RELU_KINDS]

    @property
    def max_pools(self) -> list[LayerCount]:
        return [layer for layer in self.layers if layer.kind == MAX_KIND]

    @property
    def uncounted(self) -> list[LayerCount]:
        """Input-dependent calls left out of the counts (softmax, GELU, ...)."""
        return [layer for layer in self.layers if layer.kind == OTHER_KIND]

    @property
    def hidden(self) -> list[LayerCount]:
        """Uncounted calls that may be ReLUs written by hand (see :attr:`warnings`)."""
        return [layer for layer in self.layers if layer.hidden]

    @property
    def warnings(self) -> list[str]:
        """One line per module that made a possible hidden ReLU, naming its calls."""
        calls: dict[str, list[str]] = {}
        for layer in self.hidden:
            module, _, call = layer.name.partition(": ")
            seen = calls.setdefault(module, [])
            if call not in seen:
                seen.append(call)
        return [
            f"possible hidden ReLU: {', '.join(names)} in {module}"
            for module, names in calls.items()
        ]

    @property
    def total(self) -> int:
        """ReLU evaluations per input: the budget."""
        return sum(layer.count for layer in self.relus)

    @property
    def max_pool_comparisons(self) -> int:
        return sum(layer.count for layer in self.max_pools)

    @property
    def by_kind(self) -> dict[str, int]:
        """ReLU evaluations per kind (relu, leaky_relu, ...), in order of first appearance."""
        kinds: dict[str, int] = {}
        for layer in self.relus:
            kinds[layer.kind] = kinds.get(layer.kind, 0) + layer.count
        return kinds

    def to_dict(self) -> dict[str, Any]:
        total = self.total

        # keys as the words of `relulab count`'s table headers
        def row(layer: LayerCount) -> dict[str, Any]:
            module, _, call = layer.name.partition(": ")
            entry = {
                "index": layer.index,
                "layer": module,
                "call": call,
                "kind": layer.kind,
                "outputs": layer.units,
                "count": layer.count,
            }
            if layer.kind in RELU_KINDS:
                entry["percent"] = 100 * layer.count / total
            return entry

        return {
            "input_shape": list(self.input_shape),
            "total_relus": total,
            "relus_by_kind": self.by_kind,
            "max_pool_comparisons": self.max_pool_comparisons,
            "layers": [row(layer) for layer in self.layers if layer.kind != OTHER_KIND],
            "not_counted": [row(layer) for layer in self.uncounted],
            "warnings": self.warnings,
        }


def _prefix(site: Any) -> str:
    """The module part of a site's name, ``"layer1.0.act1 (ReLU)"``."""
    return site.name.split(": ", 1)[0]


@dataclass
class _Operands:
    """One watched call: whether it is one comparison per output of a computed tensor and a
    constant (``relu_like``), the computed tensor it compares (for a comparison, by id)."""

    relu_like: bool
    compared: int | None = None
    consumed: bool = False  # a comparison whose cost is its where's


class _OperandWatch(TorchFunctionMode):
    """Sees the operands of max, min, clamp_min/max, comparisons and where, which
    :func:`relulab.geometry.affine.run` records by name only. Entered before it, it is the
    next mode down: each call that run's mode passes on reaches it once, in the same order."""

    def __init__(self, inputs: torch.Tensor) -> None:
        super().__init__()
        self.computed: dict[int, torch.Tensor] = {id(inputs): inputs}  # kept alive: ids unique
        self.calls: dict[str, list[_Operands]] = {}
        self.comparisons: dict[int, _Operands] = {}  # by the id of their output

    def is_computed(self, value: Any) -> bool:
        return isinstance(value, torch.Tensor) and id(value) in self.computed

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        operands = [v for v in tree_flatten((args, kwargs))[0] if isinstance(v, torch.Tensor)]
        if name in _SHAPE_ONLY or not any(self.is_computed(v) for v in operands):
            return out
        if name in _ONE_BOUND or name in _COMPARISONS or name == "where":
            self.calls.setdefault(name, []).append(self._judge(name, args, kwargs, out))
        for leaf in tree_flatten(out)[0]:
            if isinstance(leaf, torch.Tensor):
                self.computed[id(leaf)] = leaf
        return out

    def _judge(self, name: str, args: tuple, kwargs: dict, out: Any) -> _Operands:
        values = [*args, *kwargs.values()]
        if name == "where":
            if len(values) != 3:
                return _Operands(False)
            condition, a, b = values
            compared = self.comparisons.get(id(condition))
            if compared is None or not compared.relu_like:
                return _Operands(False)
            # where(x > c, x, constant) or where(x > c, constant, x): one comparison, x's
            for kept, other in ((a, b), (b, a)):
                if id(kept) == compared.compared and not self.is_computed(other):
                    compared.consumed = True
                    return _Operands(True)
            return _Operands(False)
        if len(values) < 2:  # x.max(): a reduction
            return _Operands(False)
        x, other = values[0], values[1]
        reduction = not name.startswith("clamp") and not isinstance(other, torch.Tensor)
        if name in _ONE_BOUND and reduction:
            return _Operands(False)  # torch.max(x, 1): a reduction over a dimension
        if other is None or self.is_computed(x) == self.is_computed(other):
            return _Operands(False)
        computed = x if self.is_computed(x) else other
        judged = _Operands(True, compared=id(computed))
        if name in _COMPARISONS:
            self.comparisons[id(out)] = judged
        return judged

    def take(self, call: str) -> _Operands | None:
        """The next judged call of this name (``"torch.maximum"``), in execution order."""
        queue = self.calls.get(call.rpartition(".")[2])
        return queue.pop(0) if queue else None


def _activations(model: nn.Module) -> dict[str, Any]:
    """relulab's registered activations, by the module part of their sites' names; each run
    of one is one entry (see :func:`_activation_layer`)."""
    from relulab.activations.base import Activation
    from relulab.registry import activation_info

    found = {}
    for name, module in model.named_modules():
        if isinstance(module, Activation) and module.activation_name:
            # an unregistered subclass is left out: its calls are counted as they come
            found[f"{name or 'model'} ({type(module).__name__})"] = activation_info(
                module.activation_name
            )
    return found


def _activation_layer(index: int, prefix: str, info: Any, run: list[Any]) -> list[LayerCount]:
    """One run of a relulab activation's calls as counts.

    A piecewise-linear one making a single ReLU-like call is that call. Else one entry: for
    one with a flat region (a piecewise definition: hard_swish, smelu, squared_relu), one
    comparison per output per distinct breakpoint of its ReLU-like calls (its formula may
    clamp twice at the same bounds for the gradient's sake); for a smooth one without
    (GELU), whose clamps keep a formula's numerics in range, an uncounted call.
    """
    pieces = [site for site in run if site.kind in RELU_KINDS]
    if info.piecewise_linear and len(pieces) == 1 and len(run) == 1:
        return [_layer(index, run[0])]
    name, units = f"{prefix}: {info.name}", run[0].units
    if not (info.piecewise_linear or info.flat_region):
        return [LayerCount(index, name, OTHER_KIND, units, 0)]
    breaks = {b for site in pieces for b in site.breaks}
    if not breaks:  # a flat region the trace did not see as a ReLU-like call
        return [LayerCount(index, name, OTHER_KIND, units, 0, hidden=True)]
    kinds = {site.kind for site in pieces}
    kind = kinds.pop() if len(kinds) == 1 and len(breaks) == 1 else "clamp"
    units = pieces[0].units
    return [LayerCount(index, name, kind, units, units * len(breaks))]


def _layers(
    sites: list[Any], activations: dict[str, Any], watch: _OperandWatch
) -> tuple[LayerCount, ...]:
    """Sites as counts, each run of a relulab activation's calls as one entry."""
    # every watched site takes its operands, in order, inside a relulab activation or not
    judged = [watch.take(site.name) if site.kind == OTHER_KIND else None for site in sites]
    layers: list[LayerCount] = []
    runs: list[tuple[str, list[tuple[Any, Any]]]] = []  # consecutive sites by module
    for site, operands in zip(sites, judged):
        prefix = _prefix(site)
        if runs and runs[-1][0] == prefix:
            runs[-1][1].append((site, operands))
        else:
            runs.append((prefix, [(site, operands)]))
    for prefix, run in runs:
        if prefix in activations:
            plain = [site for site, _ in run]
            layers += _activation_layer(len(layers), prefix, activations[prefix], plain)
        else:
            layers += [
                _layer(len(layers) + i, site, operands) for i, (site, operands) in enumerate(run)
            ]
    return tuple(layers)


def _layer(index: int, site: Any, operands: _Operands | None = None) -> LayerCount:
    function = site.name.partition(": ")[2].rpartition(".")[2]
    if site.kind == MAX_KIND:
        inside = int((site.windows >= 0).sum())  # each window holds at least one candidate
        count = inside - site.units
    elif site.kind != OTHER_KIND:  # one comparison per breakpoint: 1 for relu, 2 for relu6
        count = site.units * len(site.breaks)
    elif function in _COUNTED_BY_NAME:
        count = site.units * _COUNTED_BY_NAME[function]
        return LayerCount(index, site.name, "clamp", site.units, count)
    elif operands is not None and operands.relu_like and function not in _COMPARISONS:
        kind = "relu" if function == "where" else "clamp"  # where(x > 0, x, 0) is relu
        return LayerCount(index, site.name, kind, site.units, site.units)
    else:  # a comparison counted in its where is not hidden; the rest may be
        hidden = function in _MAYBE_RELU and not (operands is not None and operands.consumed)
        return LayerCount(index, site.name, OTHER_KIND, site.units, 0, hidden=hidden)
    return LayerCount(index, site.name, site.kind, site.units, count)


def _first_layer_hint(model: nn.Module, shape: tuple[int, ...]) -> str | None:
    """``"; its first layer, conv1 (Conv2d), takes inputs of shape (3, H, W)"`` when
    ``shape`` does not fit the first linear or convolutional layer the model registers;
    None when it fits or there is none."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            fits = shape[-1] == module.in_features
            wanted = (
                f"(..., {module.in_features})" if len(shape) > 1 else f"({module.in_features},)"
            )
        elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            spatial = (
                ("L",)
                if isinstance(module, nn.Conv1d)
                else ("D", "H", "W")[-(module.weight.dim() - 2) :]
            )
            fits = len(shape) == 1 + len(spatial) and shape[0] == module.in_channels
            wanted = f"({', '.join([str(module.in_channels), *spatial])})"
        else:
            continue
        if fits:
            return None
        where = f"{name} ({type(module).__name__})" if name else type(module).__name__
        return f"; its first layer, {where}, takes inputs of shape {wanted}"
    return None


def _check_traceable(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if isinstance(module, torch.jit.ScriptModule):
            where = name or "the model"
            raise UserError(
                f"cannot count the ReLUs of {where}: it is a TorchScript module "
                f"({type(module).__name__}), whose calls cannot be traced; count the nn.Module "
                "it was made from"
            )


def _watch(model: nn.Module, runs: dict[str, int]) -> list[Any]:
    """Hooks that count, per activation module, how often it ran, under the name its calls
    get in a site's name (``"layer1.0.act1 (ReLU)"``)."""

    def ran(module: nn.Module, _inputs: Any, _output: Any) -> None:
        key = f"{names.get(module) or 'model'} ({type(module).__name__})"
        runs[key] = runs.get(key, 0) + 1

    names = {module: name for name, module in model.named_modules()}
    return [
        module.register_forward_hook(ran)
        for module in model.modules()
        if isinstance(module, _TRACED_MODULES)
    ]


def _reference_formulas(model: nn.Module) -> list[tuple[nn.Module, dict]]:
    """Make relulab's activations run their reference formulas (``fused = False``), whose
    calls are those of the activation, not of a kernel. Returns what to restore: each
    module with its own attributes' ``fused`` entry as it was (none, or its value)."""
    from relulab.activations.base import Activation

    changed = []
    for module in model.modules():
        if isinstance(module, Activation):
            own = vars(module)
            changed.append((module, {k: own[k] for k in ("fused",) if k in own}))
            module.fused = False
    return changed


def _restore(changed: list[tuple[nn.Module, dict]]) -> None:
    for module, own in changed:
        vars(module).pop("fused", None)
        vars(module).update(own)


def count_relus(model: nn.Module, input_shape: Sequence[int]) -> ReLUCount:
    """Count the ReLU evaluations (and max-pool comparisons) of ``model`` on one input.

    The model runs once on a random input of shape ``(1, *input_shape)``, in eval mode, with
    relulab's activations on their reference formulas (both restored afterwards), on CPU (a
    copy, if it is elsewhere: GPU kernels would hide their calls from the trace). Counts are
    per input and do not depend on the input's values unless the model's control flow does.
    See the module docstring for what counts how.

    Args:
        model: any ``nn.Module`` taking a float tensor.
        input_shape: the shape of one input without the batch dimension, e.g. ``(3, 32, 32)``.

    Returns:
        a :class:`ReLUCount`: ``.total`` ReLU evaluations, ``.by_kind``,
        ``.max_pool_comparisons``, ``.layers`` per call, ``.uncounted`` calls, and
        ``.warnings``, one line per module whose uncounted calls may be hidden ReLUs.

    Raises:
        UserError: a bad shape, a model that fails on it, a TorchScript module, or an
            activation module whose computation the trace cannot see.

    Example::

        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), nn.Softmax(1))
        >>> result = count_relus(net, (4,))
        >>> result.total, [layer.name for layer in result.uncounted]
        (8, ['3 (Softmax): F.softmax'])
    """
    from relulab.geometry import affine

    shape = tuple(input_shape)
    if not shape or not all(isinstance(s, int) and s > 0 for s in shape):
        raise UserError(f"input shape must be positive integers, got {list(input_shape)}")
    if not isinstance(model, nn.Module):
        raise UserError(f"expected an nn.Module, got {type(model).__name__}")
    _check_traceable(model)
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.device.type != "cpu" for t in tensors):
        model = copy.deepcopy(model).cpu()
    floats = [t.dtype for t in tensors if t.is_floating_point()]
    dtype = floats[0] if floats else torch.get_default_dtype()
    x = torch.randn((1, *shape), generator=torch.Generator().manual_seed(0), dtype=dtype)

    modes = {module: module.training for module in model.modules()}
    reference = _reference_formulas(model)
    activations = _activations(model)
    runs: dict[str, int] = {}
    hooks = _watch(model, runs)
    model.eval()
    watch = _OperandWatch(x)
    try:
        with watch:
            _, sites = affine.run(model, x, strict=False)
    except UserError as error:
        hint = _first_layer_hint(model, shape)
        if hint is None:
            raise
        raise UserError(f"{error}{hint}") from error
    except (RuntimeError, ValueError) as error:  # the model does not take this shape
        lines = str(error).strip().splitlines()
        detail = lines[0] if lines else type(error).__name__
        raise UserError(
            f"the model does not accept an input of shape {list(shape)} (with a batch of 1): "
            f"{detail}{_first_layer_hint(model, shape) or ''}"
        ) from error
    finally:
        for handle in hooks:
            handle.remove()
        for module, training in modes.items():
            module.training = training
        _restore(reference)
    for module, times in runs.items():
        inside = [site for site in sites if site.name.startswith(f"{module}: ")]
        if sum(site.kind != OTHER_KIND for site in inside) < times:
            made = sorted({site.name.split(": ", 1)[1] for site in inside})
            what = f"only {', '.join(made)}" if made else "no call that the trace saw"
            raise UserError(
                f"cannot count the ReLUs of {module}: it ran but made {what}, none of them "
                "a ReLU-like or max-pool call that the count knows (a custom kernel or torch.ops?)"
            )
    return ReLUCount(shape, _layers(sites, activations, watch))


def check_budget(budget: int, total: int) -> int:
    """``budget`` if it is a whole number of ReLUs from 1 to ``total`` (the model's count);
    else :class:`~relulab.errors.UserError` naming the valid range."""
    if total < 1:
        raise UserError(f"the model has no ReLUs to reduce (budget {budget} asked for)")
    if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= total:
        raise UserError(
            f"a budget must be a whole number of ReLUs from 1 to {total} (the model's count), "
            f"got {budget!r}"
        )
    return budget
