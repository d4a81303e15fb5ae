"""relulab regions: a saved bench model's exact regions tile the slice the command states."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from relulab.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    options = ["--acts", "relu", "--seeds", "1", "--epochs", "1", "--save-models", "--quiet"]
    assert main(["bench", "--tasks", "spirals", "digits", *options, "--out", str(out)]) == 0
    (directory,) = out.iterdir()
    return directory


def polygon_area(vertices: np.ndarray) -> float:
    x, y = vertices[:, 0], vertices[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def regions_json(capsys, *argv: str) -> dict:
    assert main(["regions", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_2d_task_is_tiled_over_its_data_box(run, capsys):
    from relulab.bench.tasks import get_task

    result = regions_json(capsys, str(run), "spirals-relu-s0")
    x = get_task("spirals").data().x_test.double().numpy()
    low, high = x.min(0), x.max(0)
    box = np.prod((high - low) * 1.2)  # the command's 10% margin on each side
    areas = [polygon_area(np.array(p)) for p in result["polygons"]]
    assert result["regions"] == len(areas) > 1
    assert sum(areas) == pytest.approx(box, rel=1e-9)


def test_other_tasks_are_sliced_through_three_test_examples(run, capsys):
    result = regions_json(capsys, str(run), "digits-relu-s0", "--through", "0", "1", "2")
    assert result["regions"] == len(result["polygons"]) > 1


def test_wrong_inputs_are_one_line(run, capsys):
    assert main(["regions"]) == 2
    assert main(["regions", str(run), "digits-relu-s0", "--through", "0", "1", "99999"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("relulab regions: error: give a run directory and one of its trials")
    assert err[-1].startswith("relulab regions: error: --through 99999: the test set has")


def test_benchmark_prints_the_ratio_and_its_json_records_the_environment(monkeypatch, capsys):
    import functools

    import relulab.geometry
    from relulab.geometry.benchmark import benchmark

    small = functools.partial(
        benchmark, depth=1, width=4, grid=64, repeats=1, others=((1, 3),), cnn_channels=1
    )
    monkeypatch.setattr(relulab.geometry, "benchmark", small)
    assert main(["regions", "--benchmark"]) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert "exact partition" in text and "1x3 MLP" in text and "residual CNN (1 ch)" in text
    assert "grid probe ÷ exact partition = " in text
    assert f"torch threads {torch.get_num_threads()}" in text and "load average" in text
    # a progress line per net, as it is done
    progress = captured.err.splitlines()[1:]
    assert len(progress) == 3 and progress[0].strip().startswith("1x4 MLP: exact partition")
    assert progress[1].strip().startswith("1x3 MLP") and "residual CNN" in progress[2]
    assert main(["regions", "--benchmark", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ratio"] == result["probe_s"] / result["partition_s"]
    assert result["torch_threads"] == torch.get_num_threads()
    assert 0 <= result["load_average_1min"] < 10 * os.cpu_count()
    assert result["versions"]["torch"] and "git" in result


def test_too_many_regions_is_one_line_naming_the_option(run, capsys):
    assert main(["regions", str(run), "spirals-relu-s0", "--max-regions", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("relulab regions: error: spirals-relu-s0: more than --max-regions 3")
    assert "max_regions" not in err[-1] and "slice a smaller" not in err[-1]


@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_non_positive_region_limit_is_refused_before_any_work(run, capsys, value):
    assert main(["regions", str(run), "spirals-relu-s0", "--max-regions", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"relulab regions: error: --max-regions must be >= 1, got {value}"]


def test_a_missing_output_folder_is_one_line_before_partitioning(run, tmp_path, capsys):
    target = tmp_path / "missing" / "regions.png"
    assert main(["regions", str(run), "spirals-relu-s0", "-o", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0] and "missing" in err[0]


def test_three_examples_must_differ(run, capsys):
    assert main(["regions", str(run), "digits-relu-s0", "--through", "0", "0", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "relulab regions: error: --through 0 0 1: the examples must be three different points"
    ]


REFUSED = [["RUN", "TRIAL"], ["-o", "x.png"], ["--max-regions", "10"], ["--through", "0", "1", "2"]]


@pytest.mark.parametrize("extra", REFUSED)
def test_benchmark_refuses_a_model_and_the_partition_options(extra, capsys):
    assert main(["regions", "--benchmark", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("relulab regions: error: --benchmark")


def test_a_2d_plot_is_titled_by_the_trial_and_shows_the_training_points(run, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    import relulab.plot.regions
    from relulab.bench.tasks import get_task

    seen = {}

    def capture(result, path, **options):
        seen.update(options, count=result.count)
        return path

    monkeypatch.setattr(relulab.plot.regions, "plot_regions", capture)
    assert main(["regions", str(run), "spirals-relu-s0", "-o", "unused.png"]) == 0
    data = get_task("spirals").data()
    assert seen["title"] == "spirals-relu-s0"
    np.testing.assert_array_equal(seen["points"], data.x_train.double().numpy())
    np.testing.assert_array_equal(seen["labels"], data.y_train.numpy())
    assert "training" in seen["points_label"]


def test_help_states_the_defaults_and_wraps_like_the_other_commands(capsys):
    with pytest.raises(SystemExit):
        main(["regions", "--help"])
    text = capsys.readouterr().out
    flat = " ".join(text.split())
    assert "first test example of each of the first three classes" in flat
    assert "instead of the data's box" in flat
    assert "default 1,000,000" in flat
    description = text.split("\n\n")[1]
    assert all(len(line) <= 88 for line in description.splitlines())
    assert len(description.splitlines()) > 2
