"""relulab count: the printed counts are hand-computed layer sizes of the models it names;
wrong inputs are one UserError line. Run through a local parser (the command's own
add_parser/run), as cli/__init__.py wires it."""

from __future__ import annotations

import argparse
import json
import re
import textwrap

import pytest
import torch

from relulab.cli import count
from relulab.errors import UserError

FACTORY = """
from torch import nn

def make_net():
    # 3x8x8 -> conv 5 (pad 1) -> ReLU6 -> max 2 -> linear
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1), nn.ReLU6(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(5 * 4 * 4, 10),
    )

def make_mlp():
    return nn.Sequential(nn.Linear(64, 20), nn.ReLU(), nn.Linear(20, 10), nn.Softmax(1))
"""


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="relulab")
    count.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["count", *argv])
    return args.run(args)


def as_json(capsys, *argv: str) -> dict:
    assert cli(*argv, "--json") == 0
    return json.loads(capsys.readouterr().out)


def test_resnet18_prints_557056_and_its_layers(capsys):
    assert cli("--model", "resnet18") == 0
    out = capsys.readouterr().out
    assert "total: 557,056 ReLU evaluations (relu 557,056)" in out
    assert "layer4.1.act2 (ReLU)" in out and "11.8%" in out  # stem: 65536 / 557056
    result = as_json(capsys, "--model", "resnet18")
    assert result["total_relus"] == 64 * 32 * 32 + 4 * (
        64 * 32 * 32 + 128 * 16 * 16 + 256 * 64 + 512 * 16
    )
    assert [layer["count"] for layer in result["layers"]][:2] == [65536, 65536]
    assert sum(layer["percent"] for layer in result["layers"]) == pytest.approx(100)
    assert (
        as_json(capsys, "--model", "resnet18", "--input-shape", "3", "16", "16")["total_relus"]
        == 557_056 // 4
    )


@pytest.mark.parametrize(
    ("task", "layers", "max_pool"),
    [
        ("spirals", [64, 64], 0),
        ("digits", [128, 128], 0),
        ("digits_cnn", [16 * 8 * 8, 32 * 8 * 8], 32 * 4 * 4 * 3),  # 2x2 pool: 3 per output
        # length 40 → (40 + 2 - 5) // 2 + 1 = 19 → (19 + 2 - 3) // 2 + 1 = 10 → 5; 25 channels
        ("mnist1d", [25 * 19, 25 * 10, 25 * 5], 0),
    ],
)
def test_bench_task_models(capsys, task, layers, max_pool):
    result = as_json(capsys, "--task", task)
    assert [layer["count"] for layer in result["layers"] if layer["kind"] == "relu"] == layers
    assert result["total_relus"] == sum(layers)
    assert result["max_pool_comparisons"] == max_pool


def test_bench_task_with_relu6_counts_two_per_unit(capsys):
    result = as_json(capsys, "--task", "spirals", "--act", "relu6")
    assert result["relus_by_kind"] == {"clamp": 2 * 128}
    assert result["model"] == "spirals (relu6)"


@pytest.fixture
def factory(tmp_path):
    (tmp_path / "nets.py").write_text(textwrap.dedent(FACTORY))
    return tmp_path


def test_own_factory_with_input_shape(factory, capsys):
    result = as_json(
        capsys, "--factory", f"{factory / 'nets.py'}:make_net", "--input-shape", "3", "8", "8"
    )
    assert result["relus_by_kind"] == {"clamp": 2 * 5 * 8 * 8}
    assert result["max_pool_comparisons"] == 5 * 4 * 4 * 3
    assert cli("--factory", f"{factory / 'nets.py'}:make_net", "--input-shape", "3", "8", "8") == 0
    out = capsys.readouterr().out
    assert "max-pool comparisons: 240 (apart from the total)" in out
    assert "total: 640 ReLU evaluations (clamp 640)" in out


def test_own_factory_with_task_shape_and_checkpoint_lists_softmax(factory, capsys):
    torch.save(
        torch.nn.Sequential(
            torch.nn.Linear(64, 20), torch.nn.ReLU(), torch.nn.Linear(20, 10)
        ).state_dict(),
        factory / "mlp.pt",
    )
    argv = ["--factory", f"{factory / 'nets.py'}:make_mlp", "--task", "digits"]
    result = as_json(capsys, *argv, "--checkpoint", str(factory / "mlp.pt"))
    assert result["total_relus"] == 20
    assert [(c["layer"], c["call"], c["outputs"]) for c in result["not_counted"]] == [
        ("3 (Softmax)", "F.softmax", 10)
    ]
    assert cli(*argv) == 0
    assert "not counted (not ReLU-like): F.softmax (1 call, 10 outputs)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "give one model: --model, --task, --factory or RUN TRIAL"),
        (("--model", "resnet18", "--task", "digits"), r"\(got --model and --task\)"),
        (("--factory", "nets.py:make_net"), "--factory needs --input-shape"),
        (("--task", "digits", "--input-shape", "64"), "--input-shape is for --model and --factory"),
        (("--model", "resnet18", "--input-shape", "3", "0", "32"), "positive sizes, got 3 0 32"),
        (
            ("--model", "resnet18", "--input-shape", "1", "32", "32"),
            r"does not accept an input of shape \[1, 32, 32\]",
        ),
        (("--model", "resnet18", "--act", "rleu"), "unknown activation 'rleu'"),
        (("--checkpoint", "x.pt", "--task", "digits"), "--checkpoint needs --factory"),
        (("--task", "digitz"), "digits"),
        (
            ("--model", "resnet18", "--input-shape", "32", "32"),
            r"first layer, stem.0 \(Conv2d\), takes inputs of shape \(3, H, W\)",
        ),
    ],
)
def test_bad_input_is_one_user_error(argv, message):
    with pytest.raises(UserError, match=message) as raised:
        cli(*argv)
    assert "\n" not in str(raised.value)


