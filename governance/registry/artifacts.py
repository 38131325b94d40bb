"""A thin adapter between the registry and the Aligner token artifact format (`aligner.artifact`).

The registry needs four things from uploaded bytes before it stores anything: that they
parse as a token archive, the base-model digest the manifest names, that the shapes fit
that base model's config, and that every value is finite (`AlignerToken.from_bytes`
checks format, shapes against the manifest, dtypes and finiteness). Every failure is an
`InvalidInput` whose message says what was wrong. Keeping this in one file means a
change of the artifact format touches the registry here only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from governance.errors import InvalidInput


@dataclass(frozen=True)
class ParsedArtifact:
    sha256: str
    manifest: dict[str, Any]
    base_model_digest: str
    n_tokens: int
    param_count: int
    data_digest: str | None
    token: Any  # aligner.artifact.AlignerToken


def parse_artifact(data: bytes) -> ParsedArtifact:
    """Parse and self-validate the bytes (no base-model check yet)."""
    from aligner.artifact import AlignerToken  # defers torch (the aligner package imports it)
    from aligner.errors import AlignerError  # defers torch (the aligner package imports it)

    if not data:
        raise InvalidInput("the artifact is empty")
    try:
        token = AlignerToken.from_bytes(data)
    except AlignerError as exc:
        raise InvalidInput(f"the artifact is not a valid Aligner token: {exc}") from None
    m = token.manifest
    return ParsedArtifact(
        sha256=hashlib.sha256(data).hexdigest(),
        manifest=m.to_dict(),
        base_model_digest=m.base_model_digest,
        n_tokens=m.n_tokens,
        param_count=m.param_count,
        data_digest=m.data_digest,
        token=token,
    )


def check_against_base_model(parsed: ParsedArtifact, base_model_config: dict[str, Any]) -> None:
    """The token's shapes must fit the base model's config (hidden_size, num_layers, num_heads)."""
    from aligner.errors import AlignerError  # defers torch (the aligner package imports it)

    try:
        parsed.token.validate_against(base_model_config)
    except AlignerError as exc:
        raise InvalidInput(f"the artifact does not fit its base model: {exc}") from None


def parse_and_validate(data: bytes, base_model_config: dict[str, Any]) -> ParsedArtifact:
    parsed = parse_artifact(data)
    check_against_base_model(parsed, base_model_config)
    return parsed
