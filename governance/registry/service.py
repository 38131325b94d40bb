"""Registry services: base models, adapters, token versions, the gate hand-off and four-eyes review.

Keyword-only verbs that take the session and never commit; the edge commits. Every
state change goes through `governance.registry.lifecycle.transition`, and each
governed action writes exactly one audit entry in the same transaction.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, select, text
from sqlalchemy.orm import Session

from governance import policy as policy_schema
from governance.audit import service as audit
from governance.errors import Conflict, Forbidden, InvalidInput, NotFound, PayloadTooLarge, Refusal
from governance.gates import service as gates
from governance.outbox import service as outbox
from governance.principal import Principal, require_allowed
from governance.registry import lifecycle
from governance.registry.artifacts import ParsedArtifact, check_against_base_model, parse_artifact
from governance.registry.models import Adapter, BaseModel_, Policy, Review, TokenVersion, VersionState

if TYPE_CHECKING:  # annotations only: the gates room owns its tables
    from governance.gates.models import GateRun

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def _digest(value: str, what: str) -> str:
    value = value.strip().lower()
    if not _HEX64.match(value):
        raise InvalidInput(f"{what} must be 64 lowercase hex characters (a sha256)")
    return value


def check_name(name: str, what: str) -> str:
    if not _NAME.match(name or ""):
        raise InvalidInput(
            f"{what} {name!r}: use 1-200 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


# ---------------------------------------------------------------- base models


def register_base_model(
    session: Session,
    *,
    name: str,
    weights_digest: str,
    tokenizer_digest: str,
    config: dict[str, Any],
    actor: str = "system:cli",
    actor_key_id: str | None = None,
) -> BaseModel_:
    """Register a base model (idempotent for the same name and digests); audited when new."""
    check_name(name, "base model name")
    weights_digest = _digest(weights_digest, "weights_digest")
    tokenizer_digest = _digest(tokenizer_digest, "tokenizer_digest")
    existing = session.scalars(
        select(BaseModel_).where((BaseModel_.name == name) | (BaseModel_.weights_digest == weights_digest))
    ).first()
    if existing is not None:
        if existing.name == name and existing.weights_digest == weights_digest:
            return existing
        if existing.name == name:
            raise Conflict(
                f"base model {name!r} is registered with other weights ({existing.weights_digest[:12]}...); "
                "register these weights under a new name"
            )
        raise Conflict(f"these weights are already registered as base model {existing.name!r}")
    base = BaseModel_(name=name, weights_digest=weights_digest, tokenizer_digest=tokenizer_digest, config=config)
    session.add(base)
    session.flush()
    audit.append(
        session,
        actor=actor,
        actor_key_id=actor_key_id,
        action="base_model.register",
        subject_type="base_model",
        subject_id=name,
        payload={"weights_digest": weights_digest, "tokenizer_digest": tokenizer_digest, "config": config},
    )
    return base


def get_base_model_or_raise(session: Session, *, name: str) -> BaseModel_:
    base = session.scalars(select(BaseModel_).where(BaseModel_.name == name)).first()
    if base is None:
        raise NotFound(f"no base model named {name!r}; register it with `govern model prepare`")
    return base


def list_base_models(session: Session) -> list[BaseModel_]:
    return list(session.scalars(select(BaseModel_).order_by(BaseModel_.id)))


def get_policy(session: Session, *, policy_id: int) -> Policy | None:
    """A stored policy file by id (`governance.policy_store` stores them)."""
    return session.get(Policy, policy_id)


def policy_texts(session: Session, *, policy_ids: set[int]) -> dict[int, str]:
    """id -> content of the stored policy files among ``policy_ids``, in one query."""
    if not policy_ids:
        return {}
    return {pid: content for pid, content in session.execute(
        select(Policy.id, Policy.content).where(Policy.id.in_(policy_ids))).tuples()}


def policy_text_by_sha(session: Session, *, sha256: str) -> str | None:
    """The policy file with this sha256: stored, or the shipped default policy file."""
    content = session.scalar(select(Policy.content).where(Policy.sha256 == sha256))
    if content is not None:
        return content
    default = policy_schema.default_policy_path().read_text(encoding="utf-8")
    return default if hashlib.sha256(default.encode("utf-8")).hexdigest() == sha256 else None


def gate_digest_of_run(session: Session, *, run: GateRun) -> str | None:
    """The gate digest a run judged by: recorded on it, else computed from its policy file (None: unknown)."""
    if run.gate_digest:
        return run.gate_digest
    content = policy_text_by_sha(session, sha256=run.policy_sha256)
    if content is None:
        return None
    try:
        return policy_schema.gate_digest(policy_schema.parse_policy(content)[0])
    except policy_schema.PolicyError:
        return None


# ---------------------------------------------------------------- versions


def get_version(session: Session, *, version_id: int) -> TokenVersion | None:
    return session.get(TokenVersion, version_id)


def get_version_or_raise(session: Session, *, version_id: int) -> TokenVersion:
    version = session.get(TokenVersion, version_id)
    if version is None:
        raise NotFound(f"no token version {version_id}")
    return version


def get_version_by_sha(session: Session, *, sha256: str) -> TokenVersion | None:
    return session.scalars(select(TokenVersion).where(TokenVersion.sha256 == sha256.lower())).first()


def list_versions(
    session: Session,
    *,
    state: str | None = None,
    adapter: str | None = None,
    deployment_id: int | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[TokenVersion]:
    """Versions newest first, filtered by state, adapter name and the deployment they serve or were submitted for."""
    stmt = select(TokenVersion).order_by(TokenVersion.id.desc())
    if state is not None:
        stmt = stmt.where(TokenVersion.state == check_state(state))
    if adapter is not None:
        stmt = stmt.join(Adapter, Adapter.id == TokenVersion.adapter_id).where(Adapter.name == adapter)
    if deployment_id is not None:
        stmt = stmt.where(TokenVersion.deployment_id == deployment_id)
    return list(session.scalars(stmt.limit(limit).offset(offset)))


def check_state(state: str) -> str:
    """``state`` if it is a version state, else InvalidInput naming the states."""
    if state not in {s.value for s in VersionState}:
        raise InvalidInput(f"unknown state {state!r}; use one of {', '.join(s.value for s in VersionState)}")
    return state


def active_version(session: Session, *, deployment_id: int, lock: bool = False) -> TokenVersion | None:
    """The version active on the deployment (``lock``: SELECT ... FOR UPDATE)."""
    stmt = select(TokenVersion).where(
        TokenVersion.deployment_id == deployment_id, TokenVersion.state == VersionState.active.value
    )
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).first()


def deployments_with_active_version(session: Session) -> set[int]:
    """Ids of the deployments that have an active version, in one query."""
    stmt = select(TokenVersion.deployment_id).where(TokenVersion.state == VersionState.active.value).distinct()
    return {int(i) for i in session.scalars(stmt) if i is not None}


def version_shas(session: Session, *, version_ids: list[int]) -> dict[int, str]:
    """version id -> artifact sha256, in one query (unknown ids are left out)."""
    if not version_ids:
        return {}
    stmt = select(TokenVersion.id, TokenVersion.sha256).where(TokenVersion.id.in_(version_ids))
    return {int(i): str(sha) for i, sha in session.execute(stmt).tuples()}


def active_version_sha(session: Session, *, deployment_id: int) -> tuple[int, str] | None:
    """The id and sha256 of the version active on the deployment, without loading its artifact."""
    row = session.execute(
        select(TokenVersion.id, TokenVersion.sha256).where(
            TokenVersion.deployment_id == deployment_id, TokenVersion.state == VersionState.active.value
        )
    ).first()
    return (row[0], row[1]) if row else None


def in_state(
    session: Session, *, version_ids: Sequence[int], deployment_id: int, state: VersionState
) -> list[TokenVersion]:
    """Those of ``version_ids`` (in their order) that belong to the deployment and are in ``state``."""
    if not version_ids:
        return []
    rank = case({vid: i for i, vid in enumerate(version_ids)}, value=TokenVersion.id)
    return list(session.scalars(
        select(TokenVersion)
        .where(TokenVersion.id.in_(version_ids), TokenVersion.deployment_id == deployment_id,
               TokenVersion.state == state.value)
        .order_by(rank)
    ))


def first_in_state(
    session: Session, *, version_ids: Sequence[int], deployment_id: int, state: VersionState
) -> TokenVersion | None:
    """The first of ``version_ids`` (in their order) that belongs to the deployment and is in ``state``."""
    if not version_ids:
        return None
    rank = case({vid: i for i, vid in enumerate(version_ids)}, value=TokenVersion.id)
    stmt = (
        select(TokenVersion)
        .where(TokenVersion.id.in_(version_ids), TokenVersion.deployment_id == deployment_id,
               TokenVersion.state == state.value)
        .order_by(rank)
        .limit(1)
    )
    return session.scalars(stmt).first()


def adapter_name(session: Session, *, adapter_id: int) -> str:
    return session.scalar(select(Adapter.name).where(Adapter.id == adapter_id)) or ""


@dataclass(frozen=True)
class Submission:
    version: TokenVersion
    created: bool


def _registered_base_model(session: Session, parsed: ParsedArtifact) -> BaseModel_:
    """The registered base model the artifact's manifest names."""
    if not parsed.base_model_digest:
        raise InvalidInput("the artifact's manifest names no base_model_digest")
    base = session.scalars(select(BaseModel_).where(BaseModel_.weights_digest == parsed.base_model_digest)).first()
    if base is None:
        raise InvalidInput(
            f"the artifact was trained on base model {parsed.base_model_digest[:12]}..., which is not registered; "
            "register it with `govern model prepare` (or POST /v1/base-models)"
        )
    return base


