"""``relulab entropy``: what a GPT's attention heads do (entropy, zero weights, switched-off
rows), and the seeded experiments on them: (LayerNorm | none) x (ReLU | GELU), softmax vs ReLA."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from relulab.cli.gpt import DEFAULT_MODEL, MODEL_OPTIONS, TRAIN_OPTIONS
from relulab.cli.output import (
    format_table,
    given_options,
    print_json,
    progress_printer,
    resume_config,
)
from relulab.errors import UserError

# the options an experiment takes: the shape of the base GPT and the training, not what its
# cells change or the seed (each cell runs every seed)
SEEDS, WINDOWS, THREADS = 5, 256, 2  # defaults
SHAPE_OPTIONS = {o: MODEL_OPTIONS[o] for o in ("--n-layer", "--n-head", "--n-embd", "--block-size")}
EXPERIMENT_TRAIN_OPTIONS = {o: v for o, v in TRAIN_OPTIONS.items() if o != "--seed"}
QUANTITIES = {  # AttentionStats field -> heatmap colour-bar label and scale
    "normalized_entropy": ("entropy / log(keys) (1 = uniform)", (0.0, 1.0)),
    "zero_fraction": ("weights exactly 0", (0.0, 1.0)),
    "off_fraction": ("rows all 0 (head off)", (0.0, 1.0)),
}


def add_parser(subparsers) -> None:
    from relulab.transformers.attention_experiment import EXPERIMENTS
    from relulab.transformers.train import TrainConfig

    parser = subparsers.add_parser(
        "entropy",
        help="attention entropy per head of a GPT; the LayerNorm x activation and ReLA experiments",
        description="With RUN (a relulab gpt train run directory or checkpoint): per layer and "
        "head, the mean entropy of the attention weights on validation windows (in nats, and "
        "divided by log of the keys each query sees: 1 is uniform), the share of weights "
        "exactly 0 and of rows all 0 (ReLA's switched-off heads); writes entropy.json and a "
        "heatmap beside it. With --experiment: trains every cell of the experiment for each "
        "seed and compares them with paired t-tests (Holm-adjusted).",
        epilog="examples:\n  relulab entropy runs/20261128T190000Z-gpt-gelu\n"
        "  relulab entropy --experiment norm-activation --seeds 5\n"
        "  relulab entropy --experiment attention --seeds 5\n"
        "  relulab entropy --resume runs/20261128T200000Z-entropy-norm-activation\n\n"
        "experiments (cells):\n"
        + "\n".join(f"  {name}: {', '.join(cells)}" for name, cells in EXPERIMENTS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="RUN", nargs="?",
                        help="a gpt train or relufy run directory, or a checkpoint")  # fmt: skip
    parser.add_argument("--windows", type=int,
                        help=f"validation windows measured (default {WINDOWS})")  # fmt: skip
    parser.add_argument(
        "--threads", type=int, help=f"torch threads (default {THREADS}; on --resume, the run's)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    group = parser.add_argument_group("experiments")
    group.add_argument("--experiment", metavar="NAME",
                       help=f"run an experiment: {' or '.join(EXPERIMENTS)}")  # fmt: skip
    group.add_argument("--seeds", type=int, help=f"seeds 0..N-1 per cell (default {SEEDS})")
    defaults = {**DEFAULT_MODEL, **TrainConfig().__dict__}
    for option, (field, kind, text) in {**SHAPE_OPTIONS, **EXPERIMENT_TRAIN_OPTIONS}.items():
        group.add_argument(
            option, dest=field, type=kind, help=f"{text} (default {defaults[field]})"
        )
    group.add_argument("--out", help="parent directory of new runs (default runs)")
    group.add_argument("--resume", metavar="DIR", help="continue an interrupted experiment")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from relulab.optional import require

    for option, value in (("--windows", args.windows), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise UserError(f"{option} must be >= 1, got {value}")
    experiment_options = given_options(args, {**SHAPE_OPTIONS, **EXPERIMENT_TRAIN_OPTIONS}) + [
        o for o, v in (("--seeds", args.seeds), ("--out", args.out), ("--resume", args.resume)) if v
    ]
    if args.source is not None:
        if args.experiment or experiment_options:
            extra = "--experiment" if args.experiment else experiment_options[0]
            raise UserError(f"{extra} runs an experiment, which takes no RUN; drop {args.source}")
        require("matplotlib", extra="plot", purpose="relulab entropy's heatmap")
        return _measure(args)
    if args.experiment is None and args.resume is None:
        raise UserError("give a GPT run directory or checkpoint, or --experiment NAME")
    require("matplotlib", extra="plot", purpose="relulab entropy's plots")
    return _experiment(args)


def _measure(args: argparse.Namespace) -> int:
    import torch

    from relulab.bench import rundir
    from relulab.plot.attention import plot_head_heatmaps
    from relulab.transformers.attention_stats import attention_statistics
    from relulab.transformers.corpus import load_corpus
    from relulab.transformers.train import checkpoint_file, load_checkpoint, validation_windows

    torch.set_num_threads(args.threads or THREADS)
    windows = args.windows or WINDOWS
    model, found = load_checkpoint(args.source)
    path = checkpoint_file(args.source)
    stem = "" if path.stem in ("checkpoint", "relufied") else f"{path.stem}-"
    json_path = path.parent / f"{stem}entropy.json"
    rundir.check_writable(json_path)  # before the measurement, not after
    x, _ = validation_windows(load_corpus().val, model.config.block_size, windows)
    stats = attention_statistics(model, x)
    relufied = found.get("relufied")
    result = {"source": str(args.source), "windows": windows, "model": model.config.__dict__,
              "relufied": relufied, **stats.to_dict()}  # fmt: skip
    rundir.write_json_atomic(json_path, result)
    config = model.config
    activation = f"relufied stage {relufied['stage']}" if relufied else config.activation
    title = (f"{config.n_layer}x{config.n_embd} GPT ({config.norm}, {activation}, "
             f"{config.attention} attention): {stats.rows:,} queries per head")  # fmt: skip
    panels = {
        "normalized_entropy": "attention entropy / log(keys the query sees)",
        "zero_fraction": "share of attention weights exactly 0",
        "off_fraction": "share of queries whose row is all 0 (head off)",
    }
    if config.attention == "softmax":  # softmax has no zero weight: those panels would be blank
        del panels["zero_fraction"], panels["off_fraction"]
    rows = {QUANTITIES[key][0]: {name: result[key]} for key, name in panels.items()}
    limits = dict(QUANTITIES.values())
    plot = plot_head_heatmaps(rows, path.parent / f"{stem}entropy.png", title=title, limits=limits)
    if args.json:
        print_json(result)
        return 0
    table = [
        [
            layer,
            head,
            _f(stats.entropy[layer, head]),
            _f(stats.normalized_entropy[layer, head]),
            _pct(stats.zero_fraction[layer, head]),
            _pct(stats.off_fraction[layer, head]),
            int(stats.nan_count[layer, head]),
        ]
        for layer in range(config.n_layer)
        for head in range(config.n_head)
    ]
    print(format_table(["layer", "head", "entropy (nats)", "/ log(keys)", "zero weights",
                        "rows off", "NaN"], table))  # fmt: skip
    print(f"\n{stats.rows:,} queries per head ({windows} validation windows of "
          f"{config.block_size}; the first query of each, which sees one key, left out)\n"
          f"results: {json_path}\nheatmap: {plot}")  # fmt: skip
    return 0


def _experiment(args: argparse.Namespace) -> int:
    import torch

    from relulab.bench import rundir
    from relulab.transformers.attention_experiment import (
        experiment_cells,
        run_experiment,
        summarize,
        time_cells,
    )

    if args.resume is not None:
        run_dir, settings = _resumed(args)
    else:
        run_dir, settings = _new_experiment(args)
    name = settings["experiment"]
    print(f"run: {run_dir}", file=sys.stderr, flush=True)
    try:
        with rundir.exclusive(run_dir):
            results = run_experiment(
                run_dir, name, settings["seeds"], settings["model"], settings["train"],
                threads=settings["threads"], windows=settings["windows"],
                progress=progress_printer(),
            )  # fmt: skip
    except KeyboardInterrupt:
        print(f"to continue: relulab entropy --resume {run_dir}", file=sys.stderr)
        raise
    summary = summarize(name, results)
    if name == "attention":  # speed belongs to the comparison of attention kinds
        torch.set_num_threads(settings["threads"])  # when every cell was done, none set it
        summary["speed"] = time_cells(run_dir, list(experiment_cells(name)), settings["seeds"][0])
    summary["plots"] = [str(p) for p in _experiment_plots(run_dir, summary, results)]
    rundir.write_json_atomic(run_dir / "summary.json", summary)
    if args.json:
        print_json(summary)
    else:
        print(experiment_report(summary))
        print(f"\nrun: {run_dir}\nplots: {', '.join(summary['plots'])}")
    return 0


def _new_experiment(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    import dataclasses

    from relulab.bench import rundir
    from relulab.transformers.attention_experiment import experiment_cells
    from relulab.transformers.gpt import GPTConfig
    from relulab.transformers.train import TrainConfig

    cells = experiment_cells(args.experiment)
    seeds = SEEDS if args.seeds is None else args.seeds
    if seeds < 2:
        raise UserError(f"--seeds must be >= 2 for a paired test, got {seeds}")
    if args.block_size is not None and args.block_size < 2:
        raise UserError(
            f"--block-size must be >= 2 (entropy needs queries that see two keys), "
            f"got {args.block_size}"
        )
    shape = {
        f: getattr(args, f) for f, *_ in SHAPE_OPTIONS.values() if getattr(args, f) is not None
    }
    train = {
        f: getattr(args, f)
        for f, *_ in EXPERIMENT_TRAIN_OPTIONS.values()
        if getattr(args, f) is not None
    }
    model = {**DEFAULT_MODEL, "vocab_size": 65, **shape}
    for change in cells.values():  # every cell checked before any file
        GPTConfig(**model, **change)
    settings = {
        "experiment": args.experiment,
        "seeds": list(range(seeds)),
        "model": model,
        "train": dataclasses.asdict(TrainConfig(**train)),
        "threads": args.threads or THREADS,
        "windows": args.windows or WINDOWS,
    }
    run_dir = rundir.new_run_directory(Path(args.out or "runs"), f"entropy-{args.experiment}")
    rundir.write_json_atomic(
        run_dir / rundir.CONFIG,
        {"command": "entropy --experiment", "settings": settings, **rundir.environment()},
    )
    return run_dir, settings


def _resumed(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    from relulab.bench import rundir

    given = [
        o
        for o, v in (
            ("--experiment", args.experiment),
            ("--seeds", args.seeds),
            ("--windows", args.windows),
            ("--out", args.out),
        )
        if v is not None
    ]
    given += given_options(args, {**SHAPE_OPTIONS, **EXPERIMENT_TRAIN_OPTIONS})
    run_dir, config = resume_config(args.resume, "entropy --experiment", given)
    settings = config["settings"]
    if args.threads is not None:  # how fast, not what: the one setting a resume may change
        settings = {**settings, "threads": args.threads}
    rundir.record_resume(run_dir, config, threads=settings["threads"])
    return run_dir, settings


def _experiment_plots(run_dir: Path, summary: dict[str, Any], results: dict) -> list[Path]:
    from relulab.plot.attention import plot_head_heatmaps, plot_paired_losses

    cells = summary["cells"]
    keys = ["normalized_entropy"] + (["zero_fraction", "off_fraction"]
                                     if summary["experiment"] == "attention" else [])  # fmt: skip
    rows = {
        QUANTITIES[key][0]: {cell: c["heads"][key] for cell, c in cells.items() if c["heads"][key]}
        for key in keys
    }
    rows = {quantity: panels for quantity, panels in rows.items() if panels}
    seeds = len(next(iter(cells.values()))["seeds"])
    plots = [
        plot_paired_losses(
            {
                cell: {s: r["val_loss"] for s, r in by_seed.items()}
                for cell, by_seed in results.items()
            },
            run_dir / "losses.png",
            pairs={
                (c["treatment"], c["baseline"]): f"{_signed_pct(c['perplexity_change'])} "
                f"perplexity, p={_p(c['p_value'])}"
                for c in summary["comparisons"].values()
            },
            title=f"validation loss per seed ({seeds} seeds; lines join a seed's runs)",
        )
    ]
    if rows:
        plots.append(
            plot_head_heatmaps(
                rows,
                run_dir / "heads.png",
                limits=dict(QUANTITIES.values()),
                title=f"{summary['experiment']}: attention heads, mean over finished seeds",
            )
        )
    return plots


def experiment_report(summary: dict[str, Any]) -> str:
    """The cells' table, the comparisons' table and, for the attention kinds, their speed."""
    rows = []
    for cell, c in summary["cells"].items():
        loss = c["val_loss"]
        half = (loss["ci_high"] - loss["mean"]) if math.isfinite(loss["ci_high"]) else math.nan
        rows.append([
            cell, f"{_f(loss['mean'])} ± {_f(half)}", _f(c["perplexity"]),
            f"{c['diverged']}/{len(c['seeds'])}", int(c["nan_weights"]),
            _f(c["mean_entropy"]), _f(c["mean_normalized_entropy"]),
            _pct(c["near_uniform_heads"]), _pct(c["mean_zero_fraction"]),
            _pct(c["mean_off_fraction"]),
        ])  # fmt: skip
    lines = [
        format_table(
            [
                "cell",
                "val loss (95% CI)",
                "perplexity",
                "diverged",
                "NaN attention weights",
                "entropy (nats)",
                "/ log(keys)",
                f"heads > {summary['near_uniform']}",
                "zero weights",
                "rows off",
            ],
            rows,
        ),
        f"(heads > {summary['near_uniform']}: share of heads whose entropy / log(keys) is above "
        f"{summary['near_uniform']}, near-uniform attention, the sign of entropic overload; ReLA "
        "rows are divided by their sum first, all-zero rows left out and counted in rows off)",
        "",
    ]
    comparisons = [
        [
            key,
            _f(c["val_loss_difference"]),
            _signed_pct(c["perplexity_change"]),
            _p(c["p_value"]),
            _p(c["p_holm"]),
            _f(c["early_entropy_difference"]),
            _p(c["early_entropy_p_value"]),
            c["pairs"],
        ]
        for key, c in summary["comparisons"].items()
    ]
    lines.append(format_table(
        ["comparison", "Δ val loss", "perplexity change", "p (paired t)", "p (Holm)",
         "Δ early entropy", "p (early entropy)", "pairs"],
        comparisons,
    ))  # fmt: skip
    lines.append("(early entropy: entropy / log(keys), mean over the heads of the first half "
                 "of the layers)")  # fmt: skip
    speed = summary.get("speed")
    if speed:
        times = speed["median_seconds"]
        base = next(iter(times.values()))
        first = next(iter(times))
        lines += ["", format_table(
            ["attention", "forward (ms)", "train step (ms)", f"forward vs {first}",
             f"step vs {first}"],
            [[cell, f"{1000 * t['forward']:.1f}", f"{1000 * t['train_step']:.1f}",
              f"{t['forward'] / base['forward']:.2f}x",
              f"{t['train_step'] / base['train_step']:.2f}x"] for cell, t in times.items()],
        ), f"(batch {speed['batch']} x {speed['block_size']} tokens, torch threads "
           f"{speed['threads']}, median of {speed['rounds']} interleaved rounds after one "
           f"warm-up, load average {speed['load_average']:.2f})"]  # fmt: skip
    return "\n".join(lines)


def _f(value: Any) -> str:
    return "n/a" if value is None or not math.isfinite(float(value)) else f"{float(value):.3f}"


def _pct(value: Any) -> str:
    return (
        "n/a" if value is None or not math.isfinite(float(value)) else f"{100 * float(value):.1f}%"
    )


def _p(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def _signed_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}%"
