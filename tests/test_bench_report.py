"""The report's numbers equal a recomputation from the trial files with numpy and scipy."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import math
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from relulab.cli import main

ACTS = ("relu", "gelu", "mish", "smelu")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    parent = tmp_path_factory.mktemp("runs")
    options = ["--tasks", "spirals", "digits", "--acts", *ACTS, "--seeds", "3", "--epochs", "3"]
    assert main(["bench", *options, "--out", str(parent), "--quiet"]) == 0
    return next(parent.glob("*-bench"))


def holm_by_definition(p: dict[str, float]) -> dict[str, float]:
    """Holm's adjusted p-value straight from its definition:
    p̃_(i) = max over j ≤ i of min(1, (m − j + 1)·p_(j)), with ranks j over the sorted p."""
    ordered = sorted(p.values())
    m = len(ordered)
    return {
        name: max(min(1.0, (m - j) * ordered[j]) for j in range(ordered.index(value) + 1))
        for name, value in p.items()
    }


def read_summary(run: Path) -> dict[tuple[str, str], dict[str, str]]:
    return {(r["task"], r["activation"]): r for r in csv.DictReader((run / "summary.csv").open())}


def number(text: str) -> float:
    return float(text) if text not in ("", "nan", "None") else math.nan


def scores(run: Path, task: str) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {a: {} for a in ACTS}
    for path in run.glob(f"trials/{task}-*/result.json"):
        result = json.loads(path.read_text())
        if result["status"] == "ok":
            out[result["activation"]][result["seed"]] = result["test_score"]
    return out


def check_task(run: Path, task: str) -> None:
    rows = read_summary(run)
    by_seed = scores(run, task)
    raw_p = {}
    for act, values_by_seed in by_seed.items():
        values = [values_by_seed[s] for s in sorted(values_by_seed)]
        row = rows[(task, act)]
        assert number(row["score_mean"]) == pytest.approx(np.mean(values), rel=1e-12)
        assert number(row["score_std"]) == pytest.approx(np.std(values, ddof=1), rel=1e-12)
        low, high = stats.t.interval(
            0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values)
        )
        assert number(row["score_ci_low"]) == pytest.approx(low, rel=1e-9)
        assert number(row["score_ci_high"]) == pytest.approx(high, rel=1e-9)
        if act == "relu":
            continue
        seeds = sorted(set(values_by_seed) & set(by_seed["relu"]))  # pairs by seed
        treated = [values_by_seed[s] for s in seeds]
        baseline = [by_seed["relu"][s] for s in seeds]
        assert number(row["pairs"]) == len(seeds)
        assert number(row["delta_vs_baseline"]) == pytest.approx(
            np.mean(np.subtract(treated, baseline)), abs=1e-12
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on identical differences
            expected = stats.ttest_rel(treated, baseline).pvalue
        if math.isfinite(expected):
            raw_p[act] = expected
            assert number(row["p_value"]) == pytest.approx(expected, rel=1e-9)
        else:  # identical differences: scipy has no p-value, nor do we
            assert math.isnan(number(row["p_value"]))
    for act, adjusted in holm_by_definition(raw_p).items():
        row = rows[(task, act)]
        assert number(row["p_holm"]) == pytest.approx(adjusted, rel=1e-9)
        assert row["significant"] == str(adjusted < 0.05)
    means = {a: np.mean(list(v.values())) for a, v in by_seed.items()}
    assert sorted(means, key=lambda a: -means[a]) == sorted(
        ACTS, key=lambda a: int(rows[(task, a)]["rank"])
    )


def test_summary_equals_a_recomputation_from_the_trial_files(run):
    for task in ("spirals", "digits"):
        check_task(run, task)


def test_pairs_are_matched_by_seed_when_seeds_are_missing(run, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(run, partial)
    shutil.rmtree(partial / "trials" / "digits-gelu-s1")  # gelu now has seeds 0 and 2 only
    shutil.rmtree(partial / "trials" / "digits-relu-s0")  # relu has 1 and 2: one pair (seed 2)
    assert main(["report", str(partial)]) == 0
    check_task(partial, "digits")
    assert read_summary(partial)[("digits", "gelu")]["pairs"] == "1"
    assert "of 24 trials finished" in (partial / "report.md").read_text()


def test_prediction_difference_equals_a_recomputation(run):
    rows = read_summary(run)
    for act in ("relu", "gelu"):
        probabilities = [
            np.load(run / "trials" / f"digits-{act}-s{s}" / "predictions.npy") for s in range(3)
        ]
        pairs = list(itertools.combinations(probabilities, 2))
        top1 = np.mean([(a.argmax(1) != b.argmax(1)).mean() for a, b in pairs])
        tv = np.mean([0.5 * np.abs(a.astype(float) - b).sum(1).mean() for a, b in pairs])
        assert number(rows[("digits", act)]["pd_top1"]) == pytest.approx(top1, abs=1e-12)
        assert number(rows[("digits", act)]["pd_total_variation"]) == pytest.approx(tv, rel=1e-9)


def test_report_states_each_verdict_from_its_p_value(run):
    text = (run / "report.md").read_text()
    rows = read_summary(run)
    for (task, act), row in rows.items():
        section = text.split(f"## {task}")[1].split("\n## ")[0]
        line = next(x for x in section.splitlines() if x.startswith(f"| {row['rank']} | {act} |"))
        if act == "relu":
            assert "| baseline |" in line
        elif math.isfinite(number(row["p_holm"])):
            assert ("| significant |" in line) == (number(row["p_holm"]) < 0.05)
            assert ("| not significant |" in line) == (number(row["p_holm"]) >= 0.05)
        else:
            assert "| untested" in line
    assert "Paired t-tests against relu over 3 paired seeds, Holm-corrected" in text
    for plot in ("accuracy.png", "curves.png", "prediction_difference.png", "cost.png"):
        assert f"]({plot})" in text


def test_another_baseline_can_be_chosen_when_re_rendering(run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert main(["report", str(copy), "--baseline", "gelu"]) == 0
    assert {r["baseline"] for r in read_summary(copy).values()} == {"gelu"}
    assert main(["report", str(copy), "--baseline", "golu"]) == 2
    assert "baseline 'golu' is not among the run's activations" in capsys.readouterr().err


def test_dead_units_are_n_a_where_they_do_not_apply_and_a_mean_elsewhere(run, tmp_path):
    """A layer's dead_fraction None (an activation with no zero-derivative region) shows as
    an empty field in summary.csv and n/a in report.md, never as 0; the others are the mean
    over trials of the mean over layers, recomputed from the trial files."""
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    for path in copy.glob("trials/digits-mish-*/result.json"):  # as if mish could not die
        result = json.loads(path.read_text())
        for layer in result["layers"]:
            layer["dead_fraction"] = None
        path.write_text(json.dumps(result))
    assert main(["report", str(copy)]) == 0
    rows = read_summary(copy)
    assert rows[("digits", "mish")]["dead_fraction_mean"] == ""  # no value, and no text either
    section = (copy / "report.md").read_text().split("## digits")[1].split("\n## ")[0]
    line = next(x for x in section.splitlines() if "| mish |" in x)
    assert line.split("|")[10].strip() == "n/a"  # the dead % column
    for act in ("relu", "smelu"):
        per_trial = [
            np.mean([layer["dead_fraction"] for layer in json.loads(p.read_text())["layers"]])
            for p in copy.glob(f"trials/digits-{act}-s*/result.json")
        ]
        assert len(per_trial) == 3
        assert number(rows[("digits", act)]["dead_fraction_mean"]) == pytest.approx(
            np.mean(per_trial), abs=1e-15
        )


def test_report_states_each_tasks_training_schedule(run):
    report = (run / "report.md").read_text()
    # 3 epochs of the task's batch (64): spirals trains on 600 points, digits on 1347.
    assert (
        "Training: 3 epochs = 30 steps of batch 64, Adam lr 0.003, weight decay 0.0003." in report
    )
    assert "Training: 3 epochs = 66 steps of batch 64, Adam lr 0.001." in report


NUMERIC_COLUMNS = (
    "rank", "trials", "diverged", "score_n", "score_mean", "score_std", "score_ci_low",
    "score_ci_high", "pairs", "delta_vs_baseline", "p_value", "p_holm", "pd_pairs", "pd_top1",
    "pd_total_variation", "test_loss_mean", "ece_mean", "dead_fraction_mean", "sparsity_mean",
    "seconds_per_epoch", "saved_bytes_per_step",
)  # fmt: skip


def test_every_numeric_column_of_summary_csv_reads_as_numbers(run, tmp_path):
    """Empty where there is no value, so that a spreadsheet or pandas reads a number column;
    a dead fraction that does not apply was written as the text "n/a"."""
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    for path in copy.glob("trials/*-mish-*/result.json"):  # as if mish could not die
        result = json.loads(path.read_text())
        for layer in result["layers"]:
            layer["dead_fraction"] = None
        path.write_text(json.dumps(result))
    assert main(["report", str(copy)]) == 0
    rows = list(csv.DictReader((copy / "summary.csv").open()))
    assert len(rows) == 2 * len(ACTS)
    texts = [row[column] for row in rows for column in NUMERIC_COLUMNS]
    assert "" in texts  # mish's dead fraction
    assert [text for text in texts if text and not reads_as_number(text)] == []


def reads_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def ece_by_brute_force(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """Each example goes to the bin (k/B, (k+1)/B] of its confidence; the sum over bins of
    |accuracy − mean confidence|, weighted by the bin's share of the examples."""
    by_bin: dict[int, list[tuple[float, bool]]] = {}
    for p, label in zip(probabilities.astype(np.float64), labels):
        by_bin.setdefault(max(math.ceil(p.max() * bins) - 1, 0), []).append(
            (p.max(), p.argmax() == label)
        )
    return sum(
        len(members)
        / len(labels)
        * abs(np.mean([right for _, right in members]) - np.mean([conf for conf, _ in members]))
        for members in by_bin.values()
    )


