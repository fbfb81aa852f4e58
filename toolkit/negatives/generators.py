"""Hard negatives: captions that differ from a true one by one small, meaning-changing, grammatical edit.

Pure functions over the parse stored at ingest (`toolkit.core.parse.TaggedSentence`); they never run NLP.
All randomness comes from the `rng` passed in, so a negative is a pure function of (inputs, rng state).
The generators by name, and the functions that run them, are in `toolkit.negatives.registry`.

Rules every edit keeps (why: a negative the text alone can reject teaches a grammar detector, not
composition; SugarCrepe showed blind text models solving benchmarks built without them):
- like with like: a swap or replacement keeps the fine (Penn) tag; adjectives stay within their kind
  (colour with colour, see `lexicon`); a noun moved into a slot of the other number is inflected to it;
- pronouns, determiners, proper names and parts of compounds ("Fed Ex", "tennis racket") are never edited,
  nor quantity/relation nouns ("a group of", "in front of");
- never the two sides of a coordination ("X and Y"), never two forms of one lemma, never two synonyms;
- the article before every edited word is repaired ("an elephant" -> "a horse").

Each candidate is enumerated (`*_candidates`, deterministic); a generator draws among them with the rng.
A candidate whose `match_key` (case, whitespace and punctuation ignored) equals a positive's, or that is in
the exclusion set (negatives reviewers flagged as actually true), is never emitted.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from toolkit.core.parse import TaggedSentence, detokenize, render
from toolkit.negatives import lexicon

__all__ = ["MAX_ATTEMPTS", "Candidate", "Negative", "NegativeContext", "TaggedSentence", "build_vocabulary",
           "detokenize", "hard_negative_replace", "hard_negative_swap_across", "hard_negative_swap_within",
           "join_sentences", "match_key"]

# Bounds the retries when candidates keep colliding with positives or the exclusion set.
MAX_ATTEMPTS = 32
# Tag classes never edited (kept for `build_vocabulary`, whose output callers may still inspect).
EXCLUDED_TAGS = frozenset({"AUX", "DET", "INTJ", "PART", "PUNCT", "SYM", "X", "SCONJ", "CCONJ", "PRON"})

_NON_WORD = re.compile(r"[\W_]+")
_VOCAB_WORD = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)*")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")
_COORDINATORS = frozenset({"and", "or", "&", ",", "nor"})
_ADJECTIVE_KINDS = frozenset({"colour", "size", "material", "age", "pattern", "state", "temperature", "light"})
_COMPOUND_PARTS = frozenset({"compound", "flat", "nmod"})  # a modifier inside a compound or multi-word name


@dataclass(frozen=True)
class Negative:
    """A generated hard negative, with the generator that made it and what it changed."""

    text: str
    generator: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidate:
    """One possible edit of a sentence: the new tokens/spacing, the draw group (a slot), and what changed."""

    group: str
    tokens: tuple[str, ...]
    spaces: tuple[bool, ...]
    detail: dict[str, Any]

    @property
    def text(self) -> str:
        return render(self.tokens, self.spaces)


@dataclass(frozen=True)
class NegativeContext:
    """What generators may need beyond the pair: the corpus vocabulary and the exclusion set."""

    vocabulary: Mapping[str, Sequence[str]] = field(default_factory=dict)
    excluded: frozenset[str] = frozenset()  # match_key-normalised texts that must never be emitted
    # word -> its most frequent fine tag in the corpus (`build_word_tags`): `replace` only puts a word
    # where it reads as it usually does ("silver" is mostly a noun, so it does not replace "blue")
    word_tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of_corpus(cls, sentences: Iterable[TaggedSentence], excluded: Iterable[str] = ()) -> NegativeContext:
        sentences = list(sentences)
        return cls(build_vocabulary(sentences), frozenset(match_key(t) for t in excluded),
                   build_word_tags(sentences))

    @classmethod
    def with_exclusions(cls, texts: Iterable[str],
                        vocabulary: Mapping[str, Sequence[str]] | None = None) -> NegativeContext:
        return cls(vocabulary or {}, frozenset(match_key(t) for t in texts))


def match_key(text: str) -> str:
    """The form under which two captions count as the same: lowercase, punctuation and spacing ignored."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


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
    """Tag class -> the corpus's words of that class (lowercase, sorted): corpus statistics for `replace`,
    which prefers lexicon words the corpus uses. `min_count` drops rare words (often typos)."""
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


