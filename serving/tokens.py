"""Verified tokens: the one place serving turns artifact bytes into something it may serve.

A token is served only if (1) the bytes hash to the sha256 the governance API named,
(2) they parse as an Aligner token artifact, (3) the manifest's base-model digest is the
digest of the model this replica loaded, and (4) every value is finite and the shapes fit
the model. `aligner.artifact` owns the format and checks (2) and (4); this module adds
(1) and (3) and turns every failure into one `TokenVerificationError`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from aligner.artifact import AlignerToken
from aligner.model import ModelShape


class TokenVerificationError(ValueError):
    """The artifact must not be served; the message says why."""


@dataclass(frozen=True)
class ServedToken:
    """What the engine serves: a verified token (or None = bare base model) and where it came from."""

    version_id: int | None
    sha256: str | None
    generation: int
    token: Any = None  # an object with .prefix (n, d) and .gates (L, H), or None for the base model

    @property
    def version_label(self) -> str:
        return str(self.version_id) if self.version_id is not None else "base"

    @property
    def fingerprint(self) -> str:
        return f"govern-v{self.version_label}-g{self.generation}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_artifact(data: bytes, *, expected_sha256: str, base_digest: str, shape: ModelShape) -> Any:
    """Return the parsed token, or raise TokenVerificationError saying which check failed."""
    actual = sha256_hex(data)
    if actual != expected_sha256:
        raise TokenVerificationError(f"artifact digest mismatch: expected {expected_sha256[:12]}…, got {actual[:12]}…")
    try:
        token = AlignerToken.from_bytes(data)
    except Exception as exc:  # aligner's InvalidTokenError and foreign bytes alike: never served
        raise TokenVerificationError(f"artifact does not parse as an Aligner token: {exc}") from None
    try:
        # Shapes against this model and the manifest's base-model digest against the one loaded.
        token.validate_against(shape, base_digest)
    except Exception as exc:
        raise TokenVerificationError(str(exc)) from None
    return token
