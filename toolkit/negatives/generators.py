"""Hard negatives: captions that differ from a true one by one small, meaningful edit. Pure functions.

Generators work on the tags stored at ingest (tokens + Universal POS per sentence) and never run NLP.
All randomness comes from the `rng` passed in, so a negative is a pure function of (inputs, rng state).

Generators, by name in `GENERATORS` (each called on the two first sentences of a CLIC pair):
- `swap_across`: CLIC. Swap one word of a shared tag class between the two sentences.
- `swap_within`: NegCLIP style. Swap two words of one tag class inside one of the sentences.
- `replace`: SugarCrepe-replace style. One word becomes a same-class word from the corpus vocabulary.

`SENTENCE_GENERATORS` holds the ones that need a single sentence only (`swap_within`, `replace`), for
training without concatenation (`generate_sentence_negative`).

A candidate whose `match_key` (case, whitespace and punctuation ignored) equals a positive's, or that is
in the exclusion set (negatives reviewers flagged as actually true), is never emitted: the generator
tries its other choices, then returns None. Exclusion sets hold `match_key` forms (see
`NegativeContext.with_exclusions`), and a text is excluded when it, or any sentence the edit altered,
is in the set.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

# Tag classes never swapped or replaced: function words whose swap rarely changes what is depicted.
EXCLUDED_TAGS = frozenset({"AUX", "DET", "INTJ", "PART", "PUNCT", "SYM", "X", "SCONJ", "CCONJ"})
# Bounds the retries when candidates keep colliding with positives or the exclusion set.
MAX_ATTEMPTS = 32

_NON_WORD = re.compile(r"[\W_]+")
_HAS_ALNUM = re.compile(r"[^\W_]")
_VOCAB_WORD = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)*")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")
_CLITICS = frozenset({"'s", "'re", "'ve", "'ll", "'d", "'m", "n't", "’s", "’re", "’ve", "’ll", "’d", "’m",
                      "n’t", "'", "’"})
_NO_SPACE_BEFORE = frozenset({".", ",", "!", "?", ";", ":", ")", "]", "}", "%", "...", "…", "”"})
_NO_SPACE_AFTER = frozenset({"(", "[", "{", "$", "#", "“"})
_JOINERS = frozenset({"-", "/"})  # spaCy splits "black-and-white" and "and/or" into infix tokens
_ATTACH_LEFT = _NO_SPACE_BEFORE | _CLITICS | _JOINERS
_ATTACH_RIGHT = _NO_SPACE_AFTER | _JOINERS


@dataclass(frozen=True)
class TaggedSentence:
    """One stored sentence: spaCy tokens and their Universal POS tags, aligned one to one."""

    tokens: tuple[str, ...]
    pos: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(self.tokens))
        object.__setattr__(self, "pos", tuple(self.pos))
        if len(self.tokens) != len(self.pos):
            raise ValueError(f"tokens and POS tags must align, got {len(self.tokens)} tokens and "
                             f"{len(self.pos)} tags for {self.tokens!r}; re-tag this caption")
        if not self.tokens:
            raise ValueError("a tagged sentence needs at least one token")

    @classmethod
    def of(cls, tokens: Sequence[str], pos: Sequence[str]) -> TaggedSentence:
        return cls(tuple(tokens), tuple(pos))

    @cached_property
    def text(self) -> str:  # cached: a sentence's text is needed several times per sample
        return detokenize(self.tokens)

    def word_count(self) -> int:
        return sum(1 for tag in self.pos if tag not in ("PUNCT", "SPACE"))


@dataclass(frozen=True)
class Negative:
    """A generated hard negative, with the generator that made it and what it changed."""

    text: str
    generator: str
    detail: dict[str, Any] = field(default_factory=dict)


def match_key(text: str) -> str:
    """The form under which two captions count as the same: lowercase, punctuation and spacing ignored."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def detokenize(tokens: Sequence[str]) -> str:
    """Join spaCy tokens into natural text ("hat." not "hat ."); no whitespace is stored, so rules decide."""
    parts: list[str] = []
    glue_next = False
    quote_open = False
    for token in tokens:
        if not token.strip():
            continue
        attach_left = token in _ATTACH_LEFT or (token[0] in "'’nN" and token.lower() in _CLITICS)
        attach_right = token in _ATTACH_RIGHT
        if token == '"':
            attach_left, attach_right = quote_open, not quote_open
            quote_open = not quote_open
        if parts and not glue_next and not attach_left:
            parts.append(" ")
        parts.append(token)
        glue_next = attach_right
    return "".join(parts)


