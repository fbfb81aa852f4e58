"""Automatic checks of hard negatives against their positives, and the per-generator quality report. Pure.

The checks look at text and at the positives' stored parse only, never at how a generator says it worked,
so they judge any generator alike (the bench runs them on the old generators too). Each flags a negative
that a text model could reject without the image, or that is not a negative at all:

- `identity`: the negative equals a positive (case and punctuation ignored);
- `a_an`: more a/an errors than the positive ("a elephant");
- `agreement`: more determiner/numeral-noun number clashes than the positive ("two road", "a monitors");
- `fine_tag`: a word replaced by one of another fine tag (singular by plural, gerund by base form);
- `pronoun_det`: a pronoun or determiner edited ("Its is a fireplug");
- `coordination`: the two sides of "X and Y" exchanged (the meaning is kept);
- `same_lemma`: a word replaced by another form of itself (sit -> sitting);
- `synonym`: a word replaced by a synonym (couch -> sofa).
"""

from __future__ import annotations

import difflib
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from toolkit.core.parse import TaggedSentence
from toolkit.negatives import lexicon
from toolkit.negatives.generators import Negative, build_word_tags, join_sentences, match_key, reading_tag

FLAGS = ("identity", "a_an", "agreement", "fine_tag", "pronoun_det", "coordination", "same_lemma", "synonym")
_WORD = re.compile(r"[^\W_]+|[^\w\s]")
_COORDINATORS = frozenset({"and", "or", "&", ","})


@dataclass(frozen=True)
class WordFacts:
    """Corpus facts per word (lowercase): its most frequent fine tag, Universal POS and lemma."""

    tag: dict[str, str] = field(default_factory=dict)
    upos: dict[str, str] = field(default_factory=dict)
    lemma: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, sentences: Iterable[TaggedSentence]) -> WordFacts:
        sentences = list(sentences)
        upos: dict[str, Counter[str]] = {}
        lemma: dict[str, Counter[str]] = {}
        for sentence in sentences:
            for token, tag, base in zip(sentence.tokens, sentence.pos, sentence.lemma, strict=True):
                upos.setdefault(token.lower(), Counter())[tag] += 1
                lemma.setdefault(token.lower(), Counter())[base.lower()] += 1
        return cls(build_word_tags(sentences), {w: c.most_common(1)[0][0] for w, c in upos.items()},
                   {w: c.most_common(1)[0][0] for w, c in lemma.items()})


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _pieces(sentences: Sequence[TaggedSentence]) -> list[tuple[str, str, str]]:
    """The positives as (word, fine tag in context, lemma), split like `words` splits text."""
    out: list[tuple[str, str, str]] = []
    for sentence in sentences:
        for index, (token, lemma) in enumerate(zip(sentence.tokens, sentence.lemma, strict=True)):
            fine = reading_tag(sentence, index)
            out.extend((w.lower(), fine, lemma.lower()) for w in _WORD.findall(token))
        if sentence.tokens[-1] not in (".", "!", "?") and len(sentences) > 1:
            out.append((".", ".", "."))  # join_sentences ends each sentence with a full stop
    return out


def _article_errors(tokens: Sequence[str]) -> int:
    return sum(1 for w, nxt in pairwise(tokens)
               if w in ("a", "an") and nxt[:1].isalpha() and lexicon.article_for(nxt) != w)


_SINGULAR = frozenset({"a", "an", "another", "each", "every"})
_PLURAL = frozenset({"two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "these", "those",
                     "several", "many", "both"})


def _number(word: str, facts: WordFacts) -> str:
    tag = facts.tag.get(word)
    if tag is None:
        import inflect  # unknown word: ask inflect whether it reads as a plural

        return "Plur" if lexicon._engine(inflect).singular_noun(word) else "Sing"
    return "Plur" if tag in ("NNS", "NNPS") else "Sing" if tag in ("NN", "NNP") else ""


def _upos(word: str, facts: WordFacts) -> str | None:
    """A word's usual POS; a word the corpus lacks is looked up by its singular ("dogs" -> "dog")."""
    if word in facts.upos:
        return facts.upos[word]
    import inflect

    singular = lexicon._engine(inflect).singular_noun(word) if word.isalpha() else False
    base = singular if isinstance(singular, str) and singular else word
    return facts.upos.get(base) or ("NOUN" if base in lexicon.KIND_OF else None)


