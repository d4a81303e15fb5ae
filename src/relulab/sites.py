"""Find a model's activation sites: activation modules, and functional calls via torch.fx.

One mechanism for everything that needs to know where a model's activations are: surgery
(:mod:`relulab.surgery`), and later ReLU counting, relufication and geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from relulab.activations.base import Activation
from relulab.registry import format_spec

# torch module class -> (registry name, attributes that carry its arguments)
_TORCH_MODULES: dict[type[nn.Module], tuple[str, tuple[str, ...]]] = {
    nn.Identity: ("identity", ()),
    nn.ReLU: ("relu", ()),
    nn.ReLU6: ("relu6", ()),
    nn.LeakyReLU: ("leaky_relu", ("negative_slope",)),
    nn.PReLU: ("prelu", ("num_parameters", "init")),
    nn.ELU: ("elu", ("alpha",)),
    nn.SELU: ("selu", ()),
    nn.CELU: ("celu", ("alpha",)),
    nn.SiLU: ("silu", ()),
    nn.Mish: ("mish", ()),
    nn.Softplus: ("softplus", ("beta", "threshold")),
    nn.Hardswish: ("hard_swish", ()),
    nn.Hardsigmoid: ("hard_sigmoid", ()),
    nn.Sigmoid: ("sigmoid", ()),
    nn.Tanh: ("tanh", ()),
}

# timm's activation classes, matched by name so that timm need not be installed.
# timm's Swish is x·σ(x), i.e. SiLU; its "Me" variants are memory-efficient versions.
_TIMM_MODULES: dict[str, str] = {
    "Swish": "silu",
    "SwishMe": "silu",
    "Mish": "mish",
    "MishMe": "mish",
    "HardSwish": "hard_swish",
    "HardSwishMe": "hard_swish",
    "HardSigmoid": "hard_sigmoid",
    "HardSigmoidMe": "hard_sigmoid",
    "HardMish": "hard_mish",
    "HardMishMe": "hard_mish",
    "GELU": "gelu",
    "GELUTanh": "gelu_tanh",
    "QuickGELU": "quick_gelu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "PReLU": "prelu",
}

# functional call -> (registry name, names of its positional arguments after the input)
_TORCH_FUNCTIONS: dict[Any, tuple[str, tuple[str, ...]]] = {
    F.relu: ("relu", ("inplace",)),
    torch.relu: ("relu", ()),
    F.relu6: ("relu6", ("inplace",)),
    F.leaky_relu: ("leaky_relu", ("negative_slope", "inplace")),
    F.elu: ("elu", ("alpha", "inplace")),
    F.selu: ("selu", ("inplace",)),
    torch.selu: ("selu", ()),
    F.celu: ("celu", ("alpha", "inplace")),
    F.gelu: ("gelu", ("approximate",)),
    F.silu: ("silu", ("inplace",)),
    F.mish: ("mish", ("inplace",)),
    F.softplus: ("softplus", ("beta", "threshold")),
    F.hardswish: ("hard_swish", ("inplace",)),
    F.hardsigmoid: ("hard_sigmoid", ("inplace",)),
    torch.sigmoid: ("sigmoid", ()),
    F.sigmoid: ("sigmoid", ()),
    torch.tanh: ("tanh", ()),
    F.tanh: ("tanh", ()),
}

# tensor method -> registry name (``x.relu()``; the trailing-underscore forms are in place)
_TENSOR_METHODS: dict[str, str] = {
    name + suffix: name for name in ("relu", "sigmoid", "tanh") for suffix in ("", "_")
}


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
    def spec(self) -> str:
        """The site's activation as a spec string, e.g. ``"leaky_relu(negative_slope=0.2)"``."""
        return format_spec(self.activation, self.arguments)


def identify_module(module: nn.Module) -> tuple[str, dict[str, Any]] | None:
    """Registry name and arguments of an activation module (relulab's, torch's or timm's)."""
    if isinstance(module, Activation):
        return module.activation_name, module.config
    if isinstance(module, nn.GELU):
        return ("gelu_tanh" if module.approximate == "tanh" else "gelu"), {}
    for cls in type(module).__mro__:
        if cls in _TORCH_MODULES:
            name, attributes = _TORCH_MODULES[cls]
            return name, {a: getattr(module, a) for a in attributes}
    if type(module).__module__.startswith("timm.") and type(module).__name__ in _TIMM_MODULES:
        return _TIMM_MODULES[type(module).__name__], {}
    return None


def activation_name_of_class(cls: type) -> str | None:
    """Registry name that a module class stands for (``nn.ReLU`` -> ``"relu"``), if any."""
    if isinstance(cls, type) and issubclass(cls, Activation):
        return cls.activation_name
    for base in getattr(cls, "__mro__", ()):
        if base in _TORCH_MODULES:
            return _TORCH_MODULES[base][0]
    return None


def _identify_call(node: torch.fx.Node) -> tuple[str, dict[str, Any], bool] | None:
    """Registry name, arguments and in-place flag of a functional activation call."""
    if node.op == "call_method" and node.target in _TENSOR_METHODS:
        return _TENSOR_METHODS[node.target], {}, node.target.endswith("_")
    if node.op != "call_function" or node.target not in _TORCH_FUNCTIONS:
        return None
    name, positional = _TORCH_FUNCTIONS[node.target]
    given = dict(zip(positional, node.args[1:]))
    given.update({k: v for k, v in node.kwargs.items() if k != "input"})
    if any(isinstance(v, torch.fx.Node) for v in given.values()):
        return None  # an argument computed at run time has no spec
    inplace = bool(given.pop("inplace", False))
    if name == "gelu" and given.pop("approximate", "none") == "tanh":
        name = "gelu_tanh"
    return name, given, inplace


def module_sites(model: nn.Module) -> list[ActivationSite]:
    """Every activation module, once per place it is used (a shared module appears twice)."""
    sites = []
    for path, module in model.named_modules(remove_duplicate=False):
        found = identify_module(module)
        if found is not None:
            sites.append(ActivationSite(path, "module", found[0], dict(found[1]), module=module))
    return sites


class ActivationTracer(torch.fx.Tracer):
    """An fx tracer that keeps every recognised activation module as a single leaf call."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return identify_module(m) is not None or super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module) -> torch.fx.GraphModule:
    """Symbolically trace ``model`` with activation modules as leaves (raises if untraceable)."""
    graph = ActivationTracer().trace(model)
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
