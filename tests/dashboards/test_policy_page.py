"""The deployment page's policy history: versions, diffs, and an officer's decision through the form."""

from __future__ import annotations

import html as html_lib

import pytest
from fastapi.testclient import TestClient

from governance.db import unit_of_work
from governance.deployments import policies
from governance.deployments import service as deployments
from tests.dashboards.conftest import POLICY_TEXT, World, sign_in

pytestmark = pytest.mark.usefixtures("settings_env")

STRICTER = POLICY_TEXT.replace("max_accuracy_drop: 0.02", "max_accuracy_drop: 0.01")


def test_policy_history_with_diff_and_an_officers_decision(client: TestClient, world: World) -> None:
    v1 = world.gated_release()
    world.approve(v1)
    world.promote(v1)
    with unit_of_work(world.engine) as s:
        policies.propose_policy(s, deployment=world.deployment, policy_text=STRICTER, reason="after the incident",
                                principal=world.people["ml_engineer"].principal)
    # an engineer sees the history and the diff, but no decision form
    sign_in(client, world.people["ml_engineer"].key)
    page = html_lib.unescape(client.get(f"/ui/deployments/{world.deployment}").text)
    section = page[page.index('data-testid="policy-history"'):]
    assert "v2" in section and "proposed" in section and "after the incident" in section and "waiting" in section
    assert "+    max_accuracy_drop: 0.01" in section and "-    max_accuracy_drop: 0.02" in section
    assert 'data-testid="policy-decision-form"' not in page
    client.cookies.clear()
    csrf = sign_in(client, world.people["compliance_officer"].key)
    page = client.get(f"/ui/deployments/{world.deployment}").text
    assert 'data-testid="policy-decision-form"' in page
    r = client.post(f"/ui/deployments/{world.deployment}/policies/2/decide",
                    data={"decision": "approve", "comment": "", "csrf_token": csrf})
    assert r.status_code == 422  # a decision needs a comment; nothing changed
    r = client.post(f"/ui/deployments/{world.deployment}/policies/2/decide",
                    data={"decision": "approve", "comment": "agreed", "csrf_token": csrf})
    assert r.status_code == 303
    page = html_lib.unescape(client.get(r.headers["location"]).text)
    assert "re-gating" in page and "agreed" in page
    with unit_of_work(world.engine) as s:
        dep = deployments.get_deployment_or_raise(s, name=world.deployment)
        assert deployments.policy_of(s, deployment=dep).content == STRICTER
