"""policy lifecycle: versioned deployment policies, gate digests on gate runs and reviews, re-gate runs

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 11:00:00.000000

Backfill: every existing deployment gets its current policy as version 1 (active); gate
runs and reviews get the gate digest of the policy they name when its text is known (the
`policies` table, or the shipped default policy file for gates run without a deployment).
A row whose policy text is unknown keeps a null digest: its approval then binds to the
deployment's whole policy file as before, and a re-gate gives it a digest.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _gate_digests(conn: sa.Connection) -> dict[str, str]:
    """policy sha256 -> gate digest, for every policy text this database or the release knows."""
    from governance.policy import PolicyError, default_policy_path, gate_digest, parse_policy

    texts = {sha: content for sha, content in conn.execute(sa.text("select sha256, content from policies"))}
    try:
        default = default_policy_path().read_text(encoding="utf-8")
        texts.setdefault(parse_policy(default)[1], default)
    except (OSError, PolicyError):
        pass
    found: dict[str, str] = {}
    for sha, content in texts.items():
        try:
            found[sha] = gate_digest(parse_policy(content)[0])
        except PolicyError:  # a policy this release cannot read keeps a null digest
            continue
    return found


def upgrade() -> None:
    op.create_table(
        "deployment_policies",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("deployment_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("policy_id", sa.BigInteger(), nullable=False),
        sa.Column("policy_sha256", sa.String(length=64), nullable=False),
        sa.Column("gate_digest", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("proposed_by", sa.BigInteger(), nullable=True),
        sa.Column("proposed_by_actor", sa.String(length=200), nullable=False),
        sa.Column("proposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.BigInteger(), nullable=True),
        sa.Column("decided_by_actor", sa.String(length=200), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_comment", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "state in ('proposed', 'active', 'superseded', 'rejected')", name=op.f("ck_deployment_policies_state_known")
        ),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_deployment_policies_seq_positive")),
        sa.CheckConstraint("length(btrim(reason)) > 0", name=op.f("ck_deployment_policies_reason_required")),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"],
                                name=op.f("fk_deployment_policies_deployment_id_deployments"), ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["policy_id"], ["policies.id"], name=op.f("fk_deployment_policies_policy_id_policies"),
                                ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["proposed_by"], ["users.id"], name=op.f("fk_deployment_policies_proposed_by_users"),
                                ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["decided_by"], ["users.id"], name=op.f("fk_deployment_policies_decided_by_users"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_policies")),
        sa.UniqueConstraint("deployment_id", "seq", name="uq_deployment_policies_seq"),
    )
    op.create_index(op.f("ix_deployment_policies_deployment_id"), "deployment_policies", ["deployment_id"])
    op.create_index("uq_deployment_policies_one_active", "deployment_policies", ["deployment_id"], unique=True,
                    postgresql_where=sa.text("state = 'active'"))
    op.create_index("uq_deployment_policies_one_proposed", "deployment_policies", ["deployment_id"], unique=True,
                    postgresql_where=sa.text("state = 'proposed'"))

    op.add_column("gate_runs", sa.Column("gate_digest", sa.String(length=64), nullable=True))
    op.add_column("gate_runs", sa.Column("kind", sa.String(length=10), server_default="first", nullable=False))
    op.add_column("gate_runs", sa.Column("deployment_id", sa.BigInteger(), nullable=True))
    op.add_column("gate_runs", sa.Column("requested_by", sa.String(length=200), nullable=True))
    op.create_check_constraint(op.f("ck_gate_runs_kind_known"), "gate_runs", "kind in ('first', 'regate')")
    op.create_foreign_key(op.f("fk_gate_runs_deployment_id_deployments"), "gate_runs", "deployments",
                          ["deployment_id"], ["id"], ondelete="RESTRICT")
    op.add_column("reviews", sa.Column("gate_digest", sa.String(length=64), nullable=True))
    op.add_column("reviews", sa.Column("gate_run_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(op.f("fk_reviews_gate_run_id_gate_runs"), "reviews", "gate_runs",
                          ["gate_run_id"], ["id"], ondelete="RESTRICT")

    conn = op.get_bind()
    digests = _gate_digests(conn)
    for sha, digest in digests.items():
        conn.execute(sa.text("update gate_runs set gate_digest = :d where policy_sha256 = :s"), {"d": digest, "s": sha})
        conn.execute(sa.text("update reviews set gate_digest = :d where policy_sha256 = :s"), {"d": digest, "s": sha})
    # the gate run each review was bound to: the version's passed run with that evidence
    conn.execute(sa.text(
        "update reviews r set gate_run_id = (select max(g.id) from gate_runs g where g.version_id = r.version_id "
        "and g.evidence_digest = r.evidence_digest and g.status = 'passed')"))
    rows = conn.execute(sa.text(
        "select d.id, p.id, p.sha256, d.created_at from deployments d join policies p on p.id = d.policy_id")).all()
    for dep_id, policy_id, sha, created_at in rows:
        conn.execute(sa.text(
            "insert into deployment_policies (deployment_id, seq, policy_id, policy_sha256, gate_digest, state, reason,"
            " proposed_by_actor, proposed_at) values (:dep, 1, :pid, :sha, :digest, 'active',"
            " 'the policy the deployment had when policy versions were introduced', 'system:migration', :at)"),
            {"dep": dep_id, "pid": policy_id, "sha": sha, "digest": digests.get(sha, "0" * 64), "at": created_at})


def downgrade() -> None:
    op.drop_constraint(op.f("fk_reviews_gate_run_id_gate_runs"), "reviews", type_="foreignkey")
    op.drop_column("reviews", "gate_run_id")
    op.drop_column("reviews", "gate_digest")
    op.drop_constraint(op.f("fk_gate_runs_deployment_id_deployments"), "gate_runs", type_="foreignkey")
    op.drop_constraint(op.f("ck_gate_runs_kind_known"), "gate_runs", type_="check")
    op.drop_column("gate_runs", "requested_by")
    op.drop_column("gate_runs", "deployment_id")
    op.drop_column("gate_runs", "kind")
    op.drop_column("gate_runs", "gate_digest")
    op.drop_index("uq_deployment_policies_one_proposed", table_name="deployment_policies")
    op.drop_index("uq_deployment_policies_one_active", table_name="deployment_policies")
    op.drop_index(op.f("ix_deployment_policies_deployment_id"), table_name="deployment_policies")
    op.drop_table("deployment_policies")
