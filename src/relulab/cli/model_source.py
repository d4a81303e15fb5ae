"""Where a geometry command's model and data come from: a bench run, or your own checkpoint.

``relulab regions RUN TRIAL`` (likewise ``codes`` and ``overconfidence``) takes a trial of a
run made with ``relulab bench --save-models``; ``--checkpoint model.pt --factory
mymodels.py:make_net --task digits`` takes a state dict of your own, the function that builds
its model (called with no arguments) and the bench task whose data it was trained on. Weights
are loaded with ``torch.load(weights_only=True)``, and the model is run once on one of the
task's training examples, so that a model made for other data fails at once, in one line.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pickle
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from relulab.bench.tasks import TaskData, canonical_task_name, get_task
from relulab.errors import UserError
from relulab.registry import did_you_mean


@dataclass
class ModelSource:
    """A model in eval mode, the data it was trained on, and a name for titles and files."""

    model: nn.Module
    data: TaskData
    name: str


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir", nargs="?", metavar="RUN", help="a run directory made with --save-models"
    )
    parser.add_argument(
        "trial", nargs="?", metavar="TRIAL", help="a trial of it, e.g. digits-relu-s0"
    )
    own = parser.add_argument_group("or your own model")
    own.add_argument("--checkpoint", metavar="PT", help="a state dict saved with torch.save")
    own.add_argument(
        "--factory",
        metavar="MODULE:FUNCTION",
        help="builds the model, called with no arguments (file.py:make_net or package.mod:fn)",
    )
    own.add_argument("--task", help="the bench task whose data the model was trained on")


# torch's messages carry terminal colours (bold "do those steps only if you trust ...")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# what torch's weights-only unpickler names when a file holds more than tensors and containers
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def _first_line(error: BaseException) -> str:
    """The first line of an error's message, without terminal colours."""
    lines = _ANSI.sub("", str(error)).strip().splitlines()
    return lines[0].strip() if lines else ""


def _described(error: BaseException) -> str:
    """``Type: first line``, for errors whose type says what went wrong (SyntaxError, ...)."""
    line = _first_line(error)
    return f"{type(error).__name__}: {line}" if line else type(error).__name__


def _load_module(reference: str, where: str) -> ModuleType:
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise UserError(f"--factory {reference}: no file {where}")
        # registered while it runs, as an import would, since a dataclass looks its module up
        # there; under another name where the stem is taken (a file named torch.py); and only
        # while it runs, so that loading leaves the process's modules as they were
        name = path.stem if path.stem not in sys.modules else f"_relulab_factory_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.parent.resolve()))  # so the file can import its neighbours
        try:
            spec.loader.exec_module(module)
        except Exception as error:  # the user's file ran and failed: their bug, not relulab's
            message = f"--factory {reference}: cannot load {where}: {_described(error)}"
            raise UserError(message) from error
        finally:
            sys.path.pop(0)
            del sys.modules[name]
        return module
    try:
        return importlib.import_module(where)
    except Exception as error:  # not found, or the user's module failed while importing
        message = f"--factory {reference}: cannot import {where}: {_described(error)}"
        # a module name is looked up on sys.path, which holds relulab's script's folder, not
        # the working directory: the file the user meant is right there
        file = Path(*where.split(".")).with_suffix(".py")
        if isinstance(error, ModuleNotFoundError) and file.is_file():
            message += f"; did you mean {file}:{reference.rpartition(':')[2]}?"
        raise UserError(message) from error


def _factory(reference: str) -> Callable[[], object]:
    where, _, name = reference.rpartition(":")
    if not where or not name:
        raise UserError(f"--factory {reference!r}: give it as file.py:function or module:function")
    module = _load_module(reference, where)
    if not hasattr(module, name):
        public = [k for k, v in vars(module).items() if not k.startswith("_") and callable(v)]
        hint = did_you_mean(name, public)
        raise UserError(f"--factory {reference}: {where} has no function {name!r}{hint}")
    function = getattr(module, name)
    if not callable(function):
        kind = type(function).__name__
        what = "None" if function is None else f"{'an' if kind[0] in 'aeiouAEIOU' else 'a'} {kind}"
        raise UserError(f"--factory {reference}: {name} is {what}, not a function")
    return function


def build_model(reference: str) -> nn.Module:
    """Call the factory; what goes wrong inside it is the user's to fix, so one line says what."""
    function = _factory(reference)
    try:
        model = function()
    except Exception as error:  # includes TypeError from a factory that wants arguments
        raise UserError(f"--factory {reference} raised {_described(error)}") from error
    if not isinstance(model, nn.Module):
        raise UserError(f"--factory {reference} returned {type(model).__name__}, not a model")
    return model


