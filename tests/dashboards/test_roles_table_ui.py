"""The dashboard shows each action's controls exactly to the roles `governance.roles.PERMISSIONS` gives it.

One signed-in person per role that may use the UI: the approve button (``version.approve``),
the rollback and freeze forms (``deployment.rollback`` / ``deployment.freeze``), a running
canary's advance and abort forms (``rollout.advance`` / ``rollout.abort``) and the
acknowledge form (``alert.ack``) appear for that role if and only if the table's row holds it.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dashboards.deps import UI_ROLES
from governance.alerts import service as alerts
from governance.db import unit_of_work
from governance.deployments import rollouts
from governance.deployments import service as deployments
from governance.roles import Role, allowed
from tests.dashboards.conftest import World, make_person, sign_in, uid

pytestmark = pytest.mark.usefixtures("settings_env")


def test_the_ui_roles_are_the_sign_in_row() -> None:
    assert allowed("ui.sign_in") == UI_ROLES and Role.service not in UI_ROLES


@pytest.mark.parametrize("role", sorted(r.value for r in allowed("ui.sign_in")))
def test_controls_follow_the_table(client: TestClient, world: World, role: str) -> None:
    world.people["submitter"] = make_person(world.engine, "ml_engineer")  # nobody below reviews their own
    vid = world.submit(by="submitter")
    world.gate(vid)
    canary = world.submit(by="submitter")
    world.gate(canary)
    world.approve(canary)
    with unit_of_work(world.engine) as s:
        rollouts.start_rollout(s, deployment=world.deployment, version_id=canary, mode="canary",
                               principal=world.people["ml_engineer"].principal)
        dep = deployments.get_deployment_or_raise(s, name=world.deployment)
        alert, _ = alerts.raise_alert(s, kind="drift", severity="warning", incident_key=uid("inc"),
                                      deployment_id=dep.id, message="m", actor="system:test")
        alert_id = alert.id
    sign_in(client, world.people[role].key)

    version_page = client.get(f"/ui/versions/{vid}").text
    assert ('data-testid="approve"' in version_page) == (role in allowed("version.approve"))
    deployment_page = client.get(f"/ui/deployments/{world.deployment}").text
    assert ('data-testid="rollback-form"' in deployment_page) == (role in allowed("deployment.rollback"))
    assert ('data-testid="freeze-form"' in deployment_page) == (role in allowed("deployment.freeze"))
    assert ('data-testid="rollout-advance-form"' in deployment_page) == (role in allowed("rollout.advance"))
    assert ('data-testid="rollout-abort-form"' in deployment_page) == (role in allowed("rollout.abort"))
    alerts_page = client.get("/ui/alerts").text
    assert (f"/ui/alerts/{alert_id}/ack" in alerts_page) == (role in allowed("alert.ack"))
