"""Relufication (Mirzadeh et al. 2023, "ReLU Strikes Back", arXiv:2310.04564).

Stage 1 swaps each feed-forward block's activation for ReLU, or for the shifted ReLU
max(0, x − b) with b > 0; in a gated FFN (Llama's SwiGLU) the gate's activation becomes ReLU,
which makes it a ReGLU. Stage 2 also puts a ReLU after the normalisation layers that feed
attention's QKV projection and the FFN, so that their inputs are sparse too; the final norm
before the LM head is left alone. Both work in place, on relulab's GPT and on Hugging Face
``transformers`` GPT-2 and Llama-style models::

    changed = relufy(model, stage=2, shift=0.0)  # qualified names of the changed modules
    relufy_plan(model, stage=2)  # [] now: relufying twice is relufying once

Blocks are found by what they hold (an FFN is a module with an up-projection, an activation
and a down-projection under the attribute names of one of :data:`FFN_LAYOUTS`), not by the
names of their paths, so a model with any number of layers, or wrapped in another module, is
found the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from relulab.errors import UserError
from relulab.registry import get_activation
from relulab.sites import identify_module


@dataclass(frozen=True)
class FFNLayout:
    """Attribute names of a feed-forward block: ``down(act(up(x)))``, or with a gate
    ``down(act(gate(x)) * up(x))``."""

    up: str
    gate: str | None
    act: str
    down: str


@dataclass(frozen=True)
class BlockLayout:
    """Attribute names of a pre-norm transformer block: ``norm_attn`` feeds the attention
    module ``attn``, whose projection ``qkv`` (or q, whose input k and v share) reads that
    input, and ``norm_ffn`` feeds the FFN ``ffn``."""

    norm_attn: str
    attn: str
    qkv: str
    norm_ffn: str
    ffn: str


FFN_LAYOUTS: tuple[FFNLayout, ...] = (
    FFNLayout("up", "gate", "act", "down"),  # relulab's GPT (gate is None unless gated)
    FFNLayout("c_fc", None, "act", "c_proj"),  # transformers' GPT2MLP
    FFNLayout("up_proj", "gate_proj", "act_fn", "down_proj"),  # LlamaMLP (Mistral, Qwen2)
)
BLOCK_LAYOUTS: tuple[BlockLayout, ...] = (
    BlockLayout("norm_attn", "attn", "qkv", "norm_ffn", "ffn"),  # relulab's GPT Block
    BlockLayout("ln_1", "attn", "c_attn", "ln_2", "mlp"),  # GPT2Block
    BlockLayout("input_layernorm", "self_attn", "q_proj", "post_attention_layernorm", "mlp"),
)


@dataclass(frozen=True)
class FFNSite:
    """A feed-forward block found in a model; ``path`` is its qualified name."""

    path: str
    module: nn.Module
    layout: FFNLayout

    @property
    def up(self) -> nn.Module:
        return getattr(self.module, self.layout.up)

    @property
    def gate(self) -> nn.Module | None:
        return getattr(self.module, self.layout.gate, None) if self.layout.gate else None

    @property
    def act(self) -> nn.Module:
        return getattr(self.module, self.layout.act)

    @property
    def down(self) -> nn.Module:
        return getattr(self.module, self.layout.down)

    @property
    def act_path(self) -> str:
        return _join(self.path, self.layout.act)


@dataclass(frozen=True)
class BlockSite:
    """A transformer block found in a model, with the FFN it holds."""

    path: str
    module: nn.Module
    layout: BlockLayout
    ffn: FFNSite

    @property
    def qkv(self) -> nn.Module:
        """The projection that reads the attention's input."""
        return getattr(getattr(self.module, self.layout.attn), self.layout.qkv)

    @property
    def norm_paths(self) -> tuple[str, str]:
        return _join(self.path, self.layout.norm_attn), _join(self.path, self.layout.norm_ffn)


