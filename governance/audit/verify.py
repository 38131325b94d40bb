"""Offline verification of an audit export: no database, no network, one pass, constant memory.

``verify_export`` walks the file once and stops at the first problem, naming the first bad
sequence number and why. It checks, in order: the signed manifest (range, count, first
previous hash, last hash), every entry (gapless ``seq``, ``prev_hash`` equal to the hash
of the entry before it, ``hash = sha256(prev_hash || entry JSON)`` over the exact bytes in
the file), that the file ends where the manifest says, and that the signed checkpoint at
the end names the last entry and its hash. Given an older checkpoint an auditor kept, it
also checks that this export extends it (entry ``#size`` still has that head hash).
The file layout is described in docs/audit-export-format.md.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from governance.audit.canonical import GENESIS_HASH, body_from_stored
from governance.audit.signing import check_signed_checkpoint, check_signed_manifest, key_id_for

FORMAT_NAME = "govern-audit-export"
FORMAT_VERSION = 1
CSV_COLUMNS = (
    "seq",
    "ts",
    "actor",
    "actor_key_id",
    "action",
    "subject_type",
    "subject_id",
    "payload",
    "prev_hash",
    "hash",
)
CSV_SIDECAR_SUFFIX = ".manifest.json"

# An entry line is exactly  {"prev_hash":"<64 hex>","hash":"<64 hex>","entry":<entry JSON>}
# so the hashed bytes can be cut out of the line without re-encoding anything.
_P0 = len('{"prev_hash":"')
_P1 = _P0 + 64
_H0 = _P1 + len('","hash":"')
_H1 = _H0 + 64
_B0 = _H1 + len('","entry":')
ENTRY_LINE_PREFIX = '{"prev_hash":"'


def entry_line(prev_hash: str, hash_: str, body: str) -> str:
    """One JSONL entry line (with its newline), the layout ``verify_export`` expects."""
    return f'{{"prev_hash":"{prev_hash}","hash":"{hash_}","entry":{body}}}\n'


def csv_sidecar_path(path: Path) -> Path:
    return Path(str(path) + CSV_SIDECAR_SUFFIX)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    path: str
    count: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head_hash: str | None = None
    key_id: str | None = None
    bad_seq: int | None = None
    reason: str | None = None
    older_checkpoint_size: int | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.ok:
            rng = f"#{self.first_seq}..#{self.last_seq}" if self.count else "no entries"
            text = f"OK: {self.count} entries ({rng}), head {self.head_hash}, signed by key {self.key_id}"
            if self.older_checkpoint_size is not None:
                text += f"; extends the older checkpoint at #{self.older_checkpoint_size}"
            return text
        where = f"at #{self.bad_seq}" if self.bad_seq is not None else "(file level)"
        return f"FAILED {where}: {self.reason}"


class _Bad(Exception):
    def __init__(self, seq: int | None, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


def load_checkpoint_file(path: Path) -> dict[str, Any]:
    """An older checkpoint: a checkpoint JSON file, a CSV sidecar, or a whole JSONL export."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such file", str(path))
    size = path.stat().st_size
    with path.open("rb") as f:
        # an export can be huge; its checkpoint is the last line, so its tail is enough
        f.seek(max(0, size - 65536))
        text = f.read().decode("utf-8", errors="replace")
    candidates: list[str] = [text] if size <= 65536 else []
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if lines:
        candidates.append(lines[-1])
    for cand in candidates:
        try:
            obj = json.loads(cand)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("record") == "checkpoint":
            return obj
        if isinstance(obj, dict) and isinstance(obj.get("checkpoint"), dict):
            return dict(obj["checkpoint"])
    raise ValueError(f"{path} holds no audit checkpoint (expected a checkpoint JSON object or an export file)")


def _read_manifest_line(line: str) -> dict[str, Any]:
    try:
        manifest = json.loads(line)
    except ValueError:
        raise _Bad(None, "the first line is not a JSON manifest") from None
    if not isinstance(manifest, dict) or manifest.get("record") != "manifest":
        raise _Bad(None, "the first line is not the manifest (record != 'manifest')")
    return manifest


def _check_manifest(manifest: dict[str, Any], public_key: Ed25519PublicKey) -> None:
    if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
        raise _Bad(
            None,
            f"unsupported export format {manifest.get('format')!r} v{manifest.get('format_version')!r} "
            f"(this verifier reads {FORMAT_NAME} v{FORMAT_VERSION})",
        )
    problem = check_signed_manifest(manifest, public_key)
    if problem:
        raise _Bad(None, problem)
    count = manifest.get("count")
    if not isinstance(count, int) or count < 0:
        raise _Bad(None, "manifest count is not a non-negative integer")
    if count:
        first, last = manifest.get("first_seq"), manifest.get("last_seq")
        if not (isinstance(first, int) and isinstance(last, int) and last - first + 1 == count):
            raise _Bad(None, "manifest range and count disagree")


