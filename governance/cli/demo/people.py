"""Step 1 of the demo, the people: an ML engineer, a compliance officer, an auditor, an admin
and the replicas' service account, each with their own API key. The service key is bound to
the demo's deployment, so it is created once the deployment exists (`create_service_account`)."""

from __future__ import annotations

import uuid

from governance.auth.service import create_user
from governance.cli.demo.state import DEPLOYMENT, DemoState, say
from governance.db import get_engine, unit_of_work
from governance.principal import Principal


def create_users(st: DemoState) -> None:
    run = uuid.uuid4().hex[:4]
    with unit_of_work(get_engine()) as s:
        actor = Principal.for_system("demo").actor
        for attr, name, role in [
            ("engineer", f"erin-ml-{run}", "ml_engineer"),
            ("officer", f"omar-compliance-{run}", "compliance_officer"),
            ("auditor", f"ada-audit-{run}", "auditor"),
            ("admin", f"root-admin-{run}", "admin"),
        ]:
            user, key = create_user(s, name=name, role=role, actor=actor)
            setattr(st.users, attr, key)
            if attr in ("engineer", "officer", "auditor"):
                say(st, f"{role:<19} {user.name}  key {key[:12]}… (shown once)")


def create_service_account(st: DemoState) -> None:
    """The replicas' service account, its key bound to the demo's deployment; the replicas use it."""
    with unit_of_work(get_engine()) as s:
        _, key = create_user(s, name=f"replicas-{uuid.uuid4().hex[:4]}", role="service",
                             actor=Principal.for_system("demo").actor, deployments=[DEPLOYMENT])
    st.users.service = key
    st.env["GOVERN_API_KEY"] = key
    if st.procs is not None:
        st.procs.env["GOVERN_API_KEY"] = key