def build_word_tags(sentences: Iterable[TaggedSentence]) -> dict[str, str]:
    """Lowercase word -> its most frequent fine tag in `sentences` (ties: the alphabetically first tag)."""
    counts: dict[str, dict[str, int]] = {}
    for sentence in sentences:
        for token, fine in zip(sentence.tokens, sentence.fine, strict=True):
            per_word = counts.setdefault(token.lower(), {})
            per_word[fine] = per_word.get(fine, 0) + 1
    return {word: min(tags, key=lambda t: (-tags[t], t)) for word, tags in counts.items()}


# --- what may be edited ------------------------------------------------------------------------------

def slot_class(sentence: TaggedSentence, index: int) -> str | None:
    """The like-with-like class of a token that may be edited, or None when it must be left alone."""
    token = sentence.tokens[index]
    if not token.isalpha():
        return None
    low, upos, fine = token.lower(), sentence.pos[index], sentence.fine[index]
    lemma = sentence.lemma[index].lower()
    if low in lexicon.PRONOUNS or low in lexicon.DETERMINERS:
        return None
    if misread := _misread_adjective(sentence, index):
        return f"ADJ:{misread}"
    if sentence.parsed and _in_compound(sentence, index):
        return None
    if upos == "NOUN" and fine in ("NN", "NNS") and lemma not in lexicon.FUNCTIONAL_NOUNS:
        return "NOUN"
    if upos == "ADJ" and fine == "JJ" and lemma not in lexicon.FUNCTIONAL_ADJECTIVES:
        found = lexicon.kind(lemma)
        return f"ADJ:{found if found in _ADJECTIVE_KINDS else 'other'}"
    if upos == "VERB" and fine.startswith("VB") and lemma not in lexicon.FUNCTIONAL_VERBS:
        return f"VERB:{fine}"
    if upos == "NUM" and lexicon.kind(low) == "number":
        return "NUM"
    return None


def _lowercase_name(sentence: TaggedSentence, index: int) -> bool:
    """A lower-case word tagged as a proper noun. On short lower-case captions the small English tagger reads
    whole noun phrases as names ("a blue hexagon and a cyan star": NNP NNP ... NNP); names in captions are
    written with capitals ("a Fed Ex truck"), so a colour or size word read so is still an adjective of its
    kind. Other such words are not replaced or swapped word by word: as nouns their number is unknown
    ("zebras" as NNPS). Whole phrases around a relation may move (`_noun_reading`): no word changes form."""
    return sentence.pos[index] == "PROPN" and sentence.tokens[index].islower()


def _misread_adjective(sentence: TaggedSentence, index: int) -> str | None:
    """The adjective kind ("colour", "size", ...) of a lower-case word the tagger took for a name, else None."""
    if not _lowercase_name(sentence, index):
        return None
    found = lexicon.kind(sentence.tokens[index])
    return found if found in _ADJECTIVE_KINDS else None


def reading_tag(sentence: TaggedSentence, index: int) -> str:
    """The fine tag the generators read a token by: JJ for a lower-case colour or size word the tagger took
    for a name (`_lowercase_name`), else the tagger's. The audit checks edits against the same reading."""
    return "JJ" if _misread_adjective(sentence, index) else sentence.fine[index]


def _in_compound(sentence: TaggedSentence, index: int) -> bool:
    """Part of a multi-word name ("Fed Ex truck") or a compound modifier ("tennis" in "tennis racket").
    A compound's head noun ("racket") may be edited: the modifier stays and still reads as one."""
    if sentence.deps[index] in _COMPOUND_PARTS or sentence.pos[index] == "PROPN":
        return True
    return any(sentence.deps[c] == "compound" and sentence.pos[c] == "PROPN" and not _lowercase_name(sentence, c)
               for c in sentence.children(index))


def _conj_root(sentence: TaggedSentence, index: int) -> int:
    seen = 0
    while sentence.deps[index] == "conj" and seen < len(sentence.tokens):
        index, seen = sentence.heads[index], seen + 1
    return index


def coordinated(sentence: TaggedSentence, first: int, second: int) -> bool:
    """Whether two tokens are conjuncts of one coordination ("a dog and a cat", "black and white"): by the
    parse, or because only "and"/"or"/commas and determiners or adjectives stand between them (the parse
    misses some: "hair, a shirt and a tie"; exchanging those reads as the same list)."""
    if sentence.parsed and _conj_root(sentence, first) == _conj_root(sentence, second):
        return True
    first, second = sorted((first, second))
    between = range(first + 1, second)
    return any(sentence.tokens[k].lower() in _COORDINATORS for k in between) and all(
        sentence.tokens[k].lower() in _COORDINATORS or (sentence.pos[k] in ("DET", "NUM", "ADJ")
        and sentence.tokens[k].lower() != "no") for k in between)


def _related(first: str, second: str) -> bool:
    """Same lemma or synonyms: exchanging them keeps the meaning."""
    return first.lower() == second.lower() or lexicon.synonyms(first, second)


