"""Model surgery: replace a model's activations, modules and functional calls alike."""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import nn

from relulab import sites as site_finder
from relulab.activations.base import Activation
from relulab.errors import UserError
from relulab.registry import activation_info, get_activation, list_activations, resolve_name
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
    note: str = ""


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
        lines += [
            f"  {r.path} ({r.kind}): {r.old} -> {r.new}" + (f"  [{r.note}]" if r.note else "")
            for r in self.replaced
        ]
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
        if self.trace_error:
            lines.append(f"  functional calls not examined: {self.trace_error}")
        return "\n".join(lines)


def _stands_for_its_activation(cls: type, name: str) -> bool:
    """``cls`` is the registered class or torch's own for ``name``, not a user's subclass
    (whose instances alone a user who names it means)."""
    info = activation_info(name)
    return cls is info.module or (info.torch is not None and cls is info.torch.module)


def _matcher(old: OldSpec) -> Callable[[ActivationSite], bool]:
    if isinstance(old, str):
        if any(c in old for c in "*?["):
            names = set(list_activations(old))
            if not names:
                raise UserError(f"pattern {old!r} matches no activation")
        else:
            names = {resolve_name(old)}
        return lambda site: site.activation in names
    if isinstance(old, type):
        name = site_finder.activation_name_of_class(old)
        if name is not None and _stands_for_its_activation(old, name):
            return lambda site: site.activation == name  # nn.ReLU, relulab.ReLU, F.relu
        return lambda site: isinstance(site.module, old)  # the user's subclass: only its own
    if isinstance(old, Sequence) and all(isinstance(o, str) for o in old):
        names = {resolve_name(o) for o in old}
        return lambda site: site.activation in names
    if callable(old):
        return old
    raise UserError(
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
                raise UserError(
                    f"new(site) must return an nn.Module, got {module!r} for {site.path}"
                )
            return module

        return build
    raise UserError(f"new must be an activation spec, a module or a factory, got {new!r}")


def _describe(module: nn.Module) -> str:
    return module.spec if isinstance(module, Activation) else repr(module)


def _replace_modules(
    model: nn.Module, match: Callable, build: Callable, report: SurgeryReport, seen: list
) -> tuple[nn.Module, dict[int, nn.Module]]:
    """Swap matching activation modules; returns the model and the modules put in."""
    built: dict[int, nn.Module] = {}  # a module shared by several parents stays shared
    sites = site_finder.module_sites(model)
    seen.extend(sites)
    for site in sites:
        if not match(site):
            continue
        if id(site.module) not in built:
            built[id(site.module)] = build(site)
        replacement = built[id(site.module)]
        # A module's inplace flag is a memory optimisation; models reassign its result.
        note = "was in place; the replacement is not" if site.inplace else ""
        report.replaced.append(
            Replacement(site.path, "module", site.spec, _describe(replacement), note)
        )
        if not site.path:
            return replacement, built  # the model itself is the activation
        parent_path, _, attribute = site.path.rpartition(".")
        setattr(model.get_submodule(parent_path), attribute, replacement)
    return model, built


def _replace_calls(
    model: nn.Module,
    match: Callable,
    build: Callable,
    report: SurgeryReport,
    inserted: set[int],
    seen: list,
) -> nn.Module:
    try:
        graph_module = site_finder.trace(model, leaves=inserted)
    except Exception as error:  # fx raises many types for untraceable Python
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        report.trace_error = f"{type(error).__name__}: {first_line}"
        return model
    found = site_finder.call_sites(graph_module)
    seen.extend(found)
    sites = [s for s in found if match(s)]
    for site in [s for s in sites if s.dynamic]:
        report.skipped.append(
            (site.path, f"{site.activation} with an argument computed at run time")
        )
    sites = [s for s in sites if not s.dynamic]
    if not sites:
        return model
    graph = graph_module.graph
    for site in sites:
        node, source = site.node, site_finder.input_of(site.node)
        replacement = build(site)
        name = f"relulab_{node.name}"
        graph_module.add_submodule(name, replacement)
        with graph.inserting_after(node):
            new_node = graph.call_module(name, args=(source,))
        if site.inplace:
            # Keep the in-place meaning: write the result into the input (and so into the
            # tensor it may be a view of), as the replaced call did.
            with graph.inserting_after(new_node):
                new_node = graph.call_method("copy_", args=(source, new_node))
        node.replace_all_uses_with(new_node)
        graph.erase_node(node)
        report.replaced.append(Replacement(site.path, "call", site.spec, _describe(replacement)))
    graph.lint()
    graph_module.recompile()
    return graph_module


def _describe_old(old: OldSpec) -> str:
    if isinstance(old, type):
        return old.__name__
    if isinstance(old, str):
        return repr(old)
    if callable(old):
        return f"the predicate {getattr(old, '__name__', repr(old))}"
    return repr(list(old))


def _inventory(sites: list[ActivationSite]) -> str:
    """'relu ×3 (modules), gelu ×2 (1 module, 1 call)': what a model's sites apply."""
    kinds: dict[str, Counter] = {}
    for site in sites:
        kinds.setdefault(site.activation, Counter())[site.kind] += 1
    parts = []
    for name, counts in kinds.items():
        total = sum(counts.values())
        if len(counts) == 1:
            ((kind, _),) = counts.items()
            where = kind if total == 1 else f"{kind}s"
        else:
            where = ", ".join(
                f"{counts[k]} {k}" + ("s" if counts[k] > 1 else "") for k in ("module", "call")
            )
        parts.append(f"{name} ×{total} ({where})")
    return ", ".join(parts)


def _warn_no_match(
    model: nn.Module,
    old: OldSpec,
    seen: list[ActivationSite],
    report: SurgeryReport,
    functional: bool,
) -> None:
    # Zero replacements is almost always a wrong `old` (a custom class, a name the model does
    # not use); a silent "0 replaced" would leave the user training the model they started with.
    found = _inventory(seen)
    message = f"no activation site matched {_describe_old(old)}; " + (
        f"the model has: {found}"
        if found
        else "the model has no activation site relulab recognises"
    )
    if isinstance(old, type) and site_finder.activation_name_of_class(old) is None:
        instances = sum(isinstance(m, old) for m in model.modules())
        if instances:
            message += (
                f" ({old.__name__} is not an activation relulab recognises, so its "
                f"{instances} instance(s) are not activation sites)"
            )
    if not functional:
        message += "; functional calls were not examined (functional=False)"
    elif report.trace_error:
        message += f"; functional calls were not examined: {report.trace_error}"
    warnings.warn(message, UserWarning, stacklevel=3)


def replace_activations(
    model: nn.Module,
    old: OldSpec,
    new: NewSpec,
    inplace: bool = False,
    *,
    functional: bool = True,
) -> tuple[nn.Module, SurgeryReport]:
    """Replace every activation of ``model`` that ``old`` matches by a fresh ``new``.

    Activation modules (torch's, timm's and relulab's) are swapped in the module tree; an
    in-place module (``nn.ReLU(inplace=True)``) becomes an ordinary one, and the report says
    so. With ``functional=True`` the model is then traced with torch.fx and functional calls
    (``F.relu(x)``, ``torch.tanh(x)``, ``x.relu_()``, ``F.gelu(x, approximate=...)``) are
    replaced too, in-place ones keeping their effect on their input; if any is replaced, the
    returned model is a new ``torch.fx.GraphModule`` (a Python ``forward`` cannot be edited,
    so with ``inplace=True`` the given model gets its modules swapped but keeps its calls).
    A model that fx cannot trace keeps its calls, and the report says why. The modules just
    put in are never traced into, so a replacement that itself calls ``F.relu`` is safe.
    If ``old`` matches no site at all, a ``UserWarning`` says which activations the model
    does apply (e.g. ``relu ×3 (modules), gelu ×1 (call)``).

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
    if not isinstance(model, nn.Module):  # else an AttributeError deep inside, like a bug
        raise UserError(f"model must be an nn.Module, got {type(model).__name__}")
    match, build = _matcher(old), _factory(new)
    target = model if inplace else copy.deepcopy(model)
    report = SurgeryReport()
    seen: list[ActivationSite] = []  # every site examined, matched or not
    target, built = _replace_modules(target, match, build, report, seen)
    inserted = {id(module) for module in built.values()}
    if functional and id(target) not in inserted:  # a model that is itself an activation: done
        target = _replace_calls(target, match, build, report, inserted, seen)
    if not report.replaced and not report.skipped:
        _warn_no_match(model, old, seen, report, functional)
    return target, report
