"""README tooling: the README's numbers from committed benchmark runs, so they cannot drift.

A generated span sits between two HTML comments (hidden when the README is rendered) that
name its kind and its source::

    <!-- run:time docs/results/X-quick -->65 s on 2 CPUs (AMD EPYC)<!-- /run -->
    <!-- run:excerpt docs/results/X-quick mnist1d -->
    | rank | activation | ... |
    <!-- /run -->
    <!-- run:deltas docs/results/X-full -->
    ...
    <!-- /run -->

``speed-targets`` and ``speed-training`` (tables), ``speed-met`` and ``speed-machine``
(inline) render ``relulab speed --json`` output (the
elementwise and the ``--model both`` result) as the README's tables.

``time`` is the run's wall time (first trial's start to last trial's end) and machine;
``excerpt`` the task's report rows (the top three, the baseline, the last); ``deltas`` one
row per activation with its difference from the baseline on every task. A new run is
committed, the path in the comment changed, and ``python scripts/update_readme.py`` rewrites
the spans.
"""

from __future__ import annotations

import csv
import json
import math
import re
from datetime import datetime
from pathlib import Path

from relulab.bench.report import format_p  # as report.md writes p, so the two agree

ROOT = Path(__file__).resolve().parent.parent
SPAN = re.compile(r"(<!-- run:([\w-]+) (\S+)([^>\n]*?) -->)(.*?)(<!-- /run -->)", re.S)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "summary.csv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _number(text: str) -> float:
    """A summary.csv cell; an empty or "n/a" cell is NaN."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def wall_seconds(run: Path) -> float:
    """From the run's creation to its last trial's end."""
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    start = datetime.fromisoformat(config["created"])
    ends = [
        datetime.fromisoformat(json.loads(path.read_text(encoding="utf-8"))["finished"])
        for path in (run / "trials").glob("*/result.json")
    ]
    return (max(ends) - start).total_seconds()


def machine(run: Path) -> str:
    platform = json.loads((run / "config.json").read_text(encoding="utf-8"))["platform"]
    cpu = platform.get("cpu_model") or platform.get("machine", "")
    return f"{platform['cpu_count']} CPUs ({cpu})" if cpu else f"{platform['cpu_count']} CPUs"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def run_time(run: Path) -> str:
    return f"{_duration(wall_seconds(run))} on {machine(run)}"


def _fixed(value: float, digits: int, sign: bool = False) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _verdict(row: dict[str, str]) -> str:
    if row["activation"] == row["baseline"]:
        return "baseline"
    if math.isnan(_number(row["p_holm"])):
        return "untested"
    return "significant" if row["significant"] == "True" else "not significant"


def excerpt(run: Path, task: str) -> str:
    """The task's top three, its baseline and its last row, as report.md shows them."""
    rows = sorted((r for r in _rows(run) if r["task"] == task), key=lambda r: int(r["rank"]))
    if not rows:
        raise SystemExit(f"{run}: no task {task!r} in summary.csv")
    keep = rows[:3] + [r for r in rows[3:] if r["activation"] == r["baseline"]] + rows[-1:]
    keep = list({id(r): r for r in keep}.values())
    header = (
        "| rank | activation | accuracy % (mean ± std) | 95% CI | Δ vs baseline | p (Holm) "
        "| verdict | PD top-1 % | ECE | dead % |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [header]
    previous = 0
    for r in keep:
        if int(r["rank"]) > previous + 1:
            lines.append("| … |" + " |" * 9)
        previous = int(r["rank"])
        score = {k: 100 * _number(r[k]) for k in ("score_mean", "score_std")}
        low, high = 100 * _number(r["score_ci_low"]), 100 * _number(r["score_ci_high"])
        lines.append(
            f"| {r['rank']} | {r['activation']} | {_fixed(score['score_mean'], 2)} ± "
            f"{_fixed(score['score_std'], 2)} | [{_fixed(low, 2)}, {_fixed(high, 2)}] | "
            f"{_fixed(100 * _number(r['delta_vs_baseline']), 2, sign=True)} | "
            f"{format_p(_number(r['p_holm']))} | {_verdict(r)} | "
            f"{_fixed(100 * _number(r['pd_top1']), 1)} | {_fixed(_number(r['ece_mean']), 3)} | "
            f"{_fixed(100 * _number(r['dead_fraction_mean']), 1)} |"
        )
    return "\n".join(lines)


def deltas(run: Path) -> str:
    """Per activation and task: accuracy, and the difference from the baseline with p (Holm)."""
    rows = _rows(run)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))["config"]
    activations = [a for a in config["activations"] if any(r["activation"] == a for r in rows)]
    cell = {(r["task"], r["activation"]): r for r in rows}
    lines = [
        "| activation | " + " | ".join(tasks) + " |",
        "|---|" + "---|" * len(tasks),
    ]
    for activation in activations:
        cells = []
        for task in tasks:
            r = cell.get((task, activation))
            if r is None:
                cells.append("")
                continue
            text = f"{100 * _number(r['score_mean']):.2f}%"
            if activation != r["baseline"]:
                p = _number(r["p_holm"])
                mark = "**" if r["significant"] == "True" else ""
                delta = 100 * _number(r["delta_vs_baseline"])
                if not math.isnan(p):
                    text += f" ({mark}{delta:+.2f}, p {format_p(p)}{mark})"
            cells.append(text)
        lines.append(f"| {activation} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def speed_targets(path: Path) -> str:
    """Per fused kernel: its forward+backward against the kernels issue's targets."""
    from relulab.cli.speed import TARGET_EAGER_SPEEDUP, TARGET_TO_RELU
    from relulab.registry import activation_info

    rows = _json(path)["rows"]
    by = {(r["activation"], r["implementation"]): r for r in rows}
    lines = [
        f"| fused kernel | fwd+bwd ÷ relu native (≤ {TARGET_TO_RELU}) | faster than eager "
        f"(≥ {TARGET_EAGER_SPEEDUP:.0f}×) | ÷ its torch module | saved / input |",
        "|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["activation"] for r in rows):
        fused = by[(name, "fused")]
        timing = fused["forward_backward"]
        to_relu = timing["to_relu"]
        speedup = 1 / timing["to_reference"]
        kernel = activation_info(name).kernel
        if kernel is not None and kernel.single_op:
            eager = f"{speedup:.1f}× n/a, one op"
        else:
            eager = f"{speedup:.1f}× {'ok' if speedup >= TARGET_EAGER_SPEEDUP else 'MISS'}"
        native = timing.get("to_native")
        lines.append(
            f"| {name} | {to_relu:.2f} {'ok' if to_relu <= TARGET_TO_RELU else 'MISS'} | "
            f"{eager} | {'-' if native is None else f'{native:.2f}'} | "
            f"{fused['saved_to_input']:.3f} |"
        )
    return "\n".join(lines)


def speed_training(path: Path) -> str:
    """Per activation: step time and peak memory of each model, ÷ relulab ReLU's."""
    from relulab.cli.speed import TARGET_PEAK

    rows = _json(path)["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    cell = {(r["model"], r["activation"]): r for r in rows}
    header = ["activation"]
    for model in models:
        header += [f"{model.upper()} step ÷ relu", f"{model.upper()} peak ÷ relu (≤ {TARGET_PEAK})"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for name in dict.fromkeys(r["activation"] for r in rows):
        cells = [name]
        for model in models:
            r = cell[(model, name)]
            peak = r["peak_to_relu"]
            cells += [
                f"{r['step_to_relu']:.2f}",
                f"{peak:.3f} {'ok' if peak <= TARGET_PEAK else 'over'}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def speed_met(path: Path) -> str:
    """How many fused kernels meet the ≤ 1.15× native ReLU target: "13 of 30"."""
    from relulab.cli.speed import TARGET_TO_RELU

    rows = [r for r in _json(path)["rows"] if r["implementation"] == "fused"]
    met = sum(r["forward_backward"]["to_relu"] <= TARGET_TO_RELU for r in rows)
    return f"{met} of {len(rows)}"


def geometry_benchmark(path: Path) -> str:
    """The exact partition against the grid probe, and regions/s of the other nets."""
    result = _json(path)
    grid = result["grid"]
    lines = [
        f"| net | regions | exact partition | {grid}×{grid} grid probe | probe ÷ exact | "
        "regions/s |",
        "|---|---|---|---|---|---|",
        f"| {result['depth']}x{result['width']} MLP, [−2, 2]² | {result['regions']:,} | "
        f"{result['partition_s']:.3f} s | {result['probe_s']:.2f} s "
        f"({result['probe_patterns']:,} patterns) | **{result['ratio']:.1f}×** | "
        f"{result['regions_per_s']:,.0f} |",
    ]
    for other in result["others"]:
        lines.append(
            f"| {other['net']} | {other['regions']:,} | {other['partition_s']:.3f} s | | | "
            f"{other['regions_per_s']:,.0f} |"
        )
    return "\n".join(lines)


def speed_machine(path: Path) -> str:
    return _json(path)["machine"]


def replace_spans(text: str, root: Path = ROOT) -> str:
    """``text`` with every run span regenerated from the run it names."""

    def render(match: re.Match) -> str:
        opening, kind, path, rest, _, closing = match.groups()
        run = root / path
        if kind == "time":
            body = run_time(run)
        elif kind == "excerpt":
            body = "\n\n" + excerpt(run, rest.strip()) + "\n\n"
        elif kind == "deltas":
            body = "\n\n" + deltas(run) + "\n\n"
        elif kind == "speed-met":
            body = speed_met(run)
        elif kind == "speed-machine":
            body = speed_machine(run)
        elif kind == "speed-targets":
            body = "\n\n" + speed_targets(run) + "\n\n"
        elif kind == "speed-training":
            body = "\n\n" + speed_training(run) + "\n\n"
        elif kind == "geometry-benchmark":
            body = "\n\n" + geometry_benchmark(run) + "\n\n"
        else:
            raise SystemExit(f"unknown README span kind {kind!r}")
        return opening + body + closing

    return SPAN.sub(render, text)
