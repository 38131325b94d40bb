"""The facts of an evidence dossier, collected through each room's service functions.

A dossier answers "what did you release, how was it tested, who approved it, what
happened in production" for one version (`version_facts`) or one deployment over a
period (`deployment_facts`). Everything here is read-only. A fact that comes from the
audit log is a `Fact`: it names the entry (``seq``) and the field inside the entry's JSON
(``path``) it was read from, so `governance.dossier.verify` can check it against the
signed chain embedded in the document; everything else (the gate's metrics, the drift
checks' numbers) is shown as context with the digest that binds it (the gate's evidence
digest is itself a cited fact).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from governance.alerts import service as alerts
from governance.audit import service as audit
from governance.audit.canonical import body_of_row, format_ts
from governance.db import utcnow
from governance.deployments import service as deployments
from governance.errors import InvalidInput, NotFound
from governance.gates import service as gates
from governance.gates.report import GateReport, format_number
from governance.monitoring import service as monitoring
from governance.outputs import service as outputs
from governance.registry import service as registry

Progress = Callable[[str], None]
AUDIT_PAGE = 1000


def display(value: Any) -> str:
    """How a cited value is written in the document (the verifier applies the same rule)."""
    if isinstance(value, str):
        return value
    return format_number(value)


@dataclass(frozen=True)
class Fact:
    """One claim of the dossier read from one audit entry: ``entry[path[0]][path[1]]... == value``."""

    id: str
    label: str
    seq: int
    path: tuple[str, ...]
    value: Any

    @property
    def text(self) -> str:
        return display(self.value)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "seq": self.seq, "path": list(self.path), "value": self.value,
                "text": self.text}


@dataclass
class Citations:
    """The audit entries a dossier cites and the facts read from them, in the order they appear."""

    entries: dict[int, dict[str, Any]] = field(default_factory=dict)
    facts: list[Fact] = field(default_factory=list)

    def add(self, row: Any) -> dict[str, Any]:
        """An audit row as its hashed JSON body (the exact text the chain covers, parsed)."""
        body = json.loads(body_of_row(row))
        self.entries[body["seq"]] = body
        return body

    def fact(self, label: str, entry: dict[str, Any], *path: str) -> Fact:
        value: Any = entry
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        f = Fact(id=f"F{len(self.facts) + 1}", label=label, seq=entry["seq"], path=tuple(path), value=value)
        self.facts.append(f)
        return f

    @property
    def seq_range(self) -> tuple[int, int] | None:
        return (min(self.entries), max(self.entries)) if self.entries else None


def _entries(session: Session, *, subject_type: str, subject_id: str, since: datetime | None = None,
             until: datetime | None = None) -> list[Any]:
    """Every audit entry about a subject, oldest first (paged through `audit.list_entries`)."""
    rows: list[Any] = []
    before: int | None = None
    while True:
        page = audit.list_entries(session, subject_type=subject_type, subject_id=subject_id, since=since,
                                  until=until, before_seq=before, limit=AUDIT_PAGE)
        rows.extend(page)
        if len(page) < AUDIT_PAGE:
            return rows[::-1]
        before = page[-1].seq


@dataclass
class Review:
    decision: str
    reviewer: Fact
    at: Fact
    comment: Fact
    artifact_sha256: Fact
    evidence_digest: Fact
    policy_sha256: Fact


@dataclass
class Change:
    """A promotion, rollback, automatic rollback, freeze or unfreeze, as its audit entry says."""

    kind: str
    deployment: str
    at: Fact
    actor: Fact
    generation: Fact | None = None
    version_id: Fact | None = None
    previous_version_id: Fact | None = None
    reason: Fact | None = None
    evidence: dict[str, Any] | None = None  # an automatic rollback's detector, windows and guards


@dataclass
class VersionDossier:
    version_id: int
    adapter: str
    state: str
    identity: dict[str, Any]  # label -> Fact or plain value
    lineage: list[tuple[int, str, str]]  # (id, sha256, state), parent first
    gate: GateReport | None
    gate_facts: dict[str, Fact]
    failing: list[dict[str, Any]]
    not_enforced: list[str]
    reviews: list[Review]
    changes: list[Change]
    citations: Citations
    generated_at: datetime
    policy_text: str | None = None  # the policy file the gate applied, when the deployment still holds it

    kind: str = "version"

    @property
    def subject(self) -> str:
        return f"version {self.version_id}"


def _change(c: Citations, entry: dict[str, Any], deployment: str) -> Change:
    kind = entry["action"].split(".", 1)[1]
    ch = Change(kind=kind, deployment=deployment, at=c.fact(f"{kind} time", entry, "ts"),
                actor=c.fact(f"{kind} by", entry, "actor"))
    p = entry["payload"]
    if "generation" in p:
        ch.generation = c.fact(f"{kind} generation", entry, "payload", "generation")
        ch.version_id = c.fact(f"{kind} to version", entry, "payload", "version_id")
        ch.previous_version_id = c.fact(f"{kind} from version", entry, "payload", "previous_version_id")
    if p.get("reason") is not None:
        ch.reason = c.fact(f"{kind} reason", entry, "payload", "reason")
    if isinstance(p.get("evidence"), dict):
        ch.evidence = p["evidence"]
    return ch


def _not_enforced(report: GateReport) -> list[str]:
    """Every bound of the gate that did not decide the verdict, said plainly: the waived
    (grandfathered) bounds first, one line each, then the metrics reported without a bound."""
    out: list[str] = []
    if report.waivers:
        out.extend(f"{w.suite} / {w.metric}: WAIVED (grandfathered) — bound {w.comparator} {format_number(w.bound)}; "
                   f"candidate {format_number(w.candidate_value)}, bare base model {format_number(w.base_value)}: "
                   f"the base breaks the bound too, so it was not enforced ({w.reason}). The officer had to "
                   f"acknowledge it by name ('{w.name}') to approve." for w in report.waivers)
    else:  # reports stored before waivers were listed: read the metrics' own words
        for s in report.suites:
            for m in s.metrics:
                if "grandfather" in m.detail:
                    out.append(f"{s.suite} / {m.name}: GRANDFATHERED — the candidate breaks the bound "
                               f"{format_number(m.threshold)} (value {format_number(m.value)}) but the bare base "
                               f"model breaks it too, so it was not enforced ({m.detail}).")
            out.extend(f"{s.suite}: {n}" for n in s.notes if "grandfather" in n or "judged against the base" in n)
    for s in report.suites:
        unbounded = [f"{m.name} ({m.detail})" if m.detail else m.name for m in s.metrics
                     if not m.decisive and m.threshold is None and "detectable" not in m.name]
        if unbounded:
            out.append(f"{s.suite}: reported only, no bound applied: {'; '.join(unbounded)}.")
    return out


def _failing(report: GateReport, limit: int = 25) -> list[dict[str, Any]]:
    rows = []
    for s in report.suites:
        for case in s.failing_cases():
            rows.append({"suite": s.suite, "case_id": case.case_id, "category": case.category,
                         "prompt": case.prompt, "candidate": case.candidate_output,
                         "baselines": case.baseline_outputs})
    return rows[:limit]


def version_facts(session: Session, *, version_id: int, progress: Progress | None = None) -> VersionDossier:
    """Identity, gate, reviews and every change of the active version involving it."""
    step = progress or (lambda _: None)
    version = registry.get_version_or_raise(session, version_id=version_id)
    c = Citations()
    step("version and its audit entries")
    rows = _entries(session, subject_type="version", subject_id=str(version_id))
    by_action: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        body = c.add(r)
        by_action.setdefault(body["action"], []).append(body)
    submits = by_action.get("version.submit") or []
    if not submits:
        raise NotFound(f"version {version_id} has no version.submit audit entry; its dossier cannot cite one")
    submit = submits[0]
    base = registry.get_base_model_by_id(session, base_model_id=version.base_model_id)
    manifest = version.manifest or {}
    identity: dict[str, Any] = {
        "adapter": c.fact("adapter", submit, "payload", "adapter"),
        "artifact sha256": c.fact("artifact sha256", submit, "payload", "sha256"),
        "size (bytes)": c.fact("size (bytes)", submit, "payload", "size_bytes"),
        "parameter count": version.param_count,
        "Aligner tokens": version.n_tokens,
        "base model": c.fact("base model", submit, "payload", "base_model"),
        "base model weights digest": base.weights_digest if base else "—",
        "tokenizer digest": base.tokenizer_digest if base else "—",
        "training method": manifest.get("training_method", "—"),
        "training data digest": version.data_digest or manifest.get("data_digest") or "—",
        "submitted by": c.fact("submitted by", submit, "actor"),
        "submitted at": c.fact("submitted at", submit, "ts"),
    }
    lineage: list[tuple[int, str, str]] = []
    parent_id = version.parent_id
    while parent_id is not None and len(lineage) < 50:
        parent = registry.get_version(session, version_id=parent_id)
        if parent is None:
            break
        lineage.append((parent.id, parent.sha256, parent.state))
        parent_id = parent.parent_id
    step("gate report")
    report = gates.latest_report(session, version_id=version_id)
    gate_facts: dict[str, Fact] = {}
    verdicts = sorted(by_action.get("version.gate_pass", []) + by_action.get("version.gate_fail", []),
                      key=lambda e: e["seq"])
    verdict_entry = verdicts[-1] if verdicts else None
    if verdict_entry is not None:
        gate_facts = {
            "state after the gate": c.fact("gate verdict (state after the gate)", verdict_entry, "payload", "to"),
            "evidence digest": c.fact("gate evidence digest", verdict_entry, "payload", "evidence_digest"),
            "policy sha256": c.fact("gate policy sha256", verdict_entry, "payload", "policy_sha256"),
            "recorded at": c.fact("gate verdict time", verdict_entry, "ts"),
        }
    reviews = []
    for e in by_action.get("version.approve", []) + by_action.get("version.reject", []):
        reviews.append(Review(
            decision=e["action"].split(".")[1], reviewer=c.fact("reviewer", e, "actor"),
            at=c.fact("review time", e, "ts"), comment=c.fact("review comment", e, "payload", "comment"),
            artifact_sha256=c.fact("review bound to artifact", e, "payload", "artifact_sha256"),
            evidence_digest=c.fact("review bound to evidence", e, "payload", "evidence_digest"),
            policy_sha256=c.fact("review bound to policy", e, "payload", "policy_sha256")))
    reviews.sort(key=lambda r: r.at.seq)
    step("promotions and rollbacks")
    changes: list[Change] = []
    dep = deployments.get_deployment_by_id(session, deployment_id=version.deployment_id) \
        if version.deployment_id is not None else None
    if dep is not None:
        for r in _entries(session, subject_type="deployment", subject_id=dep.name):
            if not r.action.startswith("deployment."):
                continue
            p = json.loads(r.payload)
            if version_id in (p.get("version_id"), p.get("previous_version_id")):
                changes.append(_change(c, c.add(r), dep.name))
    policy_text = None
    if dep is not None and report is not None:
        policy = deployments.policy_of(session, deployment=dep)
        policy_text = policy.content if policy.sha256 == report.policy_sha256 else None
    return VersionDossier(
        policy_text=policy_text, version_id=version_id, adapter=str(submit["payload"].get("adapter")),
        state=version.state,
        identity=identity, lineage=lineage, gate=report, gate_facts=gate_facts,
        failing=_failing(report) if report else [], not_enforced=_not_enforced(report) if report else [],
        reviews=reviews, changes=changes, citations=c, generated_at=utcnow())


@dataclass
class Series:
    """One detector over the period: (check id, window end, statistic, threshold, verdict) per check."""

    detector: str
    kind: str
    points: list[tuple[int, datetime, float | None, float | None, str]] = field(default_factory=list)


@dataclass
class DeploymentDossier:
    deployment: str
    since: datetime
    until: datetime
    policy_sha256: str
    rollback_guards: dict[str, Any]
    active_periods: list[dict[str, Any]]  # version id, from, to (None: still active at the end)
    changes: list[Change]
    series: list[Series]
    drifted: list[dict[str, Any]]  # the checks that fired, with their evidence
    alerts: list[dict[str, Any]]
    n_outputs: int
    n_sampled: int
    n_checks: int
    citations: Citations
    generated_at: datetime

    kind: str = "deployment"

    @property
    def subject(self) -> str:
        return f"deployment {self.deployment}"


def _aware(name: str, value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidInput(f"{name} must carry a time zone (e.g. 2026-01-31T00:00:00Z)")
    return value


def deployment_facts(session: Session, *, name: str, since: datetime | None = None, until: datetime | None = None,
                     progress: Progress | None = None) -> DeploymentDossier:
    """What happened on a deployment in [since, until): versions, detectors, alerts, rollbacks."""
    step = progress or (lambda _: None)
    dep = deployments.get_deployment_or_raise(session, name=name)
    since = _aware("since", since) or dep.created_at
    until = _aware("until", until) or utcnow()
    if until <= since:
        raise InvalidInput(f"--until ({format_ts(until)}) must be later than --since ({format_ts(since)})")
    c = Citations()
    step("audit entries of the deployment")
    changes = [
        _change(c, c.add(r), name)
        for r in _entries(session, subject_type="deployment", subject_id=name, since=since, until=until)
        if r.action in ("deployment.promote", "deployment.rollback", "deployment.auto_rollback",
                        "deployment.freeze", "deployment.unfreeze")
    ]
    step("drift checks")
    checks = monitoring.checks_between(session, deployment_id=dep.id, since=since, until=until)
    series: dict[str, Series] = {}
    drifted = []
    for chk in checks:
        for det, res in (chk.detectors or {}).items():
            if det.startswith("_") or not isinstance(res, dict):
                continue
            s = series.setdefault(det, Series(det, str(res.get("kind", ""))))
            s.points.append((chk.id, chk.window_end, res.get("statistic"), res.get("threshold"),
                             str(res.get("verdict", ""))))
        if chk.verdict == "drift":
            fired = {d: r for d, r in (chk.detectors or {}).items()
                     if isinstance(r, dict) and r.get("verdict") == "drift"}
            drifted.append({"id": chk.id, "window": chk.window_key, "n": chk.sample_size, "version_id": chk.version_id,
                            "detectors": {d: {"statistic": r.get("statistic"), "threshold": r.get("threshold"),
                                              "p_values": r.get("p_values") or {}, "evidence": r.get("evidence") or {}}
                                          for d, r in fired.items()}})
    step("alerts and outputs")
    alert_rows = []
    for a in alerts.list_alerts(session, deployment=name, limit=500):
        if not since <= a.created_at < until:
            continue
        row: dict[str, Any] = {"id": a.id, "kind": a.kind, "severity": a.severity, "status": a.status,
                               "occurrences": a.occurrences, "message": a.message, "raised": None, "ack": None,
                               "ack_comment": None}
        for r in _entries(session, subject_type="alert", subject_id=str(a.id)):
            body = c.add(r)
            if body["action"] == "alert.raise":
                row["raised"] = c.fact(f"alert {a.id} raised", body, "ts")
            elif body["action"] == "alert.ack":
                row["ack"] = c.fact(f"alert {a.id} acknowledged by", body, "actor")
                row["ack_comment"] = c.fact(f"alert {a.id} acknowledgement", body, "payload", "comment")
        alert_rows.append(row)
    alert_rows.sort(key=lambda r: r["id"])
    n_outputs = outputs.count_outputs(session, deployment_id=dep.id, since=since, until=until)
    if not changes and not checks and not alert_rows and not n_outputs:
        raise InvalidInput(f"deployment {name!r} has no promotions, drift checks, alerts or outputs between "
                           f"{format_ts(since)} and {format_ts(until)}; choose another period")
    policy = deployments.deployment_policy(session, deployment=dep)
    rb = policy.monitoring.rollback
    guards = {"consecutive_windows": rb.consecutive_windows, "cooldown_seconds": rb.cooldown_seconds,
              "max_per_day": rb.max_per_day, "fallback_to_base": rb.fallback_to_base,
              "detectors that may roll back": sorted(n for n, d in policy.monitoring.detectors.items() if d.rollback)}
    return DeploymentDossier(
        deployment=name, since=since, until=until,
        policy_sha256=deployments.policy_of(session, deployment=dep).sha256, rollback_guards=guards,
        active_periods=_active_periods(session, dep_name=name, since=since, until=until),
        changes=changes, series=list(series.values()), drifted=drifted, alerts=alert_rows, n_outputs=n_outputs,
        n_sampled=sum(chk.sample_size or 0 for chk in checks), n_checks=len(checks), citations=c,
        generated_at=utcnow())


def _active_periods(session: Session, *, dep_name: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Which version was active when, within the period (from the promotions table, oldest first)."""
    promos = sorted(deployments.promotions(session, name=dep_name, limit=10_000), key=lambda p: p.generation)
    periods: list[dict[str, Any]] = []
    for i, p in enumerate(promos):
        end = promos[i + 1].created_at if i + 1 < len(promos) else None
        if (end is not None and end <= since) or p.created_at >= until:
            continue
        periods.append({"version_id": p.version_id, "kind": p.kind, "generation": p.generation,
                        "from": max(p.created_at, since), "to": end if end is None or end < until else None})
    return periods
