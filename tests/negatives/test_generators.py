"""Hard-negative generators: pure functions on stored tags (no torch imported here)."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest

from tests.helpers import REPO, tagged
from toolkit.negatives.generators import (
    NegativeContext,
    TaggedSentence,
    build_vocabulary,
    detokenize,
    hard_negative_replace,
    hard_negative_swap_across,
    hard_negative_swap_within,
    join_sentences,
    match_key,
)
from toolkit.negatives.registry import GENERATORS, generate_negative

# Generators that work on rows stored without a parse (tokens and Universal POS only); swap_relation and
# swap_attribute need the dependency tree (tests/negatives/test_real_captions.py covers them on parsed captions).
LEGACY_GENERATORS = ("swap_across", "swap_within", "replace")




MAN = tagged("a man wearing a black hat .", "DET NOUN VERB DET ADJ NOUN PUNCT")
WATER = tagged("a water feature in a garden .", "DET NOUN NOUN ADP DET NOUN PUNCT")
CUBE = tagged("a red cube left of a blue ball .", "DET ADJ NOUN ADV ADP DET ADJ NOUN PUNCT")


class ScriptedRandom(random.Random):
    """An rng whose choices are given: `choice` returns the next scripted value (which must be offered)."""

    def __init__(self, choices: Sequence[Any], coin: float = 0.0) -> None:
        super().__init__(0)
        self.script = list(choices)
        self.coin = coin

    def choice(self, seq: Sequence[Any]) -> Any:
        wanted = self.script.pop(0)
        assert wanted in seq, f"{wanted!r} not among {list(seq)!r}"
        return wanted

    def random(self) -> float:
        return self.coin


def test_generators_and_samples_import_without_torch() -> None:
    code = "import sys, toolkit.negatives.generators, toolkit.data.samples; assert 'torch' not in sys.modules, 'torch!'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr


def test_method_md_example_exactly() -> None:
    example = "a water wearing a black hat. a man feature in a garden."
    negatives = {n.text: n for n in (hard_negative_swap_across(MAN, WATER, random.Random(seed)) for seed in range(60))
                 if n is not None}
    negative = negatives[example]
    assert negative.generator == "swap_across"
    assert negative.detail == {"class": "NOUN", "words": ["man", "water"], "positions": [1, 1], "order": "ab"}
    assert "a man feature in a garden. a water wearing a black hat." in negatives  # the other order


def test_swap_across_reaches_exactly_the_valid_swaps() -> None:
    # Shared words (a, .) are out; NOUN is the only class both have: {man, hat} x {water, feature, garden}.
    expected = set()
    for word_a in ("man", "hat"):
        for word_b in ("water", "feature", "garden"):
            altered_a = " ".join(word_b if t == word_a else t for t in MAN.tokens[:-1]) + "."
            altered_b = " ".join(word_a if t == word_b else t for t in WATER.tokens[:-1]) + "."
            expected |= {f"{altered_a} {altered_b}", f"{altered_b} {altered_a}"}
    seen = {hard_negative_swap_across(MAN, WATER, random.Random(seed)).text  # type: ignore[union-attr]
            for seed in range(300)}
    assert seen == expected
    assert "a water wearing a black hat. a man feature in a garden." in seen


def test_shared_words_are_never_swapped() -> None:
    a = tagged("a dog chases a ball near another dog .", "DET NOUN VERB DET NOUN ADP DET NOUN PUNCT")
    b = tagged("a ball sits beside a cat .", "DET NOUN VERB ADP DET NOUN PUNCT")
    for seed in range(50):
        negative = hard_negative_swap_across(a, b, random.Random(seed))
        assert negative is not None
        assert "ball" not in negative.detail["words"]


def test_no_shared_class_gives_no_negative() -> None:
    # The old fallback swapped two random words ("very run. dogs quickly!"): ungrammatical, so it is gone.
    a = tagged("dogs run .", "NOUN VERB PUNCT")
    b = tagged("very quickly !", "ADV ADV PUNCT")
    assert hard_negative_swap_across(a, b, random.Random(0)) is None


def test_identical_sentences_give_no_negative() -> None:
    assert hard_negative_swap_across(MAN, MAN, random.Random(0)) is None


def test_sentence_initial_capitals_follow_the_position() -> None:
    a = tagged("A man wears a hat .", "DET NOUN VERB DET NOUN PUNCT")
    b = tagged("Water flows in a garden .", "NOUN VERB ADP DET NOUN PUNCT")
    texts = {hard_negative_swap_across(a, b, random.Random(seed)).text for seed in range(60)}  # type: ignore[union-attr]
    assert "A water wears a hat. Man flows in a garden." in texts


def test_candidates_equal_to_a_positive_are_skipped() -> None:
    # Untagged-style tokens: swapping "hat" and "hat!" only moves punctuation, which does not count.
    sentence = tagged("a hat on a hat! red", "DET NOUN ADP DET NOUN ADJ")
    assert hard_negative_swap_within(sentence, random.Random(0)) is None
    for seed in range(30):
        negative = hard_negative_swap_within(CUBE, random.Random(seed))
        assert negative is not None and match_key(negative.text) != match_key(CUBE.text)


def test_swap_within_swaps_two_words_of_one_class() -> None:
    seen = {hard_negative_swap_within(CUBE, random.Random(seed)).text  # type: ignore[union-attr]
            for seed in range(100)}
    assert seen == {"a blue cube left of a red ball.", "a red ball left of a blue cube."}


def test_exclusion_set_is_honoured() -> None:
    example = "a water wearing a black hat. a man feature in a garden."
    for seed in range(100):
        negative = hard_negative_swap_across(MAN, WATER, random.Random(seed), excluded={match_key(example)})
        assert negative is not None and match_key(negative.text) != match_key(example)
    # Excluding one altered sentence (a reviewer's "this is actually true") removes every text that holds it.
    flagged = {match_key("a man feature in a garden")}
    for seed in range(100):
        negative = hard_negative_swap_across(MAN, WATER, random.Random(seed), excluded=flagged)
        assert negative is not None and "a man feature in a garden." not in negative.text
    everything = {match_key("a blue cube left of a red ball."), match_key("A red ball left of a blue cube")}
    assert hard_negative_swap_within(CUBE, random.Random(0), excluded=everything) is None


def test_exclusions_reach_the_registry() -> None:
    context = NegativeContext.with_exclusions(["a blue cube left of a red ball."])
    for seed in range(40):
        negative = GENERATORS["swap_within"](CUBE, WATER, random.Random(seed), context)
        assert negative is not None and "a blue cube left of a red ball." not in negative.text


def test_same_seed_same_negative_for_every_generator() -> None:
    context = NegativeContext(build_vocabulary([MAN, WATER, CUBE]))
    for name in LEGACY_GENERATORS:
        first = generate_negative(MAN, CUBE, random.Random(7), [name], context)
        second = generate_negative(MAN, CUBE, random.Random(7), [name], context)
        assert first is not None and first == second and first.generator == name


def test_vocabulary_is_sorted_by_class_and_skips_function_words() -> None:
    vocabulary = build_vocabulary([MAN, WATER, CUBE])
    assert vocabulary == {
        "ADJ": ["black", "blue", "red"],
        "ADP": ["in", "of"],
        "ADV": ["left"],
        "NOUN": ["ball", "cube", "feature", "garden", "hat", "man", "water"],
        "VERB": ["wearing"],
    }
    assert build_vocabulary([MAN, MAN, WATER], min_count=2) == {"ADJ": ["black"], "NOUN": ["hat", "man"],
                                                                "VERB": ["wearing"]}


def test_replace_changes_one_word_within_its_meaning_class_preferring_the_corpus() -> None:
    vocabulary = {"ADJ": ["black", "green", "red"], "NOUN": ["cube", "hat", "man"]}
    seen = set()
    for seed in range(200):
        negative = hard_negative_replace(MAN, vocabulary, random.Random(seed))
        assert negative is not None and negative.generator == "replace"
        seen.add(negative.text)
        changed = [i for i, (x, y) in enumerate(zip(MAN.text.split(), negative.text.split(), strict=True))
                   if x != y and {x, y} != {"a", "an"}]  # the article follows the new word ("an officer")
        assert len(changed) == 1
    # Only words of the same meaning class that the corpus has: black -> green or red. The corpus has no other
    # person or garment, so man and hat stay; never "cube" for a man, as the POS-only replace did.
    assert seen == {"a man wearing a green hat.", "a man wearing a red hat."}
    lexicon_only = {hard_negative_replace(MAN, {}, random.Random(seed)).text for seed in range(200)}  # type: ignore[union-attr]
    assert any(t.startswith("a woman wearing") for t in lexicon_only)
    assert "a man wearing a black helmet." in lexicon_only


def test_generate_negative_falls_back_in_order() -> None:
    # Neither first sentence has two words of one class, so swap_within makes nothing and swap_across is used.
    a = tagged("a dog runs .", "DET NOUN VERB PUNCT")
    b = tagged("a cat sleeps .", "DET NOUN VERB PUNCT")
    negative = generate_negative(a, b, random.Random(0), ["swap_within", "swap_across"])
    assert negative is not None and negative.generator == "swap_across"
    assert generate_negative(a, b, random.Random(0), ["swap_within"]) is None
    with pytest.raises(ValueError, match=r"unknown negative generator.*'swap_sideways'"):
        generate_negative(a, b, random.Random(0), ["swap_sideways"])


def test_mixing_generators_uses_each() -> None:
    context = NegativeContext(build_vocabulary([MAN, WATER, CUBE]))
    negatives = [generate_negative(MAN, CUBE, random.Random(s), list(LEGACY_GENERATORS), context, mix=True)
                 for s in range(60)]
    used = {n.generator for n in negatives if n is not None}
    assert used == set(LEGACY_GENERATORS)


def test_detokenize_reads_naturally() -> None:
    tokens = ["A", "dog", "'s", "ball", "(", "red", ")", "and", '"', "hi", '"', "on", "a", "black", "-",
              "and", "-", "white", "rug", ",", "it", "does", "n't", "move", "!"]
    assert detokenize(tokens) == 'A dog\'s ball (red) and "hi" on a black-and-white rug, it doesn\'t move!'
    assert detokenize(["a", "cat", "."]) == "a cat."


def test_join_sentences_adds_a_full_stop_only_where_missing() -> None:
    assert join_sentences(["a man wearing a hat", "is it raining?", "a dog."]) == \
        "a man wearing a hat. is it raining? a dog."


def test_match_key_ignores_case_spacing_and_punctuation() -> None:
    assert match_key("A man  wearing a hat .") == match_key("a man wearing a hat") == "a man wearing a hat"


def test_misaligned_tags_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="2 tokens and 1 tags"):
        TaggedSentence.of(["a", "dog"], ["DET"])


def test_generator_order_as_listed_shuffled_or_weighted() -> None:
    import random
    from collections import Counter

    from toolkit.negatives.registry import generator_order

    names = ["swap_within", "swap_relation", "replace"]
    assert generator_order(names, random.Random(0)) == names
    # unweighted mixing is the plain shuffle it always was, draw for draw
    for seed in range(20):
        expected = list(names)
        random.Random(seed).shuffle(expected)
        assert generator_order(names, random.Random(seed), mix=True) == expected
    rng = random.Random(1)
    orders = [generator_order(names, rng, mix=True, weights=(6, 3, 1)) for _ in range(6000)]
    assert all(sorted(order) == sorted(names) for order in orders)  # every one tried, each once
    leads = Counter(order[0] for order in orders)
    for name, share in zip(names, (0.6, 0.3, 0.1), strict=True):
        assert abs(leads[name] / len(orders) - share) < 0.025, (name, leads)
    # the runner-up is weighted among those left: after swap_within, swap_relation 3 : replace 1
    after_first = Counter(order[1] for order in orders if order[0] == "swap_within")
    assert abs(after_first["swap_relation"] / sum(after_first.values()) - 0.75) < 0.04


def test_generator_weights_are_checked() -> None:
    from toolkit.data.samples import SampleConfig

    with pytest.raises(ValueError, match="need mix_generators = true"):
        SampleConfig(generators=("swap_within", "replace"), generator_weights=(1, 2))
    with pytest.raises(ValueError, match="2 given for 1 generators"):
        SampleConfig(generators=("swap_within",), mix_generators=True, generator_weights=(1, 2))
    for bad in ((1, -1), (1, float("inf")), (1, True)):
        with pytest.raises(ValueError, match="finite numbers > 0"):
            SampleConfig(generators=("swap_within", "replace"), mix_generators=True, generator_weights=bad)
    assert SampleConfig(generators=("swap_within", "replace"), mix_generators=True,
                        generator_weights=(1, 2)).generator_weights == (1, 2)
