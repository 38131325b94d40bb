"""HMAC-SHA256 on the messages published on the deployment channels, for both ends.

The control plane signs each promotion or rollback message as it publishes it
(`governance.outbox.service`) and every serving replica verifies it on receipt
(`serving.watcher`), so whoever can PUBLISH on Redis without holding the push secret
(``GOVERN_PUSH_SECRET``) cannot make a replica adopt anything. The MAC covers canonical
bytes: the JSON array ``[channel, payload]`` with sorted keys and no spaces, the payload
taken without its ``mac`` field, so a message is bound to its deployment's channel and
cannot be replayed on another one. During a rotation a replica accepts any of the
secrets it is given (the current and the previous one); signing always uses the current.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

MAC_FIELD = "mac"
# Why a message was refused (the `reason` label of the replica's push_rejected counter).
MISSING = "missing_mac"
INVALID = "bad_mac"  # tampered, another channel, or signed with a secret this replica does not hold
MALFORMED = "malformed"

_HEX_MAC = re.compile(r"[0-9a-f]{64}")


def canonical_bytes(payload: Mapping[str, Any], channel: str) -> bytes:
    """What the MAC covers: ``[channel, payload without its MAC]``, sorted-key compact JSON."""
    body = {k: v for k, v in payload.items() if k != MAC_FIELD}
    return json.dumps([channel, body], sort_keys=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def _mac(data: bytes, secret: str) -> str:
    return hmac.new(secret.encode("utf-8"), data, hashlib.sha256).hexdigest()


def sign(payload: Mapping[str, Any], channel: str, secret: str) -> dict[str, Any]:
    """The message to publish on `channel`: `payload` plus its MAC under `secret`."""
    if not secret:
        raise ValueError("no push secret to sign with")
    body = {k: v for k, v in payload.items() if k != MAC_FIELD}
    return {**body, MAC_FIELD: _mac(canonical_bytes(body, channel), secret)}


def verify(message: Any, channel: str, secrets: Iterable[str]) -> str | None:
    """None when `message` carries a valid MAC for `channel` under one of `secrets`; else why not."""
    if not isinstance(message, Mapping):
        return MALFORMED
    mac = message.get(MAC_FIELD)
    if mac is None or mac == "":
        return MISSING
    if not isinstance(mac, str) or not _HEX_MAC.fullmatch(mac):
        return INVALID
    try:
        data = canonical_bytes(message, channel)
    except (TypeError, ValueError):  # NaN or Infinity: never what the control plane signs
        return MALFORMED
    # every secret is tried (no early exit), each comparison in constant time
    matches = [hmac.compare_digest(_mac(data, s), mac) for s in secrets if s]
    return None if any(matches) else INVALID
