"""Build a version or deployment dossier: collect the facts, seal the cited audit entries, render.

Keyword-only verbs taking the session; they never commit. Sealing is a governed action:
it exports the contiguous range of audit entries the dossier cites through
`governance.audit.export.prepare_export` (a signed checkpoint at the range's end, an
``audit.export`` entry whose ``purpose`` names the dossier, a signed manifest), so the
caller's unit of work must commit for the document's checkpoint to be on record. The
document carries that export byte for byte, the facts read from its entries and (for a
version) the gate's evidence bundle, whose sha256 is the cited evidence digest.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session

from governance.audit.canonical import canonical_json
from governance.audit.export import iter_export_lines, prepare_export
from governance.db import utcnow
from governance.dossier import render
from governance.dossier.facts import (
    Citations,
    DeploymentDossier,
    Progress,
    VersionDossier,
    deployment_facts,
    version_facts,
)
from governance.errors import InvalidInput
from governance.gates.report import GateReport

FORMATS = ("pdf", "html")
BUNDLE_FORMAT = "govern-dossier-evidence"
BUNDLE_VERSION = 1
MEDIA_TYPES = {"pdf": "application/pdf", "html": "text/html; charset=utf-8"}


@dataclass(frozen=True)
class Document:
    content: bytes
    fmt: str
    filename: str
    facts: int
    entries: int
    export_entry_seq: int

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.fmt]


def check_format(fmt: str) -> str:
    fmt = (fmt or "").lower().lstrip(".")
    if fmt not in FORMATS:
        raise InvalidInput(f"unsupported dossier format {fmt!r}; choose pdf or html")
    return fmt


def format_of_path(path: Path) -> str:
    """The format a file name asks for (``.pdf`` or ``.html``); anything else is refused."""
    suffix = path.suffix.lower()
    if suffix not in (".pdf", ".html", ".htm"):
        raise InvalidInput(f"{path.name}: a dossier is written as .pdf or .html, not {suffix or 'no extension'!r}")
    return "html" if suffix in (".html", ".htm") else "pdf"


def seal(session: Session, *, citations: Citations, subject: str, kind: str, key: Ed25519PrivateKey, actor: str,
         actor_key_id: str | None = None, gate_evidence: dict[str, Any] | None = None) -> dict[str, Any]:
    """The evidence bundle: a signed export of the cited entries' range, the facts, the gate evidence."""
    rng = citations.seq_range
    purpose = f"evidence dossier of {subject}"
    if rng is None:  # nothing cited: an empty, still signed, export
        now = utcnow()
        plan = prepare_export(session, key=key, actor=actor, actor_key_id=actor_key_id, since=now,
                              until=now + timedelta(microseconds=1), purpose=purpose)
    else:
        plan = prepare_export(session, key=key, actor=actor, actor_key_id=actor_key_id, seqs=rng, purpose=purpose)
    bundle: dict[str, Any] = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, "kind": kind, "subject": subject,
        "audit_export": "".join(iter_export_lines(session, plan)),
        "facts": [f.to_json() for f in citations.facts],
        "export_entry_seq": plan.export_entry_seq,
    }
    if gate_evidence is not None:
        bundle["gate_evidence"] = gate_evidence
    return bundle


def gate_evidence(report: GateReport) -> tuple[dict[str, Any], bool]:
    """The gate's evidence bundle in the order its digest was computed, and whether it re-hashes to it.

    The runner hashes the suites in its own order; the stored summary is JSONB, which keeps
    them by key, so the order is recovered by trying the few permutations.
    """
    evidence = report.evidence()
    suites = evidence.get("suites") or []
    for order in itertools.islice(itertools.permutations(suites), 720):
        candidate = {**evidence, "suites": list(order)}
        if hashlib.sha256(canonical_json(candidate).encode("utf-8")).hexdigest() == report.evidence_digest:
            return candidate, True
    return evidence, False


def _document(dossier: VersionDossier | DeploymentDossier, bundle: dict[str, Any], fmt: str, stem: str) -> Document:
    if fmt == "pdf":
        content = render.to_pdf(render.to_html(dossier, bundle, for_pdf=True), bundle)
    else:
        content = render.to_html(dossier, bundle).encode("utf-8")
    return Document(content=content, fmt=fmt, filename=f"{stem}.{fmt}", facts=len(bundle["facts"]),
                    entries=len(dossier.citations.entries), export_entry_seq=bundle["export_entry_seq"])


def version_dossier(session: Session, *, version_id: int, fmt: str, key: Ed25519PrivateKey, actor: str,
                    actor_key_id: str | None = None, progress: Progress | None = None) -> Document:
    fmt = check_format(fmt)
    dossier = version_facts(session, version_id=version_id, progress=progress)
    if progress:
        progress("sealing the cited audit entries")
    evidence, rehashes = gate_evidence(dossier.gate) if dossier.gate else (None, False)
    bundle = seal(session, citations=dossier.citations, subject=dossier.subject, kind="version", key=key, actor=actor,
                  actor_key_id=actor_key_id, gate_evidence=evidence)
    if evidence is not None and not rehashes:
        bundle["gate_evidence_rehashes"] = False
    if progress:
        progress(f"rendering {fmt}")
    return _document(dossier, bundle, fmt, f"dossier-version-{version_id}")


def deployment_dossier(session: Session, *, name: str, fmt: str, key: Ed25519PrivateKey, actor: str,
                       since: datetime | None = None, until: datetime | None = None,
                       actor_key_id: str | None = None, progress: Progress | None = None) -> Document:
    fmt = check_format(fmt)
    dossier = deployment_facts(session, name=name, since=since, until=until, progress=progress)
    if progress:
        progress("sealing the cited audit entries")
    bundle = seal(session, citations=dossier.citations, subject=dossier.subject, kind="deployment", key=key,
                  actor=actor, actor_key_id=actor_key_id)
    if progress:
        progress(f"rendering {fmt}")
    return _document(dossier, bundle, fmt, f"dossier-deployment-{name}")
