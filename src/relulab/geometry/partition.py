"""Exact linear regions and decision boundary of a piecewise-linear network on a 2-D slice.

The slice is parametrised by ``(s, t)``: the input is ``origin + s * d1 + t * d2`` (a
:class:`Plane`), or ``(s, t)`` itself when the model's input is 2-D and ``domain`` is a
polygon. The activation sites (:mod:`relulab.geometry.affine`) are processed in execution
order. A region is a convex polygon with a fixed pattern for the sites processed so far; on
it the pre-activation of the next site is affine in ``(s, t)``, read off by running the model
with that pattern fixed on the slice's three basis points (a batch over all regions). For a
plain :class:`~torch.nn.Sequential` each region keeps its three rows at the input of the
current child, so a site costs one segment of the network, not its whole prefix. Each
region is then split by each unit's breakpoint lines (``pre = 0``; ``pre = low`` and
``pre = high`` for clamps), keeping pieces of positive area (see
:mod:`relulab.geometry.polygons` for the tolerance policy); the lines that cut a region are
found for all regions and units at once, and the cuts run in rounds (round ``j`` applies to
every region its ``j``-th cutting line). Each final piece's state is read at its centroid.
At the end, each region carries the affine map of the output on it, and the decision
boundary is where the top class changes within each polygon.

Example::

    >>> net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> square = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    >>> part = partition(net, square)
    >>> part.count, float(part.areas.sum())  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from relulab.errors import UserError
from relulab.geometry import polygons
from relulab.geometry.affine import Site, as_float64, run, states


class RegionLimitError(UserError):
    """The slice has more linear regions than ``max_regions`` (:func:`partition`)."""

    def __init__(self, limit: int, found: int, where: str) -> None:
        self.limit, self.found, self.where = limit, found, where
        super().__init__(
            f"partition: more than {limit:,} linear regions ({found:,}) by {where}; "
            "stopped before memory runs out"
        )


@dataclass
class Plane:
    """The slice ``origin + s * d1 + t * d2`` of input space over a polygon of ``(s, t)``.

    Attributes:
        origin, d1, d2: tensors of the model's input shape (one sample, no batch dimension).
        extent: ``(s_min, s_max, t_min, t_max)`` or polygon vertices ``(n, 2)`` in ``(s, t)``.
    """

    origin: Tensor
    d1: Tensor
    d2: Tensor
    extent: tuple[float, float, float, float] | Tensor = (0.0, 1.0, 0.0, 1.0)

    @classmethod
    def through(cls, p0: Tensor, p1: Tensor, p2: Tensor, margin: float = 0.1) -> Plane:
        """The plane through three inputs (e.g. three images), with orthonormal ``d1``,
        ``d2`` (so areas are input-space areas); the extent is the box around the three
        points' coordinates, widened by ``margin`` times its size on each side."""
        p0, p1, p2 = (torch.as_tensor(p, dtype=torch.float64) for p in (p0, p1, p2))
        u, w = (p1 - p0).flatten(), (p2 - p0).flatten()
        if u.norm() == 0:
            raise UserError("Plane.through: the first two points coincide")
        d1 = u / u.norm()
        w = w - (w @ d1) * d1
        if w.norm() <= 1e-12 * (p2 - p0).norm():
            raise UserError("Plane.through: the three points are collinear")
        d2 = w / w.norm()
        coords = torch.tensor(
            [
                [0.0, 0.0],
                [float(u.norm()), 0.0],
                [float((p2 - p0).flatten() @ d1), float(w.norm())],
            ],
            dtype=torch.float64,
        )
        low, high = coords.amin(0), coords.amax(0)
        pad = margin * (high - low)
        box = (
            float(low[0] - pad[0]),
            float(high[0] + pad[0]),
            float(low[1] - pad[1]),
            float(high[1] + pad[1]),
        )
        return cls(p0, d1.reshape(p0.shape), d2.reshape(p0.shape), box)

    def polygon(self) -> Tensor:
        if isinstance(self.extent, Tensor):
            return self.extent.to(torch.float64)
        s0, s1, t0, t1 = self.extent
        return torch.tensor([[s0, t0], [s1, t0], [s1, t1], [s0, t1]], dtype=torch.float64)

    def inputs(self, points: Tensor) -> Tensor:
        """The inputs at slice coordinates ``points`` ``(M, 2)``, ``(M, *input_shape)``."""
        p = torch.as_tensor(points, dtype=torch.float64)
        return (
            self.origin
            + p[:, 0].reshape(-1, *[1] * self.origin.dim()) * self.d1
            + p[:, 1].reshape(-1, *[1] * self.origin.dim()) * self.d2
        )