def _fit(word: str, word_number: str, sentence: TaggedSentence, index: int) -> str | None:
    """`word` as it reads in slot `index` of `sentence`: the slot's number and capitalisation. None for a
    noun whose singular and plural are one form ("sheep", "luggage") moved to a slot of the other number:
    the result could be read either way, and its determiner may then disagree."""
    new = word if word.isupper() and len(word) > 1 else word.lower()
    if sentence.pos[index] == "NOUN" and word_number in ("Sing", "Plur") and word_number != sentence.number[index]:
        inflected = lexicon.inflect_noun(new, word_number, sentence.number[index])
        if inflected == new:
            return None
        new = inflected
    if index == 0 and sentence.tokens[index][:1].isupper():
        new = new[:1].upper() + new[1:]
    return new


def _repair_articles(tokens: list[str]) -> list[str]:
    """a/an agree with the next word's sound after an edit ("a elephant" never survives)."""
    for index in range(len(tokens) - 1):
        low = tokens[index].lower()
        if low in ("a", "an") and tokens[index + 1][:1].isalnum():
            wanted = lexicon.article_for(tokens[index + 1])
            if wanted != low:
                tokens[index] = wanted[:1].upper() + wanted[1:] if tokens[index][:1].isupper() else wanted
    return tokens


def _spaces(sentence: TaggedSentence) -> tuple[bool, ...]:
    if sentence.spaces:
        return sentence.spaces
    text = detokenize(sentence.tokens)  # legacy rows: recover spacing from the rule-based text
    out, cursor = [], 0
    for token in sentence.tokens:
        found = text.find(token, cursor)
        cursor = found + len(token) if found >= 0 else cursor
        out.append(cursor < len(text) and text[cursor] == " ")
    return tuple(out)


def _with(sentence: TaggedSentence,
          changes: Mapping[int, str | None]) -> tuple[tuple[str, ...], tuple[bool, ...]] | None:
    if any(word is None for word in changes.values()):
        return None
    tokens = list(sentence.tokens)
    for index, word in changes.items():
        tokens[index] = str(word)
    return tuple(_repair_articles(tokens)), _spaces(sentence)


def _slots(sentence: TaggedSentence) -> list[tuple[int, str]]:
    return [(i, cls) for i in range(len(sentence.tokens)) if (cls := slot_class(sentence, i)) is not None]


# --- swaps within one sentence (NegCLIP) and across two (CLIC) --------------------------------------

def _swap_changes(sentence: TaggedSentence, i: int, j: int, same: Collection[int],
                  every: bool) -> dict[int, str | None]:
    """The exchange of tokens i and j; with `every`, also of the other occurrences of their words among
    `same` (like-class positions), as "a white shirt and a red hat with a white frisbee" -> "a red shirt
    and a white hat with a red frisbee"."""
    changes = {i: _fit(sentence.tokens[j], sentence.number[j], sentence, i),
               j: _fit(sentence.tokens[i], sentence.number[i], sentence, j)}
    if every:
        for k in same:
            if k not in (i, j) and sentence.fine[k] == sentence.fine[i]:
                source = j if sentence.lemma[k].lower() == sentence.lemma[i].lower() else \
                    i if sentence.lemma[k].lower() == sentence.lemma[j].lower() else None
                if source is not None:
                    changes[k] = _fit(sentence.tokens[source], sentence.number[source], sentence, k)
    return changes


def _swap_variants(sentence: TaggedSentence, i: int, j: int,
                   same: Collection[int]) -> Iterator[tuple[tuple[tuple[str, ...], tuple[bool, ...]], list[int]]]:
    single = _swap_changes(sentence, i, j, same, every=False)
    every = _swap_changes(sentence, i, j, same, every=True)
    for changes in (single, every) if len(every) > len(single) else (single,):
        edited = _with(sentence, changes)
        if edited is not None:
            yield edited, sorted(changes)


def swap_within_candidates(sentence: TaggedSentence) -> list[Candidate]:
    """Every exchange of two like-class words of one sentence that the rules allow."""
    slots = _slots(sentence)
    out = []
    for n, (i, cls) in enumerate(slots):
        for j, other in slots[n + 1:]:
            if other != cls or _related(sentence.lemma[i], sentence.lemma[j]) or coordinated(sentence, i, j):
                continue
            same = [k for k, c in slots if c == cls]
            for edited, positions in _swap_variants(sentence, i, j, same):
                out.append(Candidate(cls, *edited, {"class": cls, "words": [sentence.tokens[i].lower(),
                                     sentence.tokens[j].lower()], "positions": positions}))
    return out


