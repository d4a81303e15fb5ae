"""relulab prefer on tiny settings: the run directory holds what it promises, an interrupted run
finishes with --resume, and bad input is one line with status 2."""

from __future__ import annotations

import json

import pytest
import torch

from relulab.cli import main

TINY_GPT = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "48",
            "--steps", "2", "--batch-size", "4"]  # fmt: skip
TINY = ["--pairs", "8", "--heldout", "4", "--batch-size", "4", "--steps", "2",
        "--eval-interval", "1", "--threads", "1"]  # fmt: skip
FILES = {"config.json", "pairs.pt", "pairs.json", "metrics-repo.jsonl", "metrics-simpo.jsonl",
         "prefer.png", "summary.json"}  # fmt: skip


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpt")
    assert main(["gpt", "train", *TINY_GPT, "--threads", "1", "--out", str(out)]) == 0
    (run,) = out.iterdir()
    return run


def only_run(out):
    (run,) = out.iterdir()
    return run


def steps(path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_prefer_on_a_given_model_writes_its_run_directory(gpt_run, tmp_path, capsys):
    assert main(["prefer", "--model", str(gpt_run), *TINY, "--out", str(tmp_path)]) == 0
    run = only_run(tmp_path)
    assert {p.name for p in run.iterdir()} >= FILES
    assert not (run / "base").exists()  # the given model, no training of its own
    assert steps(run / "metrics-repo.jsonl") == steps(run / "metrics-simpo.jsonl") == [0, 1, 2]
    config = json.loads((run / "config.json").read_text())
    assert config["settings"]["model"] == str(gpt_run.resolve()) and config["versions"]
    pairs = json.loads((run / "pairs.json").read_text())
    assert pairs["train"]["pairs"] == 8 and pairs["heldout"]["pairs"] == 4
    assert pairs["train"]["chosen_vowel_share"] > pairs["train"]["rejected_vowel_share"]
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["losses"]) == {"repo", "simpo"}
    # both losses start from the same model on the same pairs
    assert summary["losses"]["repo"]["start"] == summary["losses"]["simpo"]["start"] | {
        "loss": summary["losses"]["repo"]["start"]["loss"]
    }
    image = pytest.importorskip("matplotlib.image")
    pixels = image.imread(run / "prefer.png")
    assert pixels.shape[1] > 1000 and pixels[..., :3].std() > 0.05  # three panels, not blank
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("repo ", "simpo "))]
    assert [row.split()[0] for row in rows] == ["repo", "simpo"]
    assert all(row.count("->") == 4 for row in rows)  # margin, filtered twice, vowel share


def test_resume_finishes_an_interrupted_run(tmp_path, monkeypatch, capsys):
    """Interrupted in SimPO after its first step: --resume keeps the base GPT, the pairs and
    RePO's finished curve, and runs SimPO again from its start."""
    from relulab.transformers import preference

    tune = preference.tune

    def interrupted(model, pairs, loss, config, *, on_eval, **rest):
        def stop(metrics):
            on_eval(metrics)
            if loss == "simpo" and metrics["step"] == 1:
                raise KeyboardInterrupt

        return tune(model, pairs, loss, config, on_eval=stop, **rest)

    monkeypatch.setattr(preference, "tune", interrupted)
    argv = ["prefer", "--base-steps", "2", *TINY, "--out", str(tmp_path)]
    assert main(argv) == 130
    run = only_run(tmp_path)
    assert "--resume" in capsys.readouterr().err
    assert steps(run / "metrics-simpo.jsonl") == [0, 1] and not (run / "summary.json").exists()
    kept = {name: (run / name).read_bytes()
            for name in ("base/checkpoint.pt", "pairs.pt", "metrics-repo.jsonl")}  # fmt: skip
    before = [json.loads(line) for line in (run / "metrics-simpo.jsonl").read_text().splitlines()]
    monkeypatch.setattr(preference, "tune", tune)
    assert main(["prefer", "--resume", str(run), "--threads", "1"]) == 0
    assert {p.name for p in run.iterdir()} >= FILES
    assert all((run / name).read_bytes() == data for name, data in kept.items())
    after = [json.loads(line) for line in (run / "metrics-simpo.jsonl").read_text().splitlines()]
    assert [h["step"] for h in after] == [0, 1, 2]
    for old, new in zip(before, after):  # the same start, pairs and batches as before
        assert {k: v for k, v in old.items() if k != "seconds"} == {
            k: v for k, v in new.items() if k != "seconds"
        }
    assert len(json.loads((run / "config.json").read_text())["resumes"]) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--losses", "repo,simpoo"], "unknown loss 'simpoo'; did you mean 'simpo'?"),
        (["--losses", ","], "--losses names no loss"),
        (["--gamma", "-0.5"], "gamma must be >= 0"),
        (["--gamma", "nan"], "gamma must be a finite number"),
        (["--beta", "0"], "beta must be a finite number > 0"),
        (["--steps", "0"], "steps must be a positive integer"),
        (["--pairs", "0"], "pairs must be a positive integer"),
        (["--pairs", "8"], "batch_size 32 is larger than pairs 8"),
        (["--base-steps", "0"], "--base-steps must be >= 1"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--model", "{config}"], "config.json is not a torch file"),
        (["--model", "{plain}"], "plain.pt is not a relulab GPT checkpoint"),
        (["--model", "{small}"], "block size 16 is shorter than a prompt and its completion"),
        (["--model", "{gpt}", "--base-steps", "3"], "drop --base-steps"),
        (["--resume", "{gpt}"], "is not a relulab prefer run"),
        (["--resume", "{gpt}", "--gamma", "0.3"], "drop --gamma"),
        (["--resume", "{gpt}", "--losses", "repo"], "drop --losses"),
    ],
)
def test_bad_input_is_one_line(gpt_run, tmp_path, capsys, argv, message):
    small = tmp_path / "small"
    tiny = [*TINY_GPT[:6], "--block-size", "16", "--steps", "1"]
    if "{small}" in argv:
        assert main(["gpt", "train", *tiny, "--threads", "1", "--out", str(small)]) == 0
        capsys.readouterr()
    torch.save({"weight": torch.zeros(2)}, tmp_path / "plain.pt")  # a state dict, not a GPT's
    names = {"{gpt}": str(gpt_run), "{config}": str(gpt_run / "config.json"),
             "{plain}": str(tmp_path / "plain.pt"),
             "{small}": str(next(small.iterdir())) if small.exists() else ""}  # fmt: skip
    argv = [names.get(a, a) for a in argv]
    out = tmp_path / "runs"
    assert main(["prefer", *argv, "--out", str(out)] if "--resume" not in argv
                else ["prefer", *argv]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith("relulab prefer: error: ") and err.count("\n") == 1
    assert message in err
    assert not out.exists()  # checked before any run directory
