"""One colour per activation, the same in every figure and every run.

Colours used to follow the order of ``--acts``, so GELU was green in one run and orange in the
next. Now an activation's colour depends on its canonical spec alone: the common activations
have a fixed colour (:data:`FIXED`), any other spec a colour of a separate palette
(:data:`PALETTE`) picked by a hash of its canonical spec (``zlib.crc32``: Python's ``hash`` of a
string changes from one process to the next). No palette colour is a fixed one, so a colour
means the same activation in every figure: an unlisted spec never borrows a listed one's.

A listed activation with non-default arguments (``leaky_relu(0.2)``) is another spec and takes
a palette colour, not a shade of its activation's: two variants drawn in one figure must be
told apart at a glance, and shades of one colour are not. Arguments equal to the registry's
defaults are dropped first, so ``leaky_relu(0.01)`` *is* ``leaky_relu`` and has its colour.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from relulab.errors import UserError
from relulab.registry import canonical_spec as registry_canonical_spec

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
# figure moves on to the next free one. None is a FIXED colour or a grey (seeds, baselines):
# hues the table leaves free, each at least 25 apart (CIELAB ΔE*ab) from every fixed colour,
# grey and other palette colour; picked by eye among the farthest of an sRGB grid, since
# distance alone also picked ochre and khaki, which read as leaky_relu's brown and selu's olive.
PALETTE: tuple[str, ...] = (
    "#c3005a",  # crimson
    "#1e87ff",  # azure
    "#008769",  # teal
    "#f07878",  # salmon
    "#690fb4",  # violet
    "#00d200",  # lime
    "#b44b00",  # rust
)


def canonical_spec(spec: str) -> str:
    """The registry's canonical spec (:func:`relulab.registry.canonical_spec`: arguments
    equal to the defaults left out), or the text itself, stripped, when it is no activation
    the registry knows: ``'leaky_relu(0.01)'`` → ``'leaky_relu'``."""
    try:
        return registry_canonical_spec(spec)
    except UserError:
        return spec.strip()


def activation_colours(specs: Iterable[str]) -> dict[str, str]:
    """The colour of each spec drawn in one figure, as ``{spec: '#rrggbb'}``.

    A spec whose canonical spec (:func:`canonical_spec`) is in :data:`FIXED` gets its colour
    there. Any other gets the :data:`PALETTE` colour at ``crc32(canonical spec) mod
    len(PALETTE)``, or the next one not taken in this figure. Those specs are placed in sorted
    order, so the result depends on which specs the figure shows, never on the order they are
    given in. Specs with the same canonical spec share a colour; beyond ``len(PALETTE)``
    unlisted specs in one figure, palette colours repeat (never a fixed one).
    """
    specs = list(specs)
    keys = {spec: canonical_spec(spec) for spec in specs}
    chosen = {key: FIXED[key] for key in keys.values() if key in FIXED}
    for key in sorted(set(keys.values()) - set(chosen)):
        start = zlib.crc32(key.encode("utf-8")) % len(PALETTE)
        taken = set(chosen.values())  # palette colours only: none is a FIXED one
        in_turn = PALETTE[start:] + PALETTE[:start]
        chosen[key] = next((c for c in in_turn if c not in taken), PALETTE[start])
    return {spec: chosen[keys[spec]] for spec in specs}
