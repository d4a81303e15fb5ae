"""One colour per activation, the same in every figure and every run.

Colours used to follow the order of ``--acts``, so GELU was green in one run and orange in the
next. Now an activation's colour depends on its canonical spec alone: the common activations
have a fixed colour (:data:`FIXED`), any other spec a colour picked by a hash of its canonical
spec (``zlib.crc32``: Python's ``hash`` of a string changes from one process to the next).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from relulab.errors import UserError
from relulab.registry import format_spec, parse_spec

# The default bench's eight activations first, on the ten most distinct colours (matplotlib's
# tab10, with ReLU, the usual baseline, black instead of tab10's grey: grey is for seeds), then
# darker and lighter colours that stay apart from those. Every colour appears once, so no two
# common activations ever share one.
FIXED: dict[str, str] = {
    "relu": "#222222",
    "gelu": "#1f77b4",
    "silu": "#ff7f0e",
    "mish": "#2ca02c",
    "golu": "#d62728",
    "xsilu": "#9467bd",
    "leaky_relu": "#8c564b",
    "smelu": "#e377c2",
    "elu": "#17becf",
    "selu": "#bcbd22",
    "xgelu": "#393b79",
    "softplus": "#e7ba52",
    "hard_swish": "#637939",
    "swish": "#c49c94",
    "prelu": "#a55194",
    "gelu_tanh": "#6baed6",
    "celu": "#74c476",
    "relu6": "#9c9ede",
    "squared_relu": "#fdae6b",
}

# What any other spec draws from; a spec whose hash lands on a colour already taken in the
# figure moves on to the next free one.
PALETTE: tuple[str, ...] = tuple(FIXED.values())


def canonical_spec(spec: str) -> str:
    """The spec as the registry writes it, or the text itself, stripped, when it is no
    activation the registry knows: ``'Leaky-ReLU(0.2)'`` → ``'leaky_relu(negative_slope=0.2)'``."""
    try:
        return format_spec(*parse_spec(spec))
    except UserError:
        return spec.strip()


def activation_colours(specs: Iterable[str]) -> dict[str, str]:
    """The colour of each spec drawn in one figure, as ``{spec: '#rrggbb'}``.

    A spec in :data:`FIXED` gets its colour there. Any other gets the :data:`PALETTE` colour
    at ``crc32(canonical spec) mod len(PALETTE)``, or the next one not taken in this figure.
    Those specs are placed in sorted order, so the result depends on which specs the figure
    shows, never on the order they are given in. Specs with the same canonical spec share a
    colour; beyond ``len(PALETTE)`` distinct specs colours repeat.
    """
    specs = list(specs)
    keys = {spec: canonical_spec(spec) for spec in specs}
    chosen = {key: FIXED[key] for key in keys.values() if key in FIXED}
    for key in sorted(set(keys.values()) - set(chosen)):
        start = zlib.crc32(key.encode("utf-8")) % len(PALETTE)
        taken = set(chosen.values())
        in_turn = PALETTE[start:] + PALETTE[:start]
        chosen[key] = next((c for c in in_turn if c not in taken), PALETTE[start])
    return {spec: chosen[keys[spec]] for spec in specs}
