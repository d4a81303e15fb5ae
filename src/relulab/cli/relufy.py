"""``relulab relufy``: relufy a trained GELU/SiLU GPT, fine-tune it, measure loss and sparsity."""

from __future__ import annotations

import argparse
import io
import sys
import textwrap
from pathlib import Path

from relulab.errors import UserError

DESCRIPTION = textwrap.fill(
    "Train a GELU or SiLU GPT on the shipped Shakespeare text as relulab gpt train does (or "
    "take one with --from), relufy it (stage 1: the FFN activation becomes ReLU, or ReLU(x - "
    "shift); stage 2: also ReLU after the norms feeding attention and the FFN), fine-tune it "
    "briefly, and report the validation loss before, right after and after fine-tuning "
    "(beside the unchanged model fine-tuned alike), the FFN activation sparsity per layer, "
    "aggregated over windows of tokens, and the FFN multiply-adds that sparsity removes.",
    width=88,
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "relufy",
        help="ReLU a trained GPT (Mirzadeh et al.): loss recovery and activation sparsity",
        description=DESCRIPTION,
        epilog="examples:\n  relulab relufy --activation gelu --stage 1\n"
        "  relulab relufy --from runs/20261128T190000Z-gpt-silu --stage 2 --shift 0.5\n"
        "  relulab relufy --resume runs/20261128T193000Z-relufy-gelu",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--from", dest="source", metavar="RUN",
                        help="a relulab gpt train run, or its checkpoint.pt")  # fmt: skip
    parser.add_argument("--activation", help="with no --from: gelu (default) or silu")
    parser.add_argument("--train-steps", type=int,
                        help="with no --from: steps of the training (default 1500)")  # fmt: skip
    parser.add_argument("--stage", type=int, choices=(1, 2), default=1)
    parser.add_argument("--shift", type=float, default=0.0,
                        help="ReLU(x - shift) in the FFN (default 0)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps (default 300)")
    parser.add_argument("--lr", type=float, default=5e-4, help="fine-tuning rate (default 5e-4)")
    parser.add_argument("--no-control", action="store_true",
                        help="skip fine-tuning the unchanged model alike")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--out", help="parent directory of new runs (default runs)")
    parser.add_argument("--name", help="run name after the timestamp")
    parser.add_argument("--resume", metavar="DIR",
                        help="continue an interrupted run (its training resumes from its "
                        "checkpoint; the short fine-tuning starts again)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def _settings(args: argparse.Namespace) -> dict:
    from relulab.cli.gpt import DEFAULT_MODEL
    from relulab.transformers.gpt import GPTConfig
    from relulab.transformers.relufication import RelufyConfig
    from relulab.transformers.train import TrainConfig

    if args.source and (args.activation or args.train_steps):
        raise UserError("--from takes a trained model: drop --activation and --train-steps")
    activation = args.activation or "gelu"
    if not args.source and activation not in ("gelu", "silu", "swiglu", "geglu"):
        raise UserError(
            f"--activation {activation}: relufication starts from a smooth activation; give "
            "gelu, silu, swiglu or geglu"
        )
    for option, value, least in (("--steps", args.steps, 1), ("--threads", args.threads, 1)):
        if value < least:
            raise UserError(f"{option} must be >= {least}, got {value}")
    if args.shift < 0:
        raise UserError(f"--shift must be >= 0 (ReLU(x - shift)), got {args.shift}")
    pretrain = {
        "model": GPTConfig(**DEFAULT_MODEL, vocab_size=65, activation=activation).__dict__,
        "train": TrainConfig(**({"steps": args.train_steps} if args.train_steps else {})).__dict__,
        "threads": args.threads,
    }
    relufy = RelufyConfig(
        stage=args.stage, shift=args.shift, steps=args.steps, learning_rate=args.lr,
        control=not args.no_control,
    )  # fmt: skip
    pretrain = None if args.source else pretrain  # --from: the source run has its own
    return {
        "source": args.source,
        "pretrain": pretrain,
        "relufy": relufy.__dict__,
        "threads": args.threads,
    }


def run(args: argparse.Namespace) -> int:
    import torch

    from relulab.bench import rundir
    from relulab.cli.output import progress_printer, resume_config
    from relulab.optional import require
    from relulab.transformers.corpus import load_corpus
    from relulab.transformers.relufication import RelufyConfig, relufication
    from relulab.transformers.train import checkpoint, load_checkpoint, train_in

    require("matplotlib", extra="plot", purpose="relulab relufy's plot")
    if args.resume:
        names = {"source": "--from", "train_steps": "--train-steps"}
        given = [names.get(o, f"--{o}") for o in ("source", "activation", "train_steps", "out",
                                                 "name") if getattr(args, o)]  # fmt: skip
        run_dir, config = resume_config(args.resume, "relufy", given)
        settings = config["settings"]
        rundir.record_resume(run_dir, config)
    else:
        settings = _settings(args)
        if settings["source"]:
            _check_source(*load_checkpoint(settings["source"]), settings["source"])
        activation = "" if args.source else settings["pretrain"]["model"]["activation"]
        name = args.name or f"relufy-stage{args.stage}" + ("" if args.source else f"-{activation}")
        run_dir = rundir.new_run_directory(Path(args.out or "runs"), name)
        rundir.write_json_atomic(
            run_dir / rundir.CONFIG,
            {"command": "relufy", "settings": settings, **rundir.environment()},
        )
    print(f"run: {run_dir}", file=sys.stderr, flush=True)
    progress = progress_printer()
    torch.set_num_threads(settings["threads"])
    try:
        if settings["source"]:
            model, _ = load_checkpoint(settings["source"])
        else:
            progress("training the model to relufy")
            model, _ = train_in(run_dir / "pretrain", settings["pretrain"], progress)
        corpus = load_corpus()
        relufy = RelufyConfig(**settings["relufy"])
        result = relufication(model, corpus.train, corpus.val, relufy, progress)
    except KeyboardInterrupt:
        print(f"to continue: relulab relufy --resume {run_dir}", file=sys.stderr)
        raise
    buffer = io.BytesIO()
    relufied = {"stage": relufy.stage, "shift": relufy.shift}
    torch.save(checkpoint(model, step=relufy.steps, relufied=relufied), buffer)
    rundir.write_bytes_atomic(run_dir / "relufied.pt", buffer.getvalue())
    summary = {"activation": model.config.activation, **result, **rundir.environment()}
    rundir.write_json_atomic(run_dir / "result.json", summary)
    from relulab.plot.gpt import plot_relufy

    title = (
        f"relufying a {model.config.activation} GPT, stage {relufy.stage}"
        + (f", shift {relufy.shift:g}" if relufy.shift else "")
        + f": {relufy.steps} fine-tuning steps"
    )
    plot = plot_relufy(result, run_dir / "relufy.png", title=title)
    if args.json:
        from relulab.cli.output import print_json

        print_json(summary)
        return 0
    rows = [("before", result["before"]), ("relufied", result["relufied"])]
    rows += [("fine-tuned", result["after"])]
    rows += [("control", result["control"])] if "control" in result else []
    print(f"{'':<12}{'val loss':>10}{'FFN sparsity':>14}{'input zeros':>13}"
          f"{'FFN multiply-adds removed':>27}")  # fmt: skip
    for label, found in rows:
        sparsity = found["sparsity"]
        inputs = sum(r["input_sparsity"] for r in sparsity["layers"]) / len(sparsity["layers"])
        print(f"{label:<12}{found['val_loss']:>10.3f}{sparsity['sparsity']:>14.1%}"
              f"{inputs:>13.1%}{sparsity['flops_removed']:>27.1%}")  # fmt: skip
    print("val loss: nats per character on 256 fixed validation windows")
    print(f"\nper layer, fine-tuned:\n{_layers(result['after']['sparsity'])}")
    print(f"\nrun: {run_dir}\nplot: {plot}")
    return 0


def _check_source(model, found: dict, source: str) -> None:
    """A model relufication can start from: not relufied, and a smooth FFN activation."""
    if found.get("relufied"):
        done = found["relufied"]
        raise UserError(
            f"{source} is already relufied (stage {done['stage']}, shift {done['shift']}); "
            "give the gpt train run it came from"
        )
    if model.config.activation not in ("gelu", "silu", "swiglu", "geglu"):
        raise UserError(
            f"{source}: the model's FFN activation is {model.config.activation}; relufication "
            "starts from gelu, silu, swiglu or geglu"
        )


def _layers(sparsity: dict) -> str:
    windows = list(sparsity["aggregated"])
    lines = [f"{'layer':<14}{'sparsity':>9}{'input':>7}  aggregated over W tokens: "
             + " ".join(f"W={w}" for w in windows)]  # fmt: skip
    for row in sparsity["layers"]:
        aggregated = " ".join(f"{row['aggregated'][w]:.3f}" for w in windows)
        lines.append(f"{row['name']:<14}{row['sparsity']:>9.3f}{row['input_sparsity']:>7.3f}  "
                     f"{aggregated}")  # fmt: skip
    return "\n".join(lines)
