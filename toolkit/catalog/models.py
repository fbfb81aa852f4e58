"""The catalog's tables (SQLAlchemy 2 typed ORM). Alembic migrations under `migrations/` create them.

Lineage chain: ingest batch -> image -> caption -> sentence (with POS tags) -> snapshot membership.
Nothing is ever deleted: corrections supersede a caption, verdicts and decisions are appended.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from toolkit.core.images import aspect_class


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}  # noqa: RUF012 (SQLAlchemy API)


class IngestBatch(Base):
    __tablename__ = "ingest_batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_uri: Mapped[str] = mapped_column(Text)
    source_kind: Mapped[str] = mapped_column(String(16))
    source_sha256: Mapped[str] = mapped_column(String(64), index=True)
    images_root: Mapped[str] = mapped_column(Text)
    tagger: Mapped[str] = mapped_column(String(128))
    actor: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))  # running | committed | failed
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Image(Base):
    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    images_root: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)  # relative to images_root, as first seen
    width: Mapped[int] = mapped_column(Integer)  # as readers see it: after `orientation`
    height: Mapped[int] = mapped_column(Integer)
    # The EXIF orientation (1-8, 1 upright) applied on every read; NULL: ingested before it was recorded.
    orientation: Mapped[int | None] = mapped_column(Integer, nullable=True)
    format: Mapped[str] = mapped_column(String(16))
    num_bytes: Mapped[int] = mapped_column(BigInteger)
    split: Mapped[str] = mapped_column(String(8), index=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("ingest_batches.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @property
    def aspect(self) -> str:
        return aspect_class(self.width, self.height)


class Caption(Base):
    __tablename__ = "captions"
    __table_args__ = (UniqueConstraint("image_id", "text_sha256", name="uq_caption_image_text"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    text_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | superseded
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("captions.id"), nullable=True)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("ingest_batches.id"), nullable=True)
    source_row: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Sentence(Base):
    """One sentence of a caption; position 0 is the primary caption, the rest are extra positives."""

    __tablename__ = "sentences"
    __table_args__ = (UniqueConstraint("caption_id", "position", name="uq_sentence_position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    caption_id: Mapped[int] = mapped_column(ForeignKey("captions.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    tokens: Mapped[list[str]] = mapped_column(default=list)
    pos: Mapped[list[str]] = mapped_column(default=list)  # Universal POS, aligned with tokens
    tagger: Mapped[str] = mapped_column(String(128))
    # toolkit.core.parse.TaggedSentence.to_json(); NULL for rows tagged before it (see `toolkit data retag`)
    parse: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)


class Reject(Base):
    """A row that was not stored, with the specific reason. One row per (source, row)."""

    __tablename__ = "rejects"
    __table_args__ = (UniqueConstraint("source_sha256", "row_ref", name="uq_reject_source_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("ingest_batches.id"), index=True)
    source_uri: Mapped[str] = mapped_column(Text)
    source_sha256: Mapped[str] = mapped_column(String(64))
    row_ref: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(String(64), index=True)
    detail: Mapped[str] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Snapshot(Base):
    """A frozen membership list, named by the hash of its content."""

    __tablename__ = "snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)


class SnapshotMember(Base):
    __tablename__ = "snapshot_members"
    __table_args__ = (Index("ix_snapshot_members_snapshot", "snapshot_id"),)

    snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshots.id"), primary_key=True)
    caption_id: Mapped[int] = mapped_column(ForeignKey("captions.id"), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    split: Mapped[str] = mapped_column(String(8))


class AuditEvent(Base):
    """Append-only: the migration installs triggers that refuse UPDATE and DELETE."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