def _modifiers(sentence: TaggedSentence) -> list[int]:
    """Attributes of a noun: adjectives (amod) and noun modifiers of a compound ("glass" in "glass table")."""
    out = []
    for i, token in enumerate(sentence.tokens):
        head = sentence.heads[i]
        if head == i or sentence.pos[head] not in ("NOUN", "PROPN") or not token.isalpha() \
                or token.lower() in lexicon.PRONOUNS:
            continue
        # An adjective may describe a name too ("a brown teddy bear", tagged as one): only it moves.
        lemma = sentence.lemma[i].lower()
        adjective = sentence.deps[i] == "amod" and sentence.fine[i] == "JJ" and \
            lemma not in lexicon.FUNCTIONAL_ADJECTIVES
        noun = sentence.deps[i] == "compound" and sentence.fine[i] == "NN" and sentence.pos[i] == "NOUN" and \
            sentence.pos[head] == "NOUN" and lemma not in lexicon.FUNCTIONAL_NOUNS
        if adjective or noun:
            out.append(i)
    return out


def _attribute_spans(sentence: TaggedSentence, modifiers: Sequence[int]) -> list[tuple[int, int, int]]:
    """(start, end, noun) of each adjective attribute, coordinated adjectives as one ("black and white" in
    "a black and white fence"): the unit `_coordinated_attribute_swaps` moves."""
    out = []
    for i in modifiers:
        if sentence.fine[i] != "JJ":
            continue
        conjuncts = [k for k in range(i + 1, len(sentence.tokens))
                     if sentence.heads[k] == i and sentence.deps[k] == "conj"]
        end = max(conjuncts, default=i) + 1
        if all(sentence.fine[k] == "JJ" or sentence.tokens[k].lower() in _COORDINATORS for k in range(i, end)) \
                and end <= sentence.heads[i]:
            out.append((i, end, sentence.heads[i]))
    return out


def _coordinated_attribute_swaps(sentence: TaggedSentence, modifiers: Sequence[int]) -> list[Candidate]:
    """Two noun phrases trade adjective attributes where at least one is coordinated: "an orange sofa with a
    black and white fence" -> "a black and white sofa with an orange fence" (single words: `_swap_variants`)."""
    spans = _attribute_spans(sentence, modifiers)
    out = []
    for n, (start_a, end_a, noun_a) in enumerate(spans):
        for start_b, end_b, noun_b in spans[n + 1:]:
            if (end_a - start_a == 1 and end_b - start_b == 1) or noun_a == noun_b or start_b < end_a or \
                    coordinated(sentence, start_a, start_b):
                continue
            lemmas_a = {sentence.lemma[k].lower() for k in range(start_a, end_a)} - _COORDINATORS
            lemmas_b = {sentence.lemma[k].lower() for k in range(start_b, end_b)} - _COORDINATORS
            if lemmas_a == lemmas_b:
                continue
            out.append(_exchange(sentence, (start_a, end_a), (start_b, end_b), {"class": "attribute"}))
    return out


def swap_attribute_candidates(sentence: TaggedSentence) -> list[Candidate]:
    """Exchange the attributes of two different noun phrases ("a white horse next to a red fence" ->
    "a red horse next to a white fence"; "a glass computer on a desktop table"). Attributes of one fine tag
    trade places (adjective with adjective, noun modifier with noun modifier), of any kind: each noun
    keeps one attribute; coordinated adjectives move as one ("black and white")."""
    if not sentence.parsed:
        return []
    modifiers = _modifiers(sentence)
    out = []
    for n, i in enumerate(modifiers):
        for j in modifiers[n + 1:]:
            if (sentence.heads[i] == sentence.heads[j] or sentence.fine[i] != sentence.fine[j]
                    or _related(sentence.lemma[i], sentence.lemma[j]) or coordinated(sentence, i, j)):
                continue
            words = [sentence.tokens[i].lower(), sentence.tokens[j].lower()]
            for edited, positions in _swap_variants(sentence, i, j, modifiers):
                out.append(Candidate(f"{i}-{j}", *edited, {"class": "attribute", "words": words,
                                                           "positions": positions}))
    # A noun modifier and the noun of another phrase trade places: "a man on the park bench in the
    # forest" -> "a man on the forest bench in the park". Both singular common nouns.
    nouns = [i for i, cls in _slots(sentence) if cls == "NOUN" and sentence.fine[i] == "NN"]
    for i in modifiers:
        if sentence.deps[i] != "compound":
            continue
        for j in nouns:
            if j == sentence.heads[i] or sentence.heads[j] == i or _related(sentence.lemma[i], sentence.lemma[j]) \
                    or coordinated(sentence, j, sentence.heads[i]):
                continue
            exchanged = _with(sentence, {i: _fit(sentence.tokens[j], "", sentence, i),
                                         j: _fit(sentence.tokens[i], "", sentence, j)})
            if exchanged is not None:
                out.append(Candidate(f"{min(i, j)}-{max(i, j)}", *exchanged, {
                    "class": "attribute", "words": [sentence.tokens[i].lower(), sentence.tokens[j].lower()],
                    "positions": sorted([i, j])}))
    return out + _coordinated_attribute_swaps(sentence, modifiers)