@dataclass
class Region:
    """One linear region: a convex polygon (counter-clockwise ``(n, 2)`` vertices in slice
    coordinates), its pattern (one state per unit, sites concatenated) and the output's
    affine map ``output = A @ (s, t) + b`` on it."""

    vertices: Tensor
    pattern: Tensor
    A: Tensor
    b: Tensor


@dataclass
class Partition:
    """The exact linear regions of a model on a slice.

    Attributes:
        vertices, counts: the polygons as a padded batch ``(R, V, 2)`` and vertex counts.
        patterns: per site, ``(R, units)`` int8 states (how many breakpoints lie below).
        sites: the activation sites, in execution order.
        A, b: the output's affine map on each region, ``(R, out, 2)`` and ``(R, out)``.
        boundary: decision-boundary segments ``(S, 2, 2)`` in slice coordinates.
        boundary_regions: the region of each segment, ``(S,)``.
        domain: the slice's polygon; plane: the :class:`Plane` (None for a 2-D input).
    """

    vertices: Tensor
    counts: Tensor
    patterns: list[Tensor]
    sites: list[Site]
    A: Tensor
    b: Tensor
    boundary: Tensor
    boundary_regions: Tensor
    domain: Tensor
    plane: Plane | None = None
    _regions: list[Region] | None = field(default=None, repr=False)

    @property
    def count(self) -> int:
        return int(self.counts.shape[0])

    @property
    def areas(self) -> Tensor:
        return polygons.area(self.vertices, self.counts)

    @property
    def pattern_matrix(self) -> Tensor:
        """All states, ``(R, total units)``."""
        return torch.cat(self.patterns, dim=1) if self.patterns else torch.zeros(self.count, 0)

    @property
    def regions(self) -> list[Region]:
        if self._regions is None:
            codes = self.pattern_matrix
            self._regions = [
                Region(self.vertices[i, : self.counts[i]], codes[i], self.A[i], self.b[i])
                for i in range(self.count)
            ]
        return self._regions

    def locate(self, points: Tensor, chunk: int = 256) -> Tensor:
        """The region holding each point ``(M, 2)`` (the first, on a shared edge), or -1."""
        points = torch.as_tensor(points, dtype=torch.float64)
        P, V = self.vertices.shape[:2]
        index = torch.arange(V)
        following = torch.where(index[None, :] + 1 < self.counts[:, None], index[None, :] + 1, 0)
        start = self.vertices
        edge = self.vertices.gather(1, following[..., None].expand(P, V, 2)) - start
        valid = index[None, :] < self.counts[:, None]
        size = float(self.domain.abs().max()) or 1.0
        found = []
        for i in range(0, len(points), chunk):
            q = points[i : i + chunk, None, None, :] - start[None]  # (M, P, V, 2)
            cross = edge[None, ..., 0] * q[..., 1] - edge[None, ..., 1] * q[..., 0]
            inside = ((cross >= -1e-12 * size * size) | ~valid[None]).all(dim=2)
            hit = inside.to(torch.int8).argmax(dim=1)
            found.append(torch.where(inside.any(dim=1), hit, -1))
        return torch.cat(found) if found else torch.zeros(0, dtype=torch.long)

    def output(self, points: Tensor) -> Tensor:
        """The output at slice points ``(M, 2)`` from the regions' affine maps."""
        points = torch.as_tensor(points, dtype=torch.float64)
        where = self.locate(points)
        if (where < 0).any():
            raise UserError("Partition.output: some points lie outside the domain")
        return (self.A[where] @ points[..., None]).squeeze(-1) + self.b[where]


