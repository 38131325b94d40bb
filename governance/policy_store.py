"""Policy files as stored text: validate against the policy schema, keep once per sha256.

The sha256 is of the exact UTF-8 bytes uploaded, so the digest a gate or an approval
records can be recomputed from the file a person holds. The schema itself belongs to
`governance.policy` (`parse_policy`); this module adds the size limit, the upload's error
messages and the storage.
"""

from __future__ import annotations

import hashlib
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from governance.errors import InvalidInput
from governance.policy import PolicyError, parse_policy
from governance.registry.models import Policy

MAX_POLICY_BYTES = 256_000


def policy_sha256(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def validate_policy_text(content: str) -> dict[str, Any]:
    """The parsed mapping; InvalidInput says what is wrong with the file."""
    if not content.strip():
        raise InvalidInput("the policy file is empty")
    if len(content.encode("utf-8")) > MAX_POLICY_BYTES:
        raise InvalidInput(f"the policy file is larger than {MAX_POLICY_BYTES} bytes")
    try:
        data = yaml.safe_load(content)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"the policy file is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InvalidInput("the policy file must be a YAML mapping (gate:, monitoring:, ...)")
    try:
        parse_policy(content)
    except PolicyError as exc:  # it lists every bad key with its path
        raise InvalidInput(f"the policy file does not match the policy schema: {exc}") from None
    return data


def store_policy(session: Session, *, content: str) -> Policy:
    """Store a policy file once per sha256 (a re-upload returns the stored row)."""
    validate_policy_text(content)
    sha = policy_sha256(content)
    session.execute(
        pg_insert(Policy).values(sha256=sha, content=content).on_conflict_do_nothing(index_elements=["sha256"])
    )
    policy = session.scalars(select(Policy).where(Policy.sha256 == sha)).one()
    return policy
