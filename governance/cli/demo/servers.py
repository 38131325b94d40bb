"""Step 0 of the demo: the servers, a fresh demo database and Redis, the signing key, the base model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg
import redis

from aligner.providers import prepare_base_model
from governance import embedded, migrate
from governance.audit.signing import generate_keypair
from governance.cli.demo.state import DEMO_REDIS_DB, DemoState, say
from governance.cli.procs import free_port
from governance.db import get_engine, make_engine, unit_of_work
from governance.principal import Principal
from governance.registry import service as registry
from governance.settings import Settings, get_settings, reset_settings_cache


def setup(st: DemoState) -> None:
    """Servers, a fresh demo database, the signing key, the prepared base model."""
    settings = get_settings()
    st.state_dir.mkdir(parents=True, exist_ok=True)
    redis_configured = bool(settings.redis_url)
    if not settings.database_url or not settings.redis_url:
        st.started_services = not any(s[2].startswith("running") for s in embedded.status(settings))
        assert st.procs is not None
        with st.procs.uninterrupted():  # a server started by a signal-cut `up` would go unrecorded
            if st.started_services:  # ours, so stopped with the demo's processes (last)
                st.procs.on_stop("embedded PostgreSQL and Redis", lambda: embedded.down(settings))
            embedded.up(settings)
    demo_url = _fresh_database(settings, st.db_name)
    redis_url = _demo_redis(settings, configured=redis_configured)
    key_path = _signing_key(st.work / "keys")
    st.api_url = f"http://127.0.0.1:{free_port()}"
    st.env = {
        "GOVERN_DATABASE_URL": demo_url,
        "GOVERN_REDIS_URL": redis_url,
        "GOVERN_STATE_DIR": str(st.state_dir),
        "GOVERN_API_URL": st.api_url,
        "GOVERN_SIGNING_KEY_PATH": str(key_path),
        "GOVERN_ENVIRONMENT": "development",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    os.environ.update(st.env)
    reset_settings_cache()
    say(st, f"PostgreSQL: {demo_url}")
    say(st, f"Redis:      {redis_url}")


def _fresh_database(settings: Settings, db_name: str) -> str:
    """Drop and re-create the demo database next to the configured one, migrated; its URL."""
    admin_url = embedded.resolve_database_url(settings)
    base, _, query = admin_url.partition("?")
    demo_url = base.rsplit("/", 1)[0] + f"/{db_name}" + (f"?{query}" if query else "")
    conninfo = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # a second run starts clean: the audit log is append-only, so the database goes
        conn.execute(f'drop database if exists "{db_name}" with (force)')
        conn.execute(f'create database "{db_name}"')
    engine = make_engine(demo_url)
    migrate.upgrade(engine)
    engine.dispose()
    return demo_url


def _demo_redis(settings: Settings, *, configured: bool) -> str:
    if configured:
        return embedded.resolve_redis_url(settings)  # yours: used as given, never flushed
    redis_url = embedded.resolve_redis_url(settings).rsplit("/", 1)[0] + f"/{DEMO_REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()  # ours: no stale Celery tasks from an earlier run
    return redis_url


def _signing_key(keys: Path) -> Path:
    path = keys / "audit-signing.key"
    if not path.exists():
        generate_keypair(path)
    return path


def prepare_model(st: DemoState) -> dict[str, Any]:
    settings = get_settings()
    with st.console.status("loading SmolLM2-135M-Instruct (the first load de-quantizes the GGUF, ~30 s)"):
        info = prepare_base_model(settings.base_model, state_dir=st.state_dir).to_dict()
    with unit_of_work(get_engine()) as s:
        registry.register_base_model(
            s, name=info["name"], weights_digest=info["weights"], tokenizer_digest=info["tokenizer"],
            config=info, actor=Principal.for_system("demo").actor,
        )
    say(st, f"base model {info['name']}: weights {info['weights'][:12]}…, {info['num_layers']} layers, "
            f"{info['num_heads']} heads, hidden {info['hidden_size']}")
    return info
