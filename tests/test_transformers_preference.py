"""Preference pairs and tuning (relulab.transformers.preference) on a tiny GPT: the chosen side
really has more vowels, the margin is over the completion only, RePO leaves the weights alone
when every pair is filtered, and tuning raises the held-out margin."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from relulab.errors import UserError
from relulab.transformers.corpus import TRAIN_FRACTION, load_corpus
from relulab.transformers.gpt import GPT, GPTConfig
from relulab.transformers.preference import (
    Pairs,
    PreferenceConfig,
    make_pairs,
    pair_margins,
    tune,
    vowel_share,
)

SMALL = {"pairs": 96, "heldout": 24, "prompt_length": 8, "completion_length": 16,
         "batch_size": 8, "eval_interval": 2}  # fmt: skip


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=65, block_size=32, n_layer=1, n_head=2, n_embd=32)
    return GPT(config).eval()


@pytest.fixture(scope="module")
def pairs():
    model = tiny_gpt()
    config = PreferenceConfig(**SMALL)
    return (
        model,
        config,
        *make_pairs(model, load_corpus(), config, torch.Generator().manual_seed(0)),
    )


def recount(text: str) -> float:
    """Vowels among letters, by regular expressions (the corpus's letters are ASCII)."""
    letters = re.findall("[A-Za-z]", text)
    return len(re.findall("[aeiouAEIOU]", text)) / len(letters) if letters else 0.0


def test_vowel_share_counts_letters_only():
    assert vowel_share("Ab, c!") == pytest.approx(1 / 3)
    assert vowel_share(" ,;!\n") == 0.0  # no letters
    assert vowel_share("EEK") == pytest.approx(2 / 3)


def test_chosen_has_the_higher_vowel_share(pairs):
    _, config, train, heldout = pairs
    corpus = load_corpus()
    split = int(TRAIN_FRACTION * len(corpus.text))
    for found, count, text in ((train, config.pairs, corpus.text[:split]),
                               (heldout, config.heldout, corpus.text[split:])):  # fmt: skip
        assert len(found) == count  # ties were replaced by new draws
        assert found.prompts.shape == (count, config.prompt_length)
        assert found.chosen.shape == found.rejected.shape == (count, config.completion_length)
        for i in range(count):
            chosen = recount(corpus.decode(found.chosen[i]))
            rejected = recount(corpus.decode(found.rejected[i]))
            assert chosen > rejected
            assert found.chosen_score[i].item() == pytest.approx(chosen)
            assert found.rejected_score[i].item() == pytest.approx(rejected)
            assert corpus.decode(found.prompts[i]) in text  # a window of its split
    assert train.ties + heldout.ties > 0  # a random model's samples tie now and then


def test_margin_masks_the_prompt(pairs):
    """One pair's margin against log_softmax of the next token, one prefix at a time."""
    model, _, train, _ = pairs
    pair = train.select(torch.tensor([3]))
    prompt = pair.prompts[0]

    def mean_logp(completion: torch.Tensor) -> float:
        sequence = torch.cat([prompt, completion]).double()
        total = 0.0
        for j, token in enumerate(completion.tolist()):
            prefix = sequence[: len(prompt) + j].long()[None]
            logits = model(prefix)[0][0, -1].double()
            total += logits.log_softmax(-1)[token].item()
        return total / len(completion)

    expected = mean_logp(pair.chosen[0]) - mean_logp(pair.rejected[0])
    with torch.no_grad():
        found = pair_margins(model, pair).item()
    assert found == pytest.approx(expected, abs=1e-5)
    # counting the prompt's tokens would scale it by C / (P + C - 1): a visible difference
    assert abs(expected) * (1 - 16 / 23) > 1e-4


def _filtered_pairs(model: GPT, found: Pairs) -> Pairs:
    """The pairs, each turned so that the model already prefers the chosen side."""
    with torch.no_grad():
        swap = (pair_margins(model, found) < 0)[:, None]
    return Pairs(found.prompts, torch.where(swap, found.rejected, found.chosen),
                 torch.where(swap, found.chosen, found.rejected),
                 found.chosen_score, found.rejected_score)  # fmt: skip


@pytest.mark.parametrize("loss, gamma, moves", [("repo", 0.0, False), ("repo", 5.0, True),
                                                 ("simpo", 0.0, True)])  # fmt: skip
def test_repo_ignores_pairs_whose_margin_reaches_gamma(pairs, loss, gamma, moves):
    model, config, train, heldout = pairs
    turned = _filtered_pairs(model, train)
    config = PreferenceConfig(**{**SMALL, "gamma": gamma, "steps": 3, "eval_interval": 3})
    tuned = copy.deepcopy(model)
    history = tune(tuned, turned, loss, config, heldout=heldout)
    changed = [name for (name, p), q in zip(model.named_parameters(), tuned.parameters())
               if not torch.equal(p, q)]  # fmt: skip
    assert bool(changed) == moves
    if gamma == 0.0:
        assert history[0]["train_filtered"] == 1.0  # every margin > 0


def test_repo_raises_the_heldout_margin(pairs):
    """Margin up on pairs never trained on, filtered fraction up, samples richer in vowels."""
    model, _, train, heldout = pairs
    config = PreferenceConfig(**{**SMALL, "steps": 24, "eval_interval": 12,
                                 "learning_rate": 3e-3, "gamma": 0.25})  # fmt: skip
    history = tune(copy.deepcopy(model), train, "repo", config, heldout=heldout)
    assert [h["step"] for h in history] == [0, 12, 24]
    start, end = history[0], history[-1]
    assert end["heldout_margin"] > start["heldout_margin"] + 0.05
    assert start["train_filtered"] == 0.0 and end["train_filtered"] > 0.3
    assert end["vowel_share"] > start["vowel_share"] + 0.05


@pytest.mark.parametrize(
    "field, value",
    [("gamma", -0.1), ("gamma", float("nan")), ("beta", 0.0), ("beta", float("inf")),
     ("steps", 0), ("pairs", 4), ("learning_rate", -1e-3), ("completion_length", 0)],
)  # fmt: skip
def test_config_names_the_bad_value(field, value):
    with pytest.raises(UserError, match=field.split("_")[0]):
        PreferenceConfig(**{**SMALL, field: value})


def test_unknown_loss_suggests_the_nearest(pairs):
    model, config, train, heldout = pairs
    with pytest.raises(UserError, match="did you mean 'simpo'"):
        tune(model, train, "simp", config, heldout=heldout)


def test_prompt_and_completion_must_fit_the_block(pairs):
    model = pairs[0]
    config = PreferenceConfig(**{**SMALL, "completion_length": 30})
    with pytest.raises(UserError, match="block_size 32"):
        make_pairs(model, load_corpus(), config, torch.Generator())
