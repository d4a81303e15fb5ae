"""Activation sparsity of a transformer's feed-forward blocks, and the FFN work it removes.

Forward hooks on each FFN (found as :mod:`relulab.transformers.relufy` finds them) record:

- **sparsity**: the fraction of exact zeros in the FFN's hidden activation h, the input of
  its down-projection (in a gated FFN, act(gate(x)) · up(x)), over all tokens;
- **aggregated sparsity** over a window of W consecutive tokens (Mirzadeh et al. 2023): the
  fraction of neurons that are zero at every token of the window, averaged over every window
  of W consecutive tokens within each sequence (W = 1 is the sparsity itself);
- **input sparsity**: the fraction of zeros in the input of the FFN's up-projection (and, per
  block, of attention's QKV projection); after stage-2 relufication these are >= 0 and sparse;
- **FFN FLOPs removed**: per token the dense FFN does ``k·d·n + n·d_out`` multiply-adds (k = 2
  up-projections for a gated FFN, 1 otherwise, d inputs, n hidden units). Skipping the
  down-projection's columns for zeros of h leaves ``k·d·n + nnz(h)·d_out``; also skipping the
  up-projections' columns for zeros of x leaves ``k·nnz(x)·n + nnz(h)·d_out``. The removed
  fraction is 1 − sparse/dense over all tokens (biases and the gate's product are not
  counted).

Use :func:`measure_sparsity` for one batch, or :class:`SparsityMeter` to accumulate over
several forward passes::

    with SparsityMeter(model, windows=(1, 8, 32)) as meter, torch.no_grad():
        for batch in batches:
            model(batch)
    print(meter.report().summary())

Windows are taken along the token axis (dim −2) of each forward pass, so token-by-token
decoding (one token per pass) gives no window longer than 1 (those values are NaN).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from relulab.errors import UserError
from relulab.transformers.relufy import BlockSite, FFNSite, find_blocks, find_ffns

DEFAULT_WINDOWS: tuple[int, ...] = (1, 8, 32, 128)


@dataclass
class LayerSparsity:
    """Sparsity of one FFN; fractions are in [0, 1], MACs are multiply-adds per token."""

    name: str  # the FFN's qualified name
    tokens: int
    hidden: int
    sparsity: float
    aggregated: dict[int, float]  # window length W -> fraction never active in W tokens
    input_sparsity: float  # zeros in the up-projection's input
    qkv_input_sparsity: float | None  # zeros in attention's input; None: no block found
    dense_macs: float
    macs_skipping_down: float  # with the down-projection skipping zeros of h
    macs_skipping_both: float  # also with the up-projection(s) skipping zeros of x

    @property
    def flops_removed_down(self) -> float:
        """Fraction of the FFN's multiply-adds removed by skipping zeros of h."""
        return 1.0 - self.macs_skipping_down / self.dense_macs

    @property
    def flops_removed(self) -> float:
        """Fraction removed by skipping zeros of h and of the up-projection's input."""
        return 1.0 - self.macs_skipping_both / self.dense_macs


