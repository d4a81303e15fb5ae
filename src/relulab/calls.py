"""Find a model's functional activation calls by reading its source.

For each module, the source of its ``forward``, and of the methods it reaches through
``self.name(...)`` and ``super().name(...)``, is parsed with :mod:`ast` from the module's
file. A callee is resolved statically against the function's globals, closure, builtins and
the instance's own attributes, then compared with the registry's torch equivalents, so
``F.relu``, ``torch.nn.functional.relu``, a ``from torch.nn.functional import relu`` name,
``self.act`` holding ``F.relu`` and ``nn.ReLU()(x)`` are all relu. Tensor methods
(``x.relu()``, ``x.relu_()``) are matched by name. Nothing is run, so control flow that
depends on the data is no obstacle. torch's own classes are not read: their code is not
the user's (a torch module that holds an activation function is reported instead).
"""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import os
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.fx
from torch import nn

from relulab.registry import ActivationInfo, TorchEquivalent
from relulab.sites import (
    ActivationSite,
    CallHop,
    CallLocation,
    RunTimeValue,
    activation_name_of_class,
    call_default,
    format_route,
    identify_module,
    torch_equivalents,
)


@dataclass(frozen=True)
class ParsedFunction:
    """A method's ``def`` as parsed: ``tree``'s line numbers plus ``offset`` are the file's."""

    tree: ast.FunctionDef | ast.AsyncFunctionDef
    text: str  # what was parsed (tree's coordinates)
    offset: int

    def segment(self, node: ast.AST) -> str:
        """The node's source as written, on one line."""
        text = ast.get_source_segment(self.text, node)
        return text if text is not None and "\n" not in text else ast.unparse(node)


def parse_function(function: Callable[..., Any], lambdas: bool = False) -> ParsedFunction | None:
    """The ``def`` of ``function`` from its file, or None where its source cannot be read
    (a class defined in exec'd code or at a REPL) or is not a ``def`` (a lambda, unless
    ``lambdas``: then a lambda alone of its arguments on its line reads as a ``def`` named
    ``<lambda>`` that returns its body)."""
    try:
        lines, first = inspect.getsourcelines(function)
    except (OSError, TypeError):
        return None
    source = "".join(lines)
    # A method is indented. Parsing it under "if 1:" keeps its columns and any docstring
    # lines less indented than the def, which textwrap.dedent would refuse to shift.
    indented = source[:1].isspace()
    text = "if 1:\n" + source if indented else source
    try:
        module = ast.parse(text)
    except SyntaxError:
        return None
    tree = module.body[0].body[0] if indented else module.body[0]
    name = function.__code__.co_name
    offset = first - (2 if indented else 1)
    if lambdas and name == "<lambda>":
        tree = _lambda_def(module, function.__code__, offset)
        return ParsedFunction(tree, text, offset) if tree is not None else None
    if not isinstance(tree, (ast.FunctionDef, ast.AsyncFunctionDef)) or tree.name != name:
        return None
    return ParsedFunction(tree, text, offset)


def _lambda_def(module: ast.Module, code: types.CodeType, offset: int) -> ast.FunctionDef | None:
    """The one lambda of ``code``'s line and parameters, as a ``def``."""
    parameters = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    found = [
        node
        for node in ast.walk(module)
        if isinstance(node, ast.Lambda)
        and node.lineno + offset == code.co_firstlineno
        and tuple(a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs)
        == parameters
    ]
    if len(found) != 1:
        return None
    (node,) = found
    body = ast.copy_location(ast.Return(node.body), node.body)
    tree = ast.FunctionDef(
        name="<lambda>", args=node.args, body=[body], decorator_list=[], returns=None
    )
    if "type_params" in ast.FunctionDef._fields:
        tree.type_params = []
    return ast.copy_location(tree, node)


