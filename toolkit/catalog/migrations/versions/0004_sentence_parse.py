"""Sentences keep their full parse (fine tags, lemmas, dependencies, noun chunks) for the hard-negative
generators; rows from before stay NULL until `toolkit data retag` fills them.

Revision ID: 0004_sentence_parse
Revises: 0003_domain_eval
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_sentence_parse"
down_revision = "0003_domain_eval"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sentences") as batch:
        batch.add_column(sa.Column("parse", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sentences") as batch:
        batch.drop_column("parse")
