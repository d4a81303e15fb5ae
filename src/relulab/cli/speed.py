"""``relulab speed``: time and memory of the fused kernels against their alternatives."""

from __future__ import annotations

import argparse
import difflib
import os
import platform
import re
import sys
from pathlib import Path

import torch

from relulab.cli.output import check_png_output, format_table, print_json
from relulab.errors import UserError
from relulab.registry import activation_info, registered

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}
# Targets of the kernels issue, checked in the summary table.
TARGET_TO_RELU = 1.15
TARGET_EAGER_SPEEDUP = 3.0
TARGET_PEAK = 1.05
TARGET_TO_NATIVE = 1.10  # issue 15: the default path within 1.10x of torch's module
MODELS = ("mlp", "cnn", "both")
# relulab.transformers.ffn_speed.PATHS's keys, here so that --help imports no model code.
FFN_PATHS = ("dense", "down", "up_down", "predictor", "down_copy", "torch_coo", "torch_csr")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "speed",
        help="time fused kernels against reference, native and timm-style versions",
        description="Forward and forward+backward time of each activation's implementations on "
        "one tensor, side by side with a clone (memory-bandwidth yardstick) and native ReLU, "
        "plus the bytes each keeps for backward. With --model: whole training steps. With "
        "--ffn: one token through a dense FFN and each sparse path (relulab.transformers."
        "ffn_speed), and with --model CHECKPOINT also that GPT's sparsity and tokens/s.",
        epilog="examples:\n  relulab speed\n  relulab speed golu mish gelu --numel 4194304\n"
        "  relulab speed --model both\n  relulab speed relu golu --json --plot speed.png\n"
        "  relulab speed --ffn -o ffn.png\n"
        "  relulab speed --ffn --sizes 1024x4096 --sparsities 0.9 --input-sparsity 0.7\n"
        "  relulab speed --ffn --model runs/20261128T193000Z-relufy-stage2/relufied.pt\n"
        "  relulab speed --sweep -o sweep.png   # every activation torch also has, 1K-16M",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="activations (default: every fused one)"
    )
    parser.add_argument("--numel", type=int, help="elements per tensor (default 2^24)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument(
        "--rounds", type=int, help="timed rounds (default 7; 11 with --ffn, 5 for decoding)"
    )
    parser.add_argument(
        "--model",
        metavar="{mlp,cnn,both}|CHECKPOINT",
        help="time training steps instead; with --ffn: a relulab gpt checkpoint (relufied.pt "
        "of a relulab relufy run), also timed at its measured sparsity, with its tokens/s",
    )
    parser.add_argument(
        "--sweep", action="store_true",
        help="time every size from 1K to 16M elements (x4 apart): the default path's time "
        "over torch's module at each; with -o also plotted against the size",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "-o",
        "--plot",
        metavar="FILE",
        help="also draw the ratios to a PNG (needs the plot extra)",
    )
    ffn = parser.add_argument_group(
        "sparse FFN decoding (--ffn)",
        "one token through a dense FFN and each sparse path, side by side (batch 1)",
    )
    ffn.add_argument("--ffn", action="store_true", help="time the sparse FFN paths")
    ffn.add_argument(
        "--sizes", nargs="+", metavar="DxHIDDEN", help="FFN sizes (default 1024x4096 2048x8192)"
    )
    ffn.add_argument(
        "--sparsities",
        nargs="+",
        type=float,
        metavar="S",
        help="shares of inactive neurons (default 0.5 0.8 0.9 0.95)",
    )
    ffn.add_argument(
        "--input-sparsity",
        type=float,
        metavar="S",
        help="share of zero FFN inputs for up_down (default: as --sparsities)",
    )
    ffn.add_argument("--gated", action="store_true", help="a gated FFN (reglu)")
    ffn.add_argument(
        "--paths",
        nargs="+",
        metavar="PATH",
        help=f"paths to time (default all: {', '.join(FFN_PATHS)})",
    )
    ffn.add_argument(
        "--tokens",
        type=int,
        default=64,
        help="with --model: tokens to decode per timed call (default 64)",
    )
    ffn.add_argument(
        "--rank", type=int, help="with --model: the predictor's rank (default d/16, at least 8)"
    )
    ffn.add_argument(
        "--top-k",
        type=int,
        help="with --model: neurons the predictor picks (default: the model's "
        "active share of the hidden neurons)",
    )
    parser.set_defaults(run=run)


