"""relulab speed: runs on a small size and reports every field; peak memory is measured."""

from __future__ import annotations

import json

import torch

from relulab import speed
from relulab.cli import main
from relulab.kernels import compilation


def test_speed_json_has_every_field(capsys):
    code = main(
        [
            "speed",
            "golu",
            "mish",
            "leaky_relu",
            "--numel",
            "4096",
            "--rounds",
            "3",
            "--threads",
            "1",
            "--json",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["numel"] == 4096 and data["dtype"] == "float32"
    rows = {(r["activation"], r["implementation"]): r for r in data["rows"]}
    # ReLU comes first as the yardstick; torch has mish and leaky_relu natively, not golu.
    assert (
        ("relu", "native") in rows and ("golu", "native") not in rows and ("mish", "native") in rows
    )
    assert {i for a, i in rows if a == "golu"} == {"fused", "reference", "timm_pattern"}
    for row in data["rows"]:
        for kind in ("forward", "forward_backward"):
            summary = row[kind]
            assert summary["seconds"] > 0
            for key in ("to_clone", "to_relu"):
                assert summary[f"{key}_q1"] <= summary[key] <= summary[f"{key}_q3"]
        assert row["saved_bytes"] == row["saved_to_input"] * 4096 * 4
    assert rows[("leaky_relu", "fused")]["saved_to_input"] == 0.25  # a 1-byte mask
    assert rows[("leaky_relu", "native")]["saved_to_input"] == 1.0  # torch keeps x


def test_speed_table_and_plot(capsys, tmp_path):
    code = main(
        ["speed", "relu", "gelu", "--numel", "2048", "--rounds", "2", "--plot", str(tmp_path / "s")]
    )
    out = capsys.readouterr().out
    assert code == 0 and "fwd+bwd ×native ReLU" in out and "faster than eager" in out
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_peak_memory_sees_what_a_step_allocates():
    def step():
        a = torch.empty(1 << 20, dtype=torch.uint8)  # 1 MiB
        b = torch.empty(2 << 20, dtype=torch.uint8)  # then 2 MiB more: 3 MiB at once
        del a, b
        torch.empty(1 << 20, dtype=torch.uint8)

    peak = speed.peak_memory(step)
    assert 3 << 20 <= peak < (3 << 20) + (64 << 10)


def test_training_step_json(capsys):
    with compilation(False):  # the MLP's tensors would compile kernels: seconds, not a test
        code = main(
            ["speed", "golu", "--model", "mlp", "--rounds", "2", "--threads", "1", "--json"]
        )
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    rows = {r["activation"]: r for r in data["rows"]}
    assert set(rows) == {"relu", "relu (torch)", "golu"} and rows["relu"]["peak_to_relu"] == 1.0
    assert rows["golu"]["peak_bytes"] > 0 and rows["golu"]["step_seconds"] > 0


def test_speed_rejects_bad_input(capsys):
    assert main(["speed", "velu", "--numel", "64"]) == 2
    assert "'velu' is not elementwise" in capsys.readouterr().err
    assert main(["speed", "golu", "--numel", "0"]) == 2
    assert "--numel must be at least 1" in capsys.readouterr().err
    assert main(["speed", "leaky_relu(0.2)", "--numel", "64"]) == 2
    assert "not specs: 'leaky_relu(0.2)'; try 'leaky_relu'" in capsys.readouterr().err
    assert main(["speed", "mihs", "--numel", "64"]) == 2
    assert "did you mean 'mish'?" in capsys.readouterr().err
