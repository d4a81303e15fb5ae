"""Geometry of piecewise-linear networks: exact linear regions on 2-D and 1-D slices.

:func:`partition` gives the convex polygons on which a model is affine, over a polygon of a
2-D input or a :class:`Plane` through input space, with the decision boundary;
:func:`breakpoints` gives the pieces along a segment and :func:`region_density` the number
of regions per unit length along random lines through data; :func:`benchmark` times the
exact partition against a dense grid probe of activation patterns.
"""

from relulab.geometry.affine import Site
from relulab.geometry.benchmark import benchmark
from relulab.geometry.codes import Codes, CodeStatistics, activation_codes, code_statistics
from relulab.geometry.dead_units import DeadUnitHistory, dead_unit_history
from relulab.geometry.lines import Pieces, RegionDensity, breakpoints, region_density
from relulab.geometry.overconfidence import ConfidenceCurves, confidence_along_rays
from relulab.geometry.partition import Partition, Plane, Region, partition

__all__ = [
    "CodeStatistics",
    "Codes",
    "ConfidenceCurves",
    "DeadUnitHistory",
    "Partition",
    "Pieces",
    "Plane",
    "Region",
    "RegionDensity",
    "Site",
    "activation_codes",
    "benchmark",
    "breakpoints",
    "code_statistics",
    "confidence_along_rays",
    "dead_unit_history",
    "partition",
    "region_density",
]
