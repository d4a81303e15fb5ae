"""relulab regions: a saved bench model's exact regions tile the slice the command states."""

from __future__ import annotations

import json

import numpy as np
import pytest

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
    text = capsys.readouterr().out
    assert "exact partition" in text and "1x3 MLP" in text and "residual CNN (1 ch)" in text
    assert main(["regions", "--benchmark", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ratio"] == result["probe_s"] / result["partition_s"]
    assert result["versions"]["torch"] and "git" in result


def test_too_many_regions_is_one_line(run, capsys):
    assert main(["regions", str(run), "spirals-relu-s0", "--max-regions", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("relulab regions: error: partition: more than 3 linear regions")
