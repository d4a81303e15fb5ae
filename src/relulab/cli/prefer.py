"""``relulab prefer``: preference tuning of a GPT with RePO and SimPO on synthetic preferences."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from relulab.errors import UserError

DESCRIPTION = textwrap.fill(
    "Sample two completions of each of a few hundred prompts (windows of the Shakespeare "
    "text) from a GPT, prefer the one with more vowels among its letters (ties dropped), and "
    "tune copies of the GPT on these pairs with each loss (RePO: mean ReLU(gamma - margin); "
    "SimPO: mean -log sigmoid(beta (margin - gamma))) from the same start, on the same pairs "
    "in the same batch order. Records the length-normalised margin, the filtered fraction "
    "(pairs with margin >= gamma, which RePO's gradient ignores), the vowel share of fresh "
    "samples and the validation loss. Neither loss has a reference model, so the tuned GPT "
    "drifts from the text it learnt (its validation loss rises by over a nat per character "
    "with the defaults). Without --model it first trains the default 4x128 GPT for "
    "--base-steps steps in the run directory (800 steps: about 3 minutes on an idle core, "
    "1.89 nats/char); the tuning then takes about 1.5 minutes per loss, so about 6 minutes in "
    "all with --threads 1 on an idle machine, base training included.",
    width=88,
)
BASE_STEPS = 800  # the default GPT reaches ~1.9 nats/char: samples have words to prefer
# option -> (PreferenceConfig field, type, help)
OPTIONS = {
    "--gamma": ("gamma", float, "target margin, nats per character, >= 0"),
    "--beta": ("beta", float, "SimPO's inverse temperature, > 0 (RePO has none)"),
    "--steps": ("steps", int, "tuning steps per loss"),
    "--pairs": ("pairs", int, "training pairs"),
    "--heldout": ("heldout", int, "held-out pairs, on prompts from the validation text"),
    "--batch-size": ("batch_size", int, "pairs per step"),
    "--lr": ("learning_rate", float, "AdamW's learning rate (constant)"),
    "--eval-interval": ("eval_interval", int, "steps between evaluations"),
    "--seed": ("seed", int, "of the pairs and the batch order"),
}


def add_parser(subparsers) -> None:
    from relulab.transformers.preference import LOSSES, PreferenceConfig

    parser = subparsers.add_parser(
        "prefer",
        help="preference tuning of a GPT: RePO vs SimPO on synthetic preferences",
        description=DESCRIPTION,
        epilog="examples:\n  relulab prefer\n"
        "  relulab prefer --model runs/20261128T190000Z-gpt-relu --gamma 0.3\n"
        "  relulab prefer --losses repo --steps 100\n"
        "  relulab prefer --resume runs/20261128T200000Z-prefer",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", metavar="RUN_OR_CHECKPOINT",
        help="a relulab gpt train run or checkpoint (default: train one)",
    )  # fmt: skip
    parser.add_argument(
        "--base-steps", type=int,
        help=f"without --model: training steps of the GPT (default {BASE_STEPS})",
    )  # fmt: skip
    parser.add_argument("--losses", help=f"comma-separated, from {', '.join(LOSSES)} (default all)")
    defaults = PreferenceConfig()
    for option, (field, kind, text) in OPTIONS.items():
        parser.add_argument(option, dest=field, type=kind,
                            help=f"{text} (default {getattr(defaults, field)})")  # fmt: skip
    parser.add_argument("--threads", type=int, help="torch threads (default 2)")
    parser.add_argument("--out", help="parent directory of new runs (default runs)")
    parser.add_argument("--resume", metavar="DIR",
                        help="continue an interrupted run: the base training from its "
                        "checkpoint, the losses not finished from their start")  # fmt: skip
    parser.set_defaults(run=run)


def _losses(text: str | None) -> list[str]:
    from relulab.transformers.preference import LOSSES, check_loss

    names = (
        list(LOSSES) if text is None else [n.strip().lower() for n in text.split(",") if n.strip()]
    )
    if not names:
        raise UserError(f"--losses names no loss; choose from {', '.join(LOSSES)}")
    for name in names:
        check_loss(name)
    return list(dict.fromkeys(names))  # once each, in the order given


def _settings(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    from relulab.cli.gpt import DEFAULT_MODEL
    from relulab.transformers.gpt import GPTConfig
    from relulab.transformers.preference import PreferenceConfig
    from relulab.transformers.train import TrainConfig, load_checkpoint

    losses = _losses(args.losses)
    given = {f: getattr(args, f) for f, *_ in OPTIONS.values() if getattr(args, f) is not None}
    preference = PreferenceConfig(**given)  # checked here, before any file
    if args.model and args.base_steps is not None:
        raise UserError("--model gives a trained GPT: drop --base-steps")
    base = None
    if args.model:
        try:  # one line for anything but a GPT checkpoint
            model, _ = load_checkpoint(args.model)
        except UserError as error:
            raise UserError(f"--model {error}") from None
        _check_model(model, preference, args.model)
    else:
        steps = BASE_STEPS if args.base_steps is None else args.base_steps
        if steps < 1:
            raise UserError(f"--base-steps must be >= 1, got {steps}")
        base = {
            "model": dataclasses.asdict(GPTConfig(**DEFAULT_MODEL, vocab_size=65)),
            "train": dataclasses.asdict(TrainConfig(steps=steps)),
            "threads": threads,
        }
    return {
        "model": str(Path(args.model).resolve()) if args.model else None,
        "base": base,
        "losses": losses,
        "preference": dataclasses.asdict(preference),
    }


def _check_model(model, config, source: str) -> None:
    """A model the pairs can be sampled from: before the run directory, in one line."""
    from relulab.transformers.corpus import load_corpus

    needed = config.prompt_length + config.completion_length
    if model.config.block_size < needed:
        raise UserError(
            f"--model {source}: the model's block size {model.config.block_size} is shorter "
            f"than a prompt and its completion ({needed} characters)"
        )
    vocabulary = len(load_corpus().vocab)
    if model.config.vocab_size != vocabulary:
        raise UserError(
            f"--model {source}: the model's vocabulary has {model.config.vocab_size} tokens, "
            f"not the corpus's {vocabulary} characters"
        )


def _resumed(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The run to resume and its config.json, once no option contradicts it."""
    from relulab.cli.output import resume_config

    options = {"model": "--model", "base_steps": "--base-steps", "losses": "--losses",
               "out": "--out", **{f: o for o, (f, *_) in OPTIONS.items()}}  # fmt: skip
    given = [option for field, option in options.items() if getattr(args, field) is not None]
    return resume_config(args.resume, "prefer", given)


