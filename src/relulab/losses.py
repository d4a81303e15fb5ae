"""Preference losses: RePO's ReLU hinge beside SimPO and DPO, and the margins they consume.

RePO (arXiv 2503.07426) writes SimPO's loss on the length-normalised margin

.. math::
    M = \\frac{1}{|y_w|}\\log\\pi(y_w|x) - \\frac{1}{|y_l|}\\log\\pi(y_l|x)

and replaces its logistic loss by ReLU: as beta grows, SimPO's per-pair gradient weight
sigma(beta * (gamma - M)) tends to RePO's indicator 1[M < gamma], so pairs whose margin already
reaches gamma stop contributing. :func:`sequence_logps` and :func:`preference_margin` compute
M from model logits; the three losses take margins or log-probabilities and average over pairs.
"""

import math

import torch.nn.functional as F
from torch import Tensor

from relulab.errors import UserError

__all__ = ["dpo_loss", "preference_margin", "repo_loss", "sequence_logps", "simpo_loss"]


def _check_beta(beta: float) -> None:
    # nan and inf would silently give a nan loss or a step function
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise UserError(f"beta must be a finite number > 0, got {beta!r}")


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise UserError(f"expected tensors of one shape, got {listed}")


def repo_loss(margin: Tensor, gamma: float) -> Tensor:
    r"""RePO's ReLU preference loss, the mean hinge on the margin.

    .. math::
        L = \operatorname{mean}\big(\operatorname{ReLU}(\gamma - M)\big)

    From "RePO: ReLU-based Preference Optimization" (arXiv 2503.07426). Its gradient with
    respect to each margin is ``-1/N`` where ``M < gamma`` and exactly zero where
    ``M >= gamma``: those pairs are filtered out of the update.

    Args:
        margin: length-normalised margins ``M`` (see :func:`preference_margin`).
        gamma: target margin, in margin units (the paper uses values in [0, 1]).

    Shape:
        - margin: :math:`(*)`, any shape; the mean is over all elements.
        - Output: scalar.

    Example::

        >>> repo_loss(torch.tensor([0.0, 0.2, 1.0]), gamma=0.5)
        tensor(0.2667)
    """
    return F.relu(gamma - margin).mean()


