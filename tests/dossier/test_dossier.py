"""Evidence dossiers on a world built through the real services (issue 23).

The CLI writes both dossiers as PDF and HTML; pdftotext finds the digests, the verdict,
the reviewer and the rollback; `govern audit verify` accepts them and rejects a copy with
one changed number (in the HTML text, in the PDF's attachment) and a copy whose
attachment lost an entry; bad input is one line, exit 1, nothing written.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from governance.cli.main import app
from tests.dossier.conftest import REVIEW_COMMENT, DossierWorld

runner = CliRunner()


def _govern(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


def _pdf_text(path: Path) -> str:
    return subprocess.run(["pdftotext", "-raw", str(path), "-"], capture_output=True, text=True, check=True).stdout


def _verify(world: DossierWorld, path: Path):  # type: ignore[no-untyped-def]
    return _govern("audit", "verify", str(path), "--public-key", str(world.key_path.with_suffix(".pub")))


def _rewrite_pdf_evidence(src: Path, dst: Path, change) -> None:  # type: ignore[no-untyped-def]
    """A copy of the PDF whose attached evidence bundle went through ``change``."""
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import NameObject

    reader = PdfReader(str(src))
    bundle = json.loads(reader.attachments["dossier-evidence.json"][0])
    change(bundle)
    writer = PdfWriter(clone_from=reader)
    del writer._root_object[NameObject("/Names")]  # drop the original attachment
    writer.add_attachment("dossier-evidence.json", json.dumps(bundle).encode())
    with dst.open("wb") as f:
        writer.write(f)


def test_version_dossier_renders_verifies_and_catches_tampering(dossier_world: DossierWorld, tmp_path: Path) -> None:
    w = dossier_world
    pdf, html = tmp_path / "v.pdf", tmp_path / "v.html"
    for out in (pdf, html):
        res = _govern("dossier", "version", str(w.v2), "--out", str(out))
        assert res.exit_code == 0, res.output
        assert f"wrote {out}" in " ".join(res.output.split())
    pages = subprocess.run(["pdftoppm", "-r", "30", "-png", str(pdf), str(tmp_path / "page")], check=True)
    assert pages.returncode == 0 and len(list(tmp_path.glob("page-*.png"))) >= 2
    text = re.sub(r"\s+", "", _pdf_text(pdf))
    for needle in (w.v2_sha, w.evidence_digest, w.reviewer, "PASSED", "auto_rollback", "system:monitor",
                   "notalegalopinion", REVIEW_COMMENT.replace(" ", "")):
        assert needle.replace(" ", "") in text, needle
    for path in (pdf, html):
        ok = _verify(w, path)
        assert ok.exit_code == 0, ok.output
        assert "facts match their audit entries" in " ".join(ok.output.split())

    # one changed number in the HTML's text: the artifact size
    page = html.read_text(encoding="utf-8")
    m = re.search(r'(<span class="fact" data-fact="(F\d+)">)(\d+)(</span>)', page)
    assert m is not None
    bad_html = tmp_path / "bad.html"
    bad_html.write_text(page.replace(m.group(0), f"{m.group(1)}{int(m.group(3)) + 1}{m.group(4)}", 1),
                        encoding="utf-8")
    res = _verify(w, bad_html)
    assert res.exit_code == 1
    assert f"{m.group(2)} (size (bytes)): the document shows '{int(m.group(3)) + 1}'" in " ".join(res.output.split())

    # the same checks with the documented scripts only (docs/audit-export-format.md)
    _documented_scripts_agree(w, tmp_path, html, bad_html)

    # one changed gate number in the HTML
    cell = re.search(r'(<td data-metric="reasoning\|\d+\|n">)([^<]+)(</td>)', page)
    assert cell is not None
    bad_metric = tmp_path / "bad-metric.html"
    bad_metric.write_text(page.replace(cell.group(0), f"{cell.group(1)}12345{cell.group(3)}", 1), encoding="utf-8")
    res = _verify(w, bad_metric)
    assert res.exit_code == 1 and "the document shows '12345'" in " ".join(res.output.split())

    # one changed number in the PDF's attachment (a fact's value)
    def bump(bundle: dict) -> None:  # type: ignore[type-arg]
        fact = next(f for f in bundle["facts"] if f["label"] == "size (bytes)")
        fact["value"] += 1
        fact["text"] = str(fact["value"])

    bad_pdf = tmp_path / "bad-number.pdf"
    _rewrite_pdf_evidence(pdf, bad_pdf, bump)
    res = _verify(w, bad_pdf)
    assert res.exit_code == 1 and "(size (bytes)): the dossier's value" in " ".join(res.output.split())

    # the attachment lost an entry
    def drop_entry(bundle: dict) -> None:  # type: ignore[type-arg]
        lines = bundle["audit_export"].split("\n")
        del lines[2]
        bundle["audit_export"] = "\n".join(lines)

    lost = tmp_path / "lost-entry.pdf"
    _rewrite_pdf_evidence(pdf, lost, drop_entry)
    res = _verify(w, lost)
    assert res.exit_code == 1 and "embedded audit entries: FAILED at #" in " ".join(res.output.split())


def _doc_script(name: str) -> str:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "audit-export-format.md").read_text(encoding="utf-8")
    m = re.search(rf"<!-- {name}-script-begin -->\n```python\n(.*?)```\n<!-- {name}-script-end -->", doc, re.S)
    assert m is not None, name
    return m.group(1)


def _documented_scripts_agree(w: DossierWorld, tmp_path: Path, good: Path, bad: Path) -> None:
    import sys

    auditor, checker = tmp_path / "verify_audit.py", tmp_path / "check_dossier.py"
    auditor.write_text(_doc_script("auditor"))
    checker.write_text(_doc_script("dossier"))
    m = re.search(r'<script type="application/json" id="audit-evidence">(.*?)</script>', good.read_text(), re.S)
    assert m is not None
    evidence = tmp_path / "evidence.json"
    evidence.write_text(m.group(1))
    export = tmp_path / "embedded.jsonl"
    export.write_text(json.loads(m.group(1))["audit_export"])
    pub = str(w.key_path.with_suffix(".pub"))
    run = [sys.executable]
    assert subprocess.run([*run, str(auditor), str(export), pub], capture_output=True).returncode == 0
    ok = subprocess.run([*run, str(checker), str(evidence), str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("OK"), ok.stdout + ok.stderr
    failed = subprocess.run([*run, str(checker), str(evidence), str(bad)], capture_output=True, text=True)
    assert failed.returncode == 1 and "(size (bytes)): the page shows" in failed.stdout, failed.stdout


def test_deployment_dossier_holds_the_period(dossier_world: DossierWorld, tmp_path: Path) -> None:
    w = dossier_world
    pdf, html = tmp_path / "d.pdf", tmp_path / "d.html"
    for out in (pdf, html):
        res = _govern("dossier", "deployment", w.deployment, "--out", str(out))
        assert res.exit_code == 0, res.output
    text = _pdf_text(pdf)
    flat = re.sub(r"\s+", "", text)
    assert "policy_violations" in text and "auto_rollback" in text and "investigating" in flat
    assert "consecutive_windows:2" in flat and "notalegalopinion" in flat
    page = html.read_text(encoding="utf-8")
    assert page.count("<svg") >= 2 and 'id="audit-evidence"' in page
    for path in (pdf, html):
        ok = _verify(w, path)
        assert ok.exit_code == 0, ok.output


@pytest.mark.browser
def test_html_dossier_renders_in_chromium_without_network(dossier_world: DossierWorld, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    w = dossier_world
    html = tmp_path / "d.html"
    assert _govern("dossier", "deployment", w.deployment, "--out", str(html)).exit_code == 0
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.goto(html.as_uri())
        assert page.locator("h1").inner_text().startswith("Evidence dossier")
        assert page.locator("svg.chart").count() >= 2
        evidence = json.loads(page.locator("script#audit-evidence").text_content() or "{}")
        browser.close()
    assert evidence["format"] == "govern-dossier-evidence" and evidence["facts"]
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []


def test_bad_input_is_one_line_exit_1_and_writes_nothing(dossier_world: DossierWorld, tmp_path: Path) -> None:
    w = dossier_world
    cases = [
        (("dossier", "version", "999999", "--out", str(tmp_path / "a.pdf")), "no token version 999999"),
        (("dossier", "deployment", "no-such-dep", "--out", str(tmp_path / "b.html")), "no-such-dep"),
        (("dossier", "version", str(w.v2), "--out", str(tmp_path / "c.docx")), "a dossier is written as .pdf or .html"),
        (("dossier", "deployment", w.deployment, "--since", "2030-01-02", "--until", "2030-01-01",
          "--out", str(tmp_path / "d.pdf")), "must be later than --since"),
        (("dossier", "deployment", w.deployment, "--since", "2001-01-01", "--until", "2001-01-02",
          "--out", str(tmp_path / "e.pdf")), "no promotions, drift checks, alerts or outputs"),
        (("dossier", "version", str(w.v2), "--out", str(tmp_path / "missing" / "f.pdf")), "does not exist"),
    ]
    for args, message in cases:
        res = _govern(*args)
        assert res.exit_code == 1, (args, res.output)
        one_line = res.output.strip()
        assert message.lower() in one_line.replace("\n", " ").lower(), (args, res.output)
        assert "Traceback" not in res.output
    assert [p.name for p in tmp_path.iterdir() if p.name not in ("keys", "state", "gate")] == []
    assert shutil.which("pdftoppm"), "poppler-utils provides pdftoppm and pdftotext"


def test_http_routes_and_the_ui_button(dossier_world: DossierWorld, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from governance.api.app import create_app
    from governance.settings import get_settings
    from tests.dashboards.conftest import make_person, sign_in

    w = dossier_world
    auditor, engineer = make_person(w.engine, "auditor"), make_person(w.engine, "ml_engineer")
    officer = make_person(w.engine, "compliance_officer")
    with TestClient(create_app(get_settings()), raise_server_exceptions=False, follow_redirects=False) as client:
        auth = {"Authorization": f"Bearer {auditor.key}"}
        res = client.get(f"/v1/versions/{w.v2}/dossier", params={"format": "html"}, headers=auth)
        assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
        assert 'id="audit-evidence"' in res.text and w.v2_sha in res.text
        saved = tmp_path / "api.html"
        saved.write_bytes(res.content)
        assert _verify(w, saved).exit_code == 0
        res = client.get(f"/v1/deployments/{w.deployment}/dossier", headers=auth)
        assert res.status_code == 200 and res.content.startswith(b"%PDF")
        assert client.get(f"/v1/versions/{w.v2}/dossier",
                          headers={"Authorization": f"Bearer {engineer.key}"}).status_code == 403
        missing = client.get("/v1/versions/999999/dossier", headers=auth)
        assert missing.status_code == 404 and "error" in missing.json()
        assert client.get(f"/v1/versions/{w.v2}/dossier", params={"format": "docx"}, headers=auth).status_code == 422
        backwards = client.get(f"/v1/deployments/{w.deployment}/dossier", headers=auth,
                               params={"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"})
        assert backwards.status_code == 422 and "must be later" in backwards.text
        sign_in(client, officer.key)
        page = client.get(f"/ui/versions/{w.v2}")
        assert page.status_code == 200 and f"/ui/versions/{w.v2}/dossier.pdf" in page.text
        assert "Download dossier" in client.get(f"/ui/deployments/{w.deployment}").text
        pdf = client.get(f"/ui/versions/{w.v2}/dossier.pdf")
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")


def test_verify_refuses_what_is_not_a_dossier(tmp_path: Path) -> None:
    from governance.audit.signing import generate_keypair

    keys = generate_keypair(tmp_path / "k.key")
    page, pdf = tmp_path / "page.html", tmp_path / "fake.pdf"
    page.write_text("<html><body><p>hello</p></body></html>")
    pdf.write_bytes(b"not a pdf at all")
    for path, message in ((page, "holds no <script"), (pdf, "is not a readable PDF")):
        res = _govern("audit", "verify", str(path), "--public-key", str(keys.public_path))
        assert res.exit_code == 1 and message in " ".join(res.output.split()), res.output


def test_a_grandfathered_or_unbounded_metric_is_said_plainly() -> None:
    from governance.dossier.facts import _not_enforced
    from tests.dashboards.conftest import gate_report

    report = gate_report()
    suite = next(s for s in report.suites if s.suite == "policy_compliance")
    suite.metrics[0].detail = "3/100 violations (zero rule); grandfathered: base breaks the bound too"
    suite.metrics[1].decisive, suite.metrics[1].threshold = False, None
    suite.metrics[1].detail = "no absolute bound in the policy"
    lines = _not_enforced(report)
    assert any(line.startswith("policy_compliance / pii: GRANDFATHERED") for line in lines), lines
    assert any("reported only, no bound applied:" in line and "(no absolute bound in the policy)" in line
               for line in lines), lines


def test_a_listed_waiver_is_said_with_its_numbers_and_what_the_officer_acknowledged() -> None:
    from governance.dossier.facts import _not_enforced
    from governance.gates.report import WaiverReport
    from tests.dashboards.conftest import gate_report

    report = gate_report()
    report.waivers = [WaiverReport(name="must_refuse", suite="policy_compliance", metric="must_refuse violation rate",
                                   bound=0.1, base_value=1.0, candidate_value=0.95, reason="the base never refuses")]
    lines = _not_enforced(report)
    assert lines[0].startswith("policy_compliance / must_refuse violation rate: WAIVED (grandfathered)"), lines
    assert "candidate 0.95, bare base model 1" in lines[0] and "('must_refuse')" in lines[0]
