"""A small GPT (decoder-only transformer, as nanoGPT) whose parts are choices.

The FFN activation is any relulab activation spec (``"relu"``, ``"squared_relu"``, ``"gelu"``,
``"golu"``, ``"leaky_relu(negative_slope=0.1)"``, ...) or a gated kind (``"swiglu"``,
``"geglu"``, ``"reglu"``); the normalisation is LayerNorm, RMSNorm or none; the attention is
looked up by name in :data:`ATTENTIONS` (``"softmax"``, or ``"rela"``: ReLU attention with a
gated RMSNorm, whose parameters come from :data:`ATTENTION_NORMS`).
Decoding keeps a :class:`KVCache` per block, so that each new token costs one position::

    model = GPT(GPTConfig(vocab_size=65, activation="relu"))
    logits, loss = model(idx, targets)  # idx, targets: (B, T) token ids
    text_ids = model.generate(prompt, max_new_tokens=200, top_k=10)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from relulab.errors import UserError
from relulab.registry import did_you_mean, list_activations, parse_spec

# Makes one activation module for a layer of the given width (as the bench's factories do).
ActivationFactory = Callable[[int], nn.Module]
# (q, k, v, causal) -> output, each (B, heads, T, head size); with a cache k, v are longer
# than q, whose positions are the last ones of k's.
Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], torch.Tensor]

# A gated FFN multiplies the up projection by this activation of a second projection (Shazeer
# 2020, "GLU Variants Improve Transformer").
GATED = {"swiglu": "silu", "geglu": "gelu", "reglu": "relu"}
NORMS = ("layernorm", "rmsnorm", "none")


def _causal_mask(t_query: int, t_key: int, device: torch.device) -> torch.Tensor:
    # With a cache the queries are the *last* t_query positions of the keys.
    return torch.ones(t_query, t_key, dtype=torch.bool, device=device).tril(t_key - t_query)


def softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True
) -> torch.Tensor:
    """Scaled dot-product attention, torch's kernel. Causal with a cache (``q`` shorter than
    ``k``) needs an explicit mask: ``is_causal`` aligns the mask to the top-left corner, but
    the queries are the *last* positions."""
    t_query, t_key = q.shape[-2], k.shape[-2]
    if not causal or t_query == t_key:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=_causal_mask(t_query, t_key, q.device))


def softmax_weights(q: torch.Tensor, k: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """The weights :func:`softmax_attention` applies to ``v`` (its kernel never forms them):
    ``softmax(q kᵀ/√d)`` over the keys, masked keys at −∞. Shape (B, heads, T_q, T_k)."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if causal:
        scores = scores.masked_fill(~_causal_mask(*scores.shape[-2:], q.device), -math.inf)
    return torch.softmax(scores, dim=-1)


def relu_weights(q: torch.Tensor, k: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """ReLA's attention weights (Zhang, Titov & Sennrich 2021): ``relu(q kᵀ/√d)``, no
    normalisation over the keys, so a row whose scores are all ≤ 0 is all zero (the head is
    switched off for that query). Masked keys get 0, not −∞: relu of either is 0, and 0 keeps
    the product with ``v`` finite."""
    weights = torch.relu((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1]))
    if causal:
        weights = weights.masked_fill(~_causal_mask(*weights.shape[-2:], q.device), 0.0)
    return weights


def relu_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True
) -> torch.Tensor:
    """ReLA's attention: ``relu_weights(q, k) @ v``. The scale of the output is left to
    :class:`GatedRMSNorm`."""
    return relu_weights(q, k, causal) @ v


ATTENTIONS: dict[str, Attention] = {"softmax": softmax_attention, "rela": relu_attention}
# The weights each kind puts on the values, formed explicitly (for analysis: attention entropy,
# zero weights); (q, k, causal) -> (B, heads, T_q, T_k).
ATTENTION_WEIGHTS: dict[str, Callable[..., torch.Tensor]] = {
    "softmax": softmax_weights,
    "rela": relu_weights,
}


