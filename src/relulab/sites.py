"""Find a model's activation sites: activation modules, and functional calls in its source.

One mechanism for everything that needs to know where a model's activations are: surgery
(:mod:`relulab.surgery`), the benchmark's dead-unit probes, and later ReLU counting,
relufication and geometry. Modules are found in the module tree; functional calls
(``F.relu(x)``, ``torch.tanh(x)``, ``x.relu_()``) by reading the source of each module's
methods (:mod:`relulab.calls`), so each call site is known by its module path and its file
and line.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from relulab.activations.base import Activation
from relulab.registry import ActivationInfo, TorchEquivalent, format_spec, registered

if TYPE_CHECKING:
    from relulab.calls import CallSearch


def torch_equivalents() -> list[tuple[ActivationInfo, TorchEquivalent]]:
    """The registered activations that torch has a module or call for, as models use them."""
    return [(i, i.torch) for i in registered() if i.torch is not None and i.torch.in_models]


def call_default(equivalent: TorchEquivalent, key: str) -> Any:
    """A selecting argument that a call leaves out takes the module's default
    (``F.gelu(x)`` is approximate="none", as ``nn.GELU()`` is)."""
    return inspect.signature(equivalent.module).parameters[key].default


@dataclass(frozen=True)
class RunTimeValue:
    """An argument that is not a literal (``self.slope``): its value exists only at run time."""

    source: str

    def __repr__(self) -> str:
        return self.source


@dataclass(frozen=True)
class CallHop:
    """A call of a user's plain function on the way from a method to an activation call
    (``mlp_act(self.fc(x))`` in ``forward``).

    Attributes:
        holder: the class whose method, or the function whose body, makes the call.
        method: that method's or function's name.
        filename, lineno: where the call is.
        span: the call's (lineno, col_offset, end_lineno, end_col_offset) in its file.
        callee: the function called.
    """

    holder: Any
    method: str
    filename: str
    span: tuple[int, int, int, int]
    callee: Any

    @property
    def site_id(self) -> tuple:
        return (self.holder, self.method, *self.span)

    def __str__(self) -> str:
        return f"{os.path.basename(self.filename)}:{self.span[0]}"


def format_route(path: str, hops: tuple[CallHop, ...], last: str, at: str) -> str:
    """``"block.forward, net.py:17 → mlp_act, net.py:6"``: a method's call of a function,
    each further call, and ``at`` (a file:line) in ``last``, the method or function reached."""
    steps = [(hop.method, str(hop)) for hop in hops] + [(last, at)]
    head, first = steps[0]
    steps[0] = (f"{path}.{head}" if path else head, first)
    return " → ".join(f"{name}, {where}" for name, where in steps)


@dataclass(frozen=True)
class CallLocation:
    """Where a functional call is in the user's code.

    Attributes:
        cls: the class whose method contains the call (the model's class or a base of it);
            for a call in a plain function, that of the method that calls the function.
        method: that method's name (``"forward"``), or the function's.
        filename, lineno, col_offset, end_lineno, end_col_offset: the call's span in its
            file (lines from 1, columns from 0), which identifies it.
        code: the call as written (``"F.relu(x)"``).
        ordinal: its rank among the activation calls on its line, or 0 if it is alone there.
        method_form: a tensor method (``x.relu()``), whose input is its receiver.
        function: the user's plain function whose body holds the call (None in a method).
        via: the calls that lead from the method to ``function``, first the method's.
        route: every call, in the module's methods and followed functions, that leads to
            ``function`` (a rewrite redirects them all to its rewritten copy).
    """

    cls: type
    method: str
    filename: str
    lineno: int
    col_offset: int
    end_lineno: int
    end_col_offset: int
    code: str
    ordinal: int = 0
    method_form: bool = False
    function: Any = None
    via: tuple[CallHop, ...] = ()
    route: frozenset[CallHop] = frozenset()

    @property
    def span(self) -> tuple[int, int, int, int]:
        return (self.lineno, self.col_offset, self.end_lineno, self.end_col_offset)

    @property
    def site_id(self) -> tuple:
        """What identifies the call across copies and passes: its class, method and span."""
        return (self.function or self.cls, self.method, *self.span)

    def where(self, path: str) -> str:
        """``"layer1.0.forward, model.py:42"``, for the module at ``path``; for a call in a
        function, the calls that lead there: ``"forward, net.py:17 → mlp_act, net.py:6"``."""
        return format_route(path, self.via, self.method, str(self))

    def __str__(self) -> str:
        return f"{os.path.basename(self.filename)}:{self.lineno}"


@dataclass
class ActivationSite:
    """One place where a model applies an activation.

    Attributes:
        path: the qualified name (``"layer1.0.act"``) of the module, or for a functional
            call of the module whose method makes it (``"layer1.0"``; ``""`` for the model).
        kind: ``"module"`` or ``"call"``.
        activation: canonical registry name of what is applied there.
        arguments: its arguments in registry terms (``{"negative_slope": 0.2}``); one
            computed at run time is a :class:`RunTimeValue`.
        module: the module (module sites).
        inplace: the module or call overwrites its input.
        owner: the module whose method makes the call (call sites).
        location: where the call is in the source (call sites).
        obstacle: why the call cannot be replaced (an argument computed at run time, a
            decorated method...); empty when it can.
    """

    path: str
    kind: str
    activation: str
    arguments: dict[str, Any] = field(default_factory=dict)
    module: nn.Module | None = None
    inplace: bool = False
    owner: nn.Module | None = None
    location: CallLocation | None = None
    obstacle: str = ""

    @property
    def dynamic(self) -> bool:
        """Some argument is computed at run time, so no spec string describes the site."""
        return any(isinstance(v, RunTimeValue) for v in self.arguments.values())

    @property
    def spec(self) -> str:
        """The site's activation as a spec string, e.g. ``"leaky_relu(negative_slope=0.2)"``."""
        return format_spec(self.activation, self.arguments)

    @property
    def where(self) -> str:
        """``"layer1.0.act"`` for a module; ``"layer1.0.forward, model.py:42"`` for a call."""
        return self.path if self.location is None else self.location.where(self.path)


def _torch_matches(cls: type, module: nn.Module | None = None) -> list[tuple[str, tuple]]:
    """(name, argument attributes) of the activations whose torch class ``cls`` is or derives
    from, most specific class first; with ``module``, only those its attributes select."""
    found, candidates = [], torch_equivalents()
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
            info.name: all(call_default(eq, k) == v for k, v in eq.selects.items())
            for info, eq in torch_equivalents()
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


def find_call_sites(model: nn.Module, skip: set[int] | None = None) -> CallSearch:
    """Every functional activation call in ``model``'s source, and the methods that could
    not be read; see :func:`relulab.calls.find_call_sites`."""
    from relulab import calls  # it builds on this module

    return calls.find_call_sites(model, skip)


def call_sites(model: nn.Module, skip: set[int] | None = None) -> list[ActivationSite]:
    """Every functional activation call (``F.relu(x)``, ``torch.tanh(x)``, ``x.relu()``)
    in the source of ``model``'s modules, each with its :class:`CallLocation`."""
    return find_call_sites(model, skip).sites