def swap_across_candidates(first_a: TaggedSentence,
                           first_b: TaggedSentence) -> list[tuple[str, Candidate, Candidate]]:
    """Every exchange of one like-class word between two sentences; lemmas both contain are left out."""
    shared = {lemma.lower() for lemma in first_a.lemma} & {lemma.lower() for lemma in first_b.lemma}
    slots_b = [(j, cls) for j, cls in _slots(first_b) if first_b.lemma[j].lower() not in shared]
    out = []
    for i, cls in _slots(first_a):
        if first_a.lemma[i].lower() in shared:
            continue
        for j, other in slots_b:
            if other != cls or _related(first_a.lemma[i], first_b.lemma[j]):
                continue
            words = [first_a.tokens[i].lower(), first_b.tokens[j].lower()]
            detail = {"class": cls, "words": words, "positions": [i, j]}
            edited_a = _with(first_a, {i: _fit(first_b.tokens[j], first_b.number[j], first_a, i)})
            edited_b = _with(first_b, {j: _fit(first_a.tokens[i], first_a.number[i], first_b, j)})
            if edited_a is not None and edited_b is not None:
                out.append((cls, Candidate(cls, *edited_a, detail), Candidate(cls, *edited_b, detail)))
    return out


# --- replacement by meaning class (SugarCrepe-replace) ----------------------------------------------

def _replacement_words(kind: str, lemma: str, present: Collection[str],
                       vocabulary: Collection[str]) -> list[str]:
    words = [w for w in lexicon.WORDS_OF_KIND[kind] if w not in present and not _related(w, lemma)]
    # With a corpus, only words it uses: a replacement stays in the customer's domain (and a domain test
    # set draws from its own captions); without one, the lexicon's.
    return [w for w in words if w in vocabulary] if vocabulary else words


def replace_candidates(sentence: TaggedSentence, vocabulary: Mapping[str, Sequence[str]] | None = None,
                       word_tags: Mapping[str, str] | None = None) -> list[Candidate]:
    """Every replacement of one word by another of its meaning class (colour -> colour, two -> three,
    dog -> horse, on -> under), never a synonym and never a word the sentence already has."""
    present = {t.lower() for t in sentence.tokens} | {lemma.lower() for lemma in sentence.lemma}
    corpus = {w for words in (vocabulary or {}).values() for w in words}
    word_tags = word_tags or {}
    out: list[Candidate] = []
    for i in range(len(sentence.tokens)):
        token, lemma = sentence.tokens[i], sentence.lemma[i].lower()
        cls = slot_class(sentence, i)
        relation = _relation_at(sentence, i)
        if relation is not None:
            out.extend(_replace_relation(sentence, i, relation, word_tags, corpus))
            continue
        kind = lexicon.kind(lemma) or lexicon.kind(token.lower())
        if cls is None or kind is None or not _kind_fits(cls, kind):
            continue
        for word in _replacement_words(kind, lemma, present, corpus):
            fitted = _fit(word, "Sing", sentence, i)
            if fitted is None or word_tags.get(fitted.lower(), sentence.fine[i]) != sentence.fine[i]:
                continue
            edited = _with(sentence, {i: fitted})
            if edited is None:
                continue
            out.append(Candidate(str(i), *edited, {"class": kind, "words": [token.lower(), word],
                                                          "positions": [i]}))
    return out


def _kind_fits(cls: str, kind: str) -> bool:
    """Whether a slot of class `cls` may take words of meaning class `kind`."""
    if cls == "NOUN":
        return kind not in _ADJECTIVE_KINDS - {"colour"} and kind not in ("number", "activity_verb")
    if cls.startswith("ADJ:"):
        return kind in _ADJECTIVE_KINDS
    if cls == "NUM":
        return kind == "number"
    return cls == "VERB:VBG" and kind == "activity_verb"


