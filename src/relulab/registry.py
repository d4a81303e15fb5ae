"""The activation registry: names, aliases, metadata, spec strings and did-you-mean.

Every activation module registers itself with :func:`register`; everything else in relulab
(the CLI, surgery, the benchmark) resolves activations here by name or by a spec string such
as ``"leaky_relu(negative_slope=0.2)"``.
"""

from __future__ import annotations

import ast
import copy
import difflib
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from relulab.errors import UserError

if TYPE_CHECKING:
    from relulab.kernels.definitions import KernelDef

REQUIRED = inspect.Parameter.empty


@dataclass(frozen=True, eq=False)
class TorchEquivalent:
    """torch's own form of an activation: the module class that surgery finds in models and
    ``relulab speed`` times as "native", and the functional calls and tensor methods that
    apply it.

    Attributes:
        module: torch's module class (``nn.LeakyReLU``); its subclasses match too.
        arguments: the module's attributes that carry the activation's arguments (the names
            are the same on both sides).
        selects: module attributes whose values pick this activation among those sharing a
            class: ``nn.GELU`` is gelu with ``approximate="none"``, gelu_tanh with "tanh".
        functions: functional call → the names of its positional arguments after the input;
            the name ``"_inplace"`` marks a function that overwrites its input (``F.relu_``).
        methods: tensor methods (``x.relu()``); a trailing ``_`` marks the in-place form.
        in_models: found as an activation site in models; False for ``nn.Identity``, which
            models use as a placeholder for a missing norm or drop-path.
    """

    module: type[nn.Module]
    arguments: tuple[str, ...] = ()
    selects: dict[str, Any] = field(default_factory=dict)
    functions: dict[Callable[..., Any], tuple[str, ...]] = field(default_factory=dict)
    methods: tuple[str, ...] = ()
    in_models: bool = True

    def native(self) -> nn.Module:
        """torch's module at its default arguments (``nn.GELU(approximate="tanh")``)."""
        return self.module(**self.selects)

    def __str__(self) -> str:
        defaults = _constructor_defaults(self.module)
        selected = format_arguments(
            {k: v for k, v in self.selects.items() if defaults.get(k, REQUIRED) != v}
        )
        name = f"torch.nn.{self.module.__name__}"
        return f"{name}({selected})" if selected else name