@dataclass(frozen=True)
class RelufyChange:
    """One module that :func:`relufy` replaces: where, what is there, and what comes in."""

    path: str
    old: str
    new: str
    build: Callable[[nn.Module], nn.Module] = field(repr=False, compare=False)

    def __str__(self) -> str:
        return f"{self.path}: {self.old} -> {self.new}"


def _join(path: str, attribute: str) -> str:
    return f"{path}.{attribute}" if path else attribute


def _has_weight(module: object) -> bool:
    return isinstance(module, nn.Module) and isinstance(
        getattr(module, "weight", None), nn.Parameter
    )


def _ffn_layout(module: nn.Module) -> FFNLayout | None:
    for layout in FFN_LAYOUTS:
        gate = getattr(module, layout.gate, None) if layout.gate else None
        if (
            _has_weight(getattr(module, layout.up, None))
            and _has_weight(getattr(module, layout.down, None))
            and callable(getattr(module, layout.act, None))
            and (gate is None or _has_weight(gate))
        ):
            return layout
    return None


def _looked_for(layouts: tuple, fields: tuple[str, ...]) -> str:
    return "; ".join("/".join(str(getattr(lay, f)) for f in fields) for lay in layouts)


def find_ffns(model: nn.Module) -> list[FFNSite]:
    """Every feed-forward block of ``model``, in module order.

    Raises:
        UserError: none found (an architecture this module does not know).
    """
    found = []
    for path, module in model.named_modules():
        layout = _ffn_layout(module)
        if layout is not None:
            found.append(FFNSite(path, module, layout))
    if not found:
        looked = _looked_for(FFN_LAYOUTS, ("up", "act", "down"))
        raise UserError(
            f"found no feed-forward block in {type(model).__name__} "
            f"(looked for modules with the attributes {looked})"
        )
    return found


def find_blocks(model: nn.Module, ffns: list[FFNSite] | None = None) -> list[BlockSite]:
    """Every pre-norm transformer block of ``model`` that holds one of its FFNs, in order.

    Raises:
        UserError: no FFN, or no block, found.
    """
    by_module = {id(site.module): site for site in ffns or find_ffns(model)}
    found = []
    for path, module in model.named_modules():
        for layout in BLOCK_LAYOUTS:
            ffn = by_module.get(id(getattr(module, layout.ffn, None)))
            attn = getattr(module, layout.attn, None)
            if (
                ffn is not None
                and isinstance(getattr(module, layout.norm_attn, None), nn.Module)
                and isinstance(getattr(module, layout.norm_ffn, None), nn.Module)
                and isinstance(getattr(attn, layout.qkv, None), nn.Module)
            ):
                found.append(BlockSite(path, module, layout, ffn))
                break
    if not found:
        looked = _looked_for(BLOCK_LAYOUTS, ("norm_attn", "attn", "norm_ffn", "ffn"))
        raise UserError(
            f"found no transformer block with its norms in {type(model).__name__} "
            f"(looked for modules with the attributes {looked})"
        )
    return found


def _is_relu(module: object, shift: float = 0.0) -> bool:
    """``module`` computes max(0, x − shift) (relulab's, torch's or timm's module)."""
    found = identify_module(module) if isinstance(module, nn.Module) else None
    if found is None:
        return False
    name, arguments = found
    if name == "relu":
        return shift == 0.0
    return name == "shifted_relu" and float(arguments.get("shift", 1.0)) == shift


def _relu_spec(shift: float) -> str:
    return "relu" if shift == 0.0 else f"shifted_relu(shift={shift!r})"


def _describe(module: object) -> str:
    found = identify_module(module) if isinstance(module, nn.Module) else None
    if found is not None:
        return found[0]
    return type(module).__name__ if isinstance(module, nn.Module) else repr(module)


