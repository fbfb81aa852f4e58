"""Governance tables: review items, verdicts (append-only), negative exclusions, the regression set."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, mapped_column

from toolkit.catalog.models import Base, utcnow

if TYPE_CHECKING:
    from toolkit.catalog.db import Store

VERDICTS = ("model_error", "caption_wrong", "negative_true", "ambiguous")


class ReviewItem(Base):
    """One evaluation failure put in front of a reviewer (a hard negative beat the positive, or a miss)."""

    __tablename__ = "review_items"
    __table_args__ = (UniqueConstraint("eval_run_id", "model", "benchmark", "item_key", name="uq_review_item"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    eval_run_id: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(256))
    benchmark: Mapped[str] = mapped_column(String(64))
    item_key: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(16))  # composition | retrieval
    image_path: Mapped[str] = mapped_column(Text)
    caption_id: Mapped[int | None] = mapped_column(ForeignKey("captions.id"), nullable=True)
    positive: Mapped[str] = mapped_column(Text)
    confuser: Mapped[str] = mapped_column(Text)
    positive_score: Mapped[float] = mapped_column(Float)
    confuser_score: Mapped[float] = mapped_column(Float)
    generator: Mapped[str] = mapped_column(String(64), default="")
    trace_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | reviewed


class ReviewVerdict(Base):
    """A reviewer's decision. Never updated: a later verdict on the same item supersedes by time."""

    __tablename__ = "review_verdicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id"), index=True)
    verdict: Mapped[str] = mapped_column(String(32))
    reviewer: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    note: Mapped[str] = mapped_column(Text, default="")
    corrected_caption: Mapped[str | None] = mapped_column(Text, nullable=True)
    source: Mapped[str] = mapped_column(String(16))  # mlflow | cli
    assessment_id: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)


class NegativeExclusion(Base):
    """A negative a reviewer found to be actually true: never generated or scored again."""

    __tablename__ = "negative_exclusions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text_key: Mapped[str] = mapped_column(String(512), unique=True)
    negative_text: Mapped[str] = mapped_column(Text)
    verdict_id: Mapped[int] = mapped_column(ForeignKey("review_verdicts.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RegressionItem(Base):
    """A confirmed model error; later candidates must not do worse on these."""

    __tablename__ = "regression_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    verdict_id: Mapped[int] = mapped_column(ForeignKey("review_verdicts.id"), unique=True)
    image_path: Mapped[str] = mapped_column(Text)
    positive: Mapped[str] = mapped_column(Text)
    confuser: Mapped[str] = mapped_column(Text)
    benchmark: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def excluded_negative_keys(store: Store) -> frozenset[str]:
    """Negatives reviewers marked as actually true, in `match_key` form: generation and scoring skip them."""
    with store.session() as session:
        return frozenset(session.scalars(select(NegativeExclusion.text_key)))
