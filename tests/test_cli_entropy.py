"""relulab entropy on a tiny GPT run and a tiny experiment: files, tables, plots, and bad input
as one line before any run directory."""

from __future__ import annotations

import json

import pytest

from relulab.cli import main

TINY_SHAPE = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8"]
TINY_TRAIN = ["--steps", "3", "--eval-interval", "3", "--batch-size", "4"]


def _png_is_drawn(path) -> bool:
    from matplotlib.image import imread

    image = imread(path)
    return image.shape[0] > 100 and float(image[..., :3].std()) > 0.01  # not one flat colour


@pytest.fixture(scope="module")
def rela_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    argv = ["gpt", "train", "--attention", "rela", *TINY_SHAPE, *TINY_TRAIN, "--out", str(out)]
    assert main(argv) == 0
    (run,) = out.iterdir()
    return run


def test_measure_a_run_writes_json_and_heatmap_beside_it(rela_run, capsys):
    capsys.readouterr()
    assert main(["entropy", str(rela_run), "--windows", "8"]) == 0
    out = capsys.readouterr().out
    assert "rows off" in out and "entropy.png" in out
    result = json.loads((rela_run / "entropy.json").read_text())
    assert len(result["normalized_entropy"]) == 1 and len(result["normalized_entropy"][0]) == 2
    assert result["rows"] == 8 * 7 and result["model"]["attention"] == "rela"
    assert _png_is_drawn(rela_run / "entropy.png")


def test_measure_a_checkpoint_file_names_its_outputs_after_it(rela_run, tmp_path, capsys):
    copy = tmp_path / "mine.pt"
    copy.write_bytes((rela_run / "checkpoint.pt").read_bytes())
    assert main(["entropy", str(copy), "--windows", "4", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["rows"] == 4 * 7
    assert (tmp_path / "mine-entropy.json").is_file() and (tmp_path / "mine-entropy.png").is_file()


def test_measure_uses_the_threads_asked_for(rela_run):
    import torch

    before = torch.get_num_threads()
    try:
        assert main(["entropy", str(rela_run), "--windows", "2", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_an_unwritable_place_is_one_line_before_the_measurement(rela_run, capsys, monkeypatch):
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    measured = []
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(
        "relulab.transformers.attention_stats.attention_statistics",
        lambda *a, **k: measured.append(1),
    )
    assert main(["entropy", str(rela_run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0] and "Read-only file system" in err[0]
    assert not measured


def test_attention_experiment_end_to_end(tmp_path, capsys):
    argv = ["entropy", "--experiment", "attention", "--seeds", "2", *TINY_SHAPE, *TINY_TRAIN,
            "--windows", "4", "--threads", "1", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "rela vs softmax" in out and "train step (ms)" in out
    (run,) = tmp_path.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["cells"]) == {"softmax", "rela"}
    assert set(summary["speed"]["median_seconds"]) == {"softmax", "rela"}
    assert summary["cells"]["softmax"]["mean_zero_fraction"] == 0.0  # softmax is never 0
    for name in ("losses.png", "heads.png"):
        assert _png_is_drawn(run / name)
    assert main(["entropy", "--resume", str(run)]) == 0  # finished: only the summary again
    assert len(json.loads((run / "config.json").read_text())["resumes"]) == 1
    assert main(["entropy", str(run)]) == 2  # an experiment is not a GPT run: point inside
    assert "it holds GPT runs, e.g." in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["entropy"], "give a GPT run directory or checkpoint, or --experiment NAME"),
        (["entropy", "--experiment", "norm-activaton"], "did you mean 'norm-activation'"),
        (["entropy", "--experiment", "attention", "--seeds", "1"], "--seeds must be >= 2"),
        (["entropy", "--experiment", "attention", "--n-head", "5"], "nearest valid n_head: 4"),
        (["entropy", "run", "--experiment", "attention"], "takes no RUN; drop run"),
        (["entropy", "run", "--steps", "5"], "--steps runs an experiment"),
        (["entropy", "--resume", "x", "--steps", "5"], "drop --steps"),
        (["entropy", "/no/such/run.pt"], "no such file"),
        (["entropy", "x.pt", "--windows", "0"], "--windows must be >= 1"),
        (["entropy", "x.pt", "--seeds", "3"], "--seeds runs an experiment"),
        (["entropy", "--resume", "x", "--seeds", "3"], "drop --seeds"),
        (["entropy", "--resume", "x", "--windows", "3"], "drop --windows"),
        (
            ["entropy", "--experiment", "attention", "--block-size", "1"],
            "--block-size must be >= 2",
        ),
    ],
)
def test_bad_input_is_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "runs").exists()