def _agreement_errors(tokens: Sequence[str], facts: WordFacts) -> int:
    errors = 0
    for index, word in enumerate(tokens):
        if word not in _SINGULAR and word not in _PLURAL:
            continue
        k = index + 1
        while k < len(tokens) and k < index + 4 and _upos(tokens[k], facts) in ("ADJ", "NUM", "ADV"):
            k += 1  # "two big red buses": skip the modifiers to the noun
        if k >= len(tokens) or not tokens[k][:1].isalpha():
            continue
        if (_upos(tokens[k], facts) or "NOUN") != "NOUN":
            continue
        while k + 1 < len(tokens) and _upos(tokens[k + 1], facts) == "NOUN":
            k += 1  # a compound ("two stop signs"): the number is the head's
        number = _number(tokens[k], facts)
        if (word in _SINGULAR and number == "Plur") or (word in _PLURAL and number == "Sing"):
            errors += 1
    return errors


def _coordination_swap(before: Sequence[str], after: Sequence[str], facts: WordFacts) -> bool:
    """Whether `after` is `before` with the two sides of one coordination exchanged."""
    if len(before) != len(after) or before == after:
        return False
    first = next(i for i, (x, y) in enumerate(zip(before, after, strict=True)) if x != y)
    last = max(i for i, (x, y) in enumerate(zip(before, after, strict=True)) if x != y)
    for start in range(max(0, first - 3), first + 1):
        for end in range(last + 1, min(len(before), last + 4) + 1):
            region, swapped = list(before[start:end]), list(after[start:end])
            for c in range(1, len(region) - 1):
                if region[c] not in _COORDINATORS:
                    continue
                for m_end in range(c + 1, min(len(region), c + 3)):
                    middle = region[c:m_end]
                    if any(w == "no" or (w not in _COORDINATORS and w not in lexicon.DETERMINERS and
                           facts.upos.get(w) not in ("DET", "NUM", "ADJ")) for w in middle[1:]):
                        continue
                    left, right = region[:c], region[m_end:]
                    if left and right and swapped == right + middle + left:
                        return True
    return False


def check_negative(positives: Sequence[TaggedSentence], negative: str, facts: WordFacts) -> dict[str, bool]:
    """The flags of one negative (see the module doc); `positives` are the sentences it was made from."""
    texts = [p.text for p in positives]
    joined = [join_sentences(texts), join_sentences(list(reversed(texts)))] if len(texts) > 1 else texts
    flags = dict.fromkeys(FLAGS, False)
    key = match_key(negative)
    flags["identity"] = key in {match_key(t) for t in [*joined, *texts]}
    after = words(negative)
    orders = [list(positives), list(reversed(positives))] if len(positives) > 1 else [list(positives)]
    # The order of the positives that the negative keeps (CLIC joins the two in random order).
    pieces = max((_pieces(order) for order in orders),
                 key=lambda p: difflib.SequenceMatcher(None, [w for w, _, _ in p], after, autojunk=False).ratio())
    before = [w for w, _, _ in pieces]
    before_text = words(" ".join(texts))
    flags["a_an"] = _article_errors(after) > _article_errors(before_text)
    flags["agreement"] = _agreement_errors(after, facts) > _agreement_errors(before_text, facts)
    flags["coordination"] = _coordination_swap(before, after, facts)
    changed = [k for k, (x, y) in enumerate(zip(before, after, strict=False)) if x != y]
    if len(before) == len(after) and len(changed) > 2 and sorted(before) == sorted(after):
        # Whole phrases exchanged (a relation swap): word-by-word comparisons mean nothing here, but a
        # moved pronoun still reads wrong ("his bike on a man").
        flags["pronoun_det"] = any(before[k] in lexicon.PRONOUNS for k in changed)
        return flags
    matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
    for op, b0, b1, a0, a1 in matcher.get_opcodes():
        if op != "replace" or b1 - b0 != a1 - a0:
            continue
        for k in range(b1 - b0):
            old, old_tag, old_lemma = pieces[b0 + k]
            new = after[a0 + k]
            if {old, new} <= {"a", "an"}:
                continue  # an article repaired to its noun
            if old in lexicon.PRONOUNS or old in lexicon.DETERMINERS or new in lexicon.PRONOUNS \
                    or new in lexicon.DETERMINERS:
                flags["pronoun_det"] = True
            new_tag = _tag_of(new, pieces, facts)
            if new_tag is not None and new_tag != old_tag:
                flags["fine_tag"] = True
            new_lemma = facts.lemma.get(new, new)
            if old_lemma in (new_lemma, new) or new_lemma == old:
                flags["same_lemma"] = True
            if lexicon.synonyms(old, new) or lexicon.synonyms(old_lemma, new_lemma):
                flags["synonym"] = True
    return flags


