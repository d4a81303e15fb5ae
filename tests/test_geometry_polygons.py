"""Batched convex polygon clipping and its tolerance policy, against hand-computed areas."""

from __future__ import annotations

import numpy as np
import torch

from relulab.geometry import polygons

SQUARE = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)


def shoelace(vertices: np.ndarray) -> float:
    x, y = vertices[:, 0], vertices[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def cut_square(line: list[float]) -> tuple[bool, list[np.ndarray]]:
    """Whether ``line`` (a1, a2, c) cuts the square, and the pieces' vertices."""
    vertices, count = polygons.pack([SQUARE])
    line_t = torch.tensor([line], dtype=torch.float64)
    cut, _, v = polygons.split(vertices, count, line_t)
    pieces = []
    for sign in (1.0, -1.0):
        piece, n = polygons.clip(vertices, count, v, sign)
        pieces.append(piece[0, : n[0]].numpy())
    return bool(cut[0]), pieces


def test_split_through_the_middle():
    cut, (up, down) = cut_square([1.0, 0.0, -0.25])  # x = 0.25
    assert cut
    assert abs(shoelace(up) - 0.75 * 2) < 1e-15 and abs(shoelace(down) - 1.25 * 2) < 1e-15
    assert (up[:, 0] >= 0.25).all() and (down[:, 0] <= 0.25).all()


def test_diagonal_through_two_vertices():
    cut, (up, down) = cut_square([1.0, -1.0, 0.0])  # x = y
    assert cut and len(up) == 3 and len(down) == 3
    assert abs(shoelace(up) - 2.0) < 1e-15 and abs(shoelace(down) - 2.0) < 1e-15


def test_line_touching_a_vertex_does_not_cut():
    for c in (2.0, 2.0 + 1e-13, 2.0 - 1e-13):  # x + y = -2 only touches (-1, -1)
        cut, _ = cut_square([1.0, 1.0, c])
        assert not cut


def test_near_coincident_edge_makes_no_sliver_but_a_real_gap_does():
    for offset in (0.0, 1e-15, -1e-15, 1e-13):
        assert not cut_square([1.0, 0.0, -(1.0 + offset)])[0]  # x = 1 + offset: the edge
    cut, (up, _) = cut_square([1.0, 0.0, -(1.0 - 1e-6)])
    assert cut and abs(shoelace(up) - 2e-6) < 1e-15


def test_near_parallel_line():
    # Through (-1, -1), tilted by delta: at (1, -1) the value is about 2 * delta.
    def line(delta: float) -> list[float]:
        return [-delta, 1.0, 1.0 - delta]  # y + 1 - delta * (x + 1) = 0

    assert not cut_square(line(1e-14))[0]
    cut, (up, down) = cut_square(line(1e-9))
    assert cut
    assert abs(shoelace(down) - 2e-9) < 1e-15  # the triangle below the line (shoelace rounding)
    assert abs(shoelace(up) + shoelace(down) - 4.0) < 1e-15


def test_area_and_segment():
    rng = np.random.default_rng(0)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
    hull = np.stack([np.cos(angles), np.sin(angles)], 1) * 3.0
    vertices, count = polygons.pack([torch.tensor(hull), SQUARE])
    assert torch.allclose(
        polygons.area(vertices, count), torch.tensor([shoelace(hull), 4.0], dtype=torch.float64)
    )
    line = torch.tensor([[0.0, 1.0, -0.5], [0.0, 1.0, -0.5]], dtype=torch.float64)  # y = 0.5
    _, _, v = polygons.split(vertices, count, line)
    ends, crossed = polygons.segment(vertices, count, line, v)
    assert crossed.all()
    assert torch.allclose(ends[1], torch.tensor([[1.0, 0.5], [-1.0, 0.5]], dtype=torch.float64))
    # Each end of the hull's chord lies on an edge of the hull: on the circle's chord.
    assert torch.allclose(ends[0, :, 1], torch.tensor([0.5, 0.5], dtype=torch.float64))
