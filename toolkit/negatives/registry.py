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

import math
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


def check_generator_weights(generators: Sequence[str], weights: Sequence[float], mix: bool) -> tuple[float, ...]:
    """Validate per-generator weights for a mixed order: one finite weight > 0 per generator, or none."""
    weights = tuple(weights)
    if not weights:
        return weights
    if not mix:
        raise ValueError("generator weights set how often each generator leads a mixed order; they need "
                         "mix_generators = true (without it the generators are tried in the order listed)")
    if len(weights) != len(generators):
        raise ValueError(f"generator weights: {len(weights)} given for {len(generators)} generators "
                         f"{list(generators)}; give one per generator, in the same order")
    if not all(isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w > 0
               for w in weights):
        raise ValueError(f"generator weights must be finite numbers > 0, got {list(weights)}")
    return weights


def generator_order(generators: Sequence[str], rng: random.Random, mix: bool = False,
                    weights: Sequence[float] = ()) -> list[str]:
    """The order in which one sample tries the generators: as listed, or with `mix` a fresh random order
    per call. Unweighted, each generator leads equally often; with `weights`, each next place goes to one of
    the generators left with probability proportional to its weight, so a generator leads with probability
    weight / total and the others remain fallbacks in weighted order."""
    order = list(generators)
    if not mix:
        return order
    if not weights:
        rng.shuffle(order)  # the unweighted draw as it always was: existing runs keep their samples
        return order
    remaining = list(zip(order, weights, strict=True))
    drawn = []
    while remaining:
        pick = rng.choices(range(len(remaining)), weights=[weight for _, weight in remaining])[0]
        drawn.append(remaining.pop(pick)[0])
    return drawn


def generate_negative(first_a: TaggedSentence, first_b: TaggedSentence, rng: random.Random,
                      generators: Sequence[str] = ("swap_across",),
                      context: NegativeContext | None = None, mix: bool = False,
                      weights: Sequence[float] = ()) -> Negative | None:
    """The first negative that the generators, tried in order, produce (None when none can).

    With `mix`, the order is drawn per call (`generator_order`), so each generator leads equally often, or
    in proportion to `weights`, and the others remain fallbacks.
    """
    order = generator_order(check_generator_names(generators), rng, mix, weights)
    context = context or NegativeContext()
    for name in order:
        negative = GENERATORS[name](first_a, first_b, rng, context)
        if negative is not None:
            return negative
    return None


def generate_sentence_negative(sentence: TaggedSentence, rng: random.Random,
                               generators: Sequence[str] = ("swap_within",),
                               context: NegativeContext | None = None, mix: bool = False,
                               weights: Sequence[float] = ()) -> Negative | None:
    """A negative of one sentence alone (no partner), from the single-sentence generators tried in order
    (drawn per call with `mix`, weighted by `weights`: `generator_order`).

    Used when training without concatenation; `swap_across` needs two sentences and is refused here.
    """
    order = generator_order(check_generator_names(generators, single_sentence=True), rng, mix, weights)
    context = context or NegativeContext()
    screen = _Screen([sentence.text], context.excluded)
    for name in order:
        negative = first_allowed(name, sentence, rng, context, screen)
        if negative is not None:
            return negative
    return None
