"""The report's numbers equal a recomputation from the trial files with numpy and scipy."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from relulab.bench import report
from relulab.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    parent = tmp_path_factory.mktemp("runs")
    options = ["--tasks", "spirals", "digits", "--acts", "relu", "gelu", "mish", "smelu"]
    assert (
        main(["bench", *options, "--seeds", "3", "--epochs", "3", "--out", str(parent), "--quiet"])
        == 0
    )
    return next(parent.glob("*-bench"))


def _holm(p: dict[str, float]) -> dict[str, float]:
    """Holm's step-down procedure, written out independently of relulab."""
    names = sorted(p, key=p.get)
    m, adjusted, previous = len(names), {}, 0.0
    for i, name in enumerate(names):
        previous = max(previous, min(1.0, (m - i) * p[name]))
        adjusted[name] = previous
    return adjusted


def _float(text: str) -> float:
    return float(text) if text not in ("", "nan") else math.nan


def test_summary_equals_a_recomputation_from_the_trial_files(run):
    results = [json.loads(p.read_text()) for p in run.glob("trials/*/result.json")]
    rows = {(r["task"], r["activation"]): r for r in csv.DictReader((run / "summary.csv").open())}
    for task in ("spirals", "digits"):
        accuracy = {
            act: {
                r["seed"]: r["test_accuracy"]
                for r in results
                if r["task"] == task and r["activation"] == act
            }
            for act in ("relu", "gelu", "mish", "smelu")
        }
        p_values = {}
        for act, by_seed in accuracy.items():
            values = [by_seed[s] for s in sorted(by_seed)]
            row = rows[(task, act)]
            assert _float(row["accuracy_mean"]) == pytest.approx(np.mean(values), rel=1e-12)
            assert _float(row["accuracy_std"]) == pytest.approx(np.std(values, ddof=1), rel=1e-12)
            low, high = stats.t.interval(
                0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values)
            )
            assert (
                _float(row["accuracy_ci_low"]),
                _float(row["accuracy_ci_high"]),
            ) == pytest.approx((low, high), rel=1e-9)
            if act != "relu":
                baseline = [accuracy["relu"][s] for s in sorted(by_seed)]
                differences = np.subtract(values, baseline)
                assert _float(row["delta_vs_baseline"]) == pytest.approx(
                    differences.mean(), abs=1e-12
                )
                if differences.std() > 0:
                    p_values[act] = stats.ttest_rel(values, baseline).pvalue
                    assert _float(row["p_value"]) == pytest.approx(p_values[act], rel=1e-9)
        for act, adjusted in _holm(p_values).items():
            assert _float(rows[(task, act)]["p_holm"]) == pytest.approx(adjusted, rel=1e-9)
        ranking = sorted(accuracy, key=lambda a: -np.mean(list(accuracy[a].values())))
        assert [int(rows[(task, a)]["rank"]) for a in ranking] == [1, 2, 3, 4]


def test_prediction_difference_equals_a_recomputation(run):
    for act in ("relu", "gelu"):
        probabilities = [
            np.load(run / "trials" / f"digits-{act}-s{s}" / "predictions.npy") for s in range(3)
        ]
        top1 = np.mean(
            [
                (a.argmax(1) != b.argmax(1)).mean()
                for a, b in itertools.combinations(probabilities, 2)
            ]
        )
        tv = np.mean(
            [0.5 * np.abs(a - b).sum(1).mean() for a, b in itertools.combinations(probabilities, 2)]
        )
        row = next(
            r
            for r in csv.DictReader((run / "summary.csv").open())
            if r["task"] == "digits" and r["activation"] == act
        )
        assert _float(row["pd_top1"]) == pytest.approx(top1, abs=1e-12)
        assert _float(row["pd_total_variation"]) == pytest.approx(tv, rel=1e-6)


def test_report_markdown_states_the_test_and_significance_plainly(run):
    text = (run / "report.md").read_text()
    assert "## spirals" in text and "## digits" in text
    assert "Paired t-tests against relu over 3 seeds, Holm-corrected" in text
    assert "significant" in text  # either verdict, spelled out
    for plot in ("accuracy.png", "curves.png", "prediction_difference.png", "cost.png"):
        assert f"]({plot})" in text


def test_relulab_report_re_renders_the_same_summary(run, capsys):
    before = (run / "summary.csv").read_text()
    (run / "summary.csv").unlink()
    assert main(["report", str(run)]) == 0
    assert (run / "summary.csv").read_text() == before
    assert "report:" in capsys.readouterr().out


def test_a_partial_run_renders_what_it_has(run, tmp_path):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(run, partial)
    for directory in list((partial / "trials").glob("spirals-gelu-*")):
        shutil.rmtree(directory)
    rows = report.render(partial)
    assert {(r["task"], r["activation"]) for r in rows} == {
        (t, a) for t in ("spirals", "digits") for a in ("relu", "gelu", "mish", "smelu")
    } - {("spirals", "gelu")}
    assert "of 24 trials finished" in (partial / "report.md").read_text()
