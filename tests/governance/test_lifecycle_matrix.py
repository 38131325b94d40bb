"""Every (state, action, role): only the lifecycle table's moves succeed, each with exactly one
audit entry; every other combination is refused, changes nothing, and leaves one ``denied`` entry.

The expectations below are written from DESIGN.md independently of
`governance.registry.lifecycle.MOVES`, so the test checks the table rather than restating it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, select

from governance.auth.models import User
from governance.db import unit_of_work
from governance.deployments import service as deployments
from governance.deployments.models import Deployment, Promotion
from governance.errors import DomainError
from governance.gates.models import GateRun
from governance.principal import Principal
from governance.refusals import governed_unit_of_work
from governance.registry import lifecycle
from governance.registry import service as registry
from governance.registry.models import Adapter, BaseModel_, Policy, Review, TokenVersion, VersionState
from tests.governance.conftest import GATE_DIGEST, POLICY_SHA, World, audit_head, audit_since, uid

STATES = [s.value for s in VersionState]
ROLES = ["ml_engineer", "compliance_officer", "auditor", "admin", "service"]
REVIEWERS = {"compliance_officer", "admin"}
ROLLBACKERS = {"compliance_officer", "admin", "service"}

# (action) -> (states it may start from, roles that may do it, resulting state)
EXPECTED: dict[str, tuple[set[str], set[str], str]] = {
    "gate_start": ({"submitted"}, {"service"}, "evaluating"),
    "gate_pass": ({"evaluating"}, {"service"}, "gate_passed"),
    "gate_fail": ({"evaluating"}, {"service"}, "gate_failed"),
    "approve": ({"gate_passed", "rolled_back"}, REVIEWERS, "approved"),
    "reject": ({"gate_passed", "rolled_back"}, REVIEWERS, "rejected"),
    "promote": ({"approved"}, {"ml_engineer", "admin"}, "active"),
    "rollback": ({"active"}, ROLLBACKERS, "rolled_back"),  # roll the version back (it is active)
    "restore": ({"superseded", "approved"}, ROLLBACKERS, "active"),  # roll back *to* the version
}


@dataclass
class Case:
    dep: str
    version_id: int


def _version(s: object, *, base: BaseModel_, adapter_id: int, submitter: int, state: str, dep_id: int | None) -> int:
    data = os.urandom(64)
    sha = hashlib.sha256(data).hexdigest()
    v = TokenVersion(
        adapter_id=adapter_id,
        base_model_id=base.id,
        sha256=sha,
        artifact=data,
        size_bytes=len(data),
        manifest={},
        n_tokens=1,
        param_count=72,
        submitted_by=submitter,
        state=state,
        deployment_id=dep_id,
    )
    s.add(v)  # type: ignore[attr-defined]
    s.flush()  # type: ignore[attr-defined]
    evidence = hashlib.sha256(sha.encode()).hexdigest()
    run = GateRun(version_id=v.id, policy_sha256=POLICY_SHA, gate_digest=GATE_DIGEST, status="passed",
                  evidence_digest=evidence)
    s.add(run)  # type: ignore[attr-defined]
    s.flush()  # type: ignore[attr-defined]
    s.add(
        Review(
            version_id=v.id,
            reviewer_id=submitter,
            decision="approve",
            comment="setup",  # type: ignore[attr-defined]
            artifact_sha256=sha,
            evidence_digest=evidence,
            policy_sha256=POLICY_SHA,
            gate_digest=GATE_DIGEST,
            gate_run_id=run.id,
        )
    )
    s.flush()  # type: ignore[attr-defined]
    return v.id


def _setup(engine: Engine, world: World, state: str, action: str) -> Case:
    """A fresh deployment and a version in `state`; for rollback/restore the surrounding versions."""
    with unit_of_work(engine) as s:
        base = s.scalars(select(BaseModel_).where(BaseModel_.name == world.base_name)).one()
        policy = s.scalars(select(Policy).where(Policy.sha256 == POLICY_SHA)).one()
        dep = Deployment(name=uid("mx"), base_model_id=base.id, policy_id=policy.id, generation=0)
        adapter = Adapter(name=uid("mx-line"), base_model_id=base.id)
        s.add_all([dep, adapter])
        s.flush()
        submitter = world.actor("ml_engineer").principal.user_id
        other_submitter = _other_submitter(s)
        needs_dep = state in ("active", "superseded", "rolled_back") or action in ("rollback", "restore")
        vid = _version(
            s,
            base=base,
            adapter_id=adapter.id,
            submitter=other_submitter,
            state=state,
            dep_id=dep.id if needs_dep else None,
        )
        assert submitter != other_submitter
        gen = 0
        if state in ("active", "superseded"):
            gen += 1
            s.add(Promotion(deployment_id=dep.id, generation=gen, kind="promote", version_id=vid, actor="system:test"))
        if action == "rollback":
            # a valid target: superseded and active before
            t = _version(
                s, base=base, adapter_id=adapter.id, submitter=other_submitter, state="superseded", dep_id=dep.id
            )
            s.flush()
            gen += 1
            s.add(Promotion(deployment_id=dep.id, generation=gen, kind="promote", version_id=t, actor="system:test"))
        if action == "restore" and state != "active":
            a = _version(s, base=base, adapter_id=adapter.id, submitter=other_submitter, state="active", dep_id=dep.id)
            s.flush()
            gen += 1
            s.add(Promotion(deployment_id=dep.id, generation=gen, kind="promote", version_id=a, actor="system:test"))
        dep.generation = gen
        return Case(dep.name, vid)


_OTHER: dict[str, int] = {}


def _other_submitter(s: object) -> int:
    """A submitter distinct from every acting user, so four-eyes never decides a matrix cell."""
    if "id" not in _OTHER:
        with unit_of_work(s.get_bind()) as s2:  # type: ignore[attr-defined]
            u = User(name=uid("submitter"), role="ml_engineer")
            s2.add(u)
            s2.flush()
            _OTHER["id"] = u.id
    return _OTHER["id"]


def _act(action: str, case: Case, p: Principal) -> Callable[[object], object]:
    v = case.version_id
    return {
        "gate_start": lambda s: registry.begin_gate(s, version_id=v, principal=p),
        "gate_pass": lambda s: registry.finish_gate(
            s, version_id=v, passed=True, evidence_digest="e" * 64, policy_sha256=POLICY_SHA, principal=p
        ),
        "gate_fail": lambda s: registry.finish_gate(
            s, version_id=v, passed=False, evidence_digest="e" * 64, policy_sha256=POLICY_SHA, principal=p
        ),
        "approve": lambda s: registry.approve(s, version_id=v, principal=p, comment="looks fine"),
        "reject": lambda s: registry.reject(s, version_id=v, principal=p, comment="no"),
        "promote": lambda s: deployments.promote(s, deployment=case.dep, version_id=v, principal=p),
        "rollback": lambda s: deployments.rollback(s, deployment=case.dep, principal=p, reason="matrix"),
        "restore": lambda s: deployments.rollback(
            s, deployment=case.dep, principal=p, reason="matrix", to_version_id=v
        ),
    }[action]


def _snapshot(engine: Engine, case: Case) -> tuple[object, ...]:
    with unit_of_work(engine) as s:
        dep = s.scalars(select(Deployment).where(Deployment.name == case.dep)).one()
        states = tuple(
            s.execute(
                select(TokenVersion.id, TokenVersion.state, TokenVersion.row_version)
                .where((TokenVersion.deployment_id == dep.id) | (TokenVersion.id == case.version_id))
                .order_by(TokenVersion.id)
            ).tuples()
        )
        n_promos = len(list(s.scalars(select(Promotion.id).where(Promotion.deployment_id == dep.id))))
        n_reviews = len(list(s.scalars(select(Review.id).where(Review.version_id == case.version_id))))
        return dep.generation, states, n_promos, n_reviews


def test_lifecycle_table_is_the_one_from_the_design() -> None:
    moves = {(m.from_state.value, m.to_state.value, m.action) for m in lifecycle.MOVES}
    assert ("gate_passed", "approved", "approve") in moves
    assert not any(m.from_state.value in ("gate_failed", "rejected") for m in lifecycle.MOVES), "terminal states"
    assert ("rolled_back", "active", "restore") not in moves, "a rolled-back version needs a new review first"


@pytest.mark.parametrize("action", list(EXPECTED))
def test_every_state_action_role(engine: Engine, world: World, action: str) -> None:
    starts, roles, result = EXPECTED[action]
    failures: list[str] = []
    for state in STATES:
        for role in ROLES:
            case = _setup(engine, world, state, action)
            p = world.actor(role).principal
            before_seq = audit_head(engine)
            before = _snapshot(engine, case)
            should = state in starts and role in roles
            try:
                with governed_unit_of_work(engine) as s:
                    _act(action, case, p)(s)
                ok, err = True, None
            except DomainError as exc:
                ok, err = False, exc
            entries = audit_since(engine, before_seq)
            with unit_of_work(engine) as s:
                now_state = s.get(TokenVersion, case.version_id).state  # type: ignore[union-attr]
            cell = f"{state:>12} {action:<10} {role:<18}"
            if should:
                if not ok:
                    failures.append(f"{cell} refused: {err}")
                elif now_state != result:
                    failures.append(f"{cell} -> {now_state}, expected {result}")
                elif len(entries) != 1 or entries[0].action == "denied":
                    failures.append(f"{cell} wrote {[e.action for e in entries]}, expected one entry")
            else:
                if ok:
                    failures.append(f"{cell} succeeded but the table forbids it")
                    continue
                assert err is not None
                if err.status not in (403, 409):
                    failures.append(f"{cell} refused with {err.status}, expected 403 or 409")
                if _snapshot(engine, case) != before:
                    failures.append(f"{cell} changed something although refused")
                if [e.action for e in entries] != ["denied"]:
                    failures.append(f"{cell} wrote {[e.action for e in entries]}, expected one 'denied'")
    assert not failures, "\n".join(failures)
