"""The ``charlm`` bench task: a small GPT on Tiny Shakespeare, compared by validation loss.

``relulab bench --tasks charlm --acts relu gelu silu`` trains one :class:`~relulab.transformers.
GPT` per activation and seed, the activation in every FFN, and compares them on the held-out
last 10% of the text.

How a sequence task fits the bench, which scores examples:

- ``x_train``: (N, T) windows of token ids at random positions of the training split (drawn
  once, from :data:`~relulab.bench.tasks.DATA_SEED`); ``y_train``: (N, T), each the next
  token. An epoch is one pass over these windows.
- ``x_test``: (M, T) windows spread evenly over the validation split; ``y_test``: (M·T,) the
  next token at every position, window by window. Every position is one example of the test
  set, so the trainer flattens the model's (M, V, T) logits to (M·T, V), and the loss,
  calibration and the replicas' prediction difference are per character.
- The score (higher is better, in [0, 1] as the bench's tables expect) is exp(−validation
  loss): the geometric mean of the probability given to the true next character, i.e.
  1/perplexity. It is a monotone function of the validation loss, which every trial also
  records as ``test_loss`` (nats per character, summary.csv's ``test_loss_mean``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from relulab.bench.models import ActivationFactory
from relulab.bench.tasks import DATA_SEED, Task, TaskData, register_task
from relulab.transformers.corpus import load_corpus
from relulab.transformers.gpt import GPT, GPTConfig


class CharLM(nn.Module):
    """A :class:`GPT` whose forward returns only the logits, as (B, vocab, T): the class
    dimension on dim 1, where ``F.cross_entropy`` and the bench's ``softmax(dim=1)`` look."""

    def __init__(self, config: GPTConfig, activation: ActivationFactory):
        super().__init__()
        self.gpt = GPT(config, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, _ = self.gpt(x)
        return logits.transpose(1, 2)


def _windows(ids: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    """(len(starts), length) slices ``ids[s : s + length]``."""
    return ids[starts[:, None] + torch.arange(length)]


@register_task
@dataclass(frozen=True)
class CharLMTask(Task):
    """Next-character prediction on Tiny Shakespeare with a 2-layer GPT (n_embd 64, 4 heads,
    FFN hidden 256, context 64), the activation in every FFN.

    Quick: 4 epochs of 6,400 windows = 800 steps of 32 × 64 characters (1.6 M characters,
    about a minute a trial on one core). It reaches a validation loss of 1.87 (GELU), 1.89
    (ReLU), 1.91 (SiLU) nats per character, mean of seeds 0-2, where character frequencies
    alone (a unigram model) give 3.35. Validation: 128 windows = 8,192 characters, spread
    over the whole validation split (each trial keeps their probabilities, 2 MB).
    """

    name: ClassVar[str] = "charlm"
    description: ClassVar[str] = (
        "Tiny Shakespeare next character, GPT 2 layers x 64 (4 heads, FFN 256, context 64)"
    )
    metric: ClassVar[str] = "exp(-val loss)"
    # the bench's tables show the loss beside the score; see relulab.bench.report.loss_label
    loss_label: ClassVar[str] = "val loss (nats/char)"
    # 65 classes are the vocabulary: rare characters ($, &, 3, Q, X) are rightly absent from
    # the 8,192 validation characters, so the small-test-set warning's per-class check would
    # warn falsely (see relulab.bench.runner.warn_if_small)
    per_class_check: ClassVar[bool] = False
    epochs: ClassVar[dict[str, int]] = {"quick": 4, "full": 12}
    batch_size: ClassVar[int] = 32
    learning_rate: ClassVar[float] = 3e-3
    cooldown: ClassVar[float] = 0.2
    context: int = 64
    train_windows: int = 6400
    test_windows: int = 128
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64

    def load(self) -> TaskData:
        corpus = load_corpus()
        generator = torch.Generator().manual_seed(DATA_SEED)
        # +1: each window's targets run one character past it
        train = torch.randint(
            len(corpus.train) - self.context, (self.train_windows,), generator=generator
        )
        test = torch.linspace(0, len(corpus.val) - self.context - 1, self.test_windows).long()
        return TaskData(
            _windows(corpus.train, train, self.context),
            _windows(corpus.train, train + 1, self.context),
            _windows(corpus.val, test, self.context),
            _windows(corpus.val, test + 1, self.context).reshape(-1),
            len(corpus.vocab),
        )

    def model(self, activation: ActivationFactory, data: TaskData) -> nn.Module:
        # config.activation stays at its default: the bench's factory makes each FFN's one.
        config = GPTConfig(
            vocab_size=data.classes,
            block_size=self.context,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
        )
        return CharLM(config, activation)

    def score(self, probabilities: torch.Tensor, labels: torch.Tensor) -> float:
        """exp(mean log-probability of the true next character) = exp(−loss) = 1/perplexity."""
        true = probabilities.gather(1, labels.reshape(-1, 1)).double()
        return math.exp(float(true.log().mean()))
