"""GPT training: the schedule's formula, next-token windows, exact resumption from a
checkpoint, checkpoints refused when not ours, relufied checkpoints loaded back."""

from __future__ import annotations

import io
import math

import pytest
import torch

from relulab.errors import UserError
from relulab.transformers import GPT, GPTConfig
from relulab.transformers.relufy import relufy
from relulab.transformers.train import (
    TrainConfig,
    checkpoint,
    load_checkpoint,
    train_gpt,
    validation_loss,
    windows,
)

TINY = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)


def tiny_model(seed: int = 0, **changes) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY.__dict__, **changes}))


def text(length: int = 400) -> torch.Tensor:
    return torch.arange(length) * 7 % 11  # a periodic "text" over 11 tokens


def test_learning_rate_warms_up_linearly_then_follows_a_cosine():
    config = TrainConfig(steps=110, learning_rate=1.0, min_learning_rate=0.1, warmup_steps=10)
    assert config.learning_rate_at(0) == pytest.approx(0.1)
    assert config.learning_rate_at(9) == pytest.approx(1.0)
    halfway = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2))
    assert config.learning_rate_at(60) == pytest.approx(halfway)
    assert config.learning_rate_at(110) == pytest.approx(0.1)


def test_windows_pair_each_token_with_the_next():
    ids = torch.arange(100)
    x, y = windows(ids, 8, 5, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 8)
    assert torch.equal(y, x + 1)  # arange: the next token is the id plus one


def test_validation_loss_is_the_models_own_mean_cross_entropy():
    model = tiny_model()
    config = TrainConfig(eval_windows=10)
    x, y = windows(text(), 8, 10, torch.Generator().manual_seed(1234))
    _, loss = model.eval()(x, y)  # GPT.forward's loss, another code path
    assert validation_loss(model, text(), config) == pytest.approx(loss.item(), rel=1e-6)


def test_training_lowers_the_loss_and_resuming_from_a_checkpoint_is_exact():
    config = TrainConfig(steps=6, batch_size=4, eval_interval=3, warmup_steps=2, eval_windows=8)
    straight = tiny_model()
    history = train_gpt(straight, text(), text(), config)
    assert [h["step"] for h in history] == [3, 6]
    assert history[-1]["val_loss"] < validation_loss(tiny_model(), text(), config)

    saved = {}

    def keep(step, metrics, model, optimizer, generator):
        if step == 3:
            buffer = io.BytesIO()
            torch.save(checkpoint(model, optimizer, generator, step), buffer)
            saved["bytes"] = buffer.getvalue()
            raise KeyboardInterrupt  # as if stopped right after the checkpoint

    interrupted = tiny_model()
    with pytest.raises(KeyboardInterrupt):
        train_gpt(interrupted, text(), text(), config, on_eval=keep)
    state = torch.load(io.BytesIO(saved["bytes"]), weights_only=True)
    resumed = tiny_model(seed=99)  # other weights: the checkpoint's must replace them
    resumed.load_state_dict(state["weights"])
    train_gpt(resumed, text(), text(), config, state=state)
    after = resumed.state_dict()
    for name, value in straight.state_dict().items():
        assert torch.equal(value, after[name]), name


def test_a_file_that_is_not_our_checkpoint_is_one_line(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": {}}, path)
    with pytest.raises(UserError, match="is not a relulab GPT checkpoint"):
        load_checkpoint(str(path))


def test_a_relufied_checkpoint_loads_back_relufied(tmp_path):
    model = tiny_model(activation="gelu").eval()
    relufy(model, stage=2, shift=0.25)
    path = tmp_path / "relufied.pt"
    torch.save(checkpoint(model, relufied={"stage": 2, "shift": 0.25}), path)
    loaded, _ = load_checkpoint(str(path))
    x = text()[:8][None]
    assert torch.equal(loaded.eval()(x)[0], model(x)[0])
