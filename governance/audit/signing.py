"""Ed25519 keys and signed statements for the audit log: checkpoints and export manifests.

A checkpoint says "the chain of ``size`` entries ends in ``head_hash``", signed by the
installation's key; an auditor who keeps one can later prove that a newer export extends
it (nothing before it was rewritten) and that an export was not truncated. The signed
message is a fixed prefix plus canonical JSON, so an auditor can rebuild it with the
standard library alone (see docs/audit-export-format.md). This module needs no database.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from governance.audit.canonical import canonical_json, format_ts
from governance.settings import get_settings

CHECKPOINT_PREFIX = "govern-audit-checkpoint/1\n"
MANIFEST_PREFIX = "govern-audit-manifest/1\n"
CHECKPOINT_FIELDS = ("head_hash", "key_id", "size", "time")
PRIVATE_KEY_NAME = "ed25519.key"


class AuditKeyError(ValueError):
    """A key file is missing, unreadable or not an Ed25519 key; the message says what to do."""


def key_id_for(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of sha256 over the 32 raw public key bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_path_for(private_path: Path) -> Path:
    return private_path.with_suffix(".pub")


def default_private_key_path(settings: Any = None) -> Path:
    """``GOVERN_SIGNING_KEY_PATH`` if set, else ``<state>/audit/ed25519.key``."""
    if settings is None:
        settings = get_settings()
    if settings.signing_key_path is not None:
        return Path(settings.signing_key_path)
    return Path(settings.state_path) / "audit" / PRIVATE_KEY_NAME


@dataclass(frozen=True)
class KeyPairFiles:
    private_path: Path
    public_path: Path
    key_id: str


def generate_keypair(private_path: Path, *, force: bool = False) -> KeyPairFiles:
    """Write a new key pair: the private key (PEM PKCS#8, mode 0600) and ``.pub`` beside it.

    Refuses to overwrite an existing key unless ``force``: a lost key means old checkpoints
    can no longer be matched to the installation that signed them.
    """
    private_path = Path(private_path)
    public_path = public_path_for(private_path)
    if not force:
        for p in (private_path, public_path):
            if p.exists():
                raise AuditKeyError(f"{p} already exists; keep it, or pass --force to replace the key pair")
    private_path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    tmp = private_path.with_name(private_path.name + ".tmp")
    # created 0600 from the first byte: never a moment where others can read it
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, private_path)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return KeyPairFiles(private_path, public_path, key_id_for(key.public_key()))


def load_private_key(path: Path) -> Ed25519PrivateKey:
    path = Path(path)
    if not path.exists():
        raise AuditKeyError(
            f"no audit signing key at {path}; run `govern audit keygen` (or set GOVERN_SIGNING_KEY_PATH)"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise AuditKeyError(f"{path} is not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditKeyError(f"{path} is not an Ed25519 key; run `govern audit keygen`")
    return key


def load_signing_key(settings: Any = None) -> Ed25519PrivateKey:
    """The installation's checkpoint key (``GOVERN_SIGNING_KEY_PATH`` or the state folder)."""
    return load_private_key(default_private_key_path(settings))


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A public key from a PEM file (``.pub`` from keygen) or a file holding 64 hex digits."""
    path = Path(path)
    if not path.exists():
        raise AuditKeyError(f"public key file not found: {path}")
    data = path.read_bytes().strip()
    try:
        if data.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(data.decode("ascii")))
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise AuditKeyError(f"{path} is not an Ed25519 public key (PEM or 64 hex digits): {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AuditKeyError(f"{path} is not an Ed25519 public key")
    return key


# --- signed statements -------------------------------------------------------------


def checkpoint_message(*, size: int, head_hash: str, time: str, key_id: str) -> bytes:
    body = canonical_json({"head_hash": head_hash, "key_id": key_id, "size": size, "time": time})
    return (CHECKPOINT_PREFIX + body).encode("utf-8")


def sign_checkpoint(key: Ed25519PrivateKey, *, size: int, head_hash: str, time: datetime) -> dict[str, Any]:
    """The checkpoint record: {record, size, head_hash, time, key_id, signature (hex)}."""
    kid = key_id_for(key.public_key())
    ts = format_ts(time)
    sig = key.sign(checkpoint_message(size=size, head_hash=head_hash, time=ts, key_id=kid))
    return {
        "record": "checkpoint",
        "size": size,
        "head_hash": head_hash,
        "time": ts,
        "key_id": kid,
        "signature": sig.hex(),
    }


def check_signed_checkpoint(cp: Any, public_key: Ed25519PublicKey) -> str | None:
    """None if ``cp`` is a well-formed checkpoint signed by ``public_key``, else why not."""
    if not isinstance(cp, dict):
        return "checkpoint is not a JSON object"
    missing = [f for f in (*CHECKPOINT_FIELDS, "signature") if f not in cp]
    if missing:
        return f"checkpoint lacks {', '.join(missing)}"
    size, head, ts, kid, sig = cp["size"], cp["head_hash"], cp["time"], cp["key_id"], cp["signature"]
    if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
        return "checkpoint size is not a non-negative integer"
    if not all(isinstance(v, str) for v in (head, ts, kid, sig)):
        return "checkpoint fields have the wrong types"
    want = key_id_for(public_key)
    if kid != want:
        return f"checkpoint signed by key {kid}, not by the trusted public key {want}"
    try:
        public_key.verify(bytes.fromhex(sig), checkpoint_message(size=size, head_hash=head, time=ts, key_id=kid))
    except (InvalidSignature, ValueError):
        return "checkpoint signature is invalid (checkpoint altered or forged)"
    return None


def manifest_message(manifest: dict[str, Any]) -> bytes:
    unsigned = {k: v for k, v in manifest.items() if k != "signature"}
    return (MANIFEST_PREFIX + canonical_json(unsigned)).encode("utf-8")


def sign_manifest(key: Ed25519PrivateKey, manifest: dict[str, Any]) -> dict[str, Any]:
    """Return the manifest with ``key_id`` and ``signature`` (hex) added."""
    out = dict(manifest, key_id=key_id_for(key.public_key()))
    out.pop("signature", None)
    out["signature"] = key.sign(manifest_message(out)).hex()
    return out


def check_signed_manifest(manifest: dict[str, Any], public_key: Ed25519PublicKey) -> str | None:
    kid, sig = manifest.get("key_id"), manifest.get("signature")
    if not isinstance(kid, str) or not isinstance(sig, str):
        return "manifest is not signed (no key_id/signature)"
    want = key_id_for(public_key)
    if kid != want:
        return f"manifest signed by key {kid}, not by the trusted public key {want}"
    try:
        public_key.verify(bytes.fromhex(sig), manifest_message(manifest))
    except (InvalidSignature, ValueError):
        return "manifest signature is invalid (manifest altered)"
    return None
