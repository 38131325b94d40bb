"""service keys bound to deployments: one row per (key, deployment) in api_key_deployments

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_key_deployments",
        sa.Column("key_id", sa.BigInteger(), nullable=False),
        sa.Column("deployment", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name=op.f("fk_api_key_deployments_key_id_api_keys"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["deployment"],
            ["deployments.name"],
            name=op.f("fk_api_key_deployments_deployment_deployments"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("key_id", "deployment", name=op.f("pk_api_key_deployments")),
    )
    op.create_index(
        op.f("ix_api_key_deployments_deployment"), "api_key_deployments", ["deployment"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_api_key_deployments_deployment"), table_name="api_key_deployments")
    op.drop_table("api_key_deployments")
