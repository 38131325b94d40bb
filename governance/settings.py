"""One typed settings object for every process (API, CLI, workers, replicas).

Everything comes from environment variables with the ``GOVERN_`` prefix (or a ``.env``
file). When the database or Redis URL is unset, the embedded default (``govern services
up``) supplies them; see ``governance.embedded``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SESSION_SECRET = "change-me-development-only"
MIN_PUSH_SECRET_CHARS = 16


class SettingsError(ValueError):
    """Configuration that cannot work; the message says what to change."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GOVERN_", env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = Field(
        "development", description="production refuses default secrets"
    )
    database_url: str | None = Field(
        None, description="postgresql+psycopg://user@host:port/db; unset: embedded"
    )
    redis_url: str | None = Field(None, description="redis://host:port/db; unset: embedded")
    state_dir: Path = Field(Path("state"), description="embedded servers, model cache, reports, keys")
    api_url: str = Field("http://127.0.0.1:8400", description="where the CLI and replicas reach the API")
    api_key: SecretStr | None = Field(None, description="the caller's API key (CLI, replicas, workers)")
    session_secret: SecretStr = Field(SecretStr(DEFAULT_SESSION_SECRET), description="signs web UI sessions")
    signing_key_path: Path | None = Field(None, description="Ed25519 private key for audit checkpoints")
    base_model: str = Field("smollm2-135m-instruct", description="default base model provider name")
    max_artifact_bytes: int = Field(1_000_000, gt=0, description="largest token artifact accepted")
    gate_shards: int = Field(
        1, ge=1, le=64, description="gate workers one queued gate is spread over (a Celery chord); 1: one worker"
    )
    max_request_bytes: int = Field(2_000_000, gt=0, description="largest ordinary request body")
    max_ingest_batch: int = Field(1_000, gt=0, description="most outputs in one ingest batch")
    rate_limit_writes_per_minute: int = Field(120, gt=0)
    rate_limit_ingest_per_minute: int = Field(6_000, gt=0)
    # hardening (docs/limits.md): per-address budgets, ingest body size, failed-auth throttle
    max_ingest_bytes: int = Field(32_000_000, gt=0, description="largest output batch body")
    rate_limit_writes_per_address_per_minute: int = Field(600, gt=0)
    rate_limit_ingest_per_address_per_minute: int = Field(12_000, gt=0)
    auth_failures_per_minute: int = Field(10, gt=0, description="failed sign-ins per address/key before 429")
    allow_unscoped_service_keys: bool = Field(
        False, description="let service keys bound to no deployment (issued before scoping) keep working"
    )
    log_level: str = "INFO"
    # authenticated pushes (docs/operations.md, "The push secret"): the HMAC key of the
    # messages on the deployment channels, shared by the API, the workers and the replicas
    push_secret: SecretStr | None = Field(
        None, description="signs and verifies pushes to replicas; unset: generated into the state folder"
    )
    push_secret_previous: SecretStr | None = Field(
        None, description="the secret being rotated out: replicas still accept it, nothing signs with it"
    )

    @field_validator("database_url")
    @classmethod
    def _check_db_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not v.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
            raise ValueError(
                f"GOVERN_DATABASE_URL must start with postgresql+psycopg:// (got {v.split(':', 1)[0]!r}://...)"
            )
        if v.startswith("postgres://"):
            v = "postgresql+psycopg://" + v[len("postgres://") :]
        elif v.startswith("postgresql://"):
            v = "postgresql+psycopg://" + v[len("postgresql://") :]
        return v

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"GOVERN_REDIS_URL must start with redis:// (got {v!r})")
        return v

    @field_validator("push_secret", "push_secret_previous")
    @classmethod
    def _check_push_secret(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or v.get_secret_value() == "":
            return None
        if len(v.get_secret_value()) < MIN_PUSH_SECRET_CHARS:
            raise ValueError(f"a push secret needs at least {MIN_PUSH_SECRET_CHARS} characters")
        return v

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.environment == "production":
            if self.session_secret.get_secret_value() == DEFAULT_SESSION_SECRET:
                raise ValueError(
                    "GOVERN_SESSION_SECRET is the development default; set a random secret in production"
                )
            if self.database_url is None or self.redis_url is None:
                raise ValueError(
                    "production needs GOVERN_DATABASE_URL and GOVERN_REDIS_URL (no embedded servers)"
                )
        return self

    # after _refuse_default_secrets: its message comes first
    @model_validator(mode="after")
    def _require_push_secret_in_production(self) -> Settings:
        if self.environment == "production" and self.push_secret is None:
            raise ValueError(
                "GOVERN_PUSH_SECRET is not set; production needs one random secret shared by the API, "
                "the workers and the replicas"
            )
        return self

    @property
    def state_path(self) -> Path:
        return self.state_dir.resolve()

    def ensure_state_dir(self) -> Path:
        """Create the state folder or fail with one line saying how to fix it."""
        path = self.state_path
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise SettingsError(
                f"state folder {path} is not writable ({exc.strerror}); set GOVERN_STATE_DIR to a writable folder"
            ) from None
        return path


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:  # pydantic ValidationError is a ValueError
        raise SettingsError(_first_line(exc)) from None


def reset_settings_cache() -> None:
    get_settings.cache_clear()


def _first_line(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = []
        for err in errors():
            loc = ".".join(str(p) for p in err.get("loc", ()))
            name = f"GOVERN_{loc.upper()}" if loc else "settings"
            parts.append(f"{name}: {err.get('msg', '')}".replace("Value error, ", ""))
        return "; ".join(parts)
    return str(exc).splitlines()[0]