def load_state_file(path: Path, option: str = "--checkpoint") -> dict:
    """A state dict from a file, loaded with weights_only=True; any problem is one line,
    naming the file as ``option`` gave it (no option: the file alone)."""
    named = f"{option} {path}" if option else str(path)
    if not path.is_file():
        raise UserError(f"{named}: no such file")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        # torch's text advises weights_only=False, which would run the file's code: never pass
        # it on; say what the file holds and how to save one that loads safely
        found = _UNSAFE_GLOBAL.search(_ANSI.sub("", str(error)))
        if found is None:
            raise UserError(f"{named} is not a torch file") from error
        raise UserError(
            f"{named} holds a pickled object, not a state dict "
            f"(it holds {found.group(1)}); save model.state_dict() instead"
        ) from error
    except Exception as error:  # not a zip archive nor a pickle: torch's error says little more
        detail = f" ({_described(error)})" if isinstance(error, RuntimeError) else ""
        raise UserError(f"{named} is not a torch file{detail}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # the common {"state_dict": ..., "epoch": ...} layout
    if not isinstance(state, dict):
        raise UserError(f"{named} holds a {type(state).__name__}, not a state dict")
    return state


def _mismatch(model: nn.Module, state: dict) -> str | None:
    """The first way ``state`` does not fit ``model`` (a missing or unexpected key, a size
    mismatch), with how many more there are; None if its keys and shapes fit."""
    expected = model.state_dict()
    missing = [f"missing key {key!r}" for key in expected if key not in state]
    unexpected = [f"unexpected key {key!r}" for key in state if key not in expected]
    sizes = []
    for key, value in state.items():
        want = expected.get(key)
        shape = getattr(value, "shape", None)
        if want is not None and shape is not None and tuple(shape) != tuple(want.shape):
            sizes.append(
                f"size mismatch for {key!r}: {tuple(shape)} in the file, "
                f"{tuple(want.shape)} in the model"
            )
    # the first of each kind: a missing '0.weight' with an unexpected 'weight' tells the cause
    shown = [kind[0] for kind in (missing, unexpected, sizes) if kind]
    if not shown:
        return None
    more = len(missing) + len(unexpected) + len(sizes) - len(shown)
    return ", ".join(shown) + (f" (and {more} more)" if more else "")


def load_weights(model: nn.Module, path: Path) -> None:
    """Load the state dict in ``path`` into ``model``; a file that does not fit it is one
    line naming the first missing or unexpected key or size mismatch (torch's own message
    lists them on later lines, after a header that says nothing)."""
    state = load_state_file(path)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        detail = _mismatch(model, state) or _first_line(error) or type(error).__name__
        message = f"--checkpoint {path} does not fit the factory's model: {detail}"
        raise UserError(message) from error


def _check_fits_task(model: nn.Module, data: TaskData, factory: str, task: str) -> None:
    """Run the model on one training example so that a model meant for another task's data
    fails here, in one line, rather than deep inside a geometry command."""
    example = data.x_train[:1]
    dtypes = [p.dtype for p in model.parameters() if p.is_floating_point()]
    if dtypes:  # a float64 model is fine: the geometry commands run in float64
        example = example.to(dtypes[0])
    try:
        with torch.no_grad():
            output = model(example)
    except Exception as error:
        raise UserError(
            f"the model from --factory {factory} does not accept --task {task} inputs of "
            f"shape {tuple(example.shape[1:])}: {_first_line(error) or type(error).__name__}"
        ) from error
    want = f"{(1, data.classes)} logits for the {data.classes} classes of --task {task}"
    if not isinstance(output, torch.Tensor):
        got = type(output).__name__
        raise UserError(f"the model from --factory {factory} returns a {got}; it needs {want}")
    if tuple(output.shape) != (1, data.classes):
        raise UserError(
            f"the model from --factory {factory} gives outputs of shape {tuple(output.shape)} "
            f"for one example; it needs {want}"
        )


def _own_model(args: argparse.Namespace) -> ModelSource:
    missing = [f"--{k}" for k in ("checkpoint", "factory", "task") if not getattr(args, k)]
    if missing:
        raise UserError(f"with your own model, give {' and '.join(missing)} as well")
    if canonical_task_name(args.task) == "table":
        raise UserError(f"--task {args.task}: your own table is not available here; use a run")
    model = build_model(args.factory)
    path = Path(args.checkpoint)
    load_weights(model, path)
    model.eval()
    data = get_task(args.task).data()
    _check_fits_task(model, data, args.factory, args.task)
    return ModelSource(model, data, path.stem)


def load_model_source(args: argparse.Namespace) -> ModelSource:
    """The model and data that the command line names (see the module's docstring)."""
    own = args.checkpoint or args.factory or args.task
    if own and (args.run_dir or args.trial):
        raise UserError("give either RUN TRIAL or --checkpoint/--factory/--task, not both")
    if own:
        return _own_model(args)
    if not (args.run_dir and args.trial):
        raise UserError(
            "give a run directory and one of its trials (from relulab bench --save-models), "
            "or --checkpoint, --factory and --task"
        )
    from relulab.bench.runner import load_model, trial_spec

    spec = trial_spec(args.run_dir, args.trial)
    return ModelSource(load_model(args.run_dir, spec), spec.task.data(), args.trial)