class _Regions:
    """Growing storage of the current polygons (capacity doubles, so appends are cheap)."""

    def __init__(self, vertices: Tensor, counts: Tensor) -> None:
        self.vertices, self.counts = vertices, counts
        self.origin = torch.zeros(len(counts), dtype=torch.long)
        self.size = len(counts)

    def restart(self) -> None:
        """A new site: each region is its own origin."""
        self.vertices = self.vertices[: self.size, : int(self.counts[: self.size].max())]
        self.counts = self.counts[: self.size]
        self.origin = torch.arange(self.size)

    def _reserve(self, rows: int, width: int) -> None:
        capacity, old_width = self.vertices.shape[:2]
        if rows <= capacity and width <= old_width:
            return
        new_capacity = max(rows, 2 * capacity) if rows > capacity else capacity
        vertices = torch.zeros(new_capacity, max(width, old_width), 2, dtype=torch.float64)
        vertices[: self.size, :old_width] = self.vertices[: self.size]
        counts = torch.zeros(new_capacity, dtype=torch.long)
        counts[: self.size] = self.counts[: self.size]
        origin = torch.zeros(new_capacity, dtype=torch.long)
        origin[: self.size] = self.origin[: self.size]
        self.vertices, self.counts, self.origin = vertices, counts, origin

    def cut(self, rows: Tensor, lines: Tensor, bound: Tensor) -> None:
        """Split regions ``rows`` by their lines ``(n, 3)``, one per row.

        Vertex slots past a polygon's count are left stale (every reader masks them)."""
        vertices, counts = self.vertices[rows], self.counts[rows]
        cut, _, v = polygons.split(vertices, counts, lines, bound)
        rows = rows[cut]
        new = len(rows)
        if new == 0:
            return
        vertices, counts, v = vertices[cut], counts[cut], v[cut]
        # Both sides in one batch: clipping to -f >= 0 is clipping to f <= 0.
        pieces, n = polygons.clip(
            torch.cat([vertices, vertices]), torch.cat([counts, counts]), torch.cat([v, -v]), 1.0
        )
        width = pieces.shape[1]
        self._reserve(self.size + new, width)
        end = self.size + new
        self.vertices[rows, :width] = pieces[:new]
        self.vertices[self.size : end, :width] = pieces[new:]
        self.counts[rows] = n[:new]
        self.counts[self.size : end] = n[new:]
        self.origin[self.size : end] = self.origin[rows]
        self.size = end

    def cut_max(self, rows: Tensor, lines: Tensor, valid: Tensor, bound: Tensor) -> None:
        """Split regions ``rows`` into the cells of their max unit: ``lines`` ``(n, k, 3)``
        are the ``k`` candidates on each row, ``valid`` ``(n, k)`` which exist. Cell ``j`` is
        where candidate ``j`` is largest, ties going to the lower index (so a candidate equal
        to an earlier one on the whole region has no cell); cells of area below
        ``EPS * (X + Y)**2`` (``X``, ``Y`` bound the domain, as for lines) are dropped.
        """
        if len(rows) == 0:
            return
        vertices, counts = self.vertices[rows], self.counts[rows]
        n, k = valid.shape
        pieces, sizes = [], []
        for j in range(k):
            piece, size = vertices, counts.clone()
            for i in range(k):
                if i == j:
                    continue
                v = polygons.snapped(piece, size, lines[:, j] - lines[:, i], bound)
                equal = (v == 0).all(dim=1)  # candidate j is candidate i on this region
                # no constraint where candidate i does not exist
                v = torch.where(valid[:, i, None], v, 1.0)
                piece, size = polygons.clip(piece, size, v, 1.0)
                if i < j:
                    size = torch.where(equal & valid[:, i], 0, size)
            pieces.append(piece)
            # A cell that only touches a corner or an edge comes out of the clips as a
            # sliver of zero area, up to rounding: it is not a region.
            sliver = polygons.area(piece, size) <= polygons.EPS * float(bound.sum()) ** 2
            sizes.append(torch.where(valid[:, j] & (size >= 3) & ~sliver, size, 0))
        width = max(p.shape[1] for p in pieces)
        pieces = [torch.cat([p, p[:, -1:].expand(-1, width - p.shape[1], -1)], 1) for p in pieces]
        stacked, sizes = torch.stack(pieces, 1), torch.stack(sizes, 1)  # (n, k, W, 2), (n, k)
        kept = sizes > 0
        # The first cell of each row takes its place, the others are appended; a row left
        # with no cell (its crossing was within rounding) stays whole.
        whole = ~kept.any(dim=1)
        first = kept.to(torch.int8).argmax(dim=1)
        rows_all = torch.arange(n)
        self._reserve(self.size, width)
        split = rows[~whole]
        self.vertices[split, :width] = stacked[rows_all, first][~whole]
        self.counts[split] = sizes[rows_all, first][~whole]
        kept[rows_all, first] = False
        parent, cell = torch.nonzero(kept, as_tuple=True)
        new = len(parent)
        self._reserve(self.size + new, width)
        end = self.size + new
        self.vertices[self.size : end, :width] = stacked[parent, cell]
        self.counts[self.size : end] = sizes[parent, cell]
        self.origin[self.size : end] = self.origin[rows[parent]]
        self.size = end


