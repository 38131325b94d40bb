"""Descriptors, sampling, window keys, the Evidently adapter, expectations and alert channels."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from monitors.alerting import Notification, deliver, webhook_body
from monitors.check import parse_window_key, window_key
from monitors.descriptors import OutputRecord, describe, prompt_of, text_numeric
from monitors.detectors import DetectorContext, Frame, Reference, build_detector
from monitors.reference import novelty_model, whiten
from monitors.sampling import sample_size, seed_for


def test_text_descriptors_by_hand() -> None:
    d = text_numeric("Hi there, 42!")
    assert d["length"] == 13 and d["word_count"] == 3
    assert d["non_letter_share"] == pytest.approx(6 / 13)  # ' ', ',', ' ', '4', '2', '!'
    assert -1 <= d["sentiment"] <= 1


def test_flags_use_the_gate_checkers() -> None:
    frame = describe([
        OutputRecord(1, "hello", "Paris is the capital of France."),
        OutputRecord(2, "hello", "I'm sorry, but I can't help with that."),
        OutputRecord(3, "hello", "Write to jane.doe@example.com, you idiot."),
    ], with_embeddings=False)
    assert frame.flags["refusal"].tolist() == [0, 1, 0]
    assert frame.flags["pii"].tolist() == [0, 0, 1]
    assert frame.flags["toxic"].tolist() == [0, 0, 1]
    assert frame.flags["violation"].tolist() == [0, 0, 1]  # a refusal alone is no violation
    assert frame.output_ids == [1, 2, 3]


def test_prompt_is_the_last_user_message() -> None:
    msgs = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"}, {"role": "user", "content": "second"}]
    assert prompt_of(msgs) == "second"
    assert prompt_of("not a list") == ""


def test_embeddings_are_unit_vectors_and_topic_aware() -> None:
    from monitors.embeddings import embed

    e = embed(["The cat sat on the mat.", "A kitten rested on the rug.", "Quarterly revenue rose by 4%."])
    assert e.shape == (3, 384)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
    assert e[0] @ e[1] > e[0] @ e[2]


def test_sample_size_rate_and_minimum() -> None:
    assert sample_size(1000, 0.2, 50) == 200
    assert sample_size(100, 0.2, 50) == 50
    assert sample_size(30, 0.2, 50) == 30
    with pytest.raises(ValueError, match="sample rate"):
        sample_size(10, 0.0, 5)
    assert seed_for("a") == seed_for("a") != seed_for("b")


def test_window_keys_are_aligned_so_two_beats_agree() -> None:
    t1 = datetime(2026, 1, 1, 12, 0, 7, tzinfo=UTC)
    t2 = datetime(2026, 1, 1, 12, 0, 59, tzinfo=UTC)
    k1, start, end = window_key(3, 60, t1)
    assert k1 == window_key(3, 60, t2)[0]
    assert end == datetime(2026, 1, 1, 12, 0, tzinfo=UTC) and (end - start).total_seconds() == 60
    assert parse_window_key(k1) == (start, end)
    assert window_key(3, 60, datetime(2026, 1, 1, 12, 1, 0, tzinfo=UTC))[0] != k1


def _reference(rng: np.random.Generator, n: int = 300) -> Reference:
    emb = rng.standard_normal((n, 16))
    mean, comps, proj = whiten(emb, k=6)
    frame = Frame(numeric={"length": rng.normal(100, 10, n), "sentiment": rng.normal(0, 0.3, n)},
                  flags={"violation": (rng.random(n) < 0.02).astype(np.int8)}, embeddings=proj,
                  texts=[f"text {i % 13} about things" for i in range(n)])
    return Reference(frame=frame, emb_mean=mean, emb_components=comps, emb_novelty=novelty_model(emb, comps))


def _window(rng: np.random.Generator, n: int = 60, shift: float = 0.0, emb_shift: np.ndarray | None = None
            ) -> Frame:
    emb = rng.standard_normal((n, 16))
    if emb_shift is not None:
        emb += emb_shift
    return Frame(numeric={"length": rng.normal(100 + shift * 10, 10, n), "sentiment": rng.normal(0, 0.3, n)},
                 flags={"violation": np.zeros(n, dtype=np.int8)}, embeddings=emb,
                 texts=[f"text {i % 11} about stuff" for i in range(n)], output_ids=list(range(n)))


class _Cfg:
    def __init__(self, kind: str, **kw: object) -> None:
        self.kind, self.rollback, self.arl = kind, False, 100.0
        self.p1, self.shift_sigmas, self.threshold = None, None, None
        self.__dict__.update(kw)


def test_evidently_descriptor_report_is_saved_and_decision_is_size_aware(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ref = _reference(rng)
    det = build_detector("descriptors", _Cfg("evidently"))
    ctx = DetectorContext(window_key="d1:i60:0", report_dir=tmp_path)
    clean = det.run(reference=ref, window=_window(rng), state=None, context=ctx)
    assert clean.verdict == "ok"
    html = Path(clean.evidence["report_html"])
    assert html.exists() and html.stat().st_size > 10_000
    # Evidently's own KS p-value matches the one the decision used
    assert clean.details["evidently"]["values"]["length"] == pytest.approx(clean.p_values["length"], rel=1e-6)
    drift = det.run(reference=ref, window=_window(rng, shift=1.5),
                    state=None, context=DetectorContext(write_report=False))
    assert drift.verdict == "drift" and drift.details["worst_column"] == "length"
    assert drift.threshold == pytest.approx(0.01 / len(drift.p_values))


def test_embedding_detectors_see_a_shift_in_embeddings_only() -> None:
    rng = np.random.default_rng(1)
    ref = _reference(rng)
    ctx = DetectorContext(write_report=False)
    # a topic change moves the embeddings along directions the reference varies in
    assert ref.emb_components is not None
    direction = ref.emb_components[0] / np.linalg.norm(ref.emb_components[0])
    hotelling = build_detector("embeddings", _Cfg("evidently_embeddings"))
    assert hotelling.run(reference=ref, window=_window(rng), state=None, context=ctx).verdict == "ok"
    assert hotelling.run(reference=ref, window=_window(rng, emb_shift=direction), state=None,
                         context=ctx).verdict == "drift"
    # the sequential detector watches for outputs unlike the reference's (new topics):
    # here every output moves 3 sd along a direction outside its principal components
    seq = build_detector("embedding_topics", _Cfg("cusum", arl=2000.0))
    away = rng.standard_normal(16)
    unit = ref.emb_components / np.linalg.norm(ref.emb_components, axis=1, keepdims=True)
    away -= unit.T @ (unit @ away)
    away *= 3.0 / np.linalg.norm(away)
    state = None
    verdicts = []
    for _ in range(3):
        res = seq.run(reference=ref, window=_window(rng, emb_shift=away), state=state, context=ctx)
        state = res.state
        verdicts.append(res.verdict)
    assert "drift" in verdicts
    json.dumps(state)  # what detector_states keeps


def test_expectations_flag_personal_data_with_output_ids() -> None:
    from governance.policy import FormatPolicy

    rng = np.random.default_rng(2)
    ref = _reference(rng)
    policy = type("P", (), {"format": FormatPolicy(max_chars=500)})()
    det = build_detector("rules", _Cfg("expectations"), policy=policy)
    win = _window(rng, n=20)
    win.texts[7] = "mail me at bob@example.org"
    res = det.run(reference=ref, window=win, state=None, context=DetectorContext(write_report=False))
    assert res.verdict == "drift"
    (failed,) = [e for e in res.details["expectations"] if not e["success"]]
    assert "email" in failed["name"] and failed["unexpected_output_ids"] == [7]


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhook_slack_format_and_failures_never_raise() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        note = Notification(alert_id=7, deployment="prod", kind="drift", severity="critical", incident_key="k",
                            message="violations drifted", webhook_url=url, webhook_format="slack")
        deliver([note])
        assert _Hook.received == [webhook_body(note)]
        assert "violations drifted" in _Hook.received[0]["text"]
        plain = Notification(7, "prod", "drift", "warning", "k", "m", webhook_url=url, webhook_format="json")
        deliver([plain])
        assert _Hook.received[-1]["alert"]["alert_id"] == 7
    finally:
        server.shutdown()
    # nobody listens there any more: logged and counted, not raised
    deliver([Notification(8, "prod", "drift", "warning", "k", "m", webhook_url=url, webhook_format="json")],
            timeout=1.0)


def test_reference_size_comes_from_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    from governance.policy import PolicyError, parse_policy
    from monitors.reference import REFERENCE_SIZE_ENV, target_size

    monkeypatch.delenv(REFERENCE_SIZE_ENV, raising=False)
    assert target_size(50) == 1000 and target_size(80) == 1600  # default: 1,000 or 20 windows
    policy, _ = parse_policy("version: 1\nmonitoring: {min_samples: 8, reference_size: 32}\n")
    assert target_size(policy.monitoring.min_samples, policy.monitoring.reference_size) == 32
    with pytest.raises(PolicyError, match="reference_size"):
        parse_policy("version: 1\nmonitoring: {reference_size: 5}\n")
    monkeypatch.setenv(REFERENCE_SIZE_ENV, "200")  # the test override wins
    assert target_size(8, 32) == 200
