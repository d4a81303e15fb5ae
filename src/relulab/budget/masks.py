"""Learned linearization masks: SNL's relaxed masks and AutoReP's hysteresis gates.

Both put a trainable choice in front of each ReLU (per element or per channel), so that a
penalty can switch ReLUs off until a private-inference budget is met:

- :class:`LinearizationMask` (SNL, Cho et al. 2022): ``y = a·relu(x) + (1 − a)·x``, ``a``
  relaxed in [0, 1] while training, then binarised; a unit with ``a = 0`` is the identity.
- :class:`HysteresisGate` (AutoReP, Peng et al. 2023): ``y = m·relu(x) + (1 − m)·P(x)``, a
  binary ``m`` driven with hysteresis by an auxiliary ``a`` and a channel-wise polynomial
  ``P`` initialised by DaPa from the measured pre-activation statistics.

:func:`insert_masks` puts one of them at every ReLU of a model; the training that drives
them to a budget is :func:`relulab.budget.mask_training.train_to_budget`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from relulab.errors import UserError
from relulab.functional.polynomial import dapa_coefficients, poly_relu

Per = Literal["element", "channel"]
SNL_THRESHOLD = 1e-2  # SNL counts (and keeps) a ReLU whose a exceeds this
# AutoReP's code starts from the DaPa fit with w₀/5 and w₂/10: a flatter, nearly linear
# polynomial, so that x² terms do not compound through layers before the weights adapt.
AUTOREP_INIT_SCALE = (0.2, 1.0, 0.1)
MIN_STD = 1e-3  # a constant channel (std 0) has no DaPa fit; it is fitted as if this wide


def _check_shape(shape: Sequence[int], per: str, owner: str) -> tuple[int, ...]:
    if per not in ("element", "channel"):
        raise UserError(f"{owner}: per must be 'element' or 'channel', got {per!r}")
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise UserError(f"{owner}: shape must be a sequence of sizes, got {shape!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise UserError(f"{owner}: shape must be non-empty with sizes > 0, got {shape!r}")
    return shape


def _entry_shape(shape: tuple[int, ...], per: str) -> tuple[int, ...]:
    """The shape of the mask's parameters: ``shape`` itself, or one entry per channel (the
    first per-sample dimension, as in (C, H, W) and (C, L) layouts) broadcast over the rest."""
    return shape if per == "element" else (shape[0],) + (1,) * (len(shape) - 1)


class _MaskBase(nn.Module):
    """What both masks share: the per-sample ``shape``, entries per element or per channel,
    and the count of the ReLUs still evaluated."""

    def __init__(self, shape: Sequence[int], per: Per) -> None:
        super().__init__()
        self.shape = _check_shape(shape, per, type(self).__name__)
        self.per = per
        self.entry_shape = _entry_shape(self.shape, per)
        self.register_buffer("frozen", torch.tensor(False))

    @property
    def elements_per_entry(self) -> int:
        """How many ReLU evaluations one mask entry stands for (1 per element; H·W per channel)."""
        return math.prod(self.shape) // math.prod(self.entry_shape)

    @property
    def relu_total(self) -> int:
        """The ReLU evaluations per input with every unit kept."""
        return math.prod(self.shape)

    def on(self) -> Tensor:
        """Bool tensor of ``entry_shape``: which entries still evaluate their ReLU."""
        raise NotImplementedError

    def relu_count(self) -> int:
        """ReLU evaluations per input that this mask keeps."""
        return int(self.on().sum()) * self.elements_per_entry

    def score(self) -> Tensor:
        """The value by which entries are ranked when only a budget's worth is kept."""
        raise NotImplementedError

    def _check_input(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.shape:
            raise UserError(
                f"{type(self).__name__}: input of shape {tuple(x.shape)} does not match the "
                f"mask's per-sample shape {self.shape} (dimension 0 is the batch)"
            )

    def extra_repr(self) -> str:
        return f"shape={self.shape}, per={self.per!r}, relus={self.relu_count()}/{self.relu_total}"


class LinearizationMask(_MaskBase):
    r"""SNL's relaxed linearization mask: :math:`y = a \odot \mathrm{ReLU}(x) + (1 - a) \odot x`.

    ``a`` starts at 1 (every ReLU kept) and is trained, with an L1 penalty, towards 0 (the
    identity). An entry counts as a ReLU while ``a > 1e-2`` (SNL's threshold).
    :meth:`binarize` then fixes ``a`` to 0 or 1; from then on the output is computed by
    selection, so a unit with ``a = 0`` is exactly the identity and one with ``a = 1``
    exactly ``relu(x)``.

    Args:
        shape: the per-sample shape of the input, e.g. ``(C, H, W)`` or ``(features,)``.
        per: ``"element"``, one ``a`` per element (SNL's default), or ``"channel"``, one
            per channel (the first per-sample dimension), covering all its positions.

    Shape:
        Input ``(N, *shape)``; output the same.

    Example::

        >>> mask = LinearizationMask((3,))
        >>> with torch.no_grad():
        ...     _ = mask.alpha.copy_(torch.tensor([1.0, 0.5, 0.0]))
        >>> mask(torch.tensor([[-2.0, -2.0, -2.0]]))
        tensor([[ 0., -1., -2.]], grad_fn=<AddBackward0>)
        >>> mask.relu_count()
        2
        >>> mask.binarize()
        >>> mask(torch.tensor([[-2.0, -2.0, -2.0]]))
        tensor([[ 0.,  0., -2.]])
    """

    def __init__(self, shape: Sequence[int], per: Per = "element") -> None:
        super().__init__(shape, per)
        self.alpha = nn.Parameter(torch.ones(self.entry_shape))

    def on(self) -> Tensor:
        return self.alpha.detach() > SNL_THRESHOLD

    def score(self) -> Tensor:
        return self.alpha.detach()

    def penalty(self) -> Tensor:
        """SNL's L1 term Σ|a|, each entry weighted by the ReLUs it covers (so per channel it is
        the L1 norm of the equivalent per-element mask)."""
        return self.alpha.abs().sum() * self.elements_per_entry

    @torch.no_grad()
    def binarize(self, keep: Tensor | None = None) -> None:
        """Fix ``a`` to 1 where ``keep`` (default: ``a > 1e-2``), 0 elsewhere, and freeze it."""
        keep = self.on() if keep is None else keep.to(torch.bool).reshape(self.entry_shape)
        self.alpha.copy_(keep.to(self.alpha.dtype))
        self.alpha.requires_grad_(False)
        self.frozen.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if bool(self.frozen):
            return torch.where(self.alpha > 0.5, TF.relu(x), x)
        return self.alpha * TF.relu(x) + (1 - self.alpha) * x


def hysteresis_update(m: Tensor, a: Tensor, threshold: float) -> Tensor:
    """AutoReP's mask rule: an entry that is on stays on while ``a > −t``; one that is off
    turns on only when ``a > t``. Between −t and t the previous state holds."""
    return torch.where(m, a > -threshold, a > threshold)


class _SoftplusSTE(torch.autograd.Function):
    """Forward: the binary mask ``m``. Backward: ∂m/∂a taken as softplus(a) (AutoReP's STE)."""

    @staticmethod
    def forward(ctx, a: Tensor, m: Tensor) -> Tensor:
        ctx.save_for_backward(a)
        return m.to(a.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (a,) = ctx.saved_tensors
        return grad * TF.softplus(a), None


class HysteresisGate(_MaskBase):
    r"""AutoReP's gate: :math:`y = m \odot \mathrm{ReLU}(x) + (1 - m) \odot P(x)`.

    ``m`` is binary. It follows an auxiliary parameter ``a`` (drawn from U(0, 1), so every
    ReLU starts on) with hysteresis, updated at each forward pass in training mode (see
    :func:`hysteresis_update`); the backward pass treats ∂m/∂a as softplus(a), a
    straight-through estimate. ``P(x) = Σₖ wₖxᵏ`` is one trainable polynomial per channel
    (the first per-sample dimension), whatever ``per`` is.

    Its coefficients start from DaPa, the least-squares fit of ReLU under x ~ N(μ, σ²)
    (:func:`relulab.functional.dapa_coefficients`), scaled as AutoReP's code does: w₀/5 and
    w₂/10 (``init_scale``, applied to w₀, w₁, w₂...; degree > 2 terms are not scaled). μ, σ
    are N(0, 1) until :meth:`calibrate` measures them per channel on real pre-activations.

    Args:
        shape: the per-sample shape of the input.
        threshold: the hysteresis half-width t (AutoReP uses 1e-3 to 3e-3).
        per: ``"element"`` or ``"channel"``: what one ``a``/``m`` entry covers.
        degree: the degree of P.
        init_scale: multipliers of the DaPa coefficients w₀, w₁, ... at initialisation;
            ``None`` is AutoReP's (0.2, 1, 0.1); ``(1, 1, 1)`` keeps the least-squares fit.

    Shape:
        Input ``(N, *shape)``; output the same.
    """

    def __init__(
        self,
        shape: Sequence[int],
        threshold: float = 1e-3,
        per: Per = "element",
        degree: int = 2,
        init_scale: Sequence[float] | None = None,
    ) -> None:
        super().__init__(shape, per)
        if isinstance(threshold, bool) or not (
            isinstance(threshold, (int, float)) and 0 <= threshold < math.inf
        ):
            raise UserError(f"HysteresisGate: threshold must be a number >= 0, got {threshold!r}")
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
            raise UserError(f"HysteresisGate: degree must be an integer >= 0, got {degree!r}")
        scale = list(AUTOREP_INIT_SCALE if init_scale is None else init_scale)
        if len(scale) > degree + 1:
            scale = scale[: degree + 1]
        self.threshold = float(threshold)
        self.degree = degree
        self.register_buffer(
            "init_scale",
            torch.tensor(scale + [1.0] * (degree + 1 - len(scale)), dtype=torch.float64),
        )
        self.a = nn.Parameter(torch.rand(self.entry_shape))
        self.register_buffer("m", torch.ones(self.entry_shape, dtype=torch.bool))
        channels = (self.shape[0],) + (1,) * (len(self.shape) - 1)
        self.coefficients = nn.Parameter(torch.empty((degree + 1, *channels)))
        self.set_statistics(torch.zeros(channels), torch.ones(channels))

    @torch.no_grad()
    def set_statistics(self, mean: Tensor, std: Tensor) -> None:
        """Re-initialise P from per-channel pre-activation statistics (DaPa × ``init_scale``)."""
        channels = self.coefficients.shape[1:]
        mean = torch.as_tensor(mean, dtype=torch.float64).reshape(channels)
        std = torch.as_tensor(std, dtype=torch.float64).reshape(channels).clamp_min(MIN_STD)
        fit = dapa_coefficients(mean, std, self.degree)
        scale = self.init_scale.reshape((-1,) + (1,) * len(channels))
        self.coefficients.copy_((fit * scale).to(self.coefficients.dtype))

    @torch.no_grad()
    def calibrate(self, x: Tensor) -> None:
        """Measure each channel's mean and (population) standard deviation over the batch and
        positions of the pre-activations ``x`` (``(N, *shape)``), and re-initialise P."""
        self._check_input(x)
        per_channel = x.detach().to(torch.float64).transpose(0, 1).reshape(self.shape[0], -1)
        self.set_statistics(per_channel.mean(1), per_channel.std(1, correction=0))

    def on(self) -> Tensor:
        return self.m.clone()

    def score(self) -> Tensor:
        return self.a.detach()

    def polynomial(self, x: Tensor) -> Tensor:
        """P(x), channel by channel."""
        return poly_relu(x, self.coefficients)

    def density(self) -> Tensor:
        """The ReLUs kept, weighted by what each entry covers, through the STE (so that a
        penalty on it reaches ``a``)."""
        return _SoftplusSTE.apply(self.a, self.m).sum() * self.elements_per_entry

    @torch.no_grad()
    def freeze(self, keep: Tensor | None = None) -> None:
        """Fix ``m`` (to ``keep`` if given) and stop updating it; P stays trainable."""
        if keep is not None:
            self.m.copy_(keep.to(torch.bool).reshape(self.entry_shape))
        self.a.requires_grad_(False)
        self.frozen.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if bool(self.frozen):
            return torch.where(self.m, TF.relu(x), self.polynomial(x))
        if self.training:
            with torch.no_grad():
                self.m.copy_(hysteresis_update(self.m, self.a, self.threshold))
        m = _SoftplusSTE.apply(self.a, self.m)
        return m * TF.relu(x) + (1 - m) * self.polynomial(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, threshold={self.threshold}, degree={self.degree}"


Mask = LinearizationMask | HysteresisGate


def _build(kind: str, shape: tuple[int, ...], per: Per, options: dict) -> Mask:
    cls = LinearizationMask if kind == "snl" else HysteresisGate
    try:
        return cls(shape, per=per, **options)
    except TypeError as error:  # an option the mask does not take
        raise UserError(f"insert_masks: {cls.__name__} {error}") from None


class _Probe(nn.Module):
    """A ReLU that records the shapes it is applied to (one forward pass of insert_masks);
    ``reached`` is shared by all probes and lists them in the order they are first called."""

    def __init__(self, reached: list[_Probe]) -> None:
        super().__init__()
        self.reached = reached
        self.shapes: list[tuple[int, ...]] = []
        self.example: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.shapes:
            self.reached.append(self)
        self.shapes.append(tuple(x.shape))
        self.example = x.detach()
        return TF.relu(x)


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent), attribute, module)


def _parameter_dtype(model: nn.Module, example: Tensor) -> torch.dtype:
    for tensor in (*model.parameters(), *model.buffers(), example):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


def insert_masks(
    model: nn.Module,
    example: Tensor,
    kind: Literal["snl", "autorep"] = "snl",
    per: Per = "element",
    **options,
) -> list[Mask]:
    """Put a :class:`LinearizationMask` (``"snl"``) or :class:`HysteresisGate`
    (``"autorep"``) at every ReLU of ``model``, in place.

    ReLU modules (torch's, relulab's) and functional calls (``F.relu(x)``, ``x.relu()``)
    are all replaced, through :func:`relulab.surgery.replace_activations`; a call it has to
    keep is named in a warning (its ReLUs then stay outside the masks' count). Each mask's
    shape is the per-sample shape of its input, read from one forward pass of ``example``
    (in eval mode, no gradients; dimension 0 is the batch). For ``"autorep"`` that pass also
    calibrates each gate's polynomial on its input (see :meth:`HysteresisGate.calibrate`);
    :func:`~relulab.budget.mask_training.train_to_budget` calibrates again on training data.

    Args:
        model: the network; changed in place.
        example: an input batch.
        kind: ``"snl"`` or ``"autorep"``.
        per: ``"element"`` or ``"channel"``.
        **options: passed to each mask (e.g. ``threshold`` for ``"autorep"``).

    Returns:
        The masks, in the order the forward pass reaches them.

    Example::

        >>> net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(24, 2))
        >>> masks = insert_masks(net, torch.randn(2, 1, 8), "snl", per="channel")
        >>> masks
        [LinearizationMask(shape=(4, 6), per='channel', relus=24/24)]
        >>> net[1] is masks[0]
        True

    Raises:
        UserError: no ReLU found; a ReLU module applied more than once per forward pass (one
            mask per site is needed: give each use its own ``nn.ReLU``); one the example did
            not reach. The model is then left with plain ``nn.ReLU`` modules where its ReLUs
            were.
    """
    if kind not in ("snl", "autorep"):
        raise UserError(f"insert_masks: kind must be 'snl' or 'autorep', got {kind!r}")
    _check_shape((1,), per, "insert_masks")
    if not isinstance(model, nn.Module):
        raise UserError(f"insert_masks: model must be an nn.Module, got {type(model).__name__}")
    from relulab.surgery import replace_activations  # surgery imports much; only needed here

    reached: list[_Probe] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new, report = replace_activations(model, "relu", lambda site: _Probe(reached), inplace=True)
    if new is not model:
        raise UserError("insert_masks: the model is itself a ReLU; wrap it in a network")
    if not report.replaced:
        reasons = "; ".join(str(w.message) for w in caught)
        raise UserError(f"insert_masks: no ReLU to mask in {type(model).__name__}: {reasons}")
    for warning in caught:
        warnings.warn(str(warning.message), UserWarning, stacklevel=2)

    names: dict[int, list[str]] = {}  # a module shared by two parents has two names
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, _Probe):
            names.setdefault(id(module), []).append(name)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        for module, mode in modes:
            module.train(mode)
    probes = {id(m): m for m in model.modules() if isinstance(m, _Probe)}
    for key, probe in probes.items():
        if len(probe.shapes) != 1:
            for name in (n for group in names.values() for n in group):
                _set(model, name, nn.ReLU())
            why = (
                "was not reached by the example"
                if not probe.shapes
                else f"is applied {len(probe.shapes)} times per forward pass; one mask per "
                "site is needed, so give each use its own nn.ReLU"
            )
            raise UserError(f"insert_masks: the ReLU at {names[key][0]!r} {why}")
    dtype = _parameter_dtype(model, example)
    masks: list[Mask] = []
    for probe in reached:
        mask = _build(kind, probe.shapes[0][1:], per, options).to(example.device, dtype)
        if isinstance(mask, HysteresisGate):
            mask.calibrate(probe.example)
        _set(model, names[id(probe)][0], mask)
        masks.append(mask)
    return masks
