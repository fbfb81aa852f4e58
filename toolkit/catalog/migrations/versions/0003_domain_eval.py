"""Domain evaluation: frozen compositional test sets generated from a snapshot's held-out split.

Revision ID: 0003_domain_eval
Revises: 0002_governance
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_domain_eval"
down_revision = "0002_governance"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "domain_test_sets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("content_hash", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("snapshot_id", sa.Integer, sa.ForeignKey("snapshots.id"), nullable=False, index=True),
        sa.Column("split", sa.String(8), nullable=False),
        sa.Column("generators", sa.JSON, nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("counts", sa.JSON, nullable=False),
    )
    op.create_table(
        "domain_test_items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("test_set_id", sa.Integer, sa.ForeignKey("domain_test_sets.id"), nullable=False,
                  index=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id"), nullable=False),
        sa.Column("caption_id", sa.Integer, sa.ForeignKey("captions.id"), nullable=False),
        sa.Column("positive", sa.Text, nullable=False),
        sa.Column("negative", sa.Text, nullable=False),
        sa.Column("generator", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.UniqueConstraint("test_set_id", "position", name="uq_domain_item_position"),
    )


def downgrade() -> None:
    op.drop_table("domain_test_items")
    op.drop_table("domain_test_sets")
