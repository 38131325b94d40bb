"""Export then verify offline: a clean log verifies, and every kind of tampering is caught and located."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.orm import Session

from governance.audit.canonical import chain_hash
from governance.audit.export import ExportError, ExportPlan, iter_export_lines, prepare_export, sidecar_json
from governance.audit.service import append
from governance.audit.signing import sign_checkpoint, sign_manifest
from governance.audit.verify import VerifyResult, entry_line, load_checkpoint_file, verify_export
from tests.audit.conftest import read_lines, write_lines


def _populate(session: Session, n: int = 12) -> list[int]:
    seqs = []
    for i in range(n):
        e = append(
            session,
            actor=f"user:u{i % 3}",
            actor_key_id=None if i % 2 else f"key{i}",
            action=["version.submit", "version.approve", "deployment.promote"][i % 3],
            subject_type="version",
            subject_id=i,
            payload={"i": i, "note": "héllo ✓", "nested": {"x": [1, 2.5, None, True]}, "big": 2**70},
        )
        seqs.append(e.seq)
    return seqs


def _export(session: Session, path: Path, key: Ed25519PrivateKey, **kw: object) -> ExportPlan:
    plan = prepare_export(session, key=key, actor="user:auditor", **kw)  # type: ignore[arg-type]
    with path.open("w", encoding="utf-8", newline="") as f:
        for line in iter_export_lines(session, plan):
            f.write(line)
    if plan.fmt == "csv":
        Path(str(path) + ".manifest.json").write_text(sidecar_json(plan), encoding="utf-8")
    return plan


def _parts(line: str) -> tuple[str, str, str]:
    assert line.startswith('{"prev_hash":"')
    return line[14:78], line[88:152], line[162:-2]


def _rehash(lines: list[str], start: int) -> list[str]:
    """Recompute prev_hash/hash of every entry line from index ``start`` on (what a forger would do)."""
    out = list(lines)
    prev = _parts(out[start])[0]
    for i in range(start, len(out) - 1):
        _, _, body = _parts(out[i])
        h = chain_hash(prev, body)
        out[i] = entry_line(prev, h, body)
        prev = h
    return out


def _body(line: str) -> dict:
    return json.loads(_parts(line)[2])


def _with_body(line: str, body: dict) -> str:
    p, h, _ = _parts(line)
    return entry_line(p, h, json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


@pytest.fixture()
def exported(session: Session, signing_key: Ed25519PrivateKey, tmp_path: Path) -> tuple[Path, ExportPlan]:
    _populate(session)
    path = tmp_path / "audit.jsonl"
    return path, _export(session, path, signing_key)


def _fails(path: Path, public_key: Ed25519PublicKey, lines: list[str], **kw: object) -> VerifyResult:
    tampered = write_lines(path.with_name("tampered.jsonl"), lines)
    result = verify_export(tampered, public_key=public_key, **kw)  # type: ignore[arg-type]
    assert not result.ok, "tampering went unnoticed"
    assert result.reason
    return result


def test_clean_export_verifies(exported: tuple[Path, ExportPlan], public_key: Ed25519PublicKey) -> None:
    path, plan = exported
    result = verify_export(path, public_key=public_key)
    assert result.ok, result.summary()
    assert result.count == plan.count >= 12
    assert result.last_seq == plan.last_seq == plan.checkpoint["size"]
    assert result.summary().startswith("OK: ")
    lines = read_lines(path)
    assert json.loads(lines[0])["record"] == "manifest"
    assert json.loads(lines[-1])["record"] == "checkpoint"
    assert len(lines) == plan.count + 2


def test_export_is_itself_audited(session: Session, exported: tuple[Path, ExportPlan]) -> None:
    from governance.audit.models import AuditEntry

    _, plan = exported
    entry = session.get(AuditEntry, plan.export_entry_seq)
    assert entry is not None and entry.action == "audit.export" and entry.actor == "user:auditor"
    assert json.loads(entry.payload)["last_seq"] == plan.last_seq
    assert plan.export_entry_seq == (plan.last_seq or 0) + 1  # recorded after the exported range


def test_every_changed_byte_of_an_entry_line_is_caught(
    exported: tuple[Path, ExportPlan], public_key: Ed25519PublicKey
) -> None:
    path, plan = exported
    lines = read_lines(path)
    k = 5  # the fifth entry line
    seq = plan.first_seq + k - 1  # type: ignore[operator]
    line = lines[k]
    for pos in range(len(line)):
        ch = line[pos]
        repl = "0" if ch not in "0\n" else "1"
        if ch == "\n":
            repl = " "
        tampered = [*lines[:k], line[:pos] + repl + line[pos + 1 :], *lines[k + 1 :]]
        result = _fails(path, public_key, tampered)
        assert result.bad_seq == seq, (pos, result.summary())


@pytest.mark.parametrize(
    "field", ["seq", "ts", "actor", "actor_key_id", "action", "subject_type", "subject_id", "payload"]
)
def test_a_changed_field_names_its_entry(
    exported: tuple[Path, ExportPlan], public_key: Ed25519PublicKey, field: str
) -> None:
    path, plan = exported
    lines = read_lines(path)
    k = 4
    seq = plan.first_seq + k - 1  # type: ignore[operator]
    body = _body(lines[k])
    body[field] = {
        "seq": seq + 100,
        "ts": "2001-01-01T00:00:00.000000Z",
        "actor": "user:mallory",
        "actor_key_id": "forged",
        "action": "version.reject",
        "subject_type": "deployment",
        "subject_id": "999",
        "payload": {"i": -1},
    }[field]
    result = _fails(path, public_key, [*lines[:k], _with_body(lines[k], body), *lines[k + 1 :]])
    assert result.bad_seq == seq
    assert ("hash mismatch" in result.reason) or ("found" in result.reason)  # type: ignore[operator]


def test_deleted_entry_is_named(exported: tuple[Path, ExportPlan], public_key: Ed25519PublicKey) -> None:
    path, plan = exported
    lines = read_lines(path)
    result = _fails(path, public_key, [*lines[:6], *lines[7:]])
    assert result.bad_seq == plan.first_seq + 5  # type: ignore[operator]
    assert "deleted" in result.reason  # type: ignore[operator]
    # the very first entry, too
    result = _fails(path, public_key, [lines[0], *lines[2:]])
    assert result.bad_seq == plan.first_seq


def test_reordered_entries_are_caught(exported: tuple[Path, ExportPlan], public_key: Ed25519PublicKey) -> None:
    path, plan = exported
    lines = read_lines(path)
    swapped = [*lines[:3], lines[4], lines[3], *lines[5:]]
    result = _fails(path, public_key, swapped)
    assert result.bad_seq == plan.first_seq + 2  # type: ignore[operator]
    duplicated = [*lines[:4], lines[3], *lines[4:]]
    assert _fails(path, public_key, duplicated).bad_seq == plan.first_seq + 3  # type: ignore[operator]


def test_forged_entry_with_recomputed_hashes_is_caught_by_the_signatures(
    exported: tuple[Path, ExportPlan], public_key: Ed25519PublicKey, signing_key: Ed25519PrivateKey
) -> None:
    path, plan = exported
    lines = read_lines(path)
    k = 3
    body = _body(lines[k])
    body["actor"] = "user:mallory"
    forged = _rehash([*lines[:k], _with_body(lines[k], body), *lines[k + 1 :]], k)
    # the chain itself is consistent now; only the signed manifest/checkpoint give it away
    result = _fails(path, public_key, forged)
    assert "last hash" in result.reason  # type: ignore[operator]
    # the forger also updates the manifest's last hash: its signature breaks
    manifest = json.loads(forged[0])
    manifest["last_hash"] = _parts(forged[-2])[1]
    result = _fails(path, public_key, [json.dumps(manifest) + "\n", *forged[1:]])
    assert "manifest signature is invalid" in result.reason  # type: ignore[operator]
    # and re-signing with a key of their own does not help
    other = Ed25519PrivateKey.generate()
    manifest = sign_manifest(other, {k: v for k, v in manifest.items() if k not in ("signature", "key_id")})
    cp = sign_checkpoint(other, size=plan.last_seq, head_hash=manifest["last_hash"], time=plan_time(plan))  # type: ignore[arg-type]
    result = _fails(path, public_key, [json.dumps(manifest) + "\n", *forged[1:-1], json.dumps(cp) + "\n"])
    assert "not by the trusted public key" in result.reason  # type: ignore[operator]


def plan_time(plan: ExportPlan):  # type: ignore[no-untyped-def]
    from datetime import datetime

    return datetime.fromisoformat(plan.checkpoint["time"])


def test_inserted_entry_with_renumbering_and_rehash_is_caught(
    exported: tuple[Path, ExportPlan], public_key: Ed25519PublicKey
) -> None:
    path, plan = exported
    lines = read_lines(path)
    k = 6
    fake = _body(lines[k])
    fake["action"] = "version.approve"
    fake["actor"] = "user:mallory"
    shifted = []
    for ln in lines[k:-1]:
        b = _body(ln)
        b["seq"] += 1
        shifted.append(_with_body(ln, b))
    forged = _rehash([*lines[:k], _with_body(lines[k], fake), *shifted, lines[-1]], k)
    result = _fails(path, public_key, forged)
    assert result.bad_seq == plan.last_seq + 1  # type: ignore[operator]
    # inserted without renumbering or rehashing: named where it sits
    result = _fails(path, public_key, [*lines[:k], _with_body(lines[k], fake), *lines[k:]])
    assert result.bad_seq == plan.first_seq + k - 1  # type: ignore[operator]


def test_truncated_tail_is_caught(exported: tuple[Path, ExportPlan], public_key: Ed25519PublicKey) -> None:
    path, plan = exported
    lines = read_lines(path)
    last = plan.last_seq
    assert last is not None
    # entries dropped, manifest and checkpoint kept
    assert _fails(path, public_key, [*lines[:-4], lines[-1]]).bad_seq == last - 2
    # entries and the checkpoint dropped
    assert _fails(path, public_key, lines[:-4]).bad_seq == last - 2
    # only the checkpoint dropped
    result = _fails(path, public_key, lines[:-1])
    assert "no signed checkpoint" in result.reason  # type: ignore[operator]
    # manifest rewritten to the shorter range: its signature breaks
    manifest = json.loads(lines[0])
    manifest.update(last_seq=last - 3, count=manifest["count"] - 3, last_hash=_parts(lines[-5])[1])
    assert "manifest" in _fails(path, public_key, [json.dumps(manifest) + "\n", *lines[1:-4], lines[-1]]).reason  # type: ignore[operator]


def test_checkpoint_signed_by_another_key_is_refused(
    exported: tuple[Path, ExportPlan], public_key: Ed25519PublicKey
) -> None:
    path, plan = exported
    lines = read_lines(path)
    other = Ed25519PrivateKey.generate()
    cp = sign_checkpoint(
        other, size=plan.checkpoint["size"], head_hash=plan.checkpoint["head_hash"], time=plan_time(plan)
    )
    result = _fails(path, public_key, [*lines[:-1], json.dumps(cp) + "\n"])
    assert "not by the trusted public key" in result.reason  # type: ignore[operator]
    # key id copied from the real key, signature from the other one
    cp["key_id"] = plan.checkpoint["key_id"]
    assert "signature is invalid" in _fails(path, public_key, [*lines[:-1], json.dumps(cp) + "\n"]).reason  # type: ignore[operator]
    # and verifying with the wrong trusted key fails everything
    assert not verify_export(path, public_key=other.public_key()).ok


def test_subset_export_verifies_on_its_own(
    session: Session, signing_key: Ed25519PrivateKey, public_key: Ed25519PublicKey, tmp_path: Path
) -> None:
    from governance.audit.models import AuditEntry

    seqs = _populate(session, 10)
    since = session.get(AuditEntry, seqs[3]).ts  # type: ignore[union-attr]
    until = session.get(AuditEntry, seqs[7]).ts  # type: ignore[union-attr]
    path = tmp_path / "subset.jsonl"
    plan = _export(session, path, signing_key, since=since, until=until)
    assert (plan.first_seq, plan.last_seq, plan.count) == (seqs[3], seqs[6], 4)
    result = verify_export(path, public_key=public_key)
    assert result.ok and result.count == 4, result.summary()
    # cutting the head of a subset cannot be hidden: the manifest is signed
    lines = read_lines(path)
    assert _fails(path, public_key, [lines[0], *lines[2:]]).bad_seq == seqs[3]
    # an empty range is a valid (empty) export
    empty = tmp_path / "empty.jsonl"
    plan = _export(session, empty, signing_key, since=since + timedelta(days=365))
    assert plan.count == 0
    assert verify_export(empty, public_key=public_key).ok
    with pytest.raises(ExportError, match="later than"):
        prepare_export(session, key=signing_key, actor="user:a", since=until, until=since)
    with pytest.raises(ExportError, match="time zone"):
        prepare_export(session, key=signing_key, actor="user:a", since=since.replace(tzinfo=None))


def test_newer_export_must_extend_an_older_checkpoint(
    session: Session, signing_key: Ed25519PrivateKey, public_key: Ed25519PublicKey, tmp_path: Path
) -> None:
    _populate(session, 5)
    fork_point = session.begin_nested()
    _populate(session, 5)
    old = tmp_path / "old.jsonl"
    old_plan = _export(session, old, signing_key)
    older_cp = load_checkpoint_file(old)
    assert older_cp == old_plan.checkpoint
    # an honest later export extends it
    _populate(session, 3)
    honest = tmp_path / "honest.jsonl"
    _export(session, honest, signing_key)
    result = verify_export(honest, public_key=public_key, older_checkpoint=older_cp)
    assert result.ok and result.older_checkpoint_size == older_cp["size"], result.summary()
    # history rewritten after the fork point (validly signed by the same key!): caught at #size
    fork_point.rollback()
    _populate(session, 9)
    rewritten = tmp_path / "rewritten.jsonl"
    _export(session, rewritten, signing_key)
    assert verify_export(rewritten, public_key=public_key).ok  # on its own it looks fine
    result = verify_export(rewritten, public_key=public_key, older_checkpoint=older_cp)
    assert not result.ok and result.bad_seq == older_cp["size"]
    assert "not an extension" in result.reason  # type: ignore[operator]
    # an export that ends before the older checkpoint (truncated log) is refused too
    short = tmp_path / "short.jsonl"
    lines = read_lines(old)
    manifest_plan = _export(session, short, signing_key, until=plan_time(old_plan) - timedelta(days=3650))
    assert manifest_plan.count == 0
    assert not verify_export(short, public_key=public_key, older_checkpoint=older_cp).ok
    # an older checkpoint signed by another key is refused
    forged_cp = sign_checkpoint(Ed25519PrivateKey.generate(), size=1, head_hash="0" * 64, time=plan_time(old_plan))
    result = verify_export(honest, public_key=public_key, older_checkpoint=forged_cp)
    assert not result.ok and "older checkpoint" in result.reason  # type: ignore[operator]
    assert lines  # the old export itself still verifies
    assert verify_export(old, public_key=public_key).ok


def test_csv_export_verifies_and_tampering_is_caught(
    session: Session, signing_key: Ed25519PrivateKey, public_key: Ed25519PublicKey, tmp_path: Path
) -> None:
    _populate(session, 6)
    path = tmp_path / "audit.csv"
    plan = _export(session, path, signing_key, fmt="csv")
    result = verify_export(path, public_key=public_key)
    assert result.ok and result.count == plan.count, result.summary()
    lines = read_lines(path)
    assert lines[0].startswith("seq,ts,actor")
    # a changed payload byte, in one of this test's own rows (the run's log is shared,
    # so earlier rows may come from other tests)
    k = len(lines) - 2
    bad = lines[k].replace('"i"', '"j"', 1) if '"i"' in lines[k] else lines[k].replace("héllo", "hello")
    assert bad != lines[k]
    write_lines(path, [*lines[:k], bad, *lines[k + 1 :]])
    result = verify_export(path, public_key=public_key)
    assert not result.ok and result.bad_seq == plan.first_seq + k - 1  # type: ignore[operator]
    # a deleted row
    write_lines(path, [*lines[:k], *lines[k + 1 :]])
    result = verify_export(path, public_key=public_key)
    assert not result.ok and result.bad_seq == plan.first_seq + k - 1  # type: ignore[operator]
    # the sidecar is required
    write_lines(path, lines)
    Path(str(path) + ".manifest.json").unlink()
    assert not verify_export(path, public_key=public_key).ok
