"""Step 1 of the demo, the people: an ML engineer, a compliance officer, an auditor, an admin
and the replicas' service account, each with their own API key."""

from __future__ import annotations

import uuid

from governance.auth.service import create_user
from governance.cli.demo.state import DemoState, say
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
            ("service", f"replicas-{run}", "service"),
        ]:
            user, key = create_user(s, name=name, role=role, actor=actor)
            setattr(st.users, attr, key)
            if attr in ("engineer", "officer", "auditor"):
                say(st, f"{role:<19} {user.name}  key {key[:12]}… (shown once)")
    st.env["GOVERN_API_KEY"] = st.users.service
