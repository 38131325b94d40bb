"""rollouts: shadow and canary evaluation of a candidate token beside the active one

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 14:49:51.077035

`rollouts` (at most one running per deployment, a partial unique index), its history
`rollout_events` and the worker's paired analyses `rollout_verdicts`; outputs gain the
rollout they belong to and, for the unreturned answer of a pair, the request id of its
served twin; reviews record the digest of the shadow evidence the officer saw.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('rollouts',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('deployment_id', sa.BigInteger(), nullable=False),
    sa.Column('version_id', sa.BigInteger(), nullable=False),
    sa.Column('baseline_version_id', sa.BigInteger(), nullable=True),
    sa.Column('mode', sa.String(length=10), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('sample', sa.Float(), nullable=False),
    sa.Column('steps', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('step_index', sa.Integer(), nullable=False),
    sa.Column('min_samples', sa.Integer(), nullable=False),
    sa.Column('started_by', sa.BigInteger(), nullable=True),
    sa.Column('started_by_actor', sa.String(length=200), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('step_started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('end_reason', sa.Text(), nullable=True),
    sa.Column('generation', sa.BigInteger(), nullable=False),
    sa.CheckConstraint("mode in ('shadow', 'canary')", name=op.f('ck_rollouts_mode_known')),
    sa.CheckConstraint("state in ('running', 'passed', 'failed', 'aborted', 'completed')", name=op.f('ck_rollouts_state_known')),
    sa.CheckConstraint('min_samples >= 1', name=op.f('ck_rollouts_min_samples_positive')),
    sa.CheckConstraint('sample > 0 and sample <= 1', name=op.f('ck_rollouts_sample_share')),
    sa.CheckConstraint('step_index >= 0', name=op.f('ck_rollouts_step_index_nonneg')),
    sa.ForeignKeyConstraint(['baseline_version_id'], ['token_versions.id'], name=op.f('fk_rollouts_baseline_version_id_token_versions'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['deployment_id'], ['deployments.id'], name=op.f('fk_rollouts_deployment_id_deployments'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['started_by'], ['users.id'], name=op.f('fk_rollouts_started_by_users'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['version_id'], ['token_versions.id'], name=op.f('fk_rollouts_version_id_token_versions'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rollouts'))
    )
    op.create_index(op.f('ix_rollouts_deployment_id'), 'rollouts', ['deployment_id'], unique=False)
    op.create_index(op.f('ix_rollouts_version_id'), 'rollouts', ['version_id'], unique=False)
    op.create_index('uq_rollouts_one_running', 'rollouts', ['deployment_id'], unique=True, postgresql_where=sa.text("state = 'running'"))
    op.create_table('rollout_events',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('rollout_id', sa.BigInteger(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('step_index', sa.Integer(), nullable=False),
    sa.Column('weight', sa.Float(), nullable=False),
    sa.Column('generation', sa.BigInteger(), nullable=True),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('verdict_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['rollout_id'], ['rollouts.id'], name=op.f('fk_rollout_events_rollout_id_rollouts'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rollout_events')),
    sa.UniqueConstraint('rollout_id', 'seq', name='uq_rollout_events_seq')
    )
    op.create_index(op.f('ix_rollout_events_rollout_id'), 'rollout_events', ['rollout_id'], unique=False)
    op.create_table('rollout_verdicts',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('rollout_id', sa.BigInteger(), nullable=False),
    sa.Column('step_index', sa.Integer(), nullable=False),
    sa.Column('n_pairs', sa.Integer(), nullable=False),
    sa.Column('decision', sa.String(length=10), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('tests', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('differing', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('evidence_digest', sa.String(length=64), nullable=False),
    sa.Column('upto_output_id', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("decision in ('pass', 'fail', 'pending')", name=op.f('ck_rollout_verdicts_decision_known')),
    sa.ForeignKeyConstraint(['rollout_id'], ['rollouts.id'], name=op.f('fk_rollout_verdicts_rollout_id_rollouts'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rollout_verdicts'))
    )
    op.create_index(op.f('ix_rollout_verdicts_rollout_id'), 'rollout_verdicts', ['rollout_id'], unique=False)
    op.add_column('outputs', sa.Column('rollout_id', sa.BigInteger(), nullable=True))
    op.add_column('outputs', sa.Column('twin_of', sa.String(length=100), nullable=True))
    op.create_index('ix_outputs_rollout', 'outputs', ['rollout_id', 'id'], unique=False, postgresql_where=sa.text('rollout_id is not null'))
    op.create_foreign_key(op.f('fk_outputs_rollout_id_rollouts'), 'outputs', 'rollouts', ['rollout_id'], ['id'], ondelete='RESTRICT')
    op.add_column('reviews', sa.Column('shadow_evidence_digest', sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column('reviews', 'shadow_evidence_digest')
    op.drop_constraint(op.f('fk_outputs_rollout_id_rollouts'), 'outputs', type_='foreignkey')
    op.drop_index('ix_outputs_rollout', table_name='outputs', postgresql_where=sa.text('rollout_id is not null'))
    op.drop_column('outputs', 'twin_of')
    op.drop_column('outputs', 'rollout_id')
    op.drop_index(op.f('ix_rollout_verdicts_rollout_id'), table_name='rollout_verdicts')
    op.drop_table('rollout_verdicts')
    op.drop_index(op.f('ix_rollout_events_rollout_id'), table_name='rollout_events')
    op.drop_table('rollout_events')
    op.drop_index('uq_rollouts_one_running', table_name='rollouts', postgresql_where=sa.text("state = 'running'"))
    op.drop_index(op.f('ix_rollouts_version_id'), table_name='rollouts')
    op.drop_index(op.f('ix_rollouts_deployment_id'), table_name='rollouts')
    op.drop_table('rollouts')
