"""Governance: review items, verdicts, negative exclusions, regression set.

Revision ID: 0002_governance
Revises: 0001_catalog
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_governance"
down_revision = "0001_catalog"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "review_items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("eval_run_id", sa.String(64), nullable=False, index=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("benchmark", sa.String(64), nullable=False),
        sa.Column("item_key", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("image_path", sa.Text, nullable=False),
        sa.Column("caption_id", sa.Integer, sa.ForeignKey("captions.id"), nullable=True),
        sa.Column("positive", sa.Text, nullable=False),
        sa.Column("confuser", sa.Text, nullable=False),
        sa.Column("positive_score", sa.Float, nullable=False),
        sa.Column("confuser_score", sa.Float, nullable=False),
        sa.Column("generator", sa.String(64), nullable=False),
        sa.Column("trace_id", sa.String(64), nullable=True, index=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.UniqueConstraint("eval_run_id", "model", "benchmark", "item_key", name="uq_review_item"),
    )
    op.create_table(
        "review_verdicts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("item_id", sa.Integer, sa.ForeignKey("review_items.id"), nullable=False, index=True),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("corrected_caption", sa.Text, nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("assessment_id", sa.String(64), nullable=True, unique=True),
    )
    op.create_table(
        "negative_exclusions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("text_key", sa.String(512), nullable=False, unique=True),
        sa.Column("negative_text", sa.Text, nullable=False),
        sa.Column("verdict_id", sa.Integer, sa.ForeignKey("review_verdicts.id"), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "regression_items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("verdict_id", sa.Integer, sa.ForeignKey("review_verdicts.id"), nullable=False, unique=True),
        sa.Column("image_path", sa.Text, nullable=False),
        sa.Column("positive", sa.Text, nullable=False),
        sa.Column("confuser", sa.Text, nullable=False),
        sa.Column("benchmark", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )


def downgrade() -> None:
    for table in ("regression_items", "negative_exclusions", "review_verdicts", "review_items"):
        op.drop_table(table)
