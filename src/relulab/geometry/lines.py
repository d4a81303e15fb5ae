"""Exact linear pieces of a piecewise-linear network along a segment, and region density.

The segment from ``a`` to ``b`` is parametrised by ``u`` in ``[0, 1]`` (input
``a + u * (b - a)``). As in :mod:`relulab.geometry.partition`, sites are processed in
execution order: on each interval with a fixed pattern the next site's pre-activation is
affine in ``u`` (read off from the model run on ``a`` and ``b`` with the pattern fixed), and
each interval is split where a unit's pre-activation crosses a breakpoint. Tolerance: the
value ``f`` at an end is snapped to zero when within ``1e-12 * (|slope * u| + |offset|)``,
and an interval is split only where ``f`` is beyond that on both sides, so a unit that only
touches a breakpoint at an end makes no zero-length piece.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from relulab.errors import UserError
from relulab.geometry.affine import Site, as_float64, run, states
from relulab.geometry.polygons import EPS


@dataclass
class Pieces:
    """The linear pieces along a segment.

    Attributes:
        ends: ``(P, 2)`` each piece's ``[u_start, u_end]``, in order along the segment.
        patterns: per site, ``(P, units)`` int8 states.
        slope, offset: the output on piece ``i`` is ``offset[i] + u * slope[i]``, ``(P, out)``.
        a, b: the segment's ends (inputs); sites: the activation sites.
    """

    ends: Tensor
    patterns: list[Tensor]
    slope: Tensor
    offset: Tensor
    a: Tensor
    b: Tensor
    sites: list[Site]

    @property
    def count(self) -> int:
        return int(self.ends.shape[0])

    @property
    def breakpoints(self) -> Tensor:
        """The interior breakpoints, as ``u`` in (0, 1), sorted."""
        return self.ends[1:, 0]

    @property
    def points(self) -> Tensor:
        """The interior breakpoints as inputs, ``(P - 1, *input_shape)``."""
        u = self.breakpoints.reshape(-1, *[1] * self.a.dim())
        return self.a + u * (self.b - self.a)


def _values(model: nn.Module, ends: Tensor, patterns: list[Tensor], stop, sites) -> Tensor:
    """Values at ``u = 0`` and ``u = 1`` for every interval's pattern, ``(P, 2, U)``."""
    P = patterns[0].shape[0] if patterns else 1
    inputs = ends.repeat(P, *[1] * (ends.dim() - 1))
    fixed = [p.repeat_interleave(2, dim=0) for p in patterns]
    values, _ = run(model, inputs, fixed, stop, sites)
    return values.reshape(P, 2, -1)


def _split(lo: Tensor, hi: Tensor, origin: Tensor, slope: Tensor, offset: Tensor) -> tuple:
    """Split intervals where ``offset + u * slope`` (per origin) crosses zero."""
    s, c = slope[origin], offset[origin]
    f_lo, f_hi = c + s * lo, c + s * hi
    eps = EPS * (s.abs() * torch.maximum(lo.abs(), hi.abs()) + c.abs())
    cut = ((f_lo > eps) & (f_hi < -eps)) | ((f_lo < -eps) & (f_hi > eps))
    if not bool(cut.any()):
        return lo, hi, origin
    middle = lo[cut] + f_lo[cut] / (f_lo[cut] - f_hi[cut]) * (hi[cut] - lo[cut])
    lo = torch.cat([lo[~cut], lo[cut], middle])
    hi = torch.cat([hi[~cut], middle, hi[cut]])
    return lo, hi, torch.cat([origin[~cut], origin[cut], origin[cut]])


def _split_max(lo, hi, origin, slope, offset, site: Site) -> tuple:
    """Split intervals wherever two candidates of one max unit cross (a superset of where
    the largest changes: :func:`_merge` joins the pieces that the largest does not tell
    apart)."""
    k = site.window
    for unit in range(site.units):
        for i in range(k):
            for j in range(i + 1, k):
                if site.windows[unit, i] < 0 or site.windows[unit, j] < 0:
                    continue
                a, b = unit * k + i, unit * k + j
                lo, hi, origin = _split(
                    lo, hi, origin, slope[:, a] - slope[:, b], offset[:, a] - offset[:, b]
                )
    return lo, hi, origin


