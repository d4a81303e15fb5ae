"""Turn a run directory's finished trials into summary.csv, report.md and plots.

Everything here is recomputed from the trial files, so ``relulab report DIR`` can re-render a
run at any time, including a partial one.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from relulab.bench import rundir, stats

SIGNIFICANCE = 0.05


@dataclass
class Trials:
    """The finished trials of a run, grouped by task and activation (seed order)."""

    config: dict[str, Any]
    results: dict[str, dict[str, list[dict[str, Any]]]]  # task -> activation -> results
    curves: dict[str, dict[str, list[list[dict[str, Any]]]]]  # ... -> per-seed epoch lines
    predictions: dict[str, dict[str, list[np.ndarray]]]  # ... -> per ok seed


def load_trials(run: Path) -> Trials:
    config = rundir.read_json(run / rundir.CONFIG)
    results: dict = defaultdict(lambda: defaultdict(list))
    curves: dict = defaultdict(lambda: defaultdict(list))
    predictions: dict = defaultdict(lambda: defaultdict(list))
    for trial_id in config["trials"]:
        directory = rundir.trial_directory(run, trial_id)
        if not (directory / rundir.RESULT).is_file():
            continue
        result = rundir.read_json(directory / rundir.RESULT)
        task, activation = result["task"], result["activation"]
        results[task][activation].append(result)
        lines = (directory / rundir.METRICS).read_text().splitlines()
        curves[task][activation].append([json.loads(line) for line in lines])
        if result["status"] == "ok":
            predictions[task][activation].append(
                np.load(directory / rundir.PREDICTIONS, allow_pickle=False)
            )
    return Trials(config, results, curves, predictions)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _layer_mean(results: list[dict[str, Any]], key: str) -> float:
    """Mean over trials of the mean over activation layers."""
    return _mean([np.mean([layer[key] for layer in r["layers"]]) for r in results if r["layers"]])


def summarize(trials: Trials) -> list[dict[str, Any]]:
    """One row per (task, activation): accuracy statistics, paired test against the baseline
    (Holm-corrected within the task), prediction difference, calibration, cost."""
    baseline = trials.config["config"].get("baseline", "relu")
    order = trials.config["config"]["activations"]
    rows = []
    for task, by_activation in trials.results.items():
        by_seed = {
            activation: {
                r["seed"]: (r["test_accuracy"] if r["status"] == "ok" else math.nan)
                for r in results
            }
            for activation, results in by_activation.items()
        }
        raw_p, task_rows = {}, []
        for activation in [a for a in order if a in by_activation]:
            results = by_activation[activation]
            accuracy = stats.summary([r["test_accuracy"] for r in results if r["status"] == "ok"])
            row = {
                "task": task,
                "activation": activation,
                "trials": len(results),
                "diverged": sum(r["status"] != "ok" for r in results),
                "accuracy_n": accuracy["n"],
                "accuracy_mean": accuracy["mean"],
                "accuracy_std": accuracy["std"],
                "accuracy_ci_low": accuracy["ci_low"],
                "accuracy_ci_high": accuracy["ci_high"],
            }
            if activation != baseline and baseline in by_seed:
                seeds = sorted(set(by_seed[activation]) & set(by_seed[baseline]))
                difference, p = stats.paired_t_test(
                    [by_seed[activation][s] for s in seeds], [by_seed[baseline][s] for s in seeds]
                )
                row["delta_vs_baseline"], raw_p[activation] = difference, p
            else:
                row["delta_vs_baseline"] = math.nan
            row["p_value"] = raw_p.get(activation, math.nan)
            pd = stats.prediction_difference(trials.predictions[task].get(activation, []))
            ok = [r for r in results if r["status"] == "ok"]
            row.update(
                {
                    "pd_pairs": pd["pairs"],
                    "pd_top1": pd["top1"],
                    "pd_total_variation": pd["total_variation"],
                    "test_loss_mean": _mean([r["test_loss"] for r in ok]),
                    "ece_mean": _mean([r["ece"] for r in ok]),
                    "dead_fraction_mean": _layer_mean(ok, "dead_fraction"),
                    "sparsity_mean": _layer_mean(ok, "sparsity"),
                    "seconds_per_epoch": _mean(
                        [r["timing"]["mean_seconds_per_epoch"] for r in results]
                    ),
                    "saved_bytes_per_step": _mean([r["saved_bytes_per_step"] for r in results]),
                }
            )
            task_rows.append(row)
        adjusted = stats.holm(raw_p)
        ranked = sorted(
            task_rows,
            key=lambda r: -r["accuracy_mean"] if math.isfinite(r["accuracy_mean"]) else math.inf,
        )
        for rank, row in enumerate(ranked, 1):
            row["rank"] = rank
            row["p_holm"] = adjusted.get(row["activation"], math.nan)
            row["significant"] = (
                bool(row["p_holm"] < SIGNIFICANCE) if math.isfinite(row["p_holm"]) else False
            )
        rows.extend(ranked)
    return rows


CSV_FIELDS = [
    "task", "activation", "rank", "trials", "diverged", "accuracy_n", "accuracy_mean",
    "accuracy_std", "accuracy_ci_low", "accuracy_ci_high", "delta_vs_baseline", "p_value",
    "p_holm", "significant",
    "pd_pairs", "pd_top1", "pd_total_variation", "test_loss_mean", "ece_mean", "dead_fraction_mean",
    "sparsity_mean", "seconds_per_epoch", "saved_bytes_per_step",
]  # fmt: skip


def summary_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def _pct(value: float, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f}" if math.isfinite(value) else "n/a"


def _p(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def task_table(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Rows of the per-task table as printed by the CLI and written to report.md."""
    table = []
    for r in rows:
        verdict = (
            "significant"
            if r["significant"]
            else ("—" if not math.isfinite(r["p_holm"]) else "not significant")
        )
        table.append(
            [
                str(r["rank"]),
                r["activation"],
                f"{_pct(r['accuracy_mean'], 2)} ± {_pct(r['accuracy_std'], 2)}",
                f"[{_pct(r['accuracy_ci_low'], 2)}, {_pct(r['accuracy_ci_high'], 2)}]",
                f"{'+' if r['delta_vs_baseline'] > 0 else ''}{_pct(r['delta_vs_baseline'], 2)}",
                _p(r["p_holm"]),
                verdict,
                _pct(r["pd_top1"]),
                f"{r['ece_mean']:.3f}" if math.isfinite(r["ece_mean"]) else "n/a",
                _pct(r["dead_fraction_mean"]),
                f"{1000 * r['seconds_per_epoch']:.0f}",
                f"{r['saved_bytes_per_step'] / 1024:.0f}",
            ]
        )
    return table


