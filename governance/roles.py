"""The roles a principal can hold, and the one table of which roles may do each governed action.

`PERMISSIONS` maps every action name (the names the audit log and `require_role(...,
attempted=...)` use, plus the read actions of the routes) to the roles allowed and why.
The routes (`governance.api.deps.may`), the lifecycle table (`governance.registry.lifecycle`),
the services' `require_role` calls and the web UI's buttons all read it through `allowed`,
so a rule changes here or nowhere. docs/audit-roles.md shows the same table; a test keeps
the two equal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    ml_engineer = "ml_engineer"
    compliance_officer = "compliance_officer"
    auditor = "auditor"
    admin = "admin"
    service = "service"


ROLE_VALUES = tuple(r.value for r in Role)


@dataclass(frozen=True)
class Permission:
    roles: frozenset[Role]
    why: str


def _p(why: str, *roles: Role) -> Permission:
    return Permission(frozenset(roles), why)


_ML, _CO, _AUD, _ADM, _SVC = Role.ml_engineer, Role.compliance_officer, Role.auditor, Role.admin, Role.service
_EVERYONE = tuple(Role)
_PEOPLE = (_ML, _CO, _AUD, _ADM)
# who rolls back: an officer by hand, or the monitor acting in-process as a service principal
_ROLLBACK = (_CO, _ADM, _SVC)

PERMISSIONS: dict[str, Permission] = {
    "me.read": _p("every key holder may ask whose key it is", *_EVERYONE),
    "user.create": _p("only an admin hands out identities", _ADM),
    "user.read": _p("an auditor checks who holds which role", _ADM, _AUD),
    "key.create": _p("only an admin issues keys", _ADM),
    "key.read": _p("an auditor checks which keys exist and when they were used", _ADM, _AUD),
    "key.revoke": _p("only an admin withdraws keys", _ADM),
    "key.rotate": _p("only an admin issues keys, a rotation's new one included", _ADM),
    "user.disable": _p("only an admin offboards a person or a service account", _ADM),
    "user.enable": _p("only an admin gives an identity back its keys", _ADM),
    "base_model.register": _p("a base model is infrastructure, set up by an admin", _ADM),
    "registry.read": _p("replicas fetch artifacts with service keys; people browse", *_EVERYONE),
    "version.submit": _p("engineers submit what they trained", _ML, _ADM),
    "gate.read": _p("gate evidence is for the people who decide on it", *_PEOPLE),
    "version.gate_start": _p("only the gate worker moves a version through its gate", _SVC),
    "version.gate_pass": _p("only the gate worker records a gate verdict", _SVC),
    "version.gate_fail": _p("only the gate worker records a gate verdict", _SVC),
    "version.approve": _p("four-eyes review is a compliance decision", _CO, _ADM),
    "version.reject": _p("four-eyes review is a compliance decision", _CO, _ADM),
    "version.regate": _p("engineers, officers and the CLI's gate ask for evidence under a deployment's new gate policy",
                         _ML, _CO, _ADM, _SVC),
    "version.regate_result": _p("only the gate worker records a re-gate's verdict", _SVC),
    "version.promote": _p("engineers ship approved versions; the rollout worker promotes a canary that reached 100%",
                          _ML, _ADM, _SVC),
    "version.supersede": _p("a promotion or a rollback replaces the active version", _ML, *_ROLLBACK),
    "version.rollback": _p("an officer or the monitor takes the active version out", *_ROLLBACK),
    "version.restore": _p("an officer or the monitor puts a rollback target back", *_ROLLBACK),
    "deployment.create": _p("a deployment is infrastructure, set up by an admin", _ADM),
    "deployment.read": _p("replicas poll their active version; people browse", *_EVERYONE),
    "deployment.promote": _p("engineers ship approved versions", _ML, _ADM),
    "deployment.rollback": _p("over the API a rollback is an officer's call", _CO, _ADM),
    "deployment.auto_rollback": _p("the monitor rolls back in-process with the service role", _SVC),
    "deployment.policy_propose": _p("engineers and admins propose a deployment's next policy", _ML, _ADM),
    "deployment.policy_approve": _p("a policy change is a compliance decision (four eyes: not the proposer)", _CO),
    "deployment.policy_reject": _p("a policy change is a compliance decision (four eyes: not the proposer)", _CO),
    "rollout.start": _p("engineers put a gated candidate beside the active token, as they promote", _ML, _ADM),
    "rollout.read": _p("replicas apply the running rollout; people follow it", *_EVERYONE),
    "rollout.advance": _p("engineers step a canary on by hand; the rollout worker steps it on its verdicts",
                          _ML, _ADM, _SVC),
    "rollout.abort": _p("whoever may promote or roll back may stop a rollout; the worker stops a harmful one",
                        _ML, _CO, _ADM, _SVC),
    "rollout.verdict": _p("only the rollout worker records a paired analysis", _SVC),
    "deployment.freeze": _p("officers stop automatic rollbacks during an investigation", _CO, _ADM),
    "deployment.unfreeze": _p("officers end the freeze they started", _CO, _ADM),
    "output.ingest": _p("only replicas report what they served", _SVC),
    "alert.read": _p("alerts are for people to act on", *_PEOPLE),
    "alert.raise": _p("replicas and workers raise alerts with service keys", _SVC),
    "alert.ack": _p("an officer owns the response to an alert", _CO),
    "audit.read": _p("the audit log is for oversight: auditors, officers, admins", _AUD, _CO, _ADM),
    "audit.verify": _p("whoever may read the chain may check it", _AUD, _CO, _ADM),
    "audit.export": _p("a signed export is the auditor's evidence", _AUD),
    "dossier.read": _p("an evidence dossier is for the people who answer for the model", _CO, _AUD, _ADM),
    "ui.sign_in": _p("people sign in to the dashboard; service keys belong to automation", *_PEOPLE),
}


def allowed(*actions: str) -> frozenset[Role]:
    """The roles that may do any of the actions; a name missing from the table is a KeyError."""
    if not actions:
        raise ValueError("allowed() needs at least one action")
    return frozenset().union(*(PERMISSIONS[a].roles for a in actions))
