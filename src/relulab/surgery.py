"""Model surgery: replace a model's activations, modules and functional calls alike."""

from __future__ import annotations

import copy
import inspect
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import nn

from relulab import calls, rewrite
from relulab import sites as site_finder
from relulab.errors import UserError
from relulab.registry import (
    activation_info,
    format_spec,
    get_activation,
    list_activations,
    resolve_name,
)
from relulab.sites import ActivationSite, CallLocation

OldSpec = str | Sequence[str] | type[nn.Module] | Callable[[ActivationSite], bool]
NewSpec = str | nn.Module | type[nn.Module] | Callable[[ActivationSite], nn.Module]


@dataclass(frozen=True)
class Replacement:
    """One replaced site: where, what was there, and what is there now.

    ``path`` is the module's qualified name; for a call, that of the module whose method
    makes it, and ``location`` says where in the source it is.
    """

    path: str
    kind: str  # "module" or "call"
    old: str
    new: str
    note: str = ""
    location: CallLocation | None = None

    @property
    def where(self) -> str:
        """``"stem.2"`` for a module; ``"layer1.0.forward, model.py:42"`` for a call."""
        return self.path if self.location is None else self.location.where(self.path)

    def __str__(self) -> str:
        if self.location is None:
            line = f"{self.path} (module): {self.old} -> {self.new}"
        else:
            line = f"{self.where}: {self.location.code} -> {self.new}"
        return line + (f"  [{self.note}]" if self.note else "")


@dataclass
class SurgeryReport:
    """What :func:`replace_activations` did.

    Attributes:
        replaced: each replaced site.
        skipped: ``(where, why)`` for each matching call that was kept, e.g.
            ``("block.forward, model.py:42", "F.leaky_relu(x, self.slope): its
            negative_slope (self.slope) is computed at run time")``.
        not_examined: ``(where, reason)`` for each method whose calls could not be read
            (a class defined in exec'd code or at a REPL) and may apply what ``old`` names.
    """

    replaced: list[Replacement] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    not_examined: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.replaced)

    def __str__(self) -> str:
        headline = f"{len(self.replaced)} activation site(s) replaced"
        if self.skipped:
            headline += f", {len(self.skipped)} matching call(s) kept"
        if self.not_examined:
            headline += f", {len(self.not_examined)} method(s) not examined"
        lines = [headline] + [f"  {r}" for r in self.replaced]
        lines += [f"  kept {where}: {reason}" for where, reason in self.skipped]
        lines += [f"  not examined {where}: {reason}" for where, reason in self.not_examined]
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


def _placed(module: nn.Module, *near: nn.Module) -> nn.Module:
    """``module`` on the device, and in the floating dtype, of the first tensor found in
    ``near`` (the site's module, then the model): a PReLU put into a float64 model on a
    GPU must not hold a float32 weight on the CPU."""
    for neighbour in near:
        for tensor in (*neighbour.parameters(), *neighbour.buffers()):
            dtype = tensor.dtype if tensor.is_floating_point() else None
            return module.to(device=tensor.device, dtype=dtype)
    return module


def _describe(module: nn.Module) -> str:
    """``golu``, ``leaky_relu(negative_slope=0.2)``: the activation's spec with the
    arguments that differ from its class's defaults (the module's repr if it is none)."""
    identified = site_finder.identify_module(module)
    if identified is None:
        return repr(module)
    name, arguments = identified
    try:
        parameters = inspect.signature(type(module)).parameters
    except (TypeError, ValueError):
        parameters = {}
    changed = {
        key: value
        for key, value in arguments.items()
        if key not in parameters or not _is_default(value, parameters[key].default)
    }
    return format_spec(name, changed)


