"""Sparse FFN decoding on CPU: read only the weights that the zeros of a ReLU leave relevant.

At batch 1 a transformer's feed-forward block, y = W_down·act(W_up·x + b_up) + b_down, is
bound by memory bandwidth: each token reads all 2·d·hidden weights once, for 2 flops each.
Where act is a ReLU (a relufied model's), most entries of h = act(W_up·x + b_up) are 0, and
the weights they would multiply need not be read. Each weight is kept in the layout in which
the weights of one neuron (or of one input) are one contiguous row, and the rows are summed
by ``F.embedding_bag``, which adds weighted rows of a table without copying them out first.

Paths (:data:`MODES`), for one token x of shape (d,):

- ``"dense"``: the FFN as it is.
- ``"down"`` (exact): h densely, then y = b_down + Σ_{i: h_i ≠ 0} h_i·W_downᵀ[i], with
  W_downᵀ stored (hidden, d). Reads d·hidden + (1 − s)·d·hidden weights at sparsity s.
- ``"up_down"`` (exact), for inputs that are sparse themselves (stage-2 relufication puts a
  ReLU before W_up): pre = b_up + Σ_{j: x_j ≠ 0} x_j·W_upᵀ[j], with W_upᵀ stored (d, hidden),
  then as ``"down"``. Reads (1 − s_in)·d·hidden + (1 − s)·d·hidden.
- ``"predictor"`` (approximate; Liu et al. 2023, Deja Vu): a :class:`LowRankPredictor` picks
  the neurons to compute from x; only their rows of W_up (nn.Linear's own (hidden, d)
  layout) and of W_downᵀ are read. Neurons it leaves out count as 0.

Gated FFNs (reglu and kin), h = act(W_gate·x + b_gate) ⊙ (W_up·x + b_up): a zero of the gate
makes that neuron's up row and down row irrelevant. ``"down"`` computes the gate densely, then
only the active neurons' up rows and down rows; ``"up_down"`` reads the gate's rows
W_gateᵀ[j] of the nonzero inputs only; ``"predictor"`` reads the predicted neurons' gate, up
and down rows.

:class:`SparseFFN` wraps these as a drop-in replacement for a GPT block's ``ffn`` during
token-by-token generation (``SparseFFN.from_feedforward(block.ffn, mode="down")``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from relulab.errors import UserError

GRAIN = 32768
COPY = 1 << 18  # numbers: 1 MiB of float32, within L2
MODES = ("dense", "down", "up_down", "predictor")
EXACT_MODES = ("dense", "down", "up_down")  # equal to dense up to rounding


# --- the gathers --------------------------------------------------------------------------


def weighted_rows(table: Tensor, index: Tensor, weights: Tensor, bias: Tensor | None) -> Tensor:
    """``bias + Σ_i weights[i]·table[index[i]]``, reading only the indexed rows of ``table``.

    ``table[index]`` would first write the rows out and then read them again; embedding_bag
    adds them where they lie. It parallelises over bags, so the index is cut into one bag
    per thread, and the bags' sums are added. (Measured at d = 1024, 90%: 0.89 of the
    bandwidth bound with two bags on 2 threads, 0.77 with one; but where other processes
    keep the cores busy, each parallel region can wait a scheduler slice for its second
    thread, some 16 ms: time such a machine with threads=1.)

    Shapes: table (n, d) contiguous, index (k,) int64, weights (k,); returns (d,).
    """
    count = index.numel()
    # Below torch's grain (at::internal::GRAIN_SIZE numbers per thread) a second thread
    # costs more to wake than it saves.
    parts = max(1, min(torch.get_num_threads(), count * table.shape[1] // GRAIN))
    offsets = torch.tensor([i * count // parts for i in range(parts)])  # one op, not three
    sums = F.embedding_bag(index, table, offsets, mode="sum", per_sample_weights=weights)
    out = sums[0] if parts == 1 else sums.sum(0)
    return out if bias is None else out + bias


def indexed_rows_times(matrix: Tensor, index: Tensor, x: Tensor, bias: Tensor | None) -> Tensor:
    """``matrix[index] @ x + bias[index]``: the dot products of the indexed rows only.

    Shapes: matrix (n, d) contiguous, index (k,), x (d,); returns (k,).
    """
    # The rows are copied out first: no torch kernel takes dot products of indexed rows in
    # place. In chunks of COPY numbers, so that each copy stays in cache, and so that a large
    # one does not come from fresh pages each time (measured: a 32 MB copy, d = 2048 at 50%,
    # took 20 ms, 2.4x the dense FFN, nearly all of it page faults; in 1 MiB chunks the
    # predictor path took 6.5 ms, in 4 MiB ones 10.4 ms).
    rows = max(1, COPY // matrix.shape[1])
    if index.numel() <= rows:
        out = torch.mv(matrix.index_select(0, index), x)
    else:
        out = torch.cat([torch.mv(matrix.index_select(0, part), x) for part in index.split(rows)])
    return out if bias is None else out + bias.index_select(0, index)


def nonzero_index(v: Tensor) -> Tensor:
    """The positions of the nonzero entries of a vector, int64, shape (k,)."""
    return torch.nonzero(v).view(-1)


# --- weights and the paths ----------------------------------------------------------------


@dataclass(frozen=True)
class FFNWeights:
    """One FFN's weights, each in the layout whose rows a sparse path reads.

    ``up``, ``gate``: (hidden, d), nn.Linear's layout (row i: neuron i's input weights).
    ``down_t``: (hidden, d), W_downᵀ (row i: what neuron i adds to y).
    ``up_t``, ``gate_t``: (d, hidden), W_upᵀ and W_gateᵀ (row j: what input j adds to the
    pre-activations), needed by ``"up_down"`` only (``gate_t`` for gated FFNs, ``up_t`` else).
    ``act``: the activation, applied to the up projection, or to the gate's for gated FFNs.
    """

    up: Tensor
    down_t: Tensor
    act: Callable[[Tensor], Tensor]
    up_bias: Tensor | None = None
    down_bias: Tensor | None = None
    gate: Tensor | None = None
    gate_bias: Tensor | None = None
    up_t: Tensor | None = None
    gate_t: Tensor | None = None

    @property
    def gated(self) -> bool:
        return self.gate is not None


_TENSORS = ("up", "down_t", "up_bias", "down_bias", "gate", "gate_bias", "up_t", "gate_t")


def _activate(w: FFNWeights, pre: Tensor) -> Tensor:
    """act on an (N, hidden) view, as gpt.FeedForward applies it: per-neuron parameters
    (PReLU's) sit on dim 1."""
    return w.act(pre.reshape(-1, pre.shape[-1])).reshape(pre.shape)


def dense_hidden(x: Tensor, w: FFNWeights) -> Tensor:
    """h, densely, for x of shape (..., d): act(up) or, gated, act(gate) ⊙ up."""
    if w.gate is not None:
        return _activate(w, F.linear(x, w.gate, w.gate_bias)) * F.linear(x, w.up, w.up_bias)
    return _activate(w, F.linear(x, w.up, w.up_bias))


def dense_step(x: Tensor, w: FFNWeights) -> Tensor:
    """The FFN as it is, for x of shape (..., d): the reference of every sparse path."""
    return F.linear(dense_hidden(x, w), w.down_t.t(), w.down_bias)


def _first_projection(x: Tensor, w: FFNWeights, sparse_input: bool) -> Tensor:
    """The projection that feeds act (up's, or gate's for gated FFNs), for x of shape (d,)."""
    weight, bias, rows = (w.gate, w.gate_bias, w.gate_t) if w.gated else (w.up, w.up_bias, w.up_t)
    if not sparse_input:
        return F.linear(x, weight, bias)
    if rows is None:
        raise ValueError("the up_down path needs the transposed first projection (up_t/gate_t)")
    index = nonzero_index(x)
    return weighted_rows(rows, index, x.index_select(0, index), bias)


def exact_step(x: Tensor, w: FFNWeights, *, sparse_input: bool = False) -> Tensor:
    """One token, x of shape (d,), through the exact ``"down"`` or ``"up_down"`` path."""
    a = _activate(w, _first_projection(x, w, sparse_input))
    index = nonzero_index(a)
    if w.gated:  # only the active neurons' up rows
        h = a.index_select(0, index) * indexed_rows_times(w.up, index, x, w.up_bias)
    else:
        h = a.index_select(0, index)
    return weighted_rows(w.down_t, index, h, w.down_bias)


def predicted_step(x: Tensor, w: FFNWeights, index: Tensor) -> Tensor:
    """One token through the neurons in ``index`` only (shape (k,)): the predictor's path."""
    # act sees only the chosen neurons: SparseFFN refuses activations with per-neuron
    # parameters for this path.
    if w.gate is not None:
        g = w.act(indexed_rows_times(w.gate, index, x, w.gate_bias))
        h = g * indexed_rows_times(w.up, index, x, w.up_bias)
    else:
        h = w.act(indexed_rows_times(w.up, index, x, w.up_bias))
    return weighted_rows(w.down_t, index, h, w.down_bias)


# --- the predictor ------------------------------------------------------------------------


class LowRankPredictor(nn.Module):
    r"""Scores each FFN neuron's chance of being active from the FFN's input (Deja Vu).

    :math:`\mathrm{logits}(x) = B(Ax) + b`, with A of shape (rank, d) and B (hidden, rank):
    it reads rank·(d + hidden) weights, against 2·d·hidden for the FFN.

    Args:
        d: input size.
        hidden: the FFN's neurons.
        rank: the inner size.
    """

    def __init__(self, d: int, hidden: int, rank: int) -> None:
        super().__init__()
        self.inner = nn.Linear(d, rank, bias=False)
        self.outer = nn.Linear(rank, hidden)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of shape (..., hidden): > 0 where the neuron is predicted active."""
        return self.outer(self.inner(x))

    def mask(self, x: Tensor, *, top_k: int | None = None, threshold: float = 0.0) -> Tensor:
        """Boolean (..., hidden): the ``top_k`` highest scores, or the logits > ``threshold``."""
        logits = self(x)
        if top_k is None:
            return logits > threshold
        chosen = torch.zeros_like(logits, dtype=torch.bool)
        return chosen.scatter_(-1, logits.topk(top_k, dim=-1).indices, True)

    def index(self, x: Tensor, *, top_k: int | None = None, threshold: float = 0.0) -> Tensor:
        """For one token x of shape (d,): the predicted neurons' positions, shape (k,)."""
        logits = self(x)
        if top_k is None:
            return nonzero_index(logits > threshold)
        return logits.topk(top_k).indices


def active_mask(ffn: nn.Module | FFNWeights, x: Tensor) -> Tensor:
    """Boolean (..., hidden): the neurons whose activation (the gate's, if gated) is nonzero."""
    w = ffn if isinstance(ffn, FFNWeights) else ffn_weights(ffn)
    weight, bias = (w.gate, w.gate_bias) if w.gated else (w.up, w.up_bias)
    return w.act(F.linear(x, weight, bias)) != 0


@torch.no_grad()
def predictor_quality(
    predictor: LowRankPredictor,
    ffn: nn.Module | FFNWeights,
    x: Tensor,
    *,
    top_k: int | None = None,
    threshold: float = 0.0,
) -> dict[str, float]:
    """Recall (share of active neurons predicted), precision, and the active and predicted
    shares of all neurons, over the tokens ``x`` (..., d)."""
    active = active_mask(ffn, x)
    predicted = predictor.mask(x, top_k=top_k, threshold=threshold)
    hits = (active & predicted).sum().item()
    return {
        "recall": hits / max(1, active.sum().item()),
        "precision": hits / max(1, predicted.sum().item()),
        "active_fraction": active.float().mean().item(),
        "predicted_fraction": predicted.float().mean().item(),
    }


def fit_predictor(
    ffn: nn.Module | FFNWeights | None,
    x: Tensor,
    *,
    active: Tensor | None = None,
    rank: int = 64,
    steps: int = 300,
    lr: float = 3e-3,
    batch_size: int = 256,
    positive_weight: float = 1.0,
    seed: int = 0,
) -> LowRankPredictor:
    """Fit a :class:`LowRankPredictor` to the FFN's active neurons on the tokens ``x`` (N, d).

    Binary cross-entropy of the logits against ``active`` (N, hidden) (None: the FFN's
    :func:`active_mask` at ``x``), Adam, ``steps`` batches of ``batch_size`` tokens drawn at
    random. ``positive_weight`` > 1 trades precision for
    recall (a missed active neuron changes the output; a spare one only costs time).
    """
    x = x.detach().reshape(-1, x.shape[-1])
    if x.shape[0] == 0:
        raise UserError("fit_predictor needs at least one token, got none")
    if rank < 1:
        raise UserError(f"predictor rank must be >= 1, got {rank}")
    if active is None:
        if ffn is None:
            raise UserError("fit_predictor needs an FFN or the active masks, got neither")
        with torch.no_grad():
            active = active_mask(ffn, x)
    labels = active.detach().reshape(x.shape[0], -1).to(x.dtype)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        predictor = LowRankPredictor(x.shape[1], labels.shape[1], rank).to(x.dtype)
    optimizer = torch.optim.Adam(predictor.parameters(), lr=lr)
    pos_weight = torch.tensor(positive_weight, dtype=x.dtype)
    for _ in range(steps):
        rows = torch.randint(x.shape[0], (min(batch_size, x.shape[0]),), generator=generator)
        loss = F.binary_cross_entropy_with_logits(
            predictor(x[rows]), labels[rows], pos_weight=pos_weight
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return predictor.requires_grad_(False)


# --- the module ---------------------------------------------------------------------------


def _plain(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().contiguous()


def ffn_weights(ffn: nn.Module, *, transposed_first: bool = False) -> FFNWeights:
    """The weights of a FeedForward-like module (``up``, ``gate`` or None, ``act``, ``down``).

    ``transposed_first`` also makes the (d, hidden) copy that ``"up_down"`` reads.
    """
    for name in ("up", "act", "down"):
        if not isinstance(getattr(ffn, name, None), nn.Module):
            raise UserError(
                f"{type(ffn).__name__} is not a FeedForward: it has no module {name!r} "
                "(expected up, gate, act, down)"
            )
    gate = getattr(ffn, "gate", None)
    first = gate if gate is not None else ffn.up
    return FFNWeights(
        up=_plain(ffn.up.weight),
        up_bias=_plain(ffn.up.bias),
        gate=None if gate is None else _plain(gate.weight),
        gate_bias=None if gate is None else _plain(gate.bias),
        down_t=_plain(ffn.down.weight.t()),
        down_bias=_plain(ffn.down.bias),
        act=ffn.act,
        up_t=_plain(ffn.up.weight.t()) if transposed_first and gate is None else None,
        gate_t=_plain(first.weight.t()) if transposed_first and gate is not None else None,
    )


class SparseFFN(nn.Module):
    r"""A FeedForward for token-by-token decoding that skips what its activation's zeros make
    irrelevant (see the module's docstring for the paths).

    One token (an input of d numbers: shape (d,), (1, d) or (1, 1, d)) goes through ``mode``'s
    sparse path. Several tokens go through the dense FFN, which ``"down"`` and ``"up_down"``
    equal exactly; ``"predictor"`` then zeroes the neurons its predictor leaves out, so that
    a validation loss measured on batches is the loss of what decoding computes. For
    inference only: no gradients flow.

    Args:
        weights: the FFN's weights (see :func:`ffn_weights`).
        mode: one of :data:`MODES`.
        predictor: for ``"predictor"``: picks the neurons.
        top_k: for ``"predictor"``: compute the k best-scored neurons; None: all whose
            logit exceeds ``threshold``.
        threshold: see ``top_k``.

    Example::

        >>> sparse = SparseFFN.from_feedforward(block.ffn, mode="down")  # doctest: +SKIP
        >>> block.ffn = sparse  # doctest: +SKIP
    """

    def __init__(
        self,
        weights: FFNWeights,
        mode: str = "down",
        *,
        predictor: LowRankPredictor | None = None,
        top_k: int | None = None,
        threshold: float = 0.0,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise UserError(f"unknown sparse FFN mode {mode!r}; choose one of {', '.join(MODES)}")
        hidden, d = weights.up.shape
        if mode == "predictor":
            if predictor is None:
                raise UserError("mode 'predictor' needs a predictor (see fit_predictor)")
            expected = (d, hidden)
            got = (predictor.inner.in_features, predictor.outer.out_features)
            if got != expected:
                raise UserError(f"predictor is for (d, hidden) = {got}, the FFN has {expected}")
            if isinstance(weights.act, nn.Module) and any(
                p.numel() > 1 for p in weights.act.parameters()
            ):
                raise UserError(
                    f"mode 'predictor' needs an activation without per-neuron parameters, "
                    f"got {weights.act}; use mode 'down'"
                )
            if top_k is not None and not 0 <= top_k <= hidden:
                raise UserError(f"top_k must be in [0, {hidden}], got {top_k}")
        if mode == "up_down" and (weights.gate_t if weights.gated else weights.up_t) is None:
            raise ValueError("mode 'up_down' needs FFNWeights with up_t (gate_t if gated)")
        self.mode = mode
        # Buffers, so that .to() and state_dict() see them; forward rebuilds the FFNWeights.
        for name in _TENSORS:
            self.register_buffer(name, getattr(weights, name))
        self.act = weights.act
        self.predictor = predictor
        self.top_k = top_k
        self.threshold = threshold
        self.d, self.hidden = d, hidden

    @property
    def weights(self) -> FFNWeights:
        """The FFN's weights, as the paths take them."""
        return FFNWeights(act=self.act, **{name: getattr(self, name) for name in _TENSORS})

    @classmethod
    def from_feedforward(
        cls,
        ffn: nn.Module,
        mode: str = "down",
        *,
        predictor: LowRankPredictor | None = None,
        top_k: int | None = None,
        threshold: float = 0.0,
    ) -> SparseFFN:
        """The SparseFFN of a FeedForward (its up and gate weights shared, W_down transposed)."""
        if mode not in MODES:
            raise UserError(f"unknown sparse FFN mode {mode!r}; choose one of {', '.join(MODES)}")
        weights = ffn_weights(ffn, transposed_first=mode == "up_down")
        return cls(weights, mode, predictor=predictor, top_k=top_k, threshold=threshold)

    def extra_repr(self) -> str:
        gated = ", gated" if self.gate is not None else ""
        return f"d={self.d}, hidden={self.hidden}, mode={self.mode!r}{gated}"

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.d:
            raise ValueError(f"expected inputs of {self.d} features, got shape {tuple(x.shape)}")
        w = self.weights
        if x.numel() != self.d:  # several tokens: nothing to skip that a matmul would not read
            if self.mode != "predictor":
                return dense_step(x, w)
            return self._masked_dense(x, w)
        token = x.reshape(self.d)
        if self.mode == "dense":
            y = dense_step(token, w)
        elif self.mode == "predictor":
            assert self.predictor is not None
            index = self.predictor.index(token, top_k=self.top_k, threshold=self.threshold)
            y = predicted_step(token, w, index)
        else:
            y = exact_step(token, w, sparse_input=self.mode == "up_down")
        return y.reshape(x.shape)

    def _masked_dense(self, x: Tensor, w: FFNWeights) -> Tensor:
        """What ``"predictor"`` computes, for many tokens at once: unpredicted neurons zeroed."""
        assert self.predictor is not None
        keep = self.predictor.mask(x, top_k=self.top_k, threshold=self.threshold)
        return F.linear(dense_hidden(x, w) * keep, w.down_t.t(), w.down_bias)
