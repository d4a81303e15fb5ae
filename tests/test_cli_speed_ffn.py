"""relulab speed --ffn on tiny FFNs: the table and JSON hold each path at each sparsity with
its bound (checked against the formula), --model CHECKPOINT adds the model's measured
sparsity (checked by hand), tokens/s and the predictor; bad input is one line. No timing
is asserted."""

from __future__ import annotations

import json

import pytest
import torch

from relulab.cli import main
from relulab.cli.speed import SPARSITY_WINDOWS
from relulab.transformers import GPT, GPTConfig, load_corpus, relufy
from relulab.transformers.train import checkpoint, load_checkpoint, windows

TINY = ["--ffn", "--sizes", "32x128", "--rounds", "2", "--threads", "1"]


def bound(path: str, s: float, s_in: float) -> float:
    """The weights a plain FFN's dense pass reads ÷ the path's, from the issue's formula."""
    dense = 2.0
    reads = {"down": 1 + (1 - s), "up_down": (1 - s_in) + (1 - s)}
    return dense / reads.get(path, 1 + (1 - s))  # down_copy, torch_*: as down


@pytest.fixture(scope="module")
def relufied(tmp_path_factory):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=48, vocab_size=65,
                          activation="gelu"))  # fmt: skip
    relufy(model, stage=2)
    path = tmp_path_factory.mktemp("ckpt") / "relufied.pt"
    torch.save(checkpoint(model, relufied={"stage": 2, "shift": 0.0}), path)
    return path


def run_json(capsys, *argv):
    code = main(["speed", *TINY, *argv, "--json"])
    out = capsys.readouterr().out
    assert code == 0
    return json.loads(out)


def test_every_path_at_every_sparsity_with_its_bound(capsys):
    result = run_json(capsys, "--sparsities", "0.5", "0.9", "--input-sparsity", "0.8")
    (size,) = result["sizes"]
    assert (size["d"], size["hidden"]) == (32, 128)
    found = {(r["path"], r["sparsity"]): r for r in size["rows"]}
    sparse = ("down", "up_down", "predictor", "down_copy", "torch_coo", "torch_csr")
    assert set(found) == {("dense", None)} | {(p, s) for p in sparse for s in (0.5, 0.9)}
    for (path, s), row in found.items():
        if path in ("down", "up_down", "down_copy", "torch_coo", "torch_csr"):
            assert row["bound"] == pytest.approx(bound(path, s, 0.8))
            assert row["max_abs_error"] < 1e-5  # exact paths equal dense
            assert row["measured_sparsity"] == pytest.approx(s, abs=1 / 128)
        assert row["of_bound"] == pytest.approx(row["speedup"] / row["bound"])
    assert found[("up_down", 0.9)]["input_sparsity"] == 0.8
    assert found[("dense", None)]["speedup"] == 1.0
    assert set(result["load_average"]) == {"before", "after"}


