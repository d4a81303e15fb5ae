"""Turn a run directory's finished trials into summary.csv, report.md and plots.

Everything here is recomputed from the trial files, so ``relulab report DIR`` can re-render a
run at any time, including a partial one.
"""

from __future__ import annotations

import contextlib
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
from relulab.errors import UserError
from relulab.registry import did_you_mean, format_spec, parse_spec

SIGNIFICANCE = 0.05
DEFAULT_BASELINE = "relu"  # the runner's default when relu is compared, else the first


@dataclass
class Trials:
    """The finished trials of a run, grouped by task and activation."""

    config: dict[str, Any]
    results: dict[str, dict[str, list[dict[str, Any]]]]  # task -> activation -> results
    curves: dict[str, dict[str, list[list[dict[str, Any]]]]]  # ... -> per ok seed, epoch lines
    predictions: dict[str, dict[str, list[np.ndarray]]]  # ... -> per ok seed

    def task_info(self, task: str) -> tuple[str, str]:
        """(metric, description) of a task, as its trials recorded them."""
        first = next(iter(self.results[task].values()))[0]
        return first.get("metric", "accuracy"), first.get("task_description", "")

    def task_schedule(self, task: str) -> str:
        """How the task's trials trained ("" for runs from before schedules were recorded)."""
        first = next(iter(self.results[task].values()))[0]
        return first.get("schedule", {}).get("text", "")


def load_trials(run: Path, predictions: bool = True) -> Trials:
    """The finished trials of ``run``; without their test predictions (the largest files)
    where ``predictions`` is False, for what needs only the results."""
    config = rundir.read_config(run)
    results: dict = defaultdict(lambda: defaultdict(list))
    curves: dict = defaultdict(lambda: defaultdict(list))
    kept: dict = defaultdict(lambda: defaultdict(list))
    for trial_id in config["trials"]:
        directory = rundir.trial_directory(run, trial_id)
        if not rundir.is_finished(run, trial_id):
            continue
        result = rundir.read_json(directory / rundir.RESULT)
        task, activation = result["task"], result["activation"]
        results[task][activation].append(result)
        if result["status"] == "ok":
            lines = (directory / rundir.METRICS).read_text().splitlines()
            curves[task][activation].append([json.loads(line) for line in lines])
            if predictions:
                kept[task][activation].append(
                    np.load(directory / rundir.PREDICTIONS, allow_pickle=False)
                )
    return Trials(config, results, curves, kept)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _layer_mean(results: list[dict[str, Any]], key: str) -> float | None:
    """Mean over trials of the mean over activation layers.

    Layers that recorded None (not applicable: a dead-unit fraction of an activation that has
    no zero-derivative region) are left out; None when every layer of every trial is one, as
    opposed to NaN, which means there was nothing to average (no finished trial).
    """
    values = [[layer[key] for layer in r["layers"]] for r in results if r["layers"]]
    measured = [[v for v in layers if v is not None] for layers in values]
    if values and not any(measured):
        return None
    return _mean([float(np.mean(m)) for m in measured if m])


def resolve_baseline(trials: Trials, baseline: str | None) -> str:
    compared = trials.config["config"]["activations"]
    chosen = baseline or trials.config["config"].get("baseline") or compared[0]
    if chosen not in compared:
        spelled = chosen
        with contextlib.suppress(UserError):  # runs store canonical specs: 'leaky_relu(0.2)'
            chosen = format_spec(*parse_spec(chosen))
        if chosen not in compared:
            hint = did_you_mean(spelled, compared) or f" (compared: {', '.join(compared)})"
            raise UserError(f"baseline {spelled!r} is not among the run's activations{hint}")
    return chosen


def baseline_reason(baseline: str, activations: list[str]) -> str:
    """Why ``baseline`` is the one the others are tested against, as a phrase.

    The run records only the baseline it resolved, so the reason is read off the rule that
    chose it: relu when it is compared, else the first activation, unless --baseline said.
    """
    if baseline == DEFAULT_BASELINE:
        return "the default"
    if DEFAULT_BASELINE not in activations and baseline == activations[0]:
        return f"the first activation, as {DEFAULT_BASELINE} is not compared"
    return "chosen with --baseline"


def task_title(config: dict[str, Any], task: str) -> str:
    """A task's name, with the file and label column for the user's own table."""
    settings = config["config"]
    if task != "table" or not settings.get("data"):
        return task
    return f"{task}: {Path(settings['data']).name}, target {settings['target']}"


