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
- everything else that depends on the input and is not known to be affine (softmax, GELU,
  sigmoid, layer norm, a product of two input-dependent tensors, an unknown call) is not
  counted; it is listed by name as ``other``, so that what the budget leaves out is in sight.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

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
    """

    index: int
    name: str
    kind: str
    units: int
    count: int


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

        def row(layer: LayerCount) -> dict[str, Any]:
            entry = {k: getattr(layer, k) for k in ("index", "name", "kind", "units", "count")}
            if layer.kind in RELU_KINDS:
                entry["percent"] = 100 * layer.count / total
            return entry

        return {
            "input_shape": list(self.input_shape),
            "total_relus": total,
            "relus_by_kind": self.by_kind,
            "max_pool_comparisons": self.max_pool_comparisons,
            "layers": [row(layer) for layer in self.relus + self.max_pools],
            "not_counted": [row(layer) for layer in self.uncounted],
        }


def _prefix(site: Any) -> str:
    """The module part of a site's name, ``"layer1.0.act1 (ReLU)"``."""
    return site.name.split(": ", 1)[0]


def _smooth_activations(model: nn.Module) -> dict[str, str]:
    """relulab's activations that are not piecewise linear, by the module part of their
    sites' names: the calls inside them (a clamp that keeps erfc's argument in range) are
    the formula's numerics, not ReLUs, so each run of one is one uncounted call."""
    from relulab.activations.base import Activation
    from relulab.registry import activation_info

    found = {}
    for name, module in model.named_modules():
        if not isinstance(module, Activation) or not module.activation_name:
            continue  # an unregistered subclass: its calls are counted as they come
        if not activation_info(module.activation_name).piecewise_linear:
            found[f"{name or 'model'} ({type(module).__name__})"] = module.activation_name
    return found


def _layers(sites: list[Any], smooth: dict[str, str]) -> tuple[LayerCount, ...]:
    """Sites as counts, each run of a smooth relulab activation as one ``other`` entry."""
    layers: list[LayerCount] = []
    previous = None
    for site in sites:
        prefix = _prefix(site)
        if prefix in smooth:
            if prefix != previous:  # the first call of this run of the activation
                name = f"{prefix}: {smooth[prefix]}"
                layers.append(LayerCount(len(layers), name, OTHER_KIND, site.units, 0))
        else:
            layers.append(_layer(len(layers), site))
        previous = prefix
    return tuple(layers)


def _layer(index: int, site: Any) -> LayerCount:
    if site.kind == MAX_KIND:
        inside = int((site.windows >= 0).sum())  # each window holds at least one candidate
        count = inside - site.units
    elif site.kind == OTHER_KIND:
        count = 0
    else:  # one comparison per breakpoint: 1 for relu, 2 for relu6
        count = site.units * len(site.breaks)
    return LayerCount(index, site.name, site.kind, site.units, count)


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
        ``.max_pool_comparisons``, ``.layers`` per call and ``.uncounted`` calls.

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
    smooth = _smooth_activations(model)
    runs: dict[str, int] = {}
    hooks = _watch(model, runs)
    model.eval()
    try:
        _, sites = affine.run(model, x, strict=False)
    except UserError:
        raise
    except (RuntimeError, ValueError) as error:  # the model does not take this shape
        lines = str(error).strip().splitlines()
        detail = lines[0] if lines else type(error).__name__
        raise UserError(
            f"the model does not accept an input of shape {list(shape)} (with a batch of 1): "
            f"{detail}"
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
    return ReLUCount(shape, _layers(sites, smooth))


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
