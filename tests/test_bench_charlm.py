"""The charlm bench task: its windows come from the right split at the right offsets, and a
tiny trial trains through run_trial and records the validation loss that the trained model
gives when recomputed here, position by position."""

from __future__ import annotations

import functools
import math
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from relulab.bench.charlm import CharLMTask
from relulab.bench.tasks import get_task
from relulab.bench.trainer import TrialSpec, activation_for_width, run_trial
from relulab.transformers import load_corpus

TINY = CharLMTask(context=16, train_windows=64, test_windows=8, n_layer=1, n_head=2, n_embd=16)


def test_charlm_is_registered():
    assert type(get_task("charlm")) is CharLMTask


def test_windows_are_next_character_pairs_from_their_split():
    corpus, data = load_corpus(), TINY.data()
    assert data.x_train.shape == data.y_train.shape == (64, 16)
    assert data.x_test.shape == (8, 16) and data.y_test.shape == (8 * 16,)
    assert data.classes == 65
    assert torch.equal(data.y_train[:, :-1], data.x_train[:, 1:])
    cut = len(corpus.train)
    train_text, val_text = corpus.text[:cut], corpus.text[cut:]
    for x, y in zip(data.x_train[:10], data.y_train[:10]):
        start = train_text.find(corpus.decode(x) + corpus.decode(y)[-1])
        assert start >= 0  # 17 consecutive characters of the training text
    targets = data.y_test.reshape(8, 16)
    assert torch.equal(targets[:, :-1], data.x_test[:, 1:])
    # spread evenly from the first to the last character of the validation text
    assert corpus.decode(data.x_test[0]) == val_text[:16]
    assert corpus.decode(targets[-1]) == val_text[-16:]


def test_a_tiny_trial_records_the_validation_loss_of_its_model():
    spec = TrialSpec(TINY, "relu", seed=0, epochs=2, batch_size=16, learning_rate=1e-2)
    outcome = run_trial(spec)
    result, data = outcome.result, TINY.data()
    assert result["status"] == "ok" and result["metric"] == "exp(-val loss)"
    assert outcome.probabilities.shape == (8 * 16, 65)
    assert [layer["layer"] for layer in result["layers"]] == ["gpt.blocks.0.ffn.act"]
    assert 0 < result["layers"][0]["sparsity"] < 1 and math.isfinite(result["ece"])

    model = TINY.model(functools.partial(activation_for_width, "relu"), data)
    model.load_state_dict(outcome.state)
    with torch.no_grad():
        logits, _ = model.eval().gpt(data.x_test)  # (8, 16, 65): GPT's own layout
    loss = F.cross_entropy(logits.double().reshape(-1, 65), data.y_test)
    assert abs(result["test_loss"] - float(loss)) < 1e-5
    assert abs(result["test_score"] - math.exp(-float(loss))) < 1e-6
    assert float(loss) < math.log(65) - 0.3  # it learned something: better than uniform


def test_charlm_validation_set_lacks_rare_characters_without_a_warning(caplog):
    """Its 8,192 validation characters miss some of the 65: the per-class check of the
    small-test-set warning does not apply to a vocabulary, and used to warn falsely."""
    from relulab.bench import runner

    task = get_task("charlm")
    data = task.data()
    assert int(torch.bincount(data.y_test, minlength=data.classes).min()) == 0
    with caplog.at_level("WARNING", logger="relulab"):
        runner.warn_if_small(task, data)
    assert caplog.messages == []


def test_a_charlm_test_set_under_20_examples_is_still_warned_about_without_classes(caplog):
    from relulab.bench import runner
    from relulab.bench.tasks import TaskData

    labels = torch.zeros(19, dtype=torch.long)  # 19 examples, all of one class of 65
    data = TaskData(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(19, 4), labels, 65)
    with caplog.at_level("WARNING", logger="relulab"):
        runner.warn_if_small(TINY, data)
    assert caplog.messages == [
        f"warning: charlm: only 19 test examples, so each is worth {100 / 19:.1f} points of "
        "exp(-val loss), too coarse to compare activations by; use at least 20 test examples"
    ]


@dataclass(frozen=True)
class _TinyCharLM(CharLMTask):
    """charlm at TINY's size, registered under charlm's name for a run in seconds."""

    context: int = 16
    train_windows: int = 64
    test_windows: int = 8
    n_layer: int = 1
    n_head: int = 2
    n_embd: int = 16


def test_the_terminal_table_names_the_score_and_shows_the_validation_loss(
    capsys, monkeypatch, tmp_path
):
    """It used to head the score column "accuracy %" whatever the task (report.md had it
    right). Each loss shown is checked against the mean of the trials' own records."""
    from relulab.bench import tasks
    from relulab.bench.rundir import read_json
    from relulab.cli import main

    monkeypatch.setitem(tasks.TASKS, "charlm", _TinyCharLM)
    argv = ["bench", "--tasks", "charlm", "--acts", "relu", "gelu", "--seeds", "2",
            "--epochs", "1", "--workers", "1", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    run = next(tmp_path.glob("*-bench"))
    header = next(line for line in out.splitlines() if line.startswith("rank"))
    assert "exp(-val loss) % (mean ± std)" in header and "accuracy" not in header
    assert "val loss (nats/char), mean" in header
    assert "| exp(-val loss) % (mean ± std) | 95% CI | val loss (nats/char), mean |" in (
        (run / "report.md").read_text()
    )
    for activation in ("relu", "gelu"):
        losses = [
            read_json(run / "trials" / f"charlm-{activation}-s{seed}" / "result.json")["test_loss"]
            for seed in (0, 1)
        ]
        (row,) = [line for line in out.splitlines() if line.split()[1:2] == [activation]]
        assert f"  {sum(losses) / 2:.3f}  " in row


def test_bench_help_lists_the_registered_tasks(capsys, monkeypatch):
    from relulab.bench import tasks
    from relulab.cli import main

    monkeypatch.setitem(tasks.TASKS, "new_task", _TinyCharLM)
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert (
        "--tasks TASK [TASK ...] charlm, digits, digits_cnn, mnist1d, new_task, spirals, "
        "csv, npz (default: spirals digits mnist1d;" in text
    )


def test_the_transformers_package_exports_the_lab_without_importing_hugging_face():
    """``relufy`` the function shadows ``relulab.transformers.relufy`` the submodule as an
    attribute; importing from the submodule still works. (Here because charlm is what the
    bench imports of the package.)"""
    code = (
        "import sys, relulab, relulab.transformers as t\n"
        "from relulab.transformers import relufy, relufy_plan, measure_sparsity, SparsityMeter\n"
        "from relulab.transformers import TrainConfig, train_gpt, load_checkpoint\n"
        "from relulab.transformers import relufication, RelufyConfig\n"
        "from relulab.transformers.relufy import find_ffns, relufy as from_module\n"
        "import importlib\n"
        "module = importlib.import_module('relulab.transformers.relufy')\n"
        "assert callable(relufy) and relufy is from_module is module.relufy\n"
        "assert all(hasattr(t, name) for name in t.__all__)\n"
        "print('transformers' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "False\n"
