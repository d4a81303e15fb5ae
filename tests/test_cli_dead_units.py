"""relulab dead-units: the printed dead fractions and sparsities are those of the bench's own
trained models, counted here with plain torch; wrong inputs are one line."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from relulab.bench.models import paired_init
from relulab.bench.tasks import get_task
from relulab.bench.trainer import TrialSpec, activation_for_width, run_trial
from relulab.cli import main

EPOCHS, RATE = 2, 0.03  # 30x digits' rate: ReLU units die within two epochs


def counted_with_plain_torch(state: dict[str, torch.Tensor], x: torch.Tensor):
    """Per hidden layer of digits' MLP (Linear → ReLU twice): the fraction of units whose
    pre-activation is <= 0 on every training example (ReLU's derivative is 0 there, as
    torch's), and the fraction of ReLU outputs that are 0."""
    dead, sparsity, h = [], [], x
    for index in (0, 2):
        pre = F.linear(h, state[f"net.{index}.weight"], state[f"net.{index}.bias"])
        dead.append(float((pre <= 0).all(0).double().mean()))
        sparsity.append(float((pre <= 0).double().mean()))
        h = pre.clamp(min=0)
    return dead, sparsity


@pytest.fixture(scope="module")
def states():
    """digits' ReLU MLP at each epoch, from the bench itself: the initial weights, then the
    weights of run_trial after 1 and 2 epochs (digits has a constant rate, so a 1-epoch trial
    is the first epoch of a 2-epoch one)."""
    task = get_task("digits")
    model = task.model(lambda width: activation_for_width("relu", width), task.data())
    paired_init(model, 0)
    found = [model.state_dict()]
    for epochs in range(1, EPOCHS + 1):
        spec = TrialSpec(task, "relu", 0, epochs, task.batch_size, RATE)
        found.append(run_trial(spec).state)
    return found


def test_json_dead_fractions_and_sparsity_match_the_bench_models(states, capsys):
    argv = ["--task", "digits", "--acts", "relu", "GELU", "--epochs", str(EPOCHS), "--lr", "0.03"]
    assert main(["dead-units", *argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    relu, gelu = result["runs"]
    x = get_task("digits").data().x_train
    assert relu["epochs"] == [0, 1, 2] and relu["layers"] == ["net.1", "net.3"]
    for epoch, state in enumerate(states):
        dead, sparsity = counted_with_plain_torch(state, x)
        assert relu["dead_fraction"][epoch] == pytest.approx(dead, abs=1e-12)
        assert relu["sparsity"][epoch] == pytest.approx(sparsity, abs=1e-12)
    assert relu["dead_fraction"][-1][1] > 0  # the test sees dying units, not zeros only
    assert gelu["activation"] == "gelu"  # canonical spelling
    assert all(cell is None for row in gelu["dead_fraction"] for cell in row)
    assert gelu["sparsity"][0] == [0.0, 0.0]  # GELU is 0 at 0 only
    data = get_task("digits").data()
    model = get_task("digits").model(lambda width: activation_for_width("relu", width), data)
    model.load_state_dict(states[-1])
    accuracy = float((model(data.x_test).argmax(1) == data.y_test).double().mean())
    assert relu["test_score"] == pytest.approx(accuracy, abs=1e-12)
    assert result["config"]["command"] == (
        "relulab dead-units --task digits --acts relu gelu --epochs 2 --seed 0 "
        "--learning-rate 0.03 --json"
    )


def test_the_table_prints_each_layers_dead_percentage_and_na_for_gelu(states, capsys):
    argv = ["--acts", "relu", "gelu", "--epochs", str(EPOCHS), "--lr", "0.03"]
    assert main(["dead-units", *argv]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split() == [
        "activation", "lr", "layer", "dead", "e0", "dead", "e1", "dead", "e2",
        "sparsity", "e0", "sparsity", "e2", "test", "accuracy",
    ]  # fmt: skip
    x = get_task("digits").data().x_train
    dead_0, _ = counted_with_plain_torch(states[0], x)
    dead_1, _ = counted_with_plain_torch(states[1], x)
    dead_2, sparsity_2 = counted_with_plain_torch(states[2], x)
    for layer in range(2):
        cells = lines[2 + layer].split()
        assert cells[:3] == ["relu", "0.03", f"net.{2 * layer + 1}"]
        expected = [dead_0[layer], dead_1[layer], dead_2[layer]]
        assert cells[3:6] == [f"{100 * v:.1f}%" for v in expected]
        assert cells[7] == f"{100 * sparsity_2[layer]:.1f}%"
    for cells in (line.split() for line in lines[4:6]):
        assert cells[0] == "gelu" and cells[3:6] == ["n/a"] * 3 and cells[6].endswith("%")
    # progress on stderr, one line per (activation, rate) when stderr is not a terminal
    # the test score in % as in the table, not as a fraction
    score = lines[2].split()[-1]
    assert captured.err.splitlines()[0] == f"[1/2] digits relu lr 0.03: done, test accuracy {score}"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--task", "digit"], "unknown task 'digit'; did you mean 'digits'?"),
        (["--acts", "rleu"], "unknown activation 'rleu'; did you mean 'relu'?"),
        (["--epochs", "0"], "--epochs must be at least 1, got 0"),
        (["--lr", "0"], "--learning-rate must be a finite number > 0, got 0"),
        (["--lr", "inf"], "--learning-rate must be a finite number > 0, got inf"),
        (["--lr", "0.01", "nan"], "--learning-rate must be a finite number > 0, got nan"),
        (["--task", "csv"], "--task csv: your own table runs under relulab bench --data only"),
    ],
)
def test_wrong_inputs_are_one_line_and_exit_2(argv, message, capsys):
    assert main(["dead-units", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"relulab dead-units: error: {message}\n"


def test_an_unwritable_plot_path_fails_before_any_training(tmp_path, capsys, monkeypatch):
    import relulab.geometry.dead_units as tracking

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking -o")

    monkeypatch.setattr(tracking, "track_trial", no_training)
    target = tmp_path / "missing" / "dead.png"
    assert main(["dead-units", "--acts", "relu", "--epochs", "1", "-o", str(target)]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        f"relulab dead-units: error: cannot write {target}: {str(target.parent)!r} does not exist\n"
    )


def test_the_help_description_is_wrapped(capsys):
    with pytest.raises(SystemExit):
        main(["dead-units", "--help"])
    out = capsys.readouterr().out
    description = out.split("\n\n")[1]
    assert description.startswith("Train a bench task's model")
    assert max(len(line) for line in description.splitlines()) <= 88


def test_a_diverged_run_keeps_the_epochs_it_finished(capsys):
    # lr 1e30: the first step moves each weight by about 1e30; the next forward pass overflows
    assert main(["dead-units", "--acts", "relu", "--epochs", "3", "--lr", "1e30", "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert run["status"] == "diverged" and run["diverged_at_epoch"] == 1
    assert run["epochs"] == [0] and len(run["dead_fraction"]) == len(run["test_scores"]) == 1