def _machine(threads: int) -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), threads and versions."""
    from relulab.machine import cpu_model

    cpu = cpu_model()
    return (
        f"{cpu}, {threads} thread(s), torch {torch.__version__}, python {platform.python_version()}"
    )


def _ratio(summary: dict, key: str) -> str:
    return f"{summary[key]:.2f} ({summary[key + '_q1']:.2f}–{summary[key + '_q3']:.2f})"


def _milliseconds(seconds: float) -> str:
    return f"{1000 * seconds:.3g} ms"


def _elementwise_tables(result: dict) -> str:
    rows = result["rows"]
    compiled = "yes" if result["compiled_kernels"] else "no"
    by = {(r["activation"], r["implementation"]): r for r in rows}
    clone = _milliseconds(result["clone_seconds"])
    relu = _milliseconds(by[("relu", "native")]["forward_backward"]["seconds"])
    lines = [
        f"{result['numel']:,} {result['dtype']} elements, {result['rounds']} rounds; "
        f"compiled kernels: {compiled}",
        "Each ratio divides this row's time by its reference's from the same round; "
        "the table shows the median (quartiles) over rounds.",
        f"  ÷ clone        ÷ x.clone() of the same tensor ({clone})",
        f"  ÷ relu native  ÷ torch.relu forward+backward, the row relu native ({relu}): "
        "that row reads 1.00",
        "",
    ]
    table = [
        [
            r["activation"],
            r["implementation"],
            _ratio(r["forward"], "to_clone"),
            _ratio(r["forward_backward"], "to_clone"),
            _ratio(r["forward_backward"], "to_relu"),
            f"{r['saved_to_input']:.3f}",
        ]
        for r in rows
    ]
    headers = [
        "activation",
        "implementation",
        "fwd ÷ clone",
        "fwd+bwd ÷ clone",
        "fwd+bwd ÷ relu native",
        "saved/input",
    ]
    lines += [format_table(headers, table), "", _targets(rows)]
    return "\n".join(lines)


def _verdict(met: bool) -> str:
    return "ok" if met else "MISS"


def _targets(rows: list[dict]) -> str:
    """Per activation: the fused kernel against the issue's targets."""
    by = {(r["activation"], r["implementation"]): r for r in rows}
    table = []
    for name in dict.fromkeys(r["activation"] for r in rows):
        fused = by[(name, "fused")]["forward_backward"]
        # Ratios within each round (medians over rounds), as every other ratio here.
        speedup = 1 / fused["to_reference"]
        # An activation that is one ATen op already has no eager composition to beat.
        kernel = activation_info(name).kernel
        one_op = kernel is not None and kernel.single_op
        eager_verdict = "n/a, one op" if one_op else _verdict(speedup >= TARGET_EAGER_SPEEDUP)
        versus_native = fused.get("to_native")
        table.append(
            [
                name,
                f"{fused['to_relu']:.2f} {_verdict(fused['to_relu'] <= TARGET_TO_RELU)}",
                f"{speedup:.1f}x {eager_verdict}",
                f"{versus_native:.2f}" if versus_native is not None else "-",
                f"{by[(name, 'fused')]['saved_to_input']:.3f}",
            ]
        )
    headers = [
        "fused kernel",
        f"fwd+bwd ÷ relu native (≤ {TARGET_TO_RELU})",
        f"faster than eager (≥ {TARGET_EAGER_SPEEDUP:.0f}x)",
        "÷ its torch module",
        "saved/input",
    ]
    caption = (
        "The fused kernel's forward+backward against the targets, medians of per-round "
        "ratios:\n÷ relu native as above; faster than eager = the row reference's time ÷ the "
        "row fused's;\n÷ its torch module = the row fused's time ÷ the row native's "
        "(the same activation's torch module)."
    )
    return f"{caption}\n\n{format_table(headers, table)}"


