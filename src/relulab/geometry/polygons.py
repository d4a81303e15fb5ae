"""Batched convex polygons in float64: split by lines, clip to half-planes, measure.

A batch of ``P`` convex polygons is ``(vertices, count)``: ``vertices`` is ``(P, V, 2)``
float64, counter-clockwise, and polygon ``i`` uses its first ``count[i]`` rows (the rest is
padding). A line is an affine function ``f(x) = a . x + c`` per polygon, given by its values
at the vertices.

Tolerance policy. Rounding makes ``f`` at a vertex that lies on the line a tiny number of
either sign, of the order of ``2**-52`` times ``scale = |a_1| X + |a_2| Y + |c|``, where
``X``, ``Y`` bound ``|x|``, ``|y|`` over the polygon (its own vertices, or the whole domain's
when ``bound`` is given, as :func:`relulab.geometry.partition` does so that a line's
tolerance is the same for a region and its pieces). A value within ``eps = EPS * scale``
(``EPS = 1e-12``) of zero is snapped to exactly zero: that vertex lies on the line. A line
*cuts* a polygon only if some vertex lies beyond ``+eps`` and another beyond ``-eps``; then
both pieces have vertices strictly off the line and positive area, and no sliver is made by
a line that only grazes a vertex (through-a-vertex) or runs along an edge (near-coincident).
A near-parallel line cuts exactly when a vertex lies beyond ``eps`` on its far side.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-12


def values(vertices: Tensor, line: Tensor) -> Tensor:
    """``f`` at each vertex, ``(P, V)``, for lines ``(P, 3)`` = ``(a_1, a_2, c)``."""
    return (
        vertices[..., 0] * line[:, None, 0] + vertices[..., 1] * line[:, None, 1] + line[:, None, 2]
    )


def snapped(vertices: Tensor, count: Tensor, line: Tensor, bound: Tensor | None = None) -> Tensor:
    """``f`` at each vertex with values within ``eps`` of zero set to zero (padding is zero).

    ``bound`` ``(2,)``: the largest ``|x|`` and ``|y|`` of any vertex (e.g. of the whole
    domain); given, it replaces the per-polygon maxima in ``scale`` (a larger, cheaper eps).
    """
    v = values(vertices, line)
    valid = vertex_mask(vertices, count)
    if bound is None:
        size = torch.where(valid[..., None], vertices.abs(), 0).amax(dim=1)  # (P, 2)
    else:
        size = bound[None, :]
    scale = (line[:, :2].abs() * size).sum(dim=1) + line[:, 2].abs()
    return torch.where(valid & (v.abs() > EPS * scale[:, None]), v, 0.0)


def vertex_mask(vertices: Tensor, count: Tensor) -> Tensor:
    return torch.arange(vertices.shape[1])[None, :] < count[:, None]


def _edge_crossings(vertices: Tensor, count: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per vertex slot ``(P, V)``: whether it is a real vertex, whether the edge leaving it
    crosses the zero line strictly, and the crossing point ``(P, V, 2)`` (the vertex itself
    where the edge does not cross)."""
    P, V = v.shape
    index = torch.arange(V)
    valid = index[None, :] < count[:, None]
    following = torch.where(index[None, :] + 1 < count[:, None], index[None, :] + 1, 0)
    v_next = v.gather(1, following)
    x_next = vertices.gather(1, following[..., None].expand(P, V, 2))
    crosses = valid & (v * v_next < 0)
    t = torch.where(crosses, v / torch.where(crosses, v - v_next, 1.0), 0.0)
    return valid, crosses, vertices + t[..., None] * (x_next - vertices)