def _metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(args: argparse.Namespace) -> int:
    import torch

    from relulab.bench import rundir
    from relulab.cli.output import progress_printer
    from relulab.optional import require

    require("matplotlib", extra="plot", purpose="relulab prefer's plot")
    threads = 2 if args.threads is None else args.threads
    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    config = None
    if args.resume is not None:
        run_dir, config = _resumed(args)
        settings = config["settings"]
    else:
        settings = _settings(args, threads)
        run_dir = rundir.new_run_directory(Path(args.out or "runs"), "prefer")
        rundir.write_json_atomic(
            run_dir / rundir.CONFIG,
            {"command": "prefer", "settings": settings, **rundir.environment()},
        )
    print(f"run: {run_dir}", file=sys.stderr, flush=True)
    torch.set_num_threads(threads)
    progress = progress_printer()
    try:
        with rundir.exclusive(run_dir):
            if config is not None:
                rundir.record_resume(run_dir, config)
            histories, stats = _run(run_dir, settings, threads, progress)
    except KeyboardInterrupt:
        print(f"to continue: relulab prefer --resume {run_dir}", file=sys.stderr)
        raise
    return _finish(run_dir, settings, histories, stats)


def _run(run_dir: Path, settings: dict, threads: int, progress) -> tuple[dict, dict]:
    """The base model, the pairs and each loss's tuning; what is on disk is not redone."""
    import torch

    from relulab.bench import rundir
    from relulab.transformers.corpus import load_corpus
    from relulab.transformers.preference import Pairs, PreferenceConfig, make_pairs, tune
    from relulab.transformers.train import load_checkpoint, train_in

    config = PreferenceConfig(**settings["preference"])
    if settings["model"]:
        base, _ = load_checkpoint(settings["model"])
    else:
        progress("training the base GPT")
        base, _ = train_in(run_dir / "base", {**settings["base"], "threads": threads}, progress)
        torch.set_num_threads(threads)
    base.eval()
    corpus = load_corpus()
    saved = run_dir / "pairs.pt"
    if saved.is_file():
        found = torch.load(saved, weights_only=True)
        train, heldout = Pairs.from_dict(found["train"]), Pairs.from_dict(found["heldout"])
    else:
        progress(f"sampling {config.pairs} + {config.heldout} pairs")
        generator = torch.Generator().manual_seed(config.seed)
        train, heldout = make_pairs(base, corpus, config, generator)
        buffer = io.BytesIO()
        torch.save({"train": train.to_dict(), "heldout": heldout.to_dict()}, buffer)
        rundir.write_bytes_atomic(saved, buffer.getvalue())
    stats = {"train": train.stats(), "heldout": heldout.stats()}
    rundir.write_json_atomic(run_dir / "pairs.json", stats)
    progress(
        f"pairs: vowel share chosen {stats['train']['chosen_vowel_share']:.3f}, rejected "
        f"{stats['train']['rejected_vowel_share']:.3f}; ties dropped "
        f"{stats['train']['ties_dropped']} (train), {stats['heldout']['ties_dropped']} (held-out)"
    )
    histories = {}
    for loss in settings["losses"]:
        path = run_dir / f"metrics-{loss}.jsonl"
        history = _metrics(path)
        if history and history[-1]["step"] == config.steps:
            progress(f"{loss}: finished before, skipped")
            histories[loss] = history
            continue
        if history:
            progress(f"{loss}: interrupted at step {history[-1]['step']}; starting it again")
        lines: list[str] = []

        def on_eval(metrics: dict, path: Path = path, lines: list[str] = lines) -> None:
            lines.append(json.dumps(metrics) + "\n")
            rundir.write_text_atomic(path, "".join(lines))

        histories[loss] = tune(
            copy.deepcopy(base), train, loss, config,
            heldout=heldout, corpus=corpus, on_eval=on_eval, progress=progress,
        )  # fmt: skip
    return histories, stats