def join_sentences(sentences: Iterable[str]) -> str:
    """"c1. c2.": each sentence ends in . ! or ? (a full stop is added only where none is), space-joined."""
    pieces = []
    for sentence in sentences:
        sentence = sentence.strip()
        if not sentence:
            continue
        pieces.append(sentence if _SENTENCE_END.search(sentence) else sentence + ".")
    return " ".join(pieces)


def build_vocabulary(sentences: Iterable[TaggedSentence], min_count: int = 1) -> dict[str, list[str]]:
    """Tag class -> the corpus's words of that class (lowercase, sorted), for `hard_negative_replace`.

    Only alphabetic words (hyphens/apostrophes inside allowed) of classes outside EXCLUDED_TAGS count;
    `min_count` drops rare words (often tagging errors or typos).
    """
    counts: dict[str, dict[str, int]] = {}
    for sentence in sentences:
        for token, tag in zip(sentence.tokens, sentence.pos, strict=True):
            if tag in EXCLUDED_TAGS or not _VOCAB_WORD.fullmatch(token):
                continue
            per_tag = counts.setdefault(tag, {})
            word = token.lower()
            per_tag[word] = per_tag.get(word, 0) + 1
    return {tag: sorted(w for w, n in words.items() if n >= min_count)
            for tag, words in sorted(counts.items()) if any(n >= min_count for n in words.values())}


# --- shared machinery -------------------------------------------------------------------------------

@lru_cache(maxsize=1 << 16)
def _token_key(token: str) -> str:
    """match_key of one token, cached: the same few thousand words recur in every sample."""
    return match_key(token)


def _is_word(token: str) -> bool:
    return _HAS_ALNUM.search(token) is not None


def _surface(sentence: TaggedSentence, index: int) -> str:
    """A word as it should read mid-sentence: sentence-initial capitals are undone (names keep theirs)."""
    token = sentence.tokens[index]
    if index == 0 and sentence.pos[index] != "PROPN" and not token.isupper():
        return token[:1].lower() + token[1:]
    return token


def _replace_all(sentence: TaggedSentence, word: str, new_surface: str) -> tuple[str, ...]:
    """Every whole-token occurrence of `word` (case-insensitive) becomes `new_surface`."""
    out = []
    for index, token in enumerate(sentence.tokens):
        if token.lower() != word:
            out.append(token)
        elif index == 0 and token[:1].isupper():
            out.append(new_surface[:1].upper() + new_surface[1:])
        else:
            out.append(new_surface)
    return tuple(out)


def _words_by_tag(sentence: TaggedSentence, skip: Collection[str]) -> dict[str, dict[str, str]]:
    """Tag -> {lowercase word: mid-sentence surface}, in order of first appearance; words whose
    match_key is in `skip` are left out."""
    found: dict[str, dict[str, str]] = {}
    for index, (token, tag) in enumerate(zip(sentence.tokens, sentence.pos, strict=True)):
        word = token.lower()
        if tag in EXCLUDED_TAGS or not _is_word(token) or _token_key(token) in skip:
            continue
        found.setdefault(tag, {}).setdefault(word, _surface(sentence, index))
    return found


