"""Schema building blocks shared by every resource: strict input models and the page wrapper."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, model_validator

T = TypeVar("T")


class StrictIn(BaseModel):
    """Request bodies: unknown fields are refused, so a client cannot set server-owned ones."""

    # no whitespace stripping: a policy file is stored and hashed byte for byte
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        # PostgreSQL text and jsonb cannot hold U+0000: refuse it here, as input, not as a database error
        where = _find_nul(data, "")
        if where is not None:
            raise ValueError(f"text must not contain NUL characters (at {where or 'the body'})")
        return data


def _find_nul(value: Any, path: str, depth: int = 0) -> str | None:
    if isinstance(value, str):
        return path if "\x00" in value else None
    if depth > 64:  # deeper than any input of ours; the size limit bounds the rest
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and "\x00" in k:
                return f"{path}.{k!r}".lstrip(".")
            found = _find_nul(v, f"{path}.{k}".lstrip("."), depth + 1)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _find_nul(v, f"{path}[{i}]", depth + 1)
            if found is not None:
                return found
    return None


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
