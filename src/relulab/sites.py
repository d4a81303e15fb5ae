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

# torch module class -> (registry name, attributes that carry its arguments). nn.Identity is
# left out on purpose: models use it as a placeholder for a missing norm or drop-path.
_TORCH_MODULES: dict[type[nn.Module], tuple[str, tuple[str, ...]]] = {
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
}  # timm's PReLU subclasses nn.PReLU and is found through that

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

# In-place functions: the same activations, overwriting their input.
for _function, _entry in [
    ("relu_", ("relu", ())),
    ("leaky_relu_", ("leaky_relu", ("negative_slope",))),
    ("elu_", ("elu", ("alpha",))),
    ("celu_", ("celu", ("alpha",))),
    ("selu_", ("selu", ())),
]:
    for _namespace in (F, torch):
        if hasattr(_namespace, _function):
            _TORCH_FUNCTIONS[getattr(_namespace, _function)] = (_entry[0], (*_entry[1], "_inplace"))

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
    def dynamic(self) -> bool:
        """Some argument is computed at run time, so no spec string describes the site."""
        return any(isinstance(v, torch.fx.Node) for v in self.arguments.values())

    @property
    def spec(self) -> str:
        """The site's activation as a spec string, e.g. ``"leaky_relu(negative_slope=0.2)"``."""
        return format_spec(self.activation, self.arguments)


def _torch_entry(cls: type) -> tuple[str, tuple[str, ...]] | None:
    return next(
        (_TORCH_MODULES[b] for b in getattr(cls, "__mro__", ()) if b in _TORCH_MODULES), None
    )


def activation_name_of_class(cls: type) -> str | None:
    """Registry name that a module class stands for (``nn.ReLU`` → ``"relu"``), if any."""
    if isinstance(cls, type) and issubclass(cls, Activation):
        return cls.activation_name
    if isinstance(cls, type) and issubclass(cls, nn.GELU):
        return "gelu"
    entry = _torch_entry(cls)
    if entry is not None:
        return entry[0]
    if getattr(cls, "__module__", "").startswith("timm."):
        return _TIMM_MODULES.get(cls.__name__)
    return None


def identify_module(module: nn.Module) -> tuple[str, dict[str, Any]] | None:
    """Registry name and arguments of an activation module (relulab's, torch's or timm's)."""
    if isinstance(module, Activation):
        return module.activation_name, module.config
    if isinstance(module, nn.GELU):
        return ("gelu_tanh" if module.approximate == "tanh" else "gelu"), {}
    entry = _torch_entry(type(module))
    if entry is not None:
        name, attributes = entry
        return name, {a: getattr(module, a) for a in attributes}
    name = activation_name_of_class(type(module))
    return (name, {}) if name else None


def _identify_call(node: torch.fx.Node) -> tuple[str, dict[str, Any], bool] | None:
    """Registry name, arguments and in-place flag of a functional activation call.

    Arguments computed at run time (fx nodes) are kept as nodes; :func:`call_sites` marks
    such a site as not replaceable.
    """
    if node.op == "call_method" and node.target in _TENSOR_METHODS:
        return _TENSOR_METHODS[node.target], {}, node.target.endswith("_")
    if node.op != "call_function" or node.target not in _TORCH_FUNCTIONS:
        return None
    name, positional = _TORCH_FUNCTIONS[node.target]
    inplace = positional[-1:] == ("_inplace",)
    given = dict(zip(positional, node.args[1:]))
    given.update({k: v for k, v in node.kwargs.items() if k != "input"})
    inplace = bool(given.pop("inplace", False)) or inplace
    if name == "gelu" and given.pop("approximate", "none") == "tanh":
        name = "gelu_tanh"
    return name, given, inplace


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
