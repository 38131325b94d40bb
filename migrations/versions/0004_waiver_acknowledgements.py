"""waiver acknowledgements: the waived gate bounds an approval acknowledged by name

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:30:00.000000

A gate that passes only because a bound the bare base model breaks too was waived reads
"passed with waivers"; approving it requires the officer to acknowledge each waiver by
name, and the names are kept with the review. Existing reviews keep a null column (their
gate runs predate waivers).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("reviews", sa.Column("acknowledged_waivers", postgresql.JSONB(astext_type=sa.Text()),
                                       nullable=True))


def downgrade() -> None:
    op.drop_column("reviews", "acknowledged_waivers")