def _training_table(result: dict) -> str:
    table = [
        [
            r["model"],
            r["activation"],
            f"{1000 * r['step_seconds']:.1f}",
            _ratio({k[5:]: v for k, v in r.items() if k.startswith("step_")}, "to_relu"),
            f"{r['peak_bytes'] / 2**20:.1f}",
            f"{r['peak_to_relu']:.3f} {'ok' if r['peak_to_relu'] <= TARGET_PEAK else 'over'}",
        ]
        for r in result["rows"]
    ]
    headers = [
        "model",
        "activation",
        "step ms",
        "step ÷ relu",
        "peak MiB",
        f"peak ÷ relu (≤ {TARGET_PEAK})",
    ]
    caption = (
        f"A step is forward, backward and Adam; {result['rounds']} rounds. The reference is "
        "the row relu (relulab's ReLU), which reads 1.00;\nrelu (torch) is nn.ReLU.\n"
        "  step ÷ relu  this row's step time ÷ the row relu's from the same round, "
        "median (quartiles) over rounds\n"
        "  peak ÷ relu  this row's peak memory in a step ÷ the row relu's"
    )
    return f"{caption}\n\n{format_table(headers, table)}"


def _sweep_tables(result: dict) -> str:
    """Per kind, one row per activation: the default path's time ÷ torch's at each size."""
    from relulab.plot.figure import elements_label

    parts = []
    for kind, title in (("forward_backward", "forward + backward"), ("forward", "forward")):
        rows = [[name, *(f"{median:.2f}" for median, _, _ in kinds[kind])]
                for name, kinds in result["native_ratios"].items()]  # fmt: skip
        headers = ["activation", *map(elements_label, result["sizes"])]
        parts.append(f"{title}: relulab's default path ÷ torch's module, {result['dtype']} "
                     f"(median over {result['rounds']} round{'s' * (result['rounds'] != 1)}; "
                     f"target ≤ {TARGET_TO_NATIVE})\n"
                     + format_table(headers, rows))  # fmt: skip
    return "\n\n".join(parts)


def _plot(result: dict, path: str) -> str:
    from relulab.plot import plot_speed, png_path

    if "native_ratios" in result:
        target = TARGET_TO_NATIVE
    else:
        target = TARGET_PEAK if "model" in result["rows"][0] else TARGET_TO_RELU
    try:
        return str(plot_speed(result, path, target=target))
    except OSError as error:
        # The user's own file (checked before the run, but it may have gone since) is their
        # mistake; any other OSError (a font cache, say) stays a bug report.
        if error.filename is None or Path(os.fsdecode(error.filename)) != png_path(path):
            raise
        raise UserError(f"cannot write {error.filename}: {error.strerror or error}") from None


def run(args: argparse.Namespace) -> int:
    from relulab import speed
    from relulab.plot.figure import png_path

    if args.ffn:
        return run_ffn(args)
    _refuse_ffn_options(args)
    if args.model is not None and args.model not in MODELS:
        close = difflib.get_close_matches(args.model, MODELS, n=1)
        hint = (
            f"; did you mean {close[0]!r}?"
            if close
            else f" (choose from {', '.join(MODELS)}; a checkpoint needs --ffn)"
        )
        raise UserError(f"unknown --model value {args.model!r}{hint}")
    if args.rounds is None:
        args.rounds = 7
    if args.sweep and (args.model or args.numel):
        raise UserError(
            f"--sweep times every size itself; drop {'--model' if args.model else '--numel'}"
        )
    if args.numel is None:
        args.numel = 1 << 24
    for option in ("numel", "threads", "rounds"):
        if getattr(args, option) < 1:
            raise UserError(f"--{option} must be at least 1, got {getattr(args, option)}")
    if args.plot is not None:
        check_png_output(args.plot, option="--plot")
    if args.names:
        names = args.names
    elif args.sweep:
        names = speed.with_native_module()
    else:
        names = [i.name for i in registered() if i.kernel is not None]
    quiet = args.json

    def progress(message: str) -> None:
        if not quiet:
            print(f"  {message}", file=sys.stderr, flush=True)

    if args.sweep:
        result = speed.sweep(
            names, sizes=speed.SWEEP_SIZES, dtype=DTYPES[args.dtype], threads=args.threads,
            rounds=args.rounds, progress=progress,
        )  # fmt: skip
        result["machine"] = _machine(args.threads)
        text = f"{result['machine']}\n{_sweep_tables(result)}"
    elif args.model:
        models = ("mlp", "cnn") if args.model == "both" else (args.model,)
        result = speed.training_step(
            names, models=models, threads=args.threads, rounds=args.rounds, progress=progress
        )
        result["machine"] = _machine(args.threads)
        text = f"training steps on {result['machine']}\n{_training_table(result)}"
    else:
        result = speed.elementwise(
            names,
            numel=args.numel,
            dtype=DTYPES[args.dtype],
            threads=args.threads,
            rounds=args.rounds,
            progress=progress,
        )
        result["machine"] = _machine(args.threads)
        text = f"{result['machine']}\n{_elementwise_tables(result)}"
    if args.plot:
        result["plot"] = str(png_path(args.plot))  # drawn below
    # The figures first: a plot that fails after minutes of timing loses none of them.
    if args.json:
        print_json(result)
    else:
        print(text)
    sys.stdout.flush()
    if args.plot:
        _plot(result, args.plot)
        if not args.json:
            print(f"\nplot: {result['plot']}")
    return 0


