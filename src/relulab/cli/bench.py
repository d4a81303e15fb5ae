"""``relulab bench``: compare activations across tasks and seeds; ``relulab report DIR``."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from relulab.cli.output import format_table, print_json

EXAMPLES = """examples:
  relulab bench                                  # 3 tasks x 8 activations x 3 seeds
  relulab bench --tasks digits --acts relu gelu 'leaky_relu(0.2)' --seeds 5
  relulab bench --suite full --workers 2         # 10 seeds, longer training
  relulab bench --data iris.csv --target species # your own table
  relulab bench --resume runs/20261123T101500Z-bench   # finish an interrupted run
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark activations: paired seeds, accuracy, reproducibility, speed, memory",
        description="Train every activation on every task from every seed (same data, order "
        "and initial weights per seed), then report accuracy with 95%% CIs, paired tests "
        "against the baseline, prediction difference across seeds, dead units, time, memory.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--tasks", nargs="+", metavar="TASK", help="spirals, digits, digits_cnn, mnist1d, csv, npz"
    )
    parser.add_argument("--acts", nargs="+", metavar="SPEC", help="activation names or specs")
    parser.add_argument(
        "--suite",
        choices=("quick", "full"),
        help="quick: 3 seeds (default); full: 10 seeds, longer",
    )
    parser.add_argument("--seeds", type=int, help="replicas per (task, activation)")
    parser.add_argument("--epochs", type=int, help="override every task's epochs")
    parser.add_argument("--lr", type=float, dest="learning_rate", help="override the learning rate")
    parser.add_argument("--batch-size", type=int, help="override the batch size")
    parser.add_argument("--threads", type=int, help="torch threads per trial (default 1)")
    parser.add_argument("--workers", type=int, help="parallel trials (default: CPUs / threads)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local")
    parser.add_argument("--ray-address", help="Ray cluster address (default: $RAY_ADDRESS or auto)")
    parser.add_argument("--data", help="your .csv or .npz file (task csv/npz)")
    parser.add_argument("--target", help="the label column (CSV) or array (NPZ)")
    parser.add_argument(
        "--baseline", help="activation the others are tested against (default relu)"
    )
    parser.add_argument("--out", default="runs", help="parent directory of new runs (default runs)")
    parser.add_argument("--name", help="run name, appended to the timestamp (default bench)")
    parser.add_argument(
        "--resume", metavar="DIR", help="finish the missing trials of an existing run"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no tables")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(run=run)

    report = subparsers.add_parser(
        "report",
        help="re-render a run's summary.csv, report.md and plots from its trial files",
        description="Recompute a benchmark run's statistics, report and plots from its trials.",
    )
    report.add_argument("run_dir", metavar="DIR", help="a run directory")
    report.add_argument("--json", action="store_true", help="print the summary as JSON")
    report.set_defaults(run=run_report)


EXPERIMENT_OPTIONS = (
    "tasks",
    "activations",
    "suite",
    "seeds",
    "epochs",
    "learning_rate",
    "batch_size",
    "threads",
    "data",
    "target",
)


def _requested(args: argparse.Namespace) -> dict:
    """The experiment options given on the command line (None where left out)."""
    values = {
        key: getattr(args, "acts" if key == "activations" else key, None)
        for key in EXPERIMENT_OPTIONS
    }
    if values["tasks"] is None and args.data:
        values["tasks"] = ["npz" if Path(args.data).suffix.lower() == ".npz" else "csv"]
    return values


def _print_summary(run: Path, rows: list[dict], as_json: bool) -> None:
    from relulab.bench.report import TABLE_HEADERS, task_table

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
    for task in dict.fromkeys(r["task"] for r in rows):
        print(f"\n{task}")
        print(format_table(TABLE_HEADERS, task_table([r for r in rows if r["task"] == task])))
    print(f"\nreport: {run / 'report.md'}")


def run(args: argparse.Namespace) -> int:
    from relulab.bench import report, runner
    from relulab.bench.progress import ProgressBar
    from relulab.optional import require

    for module, package in (("scipy", "scipy"), ("matplotlib", "matplotlib")):
        require(module, extra="bench", purpose="relulab bench", package=package)
    requested = _requested(args)
    if args.resume:
        run_dir = Path(args.resume)
        config, specs = runner.resume_run(run_dir, requested)
    else:
        given = {k: v for k, v in requested.items() if v is not None}
        config = runner.BenchConfig(
            **given, name=args.name or "bench", baseline=args.baseline or "relu"
        )
        run_dir, config, specs = runner.start_run(config, Path(args.out))
    workers = args.workers or max(1, (os.cpu_count() or 1) // config.threads)
    done = len(specs) - sum(
        not (run_dir / "trials" / s.trial_id / "result.json").is_file() for s in specs
    )
    quiet = args.quiet or args.json
    if not quiet:
        where = f"{workers} worker(s)" if args.executor == "local" else "Ray"
        print(f"run {run_dir}: {len(specs)} trials ({done} already done), {where}", file=sys.stderr)
    progress = ProgressBar(len(specs), done, enabled=not quiet)

    def on_trial(spec, outcome) -> None:
        result = outcome.result
        label = f"{result['test_accuracy']:.3f}" if result["status"] == "ok" else result["status"]
        progress.advance(f"{spec.trial_id} {label}")

    try:
        runner.run_missing(run_dir, specs, workers=workers, executor=args.executor,
                           ray_address=args.ray_address, on_trial=on_trial)  # fmt: skip
    except KeyboardInterrupt:
        progress.close()
        print(f"interrupted; finish with: relulab bench --resume {run_dir}", file=sys.stderr)
        return 130
    progress.close()
    rows = report.render(run_dir)
    if not args.quiet or args.json:
        _print_summary(run_dir, rows, args.json)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from relulab.bench import report

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.json").is_file():
        raise ValueError(f"{run_dir} is not a relulab run directory (no config.json)")
    _print_summary(run_dir, report.render(run_dir), args.json)
    return 0
