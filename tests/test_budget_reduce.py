"""relulab reduce: every method meets every budget (by the traced count or the masks'), the
results are summarised by seed, the CLI refuses bad input before training, the plot is drawn."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from pngs import read_png
from relulab.bench.runner import BenchConfig, plan
from relulab.budget.reduce import reduce, summarise
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
        # the masks hit a per-element budget exactly; whole layers of 64 fit only 64
        exact = {(r.method, r.budget): r.relus for r in reductions}
        assert exact["snl", 12] == exact["autorep", 12] == 12
        assert exact["cull", 12] == 0 and exact["cull", 64] == 64


def test_summary_is_the_mean_and_spread_over_seeds(results):
    full, rows = summarise(results)
    scores = [f["test_score"] for f, _ in results]
    assert full["score"] == pytest.approx(np.mean(scores)) and full["seeds"] == 2
    row = next(r for r in rows if (r["method"], r["budget"]) == ("snl", 64))
    found = [r.test_score for _, rs in results for r in rs if (r.method, r.budget) == ("snl", 64)]
    assert row["score"] == pytest.approx(np.mean(found))
    assert row["score_std"] == pytest.approx(np.std(found))


def test_the_pareto_plot_is_a_png(results, tmp_path):
    from relulab.plot.pareto import pareto_figure, plot_pareto

    full, rows = summarise(results)
    figure = pareto_figure(full, rows, title="t")
    labels = [t.get_text() for t in figure.axes[1].get_legend().get_texts()]
    assert labels == ["cull", "thin", "snl", "autorep", "full model"]
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
        (["-o", "/no/such/folder/p.png"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_before_any_training(argv, message, capsys):
    assert main(["reduce", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_the_command_prints_json_with_its_environment(capsys, monkeypatch):
    import relulab.budget.reduce as module

    real = module.reduce
    monkeypatch.setattr(
        module,
        "reduce",
        lambda spec, *a, **k: real(dataclasses.replace(spec, epochs=1), *a, **k),
    )
    assert (
        main(["reduce", "--task", "spirals", "--methods", "cull", "--budgets", "50%", "--json"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["budgets"] == [64] and result["rows"][0]["relus"] == 64
    assert result["versions"]["torch"] and "git" in result