class _Screen:
    """Decides whether a candidate text may be emitted."""

    def __init__(self, positives: Iterable[str], excluded: Collection[str]) -> None:
        self.blocked = {match_key(p) for p in positives}
        self.excluded = excluded  # already match_key-normalised: it can be large, and is checked per sample

    def allows(self, text: str, altered_sentences: Iterable[str] = ()) -> bool:
        key = match_key(text)
        if not key or key in self.blocked or key in self.excluded:
            return False
        return all(match_key(s) not in self.excluded for s in altered_sentences)


def _pick_untried(rng: random.Random, options: Mapping[str, Sequence[str]],
                  pairs: Callable[[str], Iterable[tuple[str, str]]],
                  tried: set[tuple[str, str, str]]) -> tuple[str, str, str] | None:
    """Draw a tag class, then a word pair of it, uniformly among those not tried yet."""
    open_tags = [tag for tag in options if any((tag, *p) not in tried for p in pairs(tag))]
    if not open_tags:
        return None
    tag = rng.choice(open_tags)
    open_pairs = [p for p in pairs(tag) if (tag, *p) not in tried]
    firsts = list(dict.fromkeys(p[0] for p in open_pairs))
    first = rng.choice(firsts)
    second = rng.choice([p[1] for p in open_pairs if p[0] == first])
    return tag, first, second


# --- CLIC: swap across the two sentences -----------------------------------------------------------

_PairCandidate = tuple[tuple[str, ...], tuple[str, ...], dict[str, Any]]


def _swap_across_candidates(first_a: TaggedSentence, first_b: TaggedSentence,
                            rng: random.Random) -> Iterator[_PairCandidate]:
    # Shared means the same word up to case and punctuation ("Hat" and "hat." are shared).
    shared = {_token_key(t) for t in first_a.tokens} & {_token_key(t) for t in first_b.tokens}
    words_a = _words_by_tag(first_a, shared)
    words_b = _words_by_tag(first_b, shared)
    options = {tag: list(words_a[tag]) for tag in sorted(words_a) if tag in words_b}
    fallback = not options
    if fallback:
        # No shared class: swap two random words. Shared words stay out (swapping them changes nothing).
        pool_a = {t.lower(): _surface(first_a, i) for i, t in enumerate(first_a.tokens)
                  if _is_word(t) and _token_key(t) not in shared}
        pool_b = {t.lower(): _surface(first_b, i) for i, t in enumerate(first_b.tokens)
                  if _is_word(t) and _token_key(t) not in shared}
        words_a, words_b = {"*": pool_a}, {"*": pool_b}
        options = {"*": list(pool_a)} if pool_a and pool_b else {}

    def pairs(tag: str) -> Iterator[tuple[str, str]]:
        return ((wa, wb) for wa in words_a[tag] for wb in words_b[tag])

    tried: set[tuple[str, str, str]] = set()
    for _ in range(MAX_ATTEMPTS):
        pick = _pick_untried(rng, options, pairs, tried)
        if pick is None:
            return
        tried.add(pick)
        tag, word_a, word_b = pick
        yield (_replace_all(first_a, word_a, words_b[tag][word_b]),
               _replace_all(first_b, word_b, words_a[tag][word_a]),
               {"tag": None if fallback else tag, "words": [word_a, word_b], "fallback": fallback})


def hard_negative_swap_across(first_a: TaggedSentence, first_b: TaggedSentence, rng: random.Random,
                              excluded: Collection[str] = frozenset()) -> Negative | None:
    """CLIC's negative: swap a word of a shared tag class between the sentences, join them in random order.

    Classes in EXCLUDED_TAGS and words both sentences contain are left out; without a shared class two
    random words are swapped. Whole words, all occurrences. `excluded` holds match_key forms never to
    emit. `detail`: tag, words, fallback, order.
    """
    text_a, text_b = first_a.text, first_b.text
    screen = _Screen([join_sentences([text_a, text_b]), join_sentences([text_b, text_a])], excluded)
    for tokens_a, tokens_b, detail in _swap_across_candidates(first_a, first_b, rng):
        altered_a, altered_b = detokenize(tokens_a), detokenize(tokens_b)
        a_first = rng.random() < 0.5
        text = join_sentences([altered_a, altered_b] if a_first else [altered_b, altered_a])
        if screen.allows(text, [altered_a, altered_b]):
            return Negative(text, "swap_across", {**detail, "order": "ab" if a_first else "ba"})
    return None


