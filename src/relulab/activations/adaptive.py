"""Activations that look beyond one element: VeLU (per-sample scaling) and SmartMixed."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from relulab import functional as F
from relulab.activations.base import Activation, check_count, check_number, scalar_parameter
from relulab.errors import UserError
from relulab.registry import register


@register(
    "velu",
    formula="λ·x·σ(α·(arctan(β₁x) + arcsin(clip(β₂x, −1, 1))))·(1 + γ·tanh(μ/√(mean(x²) + ε)))",
    paper="Shakarami et al. 2025, VeLU: Variance-enhanced Learning Unit for Deep Neural "
    "Networks, arXiv:2504.15051",
    function=F.velu,
    elementwise=False,
    trainable=("scale",),
    notes="Follows the authors' Keras code (github.com/AshkanShakarami/VeLU, Apr 2025), not "
    "the paper text, which could not be read: the statistic inside tanh is the inverse RMS "
    "over the feature axis per sample (not a momentum-smoothed std); no clamp of the scale; "
    "the W2 term is mean² + (std − 1)² of the output, an auxiliary loss.",
)
class VeLU(Activation):
    r"""Variance-enhanced learning unit.

    .. math::
        \mathrm{VeLU}(x) = \lambda\,x\,\sigma\!\big(\alpha(\arctan(\beta_1 x)
        + \arcsin(\mathrm{clip}(\beta_2 x, -1, 1)))\big)\,\big(1 + \gamma\tanh(\mu\,r)\big),
        \quad r = \big(\mathrm{mean}_{dim}(x^2) + \varepsilon\big)^{-1/2}

    λ is trained; the rest are hyperparameters. In training mode the module also stores
    ``aux_loss = lambda_ot · (mean(y)² + (std(y) − 1)²)`` (y before λ), a squared W₂ distance
    of the output's Gaussian fit from N(0, 1), for the training loop to add to its loss.

    Unconfirmed: the paper's own equations could not be read. Defaults and the form of r,
    the W₂ term and the absence of a clamp follow the authors' Keras code (April 2025), where
    the parameter called ``momentum`` is the μ here. A secondary summary instead describes r
    as a momentum-smoothed standard deviation and clamps the scale to [0.5, 2]; with
    |γ| ≤ 0.5 that clamp never acts.

    Args:
        scale: initial λ (trainable). Default: 1.0
        alpha: α. Default: 0.1
        beta1: β₁. Default: 0.1
        beta2: β₂. Default: 0.1
        gamma: γ. Default: 0.1
        mu: μ. Default: 0.9
        eps: ε. Default: 1e-06
        dim: the feature axis that r averages over. Default: 1
        lambda_ot: weight of the W₂ auxiliary loss (0 disables it). Default: 0.1

    Shape:
        - Input: :math:`(N, C, *)`, features along ``dim``.
        - Output: the shape of the input.

    Example::

        >>> m = VeLU()
        >>> m(torch.randn(4, 16)).shape
        torch.Size([4, 16])
        >>> m.aux_loss is not None
        True
    """

    def __init__(
        self,
        scale: float = 1.0,
        alpha: float = 0.1,
        beta1: float = 0.1,
        beta2: float = 0.1,
        gamma: float = 0.1,
        mu: float = 0.9,
        eps: float = 1e-6,
        dim: int = 1,
        lambda_ot: float = 0.1,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise UserError(f"velu: dim must be an integer, got {dim!r}")
        super().__init__(
            scale=check_number("velu", "scale", scale),
            alpha=check_number("velu", "alpha", alpha),
            beta1=check_number("velu", "beta1", beta1),
            beta2=check_number("velu", "beta2", beta2),
            gamma=check_number("velu", "gamma", gamma),
            mu=check_number("velu", "mu", mu),
            eps=check_number("velu", "eps", eps, above=0.0),
            dim=dim,
            lambda_ot=check_number("velu", "lambda_ot", lambda_ot, at_least=0.0),
        )
        self.scale = scalar_parameter(scale)
        self.aux_loss: Tensor | None = None

    def __getstate__(self) -> dict:
        # aux_loss belongs to the last forward's graph: not part of the module's state (and
        # a non-leaf tensor cannot be deep-copied).
        state = self.__dict__.copy()
        state["aux_loss"] = None
        return state

    def reference(self, x: Tensor) -> Tensor:
        if not -x.dim() <= self.dim < x.dim() or x.dim() < 2:
            raise UserError(
                f"velu: expected input of shape (N, C, ...) with features along dim={self.dim}, "
                f"got shape {tuple(x.shape)}"
            )
        unscaled = F.velu(
            x, 1.0, self.alpha, self.beta1, self.beta2, self.gamma, self.mu, self.eps, self.dim
        )
        use_penalty = self.training and self.lambda_ot > 0
        self.aux_loss = self.lambda_ot * F.velu_w2_penalty(unscaled) if use_penalty else None
        return self.scale * unscaled


@register(
    "smartmixed",
    formula="per neuron one of relu, sigmoid, tanh, leaky_relu, elu, selu, picked by hard "
    "Gumbel-softmax (phase 1), then fixed by argmax (phase 2)",
    paper="Omidvar 2025, SmartMixed: A Two-Phase Training Strategy for Adaptive Activation "
    "Function Learning in Neural Networks, arXiv:2510.22450",
    aliases=("smart_mixed",),
    function=F.smartmixed,
    monotonic=True,
    elementwise=False,
    trainable=("logits",),
    notes="Eval mode in phase 1 uses each neuron's argmax instead of a Gumbel sample. Phase 2 "
    "does not clip, as in the authors' code.",
    flat_region=True,
)
class SmartMixed(Activation):
    r"""Per-neuron choice among six activations, learned by hard Gumbel-softmax.

    Phase 1 (training): for each feature c a one-hot :math:`w_c` is drawn by hard
    Gumbel-softmax over learned logits (temperature τ, straight-through gradient) and

    .. math::
        y_c = \mathrm{clip}\Big(\sum_k w_{c,k}\,\mathrm{clip}(\mathrm{act}_k(x_c))\Big),
        \quad \mathrm{act} \in (\mathrm{relu}, \sigma, \tanh, \mathrm{leaky\_relu},
        \mathrm{elu}, \mathrm{selu})

    with clip to [−10, 10]. In eval mode w is the argmax of the logits. :meth:`harden` fixes
    every feature's argmax for phase 2, where each feature applies its own activation
    (unclipped, as in the authors' code) and training of the rest of the network continues.

    Args:
        num_features: C, the number of features (dim 1 of the input).
        tau: Gumbel-softmax temperature. Default: 0.5
        clamp: the clip bound of phase 1. Default: 10.0

    Shape:
        - Input: :math:`(N, C, *)`.
        - Output: the shape of the input.

    Example::

        >>> m = SmartMixed(4)
        >>> m(torch.randn(2, 4)).shape
        torch.Size([2, 4])
        >>> m.harden().hardened
        True
    """

    def __init__(self, num_features: int, tau: float = 0.5, clamp: float = 10.0) -> None:
        super().__init__(
            num_features=check_count("smartmixed", "num_features", num_features),
            tau=check_number("smartmixed", "tau", tau, above=0.0),
            clamp=check_number("smartmixed", "clamp", clamp, above=0.0),
        )
        candidates = len(F.SMARTMIXED_CANDIDATES)
        # The authors' init: zeros, with 0.001 on one random candidate per neuron.
        logits = torch.zeros(num_features, candidates)
        logits[torch.arange(num_features), torch.randint(candidates, (num_features,))] = 1e-3
        self.logits = nn.Parameter(logits)
        # -1 until harden(); kept as a buffer so a phase-2 state_dict restores the choice.
        self.register_buffer("choice", torch.full((num_features,), -1, dtype=torch.long))
        # The phase as a Python flag: forward must not read a tensor to branch (a host sync
        # on GPUs, a graph break under torch.compile).
        self.hardened = False
        self.register_load_state_dict_post_hook(SmartMixed._sync_phase)

    @staticmethod
    def _sync_phase(module: SmartMixed, incompatible_keys) -> None:
        module.hardened = bool((module.choice >= 0).all())
        module.logits.requires_grad_(not module.hardened)

    def harden(self) -> SmartMixed:
        """Phase 2: fix each feature's activation to the argmax of its logits."""
        self.choice.copy_(self.logits.detach().argmax(-1))
        self.logits.requires_grad_(False)
        self.hardened = True
        return self

    def summary(self) -> dict[str, int]:
        """How many features use each candidate (chosen, or current argmax before harden)."""
        choice = self.choice if self.hardened else self.logits.detach().argmax(-1)
        counts = torch.bincount(choice, minlength=len(F.SMARTMIXED_CANDIDATES)).tolist()
        return dict(zip(F.SMARTMIXED_CANDIDATES, counts))

    def reference(self, x: Tensor) -> Tensor:
        if self.hardened:
            return F.smartmixed_select(x, self.choice)
        if self.training:
            weights = F.gumbel_one_hot(self.logits, self.tau)
        else:
            weights = nn.functional.one_hot(self.logits.argmax(-1), self.logits.shape[-1])
        return F.smartmixed(x, weights, self.clamp)
