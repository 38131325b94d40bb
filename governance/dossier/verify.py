"""Verify an evidence dossier (.pdf or .html) offline: no database, no network.

The dossier carries its evidence bundle (``dossier-evidence.json``: attached to the PDF,
or in ``<script id="audit-evidence">`` of the HTML). Checks, in order:

1. the bundle's ``audit_export`` is an intact, signed audit export — checked by
   `governance.audit.verify.verify_export`, the same code as ``govern audit verify``;
2. every fact's ``value`` is the value at its ``path`` in entry ``seq`` of that export,
   and its ``text`` is how the dossier writes that value;
3. the document shows exactly that text: in HTML, every ``data-fact`` element; in a PDF,
   the page text contains it;
4. for a version dossier, the embedded gate evidence hashes to the cited evidence digest,
   and (HTML) every gate metric cell shows the evidence's number.

Each problem is named (fact id, label, entry, what the document says against what the
entry says). pypdf is imported inside `_read_pdf` (heavy, and only a PDF needs it).
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from governance.audit.canonical import canonical_json
from governance.audit.verify import ENTRY_LINE_PREFIX, VerifyResult, verify_export
from governance.dossier.facts import display
from governance.gates.report import format_number

EVIDENCE_NAME = "dossier-evidence.json"
EVIDENCE_ID = "audit-evidence"
DOSSIER_SUFFIXES = (".pdf", ".html", ".htm")
_SPACE = re.compile(r"\s+")


def is_dossier(path: Path) -> bool:
    return Path(path).suffix.lower() in DOSSIER_SUFFIXES


@dataclass
class DossierResult:
    ok: bool
    path: str
    audit: VerifyResult | None = None
    facts: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.ok and self.audit is not None:
            return (f"OK: dossier {self.path}: {self.facts} facts match their audit entries and the document; "
                    f"embedded {self.audit.summary()}")
        return "FAILED: " + "; ".join(self.problems)


class _HtmlEvidence(HTMLParser):
    """The evidence block, every ``data-fact`` element's text and every ``data-metric`` cell's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.evidence: str | None = None
        self.facts: dict[str, list[str]] = {}
        self.metrics: dict[str, str] = {}
        self._open: list[tuple[str, str, str, list[str]]] = []  # (tag, kind, key, text parts)
        self._in_script = False
        self._script: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script" and a.get("id") == EVIDENCE_ID:
            self._in_script, self._script = True, []
        elif a.get("data-fact"):
            self._open.append((tag, "fact", str(a["data-fact"]), []))
        elif a.get("data-metric"):
            self._open.append((tag, "metric", str(a["data-metric"]), []))

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self._script.append(data)
        for _, _, _, parts in self._open:
            parts.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._in_script and tag == "script":
            self._in_script = False
            self.evidence = "".join(self._script)
        elif self._open and self._open[-1][0] == tag:
            _, kind, key, parts = self._open.pop()
            if kind == "fact":
                self.facts.setdefault(key, []).append("".join(parts))
            else:
                self.metrics[key] = "".join(parts)


def _read_html(path: Path) -> tuple[dict[str, Any], _HtmlEvidence]:
    parser = _HtmlEvidence()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    if parser.evidence is None:
        raise ValueError(f"{path.name} holds no <script id=\"{EVIDENCE_ID}\"> evidence block: not a dossier")
    return json.loads(parser.evidence), parser


def _read_pdf(path: Path) -> tuple[dict[str, Any], str]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        attached = reader.attachments.get(EVIDENCE_NAME)
        text = "".join(page.extract_text() or "" for page in reader.pages)
    except (PdfReadError, ValueError, KeyError) as exc:
        raise ValueError(f"{path.name} is not a readable PDF: {exc}") from None
    if not attached:
        raise ValueError(f"{path.name} has no {EVIDENCE_NAME} attachment: not a dossier")
    return json.loads(attached[0].decode("utf-8")), text


def _entries(export_text: str) -> dict[int, dict[str, Any]]:
    out = {}
    for line in export_text.split("\n"):
        if line.startswith(ENTRY_LINE_PREFIX):
            entry = json.loads(line)["entry"]
            out[entry["seq"]] = entry
    return out


