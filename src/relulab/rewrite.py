"""Rewrite a module's methods so that chosen functional calls run modules instead.

Surgery (:mod:`relulab.surgery`) uses this to replace ``F.relu(x)`` in a model's own code
while keeping the model an instance of the user's class. For a module whose methods make
replaced calls:

- each replaced call gets a module of its own, registered under the module's
  ``relulab_sites`` :class:`~torch.nn.ModuleDict` by method and line (``forward_line42``;
  ``forward_line42_2`` for the second activation call on that line, ``Base_forward_line7``
  for a method inherited from ``Base``);
- each method with replaced calls is parsed from its file, each call expression becomes
  ``self.relulab_sites["forward_line42"](x)``, and the method is compiled again with its
  file name, line numbers, globals and closure (zero-argument ``super()`` included), so
  tracebacks, debuggers and ``torch.compile`` see the user's code;
- the module's ``__class__`` becomes a subclass of its class with the same name, qualified
  name and module that holds the rewritten methods, so ``isinstance``, ``repr`` and every
  other method and attribute stay the user's. A rewritten method of a base class is put
  in a subclass of that base placed just after it in the method resolution order, where
  ``super()`` finds it.

An in-place call (``x.relu_()``, ``F.relu(x, inplace=True)``) writes the new module's result
into its input, so code that reads the input afterwards sees what it saw before.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import copyreg
import types
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from relulab.calls import applied_rewrite, parse_function, self_name
from relulab.sites import ActivationSite, CallLocation

SITES_ATTRIBUTE = "relulab_sites"


class RewriteError(Exception):
    """The module cannot take a subclass of its class (no consistent method order, or an
    instance layout ``__class__`` assignment refuses)."""


_WRITE_BACK = "__relulab_write_back__"  # a dunder name: never mangled in a class body


def _write_back(activation: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """What an in-place activation call does, with any module: its result written into its
    input. The module sees a copy, since what it saves for backward must not be the tensor
    that is then overwritten."""
    return tensor.copy_(activation(tensor.clone()))


@dataclass(frozen=True)
class Target:
    """A replaced call: the key of its module and how its input is passed; or (``function``
    set) a call of the user's function that now calls the function's rewritten copy."""

    key: str
    inplace: bool
    method_form: bool
    function: Any = None


@dataclass(frozen=True)
class Rewrite:
    """What a rewritten class is: the user's class, the calls replaced in it (site id →
    target) and the attribute that holds their modules."""

    origin: type
    targets: frozenset[tuple[tuple, Target]]
    attribute: str


def key_of(location: CallLocation, origin: type) -> str:
    """``forward_line42``, with ``_2`` for a second activation call on the line and the
    class name for a method inherited from a base class."""
    key = f"{location.method.strip('<>')}_line{location.lineno}"
    if location.ordinal:
        key += f"_{location.ordinal}"
    if location.function is not None or location.cls is origin:
        return key
    return f"{location.cls.__name__}_{key}"


_SITES = "__relulab_sites__"  # the copy of a function takes its modules as this keyword


def _copy_name(index: int) -> str:
    return f"__relulab_function_{index}__"


class _CallRewriter(ast.NodeTransformer):
    def __init__(
        self, targets: dict[tuple, Target], holder: ast.expr, copies: dict[Any, str]
    ) -> None:
        self.targets, self.holder, self.copies = targets, holder, copies

    def visit_Call(self, node: ast.Call) -> ast.AST:
        node = self.generic_visit(node)  # nested calls first: F.relu(F.relu(x))
        span = (node.lineno, node.col_offset, node.end_lineno, node.end_col_offset)
        target = self.targets.get(span)
        if target is None:
            return node
        load = ast.Load()
        if target.function is not None:  # mlp_act(h) -> its copy(h, __relulab_sites__=...)
            passed = ast.keyword(_SITES, self.holder)
            copy = ast.Name(self.copies[target.function], load)
            return ast.copy_location(ast.Call(copy, node.args, [*node.keywords, passed]), node)
        if target.method_form:
            source = node.func.value
        elif node.args:
            source = node.args[0]
        else:
            source = next(k.value for k in node.keywords if k.arg == "input")
        module = ast.Subscript(
            value=self.holder,
            slice=ast.Constant(target.key),
            ctx=load,
        )
        if target.inplace:
            call = ast.Call(ast.Name(_WRITE_BACK, load), [module, source], [])
        else:
            call = ast.Call(module, [source], [])
        return ast.copy_location(call, node)


def _node(cls: type[ast.AST], **fields: Any) -> ast.AST:
    """An AST node, with ``type_params`` where this Python's grammar has them (3.12+)."""
    if "type_params" in cls._fields:
        fields.setdefault("type_params", [])
    return cls(**fields)


