"""CONTRIBUTING.md's "adding an activation": its example, run as written, declares a new
activation in one place, and list, show, speed, surgery and the fused path all find it.

The references are torch's own nn.Hardtanh and F.hardtanh, not relulab's code.
"""

from __future__ import annotations

import doctest
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as TF
from torch import nn

import relulab
from relulab import registry
from relulab.cli import main
from relulab.sites import call_sites, module_sites

CONTRIBUTING = Path(__file__).resolve().parent.parent / "CONTRIBUTING.md"


@pytest.fixture
def example(monkeypatch) -> dict:
    """The namespace of CONTRIBUTING.md's example, registered in a registry of its own."""
    monkeypatch.setattr(registry, "_ACTIVATIONS", dict(registry._ACTIVATIONS))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
    text = CONTRIBUTING.read_text(encoding="utf-8")
    block = re.search(r"<!-- example:begin -->\n```python\n(.*?)```", text, re.S)
    assert block, "CONTRIBUTING.md lost its example block"
    namespace: dict = {"__name__": "contributing_example"}
    exec(compile(block.group(1), str(CONTRIBUTING), "exec"), namespace)
    return namespace


def test_the_example_is_registered_and_its_docstring_example_holds(example):
    info = relulab.activation_info("hard-tanh")  # an alias, typed as users type
    assert info.module is example["Hardtanh"] and info.kernel is example["hardtanh_kernel"]
    assert info.torch_equivalent == "torch.nn.Hardtanh"
    finder = doctest.DocTestFinder().find(
        example["Hardtanh"], globs={"Hardtanh": example["Hardtanh"], "torch": torch}
    )
    results = [doctest.DocTestRunner().run(test) for test in finder]
    assert sum(r.attempted for r in results) == 1 and sum(r.failed for r in results) == 0


def test_list_and_show_find_it(example, capsys):
    assert main(["list", "hard*", "--json"]) == 0
    listed = {entry["name"] for entry in json.loads(capsys.readouterr().out)}
    assert "hardtanh" in listed
    assert main(["show", "hardtanh(min_val=-2.0, max_val=3.0)"]) == 0
    shown = capsys.readouterr().out
    assert "clamp(x, min_val, max_val)" in shown and "Collobert 2004" in shown


def test_speed_times_it_against_torchs_own_module(example, capsys):
    code = main(["speed", "hardtanh", "--numel", "4096", "--rounds", "1", "--threads", "1"])
    assert code == 0
    capsys.readouterr()
    from relulab import speed

    result = speed.elementwise(["hardtanh"], numel=4096, rounds=1, threads=1)
    rows = {(r["activation"], r["implementation"]): r for r in result["rows"]}
    assert {"fused", "reference", "native"} <= {i for a, i in rows if a == "hardtanh"}
    assert rows[("hardtanh", "fused")]["saved_to_input"] == 0.25  # a 1-byte mask per float32


def test_the_fused_path_runs_its_kernel_with_torchs_values_and_gradients(example):
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0], dtype=torch.float64)
    upstream = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, float("inf")], dtype=torch.float64)
    mine, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    y = relulab.get_activation("hardtanh")(mine)
    assert "Fused" in type(y.grad_fn).__name__
    expected = nn.Hardtanh()(theirs)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    y.backward(upstream)
    expected.backward(upstream)
    torch.testing.assert_close(mine.grad, theirs.grad, rtol=0, atol=0)  # 0 at ±1, as torch


def test_a_subclass_that_overrides_the_maths_runs_its_own(example):
    class Doubled(example["Hardtanh"]):
        def reference(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().reference(x)

    x = torch.linspace(-2, 2, 9, requires_grad=True)
    y = Doubled()(x)
    assert "Fused" not in type(y.grad_fn).__name__
    torch.testing.assert_close(y, 2 * TF.hardtanh(x.detach()), rtol=0, atol=0)


def test_surgery_finds_torchs_modules_and_calls_and_replaces_them(example):
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 4)
            self.act = nn.Hardtanh(-2.0, 2.0)
            self.clip = nn.ReLU6()  # a subclass of nn.Hardtanh in torch: still relu6

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.clip(TF.hardtanh(self.act(self.linear(x)), -0.5, 0.5))

    model = Net()
    found = {(s.path, s.activation, s.spec) for s in module_sites(model)}
    assert found == {
        ("act", "hardtanh", "hardtanh(min_val=-2.0, max_val=2.0)"),
        ("clip", "relu6", "relu6"),
    }
    calls = call_sites(model)
    assert [(c.activation, c.spec) for c in calls] == [
        ("hardtanh", "hardtanh(min_val=-0.5, max_val=0.5)")
    ]

    replaced, report = relulab.replace_activations(model, "hardtanh", "relu")
    assert len(report.replaced) == 2  # the module and the call
    x = torch.randn(16, 4)
    torch.testing.assert_close(replaced(x), nn.ReLU6()(torch.relu(model.linear(x))))

    back, _ = relulab.replace_activations(nn.Sequential(nn.ReLU()), "relu", "hardtanh(-0.5, 0.5)")
    assert isinstance(back[0], example["Hardtanh"]) and back[0].config == {
        "min_val": -0.5,
        "max_val": 0.5,
    }
