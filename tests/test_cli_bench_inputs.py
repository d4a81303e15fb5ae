"""relulab bench: inputs a new user got wrong, each refused in one line before anything runs."""

from __future__ import annotations

import pytest

from relulab.cli import main
from relulab.registry import canonical_spec


def refused(capsys, *argv: str) -> str:
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("relulab bench: error: ")
    return err


@pytest.fixture
def table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.csv").write_text("a,b,species\n" + "1,2,x\n3,4,y\n" * 30)
    return tmp_path / "t.csv"


def test_a_ray_address_without_the_ray_executor_is_refused(capsys, table):
    err = refused(capsys, "--tasks", "spirals", "--ray-address", "127.0.0.1:1")
    assert "--ray-address 127.0.0.1:1 applies to --executor ray" in err
    assert not (table.parent / "runs").exists()


def test_csv_and_npz_together_are_one_task_named_once(capsys, table):
    err = refused(capsys, "--tasks", "csv", "npz", "--data", "t.csv", "--target", "species")
    assert "--tasks csv npz: these name one task" in err


def test_a_directory_given_as_data_is_called_one(capsys, table):
    err = refused(capsys, "--data", str(table.parent), "--target", "species")
    assert "it is a directory" in err


def test_data_without_a_target_lists_the_columns(capsys, table):
    err = refused(capsys, "--data", "t.csv")
    assert err.endswith("(in t.csv: a, b, species)\n")


def test_the_same_activation_spelled_twice_is_refused(capsys, table):
    err = refused(capsys, "--tasks", "spirals", "--acts", "relu", "leaky_relu(0.01)", "leaky_relu")
    assert "activation 'leaky_relu' is given twice (as 'leaky_relu(0.01)' and 'leaky_relu')" in err


def test_canonical_specs_leave_out_default_arguments():
    assert canonical_spec("Leaky-ReLU(0.01)") == "leaky_relu"
    assert canonical_spec("leaky_relu(0.2)") == "leaky_relu(negative_slope=0.2)"
    assert canonical_spec("golu(scale=1)") == "golu"  # 1 == 1.0, the same number
    assert canonical_spec("golu(trainable=0)") == "golu(trainable=0)"  # not the bool False


def test_resume_of_a_missing_or_parent_directory_says_which(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "nothere: no such run directory" in refused(capsys, "--resume", "nothere")
    (tmp_path / "runs" / "20261128T000000Z-bench").mkdir(parents=True)
    (tmp_path / "runs" / "20261128T000000Z-bench" / "config.json").write_text("{}")
    err = refused(capsys, "--resume", "runs")
    assert "the runs in it: runs/20261128T000000Z-bench" in err


def test_a_small_test_split_is_noted_in_the_report_too(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "six.csv").write_text("a,b,label\n0,0,0\n1,2,1\n2,4,0\n3,6,1\n4,8,0\n5,10,1\n")
    options = ["--seeds", "2", "--epochs", "1", "--acts", "relu", "--quiet"]
    assert main(["bench", "--data", "six.csv", "--target", "label", *options]) == 0
    (report,) = (tmp_path / "runs").glob("*/report.md")
    test_rows = 2  # 20% of 6 rows, stratified: one of each class
    assert f"**Only {test_rows} test examples**: each is worth 50.0 points" in report.read_text()
