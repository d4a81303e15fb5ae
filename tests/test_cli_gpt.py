"""relulab gpt train | sample and relulab relufy on a tiny model: the run directories hold what
they promise, relufication changes the intended modules, bad input is one line."""

from __future__ import annotations

import json

import pytest

from relulab.cli import main
from relulab.transformers.train import load_checkpoint

TINY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
        "--steps", "4", "--eval-interval", "2", "--batch-size", "4"]  # fmt: skip


@pytest.fixture(scope="module")
def gelu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["gpt", "train", "--activation", "gelu", *TINY, "--out", str(out)]) == 0
    (run,) = out.iterdir()
    return run


def test_train_writes_its_run_directory(gelu_run):
    names = {p.name for p in gelu_run.iterdir()}
    assert {"config.json", "metrics.jsonl", "checkpoint.pt", "loss.png", "sample.txt",
            "summary.json"} <= names  # fmt: skip
    steps = [json.loads(line)["step"] for line in (gelu_run / "metrics.jsonl").open()]
    assert steps == [2, 4]
    config = json.loads((gelu_run / "config.json").read_text())
    assert config["settings"]["model"]["n_embd"] == 16 and config["git"]
    model, state = load_checkpoint(str(gelu_run / "checkpoint.pt"))
    assert state["step"] == 4 and model.config.activation == "gelu"


def test_resuming_a_finished_run_trains_nothing_more(gelu_run, capsys):
    before = (gelu_run / "metrics.jsonl").read_text()
    assert main(["gpt", "train", "--resume", str(gelu_run)]) == 0
    assert (gelu_run / "metrics.jsonl").read_text() == before
    assert len(json.loads((gelu_run / "config.json").read_text())["resumes"]) == 1


def test_sample_continues_the_prompt(gelu_run, capsys):
    capsys.readouterr()
    assert main(["gpt", "sample", str(gelu_run), "--prompt", "ROMEO:", "--tokens", "12"]) == 0
    out = capsys.readouterr().out.rstrip("\n")
    assert out.startswith("ROMEO:") and len(out) == len("ROMEO:") + 12


@pytest.mark.parametrize("stage", [1, 2])
def test_relufy_measures_before_right_after_and_after_fine_tuning(gelu_run, tmp_path, stage):
    argv = ["relufy", "--from", str(gelu_run), "--stage", str(stage), "--steps", "2",
            "--out", str(tmp_path), "--json"]  # fmt: skip
    assert main(argv) == 0
    (run,) = tmp_path.iterdir()
    result = json.loads((run / "result.json").read_text())
    acts = {f"blocks.{i}.ffn.act" for i in range(2)}
    norms = {f"blocks.{i}.{n}" for i in range(2) for n in ("norm_attn", "norm_ffn")}
    assert set(result["changed"]) == (acts if stage == 1 else acts | norms)
    assert result["before"]["sparsity"]["sparsity"] == 0  # GELU is never exactly 0 here
    assert result["after"]["sparsity"]["sparsity"] > 0.2
    assert result["control"]["sparsity"]["sparsity"] == 0
    input_sparsity = result["after"]["sparsity"]["layers"][0]["input_sparsity"]
    assert (input_sparsity > 0) == (stage == 2)
    assert [h["step"] for h in result["history"]] == [1, 2]
    model, _ = load_checkpoint(str(run / "relufied.pt"))  # relufied again before loading
    assert type(model.blocks[0].ffn.act).__name__ == "ReLU"
    assert (run / "relufy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((run / "config.json").read_text())["settings"]["pretrain"] is None
    # a relufied model is not relufied again (its activations would be replaced twice)
    assert main(["relufy", "--from", str(run), "--out", str(tmp_path / "again")]) == 2
    assert not (tmp_path / "again").exists()
    from relulab.plot.gpt import relufy_figure

    windows = relufy_figure(result).axes[2].get_lines()[0].get_xdata()  # from the JSON's keys
    assert list(windows) == sorted(windows) == [1, 8, 16]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["gpt", "train", "--n-head", "5"], "not divisible by n_head 5"),
        (["gpt", "train", "--activation", "gelux"], "did you mean 'gelu'"),
        (["gpt", "train", "--attention", "relu"], "did you mean 'rela'"),
        (["gpt", "train", "--steps", "0"], "steps must be a positive integer, got 0"),
        (["gpt", "sample", "/no/such/run"], "no such file"),
        (["gpt", "sample", "x.pt", "--temperature", "0"], "for greedy decoding: --top-k 1"),
        (["gpt", "train", "--block-size", "200000"], "longer than the validation text"),
        (["relufy", "--activation", "relu"], "give gelu, silu"),
        (["relufy", "--shift", "-1"], "--shift must be >= 0"),
        (["relufy", "--from", "x", "--activation", "gelu"], "drop --activation"),
        (["relufy", "--from", "/no/such/run.pt"], "no such file"),
    ],
)
def test_bad_input_is_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "runs").exists()  # refused before any run directory


def test_a_diverging_training_is_one_line_with_a_hint(tmp_path, capsys):
    argv = ["gpt", "train", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
            "--block-size", "8", "--norm", "none", "--lr", "1e6", "--steps", "20",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "the loss diverged at step" in err[-1] and "lower learning rate (--lr)" in err[-1]
    assert not any(line.startswith("Traceback") for line in err)
