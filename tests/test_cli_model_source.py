"""A geometry command takes your own checkpoint and model factory as it takes a bench trial."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

from relulab.cli import main

FACTORY = """
from torch import nn

def make_net():
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
"""


@pytest.fixture
def checkpoint(tmp_path):
    (tmp_path / "nets.py").write_text(textwrap.dedent(FACTORY))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    torch.save(net.state_dict(), tmp_path / "net.pt")
    return tmp_path, net


def test_own_checkpoint_gives_the_regions_of_those_weights(checkpoint, capsys):
    folder, net = checkpoint
    argv = ["--checkpoint", str(folder / "net.pt"), "--factory", f"{folder / 'nets.py'}:make_net"]
    assert main(["regions", *argv, "--task", "spirals", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # independent oracle: the 16 hidden units' lines through the box; a region's centroid is
    # inside the box and the net's hidden pattern there is one no other polygon has
    centroids = np.array([np.mean(p, axis=0) for p in result["polygons"]])
    with torch.no_grad():
        hidden = net[0](torch.tensor(centroids, dtype=torch.float32)) > 0
    assert len({tuple(row) for row in hidden.tolist()}) == result["regions"] > 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "spirals"], "with your own model, give --checkpoint and --factory as well"),
        (["--checkpoint", "missing.pt", "--factory", "x.py:f", "--task", "spirals"], "x.py"),
        (["run", "trial", "--task", "spirals"], "not both"),
    ],
)
def test_wrong_own_model_inputs_are_one_line(argv, message, capsys):
    assert main(["regions", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_checkpoint_that_does_not_fit_is_one_line(checkpoint, capsys):
    folder, _ = checkpoint
    (folder / "other.py").write_text("import torch\ndef make():\n    return torch.nn.Linear(2, 5)")
    argv = ["--checkpoint", str(folder / "net.pt"), "--factory", f"{folder / 'other.py'}:make"]
    assert main(["regions", *argv, "--task", "spirals"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit the factory's model" in err[0], err
