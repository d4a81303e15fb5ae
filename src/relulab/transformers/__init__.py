"""relulab.transformers: a small GPT lab for ReLU in language models.

    from relulab.transformers import GPT, GPTConfig, attention_entropy, load_corpus, relufy

    corpus = load_corpus()  # Tiny Shakespeare, split 90/10 by position
    model = GPT(GPTConfig(vocab_size=len(corpus.vocab), activation="gelu"))
    relufy(model, stage=2)  # ReLU in every FFN and after the norms that feed QKV and the FFN
    rela = GPT(GPTConfig(attention="rela"))  # ReLU attention with a gated RMSNorm
    attention_entropy(rela, corpus.val[:64][None])  # (n_layer, n_head), nats per query

Hugging Face's ``transformers`` package, where needed, is imported inside the functions that
use it (the ``transformers`` extra), so importing this package does not import it.

The function :func:`relufy` shares its name with the submodule that defines it, and the
package attribute is the function: ``relulab.transformers.relufy`` (and so ``import
relulab.transformers.relufy as m``) gives the function, while ``from relulab.transformers.relufy
import find_ffns`` and ``importlib.import_module("relulab.transformers.relufy")`` still give
the submodule's contents.
"""

from relulab.transformers.attention_stats import (
    AttentionStats,
    attention_entropy,
    attention_statistics,
)
from relulab.transformers.corpus import CharCorpus, load_corpus
from relulab.transformers.gpt import (
    ATTENTION_NORMS,
    ATTENTION_WEIGHTS,
    ATTENTIONS,
    GPT,
    Block,
    CausalSelfAttention,
    FeedForward,
    GatedRMSNorm,
    GPTConfig,
    KVCache,
    relu_attention,
    softmax_attention,
)
from relulab.transformers.relufication import RelufyConfig, relufication
from relulab.transformers.relufy import relufy, relufy_plan
from relulab.transformers.sparsity import SparsityMeter, measure_sparsity
from relulab.transformers.train import TrainConfig, load_checkpoint, train_gpt

__all__ = [
    "ATTENTIONS",
    "ATTENTION_NORMS",
    "ATTENTION_WEIGHTS",
    "GPT",
    "AttentionStats",
    "Block",
    "CausalSelfAttention",
    "CharCorpus",
    "FeedForward",
    "GPTConfig",
    "GatedRMSNorm",
    "KVCache",
    "RelufyConfig",
    "SparsityMeter",
    "TrainConfig",
    "attention_entropy",
    "attention_statistics",
    "load_checkpoint",
    "load_corpus",
    "measure_sparsity",
    "relu_attention",
    "relufication",
    "relufy",
    "relufy_plan",
    "softmax_attention",
    "train_gpt",
]
