"""Activation codes: which linear region each input lies in, as a binary word, and what it encodes.

A model built from linear layers and continuous piecewise-linear activations is affine on each
set of inputs that share an activation pattern, so the pattern names the input's linear region.
:func:`activation_codes` returns that pattern as bits; :func:`code_statistics` measures the two
encoding properties of Lei et al., "Neural networks behave as hash encoders": *determinism*
(almost every training example has a region of its own) and *categorization* (k-NN, logistic
regression and K-means on the codes alone classify the data).

The sites are found at run time by :func:`relulab.geometry.affine.run`, which sees every torch
call, so activation modules (``nn.ReLU`` calls ``F.relu``) and functional calls (``F.relu``,
``torch.relu``, ``x.clamp(0, 6)``) are found alike, with the same supported set and errors as
:func:`relulab.geometry.partition`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from relulab.errors import UserError
from relulab.geometry.affine import Site, as_float64, run, states
from relulab.optional import require


@dataclass(frozen=True)
class Codes:
    """The activation codes of a set of inputs.

    Attributes:
        bits: ``(N, D)`` bool, one row per input.
        columns: ``(D,)`` long, the position of each kept column in the full code, so the
            same columns can be taken from other data (``activation_codes(..., columns=...)``).
        sites: the activation sites, in execution order.
    """

    bits: Tensor
    columns: Tensor
    sites: list[Site]


@dataclass(frozen=True)
class CodeStatistics:
    """Determinism and categorization of activation codes (see :func:`code_statistics`).

    Attributes:
        examples: the number of training codes ``N``.
        distinct: the number of distinct training codes (occupied linear regions).
        redundancy_ratio: ``(N - distinct) / N``, the paper's determinism measure: 0 when
            every training example has its own region.
        knn_accuracy: test accuracy of k-NN (Hamming distance) fitted on the training codes.
        logistic_accuracy: test accuracy of one-vs-one logistic regression (liblinear).
        kmeans_accuracy: training accuracy of K-means (k = number of classes) after the
            Hungarian matching of clusters to classes.
        kmeans_test_accuracy: test accuracy of the same clusters and matching.
    """

    examples: int
    distinct: int
    redundancy_ratio: float
    knn_accuracy: float
    logistic_accuracy: float
    kmeans_accuracy: float
    kmeans_test_accuracy: float


def activation_codes(
    model: nn.Module,
    data: Tensor,
    *,
    drop_constant: bool = False,
    columns: Tensor | None = None,
    batch_size: int = 1024,
) -> Codes:
    """The binary activation pattern of ``model`` on each row of ``data``.

    Each activation site contributes, for every unit and every breakpoint ``b`` of the unit,
    the bit ``pre-activation > b``, ordered by site (execution order), then unit (flattened
    per-sample position), then breakpoint. relu, leaky_relu, prelu and abs have one breakpoint
    (``b = 0``), so one bit per unit, as in the paper. relu6, hardtanh and two-sided clamps have
    two (``low < high``) and give two bits per unit, ``(pre > low, pre > high)``: the three
    linear pieces as the thermometer words 00, 10, 11, so that the Hamming distance counts the
    breakpoints crossed, as it does for relu. A unit exactly at a breakpoint counts as below it.

    The model runs as a float64 copy (the original is left as it is), and must be in eval mode
    if it holds BatchNorm or dropout. It is run once per site, each time up to that site.

    Args:
        model: a piecewise-linear torch model (see :func:`relulab.geometry.partition`).
        data: ``(N, *input_shape)``.
        drop_constant: keep only the columns that are not constant over ``data`` (the paper's
            neural code). Columns chosen on training data can be applied to test data with
            ``columns=train_codes.columns``.
        columns: keep only these positions of the full code.
        batch_size: inputs per forward pass.

    Returns:
        :class:`Codes`.

    Example::

        >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3))
        >>> train = activation_codes(net, torch.randn(100, 2), drop_constant=True)
        >>> test = activation_codes(net, torch.randn(20, 2), columns=train.columns)
        >>> train.bits.shape[1] == test.bits.shape[1]
        True
    """
    if drop_constant and columns is not None:
        raise UserError("activation_codes: give drop_constant=True or columns, not both")
    if not isinstance(data, Tensor) or data.dim() < 2 or len(data) == 0:
        shape = tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__
        raise UserError(f"activation_codes: data must be a non-empty (N, ...) tensor, got {shape}")
    if batch_size < 1:
        raise UserError(f"activation_codes: batch_size must be >= 1, got {batch_size}")
    net = as_float64(model)
    inputs = data.detach().to(torch.float64)
    _, sites = run(net, inputs[:1])
    if not sites:
        raise UserError(
            "activation_codes: the model has no piecewise-linear activation (relu, leaky_relu, "
            "prelu, relu6, hardtanh, abs, clamp, max-pool)"
        )
    blocks = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        words = []
        for k, site in enumerate(sites):
            pre, _ = run(net, batch, stop=k, sites=sites)
            if site.kind == "max":  # which candidate is largest, one-hot over the window
                word = F.one_hot(states(pre, site).long(), site.window).bool()
            else:
                word = torch.stack([pre > b for b in site.breaks], dim=-1)
            words.append(word.reshape(len(pre), -1))
        blocks.append(torch.cat(words, dim=1))
    bits = torch.cat(blocks)
    width = bits.shape[1]
    if drop_constant:
        columns = torch.nonzero(bits.any(0) & ~bits.all(0)).flatten()
    elif columns is None:
        columns = torch.arange(width)
    else:
        columns = torch.as_tensor(columns, dtype=torch.long).flatten()
        if len(columns) and (columns.min() < 0 or columns.max() >= width):
            raise UserError(
                f"activation_codes: columns must lie in [0, {width}) for this model's "
                f"{width}-bit code, got {columns.min().item()}..{columns.max().item()}"
            )
    return Codes(bits[:, columns], columns, sites)


def matched_accuracy(labels: Any, clusters: Any) -> tuple[float, dict[int, Any]]:
    """Clustering accuracy after the Hungarian matching of clusters to classes.

    The one-to-one matching that maximizes the number of agreements
    (:func:`scipy.optimize.linear_sum_assignment` on the contingency matrix).

    Returns:
        ``(accuracy, matching)``: the fraction of examples whose cluster is matched to their
        class, and the matching as ``{cluster: class}`` (unmatched clusters are absent).
    """
    optimize = require("scipy.optimize", extra="bench", purpose="code_statistics")
    cluster = require("sklearn.metrics.cluster", extra="bench", purpose="code_statistics")
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    classes, cluster_ids = np.unique(labels), np.unique(clusters)
    table = cluster.contingency_matrix(labels, clusters)  # (classes, clusters)
    rows, cols = optimize.linear_sum_assignment(table, maximize=True)
    matching = {cluster_ids[c].item(): classes[r].item() for r, c in zip(rows, cols)}
    return float(table[rows, cols].sum() / len(labels)), matching


def code_statistics(
    codes_train: Codes | Tensor | np.ndarray,
    y_train: Any,
    codes_test: Codes | Tensor | np.ndarray,
    y_test: Any,
    *,
    k: int = 9,
    seed: int = 9,
) -> CodeStatistics:
    """Determinism and categorization of activation codes, as in Lei et al.

    The classifiers are scikit-learn's: ``KNeighborsClassifier(n_neighbors=k,
    metric="hamming")`` fitted on the training codes; one-vs-one ``LogisticRegression``
    (liblinear), as in the paper's code; ``KMeans`` with as many clusters as training classes
    (``random_state=seed``, 10 starts), clusters matched to classes by
    :func:`matched_accuracy` on the training codes and the same matching used on the test
    codes. Constant columns change none of these but K-means' starts; drop them with
    ``activation_codes(..., drop_constant=True)`` to follow the paper.

    Args:
        codes_train: ``(N, D)`` training codes (:class:`Codes`, a bool tensor or array).
        y_train: ``(N,)`` training labels.
        codes_test: ``(M, D)`` test codes, the same columns as ``codes_train``.
        y_test: ``(M,)`` test labels.
        k: neighbours for k-NN.
        seed: K-means' random state.

    Returns:
        :class:`CodeStatistics`.
    """
    neighbors = require("sklearn.neighbors", extra="bench", purpose="code_statistics")
    linear = require("sklearn.linear_model", extra="bench", purpose="code_statistics")
    multiclass = require("sklearn.multiclass", extra="bench", purpose="code_statistics")
    cluster = require("sklearn.cluster", extra="bench", purpose="code_statistics")
    train, y_train = _codes_array(codes_train, y_train, "train")
    test, y_test = _codes_array(codes_test, y_test, "test")
    if train.shape[1] != test.shape[1]:
        raise UserError(
            f"code_statistics: train codes have {train.shape[1]} columns and test codes "
            f"{test.shape[1]}; take the test codes with columns=train_codes.columns"
        )
    if not 1 <= k <= len(train):
        raise UserError(f"code_statistics: k must lie in [1, {len(train)}], got {k}")
    distinct = len(np.unique(train, axis=0))
    knn = neighbors.KNeighborsClassifier(n_neighbors=k, metric="hamming").fit(train, y_train)
    logistic = multiclass.OneVsOneClassifier(
        linear.LogisticRegression(solver="liblinear", max_iter=1000)
    ).fit(train.astype(np.float64), y_train)
    kmeans = cluster.KMeans(n_clusters=len(np.unique(y_train)), n_init=10, random_state=seed)
    train_clusters = kmeans.fit_predict(train.astype(np.float64))
    kmeans_accuracy, matching = matched_accuracy(y_train, train_clusters)
    test_clusters = kmeans.predict(test.astype(np.float64))
    matched = np.array([matching.get(c, None) for c in test_clusters.tolist()], dtype=object)
    return CodeStatistics(
        examples=len(train),
        distinct=distinct,
        redundancy_ratio=(len(train) - distinct) / len(train),
        knn_accuracy=float(knn.score(test, y_test)),
        logistic_accuracy=float(logistic.score(test.astype(np.float64), y_test)),
        kmeans_accuracy=kmeans_accuracy,
        kmeans_test_accuracy=float(np.mean(matched == y_test.astype(object))),
    )


def _codes_array(codes: Any, labels: Any, which: str) -> tuple[np.ndarray, np.ndarray]:
    bits = codes.bits if isinstance(codes, Codes) else codes
    bits = bits.cpu().numpy() if isinstance(bits, Tensor) else np.asarray(bits)
    labels = labels.cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if bits.ndim != 2 or len(bits) == 0:
        raise UserError(f"code_statistics: {which} codes must be (N, D), got {bits.shape}")
    if labels.shape != (len(bits),):
        raise UserError(
            f"code_statistics: {len(bits)} {which} codes but labels of shape {labels.shape}"
        )
    return bits.astype(bool), labels
