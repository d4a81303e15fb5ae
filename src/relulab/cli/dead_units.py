"""``relulab dead-units``: dead units and sparsity per layer, epoch by epoch, while a bench
task's model trains with each activation (AP's dynamic dead-neuron rate)."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import textwrap
from typing import TYPE_CHECKING, Any

from relulab.cli.output import check_png_output, format_table, print_json
from relulab.errors import UserError

if TYPE_CHECKING:
    from relulab.geometry.dead_units import TrackedTrial

EXAMPLES = """examples:
  relulab dead-units                                   # digits: relu leaky_relu gelu, 20 epochs
  relulab dead-units --task spirals --acts relu relu6 gelu --epochs 30 -o dead.png
  relulab dead-units --learning-rate 1e-3 1e-2 --json  # the default step and 10x: who dies?
"""
DEFAULT_ACTIVATIONS = ("relu", "leaky_relu", "gelu")
TABLE_TASK = "table"  # the user's csv/npz, which needs --data: relulab bench only


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "dead-units",
        help="dead units and sparsity per layer over training, per activation",
        description=textwrap.fill(
            "Train a bench task's model with each activation by the bench's recipe "
            "(same initial weights, data order and schedule per seed) and measure, per activation "
            "layer, the fraction of dead units (derivative 0 on every training example) and the "
            "sparsity (outputs exactly 0), before training and after every epoch. Activations "
            "with no flat region cannot have dead units: n/a.",
            width=88,
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--task", default="digits", help="spirals, digits, digits_cnn, mnist1d (default digits)")
    add("--acts", nargs="+", metavar="SPEC", help=f"default: {' '.join(DEFAULT_ACTIVATIONS)}")
    add("--epochs", type=int, help="default: the task's quick suite")
    add("--seed", type=int, default=0, help="initial weights and data order (default 0)")
    add(
        "--learning-rate",
        "--lr",
        type=float,
        nargs="+",
        metavar="LR",
        help="Adam's learning rate; several: each activation at each (default: the task's)",
    )
    add("-o", "--output", metavar="PNG", help="plot of dead fraction and sparsity vs epoch")
    add("--json", action="store_true", help="print every epoch's numbers as JSON")
    add("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(run=run)  # fmt: skip


def _specs(args: argparse.Namespace) -> list:
    """Every (activation, learning rate) trial, checked before any training starts."""
    from relulab.bench.tasks import canonical_task_name, get_task
    from relulab.bench.trainer import TrialSpec, activation_for_width
    from relulab.registry import canonical_spec

    name = canonical_task_name(args.task)
    if name == TABLE_TASK:
        raise UserError(f"--task {args.task}: your own table runs under relulab bench --data only")
    task = get_task(name)
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {args.epochs}")
    rates = args.learning_rate or [task.learning_rate]
    for rate in rates:
        if not (math.isfinite(rate) and rate > 0):
            raise UserError(f"--learning-rate must be a finite number > 0, got {rate:g}")
    activations = list(dict.fromkeys(canonical_spec(a) for a in args.acts or DEFAULT_ACTIVATIONS))
    for activation in activations:
        activation_for_width(activation, 8)  # a bad argument fails now, not after training
    epochs = args.epochs or task.epochs["quick"]
    return [
        TrialSpec(task, activation, args.seed, epochs, task.batch_size, rate)
        for activation in activations
        for rate in rates
    ]


def _record(tracked: TrackedTrial) -> dict[str, Any]:
    spec = tracked.spec
    return {
        "activation": spec.activation,
        "learning_rate": spec.learning_rate,
        "schedule": str(spec.task.schedule(spec.epochs, spec.batch_size, spec.learning_rate)),
        "status": "ok" if tracked.diverged_at is None else "diverged",
        "diverged_at_epoch": tracked.diverged_at,
        "test_score": tracked.scores[-1],
        "test_scores": tracked.scores,  # [0]: before training
        **tracked.history.to_dict(),
    }


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _table(records: list[dict[str, Any]], epochs: int, metric: str) -> str:
    shown = list(dict.fromkeys((0, epochs // 2, epochs)))
    headers = [
        "activation",
        "lr",
        "layer",
        *(f"dead e{e}" for e in shown),
        "sparsity e0",
        f"sparsity e{epochs}",
        f"test {metric}",
    ]
    rows = []
    for record in records:
        dead, sparsity = record["dead_fraction"], record["sparsity"]
        diverged = f" (diverged in e{record['diverged_at_epoch']})" * (record["status"] != "ok")

        def at(table: list, epoch: int, column: int) -> str:
            return _percent(table[epoch][column]) if epoch < len(table) else "-"

        for column, layer in enumerate(record["layers"]):
            rows.append(
                [
                    record["activation"],
                    f"{record['learning_rate']:g}",
                    layer,
                    *(at(dead, e, column) for e in shown),
                    at(sparsity, 0, column),
                    at(sparsity, epochs, column),
                    f"{100 * record['test_score']:.1f}%" + diverged,
                ]
            )
    return format_table(headers, rows)


def _command(args: argparse.Namespace, specs: list) -> str:
    """The command line that remakes this output, every default written out."""
    spec = specs[0]
    words = ["relulab", "dead-units", "--task", spec.task.name, "--acts"]
    words += list(dict.fromkeys(s.activation for s in specs))
    words += ["--epochs", str(spec.epochs), "--seed", str(spec.seed), "--learning-rate"]
    words += [repr(r) for r in dict.fromkeys(s.learning_rate for s in specs)]
    words += ["-o", args.output] if args.output else []
    words += ["--json"] if args.json else []
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    from relulab.geometry.dead_units import track_trial

    specs = _specs(args)
    if args.output:
        check_png_output(args.output)  # now, not after the training
    task, epochs = specs[0].task, specs[0].epochs
    # Each epoch redraws one line on a terminal; a log (not a TTY) gets a line per run only.
    live = not args.quiet and sys.stderr.isatty()
    records = []
    for number, spec in enumerate(specs, 1):
        label = f"[{number}/{len(specs)}] {task.name} {spec.activation} lr {spec.learning_rate:g}"

        def progress(message: str, label: str = label) -> None:
            if live:
                print(f"\r{label}: {message}".ljust(72), end="", file=sys.stderr, flush=True)

        tracked = track_trial(spec, progress)
        records.append(_record(tracked))
        if not args.quiet:
            status = f"diverged at epoch {tracked.diverged_at}" if tracked.diverged_at else "done"
            line = f"{label}: {status}, test {task.metric} {_percent(tracked.scores[-1])}"
            print(("\r" if live else "") + line.ljust(72 if live else 0), file=sys.stderr)
    config = {
        "task": task.name,
        "task_description": task.description,
        "activations": list(dict.fromkeys(s.activation for s in specs)),
        "learning_rates": list(dict.fromkeys(s.learning_rate for s in specs)),
        "epochs": epochs,
        "seed": specs[0].seed,
        "measured_on": "the training set, after each epoch (epoch 0: before training)",
        "command": _command(args, specs),
    }
    result: dict[str, Any] = {"config": config, "runs": records}
    if args.output:
        from relulab.plot.dead_units import plot_dead_units

        title = f"{task.name}: dead units and sparsity over training (seed {specs[0].seed})"
        result["plot"] = str(plot_dead_units(records, args.output, title=title))
    if args.json:
        print_json(result)
    else:
        print(_table(records, epochs, task.metric))
        if "plot" in result:
            print(f"plot: {result['plot']}")
    return 0
