"""Tables for stored evaluation sets (migration 0003_domain_eval).

A domain test set is generated once from a snapshot's held-out split and then frozen, so every model
of a project is scored on the very same items. Items keep how their negative was made (generator,
kind, detail) so failures can be traced back to a generator.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from toolkit.catalog.models import Base, utcnow


class DomainTestSet(Base):
    __tablename__ = "domain_test_sets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Hash over the items (image sha, positive, negative, generator): same items, same hash.
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshots.id"), index=True)
    split: Mapped[str] = mapped_column(String(8))
    generators: Mapped[list[str]] = mapped_column(default=list)
    seed: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)


class DomainTestItem(Base):
    __tablename__ = "domain_test_items"
    __table_args__ = (UniqueConstraint("test_set_id", "position", name="uq_domain_item_position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    test_set_id: Mapped[int] = mapped_column(ForeignKey("domain_test_sets.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # order within the set, 0-based
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    caption_id: Mapped[int] = mapped_column(ForeignKey("captions.id"))
    positive: Mapped[str] = mapped_column(Text)
    negative: Mapped[str] = mapped_column(Text)
    generator: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # swap | replace
    detail: Mapped[str] = mapped_column(Text, default="")