def _finish(run_dir: Path, settings: dict, histories: dict, stats: dict) -> int:
    from relulab.bench import rundir
    from relulab.cli.output import format_table
    from relulab.plot.preference import plot_preference

    config = settings["preference"]
    gamma = config["gamma"]
    title = (
        f"preference tuning on {config['pairs']} vowel-share pairs: gamma {gamma:g}, SimPO's "
        f"beta {config['beta']:g}, learning rate {config['learning_rate']:g}"
    )
    plot = plot_preference(
        histories, run_dir / "prefer.png", gamma=gamma, title=title,
        write=rundir.write_bytes_atomic,
    )  # fmt: skip
    keys = ("heldout_margin", "train_margin", "train_filtered", "heldout_filtered",
            "vowel_share", "val_loss", "loss")  # fmt: skip
    summary = {
        "losses": {
            loss: {
                "start": {k: h[0][k] for k in keys},
                "end": {k: h[-1][k] for k in keys},
                "steps": h[-1]["step"],
                "seconds": sum(e["seconds"] for e in h),
            }
            for loss, h in histories.items()
        },
        "pairs": stats,
        "settings": settings,
        "plot": str(plot),
    }
    rundir.write_json_atomic(run_dir / "summary.json", summary)

    def change(start: float, end: float, form: str) -> str:
        return f"{start:{form}} -> {end:{form}}"

    rows = []
    for loss, found in summary["losses"].items():
        start, end = found["start"], found["end"]
        rows.append([
            loss,
            change(start["heldout_margin"], end["heldout_margin"], "+.3f"),
            change(start["train_filtered"], end["train_filtered"], ".1%"),
            change(start["heldout_filtered"], end["heldout_filtered"], ".1%"),
            change(start["vowel_share"], end["vowel_share"], ".3f"),
            f"{end['val_loss'] - start['val_loss']:+.3f}",
        ])  # fmt: skip
    headers = ["loss", "held-out margin", "filtered (train)", "filtered (held-out)",
               "vowel share", "val loss drift"]  # fmt: skip
    print(format_table(headers, rows))
    print(
        f"margin: mean log-probability per character, chosen minus rejected; filtered: pairs "
        f"with margin >= gamma {gamma:g}; vowel share: fresh samples of the held-out prompts; "
        "val loss drift: nats per character, end minus start"
    )
    print(f"\nrun: {run_dir}\nplot: {plot}")
    return 0
