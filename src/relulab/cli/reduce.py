"""``relulab reduce``: cut a task's ReLU model to budgets with several methods; Pareto plot."""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from relulab.cli.output import format_table, print_json, progress_printer, resume_config
from relulab.errors import UserError

DESCRIPTION = textwrap.fill(
    "Train a bench task's ReLU model as relulab bench --suite full does (or take it from a "
    "bench run made with --save-models), then reduce its ReLUs to each budget with each "
    "method (DeepReDuce cull and thin, SNL and AutoReP masks), fine-tune every reduced model, "
    "and report its traced ReLU count, test accuracy, estimated private-inference latency and "
    "traffic of its nonlinear layers, and time taken. Budgets are ReLU counts or percentages "
    "of the full model's. Everything goes in a run directory (config.json, one folder per "
    "seed with each finished step, summary.json, table.md, pareto.png); --resume DIR "
    "finishes an interrupted run.",
    width=88,
)
DEFAULTS: dict[str, Any] = {
    "task": "mnist1d",
    "methods": ["cull", "snl", "autorep"],
    "budgets": ["10%", "30%", "50%"],
    "seeds": 1,
    "depth": None,
    "fine_tune_epochs": None,
    "from_run": None,
    "distill": False,
}
# budgets may be written -5 or -5%: read as values (and refused with the valid range), not
# as unknown options; argparse's own matcher knows only plain negative numbers
_NEGATIVE_BUDGET = re.compile(r"^-\d*\.?\d+%?$")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "reduce",
        help="fewer ReLUs for private inference: methods x budgets, with a Pareto plot",
        description=DESCRIPTION,
        epilog="examples:\n"
        "  relulab reduce --task mnist1d --budgets 10% 30% 50%\n"
        "  relulab reduce --task digits --methods cull --budgets 128 --seeds 3 --json\n"
        "  relulab reduce --from runs/20261128T120000Z-bench --task digits\n"
        "  relulab reduce --resume runs/20261128T130000Z-reduce-mnist1d",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser._negative_number_matcher = _NEGATIVE_BUDGET
    parser.add_argument("--task", help="a bench task (default mnist1d)")
    parser.add_argument(
        "--methods", nargs="+", metavar="M",
        help="cull, thin (DeepReDuce), snl, autorep (default: cull snl autorep; thin differs "
        "from cull only when stages hold several layers, see --depth)",
    )  # fmt: skip
    parser.add_argument(
        "--budgets", nargs="+", metavar="B",
        help="ReLU counts, or percentages of the full model's (default 10%% 30%% 50%%)",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 (default 1)")
    parser.add_argument(
        "--depth", type=int,
        help="DeepReDuce stages: ReLU layers whose module paths agree in their first N parts "
        "form one stage (smaller N, coarser stages; default: each layer is a stage)",
    )  # fmt: skip
    parser.add_argument(
        "--fine-tune-epochs", type=int, metavar="E",
        help="epochs of fine-tuning after a cut (default: half the full training's)",
    )  # fmt: skip
    parser.add_argument(
        "--from", dest="from_run", metavar="RUN",
        help="take the full models from this bench run (made with --save-models; its trials "
        "TASK-relu-s0 .. s<seeds-1>) instead of training them",
    )  # fmt: skip
    parser.add_argument(
        "--distill", action="store_true", default=None,
        help="fine-tune every reduced model by distillation from the full model (T=4, "
        "weight 0.9), as DeepReDuce and SNL do",
    )  # fmt: skip
    parser.add_argument("--out", help="parent directory of new runs (default runs)")
    parser.add_argument("--name", help="run name, appended to the timestamp (default reduce-TASK)")
    parser.add_argument(
        "--resume", metavar="DIR",
        help="finish an interrupted run with the settings in its config.json",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
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


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings: the command line's over the defaults, or a resumed run's own."""

    given = {key: getattr(args, key) for key in DEFAULTS if getattr(args, key) is not None}
    if "methods" in given:  # a method named twice would be counted as another seed of it
        given["methods"] = list(dict.fromkeys(given["methods"]))
    if args.resume is None:
        return {**DEFAULTS, **given}
    options = [f"--{key.replace('_', '-')}" for key in given]
    options = [o if o != "--from-run" else "--from" for o in options]
    options += [o for o, v in (("--out", args.out), ("--name", args.name)) if v]
    _, config = resume_config(args.resume, "reduce", options)
    return config["settings"]


def _check(settings: dict[str, Any]) -> None:
    from relulab.budget.reduce import METHODS

    for option in ("seeds", "depth", "fine_tune_epochs"):
        value = settings[option]
        if value is not None and value < 1:
            raise UserError(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    for method in settings["methods"]:
        if method not in METHODS:
            from relulab.registry import did_you_mean

            hint = did_you_mean(method, list(METHODS)) or f" (choose from {', '.join(METHODS)})"
            raise UserError(f"unknown method {method!r}{hint}")


def _specs_and_models(settings: dict[str, Any]) -> tuple[list, list]:
    """Per seed, the trial spec and the trained full model (None: to be trained here)."""
    from relulab.bench.runner import BenchConfig, load_model, plan, trial_spec
    from relulab.bench.tasks import canonical_task_name

    task = canonical_task_name(settings["task"])
    if task == "table":
        raise UserError(
            "--task: your own table is not available here; give spirals, digits, "
            "digits_cnn or mnist1d"
        )
    if settings["from_run"] is None:
        config = BenchConfig(
            tasks=[task], activations=["relu"], seeds=settings["seeds"], suite="full"
        )
        specs = plan(config.resolved())
        return specs, [None] * len(specs)
    run = settings["from_run"]
    specs = [trial_spec(run, f"{task}-relu-s{seed}") for seed in range(settings["seeds"])]
    return specs, [load_model(run, spec) for spec in specs]


def run(args: argparse.Namespace) -> int:
    from torch import nn

    from relulab.bench import rundir
    from relulab.budget.count import count_relus
    from relulab.budget.reduce import reduce, summarise
    from relulab.optional import require

    require("matplotlib", extra="plot", purpose="relulab reduce's Pareto plot")
    settings = _settings(args)
    _check(settings)
    specs, models = _specs_and_models(settings)
    task = specs[0].task
    data = task.data()
    input_shape = tuple(data.x_train.shape[1:])
    total = count_relus(task.model(lambda width: nn.ReLU(), data), input_shape).total
    budgets = _budgets([str(b) for b in settings["budgets"]], total)
    fine_tune_epochs = settings["fine_tune_epochs"] or max(1, specs[0].epochs // 2)
    if args.resume is None:
        run_dir = rundir.new_run_directory(
            Path(args.out or "runs"), args.name or f"reduce-{task.name}"
        )
        rundir.write_json_atomic(
            run_dir / rundir.CONFIG,
            {"command": "reduce", "settings": settings, **rundir.environment()},
        )
    else:
        run_dir = Path(args.resume)
        rundir.record_resume(run_dir, rundir.read_config(run_dir))
    progress = progress_printer()

    print(f"run: {run_dir}", file=sys.stderr, flush=True)
    try:
        runs = []
        with rundir.exclusive(run_dir):
            rundir.remove_leftovers(run_dir)
            for spec, model in zip(specs, models, strict=True):
                progress(f"seed {spec.seed}")
                runs.append(
                    reduce(
                        spec, settings["methods"], budgets, settings["depth"], fine_tune_epochs,
                        progress, full=model, directory=run_dir / f"seed-{spec.seed}",
                        distill=settings["distill"],
                    )
                )  # fmt: skip
            full, rows = summarise(runs)
            title = _title(task.name, len(specs))
            summary = {
                "task": task.name,
                "seeds": len(specs),
                "methods": settings["methods"],
                "budgets": budgets,
                "budgets_given": [str(b) for b in settings["budgets"]],
                "full_relus": total,
                "epochs": specs[0].epochs,
                "fine_tune_epochs": fine_tune_epochs,
                "full_model_from": settings["from_run"] or "trained here",
                "distill": settings["distill"],
                "cost_basis": "cost_model of the nonlinear layers (ReLUs, AutoReP's products, "
                "max-pools) with CrypTen's per-operation costs measured here and a 3 ms round "
                "trip (loopback); linear layers left out",
                "full": full,
                "rows": rows,
                **rundir.environment(),
            }
            rundir.write_json_atomic(run_dir / "summary.json", summary)
            headers, table = _table(full, rows, total)
            source = (
                f"trained here ({specs[0].epochs} epochs, the bench's full suite)"
                if settings["from_run"] is None
                else f"from the bench run {settings['from_run']} ({specs[0].epochs} epochs)"
            )
            notes = _notes(source, fine_tune_epochs, settings["distill"])
            rundir.write_text_atomic(run_dir / "table.md", _markdown(title, headers, table, notes))
            from relulab.plot.pareto import plot_pareto

            plot = plot_pareto(full, rows, run_dir / "pareto.png", title=title)
        if args.json:
            print_json(summary)
            return 0
        print(format_table(headers, table))
        print(f"\nfull model: {source}")
        print(f"table: {run_dir / 'table.md'}\nplot: {plot}")
        return 0
    except KeyboardInterrupt:
        print(f"to finish it: relulab reduce --resume {run_dir}", file=sys.stderr)
        raise


def _title(task: str, seeds: int) -> str:
    return f"{task}: ReLU budget vs test accuracy ({seeds} seed{'s' if seeds > 1 else ''})"


def _table(full: dict, rows: list[dict], total: int) -> tuple[list[str], list[list[str]]]:
    headers = [
        "method", "budget", "ReLUs", "test accuracy %", "est. latency ms", "est. kB", "rounds",
        "seconds",
    ]  # fmt: skip

    def cells(row: dict) -> list[str]:
        relus = row["relus"]
        return [
            f"{relus:,}" if isinstance(relus, int) else f"{relus:,.1f}",
            _score(row),
            f"{1e3 * row['latency_s']:.1f}",
            f"{row['bytes'] / 1e3:,.1f}",
            f"{row['rounds']}",
            f"{row['seconds']:.1f}",
        ]

    table = [["full model", "", *cells(full)]]
    table += [
        [row["method"], f"{row['budget']:,} ({100 * row['budget'] / total:.0f}%)", *cells(row)]
        for row in rows
    ]
    return headers, table


def _notes(source: str, fine_tune_epochs: int, distill: bool) -> list[str]:
    how = "by distillation from the full model" if distill else "with the bench's recipe"
    return [
        f"Full model: {source}. Every reduced model fine-tuned {fine_tune_epochs} epochs {how}.",
        "ReLUs: traced evaluations per input (mean over seeds); cull and thin keep whole "
        "stages, the most critical that fit, so they can fall far below the budget (0 when "
        "no stage fits). Test accuracy: mean ± sample standard deviation over seeds.",
        "Latency, traffic (kB) and rounds: estimated online cost of the nonlinear layers in "
        "2-party CrypTen inference (relulab.budget.reduce.nonlinear_cost: per-operation "
        "costs measured with CrypTen here, 3 ms per round on loopback; linear layers left "
        "out). Rounds dominate: each layer that keeps any ReLU costs 9 rounds, each layer of "
        "AutoReP's polynomials 1 more, so masks that thin every layer save traffic, not "
        "latency, and AutoReP can exceed the full model; only removing whole layers (cull) "
        "cuts latency.",
        "Seconds: the method's time per seed, fine-tuning included (for cull and thin, not "
        "the ranking of the stages: criticality_seconds under full in summary.json).",
    ]


def _markdown(title: str, headers: list[str], table: list[list[str]], notes: list[str]) -> str:
    lines = [f"# {title}", "", "| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in table]
    for note in notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def _score(row: dict) -> str:
    if row["seeds"] < 2:  # no spread to show from one seed
        return f"{100 * row['test_score']:.2f}"
    return f"{100 * row['test_score']:.2f} ± {100 * row['test_score_std']:.2f}"