def _tag_of(word: str, pieces: Sequence[tuple[str, str, str]], facts: WordFacts) -> str | None:
    """A replacing word's fine tag: as it stood in the positives (a swap), else an inflected form of a
    word there, else its most frequent tag in the corpus; None when unknown."""
    import inflect

    engine = lexicon._engine(inflect)
    context = {w: tag for w, tag, _ in pieces}
    if word in context:
        return context[word]
    singular = engine.singular_noun(word)
    if isinstance(singular, str) and context.get(singular) in ("NN", "NNS"):
        return "NNS"
    plural = engine.plural_noun(word) if word.isalpha() else None
    if plural and context.get(plural) in ("NN", "NNS"):
        return "NN"
    return facts.tag.get(word)


# --- the report ------------------------------------------------------------------------------------

Generator = Callable[[Sequence[TaggedSentence], random.Random], "Negative | None"]


@dataclass
class GeneratorAudit:
    """One generator's figures on a sample."""

    name: str
    samples: int = 0
    produced: int = 0
    flags: Counter[str] = field(default_factory=Counter)
    classes: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        return self.produced / self.samples if self.samples else 0.0

    def rate(self, flag: str) -> float:
        return self.flags[flag] / self.produced if self.produced else 0.0

    @property
    def flag_sum(self) -> float:
        return sum(self.rate(f) for f in FLAGS)

    def as_dict(self) -> dict[str, Any]:
        return {"generator": self.name, "samples": self.samples, "produced": self.produced,
                "coverage": round(self.coverage, 4), "flags": {f: round(self.rate(f), 4) for f in FLAGS},
                "flag_sum": round(self.flag_sum, 4), "classes": dict(self.classes.most_common()),
                "examples": self.examples}


def audit(items: Sequence[Sequence[TaggedSentence]], generators: Mapping[str, Generator], *, seed: int = 0,
          examples: int = 3, facts: WordFacts | None = None) -> list[GeneratorAudit]:
    """Run every generator on every item (one or two positive sentences) and check what it makes."""
    facts = facts or WordFacts.of(s for item in items for s in item)
    reports = []
    for name, generate in generators.items():
        report = GeneratorAudit(name)
        rng = random.Random(f"audit:{seed}:{name}")
        for item in items:
            report.samples += 1
            negative = generate(item, rng)
            if negative is None:
                continue
            report.produced += 1
            flags = check_negative(item, negative.text, facts)
            report.flags.update(f for f, on in flags.items() if on)
            report.classes[str(negative.detail.get("class", negative.detail.get("tag", "?")))] += 1
            if len(report.examples) < examples or (any(flags.values()) and len(report.examples) < 2 * examples):
                report.examples.append({"positive": join_sentences(s.text for s in item), "negative": negative.text,
                                        "flags": sorted(f for f, on in flags.items() if on)})
        reports.append(report)
    return reports


def format_table(reports: Sequence[GeneratorAudit]) -> str:
    """The audit as a plain-text table: coverage and each flag's rate, in percent."""
    head = f"{'generator':<22}{'cov%':>7}" + "".join(f"{f[:8]:>9}" for f in FLAGS) + f"{'sum%':>8}"
    lines = [head]
    for r in reports:
        lines.append(f"{r.name:<22}{100 * r.coverage:>7.1f}" + "".join(f"{100 * r.rate(f):>9.2f}" for f in FLAGS)
                     + f"{100 * r.flag_sum:>8.2f}")
    return "\n".join(lines)