def _first_allowed(name: str, candidates: Iterable[tuple[tuple[str, ...], dict[str, Any]]],
                   screen: _Screen) -> Negative | None:
    """The first candidate edit of one sentence that the screen lets through."""
    for tokens, detail in candidates:
        text = detokenize(tokens)
        if screen.allows(text):
            return Negative(text, name, detail)
    return None


# --- NegCLIP: swap within one sentence -------------------------------------------------------------

def _swap_within_candidates(sentence: TaggedSentence,
                            rng: random.Random) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    words = _words_by_tag(sentence, ())
    options = {tag: list(found) for tag, found in sorted(words.items()) if len(found) >= 2}

    def pairs(tag: str) -> Iterator[tuple[str, str]]:
        return ((w1, w2) for w1 in words[tag] for w2 in words[tag] if w1 != w2)

    tried: set[tuple[str, str, str]] = set()
    for _ in range(MAX_ATTEMPTS):
        pick = _pick_untried(rng, options, pairs, tried)
        if pick is None:
            return
        tag, first, second = pick
        tried.update({pick, (tag, second, first)})  # (x, y) and (y, x) make the same sentence
        swapped = []
        for index, token in enumerate(sentence.tokens):
            word = token.lower()
            if word in (first, second):
                other = words[tag][second if word == first else first]
                swapped.append(other[:1].upper() + other[1:] if index == 0 and token[:1].isupper() else other)
            else:
                swapped.append(token)
        yield tuple(swapped), {"tag": tag, "words": [first, second]}


def hard_negative_swap_within(sentence: TaggedSentence, rng: random.Random,
                              excluded: Collection[str] = frozenset()) -> Negative | None:
    """Swap two different words of one tag class inside the sentence (all occurrences of each)."""
    return _first_allowed("swap_within", _swap_within_candidates(sentence, rng), _Screen([sentence.text], excluded))


# --- SugarCrepe-replace: a same-class word from the corpus -----------------------------------------

def _replace_candidates(sentence: TaggedSentence, vocabulary: Mapping[str, Sequence[str]],
                        rng: random.Random) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    present = {t.lower() for t in sentence.tokens}
    slots = [i for i, (token, tag) in enumerate(zip(sentence.tokens, sentence.pos, strict=True))
             if tag not in EXCLUDED_TAGS and _is_word(token)
             and any(w not in present for w in vocabulary.get(tag, ()))]
    tried: set[tuple[int, str]] = set()
    for _ in range(MAX_ATTEMPTS):
        if not slots:
            return
        index = rng.choice(slots)
        choices = [w for w in vocabulary[sentence.pos[index]] if w not in present and (index, w) not in tried]
        if not choices:
            slots.remove(index)
            continue
        word = rng.choice(choices)
        tried.add((index, word))
        original = sentence.tokens[index]
        new = word[:1].upper() + word[1:] if index == 0 and original[:1].isupper() else word
        tokens = (*sentence.tokens[:index], new, *sentence.tokens[index + 1:])
        yield tokens, {"tag": sentence.pos[index], "words": [original.lower(), word], "position": index}


def hard_negative_replace(sentence: TaggedSentence, vocabulary: Mapping[str, Sequence[str]],
                          rng: random.Random, excluded: Collection[str] = frozenset()) -> Negative | None:
    """Replace one word by another word of its tag class from `vocabulary` (see `build_vocabulary`).

    Words already in the sentence are never drawn, so the edit always changes the sentence.
    """
    return _first_allowed("replace", _replace_candidates(sentence, vocabulary, rng),
                          _Screen([sentence.text], excluded))


