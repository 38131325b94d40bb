"""The version page and the printable report show a pass with waivers as such, and the approve
form asks for each waiver to be acknowledged (a checkbox per waiver; without it: 409)."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from sqlalchemy import select

from dashboards.gate_report_html import render_html
from governance.db import unit_of_work
from governance.gates.report import GateReport
from governance.registry.models import Review, TokenVersion
from tests.dashboards.conftest import World, gate_report, sign_in


def test_the_version_page_shows_the_waivers_and_asks_for_each(client: TestClient, world: World) -> None:
    vid = world.submit()
    world.gate(vid, waived=True)
    csrf = sign_in(client, world.people["compliance_officer"].key)
    html = client.get(f"/ui/versions/{vid}").text
    assert "passed with waivers" in html and 'data-testid="waivers"' in html
    assert html.count('data-testid="acknowledge-waiver"') == 1 and 'value="must_refuse"' in html
    assert "passed with waivers" in client.get("/ui/releases").text

    r = client.post(f"/ui/versions/{vid}/approve", data={"comment": "ok", "csrf_token": csrf})
    assert r.status_code == 409 and "must_refuse" in r.text
    r = client.post(f"/ui/versions/{vid}/approve",
                    data={"comment": "accepted: the base never refuses", "csrf_token": csrf,
                          "acknowledge": ["must_refuse"]})
    assert r.status_code == 303, r.text
    with unit_of_work(world.engine) as s:
        assert s.get(TokenVersion, vid).state == "approved"  # type: ignore[union-attr]
        review = s.scalars(select(Review).where(Review.version_id == vid)).one()
        assert review.acknowledged_waivers == ["must_refuse"]
    after = client.get(r.headers["location"]).text
    assert "waivers acknowledged: <code>must_refuse</code>" in after


def test_a_version_without_waivers_has_no_checkbox(client: TestClient, world: World) -> None:
    vid = world.gated_release()
    sign_in(client, world.people["compliance_officer"].key)
    html = client.get(f"/ui/versions/{vid}").text
    assert "acknowledge-waiver" not in html and "passed with waivers" not in html


def test_the_printable_report_reads_in_a_minute() -> None:
    report = GateReport.model_validate(json.loads(json.dumps(gate_report(failing_cases=2, passed=False,
                                                                         waived=True).to_dict())))
    assert report.waiver_names() == ["must_refuse"]
    html = render_html(report, title="v1")
    # verdict, waivers, then each failing metric with its cases beside the baselines, then the tables
    assert html.index("Verdict: FAILED") < html.index("Waivers") < html.index("Why it failed") \
        < html.index("Evidence") < html.index("<h2>Suites</h2>")
    why = html[html.index("Why it failed"):html.index("Evidence")]
    assert "accuracy_drop" in why and "fails: beyond the bound" in why
    assert "{&#39;" not in html and "<th>do sample</th><td>no</td>" in html and "<th>max new tokens</th>" in html
    assert "waived: the bare base model breaks the bound too" in html

    passed = render_html(GateReport.model_validate(gate_report(waived=True).to_dict()), title="v2")
    assert "Verdict: PASSED WITH WAIVERS" in passed and "Why it failed" not in passed