@dataclass(frozen=True, eq=False)
class ActivationInfo:
    """Everything relulab knows about one activation, declared once where it is registered.

    The maths (function, module, fused kernel), where it comes from (formula, paper), its
    properties at the default parameters, and its equivalents in torch and timm. Surgery's
    site finder, ``relulab speed``'s native yardstick, the README's zoo table and the fused
    path all read this record; nothing else is keyed by the activation's name.
    """

    name: str
    module: type[nn.Module]
    function: Callable[..., Any] | None
    formula: str
    paper: str
    aliases: tuple[str, ...] = ()
    kernel: KernelDef | None = None  # the fused kernel (relulab.kernels.definitions)
    piecewise_linear: bool = False
    smooth: bool = False  # continuously differentiable (C¹) or better
    monotonic: bool = False  # non-decreasing
    bounded_below: bool = False
    # f' is exactly 0 on some interval, so a unit whose inputs all fall there stops learning
    # (a dead unit); activations without such a region cannot have dead units.
    flat_region: bool = False
    elementwise: bool = True  # y[i] depends on x[i] alone
    trainable: tuple[str, ...] = ()  # parameters trained by default
    torch: TorchEquivalent | None = None
    timm_equivalent: str | None = None  # its name in timm's create_act registry
    timm_modules: tuple[str, ...] = ()  # timm's module classes for it, matched by class name
    notes: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)  # constructor defaults

    @property
    def torch_equivalent(self) -> str | None:
        """torch's module for it, as text (``"torch.nn.GELU(approximate='tanh')"``)."""
        return str(self.torch) if self.torch is not None else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view (the module and function by qualified name)."""
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "formula": self.formula,
            "paper": self.paper,
            "parameters": {
                k: ("<required>" if v is REQUIRED else v) for k, v in self.parameters.items()
            },
            "properties": self.properties(),
            "fused_kernel": None if self.kernel is None else f"saves {self.kernel.saves}",
            "torch_equivalent": self.torch_equivalent,
            "timm_equivalent": self.timm_equivalent,
            "notes": self.notes,
            "module": f"{self.module.__module__}.{self.module.__qualname__}",
        }

    def properties(self) -> dict[str, Any]:
        return {
            "piecewise_linear": self.piecewise_linear,
            "smooth": self.smooth,
            "monotonic": self.monotonic,
            "bounded_below": self.bounded_below,
            "flat_region": self.flat_region,
            "elementwise": self.elementwise,
            "trainable": list(self.trainable),
        }


_ACTIVATIONS: dict[str, ActivationInfo] = {}
_ALIASES: dict[str, str] = {}


def normalize_name(name: str) -> str:
    """Registry key of a user-typed name: lower case, '-' and ' ' become '_'."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def _constructor_defaults(cls: type[nn.Module]) -> dict[str, Any]:
    signature = inspect.signature(cls.__init__)
    return {
        name: p.default
        for name, p in list(signature.parameters.items())[1:]
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def register(name: str, **metadata: Any) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: register an activation module under ``name`` with its metadata.

    ``metadata`` holds the :class:`ActivationInfo` fields other than name, module and
    parameters (which are read off the constructor's signature).
    """
    key = normalize_name(name)

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        aliases = tuple(normalize_name(a) for a in metadata.pop("aliases", ()))
        for taken in (key, *aliases):
            if taken in _ACTIVATIONS or taken in _ALIASES:
                raise UserError(f"activation name {taken!r} is registered twice")
        info = ActivationInfo(
            name=key,
            module=cls,
            aliases=aliases,
            parameters=_constructor_defaults(cls),
            **metadata,
        )
        _ACTIVATIONS[key] = info
        _ALIASES.update(dict.fromkeys(aliases, key))
        cls.activation_name = key
        cls.__doc__ = _complete_docstring(cls.__doc__ or "", info)
        return cls

    return decorator


_ELEMENTWISE_SHAPE = """    Shape:
        - Input: :math:`(*)`, any shape.
        - Output: :math:`(*)`, the shape of the input.

"""


def _complete_docstring(doc: str, info: ActivationInfo) -> str:
    """Insert the Paper (and, for elementwise activations, Shape) sections before Example.

    Keeps the citation in one place (the registry) and the shape boilerplate out of every
    class.
    """
    sections = f"    Paper:\n        {info.paper}\n\n"
    if info.elementwise and "Shape:" not in doc:
        sections += _ELEMENTWISE_SHAPE
    head, marker, example = doc.partition("    Example::")
    return head + sections + marker + example if marker else doc + "\n" + sections


def did_you_mean(word: str, choices: list[str]) -> str:
    """'; did you mean 'x'?' with the closest choices (those nearly as close as the best)."""
    scored = sorted(
        ((difflib.SequenceMatcher(None, word, c).ratio(), c) for c in choices), reverse=True
    )
    close = [c for score, c in scored if score >= 0.6 and score >= scored[0][0] - 0.05][:3]
    if not close:  # 'slope' for 'negative_slope': a part of the name
        # ... but not 'c' for 'species': a choice inside the word must be a word itself
        close = [
            c for c in choices if len(word) >= 3 and (word in c or (len(c) >= 3 and c in word))
        ][:3]
    if not close:
        return ""
    quoted = [repr(c) for c in close]
    listed = " or ".join(quoted) if len(quoted) <= 2 else ", ".join(quoted)
    return f"; did you mean {listed}?"


def resolve_name(name: str) -> str:
    """Canonical name of ``name`` or one of its aliases; ValueError with suggestions."""
    if not isinstance(name, str):
        raise UserError(f"activation name must be a string, got {name!r}")
    key = normalize_name(name)
    if key in _ACTIVATIONS:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    suggestion = did_you_mean(key, sorted(_ACTIVATIONS))
    if not suggestion:
        close_alias = difflib.get_close_matches(key, sorted(_ALIASES), n=1, cutoff=0.6)
        suggestion = f"; did you mean {_ALIASES[close_alias[0]]!r}?" if close_alias else ""
    if not suggestion:
        suggestion = " (relulab.list_activations() lists them all)"
    raise UserError(f"unknown activation {name!r}{suggestion}")


def list_activations(pattern: str | None = None) -> list[str]:
    """Sorted canonical names, optionally filtered by a shell-style wildcard pattern.

    A name matches when the pattern matches it or one of its aliases (case-insensitive;
    ``-`` may stand for ``_``, except inside a ``[a-z]`` range).
    """
    if pattern is None:
        return sorted(_ACTIVATIONS)
    if not isinstance(pattern, str):
        raise UserError(f"pattern must be a string such as '*relu*', got {pattern!r}")
    patterns = {pattern.strip().lower(), normalize_name(pattern)}
    return sorted(
        info.name
        for info in _ACTIVATIONS.values()
        if any(fnmatch.fnmatchcase(n, p) for n in (info.name, *info.aliases) for p in patterns)
    )


def registered() -> list[ActivationInfo]:
    """Every registered activation's record, sorted by name."""
    return [_ACTIVATIONS[name] for name in sorted(_ACTIVATIONS)]


def activation_info(name: str) -> ActivationInfo:
    """Formula, paper, parameters and properties of an activation (name or alias)."""
    return _ACTIVATIONS[resolve_name(name)]


def _literal(node: ast.expr, spec: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise UserError(
            f"activation spec {spec!r}: argument {ast.unparse(node)!r} is not a literal "
            "(numbers, strings, booleans, None, tuples and lists are allowed)"
        ) from None


MAX_SPEC_LENGTH = 1000


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"name(arg, key=value)"`` into the canonical name and its bound arguments.

    Arguments must be Python literals; the spec is parsed with :mod:`ast` and never
    evaluated. Positional arguments are bound to the constructor's parameters in order.
    """
    if not isinstance(spec, str):
        raise UserError(f"activation spec must be a string, got {spec!r}")
    if len(spec) > MAX_SPEC_LENGTH:
        raise UserError(
            f"activation spec is {len(spec)} characters long; the limit is {MAX_SPEC_LENGTH}"
        )
    head, paren, rest = spec.strip().partition("(")
    name = normalize_name(head)
    if not name.isidentifier():
        raise UserError(
            f"cannot parse activation spec {spec!r}: expected NAME or NAME(key=value, ...)"
        )
    canonical = resolve_name(name)
    if not paren:
        return canonical, {}
    try:
        call = ast.parse(f"{name}({rest}", mode="eval").body
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        raise UserError(
            f"cannot parse activation spec {spec!r}: expected NAME or NAME(key=value, ...)"
        ) from None
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise UserError(f"cannot parse activation spec {spec!r}: expected NAME(key=value, ...)")
    args = [_literal(a, spec) for a in call.args]
    if any(k.arg is None for k in call.keywords):
        raise UserError(f"activation spec {spec!r}: '**' arguments are not allowed")
    names = [k.arg for k in call.keywords]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"activation spec {spec!r}: argument {repeated[0]!r} given twice")
    kwargs = {k.arg: _literal(k.value, spec) for k in call.keywords}
    return canonical, bind_arguments(canonical, args, kwargs)


def bind_arguments(name: str, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Map positional and keyword arguments onto the constructor's parameter names."""
    info = _ACTIVATIONS[resolve_name(name)]
    parameter_names = list(info.parameters)
    for key in kwargs:
        if key not in info.parameters:
            accepted = ", ".join(parameter_names) or "no arguments"
            hint = did_you_mean(key, parameter_names) or f" (accepted: {accepted})"
            raise UserError(f"unknown argument {key!r} for activation {info.name!r}{hint}")
    if len(args) > len(parameter_names):
        raise UserError(
            f"activation {info.name!r} takes at most {len(parameter_names)} positional "
            f"argument(s) ({', '.join(parameter_names) or 'none'}), got {len(args)}"
        )
    bound = dict(zip(parameter_names, args))
    for key, value in kwargs.items():
        if key in bound:
            raise UserError(f"activation {info.name!r}: argument {key!r} given twice")
        bound[key] = value
    return bound


def _check_required(name: str, arguments: dict[str, Any]) -> None:
    info = _ACTIVATIONS[name]
    missing = [k for k, v in info.parameters.items() if v is REQUIRED and k not in arguments]
    if missing:
        example = format_spec(name, {k: 8 for k in missing})
        raise UserError(
            f"activation {name!r} needs argument(s) {', '.join(missing)}, e.g. {example!r}"
        )


def format_arguments(arguments: dict[str, Any]) -> str:
    """``{"alpha": 2.0, "sigma": 1}`` → ``"alpha=2.0, sigma=1"`` (literals that parse back)."""
    return ", ".join(f"{k}={v!r}" for k, v in arguments.items())


def canonical_spec(spec: str) -> str:
    """One spelling per activation: ``"ReLU"`` → ``"relu"``, ``"leaky_relu(0.2)"`` →
    ``"leaky_relu(negative_slope=0.2)"``, and ``"leaky_relu(0.01)"`` (the default) →
    ``"leaky_relu"``: arguments equal to their default, of the same kind (a bool matches a
    bool only, as ``inplace=1`` is no flag), are left out, the rest in the constructor's
    order."""
    name, arguments = parse_spec(spec)
    defaults = _ACTIVATIONS[name].parameters

    def is_default(key: str, value: Any) -> bool:
        default = defaults.get(key, REQUIRED)
        numbers = (int, float)
        same_kind = type(value) is type(default) or (
            type(value) in numbers and type(default) in numbers
        )
        return default is not REQUIRED and same_kind and value == default

    # in the constructor's order, so the order they were typed in does not matter
    kept = {k: arguments[k] for k in defaults if k in arguments and not is_default(k, arguments[k])}
    return format_spec(name, kept)


def format_spec(name: str, arguments: dict[str, Any] | None = None) -> str:
    """Inverse of :func:`parse_spec`: ``format_spec("elu", {"alpha": 2.0}) == "elu(alpha=2.0)"``."""
    return f"{name}({format_arguments(arguments)})" if arguments else name


def _build(module_class: type[nn.Module], arguments: dict[str, Any], label: str) -> nn.Module:
    """Instantiate, turning any failure (a bad type, an impossible allocation) into one line."""
    try:
        return module_class(**arguments)
    except ValueError:
        raise
    except (TypeError, RuntimeError, MemoryError, OverflowError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"activation {label!r}: {reason}") from None


def get_activation(
    spec: str | nn.Module | type[nn.Module], *, fused: bool | None = None, **overrides: Any
) -> nn.Module:
    """Build an activation module from a name, a spec string, a module class or instance.

    Args:
        spec: ``"gelu"``, an alias such as ``"hardswish"``, a call string such as
            ``"leaky_relu(negative_slope=0.2)"``, an ``nn.Module`` subclass (instantiated
            with ``overrides``) or instance.
        fused: True runs relulab's fused kernels (:mod:`relulab.kernels`), False the
            reference formula under plain autograd. None (the default) means True for a
            name or class, and leaves an instance as it is. An instance whose setting
            differs is returned as a shallow copy with ``fused`` set (sharing its
            parameters), so the caller's module is not changed. Modules that are not
            relulab's have no fused path and are returned as they are.
        overrides: constructor arguments that replace those of the spec string.

    Raises:
        UserError: unknown name or argument, non-literal argument, bad value.

    Example::

        >>> get_activation("leaky_relu(negative_slope=0.2)")
        LeakyReLU(negative_slope=0.2)
        >>> get_activation("golu", shift=0.5)
        GoLU(scale=1.0, shift=0.5, growth=1.0, trainable=False)
    """
    if isinstance(spec, nn.Module):
        if overrides:
            raise UserError(f"cannot apply arguments {sorted(overrides)} to a module instance")
        if fused is None or not _has_fused_path(spec) or spec.fused == fused:
            return spec
        module = copy.copy(spec)
        module.fused = fused
        return module
    if isinstance(spec, type) and issubclass(spec, nn.Module):
        module = _build(spec, overrides, spec.__name__)
    elif isinstance(spec, str):
        name, arguments = parse_spec(spec)
        if overrides:
            arguments.update(bind_arguments(name, [], overrides))
        _check_required(name, arguments)
        module = _build(_ACTIVATIONS[name].module, arguments, format_spec(name, arguments))
    else:
        raise UserError(
            f"expected an activation name, spec string or nn.Module, got {type(spec).__name__}"
        )
    if _has_fused_path(module):
        module.fused = True if fused is None else fused
    return module


def _has_fused_path(module: nn.Module) -> bool:
    """A relulab activation module (which the registry cannot import: it imports us)."""
    return isinstance(getattr(type(module), "fused", None), bool)
