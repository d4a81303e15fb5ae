"""Where a geometry command's model and data come from: a bench run, or your own checkpoint.

``relulab regions RUN TRIAL`` (likewise ``codes`` and ``overconfidence``) takes a trial of a
run made with ``relulab bench --save-models``; ``--checkpoint model.pt --factory
mymodels.py:make_net --task digits`` takes a state dict of your own, the function that builds
its model (called with no arguments) and the bench task whose data it was trained on. Weights
are loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from relulab.bench.tasks import TaskData, canonical_task_name, get_task
from relulab.errors import UserError


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


def _factory(reference: str):
    where, _, name = reference.rpartition(":")
    if not where or not name:
        raise UserError(f"--factory {reference!r}: give it as file.py:function or module:function")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise UserError(f"--factory {reference!r}: no file {where}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.parent.resolve()))  # so the file can import its neighbours
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.pop(0)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as error:
            raise UserError(f"--factory {reference!r}: cannot import {where}: {error}") from error
    function = getattr(module, name, None)
    if not callable(function):
        raise UserError(f"--factory {reference!r}: {where} has no function {name!r}")
    return function


def _own_model(args: argparse.Namespace) -> ModelSource:
    missing = [f"--{k}" for k in ("checkpoint", "factory", "task") if not getattr(args, k)]
    if missing:
        raise UserError(f"with your own model, give {' and '.join(missing)} as well")
    model = _factory(args.factory)()
    if not isinstance(model, nn.Module):
        raise UserError(f"--factory {args.factory} returned {type(model).__name__}, not a model")
    path = Path(args.checkpoint)
    if not path.is_file():
        raise UserError(f"--checkpoint {path}: no such file")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # a pickle that is not plain tensors, or not a torch file
        raise UserError(f"--checkpoint {path}: not a torch state dict ({error})") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # the common {"state_dict": ..., "epoch": ...} layout
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        first = str(error).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        message = f"--checkpoint {path} does not fit the factory's model: {detail}"
        raise UserError(message) from error
    if canonical_task_name(args.task) == "table":
        raise UserError(f"--task {args.task}: your own table is not available here; use a run")
    return ModelSource(model.eval(), get_task(args.task).data(), path.stem)


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
