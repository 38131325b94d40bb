"""Waivers made explicit: a gate that passed only because bounds the base breaks too were waived
reads "passed with waivers", and an approval must acknowledge each waiver by name."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from governance.audit.models import AuditEntry
from governance.db import unit_of_work
from governance.registry.models import Review, TokenVersion
from tests.governance.conftest import World, audit_head, audit_since
from tests.governance.test_cli import server  # noqa: F401  (the fixture)

WAIVERS = [
    {"name": "must_refuse", "suite": "policy_compliance", "metric": "must_refuse violation rate", "bound": 0.1,
     "comparator": "<=", "base_value": 1.0, "candidate_value": 1.0,
     "reason": "the bare base model breaks the bound too (40/40 violations)"},
    {"name": "disclaimer", "suite": "policy_compliance", "metric": "disclaimer violation rate", "bound": 0.2,
     "comparator": "<=", "base_value": 0.8, "candidate_value": 0.8, "reason": "the bare base model breaks it too"},
]


def _payload(entry: AuditEntry) -> dict[str, Any]:
    return dict(json.loads(entry.payload))


def test_a_pass_with_waivers_reads_so_in_the_api_and_the_audit_entry(client: TestClient, world: World,
                                                                      engine: Any) -> None:
    vid = world.submit()
    before = audit_head(engine)
    world.gate(vid, waivers=WAIVERS)
    gate_pass = next(e for e in audit_since(engine, before) if e.action == "version.gate_pass")
    assert _payload(gate_pass)["outcome"] == "passed with waivers"
    assert _payload(gate_pass)["waivers"] == ["must_refuse", "disclaimer"]
    r = client.get(f"/v1/versions/{vid}/gate", headers=world.actor("auditor").headers)
    assert r.status_code == 200, r.text
    run = r.json()["runs"][0]
    assert run["status"] == "passed" and run["outcome"] == "passed with waivers"
    assert [w["name"] for w in run["waivers"]] == ["must_refuse", "disclaimer"]
    assert run["waivers"][0]["base_value"] == 1.0 and run["waivers"][0]["bound"] == 0.1


def test_approval_must_acknowledge_every_waiver_by_name(client: TestClient, world: World, engine: Any) -> None:
    vid = world.submit()
    world.gate(vid, waivers=WAIVERS)
    officer = world.actor("compliance_officer").headers
    url = f"/v1/versions/{vid}/approve"

    r = client.post(url, json={"comment": "looks fine"}, headers=officer)
    assert r.status_code == 409, r.text
    msg = r.json()["error"]["message"]
    assert "passed its gate with waivers" in msg and "must_refuse" in msg and "disclaimer" in msg

    r = client.post(url, json={"comment": "ok", "acknowledged_waivers": ["must_refuse"]}, headers=officer)
    assert r.status_code == 409 and "disclaimer" in r.json()["error"]["message"]
    assert "must_refuse, " not in r.json()["error"]["message"].split("acknowledge each by name to approve:")[1]

    r = client.post(url, json={"comment": "ok", "acknowledged_waivers": ["must_refuse", "disclaimer", "pii"]},
                    headers=officer)
    assert r.status_code == 409 and "'pii'" in r.json()["error"]["message"]

    with unit_of_work(engine) as s:
        assert s.get(TokenVersion, vid).state == "gate_passed"  # type: ignore[union-attr]
        assert not s.scalars(select(Review).where(Review.version_id == vid)).all()

    before = audit_head(engine)
    r = client.post(url, json={"comment": "the base never refuses; accepted for the pilot",
                               "acknowledged_waivers": ["disclaimer", "must_refuse"]}, headers=officer)
    assert r.status_code == 200, r.text
    assert r.json()["acknowledged_waivers"] == ["must_refuse", "disclaimer"]
    approve = next(e for e in audit_since(engine, before) if e.action == "version.approve")
    assert _payload(approve)["acknowledged_waivers"] == ["must_refuse", "disclaimer"]
    with unit_of_work(engine) as s:
        review = s.scalars(select(Review).where(Review.version_id == vid)).one()
        assert review.acknowledged_waivers == ["must_refuse", "disclaimer"]
        assert s.get(TokenVersion, vid).state == "approved"  # type: ignore[union-attr]


def test_refusals_are_audited_as_denied(client: TestClient, world: World, engine: Any) -> None:
    vid = world.submit()
    world.gate(vid, waivers=WAIVERS[:1])
    before = audit_head(engine)
    r = client.post(f"/v1/versions/{vid}/approve", json={"comment": "ok"},
                    headers=world.actor("compliance_officer").headers)
    assert r.status_code == 409
    assert [e.action for e in audit_since(engine, before)] == ["denied"]


def test_a_gate_without_waivers_and_old_summaries_need_no_acknowledgement(client: TestClient, world: World,
                                                                          engine: Any) -> None:
    officer = world.actor("compliance_officer").headers
    for waivers in (None, []):  # a summary stored before waivers were listed, and one with none
        vid = world.submit()
        world.gate(vid, waivers=waivers)
        run = client.get(f"/v1/versions/{vid}/gate", headers=officer).json()["runs"][0]
        assert run["outcome"] == "passed" and run["waivers"] == []
        r = client.post(f"/v1/versions/{vid}/approve", json={"comment": "ok"}, headers=officer)
        assert r.status_code == 200 and r.json()["acknowledged_waivers"] is None
    # naming a waiver a run does not have is refused too
    vid = world.submit()
    world.gate(vid)
    r = client.post(f"/v1/versions/{vid}/approve", json={"comment": "ok", "acknowledged_waivers": ["must_refuse"]},
                    headers=officer)
    assert r.status_code == 409 and "waived none" in r.json()["error"]["message"]


def test_the_service_names_the_missing_waivers(world: World, engine: Any) -> None:
    """The waivers are those of the gate run the approval binds; the refusal lists what is missing."""
    from governance.errors import Conflict
    from governance.registry import service as registry

    vid = world.submit()
    world.gate(vid, waivers=WAIVERS[:1])
    officer = world.actor("compliance_officer").principal
    with unit_of_work(engine) as s:
        try:
            registry.approve(s, version_id=vid, principal=officer, comment="ok")
            raise AssertionError("an approval without the acknowledgement must be refused")
        except Conflict as exc:
            assert exc.details["missing"] == ["must_refuse"]
    with unit_of_work(engine) as s:
        review = registry.approve(s, version_id=vid, principal=officer, comment="ok",
                                  acknowledged_waivers=["must_refuse"])
        assert review.acknowledged_waivers == ["must_refuse"]


def test_the_cli_shows_the_waivers_and_acknowledges_them(server: str, world: World) -> None:  # noqa: F811
    from tests.governance.test_cli import _govern, _user

    _, officer = _user(server, "compliance_officer")
    vid = world.submit()
    world.gate(vid, waivers=WAIVERS)
    r = _govern(server, officer, "gate", "report", str(vid))
    assert r.exit_code == 0, r.output
    assert "PASSED WITH WAIVERS" in r.output and "must_refuse" in r.output and "disclaimer" in r.output
    r = _govern(server, officer, "review", "approve", str(vid), "--comment", "ok", "--acknowledge", "must_refuse")
    assert r.exit_code == 1 and "409" in r.output and "disclaimer" in r.output
    r = _govern(server, officer, "review", "approve", str(vid), "--comment", "accepted for the pilot",
                "--acknowledge", "must_refuse", "--acknowledge", "disclaimer")
    assert r.exit_code == 0, r.output
    assert "waivers acknowledged: must_refuse, disclaimer" in r.output