def _relation_at(sentence: TaggedSentence, index: int) -> str | None:
    """A spatial relation starting at `index` ("on", "behind", "in front of", "left"), or None."""
    low = sentence.tokens[index].lower()
    following = " ".join(t.lower() for t in sentence.tokens[index:index + 3])
    if following in ("in front of", "on top of"):
        return following
    if low in ("left", "right") or (low in lexicon.RELATION_SWAPS and sentence.pos[index] == "ADP"
                                    and (not sentence.parsed or sentence.deps[index] == "prep")):
        return low
    return None


_PHRASE_REPLACEMENTS = {"in front of": ("behind",), "on top of": ("under",)}


def _replace_relation(sentence: TaggedSentence, index: int, relation: str, word_tags: Mapping[str, str],
                      corpus: Collection[str]) -> list[Candidate]:
    width = len(relation.split())
    out = []
    for new in _PHRASE_REPLACEMENTS.get(relation) or lexicon.RELATION_SWAPS.get(relation, ()):
        words = new.split()
        if corpus and not all(w in corpus for w in words):
            continue  # as for words: with a corpus, only what it uses
        if width == len(words) == 1 and word_tags.get(new, sentence.fine[index]) != sentence.fine[index]:
            continue  # "above" is mostly an adverb in captions: it does not stand in for "under"
        if sentence.tokens[index].isupper() and len(sentence.tokens[index]) > 1:
            words = [w.upper() for w in words]
        elif index == 0 and sentence.tokens[0][:1].isupper():
            words[0] = words[0].capitalize()
        spaces = list(_spaces(sentence))
        tokens = list(sentence.tokens[:index]) + words + list(sentence.tokens[index + width:])
        new_spaces = spaces[:index] + [True] * (len(words) - 1) + spaces[index + width - 1:]
        out.append(Candidate(str(index), tuple(_repair_articles(tokens)), tuple(new_spaces),
                             {"class": "relation", "words": [relation, new], "positions": [index]}))
    return out


# --- swap the two noun phrases around a relation ----------------------------------------------------

def _chunk_of(sentence: TaggedSentence, index: int) -> tuple[int, int] | None:
    for start, end in sentence.chunks:
        if start <= index < end:
            return start, end
    return None


def _spatial_noun(sentence: TaggedSentence, index: int) -> bool:
    return sentence.pos[index] == "NOUN" and sentence.tokens[index].lower() in lexicon.SPATIAL_NOUNS


def _beyond_spatial_noun(sentence: TaggedSentence, index: int) -> int:
    """The object of a complex preposition: "square" in "to the left of a square" (whose parse makes "left"
    the object of "to" and "square" the object of "of"); otherwise `index` itself."""
    if not _spatial_noun(sentence, index):
        return index
    for of in sentence.children(index):
        if sentence.deps[of] == "prep" and sentence.tokens[of].lower() == "of":
            objects = [c for c in sentence.children(of) if sentence.deps[c] == "pobj"]
            if objects:
                return objects[0]
    return index


def _relation_pairs(sentence: TaggedSentence) -> Iterator[tuple[int, int, int]]:
    """(left noun, relation token, right noun): a noun or a verb's subject, a preposition and its object;
    or a verb's subject and object."""
    heads, deps = sentence.heads, sentence.deps
    for rel in range(len(sentence.tokens)):
        if deps[rel] == "prep" and sentence.pos[rel] == "ADP":
            if _spatial_noun(sentence, heads[rel]) and deps[heads[rel]] == "pobj":
                continue  # the "of" inside "to the left of": its relation starts at "to"
            objects = [_beyond_spatial_noun(sentence, c) for c in sentence.children(rel) if deps[c] == "pobj"]
            head = heads[rel]
            while sentence.pos[head] in ("ADV", "ADJ") and heads[head] != head:
                head = heads[head]  # "next to", "close to": the relation's head is what comes before
            left: int | None = head if _noun_reading(sentence, head) else None
            if left is None and sentence.pos[head] in ("VERB", "AUX"):
                subjects = [c for c in sentence.children(head) if deps[c] in ("nsubj", "nsubjpass")]
                if not subjects and any(deps[c] == "expl" for c in sentence.children(head)):
                    # "there is a cat on a ball": the cat is what the verb introduces
                    subjects = [c for c in sentence.children(head) if deps[c] == "attr"]
                if subjects:
                    left = subjects[0]
                elif deps[head] in ("acl", "relcl") and _noun_reading(sentence, heads[head]):
                    left = heads[head]  # "a cat sitting on a ball"
            if left is not None and objects:
                yield left, rel, objects[0]
        elif sentence.pos[rel] == "VERB":
            subjects = [c for c in sentence.children(rel) if deps[c] == "nsubj"]
            objects = [c for c in sentence.children(rel) if deps[c] == "dobj"]
            if subjects and objects:
                yield subjects[0], rel, objects[0]


