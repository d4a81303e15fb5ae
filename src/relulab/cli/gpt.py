"""``relulab gpt train | sample``: a small GPT on the shipped Shakespeare text."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from relulab.cli.output import given_options, progress_printer, resume_config
from relulab.errors import UserError
from relulab.transformers.train import train_in

MODEL_OPTIONS = {  # option -> (GPTConfig field, type, help)
    "--activation": ("activation", str, "FFN activation: a registry spec or swiglu/geglu/reglu"),
    "--norm": ("norm", str, "layernorm, rmsnorm or none"),
    "--attention": ("attention", str, "softmax, or rela (ReLU attention, gated RMSNorm)"),
    "--n-layer": ("n_layer", int, "blocks"),
    "--n-head": ("n_head", int, "attention heads"),
    "--n-embd": ("n_embd", int, "width of the residual stream"),
    "--block-size": ("block_size", int, "context length in characters"),
    "--hidden": ("hidden", int, "FFN width (default 4 x n-embd; gated 8/3 x)"),
}
TRAIN_OPTIONS = {  # option -> (TrainConfig field, type, help)
    "--steps": ("steps", int, "optimizer steps"),
    "--batch-size": ("batch_size", int, "windows per step"),
    "--lr": ("learning_rate", float, "peak learning rate"),
    "--eval-interval": ("eval_interval", int, "steps between validation losses and checkpoints"),
    "--seed": ("seed", int, "seed of the initial weights and the windows"),
}
# what `relulab gpt train` trains with no options: ~1.7 nats/char in minutes on 2 cores
DEFAULT_MODEL = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "gpt",
        help="a small GPT on Shakespeare: train, sample",
        description="A small character-level GPT (relulab.transformers.gpt) on the Tiny "
        "Shakespeare text shipped with relulab (90/10 split by position).",
    )
    commands = parser.add_subparsers(dest="gpt_command", metavar="ACTION", required=True)
    train = commands.add_parser(
        "train",
        help="train a GPT; writes a run directory (config, metrics, checkpoint, plot, sample)",
        description="Train a GPT with AdamW (warm-up, cosine decay) on random windows of the "
        "training text; every --eval-interval steps the validation loss is measured on fixed "
        "windows and a checkpoint written atomically, so --resume DIR continues an "
        "interrupted run.",
        epilog="examples:\n  relulab gpt train --activation relu\n"
        "  relulab gpt train --activation swiglu --norm rmsnorm --steps 3000\n"
        "  relulab gpt train --resume runs/20261128T190000Z-gpt-relu",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from relulab.transformers.train import TrainConfig  # its defaults, shown in --help

    defaults = {**DEFAULT_MODEL, "activation": "gelu", "norm": "layernorm", "attention": "softmax"}
    defaults.update(TrainConfig().__dict__)
    for option, (field, kind, text) in {**MODEL_OPTIONS, **TRAIN_OPTIONS}.items():
        shown = f" (default {defaults[field]})" if field in defaults else ""
        train.add_argument(option, dest=field, type=kind, help=text + shown)
    train.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    train.add_argument("--out", help="parent directory of new runs (default runs)")
    train.add_argument(
        "--name",
        help="run name after the timestamp (default gpt-ACTIVATION, -ATTENTION unless softmax)",
    )
    train.add_argument("--resume", metavar="DIR", help="continue an interrupted run")
    train.set_defaults(run=run_train)
    sample = commands.add_parser(
        "sample",
        help="generate text from a trained GPT",
        description="Generate text from a GPT run directory or checkpoint, token by token "
        "with a KV cache.",
        epilog='example:\n  relulab gpt sample runs/20261128T190000Z-gpt-relu --prompt "ROMEO:"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sample.add_argument(
        "source", metavar="RUN", help="a gpt train or relufy run directory, or a checkpoint"
    )
    sample.add_argument("--prompt", default="\n", help="text to continue (default a newline)")
    sample.add_argument("--tokens", type=int, default=300,
                        help="characters to generate (default 300)")  # fmt: skip
    sample.add_argument(
        "--temperature", type=float, default=0.8,
        help="divides the logits: lower is more conservative (default 0.8)",
    )  # fmt: skip
    sample.add_argument(
        "--top-k", type=int, default=20,
        help="sample among the k likeliest characters; 1 is greedy (default 20)",
    )  # fmt: skip
    sample.add_argument("--seed", type=int, default=0, help="of the sampling (default 0)")
    sample.set_defaults(run=run_sample)


def _new_run(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    from relulab.bench import rundir
    from relulab.transformers.gpt import GPTConfig
    from relulab.transformers.train import TrainConfig

    def given(options: dict) -> dict[str, Any]:
        return {f: getattr(args, f) for f, *_ in options.values() if getattr(args, f) is not None}

    model = {**DEFAULT_MODEL, **given(MODEL_OPTIONS), "vocab_size": 65}
    train = given(TRAIN_OPTIONS)
    from relulab.transformers.corpus import load_corpus

    if model["block_size"] >= len(load_corpus().val):
        raise UserError(
            f"--block-size {model['block_size']} is longer than the validation text "
            f"({len(load_corpus().val):,} characters)"
        )
    settings = {
        "model": dataclasses.asdict(GPTConfig(**model)),  # checked here, before any file
        "train": dataclasses.asdict(TrainConfig(**train)),
        "threads": args.threads,
    }
    model_settings = settings["model"]
    kind = "" if model_settings["attention"] == "softmax" else f"-{model_settings['attention']}"
    name = args.name or f"gpt-{model_settings['activation']}{kind}"
    run = rundir.new_run_directory(Path(args.out or "runs"), name.replace("/", "-"))
    rundir.write_json_atomic(
        run / rundir.CONFIG, {"command": "gpt train", "settings": settings, **rundir.environment()}
    )
    return run, settings


def _resumed(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    from relulab.bench import rundir

    given = given_options(args, {**MODEL_OPTIONS, **TRAIN_OPTIONS})
    given += [o for o, v in (("--out", args.out), ("--name", args.name)) if v]
    run, config = resume_config(args.resume, "gpt train", given)
    rundir.record_resume(run, config)
    return run, config["settings"]


def run_train(args: argparse.Namespace) -> int:
    import torch

    from relulab.bench import rundir
    from relulab.optional import require
    from relulab.transformers.corpus import load_corpus

    require("matplotlib", extra="plot", purpose="relulab gpt train's loss plot")
    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    run, settings = _new_run(args) if args.resume is None else _resumed(args)
    print(f"run: {run}", file=sys.stderr, flush=True)
    try:
        model, history = train_in(run, settings, progress_printer())
    except KeyboardInterrupt:
        print(f"to continue: relulab gpt train --resume {run}", file=sys.stderr)
        raise
    corpus = load_corpus()
    generator = torch.Generator().manual_seed(0)
    prompt = corpus.encode("\n")[None]
    text = corpus.decode(model.generate(prompt, 300, 0.8, 20, generator=generator)[0])
    rundir.write_text_atomic(run / "sample.txt", text)
    from relulab.plot.gpt import plot_training

    parameters = sum(p.numel() for p in model.parameters())
    model_settings = settings["model"]
    label = model_settings["activation"]
    if model_settings.get("attention", "softmax") != "softmax":
        label += f", {model_settings['attention']} attention"
    title = f"GPT ({label}, {parameters:,} parameters) on Shakespeare"
    plot = plot_training({label: history}, run / "loss.png", title=title)
    rundir.write_json_atomic(
        run / "summary.json", {"final": history[-1], "parameters": parameters, "plot": str(plot)}
    )
    print(
        f"val loss {history[-1]['val_loss']:.3f} nats/char after {history[-1]['step']} steps\n"
        f"sample:\n{text.strip()[:300]}\n\nrun: {run}\nplot: {plot}"
    )
    return 0


def run_sample(args: argparse.Namespace) -> int:
    import torch

    from relulab.transformers.corpus import load_corpus
    from relulab.transformers.train import load_checkpoint

    if args.tokens < 1:
        raise UserError(f"--tokens must be >= 1, got {args.tokens}")
    if args.temperature <= 0:
        raise UserError(
            f"--temperature must be > 0, got {args.temperature} (for greedy decoding: --top-k 1)"
        )
    if args.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {args.top_k}")
    model, _ = load_checkpoint(args.source)
    corpus = load_corpus()
    prompt = corpus.encode(args.prompt or "\n")
    if len(prompt) > model.config.block_size:
        prompt = prompt[-model.config.block_size :]
    generator = torch.Generator().manual_seed(args.seed)
    out = model.eval().generate(
        prompt[None], args.tokens, args.temperature, args.top_k, generator=generator
    )
    print(corpus.decode(out[0]))
    return 0