@dataclass(frozen=True)
class SubmissionTarget:
    """The deployment a submission names, as the deployments room found it (``deployment_id`` None: no such name)."""

    name: str
    deployment_id: int | None = None
    base_model_id: int | None = None


def _target_deployment(target: SubmissionTarget | None, base: BaseModel_) -> int | None:
    """The id of the deployment a submission names, which must exist and serve the artifact's base model."""
    if target is None:
        return None
    if target.deployment_id is None:
        raise NotFound(f"no deployment named {target.name!r}")
    if target.base_model_id != base.id:
        raise InvalidInput(f"deployment {target.name!r} serves another base model than this artifact's ({base.name})")
    return target.deployment_id


def _check_parent(session: Session, parent_id: int | None, base: BaseModel_) -> None:
    if parent_id is None:
        return
    parent = session.get(TokenVersion, parent_id)
    if parent is None:
        raise NotFound(f"parent version {parent_id} does not exist")
    if parent.base_model_id != base.id:
        raise InvalidInput(f"parent version {parent_id} belongs to another base model")


def _adapter_line(session: Session, adapter: str, base: BaseModel_, principal: Principal) -> Adapter:
    """The adapter (line) by name, created on first use; it must belong to the artifact's base model."""
    line = session.scalars(select(Adapter).where(Adapter.name == adapter).with_for_update()).first()
    if line is None:
        # serialize first uploads to a new line so two of them cannot both create it
        session.execute(text("select pg_advisory_xact_lock(hashtext(:s))"), {"s": "adapter:" + adapter})
        line = session.scalars(select(Adapter).where(Adapter.name == adapter)).first()
        if line is None:
            line = Adapter(name=adapter, base_model_id=base.id, created_by=principal.user_id)
            session.add(line)
            session.flush()
    if line.base_model_id != base.id:
        raise InvalidInput(f"adapter {adapter!r} is a line of another base model; use a new adapter name")
    return line


