"""Geometry of piecewise-linear networks: exact linear regions on 2-D and 1-D slices.

:func:`partition` gives the convex polygons on which a model is affine, over a polygon of a
2-D input or a :class:`Plane` through input space, with the decision boundary;
:func:`breakpoints` gives the pieces along a segment and :func:`region_density` the number
of regions per unit length along random lines through data.
"""

from relulab.geometry.affine import Site
from relulab.geometry.lines import Pieces, RegionDensity, breakpoints, region_density
from relulab.geometry.partition import Partition, Plane, Region, partition

__all__ = [
    "Partition",
    "Pieces",
    "Plane",
    "Region",
    "RegionDensity",
    "Site",
    "breakpoints",
    "partition",
    "region_density",
]
