"""Users, API keys and the principal a request acts as.

A key looks like ``gov_<prefix>_<secret>``: the 8-character prefix is shown in lists
and written to the audit log as ``actor_key_id``; only the SHA-256 of the whole key is
stored, so a database dump does not hand out credentials. Unknown, revoked, expired
and disabled-user keys all fail the same way (`authenticate` returns None), so a
caller cannot probe which keys exist. `key_is_valid` is the one statement of those rules;
the dashboard's session check (`principal_for_key_prefix`) applies them too, so disabling
a user stops every key and ends their web sessions at the next request.

A service key is bound at creation to the deployments it may act on (the principal's
``deployments``); keys of other roles are never bound. Rotating a key issues a new one
with the same scope and leaves the old one valid for an overlap of at most
`MAX_ROTATION_OVERLAP`.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from governance.audit import service as audit
from governance.auth.models import ApiKey, ApiKeyDeployment, User
from governance.db import utcnow
from governance.deployments import service as deployments
from governance.errors import Conflict, InvalidInput, NotFound
from governance.principal import Principal
from governance.roles import ROLE_VALUES, Role

KEY_PREFIX = "gov"
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
# last_used_at is a convenience, not an audit record: write it at most once a minute per key
_LAST_USED_RESOLUTION = timedelta(seconds=60)
# how long a rotated key may keep working next to its successor
MAX_ROTATION_OVERLAP = timedelta(days=7)


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


def _check_scope(session: Session, *, role: str, scope: Sequence[str]) -> list[str]:
    """The deployments a new key of this role is bound to: one or more for a service key, none otherwise."""
    names = sorted({d.strip() for d in scope})
    if role != Role.service.value:
        if names:
            raise InvalidInput(f"only service keys are bound to deployments (this user's role is {role})")
        return []
    if not names:
        raise InvalidInput("a service key must be bound to at least one deployment (--deployment NAME)")
    for name in names:
        deployments.get_deployment_or_raise(session, name=name)
    return names


def _issue_key(
    session: Session, *, user: User, expires_at: datetime | None, scope: Sequence[str]
) -> tuple[ApiKey, str]:
    # A prefix collision (1 in 36^8 per pair) would violate the unique index; draw again.
    for _ in range(5):
        raw, prefix, digest = generate_key()
        if session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is None:
            key = ApiKey(user_id=user.id, prefix=prefix, key_hash=digest, expires_at=expires_at)
            session.add(key)
            session.flush()
            session.add_all(ApiKeyDeployment(key_id=key.id, deployment=d) for d in scope)
            session.flush()
            return key, raw
    raise Conflict("could not draw a unique key prefix; try again")


def create_user(
    session: Session,
    *,
    name: str,
    role: str,
    actor: str,
    actor_key_id: str | None = None,
    deployments: Sequence[str] = (),
) -> tuple[User, str]:
    """Create a user with one API key; returns the user and the key (shown once, never stored).

    A service user's key is bound to ``deployments`` (at least one); other roles take none.
    """
    name = name.strip()
    if not name or len(name) > 100 or any(c.isspace() for c in name):
        raise InvalidInput("a user name is 1-100 characters without spaces")
    _check_role(role)
    scope = _check_scope(session, role=role, scope=deployments)
    if get_user(session, name=name) is not None:
        raise Conflict(f"a user named {name!r} already exists")
    user = User(name=name, role=role)
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a user named {name!r} already exists") from None
    key, raw = _issue_key(session, user=user, expires_at=None, scope=scope)
    payload: dict[str, object] = {"role": role, "key_prefix": key.prefix}
    if scope:
        payload["deployments"] = scope
    audit.append(
        session,
        actor=actor,
        actor_key_id=actor_key_id,
        action="user.create",
        subject_type="user",
        subject_id=name,
        payload=payload,
    )
    return user, raw


def create_key(
    session: Session,
    *,
    user_name: str,
    principal: Principal,
    expires_at: datetime | None = None,
    deployments: Sequence[str] = (),
) -> tuple[ApiKey, str]:
    """Another key for a user; a service user's key names its deployments."""
    user = get_user_or_raise(session, name=user_name)
    if user.disabled_at is not None:
        raise Conflict(f"user {user_name!r} is disabled")
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput("expires_at is in the past")
    scope = _check_scope(session, role=user.role, scope=deployments)
    key, raw = _issue_key(session, user=user, expires_at=expires_at, scope=scope)
    audit.record(
        session,
        principal,
        action="key.create",
        subject_type="user",
        subject_id=user.name,
        payload={"key_prefix": key.prefix, "expires_at": expires_at, "deployments": scope or None},
    )
    return key, raw


@dataclass(frozen=True)
class Rotation:
    new_key: ApiKey
    raw: str
    old_key: ApiKey