def _find_code(code: types.CodeType, name: str) -> types.CodeType | None:
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            if constant.co_name == name:
                return constant
            found = _find_code(constant, name)
            if found is not None:
                return found
    return None


def _rewrite_function(
    cls: type | None,
    function: types.FunctionType,
    targets: dict[tuple, Target],
    attribute: str,
    copies: dict[Any, tuple[str, types.CellType]],
) -> types.FunctionType:
    """``function`` (defined in ``cls``, or a plain function for None) compiled again with
    the targeted calls replaced. A method finds its modules under ``self.<attribute>``; a
    plain function's copy takes them as the keyword ``__relulab_sites__``. ``copies`` are
    the names and cells of the rewritten copies that redirected calls call."""
    parsed = parse_function(function, lambdas=cls is None)
    if parsed is None:  # sites.py read it a moment ago
        raise RuntimeError(f"the source of {function.__qualname__} is no longer readable")
    tree = copy.deepcopy(parsed.tree)  # the parse is cached; this edits it
    ast.increment_lineno(tree, parsed.offset)
    tree.decorator_list = []  # sites.py only lets through decorators that return the function
    load = ast.Load()
    if cls is None:
        tree.args.kwonlyargs.append(ast.arg(_SITES))
        tree.args.kw_defaults.append(None)
        holder: ast.expr = ast.Name(_SITES, load)
    else:
        holder = ast.Attribute(ast.Name(self_name(tree), load), attribute, load)
    names = {callee: name for callee, (name, _) in copies.items()}
    tree = _CallRewriter(targets, holder, names).visit(tree)
    # A def written in a class body goes in a class body of the same name, so that private
    # names (self.__x) are mangled as they were; the class's binding is named so that it
    # cannot capture a global the method reads (in a class body, `__Net` is itself
    # mangled). The original free variables and the write-back helper are parameters of an
    # enclosing function, so they stay free variables and the closure below supplies them.
    body: ast.stmt = tree
    written_in = function.__qualname__.split(".")[-2:-1]
    if written_in and written_in[0] != "<locals>":
        stem = written_in[0].lstrip("_")
        holder = f"__{stem}" if stem else "__relulab_class__"
        body = _node(
            ast.ClassDef, name=holder, bases=[], keywords=[], body=[tree], decorator_list=[]
        )
    code = function.__code__
    parameters = [n for n in code.co_freevars if n != "__class__"] + [_WRITE_BACK]
    parameters += [name for name, _ in copies.values()]
    maker = _node(
        ast.FunctionDef,
        name="__relulab_maker__",
        args=ast.arguments(
            posonlyargs=[],
            args=[ast.arg(p) for p in parameters],
            kwonlyargs=[],
            kw_defaults=[],
            defaults=[],
        ),
        body=[body],
        decorator_list=[],
        returns=None,
    )
    module = ast.fix_missing_locations(ast.Module(body=[maker], type_ignores=[]))
    compiled = _find_code(compile(module, code.co_filename, "exec"), code.co_name)
    cells = dict(zip(code.co_freevars, function.__closure__ or ()))
    if cls is not None:
        cells.setdefault("__class__", types.CellType(cls))  # zero-argument super()
    cells[_WRITE_BACK] = types.CellType(_write_back)
    cells.update(copies.values())
    closure = tuple(cells[name] for name in compiled.co_freevars)
    new = types.FunctionType(
        compiled, function.__globals__, function.__name__, function.__defaults__, closure
    )
    new.__kwdefaults__ = dict(function.__kwdefaults__) if function.__kwdefaults__ else None
    new.__qualname__, new.__module__ = function.__qualname__, function.__module__
    new.__doc__ = function.__doc__
    new.__dict__.update(function.__dict__)
    with contextlib.suppress(Exception):  # 3.14 evaluates annotations lazily: may raise
        new.__annotations__ = dict(function.__annotations__)
    return new


def _reduce_ex(self: nn.Module, protocol: int) -> Any:
    """Pickle a rewritten module by its class's recipe, not by the class itself (which no
    module defines): unpickling builds the same rewrite again."""
    rewrite = applied_rewrite(self)
    if rewrite is None:  # a user's subclass of a rewritten class: pickled as usual
        return object.__reduce_ex__(self, protocol)
    reduced = rewrite.origin.__reduce_ex__(self, protocol)
    if (
        isinstance(reduced, tuple)
        and reduced[0] is copyreg.__newobj__
        and reduced[1] == (type(self),)
        and _CLASSES.get(rewrite) is type(self)
    ):
        return (_restore, (rewrite.origin, rewrite.targets, rewrite.attribute), *reduced[2:])
    return reduced


