"""The character-level corpus shipped with relulab: Tiny Shakespeare.

The text (1,115,394 characters, 65 distinct; the works of Shakespeare are public domain, the
file comes from Karpathy's char-rnn, MIT) lies gzipped in ``relulab/data``; see the README
there for its source and checksum. It is split by position, not at random, so that the
validation text is a stretch the model has never seen any part of::

    corpus = load_corpus()
    ids = corpus.encode("ROMEO:")  # LongTensor of vocabulary indices
    corpus.decode(ids)  # 'ROMEO:'
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.resources
from dataclasses import dataclass, field

import torch

from relulab.errors import UserError

CORPUS_FILE = "tinyshakespeare.txt.gz"
CORPUS_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TRAIN_FRACTION = 0.9  # the first 90% of the characters train, the last 10% validate


@dataclass(frozen=True)
class CharCorpus:
    """A text, its vocabulary (its distinct characters, sorted) and a positional split.

    Attributes:
        text: the whole text.
        vocab: the distinct characters, sorted; a character's index is its token id.
        train: token ids of the first ``TRAIN_FRACTION`` of the text, a LongTensor.
        val: token ids of the rest.
    """

    text: str = field(repr=False)
    vocab: list[str]

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {character: i for i, character in enumerate(self.vocab)}

    @functools.cached_property
    def _ids(self) -> torch.Tensor:
        return self.encode(self.text)

    @property
    def train(self) -> torch.Tensor:
        return self._ids[: int(TRAIN_FRACTION * len(self.text))]

    @property
    def val(self) -> torch.Tensor:
        return self._ids[int(TRAIN_FRACTION * len(self.text)) :]

    def encode(self, text: str) -> torch.Tensor:
        """Token ids of ``text`` (a LongTensor); UserError for a character not in the vocab."""
        index = self._index
        try:
            return torch.tensor([index[character] for character in text], dtype=torch.long)
        except KeyError as error:
            raise UserError(
                f"character {error.args[0]!r} is not in the corpus's {len(self.vocab)}-character"
                " vocabulary"
            ) from None

    def decode(self, ids: torch.Tensor) -> str:
        """The text of a 1-D tensor (or sequence) of token ids."""
        return "".join(self.vocab[i] for i in torch.as_tensor(ids).reshape(-1).tolist())


@functools.lru_cache(maxsize=1)
def load_corpus() -> CharCorpus:
    """Tiny Shakespeare, checked against its SHA-256, split 90/10 by position.

    Example::

        >>> corpus = load_corpus()
        >>> len(corpus.vocab), len(corpus.train), len(corpus.val)
        (65, 1003854, 111540)
    """
    raw = gzip.decompress(
        (importlib.resources.files("relulab") / "data" / CORPUS_FILE).read_bytes()
    )
    digest = hashlib.sha256(raw).hexdigest()
    if digest != CORPUS_SHA256:  # a damaged installation, not a user mistake
        raise RuntimeError(f"{CORPUS_FILE}: SHA-256 {digest}, expected {CORPUS_SHA256}")
    text = raw.decode("utf-8")
    return CharCorpus(text, sorted(set(text)))
