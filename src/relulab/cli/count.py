"""``relulab count``: the ReLU evaluations of a model on one input, per layer and in total,
the budget of private (encrypted) inference; max-pool comparisons apart."""

from __future__ import annotations

import argparse
import functools
import sys
import textwrap
from pathlib import Path
from typing import Any

from torch import nn

from relulab.cli.output import format_table, print_json
from relulab.errors import UserError

EXAMPLES = """examples:
  relulab count --model resnet18                      # CIFAR ResNet-18, 3x32x32: 557,056
  relulab count --model resnet18 --input-shape 3 64 64 --act relu6
  relulab count --task digits_cnn --json              # a bench task's model, ReLU
  relulab count --factory mynets.py:make_net --input-shape 3 32 32
  relulab count runs/<run> mnist1d-relu-s0            # a trial of relulab bench --save-models
"""
BUILT_IN = ("resnet18",)
DEFAULT_SHAPES = {"resnet18": (3, 32, 32)}
RULES = {
    "relu, leaky_relu, prelu, abs": "one ReLU evaluation (comparison) per output",
    "clamp (relu6, hardtanh, clamp/clip)": "one per bound per output: relu6 is 2",
    "max (max-pooling)": "k - 1 comparisons per output of a window of k inputs; apart",
    "max/min/clamp_min/clamp_max of a computed tensor and a constant": "one per output",
    "where(x > c, x, constant)": "one per output (kind relu)",
    "F.hardswish, F.hardsigmoid": "relu6 inside: 2 per output",
    "other": "not counted: listed so that what the budget leaves out is in sight",
    "warnings": "max or min of two computed tensors, comparisons feeding a product, where "
    "with a computed branch: may be ReLUs, so named (one line per module), not counted",
}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "count",
        help="ReLU evaluations per layer and in total on one input (the private-inference budget)",
        description=textwrap.fill(
            "Run the model once on one input, tracing every torch call (modules and functional "
            "calls alike), and count what private-inference papers count: one ReLU per output "
            "of relu, leaky_relu, prelu and abs, one per bound of relu6, hardtanh and clamp; "
            "max-pool comparisons (k - 1 per window of k) apart. Other input-dependent calls "
            "(softmax, GELU, ...) are listed, not counted. The model is a built-in one "
            "(--model), a bench task's (--task), a trial of a bench run, or your own "
            "(--factory, with --input-shape or --task for the shape of its inputs).",
            width=88,
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("run_dir", nargs="?", metavar="RUN", help="a run directory made with --save-models")
    add("trial", nargs="?", metavar="TRIAL", help="a trial of it, e.g. digits-relu-s0")
    add("--model", choices=BUILT_IN, help="a built-in model: resnet18 (CIFAR, kuangliu layout)")
    add("--task", help="a bench task's model (spirals, digits, digits_cnn, mnist1d)")
    add("--act", metavar="SPEC", help="the activation of --model or --task (default relu)")
    own = parser.add_argument_group("or your own model")
    own.add_argument(
        "--factory",
        metavar="MODULE:FUNCTION",
        help="builds the model, called with no arguments (file.py:make_net or package.mod:fn)",
    )
    own.add_argument("--checkpoint", metavar="PT", help="its state dict (optional)")
    add(
        "--input-shape",
        type=int,
        nargs="+",
        metavar="N",
        help="one input's shape without the batch, e.g. 3 32 32 (with --factory or --model)",
    )
    add("--json", action="store_true", help="print the counts as JSON")
    parser.set_defaults(run=run)


def _shape(args: argparse.Namespace, default: tuple[int, ...] | None) -> tuple[int, ...]:
    shape = tuple(args.input_shape) if args.input_shape else default
    if shape is None:
        raise UserError("--factory needs --input-shape (e.g. 3 32 32) or --task for its shape")
    if not all(n > 0 for n in shape):
        raise UserError(f"--input-shape must be positive sizes, got {' '.join(map(str, shape))}")
    return shape


def _activation(args: argparse.Namespace) -> Any:
    from relulab.bench.trainer import activation_for_width
    from relulab.registry import canonical_spec

    spec = canonical_spec(args.act or "relu")
    activation_for_width(spec, 8)  # an unknown name fails here, in one line
    return spec, functools.partial(activation_for_width, spec)


def _task_shape(name: str) -> tuple[Any, Any, tuple[int, ...]]:
    from relulab.bench.tasks import canonical_task_name, get_task

    if canonical_task_name(name) == "table":
        raise UserError(f"--task {name}: your own table runs under relulab bench --data only")
    task = get_task(name)
    data = task.data()
    return task, data, tuple(data.x_train.shape[1:])


def _own(args: argparse.Namespace) -> tuple[nn.Module, tuple[int, ...], str]:
    from relulab.cli.model_source import build_model, load_weights

    if args.act:
        raise UserError("--act is for --model and --task; your --factory makes its own")
    if args.task and args.input_shape:
        raise UserError("give --input-shape or --task for the shape of the inputs, not both")
    shape = _task_shape(args.task)[2] if args.task else _shape(args, None)
    model = build_model(args.factory)
    name = args.factory
    if args.checkpoint:
        path = Path(args.checkpoint)
        load_weights(model, path)
        name = f"{args.factory} ({path.name})"
    return model, shape, name


def load(args: argparse.Namespace) -> tuple[nn.Module, tuple[int, ...], str]:
    """The model the command line names, the shape of one input, and a name for it."""
    sources = [
        flag
        for flag, given in (
            ("RUN TRIAL", args.run_dir or args.trial),
            ("--model", args.model),
            ("--factory", args.factory),
            ("--task", args.task and not args.factory),  # with --factory: the inputs' shape
        )
        if given
    ]
    if len(sources) != 1:
        named = f" (got {' and '.join(sources)})" if sources else ""
        raise UserError(f"give one model: --model, --task, --factory or RUN TRIAL{named}")
    if args.checkpoint and not args.factory:
        raise UserError("--checkpoint needs --factory, which builds the model it fits")
    if args.factory:
        return _own(args)
    if args.model:
        if args.model not in BUILT_IN:
            from relulab.registry import did_you_mean

            hint = did_you_mean(args.model, list(BUILT_IN)) or f" (choose from {BUILT_IN})"
            raise UserError(f"unknown --model {args.model!r}{hint}")
        from relulab.budget.resnet import resnet18

        spec, activation = _activation(args)
        return (
            resnet18(activation=activation),
            _shape(args, DEFAULT_SHAPES[args.model]),
            (f"{args.model} ({spec})"),
        )
    if args.input_shape:
        raise UserError("--input-shape is for --model and --factory; a bench model's is fixed")
    if args.task:
        spec, activation = _activation(args)
        task, data, shape = _task_shape(args.task)
        return task.model(activation, data), shape, f"{task.name} ({spec})"
    if not args.trial:
        raise UserError(f"give one of the trials of {args.run_dir}{_trials_of(args.run_dir)}")
    if args.act:
        raise UserError("--act is for --model and --task; a trial has its own activation")
    from relulab.bench.runner import load_model, trial_spec

    spec = trial_spec(args.run_dir, args.trial)
    shape = tuple(spec.task.data().x_train.shape[1:])
    return load_model(args.run_dir, spec), shape, args.trial


def _trials_of(run_dir: str, shown: int = 5) -> str:
    """``": a, b, c, ..."``: the first trials of a run whose models were saved."""
    from relulab.bench import rundir
    from relulab.bench.runner import BenchConfig, plan

    run = Path(run_dir)
    config = BenchConfig.from_dict(rundir.read_config(run)["config"])
    saved = [
        spec.trial_id
        for spec in plan(config)
        if (rundir.trial_directory(run, spec.trial_id) / rundir.MODEL).is_file()
    ]
    if not saved:
        return " (it has no saved models: make the run with relulab bench --save-models)"
    return ": " + ", ".join(saved[:shown]) + (", ..." if len(saved) > shown else "")


def _where(module: str) -> str:
    """A site's module part as the table shows it: the model's own calls (``"model
    (CNN)"``) are made by its forward, ``"CNN.forward"``."""
    if module.startswith("model (") and module.endswith(")"):
        return f"{module[len('model (') : -1]}.forward"
    return module


def _right(rows: list[list[str]], headers: list[str], columns: tuple[int, ...]) -> None:
    """Right-align the number columns in place (format_table pads cells on the right)."""
    for column in columns:
        width = max(len(headers[column]), *(len(row[column]) for row in rows))
        for row in rows:
            row[column] = row[column].rjust(width)


def _table(result: Any) -> str:
    total = result.total
    layers = sorted(result.relus + result.max_pools, key=lambda layer: layer.index)
    # a call's number among the same calls of its module, where there are several
    calls = [layer.name for layer in layers]
    seen: dict[str, int] = {}
    rows = []
    for layer in layers:
        module, _, call = layer.name.partition(": ")
        seen[layer.name] = seen.get(layer.name, 0) + 1
        if calls.count(layer.name) > 1:
            call = f"{call} #{seen[layer.name]}"
        share = f"{100 * layer.count / total:.1f}%" if layer.kind != "max" else "apart"
        rows.append(
            [
                str(layer.index),
                _where(module),
                call,
                layer.kind,
                f"{layer.units:,}",
                f"{layer.count:,}",
                share,
            ]
        )
    headers = ["#", "layer", "call", "kind", "outputs", "count", "percent"]
    _right(rows, headers, (0, 4, 5, 6))
    return format_table(headers, rows)


def run(args: argparse.Namespace) -> int:
    from relulab.budget.count import count_relus

    model, shape, name = load(args)
    result = count_relus(model, shape)
    for warning in result.warnings:  # one line per module, on stderr (also in the JSON)
        print(f"relulab count: warning: {warning}", file=sys.stderr)
    if args.json:
        print_json({"model": name, **result.to_dict(), "rules": RULES})
        return 0
    shown = "x".join(map(str, shape))
    print(f"{name}, one input of shape {shown}")
    if result.relus or result.max_pools:
        print(_table(result))
    kinds = ", ".join(f"{kind} {count:,}" for kind, count in result.by_kind.items())
    print(f"total: {result.total:,} ReLU evaluations" + (f" ({kinds})" if kinds else ""))
    if result.max_pools:
        print(f"max-pool comparisons: {result.max_pool_comparisons:,} (apart from the total)")
    plain = [layer for layer in result.uncounted if not layer.hidden]  # the rest: warnings
    if plain:  # by call, in order of first use; --json lists each
        calls: dict[str, list[int]] = {}
        for layer in plain:
            seen = calls.setdefault(layer.name.partition(": ")[2], [0, 0])
            seen[0] += 1
            seen[1] += layer.units
        listed = "; ".join(
            f"{call} ({times} call{'s' * (times > 1)}, {units:,} outputs)"
            for call, (times, units) in calls.items()
        )
        print(f"not counted (not ReLU-like): {listed}")
    return 0