def _affine(values: Tensor) -> tuple[Tensor, Tensor]:
    """From values at the basis points ``(R, 3, U)``: slopes ``(R, U, 2)``, offsets ``(R, U)``."""
    base = values[:, 0]
    return torch.stack([values[:, 1] - base, values[:, 2] - base], dim=-1), base


class _Segments:
    """The model as a chain of segments, with each region's input to the current segment
    cached at the slice's three basis points, so that reaching site ``k`` runs only the
    segment that holds it rather than the whole prefix of the network.

    A plain :class:`~torch.nn.Sequential` is a chain of its children (each child's output is
    the next one's only input); any other model is one segment. A region's pieces inherit
    its cached rows: the input to a segment depends only on the patterns of earlier sites,
    which the pieces share.
    """

    def __init__(self, model: nn.Module, basis: Tensor, sites: list[Site], chunk: int) -> None:
        sequential = isinstance(model, nn.Sequential) and type(model).forward is (
            nn.Sequential.forward
        )
        self.parts = list(model) if sequential and len(model) > 0 else [model]
        self.shapes, self.sites, self.first = [], [], []
        x = basis.clone()
        try:
            for part in self.parts:
                self.first.append(sum(len(s) for s in self.sites))
                self.shapes.append(tuple(x.shape[1:]))
                out, found = run(part, x.clone())
                self.sites.append(found)
                x = out.reshape(len(x), *self._output_shape(part, x))
            chained = sum(len(s) for s in self.sites) == len(sites)
        except UserError:  # e.g. a child that returns a tuple: run the model whole
            chained = False
        if not chained:
            self.parts, self.shapes, self.first = [model], [tuple(basis.shape[1:])], [0]
            self.sites = [sites]
        self.chunk = chunk
        self.current = 0
        self.rows = basis[None]  # (R, 3, *input_shape)

    @staticmethod
    def _output_shape(part: nn.Module, x: Tensor) -> tuple[int, ...]:
        with torch.no_grad():
            return tuple(part(x).shape[1:])

    def _run(
        self, index: int, patterns: list[Tensor], stop: int | None, part: slice = slice(None)
    ) -> Tensor:
        """Values of segment ``index`` (to its local site ``stop``, or its output) at the
        cached rows of regions ``part`` (default: all), ``(R, 3, U)``."""
        first = self.first[index]
        begin, end, _ = part.indices(self.rows.shape[0])
        pieces = []
        for i in range(begin, end, self.chunk):
            rows = min(self.chunk, end - i)
            inputs = self.rows[i : i + rows].reshape(rows * 3, *self.shapes[index])
            if stop is not None:  # the rows are used again: keep them from in-place calls
                inputs = inputs.clone()
            local = patterns[first : first + len(self.sites[index])]
            fixed = [p[i : i + rows].repeat_interleave(3, dim=0) for p in local]
            values, _ = run(self.parts[index], inputs, fixed, stop, self.sites[index])
            pieces.append(values.reshape(rows, 3, -1))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def values(self, patterns: list[Tensor], stop: int | None, part: slice = slice(None)) -> Tensor:
        """Values at the basis points of site ``stop`` (None: the output) for regions
        ``part``, ``(R, 3, U)``, given every region's patterns for the sites before it."""
        target = len(self.parts) - 1
        if stop is not None:
            target = max(i for i in range(len(self.parts)) if self.first[i] <= stop)
        while self.current < target:
            out = self._run(self.current, patterns, None)
            self.current += 1
            self.rows = out.reshape(out.shape[0], 3, *self.shapes[self.current])
        local = None if stop is None else stop - self.first[target]
        return self._run(target, patterns, local, part)

    def keep(self, origin: Tensor) -> None:
        """The pieces after a site: piece ``i`` inherits region ``origin[i]``'s rows."""
        self.rows = self.rows[origin]