def submit_version(
    session: Session,
    *,
    data: bytes,
    adapter: str,
    principal: Principal,
    max_bytes: int,
    deployment: SubmissionTarget | None = None,
    parent_id: int | None = None,
) -> Submission:
    """Validate and register an artifact, queue its gate; a known sha256 returns the existing version.

    ``deployment`` is what `governance.deployments.service.submission_target` found for the
    name the submission gives; it is checked only for a new artifact.
    """
    require_allowed(principal, "version.submit", "adapter", adapter)
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"the artifact is {len(data)} bytes; the limit is {max_bytes} (GOVERN_MAX_ARTIFACT_BYTES)"
        )
    check_name(adapter, "adapter name")
    parsed = parse_artifact(data)
    # serialize uploads of the same bytes so a race cannot hit the unique index
    session.execute(text("select pg_advisory_xact_lock(hashtext(:s))"), {"s": "version:" + parsed.sha256})
    existing = get_version_by_sha(session, sha256=parsed.sha256)
    if existing is not None:
        return Submission(existing, False)
    base = _registered_base_model(session, parsed)
    check_against_base_model(parsed, base.config)
    deployment_id = _target_deployment(deployment, base)
    _check_parent(session, parent_id, base)
    line = _adapter_line(session, adapter, base, principal)
    if principal.user_id is None:
        raise Forbidden("a version is submitted by a person (a user key), not by automation")
    version = TokenVersion(
        adapter_id=line.id,
        base_model_id=base.id,
        sha256=parsed.sha256,
        artifact=data,
        size_bytes=len(data),
        manifest=parsed.manifest,
        n_tokens=parsed.n_tokens,
        param_count=parsed.param_count,
        data_digest=parsed.data_digest if parsed.data_digest and _HEX64.match(str(parsed.data_digest)) else None,
        parent_id=parent_id,
        deployment_id=deployment_id,
        state=VersionState.submitted.value,
        submitted_by=principal.user_id,
    )
    session.add(version)
    session.flush()
    audit.record(
        session,
        principal,
        action="version.submit",
        subject_type="version",
        subject_id=version.id,
        payload={
            "sha256": version.sha256,
            "adapter": adapter,
            "base_model": base.name,
            "deployment": deployment.name if deployment else None,
            "parent_id": parent_id,
            "size_bytes": version.size_bytes,
        },
    )
    outbox.enqueue_gate(session, version_id=version.id)
    return Submission(version, True)


