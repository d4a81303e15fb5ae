"""relulab reduce: every method meets every budget (by the traced count or the masks'), the
results are summarised by seed, finished steps are reused, the cost arithmetic is the
per-operation costs', the CLI refuses bad input before training and writes its run
directory, the plot is drawn."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from pngs import read_png
from relulab.bench.runner import BenchConfig, plan
from relulab.budget.reduce import nonlinear_cost, reduce, summarise
from relulab.cli import main


@pytest.fixture(scope="module")
def results():
    config = BenchConfig(tasks=["spirals"], activations=["relu"], seeds=2, suite="full")
    specs = [dataclasses.replace(s, epochs=3) for s in plan(config.resolved())]
    return [
        reduce(s, ["cull", "thin", "snl", "autorep"], [12, 64], fine_tune_epochs=1) for s in specs
    ]


def test_every_method_meets_every_budget(results):
    for full, reductions in results:
        assert full["relus"] == 128  # spirals MLP: two hidden layers of 64
        assert set(full["criticality"]) == {"net.1", "net.3"}
        assert {(r.method, r.budget) for r in reductions} == {
            (m, b) for m in ("cull", "thin", "snl", "autorep") for b in (12, 64)
        }
        for r in reductions:
            assert 0 <= r.relus <= r.budget and 0 <= r.test_score <= 1
            assert r.cost["bytes"] >= 464 * r.relus  # the ReLUs' own share of the traffic
            layers = 0 if r.relus == 0 else (1 if r.method in ("cull", "thin") else 2)
            assert r.cost["rounds"] >= 9 * layers
        # the masks hit a per-element budget exactly; whole layers of 64 fit only 64
        exact = {(r.method, r.budget): r.relus for r in reductions}
        assert exact["snl", 12] == exact["autorep", 12] == 12
        assert exact["cull", 12] == 0 and exact["cull", 64] == 64


def test_summary_is_the_mean_and_spread_over_seeds(results):
    full, rows = summarise(results)
    scores = [f["test_score"] for f, _ in results]
    assert full["test_score"] == pytest.approx(np.mean(scores)) and full["seeds"] == 2
    assert full["relus"] == 128 and isinstance(full["relus"], int)
    row = next(r for r in rows if (r["method"], r["budget"]) == ("snl", 64))
    found = [r.test_score for _, rs in results for r in rs if (r.method, r.budget) == ("snl", 64)]
    assert row["test_score"] == pytest.approx(np.mean(found))
    assert row["test_score_std"] == pytest.approx(np.std(found, ddof=1))  # as the bench's


def test_the_nonlinear_cost_adds_the_measured_per_operation_costs():
    # two ReLU layers (10 and 5 kept, one emptied), one layer of 3 polynomial products
    cost = nonlinear_cost([10, 0, 5], [0, 3])
    assert cost["bytes"] == 15 * 464 + 3 * 32
    assert cost["rounds"] == 2 * 9 + 1
    assert cost["latency_s"] == pytest.approx(15 * 3.5e-6 + 3 * 0.2e-6 + 19 * 3e-3)
    pooled = nonlinear_cost([4], maxpool_comparisons=6, maxpool_layers=1)
    assert pooled["bytes"] == pytest.approx(4 * 464 + 6 * 5920 / 3) and pooled["rounds"] == 55


def test_an_interrupted_run_resumes_from_its_finished_steps(tmp_path, monkeypatch):
    import relulab.budget.reduce as module

    config = BenchConfig(tasks=["spirals"], activations=["relu"], seeds=1, suite="full")
    spec = dataclasses.replace(plan(config.resolved())[0], epochs=2)
    first = reduce(spec, ["cull", "snl"], [12], fine_tune_epochs=1, directory=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "criticality-net.1.json", "criticality-net.3.json", "cull-12.json", "cull-12.pt",
        "full.json", "full.pt", "snl-12.json", "snl-12.pt",
    ]  # fmt: skip
    (tmp_path / "snl-12.json").unlink()  # as if killed while SNL ran

    trained = []
    real = module.run_trial

    def counted(spec, **options):
        trained.append(spec.epochs)
        return real(spec, **options)

    monkeypatch.setattr(module, "run_trial", counted)
    again = reduce(spec, ["cull", "snl"], [12], fine_tune_epochs=1, directory=tmp_path)
    assert trained == [1]  # SNL's fine-tuning only: the full model and the ranking were kept
    assert again[0]["test_score"] == first[0]["test_score"]
    assert again[1][0] == first[1][0]  # cull's record read back, not recomputed
    assert again[1][1].relus == 12
    assert again[1][0].kept == {"layers": []} and sum(again[1][1].kept["relus_per_mask"]) == 12


def test_the_pareto_plot_is_a_png(results, tmp_path):
    from relulab.plot.pareto import pareto_figure, plot_pareto

    full, rows = summarise(results)
    figure = pareto_figure(full, rows, title="t")
    labels = [t.get_text() for t in figure.axes[1].get_legend().get_texts()]
    assert labels == ["cull = thin", "snl", "autorep", "full model"]  # one-layer stages
    read_png(plot_pareto(full, rows, tmp_path / "p.png"), figure)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budgets", "0"], "--budgets 0: give 1 to 850 ReLUs"),
        (["--budgets", "200%"], "--budgets 200%: give 1 to 850 ReLUs"),
        (["--budgets", "ten"], "--budgets 'ten': give a ReLU count or a percentage"),
        (["--methods", "snll"], "unknown method 'snll'"),
        (["--task", "digitz"], "did you mean 'digits'"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--depth", "0"], "--depth must be >= 1, got 0"),
        (["--fine-tune-epochs", "-3"], "--fine-tune-epochs must be >= 1, got -3"),
        (["--budgets", "-5%"], "--budgets -5%: give 1 to 850 ReLUs"),
        (["--methods", "autorepp"], "did you mean 'autorep'"),
        (["--from", "/no/such/run"], "/no/such/run: no such run directory"),
        (["--resume", "/no/such/run"], "/no/such/run: no such run directory"),
        (["--resume", "/no/such/run", "--seeds", "2"], "drop --seeds"),
    ],
)
def test_bad_input_is_one_line_before_any_training(argv, message, capsys):
    assert main(["reduce", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_the_command_writes_its_run_directory_and_loads_a_bench_run(tmp_path, capsys):
    bench_argv = "bench --tasks spirals --acts relu --seeds 1 --epochs 2 --save-models --quiet"
    bench_argv = [*bench_argv.split(), "--out", str(tmp_path / "bench")]
    assert main(bench_argv) == 0
    (bench,) = (tmp_path / "bench").iterdir()
    argv = ["reduce", "--from", str(bench), "--task", "spirals", "--methods", "cull",
            "--budgets", "50%", "--distill", "--out", str(tmp_path / "runs"), "--json"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["budgets"] == [64] and result["rows"][0]["relus"] == 64
    assert result["full_model_from"] == str(bench) and result["epochs"] == 2
    assert result["distill"] is True
    assert result["versions"]["torch"] and "git" in result
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "summary.json").read_text())["rows"] == result["rows"]
    assert "| cull | 64 (50%) | 64 |" in (run / "table.md").read_text()
    capsys.readouterr()
    # a reduce run is not a bench run: one line, not a KeyError
    assert main(["reduce", "--from", str(run), "--task", "spirals"]) == 2
    assert "is a relulab reduce run, not a bench run" in capsys.readouterr().err
    # a resumed run is recorded, and a method named twice is one method
    assert main(["reduce", "--resume", str(run), "--json"]) == 0
    (resume,) = json.loads((run / "config.json").read_text())["resumes"]
    assert resume["resumed"] and resume["git"] and resume["versions"]["torch"]
    capsys.readouterr()
    argv = ["reduce", "--task", "spirals", "--methods", "cull", "cull", "--budgets", "64",
            "--fine-tune-epochs", "1", "--out", str(tmp_path / "runs2"), "--json"]  # fmt: skip
    assert main(argv) == 0
    twice = json.loads(capsys.readouterr().out)
    assert twice["methods"] == ["cull"] and twice["rows"][0]["seeds"] == 1
    assert (run / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the bench run's model, not a new one: its saved test score is the full model's
    from relulab.bench.runner import load_model, trial_spec
    from relulab.bench.trainer import evaluate_test_score

    spec = trial_spec(bench, "spirals-relu-s0")
    saved = json.loads((bench / "trials" / "spirals-relu-s0" / "result.json").read_text())
    assert result["full"]["test_score"] == pytest.approx(saved["test_score"])
    assert evaluate_test_score(spec, load_model(bench, spec)) == pytest.approx(saved["test_score"])


def test_a_cut_does_not_depend_on_what_ran_before_it():
    import torch

    config = BenchConfig(tasks=["spirals"], activations=["relu"], seeds=1, suite="full")
    spec = dataclasses.replace(plan(config.resolved())[0], epochs=2)
    first = reduce(spec, ["autorep"], [12], fine_tune_epochs=1)
    torch.rand(1000)  # the global generator moves on, as other work would move it
    again = reduce(spec, ["autorep"], [12], fine_tune_epochs=1)
    assert again[1][0].test_score == first[1][0].test_score
