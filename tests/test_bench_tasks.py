"""The bench tasks' models and training schedules, checked against numbers worked out by hand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relulab.bench.models import MLP, Conv1dNet
from relulab.bench.tasks import Schedule, Task, TaskData, get_task
from relulab.bench.trainer import TrialSpec, run_trial


def test_conv1dnet_has_convbase_parameter_count():
    """MNIST-1D's ConvBase (Greydanus 2020) has 5,210 parameters, as its training notebook
    prints: 25·1·5+25 + 2·(25·25·3+25) + 125·10+10 = 150 + 3800 + 1260."""
    model = Conv1dNet(40, 10, lambda n: nn.ReLU())
    assert sum(p.numel() for p in model.parameters()) == 5210


def test_conv1dnet_computes_convbase():
    """The same weights through the authors' layer recipe written out with torch.nn.functional:
    conv k5 s2 p1 → relu → (conv k3 s2 p1 → relu) × 2 → flatten (25 channels × 5) → linear."""
    torch.manual_seed(0)
    model = Conv1dNet(40, 10, lambda n: nn.ReLU())
    first, second, third = (m for m in model.modules() if isinstance(m, nn.Conv1d))
    x = torch.randn(7, 40)
    h = F.relu(F.conv1d(x.view(7, 1, 40), first.weight, first.bias, stride=2, padding=1))
    assert h.shape == (7, 25, 19)
    h = F.relu(F.conv1d(h, second.weight, second.bias, stride=2, padding=1))
    h = F.relu(F.conv1d(h, third.weight, third.bias, stride=2, padding=1))
    assert h.shape == (7, 25, 5)
    expected = F.linear(h.reshape(7, 125), model.head.weight, model.head.bias)
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-6)


def test_mnist1d_task_builds_convbase_and_the_full_schedule_has_4000_steps():
    task = get_task("mnist1d")
    model = task.model(lambda n: nn.ReLU(), task.data())
    assert sum(p.numel() for p in model.parameters()) == 5210
    full = task.schedule(task.epochs["full"], task.batch_size, task.learning_rate)
    # 4000 training signals in batches of 100 are 40 steps an epoch; the authors' lr and batch.
    assert (full.epochs, full.steps, full.batch_size, full.learning_rate) == (100, 4000, 100, 1e-2)


def test_schedule_counts_a_short_last_batch_as_a_step():
    task = _Tiny()  # 10 examples in batches of 4: 4 + 4 + 2, three steps an epoch
    assert task.schedule(5, 4, 0.1).steps == 15


def test_cooldown_factor_by_hand():
    schedule = Schedule(epochs=5, batch_size=4, learning_rate=1.0, steps=10, cooldown=0.4)
    factors = [schedule.factor(step) for step in range(10)]
    assert factors == [1, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25]
    assert [Schedule(5, 4, 1.0, 10).factor(s) for s in range(10)] == [1] * 10


@dataclass(frozen=True)
class _Tiny(Task):
    """10 examples of 3 features; a linear model."""

    name: ClassVar[str] = "tiny"
    weight_decay: ClassVar[float] = 0.25
    cooldown: ClassVar[float] = 0.5

    def load(self) -> TaskData:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(10, 3, generator=generator)
        y = torch.arange(10) % 2
        return TaskData(x, y, x, y, 2)

    def model(self, activation, data: TaskData) -> nn.Module:
        return MLP(3, (), 2, activation)


def test_trial_trains_with_the_tasks_weight_decay_and_cooldown(monkeypatch):
    """The learning rate and weight decay in force at each of the trial's optimizer steps:
    2 epochs of 10 examples in batches of 4 are 6 steps; the last half (3 steps) cools down."""
    seen = []
    step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        seen.append((self.param_groups[0]["lr"], self.param_groups[0]["weight_decay"]))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    outcome = run_trial(
        TrialSpec(_Tiny(), "relu", seed=0, epochs=2, batch_size=4, learning_rate=0.3)
    )
    assert outcome.result["status"] == "ok"
    assert [lr for lr, _ in seen] == pytest.approx([0.3, 0.3, 0.3, 0.3, 0.2, 0.1])
    assert {decay for _, decay in seen} == {0.25}


def test_a_table_task_carries_its_files_bytes(tmp_path):
    """Table.from_file reads the file once; the task, pickled as it is sent to a worker, loads
    the same data with the file gone. Its identity is (path, target, sha256): the bytes are
    left out of equality, hashing and repr."""
    import hashlib
    import pickle

    from relulab.bench import tasks

    path = tmp_path / "t.csv"
    path.write_text("a,b,kind\n" + "".join(f"{i},{i % 3},{'xy'[i % 2]}\n" for i in range(20)))
    task = tasks.Table.from_file(str(path), "kind")
    assert task.content == path.read_bytes()
    assert task.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    bare = tasks.Table(str(path), "kind", task.sha256)
    assert task == bare and hash(task) == hash(bare) and "content" not in repr(task)
    expected = tasks.Table(str(path), "kind").load()  # read from the file itself

    shipped = pickle.loads(pickle.dumps(task))
    path.unlink()
    tasks._cached_data.cache_clear()
    data = shipped.data()
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(data, name), getattr(expected, name)), name
    assert data.classes == expected.classes == 2


def test_a_schedule_of_one_epoch_and_one_step_reads_in_the_singular():
    assert str(Schedule(epochs=1, batch_size=64, learning_rate=3e-3, steps=1)) == (
        "1 epoch = 1 step of batch 64, Adam lr 0.003"
    )
    assert str(Schedule(2, 64, 3e-3, 44)).startswith("2 epochs = 44 steps of batch 64")