# ---------------------------------------------------------------- gate hand-off (evaluators call these)


def begin_gate(session: Session, *, version_id: int, principal: Principal) -> TokenVersion:
    """submitted -> evaluating (role service, actor e.g. system:gate)."""
    return lifecycle.transition(
        session, version_id=version_id, to=VersionState.evaluating.value, principal=principal, action="gate_start"
    )


def finish_gate(
    session: Session,
    *,
    version_id: int,
    passed: bool,
    evidence_digest: str | None,
    policy_sha256: str | None,
    principal: Principal,
    waivers: Sequence[str] = (),
) -> TokenVersion:
    """evaluating -> gate_passed | gate_failed, recording the digests the verdict rests on.

    ``waivers`` names the bounds the gate waived because the base breaks them too: a pass
    with waivers is recorded as ``outcome`` "passed with waivers" with their names.
    """
    to, action = (VersionState.gate_passed, "gate_pass") if passed else (VersionState.gate_failed, "gate_fail")
    payload: dict[str, Any] = {"evidence_digest": evidence_digest, "policy_sha256": policy_sha256}
    if passed:
        payload["outcome"] = "passed with waivers" if waivers else "passed"
        payload["waivers"] = list(waivers)
    return lifecycle.transition(
        session,
        version_id=version_id,
        to=to.value,
        principal=principal,
        action=action,
        payload=payload,
    )


# ---------------------------------------------------------------- review


def latest_review(session: Session, *, version_id: int) -> Review | None:
    return session.scalars(
        select(Review).where(Review.version_id == version_id).order_by(Review.id.desc()).limit(1)
    ).first()


def reviews(session: Session, *, version_id: int) -> list[Review]:
    return list(session.scalars(select(Review).where(Review.version_id == version_id).order_by(Review.id)))