def simpo_loss(margin: Tensor, beta: float, gamma: float) -> Tensor:
    r"""SimPO's logistic preference loss, written on the margin as RePO writes it.

    .. math::
        L = \operatorname{mean}\big(-\log\sigma(\beta (M - \gamma))\big)

    From "SimPO: Simple Preference Optimization with a Reference-Free Reward"
    (arXiv 2405.14734), in the form of RePO (arXiv 2503.07426). Here ``gamma`` is in margin
    units; the SimPO paper's :math:`\gamma` is ``beta * gamma`` of this function. The gradient
    weight of a pair, ``sigma(beta * (gamma - M))``, tends to RePO's ``1[M < gamma]`` as
    ``beta`` grows.

    Args:
        margin: length-normalised margins ``M`` (see :func:`preference_margin`).
        beta: inverse temperature, > 0 (SimPO uses about 2 to 10).
        gamma: target margin, in margin units.

    Shape:
        - margin: :math:`(*)`, any shape; the mean is over all elements.
        - Output: scalar.

    Example::

        >>> simpo_loss(torch.tensor([0.0, 0.5]), beta=2.0, gamma=0.5)
        tensor(1.0032)
    """
    _check_beta(beta)
    return -F.logsigmoid(beta * (margin - gamma)).mean()


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> Tensor:
    r"""DPO's loss on summed sequence log-probabilities of a policy and a frozen reference.

    .. math::
        L = \operatorname{mean}\Big(-\log\sigma\big(\beta\,[(\log\pi_w - \log\pi^{ref}_w)
            - (\log\pi_l - \log\pi^{ref}_l)]\big)\Big)

    From "Direct Preference Optimization: Your Language Model is Secretly a Reward Model"
    (Rafailov et al. 2023, arXiv 2305.18290).

    Args:
        policy_chosen_logps: log-probabilities of the chosen sequences under the policy.
        policy_rejected_logps: log-probabilities of the rejected sequences under the policy.
        ref_chosen_logps: log-probabilities of the chosen sequences under the reference.
        ref_rejected_logps: log-probabilities of the rejected sequences under the reference.
        beta: strength of the implicit KL penalty, > 0 (the paper uses 0.1 to 0.5).

    Shape:
        - All four inputs: :math:`(N)`, one shape.
        - Output: scalar.

    Example::

        >>> z = torch.zeros(2)
        >>> dpo_loss(torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0]), z, z, beta=0.5)
        tensor(0.6437)
    """
    _check_beta(beta)
    _check_same_shape(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    logits = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return -F.logsigmoid(beta * logits).mean()


def sequence_logps(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    r"""Length-normalised log-probability of each sequence, padding excluded.

    .. math::
        \frac{1}{\sum_t m_t} \sum_t m_t \log \operatorname{softmax}(z_t)[y_t]

    ``logits[:, t]`` must already predict ``labels[:, t]`` (shift them before calling, as a
    language model's logits at position t predict token t + 1). Labels at masked-out positions
    are ignored, so padding may hold any value (e.g. -100).

    Args:
        logits: model outputs over the vocabulary.
        labels: token ids, in ``[0, V)`` where ``mask`` is set.
        mask: 1/True for tokens of the response, 0/False for prompt and padding; each row
            needs at least one set entry.

    Shape:
        - logits: :math:`(N, T, V)`.
        - labels, mask: :math:`(N, T)`.
        - Output: :math:`(N)`.

    Example::

        >>> logits = torch.zeros(1, 3, 4)  # uniform over 4 tokens
        >>> sequence_logps(logits, torch.tensor([[1, 2, -100]]), torch.tensor([[1, 1, 0]]))
        tensor([-1.3863])
    """
    if logits.dim() != 3:
        raise UserError(f"logits must have shape (N, T, V), got {tuple(logits.shape)}")
    _check_same_shape(logits_without_vocab=logits[..., 0], labels=labels, mask=mask)
    mask = mask.bool()
    counts = mask.sum(dim=1)
    empty = (counts == 0).nonzero().flatten()
    if len(empty):
        raise UserError(f"mask rows {empty.tolist()} are all zero: each sequence needs a token")
    # padding labels such as -100 would break gather; their terms are masked out below
    safe_labels = labels.masked_fill(~mask, 0).long()
    token_logps = logits.log_softmax(dim=-1).gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask).sum(dim=1) / counts


def preference_margin(
    chosen_logits: Tensor,
    chosen_labels: Tensor,
    chosen_mask: Tensor,
    rejected_logits: Tensor,
    rejected_labels: Tensor,
    rejected_mask: Tensor,
) -> Tensor:
    r"""SimPO/RePO margin: chosen minus rejected length-normalised log-probability.

    .. math::
        M = \frac{1}{|y_w|}\log\pi(y_w|x) - \frac{1}{|y_l|}\log\pi(y_l|x)

    Each side goes through :func:`sequence_logps`; chosen and rejected may differ in length.

    Args:
        chosen_logits, chosen_labels, chosen_mask: the preferred responses.
        rejected_logits, rejected_labels, rejected_mask: the dispreferred responses.

    Shape:
        - chosen: :math:`(N, T_w, V)`, :math:`(N, T_w)`, :math:`(N, T_w)`.
        - rejected: :math:`(N, T_l, V)`, :math:`(N, T_l)`, :math:`(N, T_l)`.
        - Output: :math:`(N)`.

    Example::

        >>> logits = torch.zeros(1, 2, 4)
        >>> ids, mask = torch.tensor([[0, 1]]), torch.ones(1, 2)
        >>> preference_margin(logits, ids, mask, logits, ids, mask)
        tensor([0.])
    """
    chosen = sequence_logps(chosen_logits, chosen_labels, chosen_mask)
    rejected = sequence_logps(rejected_logits, rejected_labels, rejected_mask)
    if chosen.shape != rejected.shape:
        raise UserError(
            f"chosen and rejected need the same number of pairs, got {len(chosen)} "
            f"and {len(rejected)}"
        )
    return chosen - rejected