def clip(vertices: Tensor, count: Tensor, v: Tensor, sign: float) -> tuple[Tensor, Tensor]:
    """The part of each polygon where ``sign * f >= 0`` (Sutherland-Hodgman, batched).

    ``v`` are snapped values (:func:`snapped`). Returns ``(vertices, count)`` of the pieces;
    a polygon wholly on the other side gives a piece with fewer than 3 vertices.
    """
    P, V = v.shape
    valid, crosses, cut = _edge_crossings(vertices, count, v)
    keep = valid & (sign * v >= 0)
    # Each vertex may emit itself and then the crossing on its outgoing edge, in order.
    candidates = torch.stack([vertices, cut], dim=2).reshape(P, 2 * V, 2)
    flags = torch.stack([keep, crosses], dim=2).reshape(P, 2 * V)
    order = torch.sort((~flags).to(torch.int8), dim=1, stable=True).indices
    new_count = flags.sum(dim=1)
    width = max(int(new_count.max()) if P else 0, 1)
    order = order[:, :width]
    return candidates.gather(1, order[..., None].expand(P, width, 2)), new_count


def split(
    vertices: Tensor, count: Tensor, line: Tensor, bound: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Which polygons the lines cut, and each polygon's side when it is not cut.

    Returns ``(cut, side, v)``: ``cut`` ``(P,)`` bool; ``side`` ``(P,)`` +1 or -1, the side
    of an uncut polygon (by its largest-magnitude value; +1 when ``f`` is zero on it to within
    ``eps``); ``v`` the snapped values for :func:`clip`.
    """
    v = snapped(vertices, count, line, bound)
    high, low = v.amax(dim=1), v.amin(dim=1)
    cut = (high > 0) & (low < 0)
    side = torch.where(low < 0, -1, 1)
    return cut, side, v


def area(vertices: Tensor, count: Tensor) -> Tensor:
    """Shoelace area of each polygon, ``(P,)``."""
    P, V = count.shape[0], vertices.shape[1]
    index = torch.arange(V)
    following = torch.where(index[None, :] + 1 < count[:, None], index[None, :] + 1, 0)
    x_next = vertices.gather(1, following[..., None].expand(P, V, 2))
    cross = vertices[..., 0] * x_next[..., 1] - vertices[..., 1] * x_next[..., 0]
    valid = index[None, :] < count[:, None]
    return 0.5 * torch.where(valid, cross, 0.0).sum(dim=1)


def centroid(vertices: Tensor, count: Tensor) -> Tensor:
    """Mean of each polygon's vertices, ``(P, 2)``: a point strictly inside it."""
    valid = vertex_mask(vertices, count)
    return (vertices * valid[..., None]).sum(dim=1) / count[:, None]


def pack(polygons: list[Tensor]) -> tuple[Tensor, Tensor]:
    """A list of ``(n_i, 2)`` vertex arrays as a padded batch."""
    width = max(len(p) for p in polygons)
    vertices = torch.zeros(len(polygons), width, 2, dtype=torch.float64)
    for i, p in enumerate(polygons):
        vertices[i, : len(p)] = p
    return vertices, torch.tensor([len(p) for p in polygons])


def counter_clockwise(polygon: Tensor) -> Tensor:
    """``polygon`` ``(n, 2)`` in counter-clockwise order (reversed if given clockwise)."""
    vertices, count = pack([polygon])
    return polygon.flip(0) if float(area(vertices, count)[0]) < 0 else polygon


def segment(vertices: Tensor, count: Tensor, line: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Where the zero line of ``f`` (``line``, snapped values ``v``) crosses each polygon.

    Returns ``(ends, crossed)``: ``ends`` ``(P, 2, 2)`` the segment's end points, and
    ``crossed`` ``(P,)``, whether the line cuts the polygon (a line along an edge or through a
    vertex only does not, by the tolerance policy).
    """
    P = v.shape[0]
    valid, crosses, cut = _edge_crossings(vertices, count, v)
    points = torch.cat([cut, vertices], dim=1)
    on = torch.cat([crosses, valid & (v == 0)], dim=1)
    # The end points are the extreme points on the line, along its direction (-a_2, a_1).
    along = points[..., 0] * -line[:, None, 1] + points[..., 1] * line[:, None, 0]
    first = torch.where(on, along, torch.inf).argmin(dim=1)
    last = torch.where(on, along, -torch.inf).argmax(dim=1)
    rows = torch.arange(P)
    ends = torch.stack([points[rows, first], points[rows, last]], dim=1)
    crossed = (v.amax(dim=1) > 0) & (v.amin(dim=1) < 0)
    return ends, crossed
