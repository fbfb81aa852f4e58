"""The stored parse of one sentence: what hard-negative generators need, computed once at ingest. Pure.

Per token: text, trailing whitespace, Universal POS, fine (Penn) tag, lemma, grammatical number,
dependency label and head index; per sentence: noun chunks as [start, end) token spans. Round-trips
through JSON (`to_json` / `from_json`), which is how the catalog stores it.

A sentence built from tokens and POS only (`TaggedSentence.of`, rows tagged before the parse was stored)
is still valid: the missing layers are derived conservatively (fine tag = POS, lemma = lowercase token,
no dependencies), so generators that need the parse simply find fewer candidates in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

PARSE_VERSION = 1

_NO_SPACE_BEFORE = frozenset({".", ",", "!", "?", ";", ":", ")", "]", "}", "%", "...", "…", "”"})
_NO_SPACE_AFTER = frozenset({"(", "[", "{", "$", "#", "“"})
_CLITICS = frozenset({"'s", "'re", "'ve", "'ll", "'d", "'m", "n't", "’s", "’re", "’ve", "’ll", "’d", "’m",
                      "n’t", "'", "’"})
_JOINERS = frozenset({"-", "/"})  # spaCy splits "black-and-white" and "and/or" into infix tokens
_ATTACH_LEFT = _NO_SPACE_BEFORE | _CLITICS | _JOINERS
_ATTACH_RIGHT = _NO_SPACE_AFTER | _JOINERS


def detokenize(tokens: Sequence[str]) -> str:
    """Join tokens into natural text ("hat." not "hat ."), by rule, for sentences stored without spacing."""
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


_PENN_OF_UPOS = {"NOUN": "NN", "PROPN": "NNP", "ADJ": "JJ", "VERB": "VB", "NUM": "CD", "ADP": "IN", "DET": "DT",
                 "PRON": "PRP", "ADV": "RB", "AUX": "MD", "CCONJ": "CC", "PUNCT": "."}


def _number_of(fine: str) -> str:
    """Grammatical number from a Penn tag: 'Plur', 'Sing' or '' (not a noun)."""
    if fine in ("NNS", "NNPS"):
        return "Plur"
    if fine in ("NN", "NNP"):
        return "Sing"
    return ""


@dataclass(frozen=True)
class TaggedSentence:
    """One sentence's tokens and their parse, aligned one to one (see the module doc)."""

    tokens: tuple[str, ...]
    pos: tuple[str, ...]
    tags: tuple[str, ...] = ()  # fine-grained (Penn) tags
    lemmas: tuple[str, ...] = ()
    heads: tuple[int, ...] = ()  # index of each token's head; the root points to itself
    deps: tuple[str, ...] = ()
    spaces: tuple[bool, ...] = ()  # whitespace after each token, as in the source text
    chunks: tuple[tuple[int, int], ...] = ()  # noun chunks, [start, end) token spans

    def __post_init__(self) -> None:
        for name in ("tokens", "pos", "tags", "lemmas", "heads", "deps", "spaces"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "chunks", tuple((int(s), int(e)) for s, e in self.chunks))
        n = len(self.tokens)
        if not n:
            raise ValueError("a tagged sentence needs at least one token")
        if len(self.pos) != n:
            raise ValueError(f"tokens and POS tags must align, got {n} tokens and {len(self.pos)} tags for "
                             f"{self.tokens!r}; re-tag this caption")
        for name in ("tags", "lemmas", "heads", "deps", "spaces"):
            layer = getattr(self, name)
            if layer and len(layer) != n:
                raise ValueError(f"parse layer {name!r} has {len(layer)} entries for {n} tokens; re-tag this caption")
        if any(not 0 <= h < n for h in self.heads):
            raise ValueError(f"a dependency head points outside the sentence {self.tokens!r}; re-tag this caption")
        if any(not 0 <= s < e <= n for s, e in self.chunks):
            raise ValueError(f"a noun chunk lies outside the sentence {self.tokens!r}; re-tag this caption")

    @classmethod
    def of(cls, tokens: Sequence[str], pos: Sequence[str]) -> TaggedSentence:
        return cls(tuple(tokens), tuple(pos))

    @property
    def parsed(self) -> bool:
        """Whether the dependency layers are present (rows tagged before the parse was stored have none)."""
        return bool(self.heads) and bool(self.deps) and bool(self.tags)

    @cached_property
    def fine(self) -> tuple[str, ...]:
        # Rows without fine tags: the Penn tag each Universal POS most often has (number unknown: singular).
        return self.tags or tuple(_PENN_OF_UPOS.get(p, p) for p in self.pos)

    @cached_property
    def lemma(self) -> tuple[str, ...]:
        return self.lemmas or tuple(t.lower() for t in self.tokens)

    @cached_property
    def number(self) -> tuple[str, ...]:
        return tuple(_number_of(t) for t in self.fine)

    @cached_property
    def text(self) -> str:  # cached: a sentence's text is needed several times per sample
        return render(self.tokens, self.spaces)

    def children(self, index: int) -> list[int]:
        return [i for i, h in enumerate(self.heads) if h == index and i != index]

    def word_count(self) -> int:
        return sum(1 for tag in self.pos if tag not in ("PUNCT", "SPACE"))

    def to_json(self) -> dict[str, Any]:
        return {"v": PARSE_VERSION, "tokens": list(self.tokens), "pos": list(self.pos), "tags": list(self.tags),
                "lemmas": list(self.lemmas), "heads": list(self.heads), "deps": list(self.deps),
                "spaces": list(self.spaces), "chunks": [list(c) for c in self.chunks]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaggedSentence:
        if data.get("v") != PARSE_VERSION:
            raise ValueError(f"stored parse version {data.get('v')!r} is not {PARSE_VERSION}; run toolkit data retag")
        return cls(tuple(data["tokens"]), tuple(data["pos"]), tuple(data["tags"]), tuple(data["lemmas"]),
                   tuple(data["heads"]), tuple(data["deps"]), tuple(bool(s) for s in data["spaces"]),
                   tuple((s, e) for s, e in data["chunks"]))


def render(tokens: Sequence[str], spaces: Sequence[bool] = ()) -> str:
    """Tokens as text: with the stored whitespace when there is one per token, else by `detokenize`'s rules."""
    if len(spaces) != len(tokens):
        return detokenize(tokens)
    return "".join(t + (" " if s else "") for t, s in zip(tokens, spaces, strict=True)).strip()
