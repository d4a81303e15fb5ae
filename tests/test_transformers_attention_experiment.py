"""The experiment runner on a tiny configuration: every cell and seed trained once, resumed
without retraining, comparisons equal to scipy's paired t-test, divergences counted."""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats

from relulab.errors import UserError
from relulab.transformers.attention_experiment import (
    EXPERIMENTS,
    experiment_cells,
    run_experiment,
    summarize,
)
from relulab.transformers.train import load_checkpoint

BASE = {"vocab_size": 65, "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8}
TRAIN = {"steps": 3, "eval_interval": 3, "batch_size": 4, "eval_windows": 4}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("experiment")
    lines: list[str] = []
    results = run_experiment(run, "norm-activation", [0, 1, 2], BASE, TRAIN, threads=1,
                             windows=4, progress=lines.append)  # fmt: skip
    return run, results, lines


def test_every_cell_and_seed_is_trained_with_its_settings(tiny_run):
    run, results, lines = tiny_run
    assert list(results) == list(EXPERIMENTS["norm-activation"])
    for cell, change in EXPERIMENTS["norm-activation"].items():
        for seed in (0, 1, 2):
            directory = run / "cells" / f"{cell}-seed{seed}"
            saved = json.loads((directory / "result.json").read_text())
            assert saved["val_loss"] == results[cell][seed]["val_loss"]
            assert len(saved["stats"]["entropy"]) == 1 and len(saved["stats"]["entropy"][0]) == 2
            model, state = load_checkpoint(directory / "checkpoint.pt")
            assert state["step"] == 3
            assert {k: getattr(model.config, k) for k in change} == change
    assert sum("parameters" in line for line in lines) == 12
    # the same seed gives the same windows and initial weights whatever the cell: the pairs
    # differ only by the cell's change, so layernorm-relu and -gelu differ, but only a little
    losses = {c: [results[c][s]["val_loss"] for s in (0, 1, 2)] for c in results}
    assert losses["layernorm-relu"] != losses["layernorm-gelu"]


def test_a_finished_experiment_resumes_without_training(tiny_run):
    run, results, _ = tiny_run
    lines: list[str] = []
    again = run_experiment(run, "norm-activation", [0, 1, 2], BASE, TRAIN, threads=1,
                           windows=4, progress=lines.append)  # fmt: skip
    assert again == results and lines == []


def test_comparisons_are_scipy_paired_t_tests_with_holm(tiny_run):
    _, results, _ = tiny_run
    summary = summarize("norm-activation", results)
    p_values = []
    for treatment, baseline in (("none-relu", "none-gelu"), ("layernorm-relu", "layernorm-gelu")):
        t = [results[treatment][s]["val_loss"] for s in (0, 1, 2)]
        b = [results[baseline][s]["val_loss"] for s in (0, 1, 2)]
        comparison = summary["comparisons"][f"{treatment} vs {baseline}"]
        assert comparison["p_value"] == pytest.approx(stats.ttest_rel(t, b).pvalue)
        mean_difference = sum(x - y for x, y in zip(t, b)) / 3
        assert comparison["perplexity_change"] == pytest.approx(math.exp(mean_difference) - 1)
        p_values.append(comparison["p_value"])
    smallest = min(p_values)
    holm = [c["p_holm"] for c in summary["comparisons"].values()]
    assert min(holm) == pytest.approx(min(1.0, 2 * smallest))
    cell = summary["cells"]["none-gelu"]
    assert cell["val_loss"]["n"] == 3 and cell["diverged"] == 0 and cell["nan_weights"] == 0
    assert 0 <= cell["mean_normalized_entropy"] <= 1


def test_diverged_runs_are_counted_and_left_out_of_the_pairs():
    def result(loss, diverged=None):
        entropy = [[0.5, None]]  # a head off in every row: None
        heads = {k: entropy for k in ("entropy", "normalized_entropy", "zero_fraction",
                                      "off_fraction", "nan_count")}  # fmt: skip
        if diverged:
            return {"diverged": diverged, "val_loss": math.nan}
        return {"diverged": None, "val_loss": loss, "train_seconds": 1.0, "stats": heads}

    results = {
        "softmax": {0: result(2.0), 1: result(2.1), 2: result(2.2)},
        "rela": {0: result(2.3), 1: result(0, "the loss diverged at step 7 (nan)"), 2: result(2.0)},
    }
    summary = summarize("attention", results)
    assert summary["cells"]["rela"]["diverged"] == 1
    assert summary["cells"]["rela"]["val_loss"]["n"] == 2
    comparison = summary["comparisons"]["rela vs softmax"]
    assert comparison["val_loss_difference"] == pytest.approx(((2.3 - 2.0) + (2.0 - 2.2)) / 2)
    assert summary["cells"]["rela"]["heads"]["entropy"] == [[0.5, None]]
    assert summary["cells"]["rela"]["near_uniform_heads"] == 0.0


def test_unknown_experiment_names_the_nearest():
    with pytest.raises(UserError, match="did you mean 'attention'"):
        experiment_cells("atention")


def test_early_entropy_is_compared_per_seed_over_the_first_half_of_the_layers():
    def result(early: float, late: float) -> dict:
        matrix = [[early, early + 0.02], [late, late]]  # 2 layers x 2 heads: layer 0 is early
        heads = {k: matrix for k in ("entropy", "normalized_entropy", "zero_fraction",
                                     "off_fraction", "nan_count")}  # fmt: skip
        return {"diverged": None, "val_loss": 2.0 + early, "train_seconds": 1.0, "stats": heads}

    treatment, baseline = [0.5, 0.6, 0.4, 0.55], [0.9, 0.8, 0.95, 0.7]
    results = {
        "softmax": {s: result(b, 0.0) for s, b in enumerate(baseline)},
        "rela": {s: result(t, 1.0) for s, t in enumerate(treatment)},
    }
    comparison = summarize("attention", results)["comparisons"]["rela vs softmax"]
    early_t, early_b = [t + 0.01 for t in treatment], [b + 0.01 for b in baseline]
    assert comparison["early_entropy_difference"] == pytest.approx(
        sum(treatment) / 4 - sum(baseline) / 4
    )
    assert comparison["early_entropy_p_value"] == pytest.approx(
        stats.ttest_rel(early_t, early_b).pvalue
    )


def test_rounding_differences_in_entropy_get_no_p_value_and_huge_losses_no_overflow():
    def result(loss: float, entropy: float) -> dict:
        matrix = [[entropy, entropy]]
        heads = {k: matrix for k in ("entropy", "normalized_entropy", "zero_fraction",
                                     "off_fraction", "nan_count")}  # fmt: skip
        return {"diverged": None, "val_loss": loss, "train_seconds": 1.0, "stats": heads}

    results = {  # uniform attention in both, up to float32 rounding; a loss that blew up
        "softmax": {s: result(2.0 + s / 10, 1.0 - 1e-8 * s) for s in range(3)},
        "rela": {s: result(1e4 * (s + 1), 1.0 + 3e-8 * s * s) for s in range(3)},
    }
    summary = summarize("attention", results)
    comparison = summary["comparisons"]["rela vs softmax"]
    assert math.isnan(comparison["early_entropy_p_value"])
    assert summary["cells"]["rela"]["perplexity"] == math.inf
    assert comparison["perplexity_change"] == math.inf


def test_a_run_whose_loss_diverges_is_a_result_and_is_not_trained_again(tmp_path, monkeypatch):
    from relulab.errors import TrainingDiverged
    from relulab.transformers import attention_experiment

    calls = []

    def diverging(directory, settings, progress):
        calls.append(directory)
        raise TrainingDiverged("the loss diverged at step 7 (nan)")

    monkeypatch.setattr(attention_experiment, "train_in", diverging)
    results = run_experiment(tmp_path, "attention", [0, 1], BASE, TRAIN)
    assert all(r["diverged"] == "the loss diverged at step 7 (nan)" for c in results.values()
               for r in c.values())  # fmt: skip
    assert len(calls) == 4
    run_experiment(tmp_path, "attention", [0, 1], BASE, TRAIN)  # resumed: recorded, not redone
    assert len(calls) == 4
    assert summarize("attention", results)["cells"]["rela"]["diverged"] == 2
