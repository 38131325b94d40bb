"""A world for the dossier tests, built through the real services (PostgreSQL, Redis).

A deployment with two approved versions: v1 (promoted first) and v2, whose gate report is
the evaluators' own (`evaluators.runner.build_report`, stored by `evaluators.store`), reviewed
by a compliance officer and promoted; recorded outputs and the monitor's real drift checks
(`monitors.check.run_check`) until the policy-violation CUSUM fires twice, the monitor's
automatic rollback back to v1, and an officer acknowledging the alert.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from evaluators.runner import evidence_digest
from evaluators.store import save_gate_run
from governance.alerts import service as alerts
from governance.audit.signing import generate_keypair, load_private_key, load_public_key, public_path_for
from governance.db import unit_of_work
from governance.deployments import service as deployments
from governance.principal import Principal
from governance.registry import service as registry
from monitors.rollback import auto_rollback
from tests.dashboards.conftest import gate_report
from tests.monitors.conftest import World, make_world, token_bytes, uid

REVIEW_COMMENT = "Gate evidence reviewed; PII case accepted with monitoring."


@dataclass
class DossierWorld:
    monitors: World
    v1: int
    v2: int
    v2_sha: str
    evidence_digest: str
    reviewer: str
    key_path: Path

    @property
    def engine(self) -> Engine:
        return self.monitors.engine

    @property
    def deployment(self) -> str:
        return self.monitors.deployment

    def private_key(self):  # type: ignore[no-untyped-def]
        return load_private_key(self.key_path)

    def public_key(self):  # type: ignore[no-untyped-def]
        return load_public_key(public_path_for(self.key_path))


def _gated_release(w: World) -> tuple[int, str, str]:
    """submit -> the evaluators' gate report stored -> gate passed -> approved -> promoted."""
    with unit_of_work(w.engine) as s:
        sub = registry.submit_version(
            s, data=token_bytes(w.base_digest, uuid.uuid4().int % 2**31), adapter=uid("house-style"),
            principal=w.people["ml_engineer"], max_bytes=1_000_000,
            deployment=deployments.submission_target(s, name=w.deployment))
        vid, sha = sub.version.id, sub.version.sha256
    gate = Principal.for_system("gate")
    report = gate_report(failing_cases=2).model_copy(
        update={"policy_sha256": hashlib.sha256(w.policy_text.encode()).hexdigest()})
    report.evidence_digest = evidence_digest(report.evidence())
    with unit_of_work(w.engine) as s:
        registry.begin_gate(s, version_id=vid, principal=gate)
    with unit_of_work(w.engine) as s:
        save_gate_run(s, version_id=vid, report=report, policy_sha256=report.policy_sha256)
        registry.finish_gate(s, version_id=vid, passed=True, evidence_digest=report.evidence_digest,
                             policy_sha256=report.policy_sha256, principal=gate)
    with unit_of_work(w.engine) as s:
        registry.approve(s, version_id=vid, principal=w.people["compliance_officer"], comment=REVIEW_COMMENT)
    with unit_of_work(w.engine) as s:
        deployments.promote(s, deployment=w.deployment, version_id=vid, principal=w.people["ml_engineer"])
    w.versions.append(vid)
    return vid, sha, report.evidence_digest


def build_world(engine: Engine, tmp_path: Path) -> DossierWorld:
    w = make_world(engine)
    v1 = w.release()
    v2, sha, digest = _gated_release(w)
    w.record(v2, 210)
    w.check("w1")
    w.record(v2, 40)
    w.check("w2")
    w.record(v2, 40, violating_every=2)
    w.check("w3")
    w.record(v2, 40, violating_every=2)
    fired = w.check("w4")
    assert fired.verdict == "drift" and fired.rollback is not None, fired.detectors
    with unit_of_work(engine) as s:
        out = auto_rollback(s, deployment_id=w.deployment_id, expected_version_id=v2, check_id=fired.check_id,
                            detector="policy_violations", now=datetime.now(UTC))
    assert out.status == "rolled_back", out
    with unit_of_work(engine) as s:
        from governance.alerts.models import Alert

        ids = s.scalars(select(Alert.id).where(Alert.deployment_id == w.deployment_id, Alert.kind == "drift")).all()
        for aid in ids:
            alerts.ack_alert(s, alert_id=aid, principal=w.people["compliance_officer"], comment="investigating")
    key = tmp_path / "keys" / "ed25519.key"
    key.parent.mkdir(parents=True, exist_ok=True)
    generate_keypair(key)
    return DossierWorld(w, v1, v2, sha, digest, w.people["compliance_officer"].name, key)


@pytest.fixture()
def dossier_world(engine: Engine, settings_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DossierWorld:
    from governance.settings import reset_settings_cache

    world = build_world(engine, tmp_path)
    monkeypatch.setenv("GOVERN_SIGNING_KEY_PATH", str(world.key_path))
    reset_settings_cache()
    return world


@pytest.fixture(autouse=True)
def _small_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVERN_MONITOR_REFERENCE_SIZE", "200")