def _at(entry: dict[str, Any], path: list[str]) -> Any:
    value: Any = entry
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _check_facts(bundle: dict[str, Any], entries: dict[int, dict[str, Any]]) -> list[str]:
    problems = []
    for f in bundle.get("facts", []):
        name = f"{f.get('id')} ({f.get('label')})"
        entry = entries.get(f.get("seq"))
        if entry is None:
            problems.append(f"{name} cites audit entry #{f.get('seq')}, which the embedded export does not hold")
            continue
        actual = _at(entry, list(f.get("path", [])))
        if actual != f.get("value") or type(actual) is not type(f.get("value")):
            problems.append(f"{name}: the dossier's value {display(f.get('value'))!r} differs from audit entry "
                            f"#{f['seq']} ({'.'.join(f.get('path', []))} = {display(actual)!r})")
        elif f.get("text") != display(actual):
            problems.append(f"{name}: the dossier writes {f.get('text')!r} but audit entry #{f['seq']} says "
                            f"{display(actual)!r}")
    return problems


def _check_gate(bundle: dict[str, Any], metrics: dict[str, str] | None) -> list[str]:
    evidence = bundle.get("gate_evidence")
    if evidence is None:
        return []
    problems = []
    digest = hashlib.sha256(canonical_json(evidence).encode("utf-8")).hexdigest()
    cited = [f for f in bundle.get("facts", []) if f.get("path") == ["payload", "evidence_digest"]]
    if bundle.get("gate_evidence_rehashes") is False:
        cited = []  # the stored report no longer re-hashes (an older store): its numbers are checked, not its digest
    elif not cited:
        problems.append("the gate evidence is embedded but no audit entry's evidence digest is cited")
    for f in cited:
        if f.get("value") != digest:
            problems.append(f"the embedded gate evidence hashes to {digest}, not the digest {f.get('value')} "
                            f"of audit entry #{f.get('seq')} ({f.get('label')})")
    suites = {s.get("suite"): s for s in evidence.get("suites", []) if isinstance(s, dict)}
    for key, shown in (metrics or {}).items():
        suite_name, mi, name = key.rsplit("|", 2)
        try:
            metric = suites[suite_name]["metrics"][int(mi)]
            value = metric[name]
        except (KeyError, IndexError, ValueError, TypeError):
            problems.append(f"gate metric cell {key} has no counterpart in the gate evidence")
            continue
        if shown.strip() != format_number(value):
            problems.append(f"gate metric {suite_name} / {metric.get('name')} {name}: the document shows "
                            f"{shown.strip()!r} but the gate evidence says {format_number(value)!r}")
    return problems


def verify_dossier(path: Path, *, public_key: Ed25519PublicKey,
                   older_checkpoint: dict[str, Any] | None = None) -> DossierResult:
    """Verify a .pdf or .html dossier: its embedded audit export, its facts and its rendered text."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such file", str(path))
    result = DossierResult(ok=False, path=str(path))
    try:
        if path.suffix.lower() == ".pdf":
            bundle, pdf_text = _read_pdf(path)
            html = None
        else:
            bundle, html = _read_html(path)
            pdf_text = None
    except (ValueError, UnicodeDecodeError) as exc:
        result.problems.append(str(exc))
        return result
    export = bundle.get("audit_export")
    if not isinstance(export, str) or not isinstance(bundle.get("facts"), list):
        result.problems.append("the evidence bundle has no audit_export text or no facts list")
        return result
    with tempfile.TemporaryDirectory() as tmp:
        exported = Path(tmp) / "audit.jsonl"
        exported.write_text(export, encoding="utf-8", newline="\n")
        result.audit = verify_export(exported, public_key=public_key, older_checkpoint=older_checkpoint)
    if not result.audit.ok:
        result.problems.append(f"embedded audit entries: {result.audit.summary()}")
    entries = _entries(export)
    problems = _check_facts(bundle, entries)
    facts = {f["id"]: f for f in bundle["facts"] if isinstance(f, dict) and "id" in f}
    if html is not None:
        for fid, shown in html.facts.items():
            f = facts.get(fid)
            if f is None:
                problems.append(f"the document shows a fact {fid} that the evidence bundle does not list")
                continue
            for text in shown:
                if text != f.get("text"):
                    problems.append(f"{fid} ({f.get('label')}): the document shows {text!r} but audit entry "
                                    f"#{f.get('seq')} says {f.get('text')!r}")
        problems += [f"{fid} ({f.get('label')}) is listed but not shown in the document"
                     for fid, f in facts.items() if fid not in html.facts]
        problems += _check_gate(bundle, html.metrics)
    else:
        flat = _SPACE.sub("", pdf_text or "")
        for fid, f in facts.items():
            if _SPACE.sub("", str(f.get("text"))) not in flat:
                problems.append(f"{fid} ({f.get('label')}): the PDF's text does not show {f.get('text')!r} "
                                f"(audit entry #{f.get('seq')})")
        problems += _check_gate(bundle, None)
    result.problems += problems
    result.facts = len(facts)
    result.ok = not result.problems
    return result
