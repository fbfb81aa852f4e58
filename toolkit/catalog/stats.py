"""Catalog statistics for `toolkit data stats`: counts, lengths, tag coverage and rejects by reason."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from toolkit.catalog.db import StoreError
from toolkit.catalog.models import Caption, Image, IngestBatch, Reject, Sentence, Snapshot
from toolkit.core.images import TALL, WIDE

# Tag classes the CLIC swap may use (method.md excludes AUX, DET, INTJ, PART, PUNCT, SYM, X, SCONJ, CCONJ).
SWAPPABLE_TAGS = frozenset({"ADJ", "ADP", "ADV", "NOUN", "NUM", "PRON", "PROPN", "VERB"})


def _length_summary(session: Session, column: Any, where: Any = None) -> dict[str, float]:
    query = select(func.min(func.length(column)), func.avg(func.length(column)), func.max(func.length(column)))
    if where is not None:
        query = query.where(where)
    low, mean, high = session.execute(query).one()
    return {"min": int(low or 0), "mean": round(float(mean or 0.0), 2), "max": int(high or 0)}


def catalog_stats(session: Session) -> dict[str, Any]:
    images = session.scalar(select(func.count()).select_from(Image)) or 0
    splits = {"train": 0, "val": 0, "test": 0}
    splits.update(dict(session.execute(select(Image.split, func.count()).group_by(Image.split)).all()))
    # The SQL form of toolkit.core.images.aspect_class, counted in the database.
    wide = session.scalar(select(func.count()).select_from(Image).where(Image.width >= Image.height)) or 0
    captions_by_status = dict(
        session.execute(select(Caption.status, func.count()).group_by(Caption.status)).all())
    active = Caption.status == "active"
    sentences_per_caption = _sentences_per_caption(session)
    tagged = swappable = primary = 0
    tag_counts: Counter[str] = Counter()
    primary_tags = session.scalars(select(Sentence.pos).where(Sentence.position == 0).execution_options(yield_per=5000))
    try:
        for pos in primary_tags:
            primary += 1
            if pos:
                tagged += 1
                classes = set(pos) & SWAPPABLE_TAGS
                tag_counts.update(classes)
                swappable += bool(classes)
    except json.JSONDecodeError as err:  # the only JSON column read here
        raise StoreError(f"the catalog is damaged: a value in table sentences, column pos, is not valid JSON "
                         f"({err.msg}); restore the catalog from a backup or re-ingest into a fresh one") from err
    rejects = dict(session.execute(
        select(Reject.reason, func.count()).group_by(Reject.reason).order_by(func.count().desc())).all())
    batches = dict(session.execute(
        select(IngestBatch.status, func.count()).group_by(IngestBatch.status)).all())
    return {
        "images": images,
        "aspect": {WIDE: wide, TALL: images - wide},
        "splits": splits,
        "captions": captions_by_status.get("active", 0),
        "captions_superseded": captions_by_status.get("superseded", 0),
        "sentences": session.scalar(select(func.count()).select_from(Sentence)) or 0,
        "sentences_per_caption": sentences_per_caption,
        "caption_chars": _length_summary(session, Caption.text, active),
        "sentence_chars": _length_summary(session, Sentence.text),
        "tag_coverage": {
            "primary_sentences": primary,
            "tagged": round(tagged / primary, 4) if primary else 0.0,
            "with_swappable_class": round(swappable / primary, 4) if primary else 0.0,
            "class_presence": {tag: round(n / primary, 4) for tag, n in sorted(tag_counts.items())},
        },
        "rejects": sum(rejects.values()),
        "rejects_by_reason": rejects,
        "ingest_batches": batches,
        "snapshots": session.scalar(select(func.count()).select_from(Snapshot)) or 0,
    }


def _sentences_per_caption(session: Session) -> dict[str, int]:
    """Histogram: how many captions have 1, 2, 3 … sentences (5+ pooled)."""
    per_caption = (
        select(func.count(Sentence.id).label("n"))
        .join(Caption, Caption.id == Sentence.caption_id)
        .where(Caption.status == "active")
        .group_by(Sentence.caption_id)
        .subquery()
    )
    bucket = case((per_caption.c.n >= 5, 5), else_=per_caption.c.n)
    rows = session.execute(select(bucket, func.count()).group_by(bucket).order_by(bucket)).all()
    return {("5+" if n == 5 else str(n)): count for n, count in rows}
