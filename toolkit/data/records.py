"""Training records read from a catalog snapshot: the one place the data stage touches SQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from toolkit.catalog.models import Image, Sentence, Snapshot, SnapshotMember
from toolkit.catalog.snapshot import resolve_snapshot
from toolkit.data.samples import EmptySnapshotError, TrainingRecord
from toolkit.negatives.generators import TaggedSentence


def _stored_sentence(tokens: list[str], pos: list[str], text: str,
                     parse: dict[str, Any] | None = None) -> TaggedSentence:
    if parse:
        return TaggedSentence.from_json(parse)
    if tokens:
        return TaggedSentence.of(tokens, pos)
    # Untagged rows still train: whitespace words, no class, so swaps fall back to random words.
    words = text.split()
    return TaggedSentence.of(words, ["X"] * len(words))


def load_training_records(session: Session, snapshot: Snapshot | str, split: str = "train",
                          word_range: tuple[int, int] | None = None) -> list[TrainingRecord]:
    """Every caption of `snapshot` (a Snapshot or a reference: latest, hash, name) in `split`, by caption id.

    `word_range=(4, 34)` keeps only sentences of that many words (punctuation not counted), as the
    reference's data does; a caption left without sentences is dropped, and the first kept sentence
    becomes its primary one. Raises EmptySnapshotError when nothing is left.
    """
    if isinstance(snapshot, str):
        snapshot = resolve_snapshot(session, snapshot)
    rows = session.execute(
        select(SnapshotMember.caption_id, Image.id, Image.images_root, Image.path, Image.width, Image.height,
               Image.sha256, Sentence.tokens, Sentence.pos, Sentence.text,
               Sentence.parse)
        .join(Image, Image.id == SnapshotMember.image_id)
        .join(Sentence, Sentence.caption_id == SnapshotMember.caption_id)
        .where(SnapshotMember.snapshot_id == snapshot.id, SnapshotMember.split == split)
        .order_by(SnapshotMember.caption_id, Sentence.position)
        .execution_options(yield_per=20_000)
    )
    records: list[TrainingRecord] = []
    current: list[Any] | None = None
    sentences: list[TaggedSentence] = []

    def flush() -> None:
        if current is not None and sentences:
            caption_id, image_id, root, path, width, height, sha256 = current
            records.append(TrainingRecord(caption_id, image_id, Path(root) / path, width, height,
                                          tuple(sentences), sha256))

    for caption_id, image_id, root, path, width, height, sha256, tokens, pos, text, parse in rows:
        if current is None or current[0] != caption_id:
            flush()
            current, sentences = [caption_id, image_id, root, path, width, height, sha256], []
        sentence = _stored_sentence(tokens, pos, text, parse)
        if word_range is None or word_range[0] <= sentence.word_count() <= word_range[1]:
            sentences.append(sentence)
    flush()
    if not records:
        label = f"{snapshot.content_hash[:12]}" + (f" ({snapshot.name})" if snapshot.name else "")
        filtered = f" with {word_range[0]}–{word_range[1]} words" if word_range else ""
        widen = ", or widen the word range" if filtered else ""
        raise EmptySnapshotError(
            f"snapshot {label} has no {split!r} captions{filtered}; ingest data that lands in the "
            f"{split} split, pick another snapshot with --snapshot{widen}")
    return records
