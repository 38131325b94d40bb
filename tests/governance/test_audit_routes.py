"""Audit routes: paginated reading for the roles that may read, a verifiable export for auditors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.governance.conftest import World


def test_audit_pages_and_filters(client: TestClient, world: World) -> None:
    world.approved()
    auditor = world.actor("auditor")
    first = client.get("/v1/audit?limit=3", headers=auditor.headers).json()
    assert len(first["items"]) == 3 and first["next_before_seq"] == first["items"][-1]["seq"]
    second = client.get(f"/v1/audit?limit=3&before_seq={first['next_before_seq']}", headers=auditor.headers).json()
    assert all(e["seq"] < first["next_before_seq"] for e in second["items"])
    mine = client.get(
        f"/v1/audit?actor=user:{world.actor('compliance_officer').name}&action=version.approve", headers=auditor.headers
    ).json()["items"]
    assert len(mine) == 1 and mine[0]["subject_type"] == "version"
    assert client.get("/v1/audit?limit=100000", headers=auditor.headers).status_code == 422


def test_auditor_export_verifies_offline(client: TestClient, world: World, tmp_path: Path, app: Any) -> None:
    from governance.audit.signing import default_private_key_path, generate_keypair, load_public_key
    from governance.audit.verify import verify_export

    keys = generate_keypair(default_private_key_path(app.state.settings), force=True)
    world.approved()
    r = client.get("/v1/audit/export?fmt=jsonl", headers=world.actor("auditor").headers)
    assert r.status_code == 200, r.text
    out = tmp_path / "audit.jsonl"
    out.write_bytes(r.content)
    result = verify_export(out, public_key=load_public_key(keys.public_path))
    assert result.ok, result.reason
    assert result.count == int(r.headers["x-audit-entries"]) > 0
    # the export itself is an audited action of the auditor
    items = client.get("/v1/audit?action=audit.export&limit=1", headers=world.actor("auditor").headers).json()["items"]
    assert items[0]["actor"] == f"user:{world.actor('auditor').name}"
