"""Routes for users and API keys (admin), and ``/v1/me`` for any key holder."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from governance.api.deps import PageDep, SessionDep, may
from governance.auth import service
from governance.auth.schemas import KeyCreate, KeyCreated, KeyRead, Me, UserCreate, UserRead
from governance.principal import Principal, require_allowed

router = APIRouter(prefix="/v1", tags=["users"])


@router.get("/me", response_model=Me)
def me(principal: Annotated[Principal, may("me.read")]) -> Me:
    return Me(name=principal.name, role=principal.role, key_prefix=principal.key_prefix)


@router.post("/users", response_model=KeyCreated, status_code=201)
def create_user(
    body: UserCreate, session: SessionDep, principal: Annotated[Principal, may("user.create")]
) -> KeyCreated:
    require_allowed(principal, "user.create", "user", body.name)
    user, raw = service.create_user(
        session, name=body.name, role=body.role.value, actor=principal.actor, actor_key_id=principal.key_prefix
    )
    return KeyCreated(user=user.name, role=user.role, key_prefix=raw.split("_")[1], api_key=raw)


@router.get("/users", response_model=list[UserRead])
def list_users(session: SessionDep, _: Annotated[Principal, may("user.read")]) -> list[UserRead]:
    return [UserRead.model_validate(u) for u in service.list_users(session)]


@router.post("/users/{name}/keys", response_model=KeyCreated, status_code=201)
def create_key(
    name: str, body: KeyCreate, session: SessionDep, principal: Annotated[Principal, may("key.create")]
) -> KeyCreated:
    key, raw = service.create_key(session, user_name=name, principal=principal, expires_at=body.expires_at)
    user = service.get_user_or_raise(session, name=name)
    return KeyCreated(user=name, role=user.role, key_prefix=key.prefix, api_key=raw, expires_at=key.expires_at)


@router.get("/keys", response_model=list[KeyRead])
def list_keys(
    session: SessionDep, page: PageDep, _: Annotated[Principal, may("key.read")], user: str | None = None
) -> list[KeyRead]:
    rows = service.list_keys(session, user_name=user)[page.offset : page.offset + page.limit]
    return [
        KeyRead(
            prefix=k.prefix,
            user=u.name,
            created_at=k.created_at,
            expires_at=k.expires_at,
            revoked_at=k.revoked_at,
            last_used_at=k.last_used_at,
        )
        for k, u in rows
    ]


@router.post("/keys/{prefix}/revoke", response_model=KeyRead)
def revoke_key(prefix: str, session: SessionDep, principal: Annotated[Principal, may("key.revoke")]) -> KeyRead:
    key = service.revoke_key(session, prefix=prefix, principal=principal)
    user = key.user
    return KeyRead(
        prefix=key.prefix,
        user=user.name,
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
    )
