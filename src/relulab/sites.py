"""Find a model's activation sites: activation modules, and functional calls via torch.fx.

One mechanism for everything that needs to know where a model's activations are: surgery
(:mod:`relulab.surgery`), and later ReLU counting, relufication and geometry.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
from torch import nn

from relulab.activations.base import Activation
from relulab.registry import ActivationInfo, TorchEquivalent, format_spec, registered


def _in_models() -> list[tuple[ActivationInfo, TorchEquivalent]]:
    """The registered activations that torch has a module or call for, as models use them."""
    return [(i, i.torch) for i in registered() if i.torch is not None and i.torch.in_models]


def _call_default(equivalent: TorchEquivalent, key: str) -> Any:
    """A selecting argument that a call leaves out takes the module's default
    (``F.gelu(x)`` is approximate="none", as ``nn.GELU()`` is)."""
    return inspect.signature(equivalent.module).parameters[key].default


@dataclass
class ActivationSite:
    """One place where a model applies an activation.

    Attributes:
        path: the module's qualified name (``"layer1.0.act"``), or the fx node's name for a
            functional call.
        kind: ``"module"`` or ``"call"``.
        activation: canonical registry name of what is applied there.
        arguments: its arguments in registry terms (``{"negative_slope": 0.2}``).
        module: the module (module sites).
        node: the fx node (call sites).
        inplace: the call overwrites its input.
    """

    path: str
    kind: str
    activation: str
    arguments: dict[str, Any] = field(default_factory=dict)
    module: nn.Module | None = None
    node: torch.fx.Node | None = None
    inplace: bool = False

    @property
    def dynamic(self) -> bool:
        """Some argument is computed at run time, so no spec string describes the site."""
        return any(isinstance(v, torch.fx.Node) for v in self.arguments.values())

    @property
    def spec(self) -> str:
        """The site's activation as a spec string, e.g. ``"leaky_relu(negative_slope=0.2)"``."""
        return format_spec(self.activation, self.arguments)


def _torch_matches(cls: type, module: nn.Module | None = None) -> list[tuple[str, tuple]]:
    """(name, argument attributes) of the activations whose torch class ``cls`` is or derives
    from, most specific class first; with ``module``, only those its attributes select."""
    found, candidates = [], _in_models()
    for base in getattr(cls, "__mro__", ()):
        for info, equivalent in candidates:
            if equivalent.module is not base:
                continue
            if module is None or all(
                getattr(module, k, None) == v for k, v in equivalent.selects.items()
            ):
                found.append((info.name, equivalent.arguments))
        if found:
            return found
    return found


def _timm_name(cls: type) -> str | None:
    """timm's activation classes, matched by class name so that timm need not be installed."""
    if not getattr(cls, "__module__", "").startswith("timm."):
        return None
    return next((i.name for i in registered() if cls.__name__ in i.timm_modules), None)


def activation_name_of_class(cls: type) -> str | None:
    """Registry name that a module class stands for (``nn.ReLU`` → ``"relu"``), if any.

    A torch class shared by several activations (``nn.GELU``) stands for the one its
    default arguments select.
    """
    if isinstance(cls, type) and issubclass(cls, Activation):
        return cls.activation_name
    matches = _torch_matches(cls)
    if len(matches) > 1:
        defaults = {
            info.name: all(_call_default(eq, k) == v for k, v in eq.selects.items())
            for info, eq in _in_models()
        }
        matches = [m for m in matches if defaults.get(m[0])] or matches
    if matches:
        return matches[0][0]
    return _timm_name(cls)


def identify_module(module: nn.Module) -> tuple[str, dict[str, Any]] | None:
    """Registry name and arguments of an activation module (relulab's, torch's or timm's)."""
    if isinstance(module, Activation):
        return module.activation_name, module.config
    matches = _torch_matches(type(module), module)
    if matches:
        name, attributes = matches[0]
        return name, {a: getattr(module, a) for a in attributes}
    name = _timm_name(type(module))
    return (name, {}) if name else None


def _identify_call(node: torch.fx.Node) -> tuple[str, dict[str, Any], bool] | None:
    """Registry name, arguments and in-place flag of a functional activation call.

    Arguments computed at run time (fx nodes) are kept as nodes; :func:`call_sites` marks
    such a site as not replaceable.
    """
    if node.op == "call_method":
        for info, equivalent in _in_models():
            if node.target in equivalent.methods:
                return info.name, {}, node.target.endswith("_")
        return None
    if node.op != "call_function":
        return None
    for info, equivalent in _in_models():
        positional = equivalent.functions.get(node.target)
        if positional is None:
            continue
        given = dict(zip(positional, node.args[1:]))
        given.update({k: v for k, v in node.kwargs.items() if k != "input"})
        selected = all(
            given.get(k, _call_default(equivalent, k)) == v for k, v in equivalent.selects.items()
        )
        if not selected:
            continue
        for key in equivalent.selects:
            given.pop(key, None)
        inplace = positional[-1:] == ("_inplace",)
        inplace = bool(given.pop("inplace", False)) or inplace
        return info.name, given, inplace
    return None


def module_sites(model: nn.Module) -> list[ActivationSite]:
    """Every activation module, once per place it is used (a shared module appears twice)."""
    sites = []
    for path, module in model.named_modules(remove_duplicate=False):
        found = identify_module(module)
        if found is not None:
            name, arguments = found
            inplace = bool(getattr(module, "inplace", False))
            sites.append(
                ActivationSite(
                    path, "module", name, dict(arguments), module=module, inplace=inplace
                )
            )
    return sites


class ActivationTracer(torch.fx.Tracer):
    """An fx tracer that keeps every recognised activation module, and any module in
    ``leaves``, as a single call (surgery must not trace into what it just inserted)."""

    def __init__(self, leaves: set[int] | None = None) -> None:
        super().__init__()
        self.leaves = leaves or set()

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (
            id(m) in self.leaves
            or identify_module(m) is not None
            or super().is_leaf_module(m, module_qualified_name)
        )


def trace(model: nn.Module, leaves: set[int] | None = None) -> torch.fx.GraphModule:
    """Symbolically trace ``model`` with activation modules as leaves (raises if untraceable)."""
    graph = ActivationTracer(leaves).trace(model)
    return torch.fx.GraphModule(model, graph, model.__class__.__name__)


def call_sites(graph_module: torch.fx.GraphModule) -> list[ActivationSite]:
    """Every functional activation call (``F.relu(x)``, ``torch.tanh(x)``, ``x.relu()``)."""
    sites = []
    for node in graph_module.graph.nodes:
        found = _identify_call(node)
        if found is not None:
            name, arguments, inplace = found
            sites.append(
                ActivationSite(node.name, "call", name, arguments, node=node, inplace=inplace)
            )
    return sites


def input_of(node: torch.fx.Node) -> Any:
    """The tensor argument of a call node."""
    return node.args[0] if node.args else node.kwargs["input"]