def swap_relation_candidates(sentence: TaggedSentence) -> list[Candidate]:
    """Exchange the noun phrases (with their modifiers) on both sides of a relation: "a cat on a red ball"
    -> "a red ball on a cat". Phrases with a pronoun or a name are left alone; when either phrase is a
    verb's subject, both must have one number (the verb's agreement stays right)."""
    if not sentence.parsed or not sentence.chunks:
        return []
    out = []
    seen: set[tuple[tuple[int, int], tuple[int, int]]] = set()
    for left, rel, right in _relation_pairs(sentence):
        left_span, right_span = _chunk_of(sentence, left), _chunk_of(sentence, right)
        if left_span is None or right_span is None or (left_span, right_span) in seen:
            continue
        spans = left_span, right_span
        (ls, le), (rs, re_) = spans
        if not le <= rs or not _swappable_phrase(sentence, ls, le, left) or \
                not _swappable_phrase(sentence, rs, re_, right):
            continue
        if _related(sentence.lemma[left], sentence.lemma[right]):
            continue
        if _coordinated_phrase(sentence, left) or _coordinated_phrase(sentence, right) or any(
                sentence.pos[k] == "PRON" or sentence.tokens[k].lower() in lexicon.PRONOUNS for k in range(ls, re_)):
            continue  # "a tram and a car make their way": the swap breaks what "and" or "their" refer to
        # "attr": after an expletive "there" the verb agrees with it ("there are cats on a ball")
        subject = {"nsubj", "nsubjpass", "attr"} & {sentence.deps[left], sentence.deps[right]}
        if subject and sentence.number[left] != sentence.number[right]:
            continue
        seen.add((spans[0], spans[1]))
        out.append(_exchange(sentence, (ls, le), (rs, re_),
                             {"class": "relation_swap", "relation": sentence.tokens[rel].lower()}))
    return out


def _coordinated_phrase(sentence: TaggedSentence, head: int) -> bool:
    return sentence.deps[head] == "conj" or any(sentence.deps[c] == "conj" for c in sentence.children(head))


def _noun_reading(sentence: TaggedSentence, index: int) -> bool:
    """A common noun, or a lower-case word the tagger took for a name (`_lowercase_name`): in "the green
    square is above the pink hexagon" the small tagger reads "green square" as a name about half the time.
    A name's inner words ("teddy" in "a teddy bear", read as a compound) are not the phrase's head."""
    return sentence.pos[index] == "NOUN" or (_lowercase_name(sentence, index)
                                             and _misread_adjective(sentence, index) is None
                                             and sentence.deps[index] not in _COMPOUND_PARTS)


def _swappable_phrase(sentence: TaggedSentence, start: int, end: int, head: int) -> bool:
    if not _noun_reading(sentence, head) or sentence.lemma[head].lower() in lexicon.FUNCTIONAL_NOUNS:
        return False
    return not any(sentence.pos[i] == "PRON" or (sentence.pos[i] == "PROPN" and not _lowercase_name(sentence, i))
                   or sentence.tokens[i].lower() in lexicon.PRONOUNS for i in range(start, end))


def _exchange(sentence: TaggedSentence, left: tuple[int, int], right: tuple[int, int],
              detail: dict[str, Any]) -> Candidate:
    """The two token spans `left` and `right` (left first, not overlapping) trade places."""
    tokens, spaces = list(sentence.tokens), list(_spaces(sentence))
    (ls, le), (rs, re_) = left, right

    def phrase(start: int, end: int, slot_end: int) -> tuple[list[str], list[bool]]:
        words = [w if (sentence.pos[start + k] == "PROPN" or w == "I") else (w.lower() if k == 0 else w)
                 for k, w in enumerate(tokens[start:end])]
        return words, [*spaces[start:end - 1], spaces[slot_end - 1]]

    right_words, right_spaces = phrase(rs, re_, le)
    left_words, left_spaces = phrase(ls, le, re_)
    new_tokens = tokens[:ls] + right_words + tokens[le:rs] + left_words + tokens[re_:]
    new_spaces = spaces[:ls] + right_spaces + spaces[le:rs] + left_spaces + spaces[re_:]
    if ls == 0 and sentence.tokens[0][:1].isupper():
        new_tokens[0] = new_tokens[0][:1].upper() + new_tokens[0][1:]
    words = [" ".join(tokens[ls:le]).lower(), " ".join(tokens[rs:re_]).lower()]
    return Candidate(f"{ls}-{rs}", tuple(_repair_articles(new_tokens)), tuple(new_spaces),
                     {**detail, "words": words, "positions": [[ls, le], [rs, re_]]})


# --- drawing among candidates -----------------------------------------------------------------------

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


