"""Production outputs as replicas report them (a batch per request)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from governance.schemas import Out, StrictIn

MAX_MESSAGES = 500  # chat turns of one request
MAX_OUTPUT_CHARS = 200_000  # one completion; the batch body limit bounds the total


class OutputIn(StrictIn):
    request_id: str = Field(min_length=1, max_length=100, description="unique per deployment; replays are ignored")
    version_id: int | None = Field(None, ge=1)
    sha256: str | None = Field(None, min_length=64, max_length=64, description="instead of version_id")
    generation: int = Field(0, ge=0)
    messages: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_MESSAGES)
    output: str = Field("", max_length=MAX_OUTPUT_CHARS)
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    latency_ms: float = Field(0.0, ge=0)
    created_at: datetime | None = None
    rollout_id: int | None = Field(None, ge=1, description="the rollout this answer is half of a pair in")
    twin_of: str | None = Field(None, min_length=1, max_length=100,
                                description="the unreturned answer of a pair: its served twin's request id")


class IngestIn(StrictIn):
    outputs: list[OutputIn]


class IngestResult(Out):
    accepted: int
    duplicates: int