def _is_default(value: object, default: object) -> bool:
    if default is inspect.Parameter.empty or isinstance(value, bool) != isinstance(default, bool):
        return False
    try:
        return bool(value == default)
    except Exception:  # a tensor argument: not comparable with a default, so shown
        return False


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
            parent = model.get_submodule(site.path.rpartition(".")[0]) if site.path else model
            built[id(site.module)] = _placed(build(site), site.module, parent, model)
        replacement = built[id(site.module)]
        # A module's inplace flag is a memory optimisation; models reassign its result.
        note = "was in place; the replacement is not" if site.inplace else ""
        report.replaced.append(
            Replacement(site.path, "module", site.spec, _describe(replacement), note)
        )
        if not site.path:
            return replacement, built  # the model itself is the activation
        parent_path, _, attribute = site.path.rpartition(".")
        parent = model.get_submodule(parent_path)
        setattr(parent, attribute, replacement)
        if isinstance(parent, nn.TransformerEncoderLayer) and attribute == "activation":
            # Its fast path (eval mode, no grad) applies a native relu or gelu, chosen by this
            # flag when the layer was built; 0 sends every input through self.activation.
            parent.activation_relu_or_gelu = 0
    return model, built


def _replace_calls(
    model: nn.Module,
    match: Callable,
    build: Callable,
    report: SurgeryReport,
    inserted: set[int],
    seen: list,
) -> list[str]:
    """Rewrite the methods that make matching calls; returns the warnings to give."""
    search = calls.find_call_sites(model, skip=inserted)
    seen.extend(search.sites)
    warnings_: list[str] = []
    by_owner: dict[int, list[tuple[ActivationSite, nn.Module]]] = {}
    kept: set[tuple] = set()  # one warning per call, however many activations it may be
    for site in search.sites:
        if not match(site):
            continue
        if site.obstacle:
            if site.location.site_id not in kept:
                kept.add(site.location.site_id)
                report.skipped.append((site.where, f"{site.location.code}: {site.obstacle}"))
                warnings_.append(f"kept {site.where}: {site.location.code}: {site.obstacle}")
            continue
        module = _placed(build(site), site.owner, model)
        by_owner.setdefault(id(site.owner), []).append((site, module))
    for replacements in by_owner.values():
        owner = replacements[0][0].owner
        try:
            rewrite.replace_calls(owner, replacements)
        except rewrite.RewriteError as error:
            for site, _ in replacements:
                reason = f"{site.location.code}: {error}"
                report.skipped.append((site.where, reason))
                warnings_.append(f"kept {site.where}: {reason}")
            continue
        for site, module in replacements:
            report.replaced.append(
                Replacement(site.path, "call", site.spec, _describe(module), location=site.location)
            )
    for method in search.unexamined:
        probes = (ActivationSite(method.path, "call", name) for name in method.candidates)
        if any(match(probe) for probe in probes):
            reason = f"{method.reason}, so its calls of {', '.join(method.candidates)} were kept"
            report.not_examined.append((method.where, reason))
            warnings_.append(f"functional calls not examined in {method.where}: {reason}")
    return warnings_


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