def test_report_explains_ece_and_its_bins_are_those_computed(run):
    """The legend says what ECE is and over how many bins; a brute-force ECE over that many
    equal-width bins, from each trial's saved predictions, gives the table's value."""
    from relulab.bench.tasks import get_task

    text = (run / "report.md").read_text()
    stated = re.search(
        r"ECE is the expected calibration error: .* put in (\d+) equal-width bins", text
    )
    assert stated, "the report does not explain ECE"
    labels = get_task("digits").data().y_test.numpy()
    for act in ACTS:  # here mish's and smelu's ECE over 10, 15 or 20 bins differ by ~0.005
        per_seed = [
            ece_by_brute_force(
                np.load(run / "trials" / f"digits-{act}-s{seed}" / "predictions.npy"),
                labels,
                int(stated.group(1)),
            )
            for seed in range(3)
        ]
        assert number(read_summary(run)[("digits", act)]["ece_mean"]) == pytest.approx(
            np.mean(per_seed), abs=1e-6
        )


def test_the_title_says_what_a_run_compared(run):
    """Not "relulab bench: bench" (the default --name): the activations and the tasks."""
    first = (run / "report.md").read_text().splitlines()[0]
    assert first == f"# relulab bench: {', '.join(ACTS)} on spirals, digits"


