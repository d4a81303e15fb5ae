"""Model surgery: replace a model's activations, modules and functional calls alike."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch.fx
from torch import nn

from relulab import sites as site_finder
from relulab.activations.base import Activation
from relulab.registry import get_activation, list_activations, resolve_name
from relulab.sites import ActivationSite

OldSpec = str | Sequence[str] | type[nn.Module] | Callable[[ActivationSite], bool]
NewSpec = str | nn.Module | type[nn.Module] | Callable[[ActivationSite], nn.Module]


@dataclass(frozen=True)
class Replacement:
    """One replaced site: where, what was there, and what is there now."""

    path: str
    kind: str  # "module" or "call"
    old: str
    new: str


@dataclass
class SurgeryReport:
    """What :func:`replace_activations` did."""

    replaced: list[Replacement] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    trace_error: str | None = None  # why functional calls could not be examined

    def __len__(self) -> int:
        return len(self.replaced)

    def __str__(self) -> str:
        lines = [f"{len(self.replaced)} activation site(s) replaced"]
        lines += [f"  {r.path} ({r.kind}): {r.old} -> {r.new}" for r in self.replaced]
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
        if self.trace_error:
            lines.append(f"  functional calls not examined: {self.trace_error}")
        return "\n".join(lines)


def _matcher(old: OldSpec) -> Callable[[ActivationSite], bool]:
    if isinstance(old, str):
        if any(c in old for c in "*?["):
            names = set(list_activations(old))
            if not names:
                raise ValueError(f"pattern {old!r} matches no activation")
        else:
            names = {resolve_name(old)}
        return lambda site: site.activation in names
    if isinstance(old, type):
        name = site_finder.activation_name_of_class(old)

        def match_class(site: ActivationSite) -> bool:
            if site.kind == "module":
                return isinstance(site.module, old)
            return name is not None and site.activation == name

        return match_class
    if isinstance(old, Sequence) and all(isinstance(o, str) for o in old):
        names = {resolve_name(o) for o in old}
        return lambda site: site.activation in names
    if callable(old):
        return old
    raise ValueError(
        f"old must be an activation name or pattern, a module class or a predicate, got {old!r}"
    )


def _factory(new: NewSpec) -> Callable[[ActivationSite], nn.Module]:
    if isinstance(new, str):
        get_activation(new)  # fail on a bad spec before the model is touched
        return lambda site: get_activation(new)
    if isinstance(new, nn.Module):
        return lambda site: copy.deepcopy(new)
    if isinstance(new, type) and issubclass(new, nn.Module):
        return lambda site: new()
    if callable(new):

        def build(site: ActivationSite) -> nn.Module:
            module = new(site)
            if not isinstance(module, nn.Module):
                raise ValueError(
                    f"new(site) must return an nn.Module, got {module!r} for {site.path}"
                )
            return module

        return build
    raise ValueError(f"new must be an activation spec, a module or a factory, got {new!r}")


def _describe(module: nn.Module) -> str:
    return module.spec if isinstance(module, Activation) else repr(module)


def _replace_modules(
    model: nn.Module, match: Callable, build: Callable, report: SurgeryReport
) -> nn.Module:
    built: dict[int, nn.Module] = {}  # a module shared by several parents stays shared
    for site in site_finder.module_sites(model):
        if not match(site):
            continue
        if id(site.module) not in built:
            built[id(site.module)] = build(site)
        replacement = built[id(site.module)]
        report.replaced.append(Replacement(site.path, "module", site.spec, _describe(replacement)))
        if not site.path:
            return replacement  # the model itself is the activation
        parent_path, _, attribute = site.path.rpartition(".")
        setattr(model.get_submodule(parent_path), attribute, replacement)
    return model


def _replace_calls(
    model: nn.Module, match: Callable, build: Callable, report: SurgeryReport
) -> nn.Module:
    try:
        graph_module = site_finder.trace(model)
    except Exception as error:  # fx raises many types for untraceable Python
        report.trace_error = (
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        )
        return model
    sites = [s for s in site_finder.call_sites(graph_module) if match(s)]
    if not sites:
        return model
    graph = graph_module.graph
    order = {node: i for i, node in enumerate(graph.nodes)}
    for site in sites:
        node = site.node
        source = site_finder.input_of(node)
        replacement = build(site)
        name = f"relulab_{node.name}"
        graph_module.add_submodule(name, replacement)
        with graph.inserting_after(node):
            new_node = graph.call_module(name, args=(source,))
        node.replace_all_uses_with(new_node)
        if site.inplace and isinstance(source, torch.fx.Node):
            # In place, the call also changed its input: later readers of it see the result.
            later = {user for user in source.users if order.get(user, -1) > order[node]}
            source.replace_all_uses_with(new_node, delete_user_cb=later.__contains__)
        graph.erase_node(node)
        report.replaced.append(Replacement(site.path, "call", site.spec, _describe(replacement)))
    graph.lint()
    graph_module.recompile()
    return graph_module


def replace_activations(
    model: nn.Module,
    old: OldSpec,
    new: NewSpec,
    inplace: bool = False,
    *,
    functional: bool = True,
) -> tuple[nn.Module, SurgeryReport]:
    """Replace every activation of ``model`` that ``old`` matches by a fresh ``new``.

    Activation modules (torch's, timm's and relulab's) are swapped in place in the module
    tree. With ``functional=True`` the model is then traced with torch.fx and functional
    calls (``F.relu(x)``, ``torch.tanh(x)``, ``x.relu()``, ``F.gelu(x, approximate=...)``)
    are replaced too; if any is, the returned model is a ``torch.fx.GraphModule``. A model
    that fx cannot trace keeps its calls, and the report says why.

    Args:
        model: the network.
        old: what to replace: a registry name (``"relu"``) or wildcard (``"*relu*"``), a
            list of names, a module class (``nn.ReLU``, which also matches ``F.relu`` calls),
            or a predicate on :class:`relulab.sites.ActivationSite`.
        new: the replacement: a spec string (``"golu"``, ``"leaky_relu(0.2)"``), a module
            (deep-copied per site), a module class (instantiated per site) or a factory
            ``site -> nn.Module``.
        inplace: modify ``model`` itself instead of a deep copy.
        functional: also replace functional calls (via torch.fx).

    Returns:
        The new model and a :class:`SurgeryReport` listing each replaced site.

    Example::

        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> new_net, report = replace_activations(net, "relu", "golu")
        >>> new_net[1], len(report)
        (GoLU(scale=1.0, shift=1.0, growth=1.0, trainable=False), 1)
    """
    match, build = _matcher(old), _factory(new)
    target = model if inplace else copy.deepcopy(model)
    report = SurgeryReport()
    target = _replace_modules(target, match, build, report)
    if functional:
        target = _replace_calls(target, match, build, report)
    return target, report
