"""Policy files as stored text: parse, validate when the policy schema is available, keep with sha256.

The sha256 is of the exact UTF-8 bytes uploaded, so the digest a gate or an approval
records can be recomputed from the file a person holds. The schema itself belongs to
`governance.policy`; when that module offers a validator we call it, otherwise any
YAML mapping is accepted (and validated when the gate loads it).
"""

from __future__ import annotations

import hashlib
import importlib
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from governance.errors import InvalidInput, NotFound
from governance.registry.models import Policy

MAX_POLICY_BYTES = 256_000


def policy_sha256(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def _schema_validator() -> Any | None:
    try:
        mod = importlib.import_module("governance.policy")
    except ImportError:
        return None
    load = getattr(mod, "load_policy", None)
    if not callable(load):
        return None
    # bytes, never str: load_policy reads a one-line "*.yaml" string as a file path
    return lambda content: load(content.encode("utf-8"))


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
    validator = _schema_validator()
    if validator is not None:
        try:
            validator(content)
        except ValueError as exc:  # PolicyError lists every bad key with its path
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


def get_policy(session: Session, *, policy_id: int) -> Policy:
    policy = session.get(Policy, policy_id)
    if policy is None:
        raise NotFound(f"no policy {policy_id}")
    return policy
