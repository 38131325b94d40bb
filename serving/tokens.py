"""Verified tokens: the one place serving turns artifact bytes into something it may serve.

A token is served only if (1) the bytes hash to the sha256 the governance API named,
(2) they parse as an Aligner token artifact, (3) the manifest's base-model digest is the
digest of the model this replica loaded, and (4) every value is finite and the shapes fit
the model. `aligner.artifact` owns the format and checks (2) and (4); this module adds
(1) and (3) and turns every failure into one `TokenVerificationError`.

`ServedToken` is what the engine serves; `ServedRollout` is a running rollout as the engine
applies it: the verified candidate beside the active token, and the two stable draws
(`unit_draw`) that decide which requests get a twin (shadow) and which callers get the
candidate (canary). The candidate passes the same verification as the active token.
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


@dataclass(frozen=True)
class ServedRollout:
    """A rollout as the engine applies it: the verified candidate beside the active token.

    shadow: a request whose draw `unit_draw(f"shadow:{rollout_id}:{request_id}")` is below
    `sample` gets a twin row decoded with the candidate; the user gets the active answer.
    canary: a caller whose draw `unit_draw(f"canary:{rollout_id}:{key}")` (key: the request's
    `user`, else its id) is below `weight` is served by the candidate, and the active token
    decodes the twin. The draw of a key is fixed for a rollout and steps only raise the weight,
    so a caller in the canary stays in it: one caller sees one version.
    """

    rollout_id: int
    mode: str  # "shadow" | "canary"
    candidate: ServedToken
    sample: float = 0.0  # shadow: share of requests decoded twice
    weight: float = 0.0  # canary: share of callers served by the candidate
    step: int = 0

    @property
    def key(self) -> tuple[Any, ...]:
        """What identifies the plan (the candidate's tensors aside)."""
        c = self.candidate
        return (self.rollout_id, self.mode, c.version_id, c.sha256, c.generation, self.sample, self.weight, self.step)

    def shadows(self, request_id: str) -> bool:
        """Whether a shadow rollout decodes a twin of this request."""
        return self.mode == "shadow" and unit_draw(f"shadow:{self.rollout_id}:{request_id}") < self.sample

    def routes_to_candidate(self, key: str) -> bool:
        """Whether a canary serves this caller (the `user` field, else the request id) with the candidate."""
        return self.mode == "canary" and unit_draw(f"canary:{self.rollout_id}:{key}") < self.weight

    def as_dict(self) -> dict[str, Any]:
        return {
            "rollout_id": self.rollout_id,
            "mode": self.mode,
            "version_id": self.candidate.version_id,
            "sha256": self.candidate.sha256,
            "generation": self.candidate.generation,
            "sample": self.sample,
            "weight": self.weight,
            "step": self.step,
        }


def unit_draw(text: str) -> float:
    """A stable uniform number in [0, 1): the first 8 bytes of sha256(text), big-endian, over 2**64."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64


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