TABLE_HEADERS = [
    "rank", "activation", "accuracy % (mean ± std)", "95% CI", "Δ vs baseline", "p (Holm)",
    "verdict", "PD top-1 %", "ECE", "dead %", "ms/epoch", "saved KiB/step",
]  # fmt: skip


def _markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _findings(task: str, rows: list[dict[str, Any]], baseline: str, seeds: int) -> str:
    tested = [r for r in rows if math.isfinite(r["p_holm"])]
    better = [r["activation"] for r in tested if r["significant"] and r["delta_vs_baseline"] > 0]
    worse = [r["activation"] for r in tested if r["significant"] and r["delta_vs_baseline"] < 0]
    parts = [
        f"Paired t-tests against {baseline} over {seeds} seeds, Holm-corrected, α = {SIGNIFICANCE}:"
    ]
    if not tested:
        parts.append("nothing could be tested (fewer than two paired seeds, or no variance).")
    elif not better and not worse:
        parts.append(
            f"no activation differs significantly from {baseline} on {task} (not significant)."
        )
    else:
        if better:
            parts.append(f"significantly better than {baseline}: {', '.join(better)}.")
        if worse:
            parts.append(f"significantly worse than {baseline}: {', '.join(worse)}.")
    diverged = [f"{r['activation']} ({r['diverged']})" for r in rows if r["diverged"]]
    if diverged:
        parts.append(f"Diverged trials, left out of the statistics: {', '.join(diverged)}.")
    return " ".join(parts)


def report_markdown(trials: Trials, rows: list[dict[str, Any]], plots: list[str]) -> str:
    config = trials.config
    settings = config["config"]
    versions = ", ".join(f"{k} {v}" for k, v in sorted(config["versions"].items()))
    finished = sum(len(r) for by_act in trials.results.values() for r in by_act.values())
    lines = [
        f"# relulab bench: {settings['name']}",
        "",
        f"Created {config['created']}; {finished} of {len(config['trials'])} trials finished. "
        f"Suite {settings['suite']}, {settings['seeds']} seeds, baseline {settings['baseline']}.",
        "",
        f"Versions: {versions}. Git: {config['git'].get('commit') or 'unknown'}"
        + (" (uncommitted changes)" if config["git"].get("dirty") else "")
        + f". Platform: {config['platform']['system']}, {config['platform']['cpu_count']} CPUs.",
        "",
        "Accuracy is on each task's fixed test split. PD top-1 is the fraction of test examples "
        "on which two seeds' models disagree (mean over seed pairs). Dead units never have a "
        "positive pre-activation on the training set. ms/epoch is training time; saved KiB/step "
        "is what autograd keeps for backward in one step, weights and inputs excluded.",
    ]
    for task in trials.results:
        task_rows = [r for r in rows if r["task"] == task]
        lines += ["", f"## {task}", "", _markdown_table(TABLE_HEADERS, task_table(task_rows)), ""]
        lines.append(_findings(task, task_rows, settings["baseline"], settings["seeds"]))
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def render(run: Path) -> list[dict[str, Any]]:
    """Write summary.csv, report.md and the plots of ``run``; return the summary rows."""
    from relulab.bench import plots  # matplotlib is imported there, lazily

    trials = load_trials(run)
    rows = summarize(trials)
    rundir.write_text_atomic(run / "summary.csv", summary_csv(rows))
    written = plots.draw_all(run, trials, rows)
    rundir.write_text_atomic(run / "report.md", report_markdown(trials, rows, written))
    return rows