def run_title(config: dict[str, Any]) -> str:
    """What a run compared, on which tasks; prefixed by its name where the user gave one."""
    settings = config["config"]
    activations = settings["activations"]
    compared = (
        ", ".join(activations) if len(activations) <= 4 else f"{len(activations)} activations"
    )
    tasks = [
        Path(settings["data"]).name if t == "table" and settings.get("data") else t
        for t in settings["tasks"]
    ]
    title = f"{compared} on {', '.join(tasks)}"
    return title if settings["name"] == "bench" else f"{settings['name']}: {title}"


def summarize(trials: Trials, baseline: str | None = None) -> list[dict[str, Any]]:
    """One row per (task, activation): score statistics, a paired t-test against the baseline
    over the seeds where both finished (Holm-corrected within the task), prediction
    difference, calibration, dead units, cost."""
    baseline = resolve_baseline(trials, baseline)
    order = trials.config["config"]["activations"]
    rows = []
    for task, by_activation in trials.results.items():
        score = {
            activation: {r["seed"]: r["test_score"] for r in results if r["status"] == "ok"}
            for activation, results in by_activation.items()
        }
        raw_p, task_rows = {}, []
        for activation in [a for a in order if a in by_activation]:
            results, ok = (
                by_activation[activation],
                [r for r in by_activation[activation] if r["status"] == "ok"],
            )
            summary = stats.summary([r["test_score"] for r in ok])
            row = {
                "task": task,
                "activation": activation,
                "trials": len(results),
                "diverged": len(results) - len(ok),
                "score_n": summary["n"],
                "score_mean": summary["mean"],
                "score_std": summary["std"],
                "score_ci_low": summary["ci_low"],
                "score_ci_high": summary["ci_high"],
                "pairs": 0,
                "delta_vs_baseline": math.nan,
                "p_value": math.nan,
            }
            if activation != baseline and baseline in score:
                seeds = sorted(set(score[activation]) & set(score[baseline]))
                row["pairs"] = len(seeds)
                row["delta_vs_baseline"], row["p_value"] = stats.paired_t_test(
                    [score[activation][s] for s in seeds], [score[baseline][s] for s in seeds]
                )
                raw_p[activation] = row["p_value"]
            pd = stats.prediction_difference(trials.predictions[task].get(activation, []))
            row.update(
                {
                    "pd_pairs": pd["pairs"],
                    "pd_top1": pd["top1"],
                    "pd_total_variation": pd["total_variation"],
                    "test_loss_mean": _mean([r["test_loss"] for r in ok]),
                    "ece_mean": _mean([r["ece"] for r in ok]),
                    "dead_fraction_mean": _layer_mean(ok, "dead_fraction"),
                    "sparsity_mean": _layer_mean(ok, "sparsity"),
                    "seconds_per_epoch": _mean([r["timing"]["mean_seconds_per_epoch"] for r in ok]),
                    "saved_bytes_per_step": _mean([r["saved_bytes_per_step"] for r in results]),
                }
            )
            task_rows.append(row)
        adjusted = stats.holm(raw_p)
        ranked = sorted(
            task_rows,
            key=lambda r: -r["score_mean"] if math.isfinite(r["score_mean"]) else math.inf,
        )
        for position, row in enumerate(ranked, 1):
            row["rank"] = position if math.isfinite(row["score_mean"]) else None
            row["p_holm"] = adjusted.get(row["activation"], math.nan)
            row["significant"] = bool(row["p_holm"] < SIGNIFICANCE)  # False for NaN
            row["baseline"] = baseline
        rows.extend(ranked)
    return rows


CSV_FIELDS = [
    "task", "activation", "baseline", "rank", "trials", "diverged", "score_n", "score_mean",
    "score_std", "score_ci_low", "score_ci_high", "pairs", "delta_vs_baseline", "p_value",
    "p_holm", "significant", "pd_pairs", "pd_top1", "pd_total_variation", "test_loss_mean",
    "ece_mean", "dead_fraction_mean", "sparsity_mean", "seconds_per_epoch",
    "saved_bytes_per_step",
]  # fmt: skip


def _csv_cell(value: Any) -> Any:
    return repr(value) if isinstance(value, float) else value


def summary_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV: floats exactly (repr), NaN as ``nan``; an empty field where there is
    no value (a rank without a score, a dead fraction that does not apply), so that every
    numeric column reads as numbers."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    return buffer.getvalue()


