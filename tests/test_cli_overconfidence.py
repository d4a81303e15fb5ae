"""relulab overconfidence: the printed confidences against a softmax computed here, and the
ReLU-certain / tanh-bounded contrast far from the data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from relulab.bench.runner import load_model
from relulab.bench.tasks import get_task
from relulab.cli import main
from relulab.cli.overconfidence import ray_directions


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    options = ["--seeds", "1", "--epochs", "1", "--workers", "1", "--save-models", "--quiet"]
    tasks = ["--tasks", "digits", "spirals"]  # spirals: for mixing tasks, refused
    argv = ["bench", *tasks, "--acts", "relu", "tanh", *options, "--out", str(out)]
    assert main(argv) == 0
    (directory,) = out.iterdir()
    return directory


def top_probability(run, trial: str, alpha: float) -> np.ndarray:
    """The top softmax probability of the trial's model at alpha * x over the test inputs,
    in float64, written out here."""
    model = load_model(run, trial).double()
    x = get_task("digits").data().x_test.double()
    with torch.no_grad():
        logits = model(alpha * x)
    return torch.softmax(logits, dim=1).amax(dim=1).numpy()


def overconfidence_json(capsys, *argv: str) -> dict:
    assert main(["overconfidence", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_printed_numbers_are_the_softmax_of_the_float64_model(run, capsys):
    trials = ["digits-relu-s0", "digits-tanh-s0"]
    result = overconfidence_json(capsys, str(run), *trials, "--alphas", "1e4", "1", "30")
    assert [t["trial"] for t in result["trials"]] == trials
    for trial in result["trials"]:
        assert trial["alphas"] == [1, 30, 1e4]  # sorted
        for j, alpha in enumerate([1, 30, 1e4]):
            p = top_probability(run, trial["trial"], alpha)
            assert trial["directions"] == len(p) == 450
            assert trial["median_confidence"][j] == pytest.approx(np.median(p), rel=1e-12)
            quartiles = np.quantile(1 - p, [0.25, 0.5, 0.75])
            assert trial["doubt_quartiles"][j] == pytest.approx(quartiles, rel=1e-6, abs=1e-15)
            assert trial["certain_fraction"][j] == np.mean(1 - p < 1e-12)
    # the text table: the quartiles and median of 1 - p at alpha = 30, the plot's band and line
    assert main(["overconfidence", str(run), "digits-relu-s0", "--alphas", "1", "30"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == [
        "alpha", "median", "p", "1", "-", "p:", "25th", "pct", "median", "75th", "pct", "certain"
    ]  # fmt: skip
    (row,) = [line.split() for line in lines if line.startswith("30 ")]
    doubt = 1 - top_probability(run, "digits-relu-s0", 30)
    expected = np.quantile(doubt, [0.25, 0.5, 0.75])
    assert [float(cell) for cell in row[2:5]] == pytest.approx(expected, rel=0.06)


def test_relu_becomes_certain_far_out_and_tanh_does_not(run, capsys):
    # After 1 epoch (and after 20, seeds 0-3: 100% and 0%), at alpha = 1e8 every ReLU ray is
    # affine and its top logit leads by far more than 37; tanh's logits stay bounded
    # (1 - p >= 2e-5 on every ray).
    result = overconfidence_json(
        capsys, str(run), "digits-relu-s0", "digits-tanh-s0", "--alphas", "1", "1e8"
    )
    relu, tanh = result["trials"]
    assert relu["certain_at_largest_alpha"] >= 0.99 and relu["certain_fraction"][0] == 0
    assert tanh["certain_at_largest_alpha"] == 0
    assert np.max(top_probability(run, "digits-tanh-s0", 1e8)) < 1 - 1e-6


def test_noise_directions_have_the_training_data_scale(run, capsys):
    data = get_task("digits").data()
    noise = ray_directions(data, "noise", count=20000, seed=1)
    expected = data.x_train.double().std(dim=0).numpy()
    np.testing.assert_allclose(noise.double().std(dim=0).numpy(), expected, rtol=0.05)
    assert (expected == 0).any() and (noise[:, expected == 0] == 0).all()
    argv = [str(run), "digits-relu-s0", "--directions", "noise", "--count", "40"]
    first = overconfidence_json(capsys, *argv, "--seed", "3")
    assert first["trials"][0]["directions"] == 40 and first["seed"] == 3
    assert overconfidence_json(capsys, *argv, "--seed", "3") == first
    other = overconfidence_json(capsys, *argv, "--seed", "4")
    assert other["trials"][0]["median_confidence"] != first["trials"][0]["median_confidence"]


def test_the_plot_is_written(run, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "far.png"
    result = overconfidence_json(
        capsys, str(run), "digits-relu-s0", "digits-tanh-s0", "--alphas", "1", "100", "-o",
        str(path),
    )  # fmt: skip
    assert result["plot"] == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["digits-reluu-s0"], "no trial 'digits-reluu-s0'; did you mean 'digits-relu-s0'?"),
        (["digits-relu-s0", "--alphas", "0"], "--alphas 0: every alpha must be a finite number"),
        (["digits-relu-s0", "--alphas", "inf"], "--alphas inf: every alpha must be a finite"),
        (["digits-relu-s0", "--alphas", "x"], "argument --alphas: invalid float value: 'x'"),
        (["digits-relu-s0", "--alphas", "2", "2"], "--alphas 2 2: an alpha is repeated"),
        (["digits-relu-s0", "digits-relu-s0"], "trial 'digits-relu-s0' is given twice"),
        (["digits-relu-s0", "--count", "451"], "--count 451: give 1 to 450"),
        (["digits-relu-s0", "--directions", "nois"], "unknown --directions value 'nois'"),
        (
            ["digits-relu-s0", "spirals-relu-s0", "digits-tanh-s0"],
            "trials of 2 tasks (digits: digits-relu-s0 digits-tanh-s0; spirals: spirals-relu-s0):"
            " compare one task per call",
        ),
        (
            ["digits-relu-s0", "-o", "/no/such/folder/far.png"],
            "cannot write /no/such/folder/far.png: '/no/such/folder' does not exist",
        ),
    ],
)
def test_wrong_inputs_are_one_line(run, capsys, argv, message):
    try:
        code = main(["overconfidence", str(run), *argv])
    except SystemExit as exit_:  # argparse's own errors exit from parse_args
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("relulab overconfidence: error: ")
    assert message in err[-1]
    assert all(not line.startswith("relulab") for line in err[:-1])  # progress only above


def test_no_model_is_one_line(capsys):
    assert main(["overconfidence"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("relulab overconfidence: error: give a run directory")