@dataclass
class SparsityReport:
    """Per-layer :class:`LayerSparsity` and the means over layers."""

    layers: list[LayerSparsity]
    windows: tuple[int, ...]

    @property
    def sparsity(self) -> float:
        return _mean(layer.sparsity for layer in self.layers)

    @property
    def aggregated(self) -> dict[int, float]:
        return {w: _mean(layer.aggregated[w] for layer in self.layers) for w in self.windows}

    @property
    def flops_removed_down(self) -> float:
        """Over all layers: 1 − (sum of sparse MACs) / (sum of dense MACs)."""
        dense = sum(layer.dense_macs for layer in self.layers)
        return 1.0 - sum(layer.macs_skipping_down for layer in self.layers) / dense

    @property
    def flops_removed(self) -> float:
        dense = sum(layer.dense_macs for layer in self.layers)
        return 1.0 - sum(layer.macs_skipping_both for layer in self.layers) / dense

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (window keys become strings)."""
        layers = []
        for layer in self.layers:
            row = {k: v for k, v in vars(layer).items() if k != "aggregated"}
            row["aggregated"] = {str(w): s for w, s in layer.aggregated.items()}
            row["flops_removed_down"] = layer.flops_removed_down
            row["flops_removed"] = layer.flops_removed
            layers.append(row)
        return {
            "windows": list(self.windows),
            "sparsity": self.sparsity,
            "aggregated": {str(w): s for w, s in self.aggregated.items()},
            "flops_removed_down": self.flops_removed_down,
            "flops_removed": self.flops_removed,
            "layers": layers,
        }

    def summary(self) -> str:
        """One line per layer and a mean, for a terminal."""
        windows = "".join(f"{f'W={w}':>7}" for w in self.windows)
        lines = [
            f"{'layer':<24} sparsity  input  aggregated:{windows}  FFN FLOPs removed: down, +up"
        ]
        inputs = _mean(layer.input_sparsity for layer in self.layers)
        rows = [(r.name, r, r.input_sparsity) for r in self.layers] + [("mean", self, inputs)]
        for name, row, inputs in rows:
            aggregated = "".join(f"{row.aggregated[w]:7.3f}" for w in self.windows)
            lines.append(
                f"{name:<24} {row.sparsity:8.3f} {inputs:6.3f}  {'':>11}{aggregated}  "
                f"{'':>19}{row.flops_removed_down:.3f}, {row.flops_removed:.3f}"
            )
        return "\n".join(lines)


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def check_windows(windows: Sequence[int]) -> tuple[int, ...]:
    """Window lengths as a sorted tuple of distinct positive ints, or a UserError."""
    for w in windows:
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise UserError(f"window lengths must be positive integers, got {w!r}")
    if not windows:
        raise UserError("give at least one window length, e.g. 1")
    return tuple(sorted(set(windows)))


@dataclass
class _Counts:
    """Running totals of one FFN over every forward pass seen."""

    windows: tuple[int, ...]
    tokens: int = 0
    longest: int = 0  # the most tokens in one sequence of one pass
    hidden: int = 0
    d_in: int = 0
    d_out: int = 0
    ups: int = 1  # up-projections reading x: 2 with a gate
    hidden_zeros: int = 0
    input_zeros: int = 0
    qkv_zeros: int = 0
    qkv_elements: int = 0
    never: dict[int, int] = field(default_factory=dict)
    slots: dict[int, int] = field(default_factory=dict)  # windows × neurons seen

    def add_hidden(self, h: Tensor) -> None:
        h = h.detach()
        tokens = h.shape[-2] if h.dim() >= 2 else 1
        active = (h != 0).reshape(-1, tokens, h.shape[-1])  # (sequences, T, n)
        self.hidden = h.shape[-1]
        self.longest = max(self.longest, tokens)
        self.tokens += active.shape[0] * tokens
        self.hidden_zeros += int(active.numel() - active.sum())
        # counts[:, t] = activations of each neuron in tokens [0, t): a window [t, t + W)
        # has none exactly when counts[:, t + W] == counts[:, t].
        counts = torch.nn.functional.pad(active.int().cumsum(1), (0, 0, 1, 0))
        for w in self.windows:
            if w > tokens:
                continue
            idle = counts[:, w:] == counts[:, :-w]
            self.never[w] = self.never.get(w, 0) + int(idle.sum())
            self.slots[w] = self.slots.get(w, 0) + idle.numel()

    def layer(self, name: str) -> LayerSparsity:
        if self.tokens == 0:
            raise UserError(f"no tokens reached the FFN {name!r}; run the model inside the meter")
        elements = self.tokens * self.hidden
        input_nonzeros = self.tokens * self.d_in - self.input_zeros
        hidden_nonzeros = elements - self.hidden_zeros
        up_dense = self.ups * self.d_in * self.hidden * self.tokens
        per_token = 1.0 / self.tokens
        return LayerSparsity(
            name=name,
            tokens=self.tokens,
            hidden=self.hidden,
            sparsity=self.hidden_zeros / elements,
            aggregated={
                w: self.never[w] / self.slots[w] if self.slots.get(w) else math.nan
                for w in self.windows
            },
            input_sparsity=self.input_zeros / (self.tokens * self.d_in),
            qkv_input_sparsity=self.qkv_zeros / self.qkv_elements if self.qkv_elements else None,
            dense_macs=(up_dense + elements * self.d_out) * per_token,
            macs_skipping_down=(up_dense + hidden_nonzeros * self.d_out) * per_token,
            macs_skipping_both=(
                self.ups * input_nonzeros * self.hidden + hidden_nonzeros * self.d_out
            )
            * per_token,
        )


class SparsityMeter:
    """Context manager that hooks every FFN of ``model`` and counts zeros while it is open.

    Args:
        model: a model :func:`relulab.transformers.relufy.find_ffns` understands.
        windows: window lengths W of the aggregated sparsity. Default: 1, 8, 32, 128

    Raises:
        UserError: no FFN found, or a bad window length.
    """

    def __init__(self, model: nn.Module, windows: Sequence[int] = DEFAULT_WINDOWS) -> None:
        self.windows = check_windows(windows)
        self.ffns: list[FFNSite] = find_ffns(model)
        try:
            blocks: list[BlockSite] = find_blocks(model, self.ffns)
        except UserError:
            blocks = []  # FFNs outside pre-norm blocks: no QKV input to watch
        self._qkv = {id(b.ffn.module): b.qkv for b in blocks}
        self._counts = [_Counts(self.windows) for _ in self.ffns]
        self._handles: list[Any] = []

    def __enter__(self) -> SparsityMeter:
        for site, counts in zip(self.ffns, self._counts):
            counts.ups = 1 if site.gate is None else 2
            self._handles += [
                site.down.register_forward_hook(_down_hook(counts)),
                site.up.register_forward_pre_hook(_up_hook(counts)),
            ]
            qkv = self._qkv.get(id(site.module))
            if qkv is not None:
                self._handles.append(qkv.register_forward_pre_hook(_qkv_hook(counts)))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def longest(self) -> int:
        """The most tokens one sequence of one forward pass has had so far."""
        return max(counts.longest for counts in self._counts)

    def report(self) -> SparsityReport:
        """What the forward passes so far have shown."""
        layers = [c.layer(site.path) for site, c in zip(self.ffns, self._counts)]
        return SparsityReport(layers, self.windows)


def _down_hook(counts: _Counts) -> Callable[..., None]:
    def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        counts.add_hidden(args[0])
        counts.d_out = output.shape[-1]

    return hook


def _up_hook(counts: _Counts) -> Callable[..., None]:
    def hook(module: nn.Module, args: tuple) -> None:
        x = args[0].detach()
        counts.d_in = x.shape[-1]
        counts.input_zeros += int((x == 0).sum())

    return hook


def _qkv_hook(counts: _Counts) -> Callable[..., None]:
    def hook(module: nn.Module, args: tuple) -> None:
        x = args[0].detach()
        counts.qkv_zeros += int((x == 0).sum())
        counts.qkv_elements += x.numel()

    return hook


def measure_sparsity(
    model: nn.Module, inputs: Tensor, windows: Sequence[int] = DEFAULT_WINDOWS
) -> SparsityReport:
    """Sparsity of ``model``'s FFNs on one batch, run as ``model(inputs)`` in eval mode
    without gradients (each module's train/eval mode is restored afterwards).

    Args:
        model: relulab's GPT, a ``transformers`` GPT-2 or Llama-style model, or any model
            whose FFNs :func:`relulab.transformers.relufy.find_ffns` finds.
        inputs: what the model takes, e.g. token ids of shape (B, T).
        windows: window lengths W of the aggregated sparsity, each at most T.

    Raises:
        UserError: no FFN found, or a window longer than the batch's sequences.

    Example::

        >>> from relulab.transformers import GPT, GPTConfig
        >>> _ = torch.manual_seed(0)
        >>> model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, activation="relu"))
        >>> report = measure_sparsity(model, torch.randint(0, 65, (2, 32)), windows=(1, 32))
        >>> [layer.name for layer in report.layers], 0.3 < report.sparsity < 0.7
        (['blocks.0.ffn', 'blocks.1.ffn'], True)
        >>> report.aggregated[32] < report.aggregated[1]  # more tokens wake more neurons
        True
    """
    windows = check_windows(windows)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with SparsityMeter(model, windows) as meter, torch.no_grad():
            model(inputs)
    finally:
        for module, training in modes.items():
            module.training = training
    if windows[-1] > meter.longest:
        raise UserError(
            f"window {windows[-1]} is longer than the sequences ({meter.longest} tokens)"
        )
    return meter.report()