# --- the registry: every generator called on a CLIC pair -------------------------------------------

@dataclass(frozen=True)
class NegativeContext:
    """What generators may need beyond the pair: the corpus vocabulary and the exclusion set."""

    vocabulary: Mapping[str, Sequence[str]] = field(default_factory=dict)
    excluded: frozenset[str] = frozenset()  # match_key-normalised texts that must never be emitted

    @classmethod
    def with_exclusions(cls, texts: Iterable[str],
                        vocabulary: Mapping[str, Sequence[str]] | None = None) -> NegativeContext:
        return cls(vocabulary or {}, frozenset(match_key(t) for t in texts))


PairGenerator = Callable[[TaggedSentence, TaggedSentence, random.Random, NegativeContext], "Negative | None"]
SentenceCandidates = Callable[[TaggedSentence, random.Random, NegativeContext],
                              Iterator[tuple[tuple[str, ...], dict[str, Any]]]]


def _swap_across_pair(a: TaggedSentence, b: TaggedSentence, rng: random.Random,
                      context: NegativeContext) -> Negative | None:
    return hard_negative_swap_across(a, b, rng, context.excluded)


def _edit_one_of_pair(name: str, candidates: SentenceCandidates) -> PairGenerator:
    """Lift a one-sentence edit to a pair: edit one sentence (random, the other if it has no candidate)
    and join it with the untouched one in random order, like CLIC's negative."""

    def generate(a: TaggedSentence, b: TaggedSentence, rng: random.Random,
                 context: NegativeContext) -> Negative | None:
        text_a, text_b = a.text, b.text
        screen = _Screen([join_sentences([text_a, text_b]), join_sentences([text_b, text_a]), text_a, text_b],
                         context.excluded)
        targets = [("a", a, text_b), ("b", b, text_a)]
        if rng.random() < 0.5:
            targets.reverse()
        for which, sentence, untouched in targets:
            for tokens, detail in candidates(sentence, rng, context):
                altered = detokenize(tokens)
                edited_first = rng.random() < 0.5
                text = join_sentences([altered, untouched] if edited_first else [untouched, altered])
                if screen.allows(text, [altered]):
                    return Negative(text, name, {**detail, "edited": which,
                                                 "order": "edited_first" if edited_first else "edited_last"})
        return None

    return generate


SENTENCE_GENERATORS: dict[str, SentenceCandidates] = {
    "swap_within": lambda s, rng, _ctx: _swap_within_candidates(s, rng),
    "replace": lambda s, rng, ctx: _replace_candidates(s, ctx.vocabulary, rng),
}
GENERATORS: dict[str, PairGenerator] = {
    "swap_across": _swap_across_pair,
    **{name: _edit_one_of_pair(name, candidates) for name, candidates in SENTENCE_GENERATORS.items()},
}


def check_generator_names(names: Sequence[str]) -> tuple[str, ...]:
    """Validate a configured generator list; the error lists the known names."""
    if not names:
        raise ValueError(f"at least one negative generator is needed; choose from {sorted(GENERATORS)}")
    unknown = [n for n in names if n not in GENERATORS]
    if unknown:
        raise ValueError(f"unknown negative generator(s) {unknown}; choose from {sorted(GENERATORS)}")
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
    order = list(check_generator_names(generators))
    pair_only = [name for name in order if name not in SENTENCE_GENERATORS]
    if pair_only:
        raise ValueError(f"generator(s) {pair_only} need two sentences; without concatenation choose from "
                         f"{sorted(SENTENCE_GENERATORS)}")
    if mix:
        rng.shuffle(order)
    context = context or NegativeContext()
    screen = _Screen([sentence.text], context.excluded)
    for name in order:
        negative = _first_allowed(name, SENTENCE_GENERATORS[name](sentence, rng, context), screen)
        if negative is not None:
            return negative
    return None