def standing_approval(session: Session, *, version_id: int, gate_digest: str) -> Review | None:
    """The version's approval under this gate digest, unless a later review under it rejected it."""
    review = session.scalars(
        select(Review).where(Review.version_id == version_id, Review.gate_digest == gate_digest)
        .order_by(Review.id.desc()).limit(1)
    ).first()
    return review if review is not None and review.decision == "approve" else None


def approval_of_run(session: Session, *, version_id: int, run: GateRun) -> Review | None:
    """The newest review of the version bound to this gate run (older rows: to its evidence), if it approved."""
    legacy = Review.gate_run_id.is_(None) & (Review.evidence_digest == run.evidence_digest)
    bound = (Review.gate_run_id == run.id) | legacy
    review = session.scalars(
        select(Review).where(Review.version_id == version_id, bound).order_by(Review.id.desc()).limit(1)
    ).first()
    return review if review is not None and review.decision == "approve" else None


def approved_gate_digests(session: Session, *, version_ids: Sequence[int]) -> dict[int, set[str]]:
    """version id -> the gate digests it holds an approval under, in one query."""
    found: dict[int, set[str]] = {vid: set() for vid in version_ids}
    if not version_ids:
        return found
    for vid, digest in session.execute(
            select(Review.version_id, Review.gate_digest)
            .where(Review.version_id.in_(version_ids), Review.decision == "approve", Review.gate_digest.is_not(None))
    ).tuples():
        if digest is not None:
            found[vid].add(digest)
    return found


# a version in these states may be approved again under a new gate digest without a state change
REAPPROVABLE = (VersionState.approved.value, VersionState.active.value, VersionState.superseded.value)


def _gate_to_bind(session: Session, version: TokenVersion, principal: Principal, action: str) -> GateRun:
    """The newest passed gate run of the version, which the approval will be bound to."""
    gate = gates.latest_passed_gate_run(session, version_id=version.id)
    if gate is None:
        raise Conflict(
            f"version {version.id} has no passed gate run to bind the approval to",
            details={"version_id": version.id, "current_state": version.state},
            refusal=Refusal.of(principal, f"version.{action}", "version", version.id),
        )
    return gate


def _check_waivers(
    version_id: int, gate: GateRun, acknowledged: Sequence[str], refusal: Refusal
) -> list[str] | None:
    """The waivers of the bound gate run, each acknowledged by name (None: the run waived nothing).

    An approval of a "passed with waivers" run must name every waiver; a name the run
    did not waive is refused too (a typo must not pass for an acknowledgement).
    """
    waived = [w.name for w in gates.waivers_of_run(gate)]
    given = list(dict.fromkeys(a.strip() for a in acknowledged if a.strip()))
    unknown = [a for a in given if a not in waived]
    if unknown:
        raise Conflict(
            f"gate run {gate.id} of version {version_id} waived no bound named {', '.join(map(repr, unknown))}"
            + (f" (its waivers: {', '.join(waived)})" if waived else " (it waived none)"),
            details={"version_id": version_id, "gate_run_id": gate.id, "unknown": unknown, "waivers": waived},
            refusal=refusal)
    missing = [w for w in waived if w not in given]
    if missing:
        flags = " ".join(f"--acknowledge {w!r}" if " " in w else f"--acknowledge {w}" for w in missing)
        raise Conflict(
            f"version {version_id} passed its gate with waivers (gate run {gate.id}): the bare base model breaks "
            f"these bounds too, so they were not enforced; acknowledge each by name to approve: "
            f"{', '.join(missing)} (`govern review approve {version_id} --comment TEXT {flags}`)",
            details={"version_id": version_id, "gate_run_id": gate.id, "missing": missing, "waivers": waived},
            refusal=refusal)
    return waived or None


