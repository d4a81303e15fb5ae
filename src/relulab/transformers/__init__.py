"""relulab.transformers: a small GPT lab for ReLU in language models.

    from relulab.transformers import GPT, GPTConfig, load_corpus

    corpus = load_corpus()  # Tiny Shakespeare, split 90/10 by position
    model = GPT(GPTConfig(vocab_size=len(corpus.vocab), activation="relu"))

Hugging Face's ``transformers`` package, where needed, is imported inside the functions that
use it (the ``transformers`` extra).
"""

from relulab.transformers.corpus import CharCorpus, load_corpus
from relulab.transformers.gpt import (
    ATTENTIONS,
    GPT,
    Block,
    CausalSelfAttention,
    FeedForward,
    GPTConfig,
    KVCache,
)

__all__ = [
    "ATTENTIONS",
    "GPT",
    "Block",
    "CausalSelfAttention",
    "CharCorpus",
    "FeedForward",
    "GPTConfig",
    "KVCache",
    "load_corpus",
]