def _check(stage: int, shift: float) -> float:
    if isinstance(stage, bool) or stage not in (1, 2):
        raise UserError(f"relufication stage must be 1 or 2, got {stage!r}")
    try:
        shift = float(shift)
    except (TypeError, ValueError):
        raise UserError(f"shift must be a number, got {shift!r}") from None
    if not math.isfinite(shift) or shift < 0:
        raise UserError(f"shift must be finite and >= 0 (ReLU(x - b), b > 0), got {shift!r}")
    return shift


def relufy_plan(model: nn.Module, stage: int = 1, shift: float = 0.0) -> list[RelufyChange]:
    """What :func:`relufy` would change, without changing anything.

    A module that already computes what relufication puts there (an FFN activation that is
    already ``max(0, x − shift)``, a norm already followed by a ReLU) is not listed, so the
    plan of a relufied model is empty.

    Raises:
        UserError: a bad stage or shift, or a model in which no FFN (no transformer block
            with its norms, for stage 2) is found.
    """
    shift = _check(stage, shift)
    ffns = find_ffns(model)
    changes = []
    spec = _relu_spec(shift)
    for site in ffns:
        if not _is_relu(site.act, shift):
            changes.append(
                RelufyChange(
                    site.act_path, _describe(site.act), spec, lambda _: get_activation(spec)
                )
            )
    if stage == 2:
        for block in find_blocks(model, ffns):
            for path in block.norm_paths:
                norm = model.get_submodule(path)
                if isinstance(norm, nn.Sequential) and len(norm) == 2 and _is_relu(norm[1]):
                    continue
                changes.append(
                    RelufyChange(
                        path,
                        _describe(norm),
                        f"{_describe(norm)} + relu",
                        lambda old: nn.Sequential(old, get_activation("relu")),
                    )
                )
    return changes


def relufy(model: nn.Module, stage: int = 1, shift: float = 0.0) -> list[str]:
    """Relufy ``model`` in place and return the qualified names of the modules replaced.

    Args:
        model: relulab's GPT, a ``transformers`` GPT-2 or Llama-style model, or any model
            whose blocks follow one of :data:`FFN_LAYOUTS` and :data:`BLOCK_LAYOUTS`.
        stage: 1 replaces each FFN activation (the gate's, in a gated FFN) by ReLU; 2 does
            that and also replaces each block's two norms by ``nn.Sequential(norm, ReLU)``,
            so that the inputs of QKV and of the FFN's up-projection are >= 0. The final norm
            is not touched.
        shift: b > 0 uses relulab's ``shifted_relu``, max(0, x − b), as the FFN activation
            (the paper's ReLU(x − b)); the ReLUs after the norms are never shifted.

    Relufying twice is the same as relufying once: modules that already compute the target
    are kept, and the second call returns ``[]``. Stage 2 adds an ``.0`` to the names of the
    norms' parameters in ``state_dict``, so relufy a model before loading weights saved
    from a relufied one. Hugging Face configs are not changed (``save_pretrained`` keeps the
    old activation name).

    Raises:
        UserError: a bad stage or shift, or an architecture in which no FFN (no block with
            its norms, for stage 2) is found.

    Example::

        >>> from relulab.transformers import GPT, GPTConfig
        >>> model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, activation="gelu"))
        >>> relufy(model, stage=2)  # doctest: +NORMALIZE_WHITESPACE
        ['blocks.0.ffn.act', 'blocks.1.ffn.act', 'blocks.0.norm_attn', 'blocks.0.norm_ffn',
         'blocks.1.norm_attn', 'blocks.1.norm_ffn']
        >>> model.blocks[0].ffn.act, relufy(model, stage=2)
        (ReLU(), [])
    """
    changes = relufy_plan(model, stage, shift)
    for change in changes:
        parent_path, _, attribute = change.path.rpartition(".")
        parent = model.get_submodule(parent_path)
        setattr(parent, attribute, change.build(getattr(parent, attribute)))
    return [change.path for change in changes]
