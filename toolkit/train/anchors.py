"""Anchor texts: texts whose base embeddings the fine-tuned text tower must keep. Pure (no torch).

CLIC trains the text tower on the domain's compositions only, and a small or strongly tuned text tower
then forgets how it worded other things (zero-shot prompts). The image tower is frozen, so a text whose
embedding stays where the base put it keeps every zero-shot and retrieval behaviour it had. The anchor
term (`toolkit.train.loss.anchor_loss`, weight `anchor_weight`) pulls a sample of anchor texts towards their
base embeddings on every step: feature distillation on reference data, in the manner of ZSCL
(Zheng et al., ICCV 2023), made cheap because the teacher's embeddings are computed once, before training.

Sources (`anchor_texts`):
- "noun_phrases": the noun phrases of the snapshot's tagged captions ("a red circle"). No extra data, but it
  protects only those wordings: on the demo, "a photo of the red circle." still drifted.
- a UTF-8 text file, one text per line: a few thousand general captions in the style of the base's
  pretraining text, or the prompts a production classifier relies on. This is what kept zero-shot on the demo.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from toolkit.core.errors import InputError
from toolkit.negatives.generators import TaggedSentence

NOUN_PHRASES = "noun_phrases"
_MODIFIERS = frozenset({"ADJ", "NOUN", "PROPN", "NUM"})
_HEADS = frozenset({"NOUN", "PROPN"})


class AnchorError(InputError):
    """The anchor texts cannot be read or are empty; the message names the file and what to fix."""


def noun_phrases(sentences: Iterable[TaggedSentence]) -> list[str]:
    """Distinct lower-cased noun phrases, sorted: an optional determiner, then adjectives, numbers and nouns
    ending in a noun ("a large red circle", "two shapes"). Tags are the stored ones: no NLP runs here."""
    found: set[str] = set()
    for sentence in sentences:
        tokens, tags = sentence.tokens, sentence.pos
        start = 0
        while start < len(tokens):
            first_word = start + (1 if tags[start] == "DET" else 0)
            end = first_word
            while end < len(tokens) and tags[end] in _MODIFIERS:
                end += 1
            # Back off to the last noun, so "the circle is red" never yields "the circle red"-like spans.
            while end > first_word and tags[end - 1] not in _HEADS:
                end -= 1
            if end > first_word:
                found.add(" ".join(tokens[start:end]).lower())
                start = end
            else:
                start += 1
    return sorted(found)


def read_anchor_file(path: Path) -> list[str]:
    """One text per line, in file order; blank lines and repeats are skipped. Refuses non-UTF-8 bytes and
    a file without any text, naming the line."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise AnchorError(f"cannot read the anchor texts file {path}: {err}") from err
    texts: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError as err:
            raise AnchorError(f"{path}, line {number}: not UTF-8 ({err.reason} at byte {err.start}); "
                              "save the file as UTF-8") from err
        if text and text not in seen:
            seen.add(text)
            texts.append(text)
    if not texts:
        raise AnchorError(f"{path} holds no anchor text; write one text per line")
    return texts


def resolve_anchor_texts(source: str, sentences: Iterable[TaggedSentence]) -> list[str]:
    """The anchor texts a training config names: mined from `sentences`, or read from a file."""
    if source == NOUN_PHRASES:
        texts = noun_phrases(sentences)
        if not texts:
            raise AnchorError("anchor_texts = noun_phrases, but the snapshot's captions hold no tagged noun "
                              "phrase (untagged captions?); give a file of anchor texts instead")
        return texts
    return read_anchor_file(Path(source))


def anchor_digest(texts: Sequence[str]) -> str:
    """Identifies the anchor set in a run's provenance (order-sensitive, like the sampling)."""
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


def anchor_sample(count: int, per_step: int, seed: int, draw: int, rank: int = 0, world_size: int = 1
                  ) -> list[int]:
    """Indices of the anchors one micro-batch distils: `per_step` of `count` (all when fewer), drawn from
    (seed, draw) alone so a resumed run draws the same ones; each rank takes its share of them."""
    picked = random.Random(f"anchors:{seed}:{draw}").sample(range(count), min(per_step, count))
    return picked[rank::world_size]
