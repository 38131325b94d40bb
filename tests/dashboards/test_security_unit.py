"""Unit tests of the cookie signing, the gate-summary reader and the key rules the UI shares (no database)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from dashboards import reports
from dashboards.security import BadSignature, UiSession, sign, tokens_match, unsign
from governance.auth.models import ApiKey, User
from governance.auth.service import key_is_valid
from governance.gates.report import ReportUnreadable, format_number


def test_sign_round_trip_and_purpose_binding() -> None:
    token = sign("s3cret", "session", {"u": 1, "exp": time.time() + 60})
    assert unsign("s3cret", "session", token)["u"] == 1
    with pytest.raises(BadSignature):
        unsign("s3cret", "login", token)  # a login cookie never passes as a session and vice versa
    with pytest.raises(BadSignature):
        unsign("other", "session", token)


def test_expired_and_malformed_tokens_are_refused() -> None:
    with pytest.raises(BadSignature):
        unsign("k", "session", sign("k", "session", {"exp": time.time() - 1}))
    with pytest.raises(BadSignature):
        unsign("k", "session", sign("k", "session", {"no_expiry": True}))
    for bad in ("", "abc", "a.b", "..."):
        with pytest.raises(BadSignature):
            unsign("k", "session", bad)


def test_session_cookie_carries_no_key() -> None:
    s = UiSession.new(user_id=7, key_prefix="abcdefgh")
    back = UiSession.from_cookie("k", s.to_cookie("k"))
    assert back == UiSession(7, "abcdefgh", s.csrf, float(int(s.expires_at)))
    assert len(s.csrf) >= 32
    assert not tokens_match(s.csrf, None) and not tokens_match(None, None) and tokens_match(s.csrf, s.csrf)


def test_suite_summaries_read_the_evaluators_shape_and_others() -> None:
    summary = {"verdict": "failed", "suites": {"bias": {"passed": False, "notes": ["gap too large"], "metrics": [
        {"name": "refusal_gap", "value": 0.09, "threshold": 0.05, "passed": False, "n": 240, "comparator": "<=",
         "p_value": 0.001, "p_adjusted": 0.003, "interval": [0.05, 0.13]}]}}}
    (suite,) = reports.suite_summaries(summary)
    assert suite.name == "bias" and suite.passed is False and suite.note == "gap too large"
    (m,) = suite.metrics
    assert (m.name, m.value, m.threshold, m.n, m.passed) == ("refusal_gap", 0.09, 0.05, 240, False)
    assert m.p_value == 0.001 and m.p_adjusted == 0.003 and m.comparator == "<="
    # another shape (suites at the top level, other spellings) is not guessed at: it is refused by name
    with pytest.raises(ReportUnreadable, match="pii"):
        reports.suite_summaries({"pii": {"verdict": "pass", "rate": 0.0, "max": 0.0, "sample_size": 50}})
    assert reports.suite_summaries(None) == [] and reports.suite_summaries({"verdict": "passed"}) == []


def test_numbers_read_well() -> None:
    assert format_number(None) == "—" and format_number(0.000012) == "1.20e-05"
    assert format_number([0.006, 0.07]) == "[0.006, 0.07]" and format_number(3) == "3"


def test_key_rules_the_ui_shares_with_the_api() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    user = User(name="u", role="auditor")
    assert key_is_valid(ApiKey(prefix="abcdefgh"), user, now)
    assert key_is_valid(ApiKey(prefix="abcdefgh", expires_at=now + timedelta(seconds=1)), user, now)
    assert not key_is_valid(ApiKey(prefix="abcdefgh", expires_at=now), user, now)  # expiry is exclusive
    assert not key_is_valid(ApiKey(prefix="abcdefgh", revoked_at=now), user, now)
    assert not key_is_valid(ApiKey(prefix="abcdefgh"), User(name="d", role="auditor", disabled_at=now), now)