def test_table_says_what_each_ratio_divides_and_plot_is_written(capsys, tmp_path):
    plot = tmp_path / "speed.png"
    assert main(["speed", *TINY, "--sparsities", "0.9", "--paths", "down", "-o", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "load average" in out and "dense's time ÷ the path's" in out
    assert "bound = the weights dense reads ÷ the weights the path reads" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("32x128")]
    assert [r[1] for r in rows] == ["dense", "down"]
    assert rows[1][-2] == f"{bound('down', 0.9, 0.9):.2f}"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@torch.no_grad()
def hand_sparsity(path) -> tuple[float, float]:
    """The model's FFN sparsity and input sparsity on the CLI's validation windows, from
    the up-projection's weights."""
    model, _ = load_checkpoint(str(path))
    model.eval()
    x, _ = windows(
        load_corpus().val, model.config.block_size, SPARSITY_WINDOWS,
        torch.Generator().manual_seed(0),
    )  # fmt: skip
    inputs = []
    hooks = [b.norm_ffn.register_forward_hook(lambda m, a, out: inputs.append(out.double()))
             for b in model.blocks]  # fmt: skip
    model(x)
    for hook in hooks:
        hook.remove()
    zeros, input_zeros = [], []
    for block, h in zip(model.blocks, inputs, strict=True):
        pre = h @ block.ffn.up.weight.double().T + block.ffn.up.bias.double()
        zeros.append((pre <= 0).double().mean().item())
        input_zeros.append((h == 0).double().mean().item())
    return sum(zeros) / len(zeros), sum(input_zeros) / len(input_zeros)


def test_model_adds_its_measured_sparsity_tokens_per_second_and_predictor(
    capsys, relufied, tmp_path
):
    result = run_json(capsys, "--sparsities", "0.9", "--model", str(relufied), "--tokens", "6",
                      "-o", str(tmp_path / "m.png"))  # fmt: skip
    model = result["model"]
    sparsity, input_sparsity = hand_sparsity(relufied)
    assert model["sparsity"] == pytest.approx(sparsity, abs=1e-4)
    assert model["input_sparsity"] == pytest.approx(input_sparsity, abs=1e-4)
    assert 0.2 < input_sparsity < 0.8  # stage 2: the FFN's inputs are sparse
    (size,) = model["ffn"]["sizes"]
    rows = {r["path"]: r for r in size["rows"]}
    assert rows["down"]["sparsity"] == pytest.approx(sparsity, abs=1e-4)
    assert rows["up_down"]["input_sparsity"] == pytest.approx(input_sparsity, abs=1e-4)
    decode = model["decode"]
    assert decode["tokens"] == 6 and len(decode["generated"]) == 6
    assert all(decode["same_tokens"][m] for m in ("dense", "down", "up_down"))
    assert set(decode["modes"]) == {"dense", "down", "up_down", "predictor"}
    predictor = model["predictor"]
    assert [r["layer"] for r in predictor["layers"]] == [0, 1]
    assert all(0 <= r["recall"] <= 1 for r in predictor["layers"])
    assert predictor["val_loss_change"] == pytest.approx(
        predictor["val_loss_predictor"] - predictor["val_loss_dense"]
    )
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_text_reports_decoding_and_the_predictor(capsys, relufied):
    code = main(["speed", *TINY, "--sparsities", "0.9", "--paths", "down", "--model",
                 str(relufied), "--tokens", "4"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "FFN sparsity" in out and "tokens/s" in out and "recall" in out
    assert "validation loss: dense" in out


@pytest.fixture(scope="module")
def not_ours(tmp_path_factory):
    path = tmp_path_factory.mktemp("other") / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    return path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--paths", "dwon"], "unknown FFN path 'dwon'; did you mean 'down'?"),
        (["--sparsities", "1.5"], "--sparsities must be in (0, 1), got 1.5"),
        (["--sparsities", "0"], "--sparsities must be in (0, 1), got 0"),
        (["--input-sparsity", "1"], "--input-sparsity must be in [0, 1), got 1"),
        (["--sizes", "32by128"], "bad --sizes value '32by128': expected DxHIDDEN"),
        (["--sizes", "0x128"], "bad --sizes value '0x128'"),
        (["--rounds", "0"], "--rounds must be at least 1, got 0"),
        (["--rank", "4"], "--rank needs --model CHECKPOINT"),
        (["--model", "NOT_OURS"], "is not a relulab GPT checkpoint"),
        (["--model", "/nonexistent/x.pt"], "no such file"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(capsys, argv, message, not_ours):
    argv = [str(not_ours) if a == "NOT_OURS" else a for a in argv]
    code = main(["speed", *TINY, *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert err.startswith("relulab speed: error: ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sizes", "32x128"], "--sizes needs --ffn"),
        (["--gated"], "--gated needs --ffn"),
        (["--model", "x.pt"], "unknown --model value 'x.pt'"),
    ],
)
def test_ffn_options_without_ffn_are_one_line(capsys, argv, message):
    code = main(["speed", "relu", "--numel", "64", "--rounds", "1", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_figure_draws_speedups_bounds_and_a_dense_line():
    pytest.importorskip("matplotlib")
    from relulab.plot.ffn_speed import ffn_speed_figure

    def row(path, s, speedup, b):
        return {"path": path, "sparsity": s, "speedup": speedup, "speedup_q1": speedup * 0.9,
                "speedup_q3": speedup * 1.1, "bound": b}  # fmt: skip

    rows = [row("dense", None, 1.0, 1.0)]
    rows += [row("down", s, v, bound("down", s, s)) for s, v in ((0.9, 1.5), (0.5, 1.2))]
    result = {"threads": 2, "rounds": 3, "paths": {"dense": "", "down": ""},
              "sizes": [{"d": 8, "hidden": 32, "rows": rows}]}  # fmt: skip
    model = {"sizes": [{"d": 8, "hidden": 32, "rows": [row("down", 0.7, 1.3, 1.6)]}]}
    figure = ffn_speed_figure(result, model)
    (axis,) = figure.axes
    lines = {line.get_label(): line for line in axis.get_lines()}
    assert list(lines["dense"].get_ydata()) == [1.0, 1.0]
    dashed = [line for line in axis.get_lines() if line.get_linestyle() == "--"]
    assert [list(line.get_ydata()) for line in dashed] == [
        [pytest.approx(bound("down", 0.5, 0.5)), pytest.approx(bound("down", 0.9, 0.9))]
    ]
    markers = [line for line in axis.get_lines() if line.get_marker() == "*"]
    assert [(list(m.get_xdata()), list(m.get_ydata())) for m in markers] == [([70.0], [1.3])]
    speedups = next(c for c in axis.containers if c.get_label() == "down")
    assert list(speedups.lines[0].get_ydata()) == [1.2, 1.5]  # sorted by sparsity


def test_the_cli_lists_the_paths_ffn_speed_times():
    from relulab.cli.speed import FFN_PATHS
    from relulab.transformers.ffn_speed import PATHS

    assert tuple(PATHS) == FFN_PATHS
