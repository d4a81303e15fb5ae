"""``relulab bench``: compare activations across tasks and seeds; ``relulab report DIR``."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from relulab.cli.output import format_table, print_json
from relulab.errors import UserError

EXAMPLES = """examples:
  relulab bench                                  # 3 tasks x 8 activations x 3 seeds
  relulab bench --tasks digits --acts relu gelu 'leaky_relu(0.2)' --seeds 5
  relulab bench --suite full --workers 2         # 10 seeds, longer training
  relulab bench --data iris.csv --target species # your own table (the task csv)
  relulab bench --tasks spirals csv --data iris.csv --target species
  relulab bench --resume runs/20261123T101500Z-bench   # finish an interrupted run
  relulab bench --resume runs/20261123T101500Z-bench --force   # ... with changed code
"""


TASKS_PLACEHOLDER = "{tasks}"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Writes the registered tasks into --tasks' help when the help is shown: importing the
    task registry while building the parser would slow every relulab command."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        if text and TASKS_PLACEHOLDER in text:
            from relulab.bench.tasks import TASK_ALIASES, list_tasks

            names = [t for t in list_tasks() if t not in TASK_ALIASES.values()]
            text = text.replace(TASKS_PLACEHOLDER, ", ".join([*names, *TASK_ALIASES]))
        return text


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark activations: paired seeds, accuracy, reproducibility, speed, memory",
        description="Train every activation on every task from every seed (same data, order "
        "and initial weights per seed), then report scores with 95% CIs, paired tests "
        "against the baseline, prediction difference across seeds, dead units, time, memory.",
        epilog=EXAMPLES,
        formatter_class=_HelpFormatter,
    )
    add = parser.add_argument
    add(
        "--tasks",
        nargs="+",
        action="extend",
        metavar="TASK",
        help=f"{TASKS_PLACEHOLDER} (default: spirals digits mnist1d; with --data: csv, or npz "
        "for a .npz file)",
    )
    add("--acts", nargs="+", action="extend", metavar="SPEC", help="activation names or specs")
    add("--suite", choices=("quick", "full"), help="quick: 3 seeds (default); full: 10, longer")
    add("--seeds", type=int, help="replicas per (task, activation)")
    add("--epochs", type=int, help="override every task's epochs")
    add("--lr", type=float, dest="learning_rate", help="override the learning rate")
    add("--batch-size", type=int, help="override the batch size")
    add("--threads", type=int, help="torch threads per trial (default 1)")
    add("--workers", type=int, help="parallel trials (default: CPUs / threads)")
    add("--executor", choices=("local", "ray"), default="local")
    add(
        "--ray-address",
        help="HOST:PORT of a Ray cluster's head, or auto for one started by 'ray start' here "
        "(default: $RAY_ADDRESS, else a local Ray instance with --workers CPUs)",
    )
    add(
        "--data",
        metavar="FILE",
        help="your .csv or .npz table, for the task csv/npz: the only task unless --tasks "
        "names others too, and then it must name csv or npz among them",
    )
    add("--target", metavar="COLUMN", help="with --data: the label column (CSV) or array (NPZ)")
    add(
        "--baseline",
        metavar="SPEC",
        help="activation the others are tested against (default: relu if compared, else the "
        "first of --acts)",
    )
    add("--out", help="parent directory of new runs (default runs)")
    add("--name", help="run name, appended to the timestamp (default bench)")
    add("--resume", metavar="DIR", help="finish the missing trials of an existing run")
    add(
        "--force",
        action="store_true",
        help="with --resume: resume although the code (relulab or torch version, git commit, "
        "source hash) differs from the run's; recorded in its config.json",
    )
    add(
        "--save-models",
        action="store_true",
        help="keep each trial's trained weights (trials/*/model.pt), for relulab regions",
    )
    add("--quiet", action="store_true", help="no progress bar, no tables")
    add("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(run=run)  # fmt: skip

    report = subparsers.add_parser(
        "report",
        help="re-render a run's summary.csv, report.md and plots from its trial files",
        description="Recompute a benchmark run's statistics, report and plots from its trials.",
    )
    report.add_argument("run_dir", metavar="DIR", help="a run directory")
    report.add_argument("--baseline", help="test against this activation instead")
    report.add_argument("--json", action="store_true", help="print the summary as JSON")
    report.set_defaults(run=run_report)


TABLE_TASKS = ("csv", "npz", "table")  # the names of the task that reads --data


def _check_table_options(args: argparse.Namespace) -> None:
    """--data and --target feed the csv/npz task only: refuse them where it would not run,
    rather than train the other tasks and record a file that nothing read."""
    given = f"--data {args.data}" if args.data else f"--target {args.target}"
    if args.tasks and (args.data or args.target) and not set(args.tasks) & set(TABLE_TASKS):
        kind = "npz" if args.data and Path(args.data).suffix.lower() == ".npz" else "csv"
        raise UserError(
            f"{given} is for the {kind} task, which --tasks {' '.join(args.tasks)} leaves out; "
            f"add {kind} to --tasks, or drop {given.split()[0]}"
        )
    if args.target and not args.data and not args.resume:
        raise UserError(f"{given} names a column of your table; give the table with --data FILE")
    if args.tasks and len(set(args.tasks) & set(TABLE_TASKS)) > 1:
        raise UserError(
            f"--tasks {' '.join(t for t in args.tasks if t in TABLE_TASKS)}: these name one task, "
            "your table (csv or npz by its file); give one of them"
        )


def _requested(args: argparse.Namespace) -> dict:
    """The experiment options given on the command line (None where left out)."""
    from relulab.bench.runner import EXPERIMENT_FIELDS

    values = {
        key: getattr(args, "acts" if key == "activations" else key) for key in EXPERIMENT_FIELDS
    }
    if values["tasks"] is None and args.data and not args.resume:  # a resumed run has its own
        values["tasks"] = ["npz" if Path(args.data).suffix.lower() == ".npz" else "csv"]
    return values


def _print_summary(run: Path, rows: list[dict], as_json: bool) -> None:
    from relulab.bench import report

    if as_json:
        clean = [
            {
                k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in r.items()
            }
            for r in rows
        ]
        print_json({"run": str(run), "report": str(run / "report.md"), "summary": clean})
        return
    # each task's metric as its trials recorded it, as report.md shows it
    trials = report.load_trials(run, predictions=False)
    for task in dict.fromkeys(r["task"] for r in rows):
        metric, _ = trials.task_info(task)
        loss = report.loss_label(task)
        table = report.task_table([r for r in rows if r["task"] == task], loss=bool(loss))
        print(f"\n{report.task_title(trials.config, task)}")
        print(format_table(report.table_headers(metric, loss), table))
    print(f"\nreport: {run / 'report.md'}")


def run(args: argparse.Namespace) -> int:
    from relulab.bench import report, runner
    from relulab.bench.progress import ProgressBar
    from relulab.optional import require

    for module, package in (("scipy", "scipy"), ("matplotlib", "matplotlib")):
        require(module, extra="bench", purpose="relulab bench", package=package)
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    _check_table_options(args)
    if args.ray_address is not None and args.executor != "ray":
        raise UserError(
            f"--ray-address {args.ray_address} applies to --executor ray; add it, or drop the "
            "address to run here"
        )
    if args.executor == "ray":
        # before any run directory exists
        runner.connect_ray(args.ray_address, workers=args.workers, threads=args.threads or 1)
    requested = _requested(args)
    if args.force and not args.resume:
        raise UserError("--force applies to --resume DIR only")
    if args.resume:
        if args.out is not None or args.name is not None or args.save_models:
            raise UserError(
                "--resume continues the run in DIR; --out, --name and --save-models do not apply"
            )
        run_dir = Path(args.resume)
        config, specs = runner.resume_run(run_dir, requested, force=args.force)
    else:
        given = {k: v for k, v in requested.items() if v is not None}
        config = runner.BenchConfig(
            **given,
            name=args.name or "bench",
            baseline=args.baseline,
            save_models=args.save_models,
        )
        run_dir, config, specs = runner.start_run(config, Path(args.out or "runs"))
    workers = args.workers or max(1, (os.cpu_count() or 1) // config.threads)
    baseline = runner.canonical_spec(args.baseline) if args.baseline else config.baseline
    quiet = args.quiet or args.json
    progress: ProgressBar | None = None

    def on_start(missing) -> None:  # called under the run's lock, once the missing are known
        nonlocal progress
        done = len(specs) - len(missing)
        if not quiet:
            where = f"{workers} worker(s)" if args.executor == "local" else "Ray"
            print(
                f"run {run_dir}: {len(specs)} trial{'s' * (len(specs) != 1)} ({done} already "
                f"done), {where}",
                file=sys.stderr,
            )
            print(
                f"baseline: {baseline} ({report.baseline_reason(baseline, config.activations)})",
                file=sys.stderr,
            )
        progress = ProgressBar(len(specs), done, enabled=not quiet)

    def on_trial(spec, outcome) -> None:
        result = outcome.result
        label = f"{result['test_score']:.3f}" if result["status"] == "ok" else result["status"]
        progress.advance(f"{spec.trial_id} {label}")

    try:
        runner.run_missing(run_dir, specs, workers=workers, executor=args.executor,
                           ray_address=args.ray_address, on_start=on_start,
                           on_trial=on_trial)  # fmt: skip
    except KeyboardInterrupt:
        if progress:
            progress.close()
        print(f"interrupted; finish with: relulab bench --resume {run_dir}", file=sys.stderr)
        return 130
    if progress:
        progress.close()
    try:
        rows = report.render(run_dir, args.baseline)
    except KeyboardInterrupt:
        print(f"interrupted; every trial is done: relulab report {run_dir}", file=sys.stderr)
        return 130
    if not args.quiet or args.json:
        _print_summary(run_dir, rows, args.json)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from relulab.bench import report, rundir

    run_dir = Path(args.run_dir)
    rundir.read_config(run_dir)  # a one-line error for anything that is not a run directory
    _print_summary(run_dir, report.render(run_dir, args.baseline), args.json)
    return 0