def _review(
    session: Session, *, version_id: int, principal: Principal, comment: str, decision: str,
    acknowledged_waivers: Sequence[str] = (), shadow: ShadowEvidence | None = None,
) -> Review:
    action = "approve" if decision == "approve" else "reject"
    comment = (comment or "").strip()
    if not comment:
        raise InvalidInput("a review needs a comment that says why")
    version = lifecycle.lock_version(session, version_id)
    refusal = Refusal.of(principal, f"version.{action}", "version", version_id)
    reapproval = decision == "approve" and version.state in REAPPROVABLE
    if reapproval:
        to = version.state
    else:
        to = (VersionState.approved if decision == "approve" else VersionState.rejected).value
    lifecycle.check_move(version, to=to, action=action, principal=principal)
    gate = _gate_to_bind(session, version, principal, action) if decision == "approve" else (
        gates.latest_passed_gate_run(session, version_id=version_id))
    digest = gate_digest_of_run(session, run=gate) if gate is not None else None
    if reapproval and gate is not None and (digest is None or approval_of_run(session, version_id=version_id,
                                                                               run=gate)):
        raise Conflict(
            f"version {version_id} is {version.state} and already approved under its newest passed gate run "
            f"(gate run {gate.id}); a new approval needs a new gate run under a deployment's gate policy "
            f"(`govern gate run {version_id} --deployment NAME`)",
            details={"version_id": version_id, "current_state": version.state, "gate_run_id": gate.id},
            refusal=refusal)
    if principal.user_id is None or principal.user_id == version.submitted_by:
        raise Forbidden(
            f"four eyes: {principal.actor} submitted version {version_id} and may not review it",
            details={"version_id": version_id, "current_state": version.state},
            refusal=refusal,
        )
    artifact_sha = hashlib.sha256(version.artifact).hexdigest()
    if artifact_sha != version.sha256:
        raise Conflict(
            f"version {version_id}'s stored artifact no longer matches its sha256; refusing to review it",
            refusal=refusal,
        )
    acknowledged = (_check_waivers(version_id, gate, acknowledged_waivers, refusal)
                    if decision == "approve" and gate is not None else None)
    if decision == "approve" and shadow is not None and shadow.required and shadow.decision != "pass":
        found = ("its latest shadow rollout failed" if shadow.decision == "fail"
                 else "it has no shadow rollout that concluded")
        raise Conflict(
            f"deployment {shadow.deployment!r} requires a passed shadow rollout before approval "
            f"(rollout.require_shadow) and {found}; run one: "
            f"`govern rollout start {version_id} --deployment {shadow.deployment} --mode shadow`",
            details={"version_id": version_id, "reason": "shadow_required", "rollout_id": shadow.rollout_id},
            refusal=refusal)
    shadow_digest = shadow.verdict_digest if decision == "approve" and shadow is not None else None
    review = Review(
        version_id=version_id,
        reviewer_id=principal.user_id,
        decision=decision,
        comment=comment,
        artifact_sha256=artifact_sha,
        evidence_digest=gate.evidence_digest if gate else None,
        policy_sha256=gate.policy_sha256 if gate else None,
        gate_digest=digest,
        gate_run_id=gate.id if gate else None,
        acknowledged_waivers=acknowledged,
        shadow_evidence_digest=shadow_digest,
    )
    session.add(review)
    session.flush()
    lifecycle.transition(
        session,
        version_id=version_id,
        to=to,
        principal=principal,
        action=action,
        payload={
            "comment": comment,
            "review_id": review.id,
            "artifact_sha256": review.artifact_sha256,
            "evidence_digest": review.evidence_digest,
            "policy_sha256": review.policy_sha256,
            "gate_digest": review.gate_digest,
            "gate_run_id": review.gate_run_id,
            **({"reapproval": True} if reapproval else {}),
            **({"acknowledged_waivers": acknowledged} if acknowledged else {}),
            **({"shadow_evidence": {"verdict_digest": shadow_digest, "decision": shadow.decision,
                                    "rollout_id": shadow.rollout_id}}
               if shadow is not None and shadow_digest else {}),
        },
    )
    return review


@dataclass(frozen=True)
class ShadowEvidence:
    """What the edge found about a version's shadow rollouts (`governance.deployments.rollouts.approval_shadow`):
    whether the deployment's policy requires a passed one (``rollout.require_shadow``) and
    the concluding verdict of the latest, whose digest the approval records."""

    required: bool = False
    deployment: str | None = None
    verdict_digest: str | None = None
    decision: str | None = None  # "pass" | "fail" | None (no concluded shadow rollout)
    rollout_id: int | None = None