class GatedRMSNorm(nn.Module):
    """ReLA's gated RMSNorm: ``s ⊙ o / √(mean(o²) + eps) ⊙ σ(g ⊙ o)`` over the last dimension.

    ReLU attention's output has no fixed scale (its weights do not sum to one); the RMSNorm
    restores one and the element-wise gate lets the layer shut features off. For an all-zero
    ``o`` (every head switched off) the output is 0 and ``eps`` keeps it and its gradient
    finite.

    Args:
        features: size of the last dimension (ReLA normalises the concatenated heads).
        eps: added to the mean square.

    Attributes:
        weight: the scale ``s``, init 1.
        gate: the gate vector ``g``, init 1, so that the gate starts as σ(o): open for
            positive features, half-open at 0, and no draw from the random generator (the GPT's
            other weights stay those of softmax attention for the same seed).
    """

    def __init__(self, features: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(features))
        self.gate = nn.Parameter(torch.ones(features))

    def forward(self, o: torch.Tensor) -> torch.Tensor:
        rms = torch.sqrt(o.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * (o / rms) * torch.sigmoid(self.gate * o)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


# The attention kinds that need a module with parameters after the heads are concatenated
# (the ATTENTIONS functions are parameter-free); made from the model width.
ATTENTION_NORMS: dict[str, Callable[[int], nn.Module]] = {"rela": GatedRMSNorm}


@dataclass
class GPTConfig:
    """The shape and choices of a :class:`GPT`; checked when made (UserError naming the value).

    ``hidden`` None means 4·n_embd, or for a gated FFN int(8/3·n_embd) rounded up to a
    multiple of 8, which keeps its three matrices near the parameters of the plain FFN's two.
    """

    vocab_size: int = 65
    block_size: int = 128  # the longest sequence, the number of learned positions
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    hidden: int | None = None
    activation: str = "gelu"
    norm: str = "layernorm"
    attention: str = "softmax"
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"GPT {name} must be a positive integer, got {value!r}")
        if self.hidden is not None and (not isinstance(self.hidden, int) or self.hidden < 1):
            raise UserError(f"GPT hidden must be a positive integer or None, got {self.hidden!r}")
        if self.n_embd % self.n_head:
            raise UserError(
                f"GPT n_embd {self.n_embd} is not divisible by n_head {self.n_head}; nearest "
                f"valid n_head: {_nearest_divisor(self.n_embd, self.n_head)}"
            )
        _check_choice("norm", self.norm, NORMS)
        _check_choice("attention", self.attention, sorted(ATTENTIONS))
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"GPT dropout must be in [0, 1), got {self.dropout!r}")
        if self.activation not in GATED:
            try:
                parse_spec(self.activation)
            except UserError as error:
                # The registry does not know the gated kinds: suggest one if it is closest.
                hint = did_you_mean(self.activation, [*list_activations(), *GATED])
                if any(repr(kind) in hint for kind in GATED):
                    raise UserError(f"unknown activation {self.activation!r}{hint}") from None
                raise error from None

    @property
    def gated(self) -> bool:
        return self.activation in GATED

    @property
    def ffn_hidden(self) -> int:
        if self.hidden is not None:
            return self.hidden
        # ⌈(8/3·n_embd)/8⌉·8 = ⌈n_embd/3⌉·8, in integers so that 8/3·48 is exactly 128
        return 8 * -(-self.n_embd // 3) if self.gated else 4 * self.n_embd


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        hint = did_you_mean(value, list(choices)) or f" (choices: {', '.join(choices)})"
        raise UserError(f"unknown GPT {what} {value!r}{hint}")


def _nearest_divisor(n: int, near: int) -> int:
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - near), d))


def _activation(spec: str) -> ActivationFactory:
    # Imported here: relulab.bench imports this package (its charlm task).
    from relulab.bench.trainer import activation_for_width

    return lambda width: activation_for_width(spec, width)


def make_norm(kind: str, n_embd: int, bias: bool = True) -> nn.Module:
    """``"layernorm"`` | ``"rmsnorm"`` | ``"none"`` over the last dimension."""
    _check_choice("norm", kind, NORMS)
    if kind == "layernorm":
        return nn.LayerNorm(n_embd, bias=bias)
    return nn.RMSNorm(n_embd) if kind == "rmsnorm" else nn.Identity()


class KVCache:
    """The keys and values of the positions seen so far, for one attention layer."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None  # (B, heads, T, head size)
        self.v: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add this step's keys and values; return all of them."""
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