def self_name(tree: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """The name a method calls its instance by (its first positional parameter)."""
    positional = tree.args.posonlyargs + tree.args.args
    return positional[0].arg if positional else None


def _bindings(tree: ast.AST) -> tuple[set[str], dict[str, list[ast.AST]]]:
    """Names a function binds other than by import, and the imports that bind the rest."""
    bound: set[str] = set()
    imports: dict[str, list[ast.AST]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node is not tree:
                bound.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound.update(node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                name = alias.asname or alias.name.partition(".")[0]
                imports.setdefault(name, []).append(node)
    return bound, imports


_UNKNOWN = object()


def _imported(node: ast.AST, name: str) -> Any:
    """What ``name`` is after an import statement, if the module is already loaded (nothing
    is imported here)."""
    for alias in node.names:
        if (alias.asname or alias.name.partition(".")[0]) != name:
            continue
        if isinstance(node, ast.Import):
            loaded = alias.name if alias.asname else alias.name.partition(".")[0]
            return sys.modules.get(loaded, _UNKNOWN)
        if node.level == 0 and node.module in sys.modules:
            return getattr(sys.modules[node.module], alias.name, _UNKNOWN)
    return _UNKNOWN


@dataclass
class _Scope:
    """What the names in one method refer to, for one instance."""

    function: types.FunctionType
    parsed: ParsedFunction
    owner: nn.Module
    bound: set[str]
    imports: dict[str, list[ast.AST]]
    self_name: str | None
    tables: _Tables

    @classmethod
    def of(
        cls,
        function: types.FunctionType,
        parsed: ParsedFunction,
        owner: nn.Module,
        tables: _Tables,
        method: bool = True,
    ) -> _Scope:
        """The scope of a method of ``owner`` or (``method=False``) of a plain function."""
        bound, imports = _bindings(parsed.tree)
        instance = self_name(parsed.tree) if method else None
        return cls(function, parsed, owner, bound, imports, instance, tables)

    def _name(self, name: str) -> Any:
        if name == self.self_name:
            return self.owner
        if name in self.bound:
            return _UNKNOWN  # a local: anything at run time
        if name in self.imports:
            found = {id(v): v for v in (_imported(n, name) for n in self.imports[name])}
            return next(iter(found.values())) if len(found) == 1 else _UNKNOWN
        code, closure = self.function.__code__, self.function.__closure__ or ()
        if name in code.co_freevars:
            try:
                return closure[code.co_freevars.index(name)].cell_contents
            except ValueError:  # an empty cell
                return _UNKNOWN
        if name in self.function.__globals__:
            return self.function.__globals__[name]
        return getattr(builtins, name, _UNKNOWN)

    def resolve(self, node: ast.expr) -> Any:
        """The object an expression statically stands for: a name, a module's attribute
        (``torch.nn.functional.relu``) or a function the instance holds (``self.act``)."""
        if isinstance(node, ast.Name):
            return self._name(node.id)
        if not isinstance(node, ast.Attribute):
            return _UNKNOWN
        base = self.resolve(node.value)
        if isinstance(base, types.ModuleType):
            try:
                return getattr(base, node.attr, _UNKNOWN)
            except Exception:  # a lazy module attribute that fails to load
                return _UNKNOWN
        if base is self.owner and not isinstance(node.value, ast.Attribute):
            # self.act = F.relu in __init__: a plain function in the instance's __dict__
            # (submodules live in _modules, methods on the class).
            return vars(self.owner).get(node.attr, _UNKNOWN)
        return _UNKNOWN


def _literal(node: ast.expr, parsed: ParsedFunction) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return RunTimeValue(parsed.segment(node))


def _entries(functions: dict, value: Any) -> list:
    """The table's entries for a callee (none for an unhashable object)."""
    try:
        return functions.get(value, [])
    except TypeError:
        return []


def _identify(
    call: ast.Call, scope: _Scope, tables: _Tables
) -> list[tuple[str, dict[str, Any], bool, bool, str]]:
    """(activation, arguments, in place, method form, obstacle) for each activation the call
    may apply: one, or several when an argument that selects among them (``approximate``)
    is computed at run time."""
    callee = scope.resolve(call.func)
    if isinstance(callee, functools.partial):
        return _identify_partial(call, callee, scope, tables)
    if callee is not _UNKNOWN:
        found = (_identify_function(call, scope, *e) for e in _entries(tables.functions, callee))
        return [c for c in found if c is not None]
    methods = tables.methods
    if (
        isinstance(call.func, ast.Attribute)
        and call.func.attr in methods
        and not call.args
        and not call.keywords
        and scope.resolve(call.func.value) is _UNKNOWN  # a tensor, not a module or `self`
    ):
        inplace = call.func.attr.endswith("_")
        return [(name, {}, inplace, True, "") for name in methods[call.func.attr]]
    if isinstance(call.func, ast.Call) and len(call.args) == 1 and not call.keywords:
        found = _identify_inline_module(call.func, scope)
        return [found] if found is not None else []
    return []


def _identify_partial(
    call: ast.Call, held: functools.partial, scope: _Scope, tables: _Tables
) -> list[tuple[str, dict[str, Any], bool, bool, str]]:
    """``self.act(x)`` with ``self.act = partial(F.leaky_relu, negative_slope=0.2)``: the
    partial's keywords are the call's arguments too."""
    entries = _entries(tables.functions, held.func)
    if held.args:  # the tensor, or arguments before it, bound in advance
        reason = "its functools.partial binds positional arguments"
        return [(info.name, {}, False, False, reason) for info, _, _ in entries]
    bound = [ast.keyword(k, ast.Constant(v)) for k, v in held.keywords.items()]
    spelled = ast.Call(call.func, call.args, bound + call.keywords)
    found = (_identify_function(spelled, scope, *entry) for entry in entries)
    return [c for c in found if c is not None]


def _identify_inline_module(
    construction: ast.Call, scope: _Scope
) -> tuple[str, dict[str, Any], bool, bool, str] | None:
    """``nn.LeakyReLU(0.2)(x)``: an activation module made and applied on the spot."""
    cls = scope.resolve(construction.func)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        return None
    name = activation_name_of_class(cls)
    if name is None:
        return None
    if any(isinstance(a, ast.Starred) for a in construction.args) or any(
        k.arg is None for k in construction.keywords
    ):
        return name, {}, False, False, "its arguments are unpacked at run time"
    args = [_literal(a, scope.parsed) for a in construction.args]
    kwargs = {k.arg: _literal(k.value, scope.parsed) for k in construction.keywords}
    computed = [str(v) for v in [*args, *kwargs.values()] if isinstance(v, RunTimeValue)]
    if computed:
        return name, {}, False, False, f"its {', '.join(computed)} is computed at run time"
    try:  # a registered activation's class, with literal arguments: safe to build
        identified = identify_module(cls(*args, **kwargs))
    except Exception:  # the model's own call would fail alike
        return None
    if identified is None:
        return None
    inplace = bool(kwargs.get("inplace", False))
    return identified[0], dict(identified[1]), inplace, False, ""


def _identify_function(
    call: ast.Call,
    scope: _Scope,
    info: ActivationInfo,
    equivalent: TorchEquivalent,
    positional: tuple[str, ...],
) -> tuple[str, dict[str, Any], bool, bool, str] | None:
    args, keywords = call.args, call.keywords
    if any(isinstance(a, ast.Starred) for a in args) or any(k.arg is None for k in keywords):
        return info.name, {}, False, False, "its arguments are unpacked at run time"
    if not args and not any(k.arg == "input" for k in keywords):
        return None  # no tensor argument: not a call that applies the activation
    rest = args[1:]
    if len(rest) > len(positional):
        return None
    given = {k: _literal(v, scope.parsed) for k, v in zip(positional, rest)}
    given.update({k.arg: _literal(k.value, scope.parsed) for k in keywords if k.arg != "input"})
    obstacles = []
    for key, value in equivalent.selects.items():
        chosen = given.pop(key, call_default(equivalent, key))
        if isinstance(chosen, RunTimeValue):
            obstacles.append(f"its {key} ({chosen}) is computed at run time")
        elif chosen != value:
            return None
    inplace = positional[-1:] == ("_inplace",)
    flag = given.pop("inplace", False)
    if isinstance(flag, RunTimeValue):
        obstacles.append(f"whether it is in place ({flag}) is decided at run time")
    else:
        inplace = inplace or bool(flag)
    obstacles += [
        f"its {k} ({v}) is computed at run time"
        for k, v in given.items()
        if isinstance(v, RunTimeValue)
    ]
    # An argument left out has its default, listed as a module site lists its attributes.
    arguments = {k: given.pop(k, call_default(equivalent, k)) for k in equivalent.arguments}
    return info.name, {**arguments, **given}, inplace, False, "; ".join(obstacles)


# --- finding a model's calls ---------------------------------------------------------------


def _is_torchs(cls: type) -> bool:
    module = getattr(cls, "__module__", "") or ""
    return module == "torch" or module.startswith("torch.")


def _is_graph_module_code(cls: type) -> bool:
    """fx generates a class per GraphModule, whose ``forward`` is the graph's code."""
    return issubclass(cls, torch.fx.GraphModule) and cls is not torch.fx.GraphModule


def applied_rewrite(module: nn.Module) -> Any:
    """The :class:`relulab.rewrite.Rewrite` that made the module's class, or None. (A user's
    subclass of that class is a class of its own: the attribute is not inherited.)"""
    return vars(type(module)).get("_relulab_rewrite")


def origin_class(module: nn.Module) -> type:
    """The user's class of a module, also after :mod:`relulab.rewrite` gave it a subclass."""
    rewrite = applied_rewrite(module)
    return rewrite.origin if rewrite is not None else type(module)


def _lookup(mro: tuple[type, ...], name: str, after: type | None) -> tuple[type, Any] | None:
    """The class that ``self.name`` (or ``super().name`` in ``after``) reaches, and its
    attribute, unless that is torch's own code."""
    start = mro.index(after) + 1 if after in mro else 0
    for cls in mro[start:]:
        if name in vars(cls):
            if _is_torchs(cls) and not _is_graph_module_code(cls):
                return None
            return cls, vars(cls)[name]
    return None


def _reached(tree: ast.AST, scope: _Scope, cls: type) -> Iterator[tuple[str, type | None]]:
    """Methods a function calls on its own instance: ``self.name(...)`` (dispatched from the
    instance's class) and ``super().name(...)`` (from the class after ``cls``)."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        receiver = node.func.value
        if isinstance(receiver, ast.Name) and receiver.id == scope.self_name:
            yield node.func.attr, None
        elif (
            isinstance(receiver, ast.Call)
            and isinstance(receiver.func, ast.Name)
            and receiver.func.id == "super"
            and "super" not in scope.bound
        ):
            after = cls if not receiver.args else scope.resolve(receiver.args[0])
            if isinstance(after, type):
                yield node.func.attr, after


def _structural_obstacle(owner: nn.Module, cls: type, name: str, value: Any, tree: ast.AST) -> str:
    """Why no call in this method can be replaced, whatever its arguments ('' if none)."""
    where = f"{cls.__name__}.{name}"
    if isinstance(owner, torch.fx.GraphModule):
        return "an fx GraphModule's code is generated from its graph; replace in the traced model"
    if isinstance(owner, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        return (
            f"{type(owner).__name__} is a container whose children are its items, "
            "so no module can be added to it"
        )
    if not isinstance(value, types.FunctionType):
        return f"{where} is a {type(value).__name__}, not a method"
    if inspect.unwrap(value) is not value:  # a rewrite would drop what the wrapper adds
        return f"{where} is decorated"
    instance = self_name(tree)
    if instance is None:
        return f"{where} has no positional parameter for its instance"
    rebinds = [
        n
        for n in ast.walk(tree)
        if (isinstance(n, ast.Name) and n.id == instance and not isinstance(n.ctx, ast.Load))
        or (isinstance(n, ast.arg) and n.arg == instance)
    ]
    if len(rebinds) > 1:  # the parameter itself is one
        return f"{where} rebinds {instance!r}"
    return ""


def _function_of(value: Any) -> types.FunctionType | None:
    """The Python function behind a class attribute (a method, static, class or wrapped)."""
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    value = inspect.unwrap(value) if callable(value) else value
    return value if isinstance(value, types.FunctionType) else None


@dataclass(frozen=True)
class Unexamined:
    """A method, or a function a method calls, whose calls were not read, why, and the
    activations it may apply. For a function, ``via`` are the calls that reach it and
    ``at`` is its ``def`` line."""

    path: str
    cls: type
    method: str
    candidates: tuple[str, ...]
    reason: str
    via: tuple[CallHop, ...] = ()
    at: str = ""

    @property
    def where(self) -> str:
        if self.via:
            return format_route(self.path, self.via, self.method, self.at)
        return f"{self.path}.{self.method}" if self.path else self.method


@dataclass
class CallSearch:
    """What :func:`find_call_sites` found: the sites, and the methods it could not read."""

    sites: list[ActivationSite] = field(default_factory=list)
    unexamined: list[Unexamined] = field(default_factory=list)


@dataclass
class _Tables:
    """The registry's torch equivalents, as calls are looked up."""

    functions: dict[Any, list[tuple[ActivationInfo, TorchEquivalent, tuple]]]
    methods: dict[str, list[str]]

    @classmethod
    def read(cls) -> _Tables:
        tables = cls({}, {})
        for info, equivalent in torch_equivalents():
            for function, positional in equivalent.functions.items():
                tables.functions.setdefault(function, []).append((info, equivalent, positional))
            for method in equivalent.methods:
                tables.methods.setdefault(method, []).append(info.name)
        return tables

    def names_in(self, function: types.FunctionType, owner: nn.Module) -> tuple[str, ...]:
        """Activations a function whose source is not read may apply, judged by the names
        its bytecode (and that of the functions it closes over) uses."""
        by_name: dict[str, set[str]] = {}
        for callee, entries in self.functions.items():
            key = getattr(callee, "__name__", "")
            by_name.setdefault(key, set()).update(info.name for info, _, _ in entries)
        found: set[str] = set()
        for code, namespace in _code_of(function):
            for name in _code_names(code):
                found |= by_name.get(name, set()) | set(self.methods.get(name, ()))
                for value in (namespace.get(name), vars(owner).get(name)):
                    found |= {info.name for info, _, _ in _entries(self.functions, value)}
        return tuple(sorted(found))


def _code_of(function: types.FunctionType) -> Iterator[tuple[types.CodeType, dict]]:
    """A function's code and globals, and those of the functions in its closure (what a
    decorator's wrapper calls)."""
    yield function.__code__, function.__globals__
    for cell in function.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if isinstance(value, types.FunctionType):
            yield value.__code__, value.__globals__


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names) | set(code.co_freevars)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _code_names(constant)
    return names


def _held_functions(path: str, owner: nn.Module, tables: _Tables) -> Unexamined | None:
    """A torch module that applies a function it holds (``nn.TransformerEncoderLayer``'s
    ``activation=F.relu``): torch's code is not rewritten, so the call stays."""
    held = {
        attribute: info.name
        for attribute, value in vars(owner).items()
        for info, _, _ in _entries(tables.functions, value)
    }
    if not held:
        return None
    cls = type(owner)
    names = ", ".join(f".{attribute}" for attribute in held)
    reason = f"torch's {cls.__name__} applies the function it holds as {names} in its own code"
    return Unexamined(path, cls, "forward", tuple(sorted(set(held.values()))), reason)


def _hides(function: types.FunctionType, name: str) -> bool:
    """A decorator's wrapper (without functools.wraps) that calls the method it replaced."""
    inner = [code.co_name for code, _ in _code_of(function)][1:]
    return function.__code__.co_name != name and name in inner


def _unreadable(function: types.FunctionType, cls: type, name: str) -> str:
    """Why a method's calls cannot be read."""
    where = f"{cls.__qualname__}.{name}"
    if function.__code__.co_name == "<lambda>":
        return f"{where} is a lambda"
    if _hides(function, name):
        return f"{where} is wrapped by {function.__qualname__}, which hides its code"
    return f"the source of {where} cannot be read (defined in exec'd code or at a REPL?)"


FOLLOW_DEPTH = 3
"""How deep surgery follows calls of plain functions: forward → f → g → h is read; a
function h calls is not (it is reported if its code names a matching activation)."""

_NOT_USERS = {"torch", "relulab", "builtins", *sys.stdlib_module_names}


def _users(function: Any) -> bool:
    """Code that may be the user's: not torch's, relulab's or the standard library's."""
    module = getattr(function, "__module__", None) or ""
    return module.partition(".")[0] not in _NOT_USERS


def _callee_function(callee: Any) -> tuple[types.FunctionType | None, str]:
    """The user's function a call runs, and why it cannot be followed ('' if it can);
    (None, '') for a callee that is not user's Python code (a class, torch's, a C function)."""
    if isinstance(callee, functools.partial):
        function = _function_of(callee.func)
        if function is None or not _users(function):
            return None, ""  # a partial of an activation function is a call site itself
        name = function.__qualname__
        return function, f"{name} is called through a functools.partial, which is not followed"
    if isinstance(callee, type):
        return None, ""
    function = _function_of(callee)
    if function is None or not _users(function):
        return None, ""
    if function is not callee:
        return function, f"{function.__qualname__} is decorated"
    return function, ""


def _sites_in(
    path: str,
    owner: nn.Module,
    parsed: ParsedFunction,
    scope: _Scope,
    blocked: str,
    make: Callable[..., CallLocation],
) -> list[ActivationSite]:
    """The activation calls in one method or function, in source order, numbered where they
    share a line; those an earlier surgery replaced (now modules) are left out."""
    tables, sites = scope.tables, []
    for node in ast.walk(parsed.tree):
        if not isinstance(node, ast.Call):
            continue
        for activation, arguments, inplace, method_form, obstacle in _identify(node, scope, tables):
            location = make(
                filename=scope.function.__code__.co_filename,
                lineno=node.lineno + parsed.offset,
                col_offset=node.col_offset,
                end_lineno=node.end_lineno + parsed.offset,
                end_col_offset=node.end_col_offset,
                code=parsed.segment(node),
                method_form=method_form,
            )
            site = ActivationSite(path, "call", activation, arguments, inplace=inplace)
            site.owner, site.location, site.obstacle = owner, location, blocked or obstacle
            sites.append(site)
    spans_on_line: dict[int, set] = {}
    for site in sites:
        spans_on_line.setdefault(site.location.lineno, set()).add(site.location.span)
    rewrite = applied_rewrite(owner)
    replaced = {site_id for site_id, _ in rewrite.targets} if rewrite is not None else set()
    result = []
    for site in sorted(sites, key=lambda s: s.location.span):
        spans = sorted(spans_on_line[site.location.lineno])
        if len(spans) > 1:
            site.location = replace(site.location, ordinal=spans.index(site.location.span) + 1)
        if site.location.site_id not in replaced:
            result.append(site)
    return result


@dataclass
class _Reader:
    """Reads one module: its methods, and the user's functions they call."""

    path: str
    owner: nn.Module
    tables: _Tables
    parsed_cache: dict
    search: CallSearch
    blocked: dict[tuple[type, str], str] = field(default_factory=dict)
    calls: list[CallHop] = field(default_factory=list)
    reached: dict[types.FunctionType, tuple[CallHop, ...]] = field(default_factory=dict)
    function_sites: list[ActivationSite] = field(default_factory=list)
    pending: list[tuple] = field(default_factory=list)  # code whose calls are still to read

    def parse(self, function: types.FunctionType, lambdas: bool = False) -> ParsedFunction | None:
        if function not in self.parsed_cache:
            self.parsed_cache[function] = parse_function(function, lambdas)
        return self.parsed_cache[function]

    def method(self, cls: type, name: str, value: Any, function: types.FunctionType) -> _Scope:
        """Read a method whose source parses; returns its scope."""
        parsed = self.parse(function)
        scope = _Scope.of(function, parsed, self.owner, self.tables)
        blocked = _structural_obstacle(self.owner, cls, name, value, parsed.tree)
        self.blocked[(cls, name)] = blocked
        make = functools.partial(CallLocation, cls, name)  # `forward = _f` is read as forward
        self.search.sites += _sites_in(self.path, self.owner, parsed, scope, blocked, make)
        self.pending.append((cls, name, cls, scope, ()))
        return scope

    def follow(self) -> None:
        """Read the user's functions that the methods call, nearest first (so each is reached
        by its shortest chain of calls); those beyond :data:`FOLLOW_DEPTH` are read too, so
        that their calls can be named, but not rewritten."""
        while self.pending:
            holder, name, cls, scope, via = self.pending.pop(0)
            parsed = scope.parsed
            for node in ast.walk(parsed.tree):
                if isinstance(node, ast.Call):
                    self._reach(node, holder, name, cls, scope, via)

    def _reach(
        self, node: ast.Call, holder: Any, name: str, cls: type, scope: _Scope, via: tuple
    ) -> None:
        function, obstacle = _callee_function(scope.resolve(node.func))
        if function is None:
            return
        parsed = scope.parsed
        span = (
            node.lineno + parsed.offset,
            node.col_offset,
            node.end_lineno + parsed.offset,
            node.end_col_offset,
        )
        hop = CallHop(holder, name, scope.function.__code__.co_filename, span, function)
        self.calls.append(hop)
        if function in self.reached:
            return
        via = (*via, hop)
        self.reached[function] = via
        readable = self.parse(function, lambdas=True) if not obstacle else None
        if not obstacle and readable is None:
            obstacle = f"the source of {function.__qualname__} cannot be read"
        if obstacle:
            self.not_followed(cls, function, via, obstacle)
            return
        beyond = ""
        if len(via) > FOLLOW_DEPTH:
            beyond = (
                f"{function.__qualname__} is {len(via)} nested calls from the method; "
                f"surgery rewrites functions up to {FOLLOW_DEPTH} deep"
            )
        inner = _Scope.of(function, readable, self.owner, self.tables, method=False)
        make = functools.partial(CallLocation, cls, function.__name__, function=function, via=via)
        self.function_sites += _sites_in(self.path, self.owner, readable, inner, beyond, make)
        self.pending.append((function, function.__name__, cls, inner, via))

    def not_followed(self, cls: type, function: Any, via: tuple, reason: str) -> None:
        candidates = self.tables.names_in(function, self.owner)
        if candidates:
            code = function.__code__
            at = f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
            unexamined = Unexamined(self.path, cls, function.__name__, candidates, reason, via, at)
            self.search.unexamined.append(unexamined)

    def finish(self) -> None:
        """Give each call in a function every call that leads there, and keep it where one
        of them is in a method that cannot be rewritten."""
        self.follow()
        for site in self.function_sites:
            route = self.route(site.location.function)
            stuck = [self.blocked.get((hop.holder, hop.method)) for hop in route]
            site.location = replace(site.location, route=route)
            site.obstacle = site.obstacle or next((s for s in stuck if s), "")
            self.search.sites.append(site)

    def route(self, function: types.FunctionType) -> frozenset[CallHop]:
        found: set[CallHop] = set()
        todo = [function]
        while todo:
            callee = todo.pop()
            for hop in self.calls:
                if hop.callee is callee and hop not in found:
                    found.add(hop)
                    if not isinstance(hop.holder, type):
                        todo.append(hop.holder)
        return frozenset(found)


def _instance_sites(
    path: str, owner: nn.Module, tables: _Tables, parsed_cache: dict, search: CallSearch
) -> None:
    """Read ``forward``, every method it reaches on its own instance, and the user's
    functions they call (to :data:`FOLLOW_DEPTH`)."""
    mro = origin_class(owner).__mro__
    if _lookup(mro, "forward", None) is None:  # torch's own forward
        held = _held_functions(path, owner, tables)
        search.unexamined += [held] if held else []
        return
    reader = _Reader(path, owner, tables, parsed_cache, search)
    queue: list[tuple[str, type | None]] = [("forward", None)]
    done: set[tuple[type, str]] = set()
    while queue:
        name, after = queue.pop(0)
        found = _lookup(mro, name, after)
        if found is None or (found[0], name) in done:
            continue
        cls, value = found
        done.add((cls, name))
        function = _function_of(value)
        if function is None:
            continue
        if reader.parse(function) is None or _hides(function, name):
            candidates = tables.names_in(function, owner)
            if candidates:
                reason = _unreadable(function, cls, name)
                search.unexamined.append(Unexamined(path, cls, name, candidates, reason))
            continue
        scope = reader.method(cls, name, value, function)
        queue += _reached(scope.parsed.tree, scope, cls)
    reader.finish()


def find_call_sites(model: nn.Module, skip: set[int] | None = None) -> CallSearch:
    """Every functional activation call in the methods of ``model``'s modules.

    Each module is examined once (a shared module at its first path). Activation modules,
    torch's own modules and those whose id is in ``skip`` (what surgery just put in) are
    not read. Calls are listed even where they cannot be replaced, with the reason in
    :attr:`ActivationSite.obstacle`; methods that could not be read are listed in
    :attr:`CallSearch.unexamined` with the activations their names point to.
    """
    search, tables, parsed_cache = CallSearch(), _Tables.read(), {}
    for path, module in model.named_modules():
        if id(module) in (skip or set()) or identify_module(module) is not None:
            continue
        _instance_sites(path, module, tables, parsed_cache, search)
    return search
