"""``relulab reduce``: cut a task's ReLU model to budgets with several methods; Pareto plot."""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path

from relulab.cli.output import check_png_output, format_table, print_json
from relulab.errors import UserError

DESCRIPTION = textwrap.fill(
    "Train a bench task's ReLU model as relulab bench --suite full does, then reduce its ReLUs "
    "to each budget with each method (DeepReDuce cull and thin, SNL and AutoReP masks), "
    "fine-tune every reduced model, and report its traced ReLU count, test accuracy, estimated "
    "private-inference communication and time. Budgets are ReLU counts or percentages of the "
    "full model's.",
    width=88,
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "reduce",
        help="fewer ReLUs for private inference: methods x budgets, with a Pareto plot",
        description=DESCRIPTION,
        epilog="examples:\n"
        "  relulab reduce --task mnist1d --budgets 10% 30% 50% -o pareto.png\n"
        "  relulab reduce --task digits --methods cull --budgets 128 --seeds 3 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", default="mnist1d", help="a bench task (default mnist1d)")
    parser.add_argument(
        "--methods", nargs="+", default=["cull", "snl", "autorep"], metavar="M",
        help="cull, thin (DeepReDuce), snl, autorep (default: cull snl autorep; thin differs "
        "from cull only when stages hold several layers, see --depth)",
    )  # fmt: skip
    parser.add_argument(
        "--budgets", nargs="+", default=["10%", "30%", "50%"], metavar="B",
        help="ReLU counts, or percentages of the full model's (default 10%% 30%% 50%%)",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 (default 1)")
    parser.add_argument(
        "--depth", type=int,
        help="DeepReDuce stages: ReLU layers sharing this many module-path parts "
        "(default: each layer is a stage)",
    )  # fmt: skip
    parser.add_argument(
        "--fine-tune-epochs", type=int, metavar="E",
        help="epochs of fine-tuning after a cut (default: half the full training's)",
    )  # fmt: skip
    parser.add_argument("-o", "--output", help="PNG of the Pareto plot (needs the plot extra)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(run=run)


def _budgets(given: list[str], total: int) -> list[int]:
    budgets = []
    for text in given:
        try:
            value = float(text[:-1]) * total / 100 if text.endswith("%") else int(text)
        except ValueError:
            raise UserError(f"--budgets {text!r}: give a ReLU count or a percentage") from None
        budget = int(value)
        if not 1 <= budget <= total:
            raise UserError(f"--budgets {text}: give 1 to {total:,} ReLUs (or a % of them)")
        budgets.append(budget)
    return sorted(set(budgets))


def run(args: argparse.Namespace) -> int:
    from torch import nn

    from relulab.bench.runner import BenchConfig, plan
    from relulab.bench.tasks import canonical_task_name, get_task
    from relulab.budget.count import count_relus
    from relulab.budget.reduce import METHODS, reduce, summarise

    for option in ("seeds", "depth", "fine_tune_epochs"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise UserError(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    for method in args.methods:
        if method not in METHODS:
            raise UserError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    if args.output:
        check_png_output(args.output)
    task = canonical_task_name(args.task)
    if task == "table":
        raise UserError(
            "--task: your own table is not available here; give spirals, digits, "
            "digits_cnn or mnist1d"
        )
    config = BenchConfig(tasks=[task], activations=["relu"], seeds=args.seeds, suite="full")
    specs = plan(config.resolved())
    data = get_task(task).data()
    probe = get_task(task).model(lambda width: nn.ReLU(), data)
    total = count_relus(probe, tuple(data.x_train.shape[1:])).total
    budgets = _budgets(args.budgets, total)
    start = time.perf_counter()

    def progress(line: str) -> None:
        print(f"  [{time.perf_counter() - start:5.0f} s] {line}", file=sys.stderr, flush=True)

    runs = []
    for spec in specs:
        progress(f"seed {spec.seed}")
        runs.append(
            reduce(spec, args.methods, budgets, args.depth, args.fine_tune_epochs, progress)
        )
    full, rows = summarise(runs)
    from relulab.bench.rundir import environment

    summary = {
        "command": "relulab reduce " + " ".join(sys.argv[2:])
        if sys.argv[1:2] == ["reduce"]
        else "",
        "task": task,
        "seeds": args.seeds,
        "methods": args.methods,
        "budgets": budgets,
        "epochs": specs[0].epochs,
        "fine_tune_epochs": args.fine_tune_epochs or max(1, specs[0].epochs // 2),
        "full": full,
        "rows": rows,
        **environment(),
    }
    if args.output:
        from relulab.plot.pareto import plot_pareto

        seeds = f"{args.seeds} seed" + ("s" if args.seeds > 1 else "")
        title = f"{task}: ReLU budget vs test accuracy ({seeds})"
        summary["plot"] = str(plot_pareto(full, rows, Path(args.output), title=title))
    if args.json:
        print_json(summary)
        return 0
    table = [["full model", f"{full['relus']:,}", "", _score(full), f"{full['bytes']:,.0f}", ""]]
    for row in rows:
        table.append(
            [row["method"], f"{row['relus']:,.0f}", f"{row['budget']:,}", _score(row),
             f"{row['bytes']:,.0f}", f"{row['seconds']:.1f}"]
        )  # fmt: skip
    print(
        format_table(
            ["method", "ReLUs", "budget", "test accuracy %", "est. bytes", "seconds"], table
        )
    )
    if args.output:
        print(f"plot: {summary['plot']}")
    return 0


def _score(row: dict) -> str:
    if row["seeds"] < 2:  # no spread to show from one seed
        return f"{100 * row['score']:.2f}"
    return f"{100 * row['score']:.2f} ± {100 * row['score_std']:.2f}"