# --- relulab speed --ffn -----------------------------------------------------------------

DEFAULT_SIZES = ("1024x4096", "2048x8192")
DEFAULT_SPARSITIES = (0.5, 0.8, 0.9, 0.95)
FFN_ONLY = ("sizes", "sparsities", "input_sparsity", "gated", "paths", "rank", "top_k")
PROMPT_TOKENS = 16
SPARSITY_WINDOWS = 16  # validation windows of block_size tokens for the measured sparsity


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def _refuse_ffn_options(args: argparse.Namespace) -> None:
    for option in FFN_ONLY:
        if getattr(args, option) not in (None, False):
            raise UserError(f"{_flag(option)} needs --ffn")


def _size(text: str) -> tuple[int, int]:
    found = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if found is None or min(int(found.group(1)), int(found.group(2))) < 1:
        raise UserError(f"bad --sizes value {text!r}: expected DxHIDDEN, e.g. 1024x4096")
    return int(found.group(1)), int(found.group(2))


def _check_ffn_args(args: argparse.Namespace) -> None:
    if args.names:
        raise UserError(f"--ffn times FFNs, not activations: drop {' '.join(args.names)}")
    if args.sweep or args.numel is not None:
        raise UserError(
            f"--ffn times FFNs, not activations: drop {'--sweep' if args.sweep else '--numel'}"
        )
    if args.rounds is None:
        args.rounds = 11
    for option in ("threads", "rounds", "tokens"):
        if getattr(args, option) < 1:
            raise UserError(f"--{option} must be at least 1, got {getattr(args, option)}")
    for value in args.sparsities or ():
        if not 0 < value < 1:
            raise UserError(f"--sparsities must be in (0, 1), got {value:g}")
    if args.input_sparsity is not None and not 0 <= args.input_sparsity < 1:
        raise UserError(f"--input-sparsity must be in [0, 1), got {args.input_sparsity:g}")
    for path in args.paths or ():
        if path not in FFN_PATHS:
            close = difflib.get_close_matches(path, FFN_PATHS, n=1)
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else f"; choose from {', '.join(FFN_PATHS)}"
            )
            raise UserError(f"unknown FFN path {path!r}{hint}")
    for option in ("rank", "top_k"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            raise UserError(f"{_flag(option)} must be at least 1, got {getattr(args, option)}")
    if args.model is None:
        for option in ("rank", "top_k"):
            if getattr(args, option) is not None:
                raise UserError(f"{_flag(option)} needs --model CHECKPOINT")


def _ffn_table(result: dict) -> str:
    from relulab.transformers.ffn_speed import SUMMARY_HEADERS, summary_rows

    lines = [f"  {path:<10} {text}" for path, text in result["paths"].items()]
    return "\n".join([*lines, "", format_table(SUMMARY_HEADERS, summary_rows(result))])


def _load(load: dict) -> str:
    def three(values) -> str:
        return "n/a" if values is None else ", ".join(f"{v:.2f}" for v in values)

    return (
        f"load average (1, 5, 15 min) before {three(load['before'])}, after "
        f"{three(load['after'])}: only a quiet machine (load well under the threads) times "
        "gathers fairly"
    )


FFN_CAPTION = (
    "One token (batch 1) through each path; {rounds} rounds, the calls round-robin.\n"
    "speed-up = dense's time ÷ the path's, both from the same round (dense: the FFN as it is, "
    "the row dense, which reads 1.00);\nmedian (q1-q3) over rounds. bound = the weights dense "
    "reads ÷ the weights the path reads (the memory-bandwidth bound);\nof bound = speed-up "
    "÷ bound. sparsity: inactive neurons; input: zero FFN inputs (up_down only).\n"
    "ms and tokens/s: one FFN layer's time per token, and the tokens per second of that layer "
    "alone (1/time; a model's rate is lower, its other layers count too).\n"
)


def _model_text(model: dict) -> str:

    decode, predictor = model["decode"], model["predictor"]
    lines = [
        f"model {model['checkpoint']}: {model['config']}",
        f"measured on {model['windows']} validation windows: FFN sparsity "
        f"{model['sparsity']:.3f}, FFN input sparsity {model['input_sparsity']:.3f}",
        "",
        "FFN paths at the model's measured sparsity and input sparsity:",
        format_table(
            __import__("relulab.transformers.ffn_speed", fromlist=["x"]).SUMMARY_HEADERS,
            __import__("relulab.transformers.ffn_speed", fromlist=["x"]).summary_rows(model["ffn"]),
        ),
        "",
        f"greedy decoding of {decode['tokens']} tokens after a {decode['prompt_tokens']}-token "
        f"prompt, KV cache, {decode['rounds']} rounds; speed-up = dense's time ÷ the mode's, "
        "same round:",
    ]
    rows = [
        [
            mode,
            f"{row['tokens_per_second']:.1f}",
            f"{row['speedup']:.2f} ({row['speedup_q1']:.2f}-{row['speedup_q3']:.2f})",
            "yes" if decode["same_tokens"][mode] else "no",
        ]
        for mode, row in decode["modes"].items()
    ]
    lines += [format_table(["mode", "tokens/s", "speed-up (q1-q3)", "dense's tokens"], rows)]
    chosen = (
        f"top {predictor['top_k']}"
        if "top_k" in predictor
        else f"logit > {predictor['threshold']:g}"
    )
    lines += [
        "",
        f"predictor (rank {predictor['rank']}, {chosen} of {model['hidden']} neurons), "
        "recall = active neurons predicted ÷ active neurons, on validation windows:",
        format_table(
            ["layer", "recall", "precision", "active", "predicted"],
            [
                [
                    r["layer"],
                    f"{r['recall']:.3f}",
                    f"{r['precision']:.3f}",
                    f"{r['active_fraction']:.3f}",
                    f"{r['predicted_fraction']:.3f}",
                ]
                for r in predictor["layers"]
            ],
        ),
        f"validation loss: dense {predictor['val_loss_dense']:.4f}, predictor "
        f"{predictor['val_loss_predictor']:.4f} (change {predictor['val_loss_change']:+.4f} "
        "nats/char)",
    ]
    return "\n".join(lines)


def _measure_model(args: argparse.Namespace, sizes, progress) -> dict:
    """The checkpoint's sparsities, its FFN paths timed there, its decoding and predictor."""
    from relulab.transformers.corpus import load_corpus
    from relulab.transformers.decode import decode_speed, predictor_effect
    from relulab.transformers.ffn_speed import ffn_speed
    from relulab.transformers.sparsity import measure_sparsity
    from relulab.transformers.train import load_checkpoint, windows

    model, found = load_checkpoint(args.model)
    corpus = load_corpus()
    config = model.config
    if config.vocab_size != len(corpus.vocab):
        raise UserError(
            f"{args.model} has a vocabulary of {config.vocab_size}, the corpus "
            f"{len(corpus.vocab)}: not a model of the shipped text"
        )
    if args.top_k is not None and args.top_k > config.ffn_hidden:
        raise UserError(f"--top-k must be at most the FFN's {config.ffn_hidden} neurons")
    torch.set_num_threads(args.threads)
    x, _ = windows(
        corpus.val, config.block_size, SPARSITY_WINDOWS, torch.Generator().manual_seed(0)
    )
    progress("measuring the model's sparsity")
    report = measure_sparsity(model, x, windows=(1,))
    sparsity = report.sparsity
    input_sparsity = sum(layer.input_sparsity for layer in report.layers) / len(report.layers)
    # ffn_speed's sparsities are in [0, 1): a model with no zeros at all is timed at 0.
    sparsity = min(sparsity, 0.999)
    progress("timing the FFN paths at the model's sparsity")
    (d, hidden), *rest = sizes
    at_model = ffn_speed(
        d, hidden, (sparsity,), extra_sizes=rest, input_sparsity=min(input_sparsity, 0.999),
        gated=config.gated, paths=args.paths, threads=args.threads, rounds=args.rounds,
        progress=progress,
    )  # fmt: skip
    rank = args.rank or max(8, config.n_embd // 16)
    top_k = args.top_k or max(1, round((1 - sparsity) * config.ffn_hidden))
    progress("fitting a predictor per layer")
    effect = predictor_effect(model, corpus.train, corpus.val, rank, top_k=top_k)
    tokens = min(args.tokens, config.block_size - PROMPT_TOKENS)
    if tokens < 1:
        raise UserError(f"the model's block_size {config.block_size} leaves no room to decode")
    progress(f"decoding {tokens} tokens per mode")
    decode = decode_speed(
        model, corpus.val[:PROMPT_TOKENS], tokens, predictors=effect.predictors, top_k=top_k,
        rounds=min(args.rounds, 5), threads=args.threads, progress=progress,
    )  # fmt: skip
    return {
        "checkpoint": str(args.model),
        "config": (
            f"{config.n_layer} layers, d={config.n_embd}, hidden={config.ffn_hidden}, "
            f"{config.activation}, relufied {found.get('relufied') or 'no'}"
        ),
        "hidden": config.ffn_hidden,
        "windows": SPARSITY_WINDOWS,
        "sparsity": report.sparsity,
        "input_sparsity": input_sparsity,
        "layers": [
            {"name": r.name, "sparsity": r.sparsity, "input_sparsity": r.input_sparsity}
            for r in report.layers
        ],
        "ffn": at_model,
        "decode": decode,
        "predictor": effect.to_dict(),
    }


def run_ffn(args: argparse.Namespace) -> int:
    """``relulab speed --ffn``: the sweep over sparsities, and a checkpoint's figures."""
    from relulab.plot.figure import png_path
    from relulab.transformers.ffn_speed import ffn_speed

    _check_ffn_args(args)
    sizes = [_size(text) for text in args.sizes or DEFAULT_SIZES]
    if args.plot is not None:
        check_png_output(args.plot, option="-o/--plot")
    if args.model is not None:
        from relulab.transformers.train import load_checkpoint

        _, found = load_checkpoint(args.model)  # not ours: one line, before any timing
        if not found.get("relufied"):
            print(
                f"relulab speed: warning: {args.model} is not relufied: its FFN activations are "
                "rarely exactly 0; relulab relufy makes a model whose sparsity the paths use",
                file=sys.stderr,
            )

    def progress(message: str) -> None:
        if not args.json:
            print(f"  {message}", file=sys.stderr, flush=True)

    (d, hidden), *rest = sizes
    result = ffn_speed(
        d, hidden, args.sparsities or DEFAULT_SPARSITIES, extra_sizes=rest,
        input_sparsity=args.input_sparsity, gated=args.gated, paths=args.paths,
        threads=args.threads, rounds=args.rounds, progress=progress,
    )  # fmt: skip
    result["machine"] = _machine(args.threads)
    if args.model is not None:
        result["model"] = _measure_model(args, sizes, progress)
    if args.plot:
        result["plot"] = str(png_path(args.plot))
    if args.json:
        print_json(result)
    else:
        gated = "gated (reglu) " if args.gated else ""
        print(f"{gated}FFN paths on {result['machine']}\n{_load(result['load_average'])}")
        print(FFN_CAPTION.format(rounds=result["rounds"]))
        print(_ffn_table(result))
        if "model" in result:
            print(f"\n{_model_text(result['model'])}")
    sys.stdout.flush()
    if args.plot:
        from relulab.plot.ffn_speed import plot_ffn_speed

        model = result.get("model", {}).get("ffn")
        try:
            plot_ffn_speed(result, args.plot, model)
        except OSError as error:
            if error.filename is None or Path(os.fsdecode(error.filename)) != png_path(args.plot):
                raise
            raise UserError(f"cannot write {error.filename}: {error.strerror or error}") from None
        if not args.json:
            print(f"\nplot: {result['plot']}")
    return 0
