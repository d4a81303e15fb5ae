"""relulab.plot.codes: one heatmap per statistic, widths down, epochs across, values written in."""

from __future__ import annotations

import numpy as np
import pytest

from pngs import read_png
from relulab.errors import UserError
from relulab.plot.codes import codes_figure, plot_codes

pytest.importorskip("matplotlib")
KEYS = ["redundancy_ratio", "net_accuracy", "knn_accuracy", "logistic_accuracy",
        "kmeans_test_accuracy"]  # fmt: skip


def make_rows() -> list[dict]:
    """Two widths given out of order, three epochs, one pair missing; every value unique."""
    rows, value = [], 0.01
    for width in (64, 16):
        for epochs in (0, 5, 1):
            if (width, epochs) == (64, 5):
                continue
            row = {"width": width, "epochs": epochs}
            for key in KEYS:
                row[key], value = value, value + 0.03
            rows.append(row)
    return rows


def test_each_panel_holds_its_statistic_by_width_and_epochs(tmp_path):
    rows = make_rows()
    figure = codes_figure(rows, title="codes")
    assert len(figure.axes) == len(KEYS)
    for axis, key in zip(figure.axes, KEYS):
        (image,) = axis.get_images()
        grid = np.ma.filled(image.get_array().astype(float), np.nan)
        # rows: widths 16, 64 (ascending); columns: epochs 0, 1, 5
        expected = np.array(
            [[next((r[key] for r in rows if (r["width"], r["epochs"]) == (w, e)), np.nan)
              for e in (0, 1, 5)] for w in (16, 64)]
        )  # fmt: skip
        np.testing.assert_array_equal(grid, expected)
        assert [t.get_text() for t in axis.get_xticklabels()] == ["0", "1", "5"]
        assert [t.get_text() for t in axis.get_yticklabels()] == ["16", "64"]
        texts = [t.get_text() for t in axis.texts]
        assert len(texts) == 5  # no text in the missing cell
        if key == "redundancy_ratio":
            assert f"{rows[0][key]:.3f}" in texts
        else:
            assert f"{round(100 * rows[0][key])}%" in texts
    read_png(plot_codes(rows, tmp_path / "codes"), figure)


def test_an_exact_zero_ratio_is_written_apart_from_a_rounded_one():
    rows = make_rows()
    rows[2]["redundancy_ratio"], rows[4]["redundancy_ratio"] = 0.0, 0.0004  # (16, 0), (16, 1)
    texts = [t.get_text() for t in codes_figure(rows).axes[0].texts]
    assert texts[:2] == ["0", "0.000"]


def test_rows_without_a_statistic_are_refused():
    rows = make_rows()
    del rows[3]["knn_accuracy"]  # one row is enough
    with pytest.raises(UserError, match="rows lack knn_accuracy"):
        codes_figure(rows)
    with pytest.raises(UserError, match="no rows"):
        codes_figure([])
