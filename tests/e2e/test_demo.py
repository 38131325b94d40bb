"""`govern demo --fast` end to end, as a real subprocess, then every step's outcome is
checked in the demo's database and its audit log (not only the exit code)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_fast_tells_the_whole_story(database_url: str, redis_url: str, tmp_path: Path) -> None:
    db_name = f"govern_demo_{uuid.uuid4().hex[:8]}"
    state = Path(os.environ.get("GOVERN_TEST_STATE_DIR", ROOT / "state"))  # reuse the prepared model cache
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVERN_")}
    env.update({
        "GOVERN_DATABASE_URL": database_url,
        "GOVERN_REDIS_URL": redis_url,
        "GOVERN_STATE_DIR": str(state),
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "250",  # rich wraps captured output at 80 columns otherwise
    })
    res = subprocess.run(
        [sys.executable, "-m", "governance.cli.main", "demo", "--fast", "--db-name", db_name],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=2400,
    )
    out = res.stdout + res.stderr
    flat = " ".join(out.split())  # the console's line wrapping does not matter
    base, _, query = database_url.partition("?")
    admin = base.replace("postgresql+psycopg://", "postgresql://") + (f"?{query}" if query else "")
    demo = base.rsplit("/", 1)[0].replace("postgresql+psycopg://", "postgresql://") + f"/{db_name}"
    try:
        assert res.returncode == 0, out[-6000:]
        assert "demo finished" in flat
        with psycopg.connect(demo) as conn:
            states = dict(conn.execute(
                "select (manifest->>'training_method') || ':' || id, state from token_versions order by id"
            ).fetchall())
            kinds = [r[0] for r in conn.execute(
                "select kind from promotions order by generation").fetchall()]
            actions = [r[0] for r in conn.execute("select action from audit_log order by seq").fetchall()]
            alerts = conn.execute("select count(*) from alerts").fetchone()
            drift = conn.execute("select count(*) from drift_checks where verdict = 'drift'").fetchone()
            outputs = conn.execute("select count(*) from outputs").fetchone()
            gaps = conn.execute("select max(seq) - count(*) from audit_log").fetchone()
            promos = conn.execute(
                "select kind, version_id, previous_version_id, actor from promotions order by generation").fetchall()
            auto_actor = conn.execute(
                "select actor from audit_log where action = 'deployment.auto_rollback'").fetchall()
            shadows = conn.execute(
                "select id, version_id, mode, state from rollouts order by id").fetchall()
            # the shadowed version's answers before its promotion: every one an unreturned twin
            shadow_served = conn.execute(
                "select count(*) filter (where o.twin_of is null), count(*) filter (where o.twin_of is not null)"
                " from outputs o join rollouts r on r.version_id = o.version_id"
                " where o.created_at < (select min(created_at) from promotions p"
                "                       where p.version_id = r.version_id)").fetchone()
            violation_drift = conn.execute(
                "select count(*) from drift_checks"
                " where detectors::jsonb -> 'policy_violations' ->> 'verdict' = 'drift'"
            ).fetchone()
        # step 2-3: three versions; the gate passed two and failed one
        assert sorted(states.values()).count("gate_failed") == 1, states
        # step 5: the approved second version shadowed beside the first, flagged by the paired test
        assert [(m, st) for _, _, m, st in shadows] == [("shadow", "failed")], shadows
        assert shadows[0][1] == promos[1][1], (shadows, promos)  # the version promoted next
        assert shadow_served is not None and shadow_served[0] == 0 and shadow_served[1] >= 24, shadow_served
        assert "shadow verdict: fail" in flat, flat[-3000:]
        # step 4-6: promote, promote, then the monitor's rollback to the first
        assert kinds == ["promote", "promote", "auto_rollback"], kinds
        # the rollback went from the second promoted version back to the first, by the monitor
        assert promos[2][1] == promos[0][1] and promos[2][2] == promos[1][1], promos
        assert promos[2][3] == "system:monitor/policy_violations", promos
        assert [r[0] for r in auto_actor] == ["system:monitor/policy_violations"], auto_actor
        assert violation_drift is not None and violation_drift[0] >= 1
        assert list(states.values()).count("active") == 1 and list(states.values()).count("rolled_back") == 1
        # the audit log tells the story: submissions, gate verdicts, reviews, the refused
        # self-approval, promotions, the rollback, the alert, the auditor's export
        for needed in ("version.submit", "version.gate_pass", "version.gate_fail", "version.approve", "denied",
                       "deployment.promote", "alert.raise", "audit.export", "rollout.start",
                       "rollout.shadow_failed"):
            assert needed in actions, (needed, sorted(set(actions)))
        assert any(a.startswith("deployment.") and "rollback" in a for a in actions), sorted(set(actions))
        assert alerts is not None and alerts[0] >= 1
        assert drift is not None and drift[0] >= 1
        assert outputs is not None and outputs[0] > 0
        assert gaps is not None and gaps[0] == 0  # no gaps in the chain's sequence
        # step 6: the offline verification and the tampered copy
        assert "verified them offline: intact" in flat
        assert "verification fails at entry #" in flat
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{db_name}" with (force)')