def _merge(lo: Tensor, hi: Tensor, origin: Tensor, state: Tensor) -> tuple:
    """Join the pieces of one interval that share a state. The set where a unit's largest
    candidate is a given one is convex, so such pieces are adjacent and their union is an
    interval."""
    key = torch.cat([origin[:, None], state.long()], dim=1)
    groups, group = torch.unique(key, dim=0, return_inverse=True)
    count = len(groups)
    low = torch.full((count,), torch.inf, dtype=lo.dtype).scatter_reduce(0, group, lo, "amin")
    high = torch.full((count,), -torch.inf, dtype=hi.dtype).scatter_reduce(0, group, hi, "amax")
    return low, high, groups[:, 0], groups[:, 1:].to(state.dtype)


def breakpoints(model: nn.Module, a: Tensor, b: Tensor) -> Pieces:
    """The exact linear pieces of ``model`` along the segment from input ``a`` to ``b``.

    Args:
        model: as for :func:`relulab.geometry.partition` (run on a float64 copy).
        a, b: two inputs of the model's input shape (no batch dimension).

    Returns:
        :class:`Pieces`; ``.breakpoints`` are the interior breakpoints as ``u`` in (0, 1).
    """
    model = as_float64(model)
    a, b = (torch.as_tensor(x, dtype=torch.float64) for x in (a, b))
    if a.shape != b.shape:
        raise UserError(
            f"breakpoints: a and b differ in shape: {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if torch.equal(a, b):
        raise UserError("breakpoints: a and b are the same point")
    ends = torch.stack([a, b])
    _, sites = run(model, ends)
    lo = torch.zeros(1, dtype=torch.float64)
    hi = torch.ones(1, dtype=torch.float64)
    patterns: list[Tensor] = []
    for k, site in enumerate(sites):
        values = _values(model, ends, patterns, k, sites)
        offset, slope = values[:, 0], values[:, 1] - values[:, 0]  # (P0, U)
        origin = torch.arange(len(values))
        if site.kind == "max":
            lo, hi, origin = _split_max(lo, hi, origin, slope, offset, site)
        for unit in range(site.units if site.kind != "max" else 0):
            for level in site.breaks:
                lo, hi, origin = _split(lo, hi, origin, slope[:, unit], offset[:, unit] - level)
        middle = (lo + hi) / 2
        pre = offset[origin] + middle[:, None] * slope[origin]
        state = states(pre, site)
        if site.kind == "max":
            lo, hi, origin, state = _merge(lo, hi, origin, state)
        patterns = [p[origin] for p in patterns] + [state]
    order = torch.argsort(lo)
    lo, hi, patterns = lo[order], hi[order], [p[order] for p in patterns]
    values = _values(model, ends, patterns, None, sites)
    return Pieces(
        torch.stack([lo, hi], dim=1),
        patterns,
        values[:, 1] - values[:, 0],
        values[:, 0],
        a,
        b,
        sites,
    )


@dataclass
class RegionDensity:
    """Linear regions along random lines through data.

    Attributes:
        counts: pieces on each segment, ``(lines,)``.
        lengths: each segment's length in input space, ``(lines,)``.
        density: the mean over segments of pieces per unit length.
    """

    counts: Tensor
    lengths: Tensor
    density: float


def region_density(
    model: nn.Module, data: Tensor, lines: int = 100, seed: int = 0
) -> RegionDensity:
    """The number of linear regions per unit length along ``lines`` random segments, each
    joining two distinct random examples of ``data`` ``(N, *input_shape)`` (the usual
    "regions along a line" statistic, exact here rather than sampled)."""
    data = torch.as_tensor(data, dtype=torch.float64)
    if len(data) < 2:
        raise UserError(f"region_density: need at least 2 examples, got {len(data)}")
    if lines < 1:
        raise UserError(f"region_density: lines must be >= 1, got {lines}")
    generator = torch.Generator().manual_seed(seed)
    counts, lengths = [], []
    for _ in range(lines):
        i, j = torch.randperm(len(data), generator=generator)[:2].tolist()
        if torch.equal(data[i], data[j]):
            continue
        counts.append(breakpoints(model, data[i], data[j]).count)
        lengths.append(float((data[j] - data[i]).norm()))
    counts_t = torch.tensor(counts)
    lengths_t = torch.tensor(lengths, dtype=torch.float64)
    return RegionDensity(counts_t, lengths_t, float((counts_t / lengths_t).mean()))