def _number(value: float | None, scale: float = 1.0, digits: int = 2, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{scale * value:{'+' if signed else ''}.{digits}f}"


def format_p(value: float) -> str:
    """A p-value as the report writes it: three decimals, "<0.001" below that."""
    if not math.isfinite(value):
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def verdict(row: dict[str, Any]) -> str:
    if row["activation"] == row["baseline"]:
        return "baseline"
    if math.isfinite(row["p_holm"]):
        return "significant" if row["significant"] else "not significant"
    return "untested" if row["pairs"] < 2 else "untested: same difference on every seed"


def loss_label(task: str) -> str | None:
    """The header of a loss column beside the score in ``task``'s table, or None for none:
    a task class's ``loss_label``, set where the score is a function of the loss that
    readers know by the loss itself (charlm: exp(−loss), and LM results are given in nats)."""
    from relulab.bench.tasks import TASKS

    return getattr(TASKS.get(task), "loss_label", None)


def task_table(rows: list[dict[str, Any]], loss: bool = False) -> list[list[str]]:
    """Rows of the per-task table as printed by the CLI and written to report.md; with
    ``loss``, a column of the mean test loss after the CI (see :func:`loss_label`).

    The CI shown is clipped to [0, 100] % (summary.csv keeps the raw t-interval).
    """
    table = []
    for r in rows:
        low, high = score_ci_shown(r)
        table.append(
            [
                str(r["rank"] or "—"),
                r["activation"],
                f"{_number(r['score_mean'], 100)} ± {_number(r['score_std'], 100)}",
                f"[{_number(low, 100)}, {_number(high, 100)}]",
                *([_number(r["test_loss_mean"], digits=3)] if loss else []),
                _number(r["delta_vs_baseline"], 100, signed=True),
                format_p(r["p_holm"]),
                verdict(r),
                _number(r["pd_top1"], 100, 1),
                _number(r["ece_mean"], 1, 3),
                _number(r["dead_fraction_mean"], 100, 1),
                _number(r["seconds_per_epoch"], 1000, 0),
                _number(r["saved_bytes_per_step"], 1 / 1024, 0),
            ]
        )
    return table


def table_headers(metric: str = "accuracy", loss: str | None = None) -> list[str]:
    """The headers of :func:`task_table`'s columns: the score's named by ``metric``; a loss
    column's, after the CI, ``loss`` where given (as ``task_table(rows, loss=True)``)."""
    return [
        "rank", "activation", f"{metric} % (mean ± std)", "95% CI",
        *([f"{loss}, mean"] if loss else []), "Δ vs baseline (points)",
        "p (Holm)", "verdict", "PD top-1 %", "ECE", "dead %", "ms/epoch", "saved KiB/step",
    ]  # fmt: skip


def _markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _findings(task: str, rows: list[dict[str, Any]], seeds: int) -> str:
    """What the paired tests of a task found, and what they could not test, in words."""
    baseline = rows[0]["baseline"]
    others = [r for r in rows if r["activation"] != baseline]
    tested = [r for r in others if math.isfinite(r["p_holm"])]
    most_pairs = max((r["pairs"] for r in others), default=0)
    if not others:
        parts = [f"Only {baseline} ran on {task}: there is nothing to test it against."]
    elif seeds < 2:
        parts = ["One seed per activation: no paired test; use --seeds 2 or more."]
    elif most_pairs < 2:
        parts = [
            f"No paired test against {baseline}: a test needs two or more seeds that finished "
            "with both activations, and no activation has them yet."
        ]
    else:
        pairs = sorted({r["pairs"] for r in tested or others})
        n = f"{pairs[0]}" if len(pairs) == 1 else f"{pairs[0]}–{pairs[-1]}"
        test = f"Paired t-tests against {baseline} over {n} paired seeds"
        parts = [f"{test}, Holm-corrected, α = {SIGNIFICANCE}:"]
        better = [
            r["activation"] for r in tested if r["significant"] and r["delta_vs_baseline"] > 0
        ]
        worse = [r["activation"] for r in tested if r["significant"] and r["delta_vs_baseline"] < 0]
        if not tested:
            parts.append("nothing could be tested.")
        elif not better and not worse:
            parts.append(f"no tested activation differs significantly from {baseline} on {task}.")
        if better:
            parts.append(f"significantly better than {baseline}: {', '.join(better)}.")
        if worse:
            parts.append(f"significantly worse than {baseline}: {', '.join(worse)}.")
        untested = [r["activation"] for r in others if not math.isfinite(r["p_holm"])]
        if untested:
            parts.append(
                f"Untested (fewer than two paired seeds, or the same difference on every seed): "
                f"{', '.join(untested)}."
            )
    diverged = [f"{r['activation']} ({r['diverged']})" for r in rows if r["diverged"]]
    if diverged:
        parts.append(f"Diverged trials, left out of the statistics: {', '.join(diverged)}.")
    return " ".join(parts)


def report_markdown(trials: Trials, rows: list[dict[str, Any]], plots: list[str]) -> str:
    config = trials.config
    settings = config["config"]
    baseline = rows[0]["baseline"] if rows else resolve_baseline(trials, None)
    versions = ", ".join(f"{k} {v}" for k, v in sorted(config["versions"].items()))
    finished = sum(len(r) for by_act in trials.results.values() for r in by_act.values())
    commit = config["git"].get("commit") or "unknown"
    lines = [
        f"# relulab bench: {run_title(config)}",
        "",
        f"Created {config['created']}; {finished} of {len(config['trials'])} trials finished. "
        f"Suite {settings['suite']}, {settings['seeds']} seed{'s' * (settings['seeds'] != 1)} per "
        f"cell. Baseline: {baseline} "
        f"({baseline_reason(baseline, settings['activations'])}); every other activation is "
        "tested against it, seed by seed.",
        "",
        f"Versions: {versions}. Git: {commit}"
        + (" (uncommitted changes)" if config["git"].get("dirty") else "")
        + f". Platform: {_platform(config['platform'])}.",
        "",
    ]
    forced = [r for r in config.get("resumes", []) if r.get("forced")]
    if forced:
        lines += [
            "Resumed with --force across code changes: "
            + "; ".join(f"{r['resumed']} ({', '.join(r['differences'])})" for r in forced)
            + ". Trials from before and after may not be comparable.",
            "",
        ]
    lines += [
        "Scores are on each task's fixed test split; the CI is a t-interval of the mean over "
        "seeds. PD top-1 is the fraction of test examples on which two seeds' models disagree"
        " (mean over seed pairs). ECE is the expected calibration error: the test examples "
        f"are put in {stats.ECE_BINS} equal-width bins by their confidence (the top class's "
        "probability), and ECE is the mean over bins, weighted by their share of examples, of"
        " |accuracy − mean confidence|; 0 is perfectly calibrated. A unit (channel) is dead "
        "when its activation's derivative, as training's backward computes it, is 0 on every "
        "training example and position; dead % is n/a for activations whose derivative is "
        "never 0 on an interval. ms/epoch is training time, measured while other trials may "
        "run alongside; saved KiB/step is what autograd keeps for backward in one step, "
        "weights, inputs and targets excluded.",
    ]
    for task in trials.results:
        metric, description = trials.task_info(task)
        task_rows = [r for r in rows if r["task"] == task]
        title = task_title(config, task)
        if title != task:  # the user's own table: its file, where the class says "your file"
            digest = settings.get("data_sha256") or ""
            checksum = f" (SHA-256 {digest[:12]}…)" if digest else ""
            lines += ["", f"## {title}", "", f"Data: {settings['data']}{checksum}.", ""]
            lines += _small_test_split(trials, task)
        else:
            lines += ["", f"## {task}" + (f": {description}" if description else ""), ""]
        if schedule := trials.task_schedule(task):
            lines += [f"Training: {schedule}.", ""]
        loss = loss_label(task)
        lines += [
            _markdown_table(table_headers(metric, loss), task_table(task_rows, bool(loss))),
            "",
        ]
        lines.append(_findings(task, task_rows, settings["seeds"]))
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def score_ci_shown(row: dict[str, Any]) -> tuple[float, float]:
    """The score's 95% CI as the table and the plots show it: clipped to [0, 1], since the
    t-interval of a few seeds can reach past what any score can be (summary.csv keeps it
    raw). A missing bound (NaN) stays NaN."""
    return max(row["score_ci_low"], 0.0), min(row["score_ci_high"], 1.0)


def _platform(platform: dict[str, Any]) -> str:
    """ "Linux-..., 2 CPUs (AMD EPYC)": the model where the run recorded it."""
    cpus = platform["cpu_count"]
    text = f"{platform['system']}, {cpus} CPU{'s' * (cpus != 1)}"
    return text + (f" ({platform['cpu_model']})" if platform.get("cpu_model") else "")


def _small_test_split(trials: Trials, task: str) -> list[str]:
    """The warning a run printed for a test split too small to compare by, kept in the
    report (the thresholds are the runner's)."""
    from relulab.bench.runner import MIN_TEST_EXAMPLES

    sizes = [len(p) for seeds in trials.predictions[task].values() for p in seeds]
    if not sizes or sizes[0] >= MIN_TEST_EXAMPLES:
        return []
    return [
        f"**Only {sizes[0]} test examples**: each is worth {100 / sizes[0]:.1f} points of "
        f"accuracy, too coarse to compare activations by (use at least {MIN_TEST_EXAMPLES}).",
        "",
    ]


def render(run: Path, baseline: str | None = None) -> list[dict[str, Any]]:
    """Write summary.csv, report.md and the plots of ``run``; return the summary rows."""
    from relulab.plot import plot_bench  # matplotlib is imported there, lazily

    trials = load_trials(run)
    rows = summarize(trials, baseline)
    rundir.write_text_atomic(run / "summary.csv", summary_csv(rows))
    written = plot_bench(run, trials, rows)
    rundir.write_text_atomic(run / "report.md", report_markdown(trials, rows, written))
    return rows
