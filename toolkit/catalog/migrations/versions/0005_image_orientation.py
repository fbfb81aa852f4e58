"""Images record the EXIF orientation that every reader applies (their width and height are after it); rows
from before stay NULL: their width and height are those of the pixels as stored.

Revision ID: 0005_image_orientation
Revises: 0004_sentence_parse
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_image_orientation"
down_revision = "0004_sentence_parse"
branch_labels = None
depends_on = None


# Plain ALTER TABLE, not batch mode: batch mode copies `images` on SQLite, and dropping the original
# fails its foreign keys (captions, snapshot members point at it). Both dialects add and drop a column.
def upgrade() -> None:
    op.add_column("images", sa.Column("orientation", sa.Integer, nullable=True))


def downgrade() -> None:
    op.drop_column("images", "orientation")
