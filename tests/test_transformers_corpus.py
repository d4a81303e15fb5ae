"""The shipped corpus: its checksum (the one published with char-rnn's input.txt), its
positional 90/10 split and the character codec."""

from __future__ import annotations

import hashlib

import pytest
import torch

from relulab.errors import UserError
from relulab.transformers import load_corpus

# sha256 of char-rnn's data/tinyshakespeare/input.txt (1,115,394 bytes)
INPUT_TXT_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def test_text_is_char_rnns_tiny_shakespeare():
    corpus = load_corpus()
    raw = corpus.text.encode("utf-8")
    assert len(raw) == 1_115_394
    assert hashlib.sha256(raw).hexdigest() == INPUT_TXT_SHA256
    assert corpus.text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.")


def test_vocab_is_the_sorted_distinct_characters():
    corpus = load_corpus()
    assert len(corpus.vocab) == 65
    assert corpus.vocab[:3] == ["\n", " ", "!"] and corpus.vocab[-1] == "z"
    assert corpus.vocab == sorted(corpus.vocab) and set(corpus.vocab) == set(corpus.text)


def test_split_is_first_90_percent_by_position():
    corpus = load_corpus()
    cut = 1_003_854  # int(0.9 · 1,115,394)
    assert (len(corpus.train), len(corpus.val)) == (cut, 1_115_394 - cut)
    assert corpus.train.dtype == torch.long
    index = {c: i for i, c in enumerate(sorted(set(corpus.text)))}
    for start in (0, 123_456, cut - 50):  # spot checks against the text itself
        assert corpus.train[start : start + 50].tolist() == [
            index[c] for c in corpus.text[start : start + 50]
        ]
    assert corpus.val[:40].tolist() == [index[c] for c in corpus.text[cut : cut + 40]]
    assert corpus.val[-40:].tolist() == [index[c] for c in corpus.text[-40:]]


def test_encode_decode_round_trip():
    corpus = load_corpus()
    text = "ROMEO:\nBut, soft! what light through yonder window breaks?"
    ids = corpus.encode(text)
    assert ids.dtype == torch.long and ids.shape == (len(text),)
    assert ids[:2].tolist() == [corpus.vocab.index("R"), corpus.vocab.index("O")]
    assert corpus.decode(ids) == text
    assert corpus.decode(corpus.val[:500]) == corpus.text[1_003_854 : 1_003_854 + 500]


def test_unknown_character_is_a_user_error():
    with pytest.raises(UserError, match="character '#' is not in the corpus's 65-character"):
        load_corpus().encode("a#b")