def _crossings(
    vertices: Tensor, counts: Tensor, slopes: Tensor, offsets: Tensor, breaks, bound: Tensor
) -> list[tuple[Tensor, Tensor]]:
    """For each breakpoint: the lines ``(R, U, 3)`` of every unit on every region, and which
    of them cut which region ``(R, U)``, by exactly the test of :func:`polygons.split`."""
    valid = polygons.vertex_mask(vertices, counts)
    centre = polygons.centroid(vertices, counts)
    radius = torch.where(valid, (vertices - centre[:, None]).norm(dim=-1), 0.0).amax(dim=1)
    # |f(v) - f(centre)| <= |a| radius at every vertex, so a line whose value at the centre
    # exceeds that (with slack for rounding) has every vertex strictly on one side: only the
    # few remaining (region, unit) pairs are tested vertex by vertex.
    a1, a2 = slopes[..., 0], slopes[..., 1]  # elementwise: batched 2-vectors are slow in bmm
    at_centre = a1 * centre[:, None, 0] + a2 * centre[:, None, 1]
    reach = (a1 * a1 + a2 * a2).sqrt() * radius[:, None] * (1 + 1e-6)
    tilt = a1.abs() * bound[0] + a2.abs() * bound[1]  # as polygons.snapped's scale
    # Padding repeats a vertex, so extremes over all vertex slots are the polygon's.
    filled = torch.where(valid[..., None], vertices, vertices[:, :1])
    plan = []
    for level in breaks:
        lines = torch.cat([slopes, (offsets - level)[..., None]], dim=-1)  # (R, U, 3)
        eps = polygons.EPS * (tilt + lines[..., 2].abs())
        r, u = torch.nonzero((at_centre + lines[..., 2]).abs() <= reach + 2 * eps, as_tuple=True)
        # The same float operations, in the same order, as polygons.values.
        line = lines[r, u]
        corners = filled[r]
        heights = corners[..., 0] * line[:, None, 0] + corners[..., 1] * line[:, None, 1]
        heights = heights + line[:, None, 2]
        cut = (heights.amax(dim=1) > eps[r, u]) & (heights.amin(dim=1) < -eps[r, u])
        crosses = torch.zeros(slopes.shape[:2], dtype=torch.bool)
        crosses[r[cut], u[cut]] = True
        plan.append((lines, crosses))
    return plan


