"""relulab codes: a saved bench model's code statistics against a hand-computed forward pass."""

from __future__ import annotations

import json
import re
import textwrap

import numpy as np
import pytest
import torch

from relulab.cli import main

pytest.importorskip("sklearn")
TRIAL = "digits-relu-s0"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    options = ["--acts", "relu", "--seeds", "1", "--epochs", "1", "--save-models", "--quiet"]
    assert main(["bench", "--tasks", "digits", *options, "--out", str(out)]) == 0
    (directory,) = out.iterdir()
    return directory


@pytest.fixture(scope="module")
def reference(run):
    """The trial's codes and logits by float64 matrix products on its saved state dict,
    without relulab's modules or its geometry: bit = pre-activation > 0, constant training
    columns dropped."""
    from relulab.bench.tasks import get_task

    state = torch.load(run / "trials" / TRIAL / "model.pt", weights_only=True)
    layers = [
        (state[f"net.{i}.weight"].double(), state[f"net.{i}.bias"].double()) for i in (0, 2, 4)
    ]
    data = get_task("digits").data()

    def forward(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        h, bits = x.double(), []
        for w, b in layers[:-1]:
            pre = h @ w.T + b
            bits.append(pre > 0)
            h = pre.clamp(min=0)
        w, b = layers[-1]
        return torch.cat(bits, 1).numpy(), (h @ w.T + b).numpy()

    train, _ = forward(data.x_train)
    test, logits = forward(data.x_test)
    keep = train.any(0) & ~train.all(0)
    return {
        "train": train[:, keep],
        "test": test[:, keep],
        "full": train.shape[1],
        "logits": logits,
        "y_train": data.y_train.numpy(),
        "y_test": data.y_test.numpy(),
    }


@pytest.fixture(scope="module")
def printed(run):
    """The command's JSON and text output (one run each, shared by the tests)."""
    import contextlib
    import io

    outputs = []
    for extra in (["--json"], []):
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            assert main(["codes", str(run), TRIAL, *extra]) == 0
        outputs.append((stdout.getvalue(), stderr.getvalue()))
    (json_out, json_err), (text_out, _) = outputs
    return json.loads(json_out), text_out, json_err


def test_bits_and_distinct_codes_match_a_brute_force_count(printed, reference):
    result, _, _ = printed
    train = reference["train"]
    distinct = len({row.tobytes() for row in train})  # brute force: a set of byte strings
    assert result["bits"] == train.shape[1] and result["code_bits"] == reference["full"] == 256
    assert result["train_examples"] == len(train)
    assert result["distinct"] == distinct
    assert result["redundancy_ratio"] == pytest.approx((len(train) - distinct) / len(train))


def test_accuracies_match_independently_fitted_classifiers(printed, reference):
    from scipy.optimize import linear_sum_assignment
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsOneClassifier
    from sklearn.neighbors import KNeighborsClassifier

    result, _, _ = printed
    train, test = reference["train"], reference["test"]
    y_train, y_test = reference["y_train"], reference["y_test"]
    knn = KNeighborsClassifier(n_neighbors=9, metric="hamming").fit(train, y_train)
    assert result["knn_accuracy"] == pytest.approx(knn.score(test, y_test), abs=1e-12)
    logistic = OneVsOneClassifier(LogisticRegression(solver="liblinear", max_iter=1000))
    logistic.fit(train.astype(float), y_train)
    assert result["logistic_accuracy"] == pytest.approx(logistic.score(test.astype(float), y_test))
    kmeans = KMeans(n_clusters=10, n_init=10, random_state=9).fit(train.astype(float))
    table = np.zeros((10, 10), dtype=int)  # table[cluster, class]
    np.add.at(table, (kmeans.labels_, y_train), 1)
    clusters, classes = linear_sum_assignment(-table)
    to_class = dict(zip(clusters, classes))
    predicted = np.array([to_class[c] for c in kmeans.predict(test.astype(float))])
    assert result["kmeans_accuracy"] == pytest.approx(table[clusters, classes].sum() / len(train))
    assert result["kmeans_test_accuracy"] == pytest.approx(np.mean(predicted == y_test))
    # the model runs in float32, the reference in float64: an argmax may flip on a near tie
    net = np.mean(reference["logits"].argmax(1) == y_test)
    assert result["net_accuracy"] == pytest.approx(net, abs=1.5 / len(y_test))


def test_text_output_shows_the_same_numbers_and_progress_goes_to_stderr(printed):
    result, text, progress = printed
    assert text.startswith(f"{TRIAL}: activation codes of 1,347 training and 450 test examples")
    assert f"{result['bits']} of 256" in text
    assert f"{result['distinct']:,} / 1,347" in text
    assert f"{result['redundancy_ratio']:.4f}" in text
    for key in ("net_accuracy", "knn_accuracy", "logistic_accuracy", "kmeans_test_accuracy"):
        assert f"{100 * result[key]:.1f}%" in text
    assert "activation codes of 1,347 training examples ..." in progress


def test_every_value_of_the_text_output_starts_in_one_column(printed):
    _, text, _ = printed
    rows = text.splitlines()[1:]
    assert len(rows) == 7
    # a label is single-spaced, so the value starts after its first run of 2+ spaces
    starts = {re.search(r"\S {2,}(?=\S)", row).end() for row in rows}
    assert len(starts) == 1, rows


FACTORY = """
from torch import nn

def smooth():
    return nn.Sequential(nn.Linear(64, 8), nn.GELU(), nn.Linear(8, 10))
"""


def test_wrong_inputs_are_one_line(run, tmp_path, capsys):
    (tmp_path / "nets.py").write_text(textwrap.dedent(FACTORY))
    torch.save(
        torch.nn.Sequential(
            torch.nn.Linear(64, 8), torch.nn.GELU(), torch.nn.Linear(8, 10)
        ).state_dict(),
        tmp_path / "smooth.pt",
    )
    own = ["--checkpoint", str(tmp_path / "smooth.pt"), "--factory", f"{tmp_path}/nets.py:smooth"]
    cases = [
        ([], "give a run directory and one of its trials"),
        ([str(run), "digits-relu-s9"], f"{run}: no trial 'digits-relu-s9'"),
        ([str(run), TRIAL, "--k", "0"], "--k 0: give 1 to 1347"),
        ([str(run), TRIAL, "--seed", "-1"], "--seed -1: give 0 to 4294967295"),
        ([str(run), TRIAL, "--seed", str(2**32)], f"--seed {2**32}: give 0 to 4294967295"),
        ([*own, "--task", "digits"], "is not piecewise linear"),
    ]
    for argv, message in cases:
        assert main(["codes", *argv]) == 2
        lines = capsys.readouterr().err.splitlines()
        errors = [line for line in lines if not line.endswith(" ...")]  # progress lines aside
        assert len(errors) == 1 and errors[0].startswith("relulab codes: error: ")
        assert message in errors[0]