class FeedForward(nn.Module):
    """plain: ``down(act(up(x)))``; gated: ``down(act(gate(x)) * up(x))``.

    The activation sees the hidden units on dim 1 of an (N, hidden) view, as in an MLP, so
    that per-channel activations (PReLU, SmartMixed) and relulab's dead-unit statistics find
    the units where they expect them.
    """

    def __init__(self, config: GPTConfig, activation: ActivationFactory | None = None):
        super().__init__()
        hidden = config.ffn_hidden
        spec = GATED.get(config.activation, config.activation)
        self.up = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.gate = nn.Linear(config.n_embd, hidden, bias=config.bias) if config.gated else None
        self.act = (activation or _activation(spec))(hidden)
        self.down = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def _act(self, h: torch.Tensor) -> torch.Tensor:
        return self.act(h.reshape(-1, h.shape[-1])).reshape(h.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._act(self.up(x) if self.gate is None else self.gate(x))
        if self.gate is not None:
            h = h * self.up(x)
        return self.dropout(self.down(h))


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; the kernel is ``ATTENTIONS[config.attention]``, and
    for kinds in :data:`ATTENTION_NORMS` (ReLA) its module ``norm`` acts on the concatenated
    heads before the output projection."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.attention = config.attention  # a name, looked up at call time: picklable
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        # Only for kinds in ATTENTION_NORMS, so that softmax's state_dict keys are unchanged.
        make = ATTENTION_NORMS.get(config.attention)
        self.norm = make(config.n_embd) if make is not None else None
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of ``x`` (B, T, C), each (B, heads, T, head size)."""
        B, T, C = x.shape
        return tuple(  # type: ignore[return-value]
            t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            for t in self.qkv(x).split(C, dim=2)
        )

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The attention weights this layer puts on the values for input ``x`` (B, T, C),
        formed explicitly (:data:`ATTENTION_WEIGHTS`): (B, heads, T, T)."""
        q, k, _ = self.heads(x)
        return ATTENTION_WEIGHTS[self.attention](q, k, True)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.heads(x)
        if cache is not None:
            k, v = cache.append(k, v)
        y = ATTENTIONS[self.attention](q, k, v, True).transpose(1, 2).reshape(B, T, C)
        if self.norm is not None:
            y = self.norm(y)
        return self.dropout(self.proj(y))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm_attn(x))``, then ``x + ffn(norm_ffn(x))``."""

    def __init__(self, config: GPTConfig, activation: ActivationFactory | None = None):
        super().__init__()
        self.norm_attn = make_norm(config.norm, config.n_embd, config.bias)
        self.attn = CausalSelfAttention(config)
        self.norm_ffn = make_norm(config.norm, config.n_embd, config.bias)
        self.ffn = FeedForward(config, activation)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm_attn(x), cache)
        return x + self.ffn(self.norm_ffn(x))


class GPT(nn.Module):
    """Token and learned position embeddings, ``n_layer`` :class:`Block` s, a final norm and a
    head whose weight is the token embedding's (tied).

    Args:
        config: the model's shape and choices.
        activation: makes each FFN's activation module from its width; None builds
            ``config.activation`` from the registry. The bench passes its own factory.

    Initialisation is nanoGPT's: normal(0, 0.02) weights, zero biases, and the projections
    that write into the residual stream (``attn.proj``, ``ffn.down``) scaled by
    1/√(2·n_layer). The draws come from a generator seeded by one draw of torch's global
    generator, so an activation that draws its own parameters does not shift them.

    Shape:
        - idx: (B, T) token ids, T ≤ block_size − start.
        - logits: (B, T, vocab_size).
    """

    def __init__(self, config: GPTConfig, activation: ActivationFactory | None = None):
        super().__init__()
        seed = int(torch.randint(2**62, (), dtype=torch.int64))  # before any module draws
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.position_embedding = nn.Embedding(config.block_size, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, activation) for _ in range(config.n_layer))
        self.norm_final = make_norm(config.norm, config.n_embd, config.bias)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.head.weight = self.token_embedding.weight
        self.init_weights(torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """nanoGPT's initialisation (see the class docstring)."""
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)) and module is not self.head:
                residual = name.endswith(("attn.proj", "ffn.down"))
                module.weight.normal_(0.0, residual_std if residual else 0.02, generator=generator)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()

    def new_caches(self, batch: int = 1) -> list[KVCache]:
        """One empty :class:`KVCache` per block (any ``batch``: a cache takes its shape from
        the first step)."""
        return [KVCache() for _ in self.blocks]

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        caches: list[KVCache] | None = None,
        start: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for every position of ``idx`` and, given ``targets`` (B, T), the mean cross
        entropy. With ``caches``, ``idx`` continues the sequence the caches hold, and
        ``start`` must be its length (the position of ``idx``'s first token)."""
        T = idx.shape[1]
        if start + T > self.config.block_size:
            raise UserError(
                f"sequence of {start + T} tokens is longer than the model's block_size "
                f"{self.config.block_size}"
            )
        if caches is not None and len(caches[0]) != start:
            raise ValueError(f"start {start} is not the length of the caches, {len(caches[0])}")
        positions = torch.arange(start, start + T, device=idx.device)
        x = self.dropout(self.token_embedding(idx) + self.position_embedding(positions))
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i])
        logits = self.head(self.norm_final(x))
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``idx`` (B, T) followed by ``max_new_tokens`` sampled tokens.

        Without a cache, each step reads the last ``block_size`` tokens (a sliding window).
        With one, each step feeds only the new token; when the context reaches
        ``block_size``, the caches are rebuilt from its last half, so decoding past
        ``block_size`` sees between half a block and a block of context.
        """
        if temperature <= 0:
            raise UserError(f"temperature must be > 0, got {temperature!r}")
        if top_k is not None and top_k < 1:
            raise UserError(f"top_k must be >= 1 or None, got {top_k!r}")
        block = self.config.block_size
        caches: list[KVCache] | None = None
        for _ in range(max_new_tokens):
            if not use_cache:
                logits, _ = self(idx[:, -block:])
            elif caches is None or len(caches[0]) == block:
                # The prompt (cropped as without a cache), or a rebuild of full caches.
                keep = block if caches is None else max(1, block // 2)
                caches = self.new_caches(len(idx))
                logits, _ = self(idx[:, -keep:], caches=caches, start=0)
            else:
                logits, _ = self(idx[:, -1:], caches=caches, start=len(caches[0]))
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, -math.inf)
            probabilities = torch.softmax(logits, dim=-1)
            idx = torch.cat([idx, torch.multinomial(probabilities, 1, generator=generator)], 1)
        return idx
