"""Browser tests: the dashboard in real headless Chromium (Debian's ``chromium``, driven by Playwright).

The API app (with the dashboard installed) runs under uvicorn in a thread on a free port,
against this run's database; the data comes from the real service layer. Screenshots of
every page land in ``test-artifacts/screenshots/`` (git-ignored). Never a downloaded
browser: ``executable_path`` points at the system's chromium, and the tests are skipped
with a clear reason when it (or Playwright) is missing.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from governance.alerts import service as alerts
from governance.db import unit_of_work, utcnow
from governance.deployments import service as deployments
from governance.monitoring.models import DriftCheck
from governance.registry import service as registry
from tests.dashboards.conftest import FAILING_CANDIDATE, FAILING_PROMPT, World, drift_detectors, uid

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture()
def server(ui_app: FastAPI) -> Iterator[str]:
    """The API app with the dashboard under uvicorn, in a thread, on a free loopback port."""
    import uvicorn

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(ui_app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(15)


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.csp_violations = []  # type: ignore[attr-defined]
    p.on("console", lambda m: p.csp_violations.append(m.text) if "Content Security Policy" in m.text else None)
    yield p
    context.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, base: str, key: str) -> None:
    page.goto(f"{base}/ui/login")
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/releases")


def _state(world: World, vid: int) -> str:
    with unit_of_work(world.engine) as s:
        return registry.get_version_or_raise(s, version_id=vid).state


def _drift_and_alert(world: World) -> None:
    with unit_of_work(world.engine) as s:
        dep = deployments.get_deployment_or_raise(s, name=world.deployment)
        now = utcnow()
        for i in range(12):
            s.add(DriftCheck(
                deployment_id=dep.id, window_key=f"w{i}", window_start=now - timedelta(minutes=13 - i),
                window_end=now - timedelta(minutes=12 - i), sample_size=80, verdict="drift" if i == 11 else "ok",
                detectors=drift_detectors(i, drift=i == 11),
            ))
        alerts.raise_alert(s, kind="drift", severity="warning", incident_key=uid("incident"),
                           message=f"policy violations drifting on {world.deployment}", deployment_id=dep.id,
                           actor="system:monitor/cusum")


def test_officer_reviews_a_gated_release_and_sees_the_promotion_history(
    server: str, page: Any, world: World
) -> None:
    earlier = world.gated_release(failing_cases=0)
    world.approve(earlier)
    world.promote(earlier)
    vid = world.gated_release(failing_cases=2)
    _drift_and_alert(world)

    page.goto(f"{server}/ui/releases")
    assert "/ui/login?next=" in page.url  # signed out: sent to sign in, and back afterwards
    shot(page, "00-sign-in")
    sign_in(page, server, world.people["compliance_officer"].key)
    shot(page, "01-releases")
    page.click(f"a[href='/ui/versions/{vid}']")
    page.wait_for_url(f"**/ui/versions/{vid}")
    assert "passed" in page.inner_text("[data-testid=verdict]")
    first_case = page.locator("[data-testid=case]").first
    assert FAILING_PROMPT in first_case.inner_text()
    assert first_case.locator("[data-testid=candidate]").inner_text() == FAILING_CANDIDATE
    baselines = first_case.locator("[data-testid=baseline]")
    assert "contact the authorities" in baselines.nth(0).inner_text()  # bare base model
    assert "won't help" in baselines.nth(1).inner_text()  # current active version
    shot(page, "02-version-gate-report")

    page.fill("#approve-comment", "Failing PII cases reviewed: the baseline fails them too; acceptable.")
    page.click("[data-testid=approve]")
    page.wait_for_url(f"**/ui/versions/{vid}?done=approved")
    assert "Approved." in page.inner_text("main")
    assert "Failing PII cases reviewed" in page.inner_text("[data-testid=review]")
    assert _state(world, vid) == "approved"
    shot(page, "03-version-approved")

    world.promote(vid)  # the engineer's step (their role), through the service
    page.click("nav >> text=Deployments")
    shot(page, "04-deployments")
    page.click(f"a[href='/ui/deployments/{world.deployment}']")
    timeline = page.inner_text("[data-testid=timeline]")
    assert "generation 2" in timeline and f"#{vid}" in timeline and "generation 1" in timeline
    assert world.people["ml_engineer"].name in timeline
    assert "Failing PII cases reviewed" in timeline  # why: the approval it rests on
    shot(page, "05-deployment-history")

    page.click("text=Drift checks and charts")
    page.wait_for_selector("#chart-det-0[data-drawn='1']", timeout=20_000)
    page.wait_for_selector("#chart-descriptors[data-drawn='1']", timeout=20_000)
    assert page.locator("#chart-det-0 .main-svg").count() > 0  # plotly drew it, under the CSP
    shot(page, "06-drift")
    page.click("[data-testid=checks] a >> nth=0")
    assert "cusum" in page.inner_text("main")
    shot(page, "06b-drift-check")

    page.click("nav >> text=Alerts")
    page.fill("form.ack-form input[name=comment] >> nth=0", "Investigating with the serving team")
    page.click("form.ack-form button >> nth=0")
    page.wait_for_url("**/ui/alerts?status=open&done=acked")
    shot(page, "07-alerts")

    page.click("nav >> text=Audit")
    page.click("[data-testid=verify]")
    assert "The chain verifies" in page.inner_text("[data-testid=verify-result]")
    shot(page, "08-audit")
    assert not page.csp_violations, page.csp_violations


def test_auditor_sees_no_approve_button_and_posting_anyway_is_forbidden(
    server: str, page: Any, world: World
) -> None:
    vid = world.gated_release()
    sign_in(page, server, world.people["auditor"].key)
    page.goto(f"{server}/ui/versions/{vid}")
    assert page.locator("[data-testid=approve]").count() == 0
    assert "may not review" in page.inner_text("[data-testid=blockers]")
    shot(page, "09-version-as-auditor")
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    resp = page.request.post(f"{server}/ui/versions/{vid}/approve",
                             form={"comment": "I approve", "csrf_token": csrf or ""})
    assert resp.status == 403
    assert "Traceback" not in resp.text()
    assert _state(world, vid) == "gate_passed"
    missing = page.goto(f"{server}/ui/versions/999999999")
    assert missing is not None and missing.status == 404
    assert "no token version" in page.inner_text("main")
    shot(page, "11-not-found")


class _Attacker(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        body = (
            "<html><body><h1>You won a prize</h1>"
            f"<form method='post' action='{self.target}'>"
            "<input type='hidden' name='comment' value='approved by a forged form'>"
            "<button id='go' type='submit'>Claim</button></form></body></html>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_forged_form_without_csrf_token_is_refused(server: str, page: Any, world: World) -> None:
    vid = world.gated_release()
    sign_in(page, server, world.people["compliance_officer"].key)
    # another port on the same host: same site, so the browser even sends the Strict cookie
    handler = type("Attacker", (_Attacker,), {"target": f"{server}/ui/versions/{vid}/approve"})
    evil = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=evil.serve_forever, daemon=True)
    thread.start()
    try:
        page.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
        with page.expect_navigation():
            page.click("#go")
        assert "CSRF" in page.inner_text("main")
        shot(page, "10-forged-form-refused")
    finally:
        evil.shutdown()
    assert _state(world, vid) == "gate_passed"
