"""Fixtures of the hardening tests: an API app with chosen limits, and a populated world to fuzz.

Apps are built through `create_app` with settings from the environment (the run's real
PostgreSQL and Redis, `settings_env`); limits are set per test with ``GOVERN_`` variables.
Each test's rate-limit counters live under a Redis prefix of their own, so tests never
spend each other's budgets.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.governance.conftest import World, make_world


@pytest.fixture()
def world(engine: Engine) -> World:
    return make_world(engine)


@pytest.fixture()
def make_app(settings_env: None, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., FastAPI]:
    """``make_app(MAX_REQUEST_BYTES=1000, ...)``: an app whose settings have these GOVERN_ values.

    Its connections commit without waiting for the disk (``synchronous_commit=off``): the
    fuzzer sends hundreds of small transactions, and durability is not under test here.
    """
    from governance.api.app import create_app
    from governance.api.guard import Guard
    from governance.settings import get_settings, reset_settings_cache

    def build(**env: Any) -> FastAPI:
        env.setdefault("DATABASE_URL", database_url + "?options=-csynchronous_commit%3Doff")
        for name, value in env.items():
            monkeypatch.setenv(f"GOVERN_{name.upper()}", str(value))
        reset_settings_cache()
        app = create_app(get_settings())
        prefix = f"test:rl:{uuid.uuid4().hex[:8]}"
        app.state.guard = Guard(app.state.settings, app.state.redis_url_fn(), prefix=prefix)
        return app

    return build


@pytest.fixture()
def client_for() -> Iterator[Callable[..., TestClient]]:
    """``client_for(app, address="10.0.0.1")``: a TestClient whose requests come from that address."""
    opened: list[TestClient] = []

    def build(app: FastAPI, address: str = "10.0.0.1") -> TestClient:
        c = TestClient(app, client=(address, 50_000))
        c.__enter__()
        opened.append(c)
        return c

    yield build
    for c in opened:
        c.__exit__(None, None, None)
