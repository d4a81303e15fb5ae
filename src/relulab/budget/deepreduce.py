"""DeepReDuce (Jha, Ghodsi, Garg, Reagen; ICML 2021): cull whole ReLU stages, thin the rest.

A *stage* is a group of ReLU layers (activation modules): each layer on its own by default,
or the layers that share a module-path prefix of ``depth`` parts (ResNet-18's ``layer1`` ...
``layer4`` with ``depth=1``). A stage's *criticality* is the test accuracy of the network
trained with only that stage's ReLUs (every other ReLU layer an identity), DeepReDuce's
criticality test; the most critical stages are kept. *Culling* keeps the most critical stages
whole while they fit the budget; *thinning* also drops every other ReLU layer of each kept
stage (the layers at odd positions within the stage), so more stages fit. A removed layer
becomes ``nn.Identity``, which :func:`relulab.budget.fold` can then merge away.

Both give discrete configurations: the plan is the configuration with the most ReLUs that is
within the budget, so the count is at most the budget, not always equal to it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from relulab.activations.base import Activation
from relulab.budget.count import check_budget, count_relus
from relulab.errors import UserError

# torch's piecewise-linear activation modules; relulab's are Activation subclasses
_TORCH_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ReLU6, nn.Hardtanh)


@dataclass(frozen=True)
class Stage:
    """ReLU layers (module paths, in execution order) that are kept or culled together."""

    name: str
    layers: tuple[str, ...]
    relus: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.relus)

    def thinned(self) -> tuple[tuple[str, ...], int]:
        """The layers at even positions (every other one dropped) and their ReLUs."""
        return self.layers[::2], sum(self.relus[::2])


@dataclass(frozen=True)
class Plan:
    """Which ReLU layers a reduced model keeps, and how many ReLUs that is."""

    method: str
    keep: tuple[str, ...]
    relus: int


def relu_stages(
    model: nn.Module, input_shape: Sequence[int], depth: int | None = None
) -> list[Stage]:
    """The model's ReLU layers grouped into stages, in execution order (see the module)."""
    counted = count_relus(model, input_shape)
    grouped: dict[str, list[tuple[str, int]]] = {}
    for layer in counted.relus:
        path = layer.name.split(" (")[0]
        module = model.get_submodule(path) if path and path != "model" else model
        if not isinstance(module, (Activation, *_TORCH_ACTIVATIONS)):
            raise UserError(
                f"DeepReDuce removes activation modules, but {layer.name} is a call inside "
                f"{type(module).__name__}'s forward; make it a module (e.g. nn.ReLU)"
            )
        key = ".".join(path.split(".")[:depth]) if depth else path
        grouped.setdefault(key, []).append((path, layer.count))
    if not grouped:
        raise UserError(f"{type(model).__name__} has no ReLU layers to reduce")
    return [
        Stage(name, tuple(p for p, _ in layers), tuple(c for _, c in layers))
        for name, layers in grouped.items()
    ]


def linearized(model: nn.Module, keep: Sequence[str], stages: Sequence[Stage]) -> nn.Module:
    """A copy of ``model`` whose ReLU layers not in ``keep`` are ``nn.Identity``."""
    copied = copy.deepcopy(model)
    kept = set(keep)
    for stage in stages:
        for path in stage.layers:
            if path not in kept:
                parent, _, name = path.rpartition(".")
                owner = copied.get_submodule(parent) if parent else copied
                setattr(owner, name, nn.Identity())
    return copied


def plan(stages: Sequence[Stage], order: Sequence[int], budget: int, method: str) -> Plan:
    """The configuration with the most ReLUs within ``budget``: the stages in ``order`` (most
    critical first) taken whole (``cull``) or thinned (``thin``) while they fit; a stage that
    does not fit is skipped and the next one tried."""
    if method not in ("cull", "thin"):
        raise UserError(f"unknown DeepReDuce method {method!r}; use 'cull' or 'thin'")
    check_budget(budget, sum(stage.total for stage in stages))
    keep: list[str] = []
    used = 0
    for index in order:
        layers, relus = (
            stages[index].thinned()
            if method == "thin"
            else (stages[index].layers, stages[index].total)
        )
        if used + relus <= budget:
            keep += layers
            used += relus
    return Plan(method, tuple(keep), used)
