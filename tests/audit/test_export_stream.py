"""`export_stream`: the one download the API and the web UI serve (file name, media type, headers, body)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine

from governance.audit.export import ExportError, export_stream, prepare_export
from governance.audit.service import append
from governance.audit.verify import verify_export
from governance.db import make_engine, unit_of_work
from governance.errors import InvalidInput


@pytest.fixture()
def db(scratch_db: Callable[[], str]) -> Iterator[Engine]:
    engine = make_engine(scratch_db())
    with unit_of_work(engine) as session:
        for i in range(3):
            append(session, actor="user:u", action="version.submit", subject_type="version", subject_id=i, payload={})
    yield engine
    engine.dispose()


def _download(engine: Engine, key: Ed25519PrivateKey, **kw: object) -> tuple[bytes, str, dict[str, str]]:
    with unit_of_work(engine) as session:
        plan = prepare_export(session, key=key, actor="user:auditor", **kw)  # type: ignore[arg-type]
    stream = export_stream(plan, engine=engine)
    # read after the commit, as a streaming response does
    return b"".join(stream.body), stream.media_type, stream.headers


def test_jsonl_download_verifies(
    db: Engine, signing_key: Ed25519PrivateKey, public_key: Ed25519PublicKey, tmp_path: Path
) -> None:
    body, media, headers = _download(db, signing_key)
    assert media == "application/x-ndjson"
    assert headers["Content-Disposition"] == 'attachment; filename="audit-1-3.jsonl"'
    assert headers["X-Audit-Entries"] == "3" and "X-Audit-Manifest" not in headers
    out = tmp_path / "audit.jsonl"
    out.write_bytes(body)
    result = verify_export(out, public_key=public_key)
    assert result.ok and result.count == 3, result.reason


def test_csv_download_carries_its_manifest_in_a_header(db: Engine, signing_key: Ed25519PrivateKey) -> None:
    body, media, headers = _download(db, signing_key, fmt="csv")
    assert media == "text/csv"
    assert headers["Content-Disposition"] == 'attachment; filename="audit-1-3.csv"'
    sidecar = json.loads(headers["X-Audit-Manifest"])
    assert sidecar["manifest"]["last_seq"] == 3 and sidecar["checkpoint"]
    assert len(body.decode().strip().splitlines()) == 1 + 3  # header row and the entries


def test_an_empty_range_is_named_empty(db: Engine, signing_key: Ed25519PrivateKey) -> None:
    _, _, headers = _download(db, signing_key, since=datetime(2999, 1, 1, tzinfo=UTC))
    assert headers["Content-Disposition"] == 'attachment; filename="audit-empty.jsonl"'
    assert headers["X-Audit-Entries"] == "0"


def test_a_refused_request_is_invalid_input(db: Engine, signing_key: Ed25519PrivateKey) -> None:
    assert issubclass(ExportError, InvalidInput) and issubclass(ExportError, ValueError)
    with pytest.raises(InvalidInput, match="unknown export format"):
        _download(db, signing_key, fmt="xml")
    with pytest.raises(InvalidInput, match="time zone"):
        _download(db, signing_key, since=datetime(2026, 1, 1))