def test_the_report_states_the_baseline_and_why(run, tmp_path):
    assert "Baseline: relu (the default);" in (run / "report.md").read_text()
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert main(["report", str(copy), "--baseline", "mish"]) == 0
    assert "Baseline: mish (chosen with --baseline);" in (copy / "report.md").read_text()


@pytest.fixture(scope="module")
def table_run(tmp_path_factory) -> tuple[Path, Path, str, str]:
    """One seed of gelu and mish on spirals and a CSV file: (run, csv file, stdout, stderr)."""
    parent = tmp_path_factory.mktemp("table")
    generator = np.random.default_rng(0)
    table = parent / "flowers.csv"
    rows = [
        f"{a:.4f},{b:.4f},{'yes' if a > 0 else 'no'}" for a, b in generator.normal(size=(100, 2))
    ]
    table.write_text("width,height,kind\n" + "\n".join(rows) + "\n")
    out, err = io.StringIO(), io.StringIO()
    options = ["--tasks", "spirals", "csv", "--data", str(table), "--target", "kind"]
    options += ["--acts", "gelu", "mish", "--seeds", "1", "--epochs", "1", "--name", "mine"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["bench", *options, "--out", str(parent / "runs")]) == 0
    return next((parent / "runs").glob("*-mine")), table, out.getvalue(), err.getvalue()


def test_a_table_run_names_its_file_and_target(table_run):
    run, table, out, _ = table_run
    report = (run / "report.md").read_text()
    assert report.splitlines()[0] == "# relulab bench: mine: gelu, mish on spirals, flowers.csv"
    section = report.split("\n## table")[1].split("\n## ")[0]
    assert section.startswith(": flowers.csv, target kind\n")
    digest = hashlib.sha256(table.read_bytes()).hexdigest()
    assert f"Data: {table.resolve()} (SHA-256 {digest[:12]}…)." in section
    assert "\ntable: flowers.csv, target kind\n" in out  # the table the command prints


def test_a_baseline_other_than_relu_is_said_and_explained(table_run):
    """--acts gelu mish: gelu is the baseline, at the start of the run and in the report."""
    run, _, _, err = table_run
    reason = "the first activation, as relu is not compared"
    assert f"baseline: gelu ({reason})" in err.splitlines()
    assert f"Baseline: gelu ({reason});" in (run / "report.md").read_text()
    assert {row["baseline"] for row in read_summary(run).values()} == {"gelu"}


def test_one_seed_says_plainly_that_nothing_is_tested(table_run):
    report = (table_run[0] / "report.md").read_text()
    assert report.count("One seed per activation: no paired test; use --seeds 2 or more.") == 2
    assert "paired seeds" not in report and "1 seed per cell" in report


def test_report_ends_quietly_when_its_reader_has_gone(run, tmp_path, monkeypatch):
    from test_cli import main_into_closed_pipe  # tests/ is on sys.path (conftest)

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert main_into_closed_pipe(monkeypatch, ["report", str(copy)], buffered=True) == (141, "")