def approve(
    session: Session, *, version_id: int, principal: Principal, comment: str,
    acknowledged_waivers: Sequence[str] = (), shadow: ShadowEvidence | None = None,
) -> Review:
    """Four-eyes approval bound to the version's newest passed gate run (its evidence and gate digest).

    A gate-passed or rolled-back version becomes approved; an approved, active or
    superseded one re-gated under a new gate policy keeps its state and gains an approval
    under that gate digest (the audit entry says ``reapproval``). When that gate run
    passed with waivers, ``acknowledged_waivers`` must name each of them (409 otherwise);
    they are recorded with the review and in the audit entry.
    """
    return _review(session, version_id=version_id, principal=principal, comment=comment, decision="approve",
                   acknowledged_waivers=acknowledged_waivers, shadow=shadow)


def reject(session: Session, *, version_id: int, principal: Principal, comment: str) -> Review:
    return _review(session, version_id=version_id, principal=principal, comment=comment, decision="reject")


def awaiting_reapproval(session: Session, *, version: TokenVersion) -> GateRun | None:
    """An approved, active or superseded version's newest passed gate run that holds no
    approval under its gate digest (a passed re-gate waiting for an officer), else None."""
    if version.state not in REAPPROVABLE:
        return None
    gate = gates.latest_passed_gate_run(session, version_id=version.id)
    if gate is None:
        return None
    if gate_digest_of_run(session, run=gate) is None or approval_of_run(session, version_id=version.id, run=gate):
        return None
    return gate


# ---------------------------------------------------------------- re-gating


# a version in these states may be gated again under a deployment's gate policy
# (gate_failed and rejected are terminal: a new artifact is submitted instead)
REGATABLE = (VersionState.gate_passed.value, VersionState.approved.value, VersionState.active.value,
             VersionState.superseded.value, VersionState.rolled_back.value)


@dataclass(frozen=True)
class RegateTarget:
    """The deployment a re-gate is for and the gate policy it runs now (the deployments room finds it)."""

    name: str
    deployment_id: int
    base_model_id: int
    policy_sha256: str
    gate_digest: str


def request_regate(
    session: Session, *, version_id: int, target: RegateTarget, principal: Principal, queue: bool = False
) -> GateRun:
    """A queued gate run of an existing version under the deployment's current gate policy.

    The old runs and their evidence stay; the version's state does not change. ``queue``:
    a gate worker runs it after the commit (the HTTP route); else the caller runs it
    (`govern gate run VERSION --deployment NAME`, in its own process).
    """
    require_allowed(principal, "version.regate", "deployment", target.name)
    version = lifecycle.lock_version(session, version_id)
    refusal = Refusal.of(principal, "version.regate", "version", version_id)
    if version.state not in REGATABLE:
        why = {"submitted": "its first gate has not finished; wait for it",
               "evaluating": "its first gate has not finished; wait for it",
               "gate_failed": "it failed its gate, which is final; train and submit a new artifact",
               }.get(version.state, "a review rejected it, which is final; train and submit a new artifact")
        raise Conflict(f"version {version_id} is {version.state}: {why}",
                       details={"version_id": version_id, "current_state": version.state}, refusal=refusal)
    if version.base_model_id != target.base_model_id:
        raise Conflict(f"version {version_id} was trained for another base model than {target.name!r} serves",
                       refusal=refusal)
    if version.deployment_id is not None and version.deployment_id != target.deployment_id:
        raise Conflict(f"version {version_id} belongs to another deployment, not {target.name!r}", refusal=refusal)
    runs = gates.gate_runs(session, version_id=version_id)
    busy = next((r for r in runs if r.status in ("queued", "running")), None)
    if busy is not None:
        raise Conflict(f"version {version_id} has gate run {busy.id} {busy.status}; wait for it to finish",
                       details={"version_id": version_id, "gate_run_id": busy.id}, refusal=refusal)
    done = next((r for r in runs if r.status == "passed" and gate_digest_of_run(session, run=r) == target.gate_digest),
                None)
    approved = approval_of_run(session, version_id=version_id, run=done) if done is not None else None
    # a run whose evidence no longer matches its approval (altered since) may be gated again
    if done is not None and (approved is None or approved.evidence_digest == done.evidence_digest):
        hint = ("and is approved under it" if approved
                else f"; have it reviewed: `govern review approve {version_id} --comment TEXT`")
        raise Conflict(f"version {version_id} already passed the gate under {target.name!r}'s gate policy "
                       f"(gate run {done.id}) {hint}",
                       details={"version_id": version_id, "gate_run_id": done.id}, refusal=refusal)
    run = gates.open_regate_run(session, version_id=version_id, policy_sha256=target.policy_sha256,
                                gate_digest=target.gate_digest, deployment_id=target.deployment_id,
                                requested_by=principal.actor)
    audit.record(session, principal, action="version.regate", subject_type="version", subject_id=version_id,
                 payload={"gate_run_id": run.id, "deployment": target.name, "policy_sha256": target.policy_sha256,
                          "gate_digest": target.gate_digest, "state": version.state})
    if queue:
        outbox.enqueue_regate(session, gate_run_id=run.id, version_id=version_id)
    return run


