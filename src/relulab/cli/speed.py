"""``relulab speed``: time and memory of the fused kernels against their alternatives."""

from __future__ import annotations

import argparse
import os
import platform
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


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "speed",
        help="time fused kernels against reference, native and timm-style versions",
        description="Forward and forward+backward time of each activation's implementations on "
        "one tensor, side by side with a clone (memory-bandwidth yardstick) and native ReLU, "
        "plus the bytes each keeps for backward. With --model: whole training steps.",
        epilog="examples:\n  relulab speed\n  relulab speed golu mish gelu --numel 4194304\n"
        "  relulab speed --model both\n  relulab speed relu golu --json --plot speed.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="activations (default: every fused one)"
    )
    parser.add_argument(
        "--numel", type=int, default=1 << 24, help="elements per tensor (default 2^24)"
    )
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument(
        "--model", choices=("mlp", "cnn", "both"), help="time training steps instead"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--plot", metavar="FILE", help="also draw the ratios to a PNG (needs the plot extra)"
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


def _plot(result: dict, path: str) -> str:
    from relulab.plot import plot_speed, png_path

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

    for option in ("numel", "threads", "rounds"):
        if getattr(args, option) < 1:
            raise UserError(f"--{option} must be at least 1, got {getattr(args, option)}")
    if args.plot is not None:
        check_png_output(args.plot, option="--plot")
    names = args.names or [i.name for i in registered() if i.kernel is not None]
    quiet = args.json

    def progress(message: str) -> None:
        if not quiet:
            print(f"  {message}", file=sys.stderr, flush=True)

    if args.model:
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