def _no_match_message(
    model: nn.Module,
    old: OldSpec,
    seen: list[ActivationSite],
    report: SurgeryReport,
    functional: bool,
) -> str:
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
    elif report.not_examined:
        unread = ", ".join(where for where, _ in report.not_examined)
        message += f"; functional calls were not examined in {unread}"
    return message


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
    so. With ``functional=True`` functional calls (``F.relu(x)``, ``torch.tanh(x)``,
    ``x.relu_()``, ``F.gelu(x, approximate="tanh")``, ``F.leaky_relu(x, 0.2)``) are replaced
    too. They are found by reading the source of each module's ``forward`` and of the
    methods it calls on ``self`` (see :mod:`relulab.sites`), so a model whose control flow
    depends on its data is no obstacle.

    The returned model is the user's model (a deep copy unless ``inplace``): every
    submodule keeps its class, its methods and attributes, and each module whose code made
    a replaced call is an instance of a subclass of its class, with the same name, in which
    that code calls a module instead (``self.relulab_sites["forward_line42"](x)``; see
    :mod:`relulab.rewrite`). So ``isinstance(new, Net)`` holds and ``new.custom()`` works.
    The new modules are children under ``relulab_sites``: a parameter-free activation adds
    nothing to the ``state_dict``; a trainable one adds e.g.
    ``block.relulab_sites.forward_line42.weight``. Each new module is put on the device,
    and in the floating dtype, of the module it joins. An in-place call writes the new result
    into its input, as it did before. The model runs under ``torch.compile``, deep-copies
    and pickles (given that its class can be imported); ``children()`` of a rewritten module
    include its ``relulab_sites``.

    Calls in the user's own plain functions are replaced too: a function that a method
    calls (``return mlp_act(self.fc(x))``), a lambda held by the instance (``self.act =
    lambda t: F.relu(t)``), and the functions those call, up to 3 calls deep
    (:data:`relulab.calls.FOLLOW_DEPTH`). The function itself is left alone, since other
    code may use it: the rewritten methods call a rewritten copy of it instead (compiled
    with its globals, file name and line numbers), whose activation calls run the owning
    module's ``relulab_sites``. Such a site is reported by the calls that lead to it:
    ``forward, net.py:17 → mlp_act, net.py:6: F.relu(x) -> golu``. A call through
    ``functools.partial(F.leaky_relu, negative_slope=0.2)`` held by the instance is a
    site of its own. Functions of torch, relulab and the standard library, classes and
    other callables are not followed (their code is not the user's).

    A matching call that cannot be replaced is kept, with a ``UserWarning`` naming it and
    its line: an argument that is not a literal (``F.leaky_relu(x, self.slope)``), a
    decorated method, a container (``nn.Sequential`` subclass) whose items are its
    children. So is a method whose source cannot be read (a class defined in exec'd code
    or at a REPL), named by its class. In a function a method calls, so is a call deeper
    than 3 calls (named by its line), or any call of a function reached from a method that
    cannot be rewritten. A function that cannot be followed (its source cannot be read, it
    is decorated, or it is called through ``functools.partial``) is named, with the line
    that calls it, when its code (or a function it closes over) names an activation that
    ``old`` matches (``F.relu``, ``.relu()``); otherwise, and for C functions, nothing is
    said. The modules just put in are never read, so a replacement that itself calls
    ``F.relu`` is safe. If ``old`` matches no site at all, a ``UserWarning`` says which
    activations the model does apply, in modules and calls alike, those in its functions
    included (e.g. ``relu ×3 (modules), gelu ×1 (call)``).

    Args:
        model: the network.
        old: what to replace: a registry name (``"relu"``) or wildcard (``"*relu*"``), a
            list of names, a module class (``nn.ReLU``, which also matches ``F.relu`` calls),
            or a predicate on :class:`relulab.sites.ActivationSite`.
        new: the replacement: a spec string (``"golu"``, ``"leaky_relu(0.2)"``), a module
            (deep-copied per site), a module class (instantiated per site) or a factory
            ``site -> nn.Module``.
        inplace: modify ``model`` itself instead of a deep copy.
        functional: also replace functional calls.

    Returns:
        The new model and a :class:`SurgeryReport`: one line per site, a module by its path
        (``stem.2 (module): relu -> golu``), a call by its module path, method, file and
        line (``layer1.0.forward, model.py:42: F.relu(out) -> golu``). The new activation
        is named by its spec without the arguments left at their defaults (``golu``,
        ``leaky_relu(negative_slope=0.2)``).

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
    messages = []
    if functional and id(target) not in inserted:  # a model that is itself an activation: done
        messages = _replace_calls(target, match, build, report, inserted, seen)
    if not report.replaced and not report.skipped:
        messages.insert(0, _no_match_message(model, old, seen, report, functional))
    for message in messages:  # each names the caller's line, not relulab's
        warnings.warn(message, UserWarning, stacklevel=2)
    return target, report