def _jsonl_entries(lines: Iterator[str], holder: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """Yield (prev_hash, hash, entry_text) per entry line; park the checkpoint in ``holder``."""
    for ln in lines:
        if ln.endswith("\n"):
            ln = ln[:-2] if ln.endswith("\r\n") else ln[:-1]
        if ln.startswith(ENTRY_LINE_PREFIX):
            if "checkpoint" in holder:
                yield "", "", "\0after-checkpoint"
                return
            if len(ln) > _B0 + 1 and ln[-1] == "}" and ln[_P1:_H0] == '","hash":"' and ln[_H1:_B0] == '","entry":':
                yield ln[_P0:_P1], ln[_H0:_H1], ln[_B0:-1]
            else:
                yield "", "", "\0malformed"
            continue
        if not ln.strip():
            continue
        try:
            obj = json.loads(ln)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and obj.get("record") == "checkpoint" and "checkpoint" not in holder:
            holder["checkpoint"] = obj
            continue
        yield "", "", "\0after-checkpoint" if "checkpoint" in holder else "\0malformed"
        return


def _csv_entries(rows: Iterator[list[str]]) -> Iterator[tuple[str, str, str]]:
    for row in rows:
        if len(row) != len(CSV_COLUMNS):
            yield "", "", "\0malformed"
            continue
        seq, ts, actor, key_id, action, subject_type, subject_id, payload, prev_hash, hash_ = row
        try:
            seq_i = int(seq)
        except ValueError:
            yield "", "", "\0malformed"
            continue
        body = body_from_stored(
            seq=seq_i,
            ts=ts,
            actor=actor,
            actor_key_id=key_id or None,
            action=action,
            subject_type=subject_type,
            subject_id=subject_id,
            payload_text=payload,
        )
        yield prev_hash, hash_, body


def _walk(
    entries: Iterator[tuple[str, str, str]],
    manifest: dict[str, Any],
    older_size: int | None,
) -> tuple[int, str | None, str | None]:
    """The hot loop: returns (count, last hash, hash at ``older_size`` if seen)."""
    sha256 = hashlib.sha256
    count = 0
    if not manifest["count"]:
        for _ in entries:
            raise _Bad(None, "the manifest lists no entries but the file has some")
        return 0, None, None
    exp: int = manifest["first_seq"]
    last_seq: int = manifest["last_seq"]
    prev = manifest.get("first_prev_hash")
    older_hash = None
    for p, h, body in entries:
        if body.startswith("\0"):
            what = "a line after the checkpoint" if body == "\0after-checkpoint" else "a malformed entry line"
            raise _Bad(exp, f"{what} where entry #{exp} was expected")
        # The top-level "seq" is the last key before three string values, and a string
        # cannot hold a bare `,"seq":` (its quotes are escaped), so rfind finds the right one;
        # no full parse needed: the hash check below covers every byte of the entry anyway.
        i = body.rfind(',"seq":') + 7
        try:
            seq = int(body[i : body.index(",", i)]) if i > 6 else None
        except ValueError:
            seq = None
        if seq is None:
            raise _Bad(exp, "the entry has no readable seq (malformed entry)")
        if exp > last_seq:
            raise _Bad(exp, f"an entry (#{seq}) lies beyond the manifest's last entry #{last_seq}")
        if seq != exp:
            if seq < exp:
                raise _Bad(exp, f"found #{seq} where #{exp} was expected: entries reordered or duplicated")
            raise _Bad(exp, f"found #{seq} where #{exp} was expected: entry #{exp} deleted or entries reordered")
        if p != prev:
            where = "the manifest's first_prev_hash" if count == 0 else f"the hash of #{exp - 1}"
            raise _Bad(exp, f"prev_hash differs from {where}: an entry was inserted, removed or altered")
        if sha256((p + body).encode("utf-8")).hexdigest() != h:
            raise _Bad(exp, "hash mismatch: the entry's content (or its hash) was changed")
        if exp == older_size:
            older_hash = h
        prev = h
        exp += 1
        count += 1
    if count < manifest["count"]:
        raise _Bad(exp, f"the file ends after {count} entries but the manifest lists up to #{last_seq}: truncated tail")
    if prev != manifest.get("last_hash"):
        raise _Bad(last_seq, "last hash differs from the manifest's last_hash")
    return count, prev, older_hash


def verify_export(
    path: Path,
    *,
    public_key: Ed25519PublicKey,
    older_checkpoint: dict[str, Any] | None = None,
) -> VerifyResult:
    """Verify an export file (JSONL; or CSV with its ``.manifest.json`` sidecar)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such file", str(path))
    try:
        return _verify(path, public_key, older_checkpoint)
    except _Bad as bad:
        return VerifyResult(ok=False, path=str(path), bad_seq=bad.seq, reason=bad.reason)
    except UnicodeDecodeError:
        return VerifyResult(ok=False, path=str(path), reason="the file is not valid UTF-8 (bytes were altered)")


def _verify(path: Path, public_key: Ed25519PublicKey, older: dict[str, Any] | None) -> VerifyResult:
    older_size: int | None = None
    if older is not None:
        problem = check_signed_checkpoint(older, public_key)
        if problem:
            raise _Bad(None, f"older checkpoint: {problem}")
        older_size = older["size"]
    is_csv = path.suffix.lower() == ".csv"
    holder: dict[str, Any] = {}
    # newline="\n": split lines on LF only; JSON leaves U+2028/U+0085 unescaped inside strings
    with path.open(encoding="utf-8", newline="" if is_csv else "\n") as f:
        if is_csv:
            sidecar = csv_sidecar_path(path)
            if not sidecar.exists():
                raise _Bad(None, f"the CSV export's manifest {sidecar.name} is missing beside it")
            try:
                meta = json.loads(sidecar.read_text(encoding="utf-8"))
                manifest, holder["checkpoint"] = meta["manifest"], meta["checkpoint"]
            except (ValueError, KeyError, TypeError):
                raise _Bad(None, f"{sidecar.name} is not a manifest + checkpoint JSON object") from None
            if not isinstance(manifest, dict):
                raise _Bad(None, f"{sidecar.name} holds no manifest object")
            _check_manifest(manifest, public_key)
            reader = csv.reader(f)
            if tuple(next(reader, ())) != CSV_COLUMNS:
                raise _Bad(None, f"the CSV header is not {','.join(CSV_COLUMNS)}")
            entries = _csv_entries(reader)
        else:
            manifest = _read_manifest_line(f.readline())
            _check_manifest(manifest, public_key)
            entries = _jsonl_entries(f, holder)
        count, head, older_hash = _walk(entries, manifest, older_size)
    first, last = manifest.get("first_seq"), manifest.get("last_seq")
    cp = holder.get("checkpoint")
    if cp is None:
        raise _Bad((last or 0) + 1 if count else None, "no signed checkpoint at the end of the file: truncated tail")
    problem = check_signed_checkpoint(cp, public_key)
    if problem:
        raise _Bad(None, problem)
    if count:
        assert isinstance(last, int) and isinstance(first, int)
        if cp["size"] > last:
            raise _Bad(last + 1, f"the checkpoint covers #{cp['size']} but the file ends at #{last}: truncated tail")
        if cp["size"] < last:
            raise _Bad(cp["size"] + 1, f"entries after #{cp['size']} are not covered by the signed checkpoint")
        if cp["head_hash"] != head:
            raise _Bad(
                last,
                "the head hash differs from the signed checkpoint: an entry at or before "
                f"#{last} was forged or altered and the later hashes recomputed",
            )
    if older is not None and older_size is not None:
        _check_extension(older, older_size, older_hash, manifest, count)
    return VerifyResult(
        ok=True,
        path=str(path),
        count=count,
        first_seq=first if count else None,
        last_seq=last if count else None,
        head_hash=head if count else cp["head_hash"],
        key_id=key_id_for(public_key),
        older_checkpoint_size=older_size,
    )


def _check_extension(
    older: dict[str, Any], size: int, seen_hash: str | None, manifest: dict[str, Any], count: int
) -> None:
    """The export must contain (or start right after) entry #size with the older head hash."""
    if size == 0:
        if older["head_hash"] != GENESIS_HASH:
            raise _Bad(None, "older checkpoint at size 0 must name the genesis hash")
        return
    if not count:
        raise _Bad(None, f"this export has no entries, so it cannot show it extends the checkpoint at #{size}")
    first, last = manifest["first_seq"], manifest["last_seq"]
    if size > last:
        raise _Bad(
            last + 1,
            f"the older checkpoint covers #{size} but this export ends at #{last}: "
            "the log was truncated, or this export is older than the checkpoint",
        )
    if size == first - 1:
        seen_hash = manifest.get("first_prev_hash")
    elif size < first - 1:
        raise _Bad(
            None, f"this export starts at #{first}, after the older checkpoint's #{size}; export an earlier range"
        )
    if seen_hash != older["head_hash"]:
        raise _Bad(
            size,
            f"entry #{size} has a different hash than the older checkpoint records: "
            "this export is not an extension of it (history was rewritten)",
        )
