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
    # the line names what does not fit, not only torch's header ("Error(s) in loading ...")
    # Linear(2, 5) has weight and bias; the file has 0.weight, 0.bias, 2.weight, 2.bias
    assert "missing key 'weight', unexpected key '0.weight' (and 4 more)" in err[0], err


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        # net.pt's own weights, one of them cut short: the size mismatch names both shapes
        ({"2.bias": torch.zeros(4)}, "size mismatch for '2.bias': (4,) in the file, (3,) in"),
        ({"0.weight": None}, "missing key '0.weight', unexpected key 'extra'"),
    ],
)
def test_checkpoint_mismatch_names_the_first_key(checkpoint, state, expected, capsys):
    folder, net = checkpoint
    weights = net.state_dict()
    weights.update({k: v for k, v in state.items() if v is not None})
    for key in [k for k, v in state.items() if v is None]:
        weights["extra"] = weights.pop(key)
    torch.save(weights, folder / "changed.pt")
    argv = ["--checkpoint", str(folder / "changed.pt"), "--factory", f"{folder}/nets.py:make_net"]
    line = _error_line([*argv, "--task", "spirals"], capsys)
    assert "does not fit the factory's model: " + expected in line, line


def test_factory_module_name_of_a_file_in_the_working_directory_hints_the_file(
    checkpoint, monkeypatch, capsys
):
    folder, _ = checkpoint
    monkeypatch.chdir(folder)
    argv = ["--checkpoint", "net.pt", "--factory", "nets:make_net", "--task", "spirals"]
    line = _error_line(argv, capsys)
    assert line.endswith("No module named 'nets'; did you mean nets.py:make_net?"), line


def _error_line(argv, capsys) -> str:
    """The one line of a usage error (exit 2), which must not pass on torch's terminal colours
    nor its advice to load with weights_only=False (that runs the file's code)."""
    assert main(["regions", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "\x1b" not in err[0] and "weights_only" not in err[0], err
    return err[0]


BROKEN = {
    "raises.py": "def make():\n    raise RuntimeError('oops')\n",
    "needs.py": "def make(width):\n    return width\n",
    "syntax.py": "import torch\n\ndef make(:\n    pass\n",
    "imports.py": "import relulab_no_such_package\n\ndef make():\n    pass\n",
}


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("raises.py", "raises.py:make raised RuntimeError: oops"),
        ("needs.py", "needs.py:make raised TypeError: make() missing 1 required positional"),
        ("syntax.py", "cannot load {path}: SyntaxError: invalid syntax (syntax.py, line 3)"),
        ("imports.py", "cannot load {path}: ModuleNotFoundError: No module named 'relulab_no_"),
    ],
)
def test_factory_that_fails_is_one_line(checkpoint, file, expected, capsys):
    folder, _ = checkpoint
    path = folder / file
    path.write_text(BROKEN[file])
    argv = ["--checkpoint", str(folder / "net.pt"), "--factory", f"{path}:make"]
    line = _error_line([*argv, "--task", "spirals"], capsys)
    assert expected.format(path=path) in line, line


