"""Routes for users and API keys (admin), and ``/v1/me`` for any key holder."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter
from sqlalchemy.orm import Session

from governance.api.deps import PageDep, SessionDep, may
from governance.auth import service
from governance.auth.models import ApiKey, User
from governance.auth.schemas import KeyCreate, KeyCreated, KeyRead, KeyRotated, Me, RotateIn, UserCreate, UserRead
from governance.principal import Principal, require_allowed
from governance.roles import Role

router = APIRouter(prefix="/v1", tags=["users"])


def key_read(key: ApiKey, user: User, scope: list[str] | None) -> KeyRead:
    return KeyRead(
        prefix=key.prefix,
        user=user.name,
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
        deployments=scope,
        unscoped=user.role == Role.service.value and not scope,
    )


def key_reads(session: Session, rows: list[tuple[ApiKey, User]]) -> list[KeyRead]:
    scopes = service.key_scopes(session, key_ids={k.id for k, _ in rows})
    return [key_read(k, u, scopes.get(k.id)) for k, u in rows]


def user_read(user: User, unscoped: dict[int, list[str]]) -> UserRead:
    return UserRead(
        name=user.name,
        role=user.role,
        created_at=user.created_at,
        disabled_at=user.disabled_at,
        unscoped_keys=unscoped.get(user.id, []),
    )


@router.get("/me", response_model=Me)
def me(principal: Annotated[Principal, may("me.read")]) -> Me:
    scope = sorted(principal.deployments) if principal.deployments is not None else None
    return Me(name=principal.name, role=principal.role, key_prefix=principal.key_prefix, deployments=scope)


@router.post("/users", response_model=KeyCreated, status_code=201)
def create_user(
    body: UserCreate, session: SessionDep, principal: Annotated[Principal, may("user.create")]
) -> KeyCreated:
    require_allowed(principal, "user.create", "user", body.name)
    user, raw = service.create_user(
        session,
        name=body.name,
        role=body.role.value,
        actor=principal.actor,
        actor_key_id=principal.key_prefix,
        deployments=body.deployments,
    )
    return KeyCreated(
        user=user.name,
        role=user.role,
        key_prefix=raw.split("_")[1],
        api_key=raw,
        deployments=sorted(set(body.deployments)) or None,
    )


@router.get("/users", response_model=list[UserRead])
def list_users(session: SessionDep, _: Annotated[Principal, may("user.read")]) -> list[UserRead]:
    unscoped = service.unscoped_service_keys(session)
    return [user_read(u, unscoped) for u in service.list_users(session)]


@router.post("/users/{name}/disable", response_model=UserRead)
def disable_user(name: str, session: SessionDep, principal: Annotated[Principal, may("user.disable")]) -> UserRead:
    user = service.set_disabled(session, name=name, disabled=True, principal=principal)
    return user_read(user, service.unscoped_service_keys(session))


@router.post("/users/{name}/enable", response_model=UserRead)
def enable_user(name: str, session: SessionDep, principal: Annotated[Principal, may("user.enable")]) -> UserRead:
    user = service.set_disabled(session, name=name, disabled=False, principal=principal)
    return user_read(user, service.unscoped_service_keys(session))


@router.get("/users/{name}/keys", response_model=list[KeyRead])
def user_keys(
    name: str, session: SessionDep, page: PageDep, _: Annotated[Principal, may("key.read")]
) -> list[KeyRead]:
    service.get_user_or_raise(session, name=name)
    return key_reads(session, service.list_keys(session, user_name=name)[page.offset : page.offset + page.limit])


@router.post("/users/{name}/keys", response_model=KeyCreated, status_code=201)
def create_key(
    name: str, body: KeyCreate, session: SessionDep, principal: Annotated[Principal, may("key.create")]
) -> KeyCreated:
    key, raw = service.create_key(
        session, user_name=name, principal=principal, expires_at=body.expires_at, deployments=body.deployments
    )
    user = service.get_user_or_raise(session, name=name)
    return KeyCreated(
        user=name,
        role=user.role,
        key_prefix=key.prefix,
        api_key=raw,
        expires_at=key.expires_at,
        deployments=service.key_scopes(session, key_ids={key.id}).get(key.id),
    )


@router.get("/keys", response_model=list[KeyRead])
def list_keys(
    session: SessionDep, page: PageDep, _: Annotated[Principal, may("key.read")], user: str | None = None
) -> list[KeyRead]:
    return key_reads(session, service.list_keys(session, user_name=user)[page.offset : page.offset + page.limit])


@router.post("/keys/{prefix}/revoke", response_model=KeyRead)
def revoke_key(prefix: str, session: SessionDep, principal: Annotated[Principal, may("key.revoke")]) -> KeyRead:
    key = service.revoke_key(session, prefix=prefix, principal=principal)
    return key_reads(session, [(key, key.user)])[0]


@router.post("/keys/{prefix}/rotate", response_model=KeyRotated)
def rotate_key(
    prefix: str, body: RotateIn, session: SessionDep, principal: Annotated[Principal, may("key.rotate")]
) -> KeyRotated:
    r = service.rotate_key(
        session,
        prefix=prefix,
        principal=principal,
        overlap=timedelta(seconds=body.overlap_seconds),
        expires_at=body.expires_at,
    )
    user = r.new_key.user
    return KeyRotated(
        user=user.name,
        role=user.role,
        key_prefix=r.new_key.prefix,
        api_key=r.raw,
        expires_at=r.new_key.expires_at,
        deployments=service.key_scopes(session, key_ids={r.new_key.id}).get(r.new_key.id),
        old_key_prefix=r.old_key.prefix,
        old_key_expires_at=r.old_key.expires_at,
    )
