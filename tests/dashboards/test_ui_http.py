"""The dashboard over plain HTTP (TestClient): sessions, cookies, CSRF, headers, roles, pages, errors."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from dashboards.security import SESSION_COOKIE, UiSession
from governance.alerts import service as alerts
from governance.audit.models import AuditEntry
from governance.auth import service as auth
from governance.db import unit_of_work, utcnow
from governance.deployments import service as deployments
from governance.monitoring.models import DriftCheck
from governance.principal import Principal
from governance.registry import service as registry
from tests.dashboards.conftest import FAILING_CANDIDATE, World, csrf_of, drift_detectors, sign_in, uid

pytestmark = pytest.mark.usefixtures("settings_env")


def _state(world: World, vid: int) -> str:
    with unit_of_work(world.engine) as s:
        return registry.get_version_or_raise(s, version_id=vid).state


def _denied(world: World, actor: str) -> list[AuditEntry]:
    with unit_of_work(world.engine) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.actor == actor, AuditEntry.action == "denied")))


# ---------------------------------------------------------------- headers, cookies, sign-in


def test_security_headers_on_pages_errors_and_static(client: TestClient) -> None:
    for path, status in (("/ui/login", 200), ("/ui/no-such-page", 404), ("/ui/static/app.css", 200)):
        r = client.get(path)
        assert r.status_code == status, path
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp
        script_src = next(p for p in csp.split(";") if p.strip().startswith("script-src"))
        assert "unsafe-inline" not in script_src and "unsafe-eval" not in script_src
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"]
    assert "<script>" not in client.get("/ui/login").text  # no inline script anywhere


def test_plotly_is_served_locally(client: TestClient) -> None:
    r = client.get("/ui/static/plotly.min.js")
    assert r.status_code == 200 and len(r.content) > 1_000_000
    assert client.get("/ui/static/../../etc/passwd").status_code == 404
    assert client.get("/ui/static/secrets.txt").status_code == 404


def test_sign_in_sets_a_strict_httponly_cookie_with_expiry(client: TestClient, world: World) -> None:
    page = client.get("/ui/login")
    r = client.post("/ui/login", data={"api_key": world.people["compliance_officer"].key,
                                        "csrf_token": csrf_of(page.text), "next": "/ui/alerts"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/alerts"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE + "="))
    lower = cookie.lower()
    assert "httponly" in lower and "samesite=strict" in lower and "max-age=" in lower and "path=/ui" in lower
    assert "secure" not in lower  # plain http in the test; see the https test
    assert world.people["compliance_officer"].key not in cookie  # the key itself never goes to the browser


def test_cookie_is_secure_over_https(ui_app: FastAPI, world: World) -> None:
    with TestClient(ui_app, base_url="https://testserver", follow_redirects=False) as c:
        page = c.get("/ui/login")
        assert "secure" in page.headers["set-cookie"].lower()
        r = c.post("/ui/login", data={"api_key": world.people["auditor"].key, "csrf_token": csrf_of(page.text)})
        assert r.status_code == 303
        assert "secure" in r.headers["set-cookie"].lower()


def test_bad_keys_and_service_keys_cannot_sign_in(client: TestClient, world: World) -> None:
    page = client.get("/ui/login")
    r = client.post("/ui/login", data={"api_key": "gov_abcdefgh_nope", "csrf_token": csrf_of(page.text)})
    assert r.status_code == 401 and "not valid" in r.text
    page = client.get("/ui/login")
    r = client.post("/ui/login", data={"api_key": world.people["service"].key, "csrf_token": csrf_of(page.text)})
    assert r.status_code == 403 and "automation" in r.text


def test_login_form_needs_its_csrf_token(client: TestClient, world: World) -> None:
    client.get("/ui/login")
    r = client.post("/ui/login", data={"api_key": world.people["auditor"].key})
    assert r.status_code == 403 and "CSRF" in r.text
    assert SESSION_COOKIE not in r.headers.get("set-cookie", "")


def test_pages_redirect_to_sign_in_and_posts_are_refused(client: TestClient, world: World) -> None:
    r = client.get("/ui/releases?tab=all")
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next=")
    vid = world.gated_release()
    r = client.post(f"/ui/versions/{vid}/approve", data={"comment": "x", "csrf_token": "x"})
    assert r.status_code == 401
    assert _state(world, vid) == "gate_passed"


def test_open_redirect_is_refused(client: TestClient, world: World) -> None:
    page = client.get("/ui/login")
    r = client.post("/ui/login", data={"api_key": world.people["auditor"].key, "csrf_token": csrf_of(page.text),
                                        "next": "//evil.example/ui/x"})
    assert r.headers["location"] == "/ui/releases"


def test_tampered_or_foreign_cookie_is_signed_out(client: TestClient, world: World) -> None:
    sign_in(client, world.people["auditor"].key)
    good = client.cookies.get(SESSION_COOKIE)
    assert good
    body, _, mac = good.partition(".")
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, body + "." + mac[::-1], path="/ui")
    assert client.get("/ui/releases").status_code == 303
    forged = UiSession.new(user_id=world.people["admin"].principal.user_id or 0, key_prefix="x").to_cookie("wrong")
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, forged, path="/ui")
    assert client.get("/ui/releases").status_code == 303


def test_revoking_the_key_ends_the_session(client: TestClient, world: World) -> None:
    officer = world.people["compliance_officer"]
    sign_in(client, officer.key)
    with unit_of_work(world.engine) as s:
        auth.revoke_key(s, prefix=officer.principal.key_prefix or "", principal=world.people["admin"].principal)
    assert client.get("/ui/releases").status_code == 303


def test_sign_out_needs_csrf_and_ends_the_session(client: TestClient, world: World) -> None:
    csrf = sign_in(client, world.people["auditor"].key)
    assert client.post("/ui/logout", data={}).status_code == 403
    r = client.post("/ui/logout", data={"csrf_token": csrf})
    assert r.status_code == 303
    client.cookies.delete(SESSION_COOKIE, path="/ui")  # what the browser does with the expired cookie
    assert client.get("/ui/releases").status_code == 303


# ---------------------------------------------------------------- review, roles, CSRF


def test_officer_reads_gate_report_and_approves(client: TestClient, world: World) -> None:
    vid = world.gated_release(failing_cases=3)
    csrf = sign_in(client, world.people["compliance_officer"].key)
    listing = client.get("/ui/releases").text
    assert f"/ui/versions/{vid}" in listing
    page = client.get(f"/ui/versions/{vid}")
    assert page.status_code == 200
    html = page.text
    assert html.index("Gate verdict") < html.index("Suites") < html.index("Failing cases")
    assert "Failing cases (3)" in html and FAILING_CANDIDATE.replace("'", "&#39;") in html
    assert "policy_compliance" in html and "&lt;= 0.05" in html and "[0.006, 0.07]" in html
    assert "0.41 <small>(adjusted 0.82)</small>" in html and "&gt;= 0.8" in html
    assert "Baseline: bare base model" in html and "Baseline: current active version" in html
    assert 'data-testid="approve"' in html
    full = client.get(f"/ui/versions/{vid}/gate-report")
    assert full.status_code == 200 and "refusal_gap" in full.text
    assert full.headers["content-security-policy"].startswith("sandbox")
    r = client.post(f"/ui/versions/{vid}/approve", data={"comment": "", "csrf_token": csrf})
    assert r.status_code == 422 and "comment" in r.text
    r = client.post(f"/ui/versions/{vid}/approve", data={"comment": "evidence reviewed", "csrf_token": csrf})
    assert r.status_code == 303
    assert _state(world, vid) == "approved"
    after = client.get(r.headers["location"]).text
    assert "evidence reviewed" in after and "Approved." in after


def test_forged_form_without_csrf_is_refused(client: TestClient, world: World) -> None:
    vid = world.gated_release()
    sign_in(client, world.people["compliance_officer"].key)
    r = client.post(f"/ui/versions/{vid}/approve", data={"comment": "forged"})
    assert r.status_code == 403 and "CSRF" in r.text
    r = client.post(f"/ui/versions/{vid}/approve", data={"comment": "forged", "csrf_token": "guess"})
    assert r.status_code == 403
    assert _state(world, vid) == "gate_passed"


def test_auditor_sees_no_approve_button_and_gets_403(client: TestClient, world: World) -> None:
    vid = world.gated_release()
    auditor = world.people["auditor"]
    csrf = sign_in(client, auditor.key)
    html = client.get(f"/ui/versions/{vid}").text
    assert 'data-testid="approve"' not in html and "may not review" in html
    r = client.post(f"/ui/versions/{vid}/approve", data={"comment": "sneaky", "csrf_token": csrf})
    assert r.status_code == 403 and "Traceback" not in r.text
    assert _state(world, vid) == "gate_passed"
    assert _denied(world, f"user:{auditor.name}")  # the refusal is in the audit log


def test_submitter_sees_four_eyes(client: TestClient, world: World) -> None:
    vid = world.submit(by="admin")  # admins may submit and review, but never their own version
    world.gate(vid)
    csrf = sign_in(client, world.people["admin"].key)
    html = client.get(f"/ui/versions/{vid}").text
    assert "Four eyes" in html and 'data-testid="approve"' not in html
    r = client.post(f"/ui/versions/{vid}/approve", data={"comment": "mine", "csrf_token": csrf})
    assert r.status_code == 403 and "four eyes" in r.text.lower()
    assert _state(world, vid) == "gate_passed"


def test_version_without_gate_run_and_unknown_version(client: TestClient, world: World) -> None:
    vid = world.submit()
    sign_in(client, world.people["auditor"].key)
    html = client.get(f"/ui/versions/{vid}").text
    assert "No gate run yet" in html
    r = client.get("/ui/versions/999999999")
    assert r.status_code == 404 and "no token version" in r.text
    r = client.get("/ui/versions/not-a-number")
    assert r.status_code == 422 and "Traceback" not in r.text


def test_unexpected_error_is_a_plain_500_page(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dashboards import reports

    def boom(*_: object, **__: object) -> object:
        raise RuntimeError("secret internal detail")

    vid = world.gated_release()
    sign_in(client, world.people["auditor"].key)
    monkeypatch.setattr(reports, "suite_summaries", boom)
    r = client.get(f"/ui/versions/{vid}")
    assert r.status_code == 500
    assert "secret internal detail" not in r.text and "Traceback" not in r.text
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


# ---------------------------------------------------------------- deployments


def test_deployment_timeline_rollback_and_freeze(client: TestClient, world: World) -> None:
    first = world.gated_release()
    world.approve(first)
    world.promote(first)
    second = world.gated_release()
    world.approve(second)
    world.promote(second)
    csrf = sign_in(client, world.people["compliance_officer"].key)
    assert world.deployment in client.get("/ui/deployments").text
    html = client.get(f"/ui/deployments/{world.deployment}").text
    assert "generation 2" in html and "generation 1" in html
    r = client.post(f"/ui/deployments/{world.deployment}/rollback", data={"reason": "", "csrf_token": csrf})
    assert r.status_code == 422
    r = client.post(f"/ui/deployments/{world.deployment}/rollback",
                    data={"reason": "complaints about tone", "csrf_token": csrf})
    assert r.status_code == 303
    html = client.get(r.headers["location"]).text
    assert "generation 3" in html and "complaints about tone" in html and "rollback" in html
    with unit_of_work(world.engine) as s:
        assert deployments.active_info(s, name=world.deployment).version_id == first
    r = client.post(f"/ui/deployments/{world.deployment}/freeze",
                    data={"reason": "incident", "until": "", "csrf_token": csrf})
    assert r.status_code == 303 and "frozen" in client.get(r.headers["location"]).text
    r = client.post(f"/ui/deployments/{world.deployment}/unfreeze", data={"reason": "over", "csrf_token": csrf})
    assert r.status_code == 303


def test_an_automatic_rollback_shows_its_evidence(client: TestClient, world: World) -> None:
    first = world.gated_release()
    world.approve(first)
    world.promote(first)
    second = world.gated_release()
    world.approve(second)
    world.promote(second)
    evidence = {
        "detector": "policy_violations", "kind": "cusum", "statistic": 7.25, "threshold": 4.5, "n": 40,
        "check_id": 12, "window_key": "1700000060:60", "window_ids": [11, 12],
        "windows": [{"check_id": 11, "window_key": "1700000000:60", "n": 40, "statistic": 5.0},
                    {"check_id": 12, "window_key": "1700000060:60", "n": 40, "statistic": 7.25}],
        "guards": {"consecutive_windows": {"passed": True, "required": 2, "seen": 2},
                   "daily_cap": {"passed": True, "rollbacks_last_24h": 0, "max_per_day": 3},
                   "cooldown": {"passed": True, "cooldown_seconds": 600, "last_auto_rollback_at": None}},
    }
    with unit_of_work(world.engine) as s:
        out = deployments.rollback(s, deployment=world.deployment, principal=Principal.for_system("monitor/test"),
                                   reason="automatic rollback on drift: test", automatic=True,
                                   expected_active_version_id=second, evidence=evidence)
        assert out.status == "rolled_back"
    sign_in(client, world.people["auditor"].key)
    html = client.get(f"/ui/deployments/{world.deployment}").text
    table = html[html.index('data-testid="rollback-evidence"'):]
    table = table[: table.index("</table>")]
    assert "policy_violations (cusum)" in table and "7.25 / 4.5 (n = 40)" in table
    assert '/ui/drift/checks/11"' in table and '/ui/drift/checks/12"' in table
    assert "consecutive windows (2 of 2): passed" in table and "daily cap (0 of 3 today): passed" in table


def test_engineer_sees_no_rollback_form_and_is_refused(client: TestClient, world: World) -> None:
    csrf = sign_in(client, world.people["ml_engineer"].key)
    html = client.get(f"/ui/deployments/{world.deployment}").text
    assert "rollback-form" not in html and "No promotions" in html and "No active version" in html
    r = client.post(f"/ui/deployments/{world.deployment}/freeze", data={"reason": "x", "csrf_token": csrf})
    assert r.status_code == 403
    assert client.get("/ui/deployments/no-such-deployment").status_code == 404


# ---------------------------------------------------------------- drift, alerts, audit


def test_drift_page_charts_checks_and_sandboxed_report(client: TestClient, world: World, tmp_path: object) -> None:
    from governance.settings import get_settings

    state = get_settings().state_path
    (state / "monitor-reports").mkdir(parents=True, exist_ok=True)
    report = state / "monitor-reports" / f"{uid('check')}.html"
    report.write_text("<html><body><script>var x = 1;</script>Evidently report</body></html>")
    sign_in(client, world.people["auditor"].key)
    empty = client.get(f"/ui/deployments/{world.deployment}/drift").text
    assert "No drift checks yet" in empty
    with unit_of_work(world.engine) as s:
        dep = deployments.get_deployment_or_raise(s, name=world.deployment)
        now = utcnow()
        ids = []
        for i in range(3):
            c = DriftCheck(
                deployment_id=dep.id, window_key=f"w{i}", window_start=now - timedelta(minutes=3 - i),
                window_end=now - timedelta(minutes=2 - i), sample_size=60, verdict="drift" if i == 2 else "ok",
                detectors=drift_detectors(i, report_html=str(report) if i == 2 else "/etc/passwd", drift=i == 2),
                report_path=str(report) if i == 2 else "../../etc/passwd",
            )
            s.add(c)
            s.flush()
            ids.append(c.id)
    html = client.get(f"/ui/deployments/{world.deployment}/drift").text
    assert 'id="figure-det-0"' in html and 'id="figure-descriptors"' in html and "plotly.min.js" in html
    assert 'id="figure-descriptor-pvalues"' in html and "policy_violations threshold" in html
    assert "window rate" in html and '"refusal"' in html
    for url in (f"/ui/drift/checks/{ids[2]}/report", f"/ui/drift/checks/{ids[2]}/report?detector=descriptors"):
        r = client.get(url)
        assert r.status_code == 200 and "Evidently report" in r.text
        assert r.headers["content-security-policy"].startswith("sandbox")
    # paths outside the state folder are never served
    assert client.get(f"/ui/drift/checks/{ids[0]}/report").status_code == 404
    assert client.get(f"/ui/drift/checks/{ids[0]}/report?detector=descriptors").status_code == 404
    page = client.get(f"/ui/drift/checks/{ids[2]}")
    assert page.status_code == 200 and "cusum" in page.text and "Evidently report (descriptors)" in page.text


def test_alerts_acknowledge_with_comment(client: TestClient, world: World) -> None:
    key = uid("incident")
    with unit_of_work(world.engine) as s:
        dep = deployments.get_deployment_or_raise(s, name=world.deployment)
        alert, _ = alerts.raise_alert(s, kind="drift", severity="critical", incident_key=key, deployment_id=dep.id,
                                      message=f"drift on {world.deployment}", actor="system:test")
        alert_id = alert.id
    csrf = sign_in(client, world.people["auditor"].key)
    html = client.get("/ui/alerts").text
    assert f"drift on {world.deployment}" in html and f"/ui/alerts/{alert_id}/ack" not in html
    client.post("/ui/logout", data={"csrf_token": csrf})
    client.cookies.clear()
    csrf = sign_in(client, world.people["compliance_officer"].key)
    assert f"/ui/alerts/{alert_id}/ack" in client.get("/ui/alerts").text
    r = client.post(f"/ui/alerts/{alert_id}/ack", data={"comment": "looking into it", "csrf_token": csrf})
    assert r.status_code == 303
    acked = client.get("/ui/alerts?status=acknowledged").text
    assert "looking into it" in acked
    r = client.post(f"/ui/alerts/{alert_id}/ack", data={"comment": "again", "csrf_token": csrf})
    assert r.status_code == 409


def test_audit_filter_verify_and_export(client: TestClient, world: World) -> None:
    from governance.audit.signing import default_private_key_path, generate_keypair

    generate_keypair(default_private_key_path())
    auditor = world.people["auditor"]
    csrf = sign_in(client, auditor.key)
    html = client.get(f"/ui/audit?actor=user:{auditor.name}").text
    assert "ui.sign_in" in html
    assert "No audit entries match" in client.get("/ui/audit?actor=user:nobody-at-all").text
    html = client.get("/ui/audit/verify").text
    assert "The chain verifies" in html, html[html.find("<main"):][:1500]
    r = client.post("/ui/audit/export", data={"csrf_token": csrf})
    assert r.status_code == 200 and r.headers["content-disposition"].startswith("attachment")
    lines = r.text.strip().splitlines()
    assert '"record":"manifest"' in lines[0] and '"record":"checkpoint"' in lines[-1]
    assert client.post("/ui/audit/export", data={}).status_code == 403
    assert client.get("/ui/audit?since=yesterday").status_code == 422


def test_engineer_cannot_read_the_audit_log(client: TestClient, world: World) -> None:
    sign_in(client, world.people["ml_engineer"].key)
    r = client.get("/ui/audit")
    assert r.status_code == 403 and "may not read the audit log" in r.text


def test_root_leads_to_sign_in(client: TestClient) -> None:
    r = client.get("/ui", follow_redirects=True)
    assert r.status_code == 200 and "Sign in" in r.text and r.url.path == "/ui/login"


def test_governance_never_imports_dashboards() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "governance"
    pattern = re.compile(r"^\s*(from|import)\s+dashboards\b", re.M)
    offenders = [str(p.relative_to(root.parent)) for p in root.rglob("*.py")
                 if pattern.search(p.read_text(encoding="utf-8")) and "cli" not in p.parts and p.name != "app.py"]
    assert not offenders, f"governance must not import dashboards: {offenders}"