def test_factory_relative_argument_errors(factory):
    where = f"{factory / 'nets.py'}:make_net"
    with pytest.raises(UserError, match="--act is for --model and --task"):
        cli("--factory", where, "--input-shape", "3", "8", "8", "--act", "relu")
    with pytest.raises(UserError, match=r"--input-shape or --task for the shape .*not both"):
        cli("--factory", where, "--input-shape", "3", "8", "8", "--task", "digits")
    torch.save({"weight": torch.zeros(2)}, factory / "bad.pt")
    # make_net's keys: 0.weight, 0.bias, 4.weight, 4.bias
    with pytest.raises(
        UserError, match=r"model: missing key '0.weight', unexpected key 'weight' \(and 3 more\)"
    ):
        cli(
            "--factory",
            where,
            "--input-shape",
            "3",
            "8",
            "8",
            "--checkpoint",
            str(factory / "bad.pt"),
        )


def test_a_trial_of_a_bench_run_is_counted_with_its_activation(tmp_path, capsys):
    from relulab.cli import main

    options = ["--acts", "leaky_relu", "--seeds", "1", "--epochs", "1", "--save-models", "--quiet"]
    assert main(["bench", "--tasks", "digits_cnn", *options, "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    (run,) = tmp_path.iterdir()
    result = as_json(capsys, str(run), "digits_cnn-leaky_relu-s0")
    assert result["relus_by_kind"] == {"leaky_relu": 16 * 64 + 32 * 64}
    assert result["max_pool_comparisons"] == 32 * 16 * 3
    with pytest.raises(UserError, match="--act is for --model and --task"):
        cli(str(run), "digits_cnn-leaky_relu-s0", "--act", "relu")
    # without TRIAL: the run's trials are listed (this run has one)
    with pytest.raises(UserError, match=rf"one of the trials of {run}: digits_cnn-leaky_relu-s0$"):
        cli(str(run))


TOP_LEVEL = """
import torch
import torch.nn.functional as F
from torch import nn

class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):  # 1x8x8 -> 4x8x8 relu -> pool 4x4x4 (3 per output) -> 4x4x4 relu
        x = self.pool(F.relu(self.conv1(x)))
        x = F.relu(self.conv2(x))
        return (x * (x > 0)).flatten(1)  # a ReLU the trace cannot tell from a gate

def make():
    return CNN()
"""


def test_table_names_top_level_calls_in_order_right_aligned(tmp_path, capsys):
    (tmp_path / "cnn.py").write_text(TOP_LEVEL)
    where = f"{tmp_path / 'cnn.py'}:make"
    assert cli("--factory", where, "--input-shape", "1", "8", "8") == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    header = lines[1].split()
    assert header == ["#", "layer", "call", "kind", "outputs", "count", "percent"]
    rows = [line.split() for line in lines[3:6]]
    assert [row[0] for row in rows] == ["0", "1", "2"]  # in execution order
    assert re.match(r"0 +CNN\.forward +F\.relu #1 ", lines[3]), lines[3]
    assert re.match(r"1 +pool \(MaxPool2d\) +F\.max_pool2d ", lines[4]), lines[4]
    assert re.match(r"2 +CNN\.forward +F\.relu #2 ", lines[5]), lines[5]
    assert [row[-3:] for row in rows] == [
        ["256", "256", "80.0%"],  # 4·8·8
        ["64", "192", "apart"],  # 4·4·4 windows of 4
        ["64", "64", "20.0%"],  # 4·4·4
    ]
    # right-aligned: every number of a column ends where its header does
    for word in ("outputs", "count", "percent"):
        end = lines[1].index(word) + len(word)
        assert all(line[end - 1] != " " and line[end : end + 1] in (" ", "") for line in lines[3:6])
    # x * (x > 0) is not counted, but named on stderr, one line for the module
    assert captured.err.splitlines() == [
        "relulab count: warning: possible hidden ReLU: Tensor.gt in model (CNN)"
    ]
    result = as_json(capsys, "--factory", where, "--input-shape", "1", "8", "8")
    assert set(result["layers"][0]) == {
        "index",
        "layer",
        "call",
        "kind",
        "outputs",
        "count",
        "percent",
    }
    assert [layer["index"] for layer in result["layers"]] == [0, 1, 2]
    assert result["warnings"] == ["possible hidden ReLU: Tensor.gt in model (CNN)"]
    assert result["total_relus"] == 320