def finish_regate(
    session: Session, *, version_id: int, gate_run_id: int, passed: bool, evidence_digest: str | None,
    principal: Principal, waivers: Sequence[str] = (),
) -> TokenVersion:
    """Record a re-gate's verdict (one audit entry, with the waivers of a pass); the version's state does not change."""
    require_allowed(principal, "version.regate_result", "version", version_id)
    version = lifecycle.lock_version(session, version_id)
    run = gates.get_gate_run(session, gate_run_id=gate_run_id)
    if run is None or run.version_id != version_id or run.kind != "regate":
        raise NotFound(f"no re-gate run {gate_run_id} of version {version_id}")
    audit.record(session, principal, action="version.regate_result", subject_type="version", subject_id=version_id,
                 payload={"gate_run_id": gate_run_id, "verdict": "passed" if passed else "failed",
                          **({"outcome": "passed with waivers" if waivers else "passed", "waivers": list(waivers)}
                             if passed else {}),
                          "evidence_digest": evidence_digest, "policy_sha256": run.policy_sha256,
                          "gate_digest": run.gate_digest, "deployment_id": run.deployment_id,
                          "state": version.state})
    return version


def versions_needing_regate(session: Session, *, deployment_id: int, gate_digest: str) -> list[int]:
    """The deployment's approved, active, superseded or rolled-back versions with no approval under ``gate_digest``."""
    ids = list(session.scalars(select(TokenVersion.id).where(
        TokenVersion.deployment_id == deployment_id,
        TokenVersion.state.in_([*REAPPROVABLE, VersionState.rolled_back.value])).order_by(TokenVersion.id)))
    held = approved_gate_digests(session, version_ids=ids)
    return [vid for vid in ids if gate_digest not in held[vid]]


def count_versions(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(TokenVersion)) or 0)


def get_base_model_by_id(session: Session, *, base_model_id: int) -> BaseModel_ | None:
    return session.get(BaseModel_, base_model_id)


def version_ids_by_sha(session: Session, *, shas: set[str]) -> dict[str, int]:
    """sha256 -> version id of the stored versions among ``shas``, in one query."""
    stmt = select(TokenVersion.id, TokenVersion.sha256).where(TokenVersion.sha256.in_(shas))
    return {sha: vid for vid, sha in session.execute(stmt).tuples()}


def version_deployments(session: Session, *, version_ids: set[int]) -> dict[int, int | None]:
    """version id -> the deployment it was submitted for (None: none), for the stored ones among ``version_ids``."""
    stmt = select(TokenVersion.id, TokenVersion.deployment_id).where(TokenVersion.id.in_(version_ids))
    return {vid: dep_id for vid, dep_id in session.execute(stmt).tuples()}
