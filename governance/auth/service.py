"""Users, API keys and the principal a request acts as.

A key looks like ``gov_<prefix>_<secret>``: the 8-character prefix is shown in lists
and written to the audit log as ``actor_key_id``; only the SHA-256 of the whole key is
stored, so a database dump does not hand out credentials. Unknown, revoked, expired
and disabled-user keys all fail the same way (`authenticate` returns None), so a
caller cannot probe which keys exist. `key_is_valid` is the one statement of those rules;
the dashboard's session check (`principal_for_key_prefix`) applies them too.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from governance.audit import service as audit
from governance.auth.models import ApiKey, User
from governance.db import utcnow
from governance.errors import Conflict, InvalidInput, NotFound
from governance.principal import Principal
from governance.roles import ROLE_VALUES

KEY_PREFIX = "gov"
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
# last_used_at is a convenience, not an audit record: write it at most once a minute per key
_LAST_USED_RESOLUTION = timedelta(seconds=60)


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


def generate_key() -> tuple[str, str, str]:
    """A fresh key: (the key to show once, its display prefix, its stored hash)."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(8))
    raw = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    return raw, prefix, hash_key(raw)


def _check_role(role: str) -> str:
    if role not in ROLE_VALUES:
        raise InvalidInput(f"unknown role {role!r}; use one of: {', '.join(ROLE_VALUES)}")
    return role


def get_user(session: Session, *, name: str) -> User | None:
    return session.scalars(select(User).where(User.name == name)).first()


def get_user_or_raise(session: Session, *, name: str) -> User:
    user = get_user(session, name=name)
    if user is None:
        raise NotFound(f"no user named {name!r}")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))


def _issue_key(session: Session, *, user: User, expires_at: datetime | None) -> tuple[ApiKey, str]:
    # A prefix collision (1 in 36^8 per pair) would violate the unique index; draw again.
    for _ in range(5):
        raw, prefix, digest = generate_key()
        if session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is None:
            key = ApiKey(user_id=user.id, prefix=prefix, key_hash=digest, expires_at=expires_at)
            session.add(key)
            session.flush()
            return key, raw
    raise Conflict("could not draw a unique key prefix; try again")


def create_user(
    session: Session, *, name: str, role: str, actor: str, actor_key_id: str | None = None
) -> tuple[User, str]:
    """Create a user with one API key; returns the user and the key (shown once, never stored)."""
    name = name.strip()
    if not name or len(name) > 100 or any(c.isspace() for c in name):
        raise InvalidInput("a user name is 1-100 characters without spaces")
    _check_role(role)
    if get_user(session, name=name) is not None:
        raise Conflict(f"a user named {name!r} already exists")
    user = User(name=name, role=role)
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a user named {name!r} already exists") from None
    key, raw = _issue_key(session, user=user, expires_at=None)
    audit.append(
        session,
        actor=actor,
        actor_key_id=actor_key_id,
        action="user.create",
        subject_type="user",
        subject_id=name,
        payload={"role": role, "key_prefix": key.prefix},
    )
    return user, raw


def create_key(
    session: Session, *, user_name: str, principal: Principal, expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    user = get_user_or_raise(session, name=user_name)
    if user.disabled_at is not None:
        raise Conflict(f"user {user_name!r} is disabled")
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput("expires_at is in the past")
    key, raw = _issue_key(session, user=user, expires_at=expires_at)
    audit.record(
        session,
        principal,
        action="key.create",
        subject_type="user",
        subject_id=user.name,
        payload={"key_prefix": key.prefix, "expires_at": expires_at},
    )
    return key, raw


def revoke_key(session: Session, *, prefix: str, principal: Principal) -> ApiKey:
    key = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix).with_for_update()).first()
    if key is None:
        raise NotFound(f"no API key with prefix {prefix!r}")
    if key.revoked_at is not None:
        raise Conflict(f"API key {prefix!r} is already revoked")
    key.revoked_at = utcnow()
    user = session.get(User, key.user_id)
    audit.record(
        session,
        principal,
        action="key.revoke",
        subject_type="user",
        subject_id=user.name if user else str(key.user_id),
        payload={"key_prefix": prefix},
    )
    return key


def list_keys(session: Session, *, user_name: str | None = None) -> list[tuple[ApiKey, User]]:
    stmt = select(ApiKey, User).join(User, User.id == ApiKey.user_id).order_by(ApiKey.id)
    if user_name is not None:
        stmt = stmt.where(User.name == user_name)
    return [(k, u) for k, u in session.execute(stmt).tuples()]


def authenticate(session: Session, *, raw_key: str) -> Principal | None:
    """The principal of a presented key, or None for any key that must not work."""
    parts = raw_key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 8:
        return None
    row = session.execute(
        select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.key_hash == hash_key(raw_key))
    ).first()
    if row is None:
        return None
    key, user = row
    now = utcnow()
    # the hash is unique, but compare the prefix too: a cheap guard against a mangled key
    if key.prefix != parts[1] or not key_is_valid(key, user, now):
        return None
    if key.last_used_at is None or now - key.last_used_at > _LAST_USED_RESOLUTION:
        session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
    return _principal(key, user)


def key_is_valid(key: ApiKey, user: User, now: datetime) -> bool:
    """A key works while it is not revoked, not expired and its user is not disabled."""
    if key.revoked_at is not None or user.disabled_at is not None:
        return False
    return key.expires_at is None or key.expires_at > now


def principal_for_key_prefix(session: Session, *, prefix: str, user_id: int) -> Principal | None:
    """The principal of the key a dashboard session names, while that key is valid for that user."""
    row = session.execute(
        select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.prefix == prefix)
    ).first()
    if row is None:
        return None
    key, user = row
    if user.id != user_id or not key_is_valid(key, user, utcnow()):
        return None
    return _principal(key, user)


def _principal(key: ApiKey, user: User) -> Principal:
    return Principal(name=user.name, role=user.role, user_id=user.id, key_prefix=key.prefix)


def user_names(session: Session, ids: set[int | None]) -> dict[int, str]:
    """The names of the users with these ids (None and unknown ids are left out), in one query."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return {uid: name for uid, name in session.execute(select(User.id, User.name).where(User.id.in_(wanted))).tuples()}
