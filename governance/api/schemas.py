"""Schema building blocks shared by every resource: strict input models and the page wrapper."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class StrictIn(BaseModel):
    """Request bodies: unknown fields are refused, so a client cannot set server-owned ones."""

    # no whitespace stripping: a policy file is stored and hashed byte for byte
    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    limit: int
    offset: int
    next_offset: int | None

    @classmethod
    def of(cls, items: list[T], limit: int, offset: int) -> PageOut[T]:
        return cls(items=items, limit=limit, offset=offset, next_offset=offset + limit if len(items) == limit else None)