def _max_crossings(
    vertices: Tensor, counts: Tensor, slopes: Tensor, offsets: Tensor, site: Site, bound: Tensor
) -> tuple[Tensor, Tensor]:
    """For a max site: every unit's candidate lines ``(R, U, k, 3)`` on every region, and
    which units have no single largest candidate over a region ``(R, U)`` (those are cut)."""
    R, k = len(counts), site.window
    lines = torch.cat([slopes, offsets[..., None]], dim=-1).reshape(R, site.units, k, 3)
    valid = site.windows >= 0  # (U, k)
    filled = torch.where(
        polygons.vertex_mask(vertices, counts)[..., None], vertices, vertices[:, :1]
    )
    crosses = torch.zeros(R, site.units, dtype=torch.bool)
    step = max(1, 2**22 // max(1, site.units * k * vertices.shape[1]))
    for r in range(0, R, step):
        part = lines[r : r + step]  # (r, U, k, 3)
        corners = filled[r : r + step]  # (r, V, 2)
        at = torch.einsum("rukc,rvc->rukv", part[..., :2], corners) + part[..., 2:3]
        at = at.masked_fill(~valid[None, :, :, None], -torch.inf)
        scale = (part[..., :2].abs() * bound).sum(-1) + part[..., 2].abs()  # (r, U, k)
        eps = 2 * polygons.EPS * scale.masked_fill(~valid[None], 0).amax(dim=2)  # (r, U)
        top = at.amax(dim=2, keepdim=True)  # (r, U, 1, V)
        # a candidate within eps of the top at every vertex is largest on the whole region
        lead = ((top - at) <= eps[..., None, None]).all(dim=3) & valid[None]
        crosses[r : r + step] = ~lead.any(dim=2)
    return lines, crosses


def _cut_group(
    regions: _Regions,
    first: int,
    last: int,
    slopes: Tensor,
    offsets: Tensor,
    site: Site,
    bound: Tensor,
    after_round: Callable[[], None] | None = None,
) -> None:
    """Cut parents ``first .. last - 1`` (and only them) by the site's breakpoint lines, or
    into the cells of its max units; ``slopes``, ``offsets`` are theirs, ``(n, U * k, 2)``.
    Their pieces are appended from row ``regions.size`` on (no other group's pieces follow).
    ``after_round`` is called after each round of cuts (one group can be the whole slice:
    a region limit and progress must hold within it)."""
    added = regions.size
    vertices, counts = regions.vertices[first:last], regions.counts[first:last]
    # A piece lies inside its region at the site's start, and the tolerance does not
    # depend on the polygon (bound): a line that misses a region misses all its pieces.
    if site.kind == "max":
        plan = [_max_crossings(vertices, counts, slopes, offsets, site, bound)]
        valid = site.windows >= 0
    else:
        plan = _crossings(vertices, counts, slopes, offsets, site.breaks, bound)
    n = last - first
    for lines, crosses in plan:
        # Round j cuts the pieces of every parent by the j-th unit (in unit order) that
        # crosses that parent: the same cuts, in the same order per parent, as one pass
        # per unit, but the passes number the most crossings of one parent, not units.
        parent, unit = torch.nonzero(crosses, as_tuple=True)
        per_parent = crosses.sum(dim=1)
        rank = torch.arange(len(parent)) - (per_parent.cumsum(0) - per_parent)[parent]
        for j in range(int(per_parent.max()) if len(parent) else 0):
            chosen = rank == j
            which = torch.full((n,), -1, dtype=torch.long)
            which[parent[chosen]] = unit[chosen]
            # the group's pieces: its parents' rows and the rows added since it began
            rows = torch.cat([torch.arange(first, last), torch.arange(added, regions.size)])
            local = regions.origin[rows] - first
            rows, local = rows[which[local] >= 0], local[which[local] >= 0]
            unit_of = which[local]
            here = lines[local, unit_of]
            if site.kind == "max":
                regions.cut_max(rows, here, valid[unit_of], bound)
            else:
                regions.cut(rows, here, bound)
            if after_round:
                after_round()


def _contested(vertices: Tensor, counts: Tensor, A: Tensor, b: Tensor) -> Tensor:
    """The regions that can hold decision boundary: the top class differs between two of
    their vertices, or is tied (within far more than the snapping tolerance) at one."""
    valid = polygons.vertex_mask(vertices, counts)
    filled = torch.where(valid[..., None], vertices, vertices[:, :1])  # padding: a vertex
    scores = torch.einsum("rvc,roc->rvo", filled, A) + b[:, None]  # (R, V, O)
    if scores.shape[-1] == 1:  # one output: the classes are its sign
        scores = torch.cat([torch.zeros_like(scores), scores], dim=-1)
    size = torch.where(valid[..., None], vertices.abs(), 0).amax(dim=1)  # (R, 2)
    # The largest scale polygons.snapped can give a difference of two scores on the region.
    scale = ((A.abs() * size[:, None]).sum(-1) + b.abs()).amax(dim=1)
    top2 = scores.topk(2, dim=-1)
    tied = top2.values[..., 0] - top2.values[..., 1] <= 1e6 * polygons.EPS * 2 * scale[:, None]
    top = top2.indices[..., 0]
    differs = (top != top[:, :1]).any(dim=1)
    return torch.nonzero(differs | tied.any(dim=1)).flatten()


def _boundary(
    vertices: Tensor,
    counts: Tensor,
    A: Tensor,
    b: Tensor,
    progress: Callable[[str], None] | None = None,
    every: bool = False,
) -> tuple[Tensor, Tensor]:
    """Segments where the top class changes, and their regions.

    A region whose vertices all have one clear top class has that class on top everywhere
    (the score differences are affine, so convex combinations keep their sign): it holds
    no segment, and only the others are clipped (``every``: all of them, as a check)."""
    R, outputs = b.shape
    keep = torch.arange(R) if every else _contested(vertices, counts, A, b)
    lines = torch.cat([A[keep], b[keep, :, None]], dim=-1)  # (n, O, 3)
    if outputs == 1:
        pairs = [(None, 0)]
    elif outputs == 2:
        pairs = [(0, 1)]
    else:
        pairs = [(i, j) for i in range(outputs) for j in range(i + 1, outputs)]
    segments, owners = [], []
    rows = torch.arange(len(keep))
    for number, (i, j) in enumerate(pairs):
        if progress:
            progress(
                f"decision boundary: class pair {number + 1}/{len(pairs)} "
                f"on {len(keep):,} of {R:,} regions"
            )
        f = lines[:, j] - (lines[:, i] if i is not None else 0)
        verts, n, owner = vertices[keep], counts[keep], rows
        # For three or more classes, keep only the cell where i (hence j, on the line) is on top.
        for m in range(outputs) if outputs > 2 else ():
            if m in (i, j):
                continue
            g = lines[owner, i] - lines[owner, m]
            _, _, v = polygons.split(verts, n, g)
            alive = v.amax(dim=1) > 0
            verts, n = polygons.clip(verts[alive], n[alive], v[alive], 1.0)
            owner = owner[alive]
        if len(owner) == 0:
            continue
        g = f[owner]
        _, _, v = polygons.split(verts, n, g)
        ends, crossed = polygons.segment(verts, n, g, v)
        segments.append(ends[crossed])
        owners.append(keep[owner[crossed]])
    if not segments:
        return torch.zeros(0, 2, 2, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
    return torch.cat(segments), torch.cat(owners)


def partition(
    model: nn.Module,
    domain: Tensor | Plane,
    chunk: int | None = None,
    progress: Callable[[str], None] | None = None,
    max_regions: int | None = 1_000_000,
) -> Partition:
    """The exact linear regions of ``model`` on a 2-D slice, and its decision boundary.

    Args:
        model: a torch model built from linear maps (Linear, Conv, eval-mode BatchNorm,
            average pooling, reshapes, additions, concatenations) and relu, leaky_relu,
            prelu, relu6, hardtanh, abs or clamp, as modules or functional calls. It is run
            on a float64 copy; the model itself is not changed.
        domain: polygon vertices ``(n, 2)`` (convex; a rectangle is four vertices) when the
            model's input is 2-D, or a :class:`Plane` in any input space.
        chunk: regions per forward pass (default: about 4M numbers in the widest layer).
        progress: called with a line of text after each round of cuts and during the
            decision boundary (often: throttle it).
        max_regions: stop with a :class:`RegionLimitError` (a
            :class:`~relulab.errors.UserError`) as soon as the slice has more regions than
            this (each costs about a kilobyte per 100 units and input numbers), checked
            after every round of cuts; None: no limit.

    Returns:
        A :class:`Partition`.
    """
    if max_regions is not None and max_regions < 1:
        raise UserError(f"partition: max_regions must be >= 1 (or None), got {max_regions}")
    model = as_float64(model)
    if isinstance(domain, Plane):
        plane = domain
        polygon = plane.polygon()
        basis = plane.inputs(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    else:
        plane = None
        polygon = torch.as_tensor(domain, dtype=torch.float64)
        basis = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    if polygon.dim() != 2 or polygon.shape[1] != 2 or len(polygon) < 3:
        raise UserError(
            "partition: domain must be (n >= 3, 2) polygon vertices, "
            f"got shape {tuple(polygon.shape)}"
        )
    polygon = polygons.counter_clockwise(polygon)
    vertices, counts = polygons.pack([polygon])
    if float(polygons.area(vertices, counts)[0]) <= 0:
        raise UserError("partition: the domain polygon has zero area")
    bound = polygon.abs().amax(dim=0)  # for the tolerance's scale (polygons.snapped)

    try:
        _, sites = run(model, basis)
    except RuntimeError as error:
        raise UserError(
            f"partition: the model does not accept inputs of shape "
            f"{tuple(basis.shape[1:])}: {error}"
        ) from error
    if chunk is None:  # about 4M numbers in the widest layer (input or site) per pass
        widest = max([basis[0].numel()] + [site.units * site.window for site in sites])
        chunk = max(1, 2**22 // (3 * widest))
    patterns: list[Tensor] = []
    regions = _Regions(vertices, counts)
    segments = _Segments(model, basis, sites, chunk)
    for k, site in enumerate(sites):
        regions.restart()
        parents = regions.size
        # Parents are processed in groups, so that memory holds one group's affine maps
        # (3 x units numbers per region) rather than every region's.
        group = max(1, 2**23 // (3 * site.units * site.window))
        state = torch.zeros(0, site.units, dtype=torch.int8)
        where = f"site {k + 1}/{len(sites)} ({site.name})"

        def check(where: str = where) -> None:
            if progress:
                progress(f"{where}: {regions.size:,} regions")
            if max_regions is not None and regions.size > max_regions:
                raise RegionLimitError(max_regions, regions.size, where)

        for first in range(0, parents, group):
            last = min(first + group, parents)
            added = regions.size
            slopes, offsets = _affine(segments.values(patterns, k, slice(first, last)))
            _cut_group(regions, first, last, slopes, offsets, site, bound, check)
            # the group's pieces: its parents' rows (now the first pieces) and those added
            rows = torch.cat([torch.arange(first, last), torch.arange(added, regions.size)])
            vertices, counts = regions.vertices[rows], regions.counts[rows]
            centre = polygons.centroid(vertices, counts)
            tilted = slopes[regions.origin[rows] - first]
            pre = tilted[..., 0] * centre[:, None, 0] + tilted[..., 1] * centre[:, None, 1]
            pre = pre + offsets[regions.origin[rows] - first]
            found = states(pre, site)
            if len(state) < regions.size:
                grown = torch.zeros(regions.size, site.units, dtype=found.dtype)
                grown[: len(state)] = state
                state = grown
            state[rows] = found
            check()
        regions.vertices = regions.vertices[: regions.size]
        regions.counts = regions.counts[: regions.size]
        origin = regions.origin[: regions.size]
        patterns = [p[origin] for p in patterns] + [state[: regions.size]]
        segments.keep(origin)
    regions.restart()
    counts = regions.counts
    vertices = torch.where(
        polygons.vertex_mask(regions.vertices, counts)[..., None], regions.vertices, 0.0
    )
    slopes, offsets = _affine(segments.values(patterns, None))
    boundary, owners = _boundary(vertices, counts, slopes, offsets, progress)
    return Partition(
        vertices, counts, patterns, sites, slopes, offsets, boundary, owners, polygon, plane
    )