def test_factory_file_with_a_dataclass_loads(checkpoint, capsys):
    # a module's dataclass looks the module up in sys.modules while the file runs
    folder, _ = checkpoint
    source = "from __future__ import annotations\nfrom dataclasses import dataclass\n"
    source += "@dataclass\nclass Config:\n    width: int = 16\n" + textwrap.dedent(FACTORY)
    (folder / "configured.py").write_text(source)
    argv = ["--checkpoint", str(folder / "net.pt"), "--factory", f"{folder}/configured.py:make_net"]
    assert main(["regions", *argv, "--task", "spirals", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["regions"] > 1


def test_a_bug_past_the_users_code_is_still_a_bug(checkpoint, monkeypatch, capsys):
    # guard: catching the user's errors must not turn relulab's own failures into usage errors
    import relulab.cli.model_source as model_source

    class Task:
        def data(self):
            raise RuntimeError("a bug in relulab")

    monkeypatch.setattr(model_source, "get_task", lambda name: Task())
    folder, _ = checkpoint
    argv = ["--checkpoint", str(folder / "net.pt"), "--factory", f"{folder}/nets.py:make_net"]
    assert main(["regions", *argv, "--task", "spirals"]) == 1
    assert "internal error" in capsys.readouterr().err


def test_model_for_another_tasks_inputs_is_one_line(checkpoint, capsys):
    folder, net = checkpoint
    argv = ["--checkpoint", str(folder / "net.pt"), "--factory", f"{folder}/nets.py:make_net"]
    line = _error_line([*argv, "--task", "digits"], capsys)
    # reference: torch's own complaint about an 8x8 digit (64 values) fed to a 2-input net
    with pytest.raises(RuntimeError) as raised:
        net(torch.zeros(1, 64))
    expected = (
        f"the model from --factory {folder}/nets.py:make_net does not accept --task digits "
        f"inputs of shape (64,): {str(raised.value).splitlines()[0]}"
    )
    assert line.endswith(expected), line


OUTPUTS = """
import torch
from torch import nn

def five_classes():
    return nn.Linear(2, 5)

class Pair(nn.Linear):
    def forward(self, x):
        return super().forward(x), x

def pair():
    return Pair(2, 3)
"""


@pytest.mark.parametrize(
    ("function", "classes", "expected"),
    [
        ("five_classes", 5, "gives outputs of shape (1, 5) for one example; it needs (1, 3)"),
        ("pair", 3, "returns a tuple; it needs (1, 3) logits for the 3 classes of --task spirals"),
    ],
)
def test_model_whose_outputs_are_not_the_tasks_logits_is_one_line(
    tmp_path, function, classes, expected, capsys
):
    (tmp_path / "outputs.py").write_text(OUTPUTS)
    torch.save(torch.nn.Linear(2, classes).state_dict(), tmp_path / "net.pt")
    argv = ["--checkpoint", str(tmp_path / "net.pt"), "--factory", f"{tmp_path}/outputs.py:"]
    argv[-1] += function
    assert expected in _error_line([*argv, "--task", "spirals"], capsys)


def _whole_model(path):
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 16)), path)


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (_whole_model, "holds a pickled object, not a state dict"),
        (lambda path: path.write_text("hello\n"), "is not a torch file"),
        (lambda path: path.write_bytes(bytes(range(256))), "is not a torch file"),
        (lambda path: path.write_bytes(b""), "is not a torch file"),
    ],
    ids=["whole-model", "text", "bytes", "empty"],
)
def test_checkpoint_that_is_not_a_state_dict_is_one_line(checkpoint, write, expected, capsys):
    folder, _ = checkpoint
    write(folder / "bad.pt")
    argv = ["--checkpoint", str(folder / "bad.pt"), "--factory", f"{folder}/nets.py:make_net"]
    line = _error_line([*argv, "--task", "spirals"], capsys)
    assert f"--checkpoint {folder / 'bad.pt'} {expected}" in line, line
    if write is _whole_model:
        assert line.endswith("save model.state_dict() instead"), line


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("make_nett", "nets.py has no function 'make_nett'; did you mean 'make_net'?"),
        ("NOT_CALLABLE", "nets.py:NOT_CALLABLE: NOT_CALLABLE is an int, not a function"),
    ],
)
def test_factory_name_that_is_not_a_function_is_one_line(checkpoint, name, expected, capsys):
    folder, _ = checkpoint
    with (folder / "nets.py").open("a") as file:
        file.write("\nNOT_CALLABLE = 3\n")
    argv = ["--checkpoint", str(folder / "net.pt"), "--factory", f"{folder}/nets.py:{name}"]
    assert expected in _error_line([*argv, "--task", "spirals"], capsys)
