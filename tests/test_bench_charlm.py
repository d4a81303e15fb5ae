"""The charlm bench task: its windows come from the right split at the right offsets, and a
tiny trial trains through run_trial and records the validation loss that the trained model
gives when recomputed here, position by position."""

from __future__ import annotations

import functools
import math

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