def _restore(origin: type, targets: frozenset, attribute: str) -> nn.Module:
    cls = rewritten_class(Rewrite(origin, targets, attribute))
    return cls.__new__(cls)


_CLASSES: dict[Rewrite, type] = {}


def rewritten_class(rewrite: Rewrite) -> type:
    """The subclass of ``rewrite.origin`` whose methods make the targeted calls through
    modules (one class per rewrite, so copies share it)."""
    if rewrite in _CLASSES:
        return _CLASSES[rewrite]
    origin, attribute = rewrite.origin, rewrite.attribute
    by_holder: dict[tuple[Any, str], dict[tuple, Target]] = {}
    for (holder, method, *span), target in rewrite.targets:
        by_holder.setdefault((holder, method), {})[tuple(span)] = target
    # The copies of plain functions: each call of one (in a method or another copy, itself
    # included) is redirected through a cell, filled once every copy is compiled.
    functions = [holder for holder, _ in by_holder if not isinstance(holder, type)]
    copies = {f: (_copy_name(i), types.CellType()) for i, f in enumerate(functions)}
    own: dict[str, Any] = {}
    bases: dict[type, dict[str, Any]] = {}
    for (holder, method), targets in by_holder.items():
        if not isinstance(holder, type):
            copies[holder][1].cell_contents = _rewrite_function(
                None, holder, targets, attribute, copies
            )
            continue
        function = _rewrite_function(holder, vars(holder)[method], targets, attribute, copies)
        (own if holder is origin else bases.setdefault(holder, {}))[method] = function
    mro = origin.__mro__
    placed = tuple(
        _subclass(cls, methods)
        for cls, methods in sorted(bases.items(), key=lambda item: mro.index(item[0]))
    )
    namespace = {**own, "_relulab_rewrite": rewrite, "__reduce_ex__": _reduce_ex}
    cls = _subclass(origin, namespace, placed)
    _CLASSES[rewrite] = cls
    return cls


def _subclass(cls: type, namespace: dict[str, Any], more_bases: tuple[type, ...] = ()) -> type:
    """A subclass that reads as ``cls``: same name, qualified name, module and docstring."""
    names = {"__qualname__": cls.__qualname__, "__module__": cls.__module__, "__doc__": cls.__doc__}
    try:
        return type(cls)(cls.__name__, (cls, *more_bases), {**namespace, **names})
    except TypeError as error:  # e.g. no consistent method resolution order
        raise RewriteError(f"no subclass of {cls.__qualname__} can be made: {error}") from None


def replace_calls(
    owner: nn.Module, replacements: list[tuple[ActivationSite, nn.Module]]
) -> list[str]:
    """Make ``owner``'s methods call the given modules instead of the sites' calls.

    ``owner`` keeps the calls a previous rewrite replaced. Returns each site's key in
    ``owner.relulab_sites`` (or the attribute chosen where the model already has one).
    Raises :class:`RewriteError`, with ``owner`` untouched, where its class cannot be
    given a subclass.
    """
    previous: Rewrite | None = applied_rewrite(owner)
    origin = previous.origin if previous else type(owner)
    attribute = previous.attribute if previous else _free_attribute(owner)
    targets = dict(previous.targets) if previous else {}
    used = {target.key for target in targets.values()}
    keys = []
    for site, _ in replacements:
        key = base = key_of(site.location, origin)
        n = 1
        while key in used:  # two bases of one name with a method of one name: a suffix
            n += 1
            key = f"{base}_v{n}"
        used.add(key)
        targets[site.location.site_id] = Target(key, site.inplace, site.location.method_form)
        for hop in site.location.route:  # every call that leads to the site's function
            targets[hop.site_id] = Target("", False, False, function=hop.callee)
        keys.append(key)
    cls = rewritten_class(Rewrite(origin, frozenset(targets.items()), attribute))
    try:
        owner.__class__ = cls
    except TypeError as error:  # __slots__ or a C layout
        raise RewriteError(f"{type(owner).__qualname__} cannot change class: {error}") from None
    holder = getattr(owner, attribute, None) if previous else None
    if holder is None:
        holder = nn.ModuleDict()
        setattr(owner, attribute, holder)
    for key, (_, module) in zip(keys, replacements):
        holder[key] = module
    return keys


def _free_attribute(owner: nn.Module) -> str:
    """``relulab_sites``, or ``relulab_sites_2``... where the model already uses the name."""
    name, n = SITES_ATTRIBUTE, 1
    while hasattr(owner, name):
        n += 1
        name = f"{SITES_ATTRIBUTE}_{n}"
    return name