def rotate_key(
    session: Session,
    *,
    prefix: str,
    principal: Principal,
    overlap: timedelta,
    expires_at: datetime | None = None,
) -> Rotation:
    """A new key for the same user and deployments; the old one keeps working for ``overlap``
    (0 to `MAX_ROTATION_OVERLAP`), or less if it expires sooner anyway."""
    if overlap < timedelta(0) or overlap > MAX_ROTATION_OVERLAP:
        raise InvalidInput(f"the overlap is 0 to {MAX_ROTATION_OVERLAP.days} days (got {overlap})")
    now = utcnow()
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("expires_at is in the past")
    old = _lock_key(session, prefix=prefix)
    user = session.get(User, old.user_id)
    assert user is not None  # the foreign key says so
    if not key_is_valid(old, user, now):
        raise Conflict(f"API key {prefix!r} no longer works (revoked, expired or its user disabled); issue a new one")
    scope = key_scopes(session, key_ids={old.id}).get(old.id, [])
    if user.role == Role.service.value and not scope:
        raise Conflict(f"API key {prefix!r} is not bound to a deployment; issue a new key with --deployment")
    new, raw = _issue_key(session, user=user, expires_at=expires_at, scope=scope)
    old_until = now + overlap
    old.expires_at = old_until if old.expires_at is None else min(old.expires_at, old_until)
    audit.record(
        session,
        principal,
        action="key.rotate",
        subject_type="user",
        subject_id=user.name,
        payload={"old_key_prefix": old.prefix, "old_key_expires_at": old.expires_at, "key_prefix": new.prefix,
                 "expires_at": expires_at, "deployments": scope or None},
    )
    return Rotation(new, raw, old)


def _lock_key(session: Session, *, prefix: str) -> ApiKey:
    key = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix).with_for_update()).first()
    if key is None:
        raise NotFound(f"no API key with prefix {prefix!r}")
    return key


def set_disabled(session: Session, *, name: str, disabled: bool, principal: Principal) -> User:
    """Disable a user (every key stops at once, web sessions end at the next request) or enable them again.

    Enabling gives back the keys that are neither revoked nor expired. An admin cannot
    disable themselves, so the last admin cannot lock everyone out by mistake.
    """
    user = session.scalars(select(User).where(User.name == name).with_for_update()).first()
    if user is None:
        raise NotFound(f"no user named {name!r}")
    if disabled and principal.user_id == user.id:
        raise Conflict("you cannot disable yourself; ask another admin")
    if disabled == (user.disabled_at is not None):
        raise Conflict(f"user {name!r} is already {'disabled' if disabled else 'enabled'}")
    user.disabled_at = utcnow() if disabled else None
    live = [k.prefix for k in user.keys if k.revoked_at is None]
    audit.record(
        session,
        principal,
        action="user.disable" if disabled else "user.enable",
        subject_type="user",
        subject_id=user.name,
        payload={"role": user.role, "key_prefixes": live},
    )
    return user


def revoke_key(session: Session, *, prefix: str, principal: Principal) -> ApiKey:
    key = _lock_key(session, prefix=prefix)
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


def key_scopes(session: Session, *, key_ids: set[int]) -> dict[int, list[str]]:
    """The deployments each of these keys is bound to (keys bound to none are left out), in one query."""
    if not key_ids:
        return {}
    out: dict[int, list[str]] = {}
    rows = session.execute(
        select(ApiKeyDeployment.key_id, ApiKeyDeployment.deployment)
        .where(ApiKeyDeployment.key_id.in_(key_ids))
        .order_by(ApiKeyDeployment.deployment)
    ).tuples()
    for key_id, deployment in rows:
        out.setdefault(key_id, []).append(deployment)
    return out


def unscoped_service_keys(session: Session) -> dict[int, list[str]]:
    """By user id, the prefixes of the unrevoked service keys bound to no deployment (from before scoping)."""
    bound = select(ApiKeyDeployment.key_id)
    rows = session.execute(
        select(ApiKey.user_id, ApiKey.prefix)
        .join(User, User.id == ApiKey.user_id)
        .where(User.role == Role.service.value, ApiKey.revoked_at.is_(None), ApiKey.id.not_in(bound))
        .order_by(ApiKey.id)
    ).tuples()
    out: dict[int, list[str]] = {}
    for user_id, prefix in rows:
        out.setdefault(user_id, []).append(prefix)
    return out


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
    return _principal(session, key, user)


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
    return _principal(session, key, user)


def _principal(session: Session, key: ApiKey, user: User) -> Principal:
    scope = key_scopes(session, key_ids={key.id}).get(key.id) if user.role == Role.service.value else None
    return Principal(
        name=user.name,
        role=user.role,
        user_id=user.id,
        key_prefix=key.prefix,
        deployments=frozenset(scope) if scope else None,
    )


def user_names(session: Session, ids: set[int | None]) -> dict[int, str]:
    """The names of the users with these ids (None and unknown ids are left out), in one query."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return {uid: name for uid, name in session.execute(select(User.id, User.name).where(User.id.in_(wanted))).tuples()}
