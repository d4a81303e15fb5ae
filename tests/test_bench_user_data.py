"""The user's own data (bench/user_data.py): good files load; missing, unreadable and malformed
ones raise UserError in one line naming the file, line and column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from relulab.bench.user_data import load_table
from relulab.cli import main
from relulab.errors import UserError

GOOD = "a,b,label\n1,2,cat\n3,4,dog\n5,6,cat\n7,8,dog\n"


def write(tmp_path, text: str, name: str = "data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_good_csv_loads_with_sorted_class_indices(tmp_path):
    x, y = load_table(write(tmp_path, GOOD), "label")
    assert x.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert y.tolist() == [0, 1, 0, 1]  # cat, dog


def test_numeric_labels_sort_numerically(tmp_path):
    _, y = load_table(write(tmp_path, "f,t\n1,10\n2,9\n3,10\n4,9\n"), "t")
    assert y.tolist() == [1, 0, 1, 0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b,label\n1,2,cat\n3,dog\n", "line 3: expected 3 fields, got 2"),
        ("a,b,label\n1,2,cat\n3,x4,dog\n", "line 3, column 'b': 'x4' is not a number"),
        ("a,b,label\n1,,cat\n", "line 2, column 'b': missing value"),
        ("a,b,label\n1,inf,cat\n", "line 2, column 'b': 'inf' is not finite"),
        ("a,b,label\n1,2,\n", "line 2, column 'label': missing label"),
        ("a,b,lable\n1,2,cat\n", "no column 'label'; did you mean 'lable'?"),
        ("", "empty file"),
        ("a,b,label\n", "no data rows"),
        ("a,b,label\n1,2,cat\n3,4,cat\n", "has 1 class(es)"),
        ("a,b,label\n1,2,cat\n3,4,cat\n5,6,dog\n", "class 'dog' has only 1 row"),
    ],
)
def test_malformed_csv_errors_point_at_the_cell(tmp_path, text, message):
    with pytest.raises(ValueError) as error:
        load_table(write(tmp_path, text), "label")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_npz_tables(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.arange(8.0).reshape(4, 2), y=np.array([1, 0, 1, 0]))
    x, y = load_table(path, "y")
    assert x.shape == (4, 2) and y.tolist() == [1, 0, 1, 0]
    np.savez(path, x=np.array([[1.0, np.nan], [2.0, 3.0]]), y=np.array([0, 1]))
    with pytest.raises(ValueError, match=r"x\[0, 1\] is not finite"):
        load_table(path, "y")
    np.savez(path, features_=np.zeros((2, 2)), y=np.array([0, 1]))
    with pytest.raises(ValueError, match="no feature array 'x'"):
        load_table(path, "y")
    np.savez(path, x=np.zeros((2, 2)), labels=np.array([0, 1]))
    with pytest.raises(ValueError, match="no label array 'label'; did you mean 'labels'"):
        load_table(path, "label")


def test_the_cli_reports_a_malformed_csv_in_one_line_with_exit_2(tmp_path, capsys):
    path = write(tmp_path, "a,b,label\n1,2,cat\n3,x,dog\n")
    code = main(
        [
            "bench",
            "--data",
            str(path),
            "--target",
            "label",
            "--out",
            str(tmp_path / "runs"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.endswith("line 3, column 'b': 'x' is not a number") and "\n" not in err
    assert not (tmp_path / "runs").exists()  # nothing started


def test_a_csv_trains_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = ["f1,f2,kind"] + [
        f"{a:.3f},{b:.3f},{'ab'[int(a > b)]}" for a, b in rng.normal(size=(60, 2))
    ]
    path = write(tmp_path, "\n".join(rows) + "\n")
    out = str(tmp_path / "runs")
    options = ["--acts", "relu", "gelu", "--seeds", "2", "--epochs", "3", "--out", out, "--json"]
    code = main(["bench", "--data", str(path), "--target", "kind", *options])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {(r["task"], r["activation"], r["score_n"]) for r in data["summary"]} == {
        ("table", "relu", 2),
        ("table", "gelu", 2),
    }
    assert all(0.5 <= r["score_mean"] <= 1.0 for r in data["summary"])  # a learnable rule


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,label,label\n1,cat,cat\n", "line 1: column 'label' appears twice"),
        ('a,label\n1,"cat\n2,dog\n3,cat\n', "line 2: a field spans lines (an unterminated quote?)"),
        ("a,label\n" + "1" * 200_000 + ",cat\n", "line 2: field larger than field limit"),
    ],
)
def test_more_malformed_csv(tmp_path, text, message):
    with pytest.raises(
        ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")
    ):
        load_table(write(tmp_path, text), "label")


def test_non_utf8_names_the_file_and_line(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"a,label\n1,cat\n2,caf\xe9\n")
    with pytest.raises(ValueError, match=r"latin\.csv line 3: not UTF-8 text"):
        load_table(path, "label")


def test_numeric_labels_that_are_the_same_number_are_one_class(tmp_path):
    _, y = load_table(write(tmp_path, "f,t\n1,1\n2,1.0\n3,2\n4,2.00\n"), "t")
    assert y.tolist() == [0, 0, 1, 1]


def test_npz_that_is_not_an_archive_or_not_real(tmp_path):
    single = tmp_path / "single.npz"
    with open(single, "wb") as handle:
        np.save(handle, np.zeros(3))
    with pytest.raises(ValueError, match="holds a single array"):
        load_table(single, "y")
    complex_x = tmp_path / "complex.npz"
    np.savez(complex_x, x=np.ones((2, 2), dtype=complex), y=np.array([0, 1]))
    with pytest.raises(ValueError, match="must be a 2-D real array"):
        load_table(complex_x, "y")


def test_a_malformed_npz_is_exit_2_from_the_cli(tmp_path, capsys):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.array([[1.0, np.inf], [0.0, 1.0]]), y=np.array([0, 1]))
    code = main(
        ["bench", "--data", str(path), "--target", "y", "--out", str(tmp_path / "runs"), "--quiet"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.endswith("x[0, 1] is not finite (inf)") and "\n" not in err


def test_missing_unreadable_or_damaged_files_raise_user_error(tmp_path, monkeypatch):
    """Not a raw OSError or zipfile error: the one exception type for user mistakes, in one
    line that names the path."""
    with pytest.raises(UserError, match=f"cannot read {tmp_path / 'none.csv'}: no such file"):
        load_table(tmp_path / "none.csv", "label")
    damaged = tmp_path / "damaged.npz"
    np.savez(damaged, x=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]))
    damaged.write_bytes(damaged.read_bytes()[:-40])  # cut short: its zip directory is gone
    with pytest.raises(UserError, match=f"{damaged}: not a readable .npz file"):
        load_table(damaged, "y")

    path = write(tmp_path, GOOD)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(UserError) as error:
        load_table(path, "label")
    assert str(error.value) == f"cannot read {path}: Permission denied"


@pytest.mark.parametrize("kind", ["csv", "npz"])
def test_a_missing_target_is_never_matched_to_a_one_letter_name(tmp_path, kind):
    """'c' is inside 'species', which is no reason to suggest it: list the names instead."""
    if kind == "csv":
        path = write(tmp_path, "a,b,c,label\n1,2,3,x\n4,5,6,y\n1,2,3,x\n4,5,6,y\n")
        listing = "no column 'species' (columns: a, b, c, label)"
    else:
        path = tmp_path / "data.npz"
        np.savez(path, x=np.zeros((4, 2)), c=np.array([0, 1, 0, 1]), label=np.zeros(4))
        listing = "no label array 'species' (arrays: x, c, label)"
    with pytest.raises(UserError) as error:
        load_table(path, "species")
    assert str(error.value) == f"{path}: {listing}"
    with pytest.raises(UserError, match=r"did you mean 'label'\?$"):
        load_table(path, "lable")


def test_a_table_parses_from_its_bytes_without_opening_the_file(tmp_path):
    """What a trial on another machine does: it has the file's bytes from the driver, and the
    path only to name the file in messages."""
    gone = tmp_path / "gone.csv"
    x, y = load_table(gone, "label", content=GOOD.encode())
    assert x.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]] and y.tolist() == [0, 1, 0, 1]
    with pytest.raises(UserError, match=r"gone\.csv line 3: expected 3 fields, got 2"):
        load_table(gone, "label", content=b"a,b,label\n1,2,cat\n3,dog\n")
    archive = tmp_path / "t.npz"
    np.savez(archive, x=np.arange(8.0).reshape(4, 2), y=np.array([1, 0, 1, 0]))
    content = archive.read_bytes()
    archive.unlink()
    x, y = load_table(archive, "y", content=content)
    assert x.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]] and y.tolist() == [1, 0, 1, 0]
    assert not list(tmp_path.iterdir())
