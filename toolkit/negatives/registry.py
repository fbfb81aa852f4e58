"""The one registry of hard-negative generators: every place that names, checks or runs them uses it.

- `swap_across`: CLIC. Swap one like-class word between the two sentences of a pair.
- `swap_within`: NegCLIP style. Swap two like-class words inside one sentence.
- `replace`: SugarCrepe-replace style. One word becomes another of its meaning class.
- `swap_relation`: exchange the noun phrases around a relation ("a cat on a red ball").
- `swap_attribute`: exchange the adjectives of two noun phrases ("a white horse by a red fence").

All but `swap_across` edit one sentence (`SENTENCE_GENERATORS`); on a CLIC pair they edit one of its two
sentences and join it with the other.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from toolkit.core.errors import UsageError
from toolkit.negatives.generators import (
    Negative,
    NegativeContext,
    TaggedSentence,
    _Screen,
    edit_one_of_pair,
    first_allowed,
    hard_negative_swap_across,
)

PairGenerator = Callable[[TaggedSentence, TaggedSentence, random.Random, NegativeContext], "Negative | None"]

SENTENCE_GENERATORS: tuple[str, ...] = ("swap_within", "replace", "swap_relation", "swap_attribute")


class UnknownGeneratorError(UsageError, ValueError):
    """A configured generator name that the registry does not have (also a ValueError, for config checks)."""


def _swap_across(a: TaggedSentence, b: TaggedSentence, rng: random.Random, context: NegativeContext) -> Negative | None:
    return hard_negative_swap_across(a, b, rng, context.excluded)


def _lifted(name: str) -> PairGenerator:
    def generate(a: TaggedSentence, b: TaggedSentence, rng: random.Random,
                 context: NegativeContext) -> Negative | None:
        return edit_one_of_pair(name, a, b, rng, context)
    return generate


GENERATORS: dict[str, PairGenerator] = {"swap_across": _swap_across,
                                        **{name: _lifted(name) for name in SENTENCE_GENERATORS}}


def check_generator_names(names: Sequence[str], *, single_sentence: bool = False) -> tuple[str, ...]:
    """Validate a configured generator list; the error lists the known names."""
    known = SENTENCE_GENERATORS if single_sentence else tuple(GENERATORS)
    if not names:
        raise UnknownGeneratorError(f"at least one negative generator is needed; choose from {sorted(known)}")
    unknown = [n for n in names if n not in GENERATORS]
    if unknown:
        raise UnknownGeneratorError(f"unknown negative generator(s) {unknown}; choose from {sorted(known)}")
    pair_only = [n for n in names if n not in known]
    if pair_only:
        raise UnknownGeneratorError(f"generator(s) {pair_only} need two sentences; without concatenation "
                                    f"choose from {sorted(known)}")
    return tuple(names)


def generate_negative(first_a: TaggedSentence, first_b: TaggedSentence, rng: random.Random,
                      generators: Sequence[str] = ("swap_across",),
                      context: NegativeContext | None = None, mix: bool = False) -> Negative | None:
    """The first negative that the generators, tried in order, produce (None when none can).

    With `mix`, the order is shuffled per call, so each generator leads equally often and the others
    remain fallbacks.
    """
    order = list(check_generator_names(generators))
    if mix:
        rng.shuffle(order)
    context = context or NegativeContext()
    for name in order:
        negative = GENERATORS[name](first_a, first_b, rng, context)
        if negative is not None:
            return negative
    return None


def generate_sentence_negative(sentence: TaggedSentence, rng: random.Random,
                               generators: Sequence[str] = ("swap_within",),
                               context: NegativeContext | None = None, mix: bool = False) -> Negative | None:
    """A negative of one sentence alone (no partner), from the single-sentence generators tried in order.

    Used when training without concatenation; `swap_across` needs two sentences and is refused here.
    """
    order = list(check_generator_names(generators, single_sentence=True))
    if mix:
        rng.shuffle(order)
    context = context or NegativeContext()
    screen = _Screen([sentence.text], context.excluded)
    for name in order:
        negative = first_allowed(name, sentence, rng, context, screen)
        if negative is not None:
            return negative
    return None