def draw(candidates: Sequence[Any], rng: random.Random, group: Callable[[Any], str]) -> Iterator[Any]:
    """Candidates in random order, at most MAX_ATTEMPTS: a group (a class or a slot) uniformly, then one
    of its candidates, so a slot with many alternatives is not drawn more often than one with few."""
    groups: dict[str, list[Any]] = {}
    for candidate in candidates:
        groups.setdefault(group(candidate), []).append(candidate)
    for _ in range(MAX_ATTEMPTS):
        if not groups:
            return
        key = rng.choice(sorted(groups))
        members = groups[key]
        yield members.pop(rng.randrange(len(members)))
        if not members:
            del groups[key]


@lru_cache(maxsize=4096)
def _sentence_candidates(name: str, sentence: TaggedSentence) -> tuple[Candidate, ...]:
    # Cached: a caption is drawn in many epochs, and its candidates depend on it alone.
    function = {"swap_within": swap_within_candidates, "swap_attribute": swap_attribute_candidates,
                "swap_relation": swap_relation_candidates}[name]
    return tuple(function(sentence))


def sentence_candidates(name: str, sentence: TaggedSentence, context: NegativeContext) -> Sequence[Candidate]:
    """All candidates of one single-sentence generator for `sentence`."""
    if name == "replace":
        return replace_candidates(sentence, context.vocabulary, context.word_tags)
    return _sentence_candidates(name, sentence)


def first_allowed(name: str, sentence: TaggedSentence, rng: random.Random, context: NegativeContext,
                  screen: _Screen) -> Negative | None:
    """A random allowed candidate of generator `name` on one sentence, or None."""
    for candidate in draw(sentence_candidates(name, sentence, context), rng, lambda c: c.group):
        text = candidate.text
        if screen.allows(text):
            return Negative(text, name, dict(candidate.detail))
    return None


def hard_negative_swap_within(sentence: TaggedSentence, rng: random.Random,
                              excluded: Collection[str] = frozenset()) -> Negative | None:
    """Swap two like-class words inside the sentence (see the module doc for the rules)."""
    return first_allowed("swap_within", sentence, rng, NegativeContext(), _Screen([sentence.text], excluded))


def hard_negative_replace(sentence: TaggedSentence, vocabulary: Mapping[str, Sequence[str]],
                          rng: random.Random, excluded: Collection[str] = frozenset()) -> Negative | None:
    """Replace one word by another of its meaning class; `vocabulary` (see `build_vocabulary`) makes
    words the corpus uses preferred."""
    return first_allowed("replace", sentence, rng, NegativeContext(vocabulary),
                         _Screen([sentence.text], excluded))


def hard_negative_swap_across(first_a: TaggedSentence, first_b: TaggedSentence, rng: random.Random,
                              excluded: Collection[str] = frozenset()) -> Negative | None:
    """CLIC's negative: swap one like-class word between the sentences, join them in random order.
    `detail`: class, words, positions, order."""
    text_a, text_b = first_a.text, first_b.text
    screen = _Screen([join_sentences([text_a, text_b]), join_sentences([text_b, text_a])], excluded)
    for _, edit_a, edit_b in draw(swap_across_candidates(first_a, first_b), rng, lambda c: c[0]):
        altered_a, altered_b = edit_a.text, edit_b.text
        a_first = rng.random() < 0.5
        text = join_sentences([altered_a, altered_b] if a_first else [altered_b, altered_a])
        if screen.allows(text, [altered_a, altered_b]):
            return Negative(text, "swap_across", {**edit_a.detail, "order": "ab" if a_first else "ba"})
    return None


def edit_one_of_pair(name: str, a: TaggedSentence, b: TaggedSentence, rng: random.Random,
                     context: NegativeContext) -> Negative | None:
    """A one-sentence edit lifted to a pair: edit one sentence (random; the other if it has no candidate)
    and join it with the untouched one in random order, like CLIC's negative."""
    text_a, text_b = a.text, b.text
    screen = _Screen([join_sentences([text_a, text_b]), join_sentences([text_b, text_a]), text_a, text_b],
                     context.excluded)
    targets = [("a", a, text_b), ("b", b, text_a)]
    if rng.random() < 0.5:
        targets.reverse()
    for which, sentence, untouched in targets:
        for candidate in draw(sentence_candidates(name, sentence, context), rng, lambda c: c.group):
            altered = candidate.text
            edited_first = rng.random() < 0.5
            text = join_sentences([altered, untouched] if edited_first else [untouched, altered])
            if screen.allows(text, [altered]):
                return Negative(text, name, {**candidate.detail, "edited": which,
                                             "order": "edited_first" if edited_first else "edited_last"})
    return None
