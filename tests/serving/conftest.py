"""Fixtures of the serving tests: the tiny random Llama, loaded once per run, and a real stack around it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.serving.helpers import PUSH_SECRET, ServerThread, Stack, attached_copy, governance_app, make_world, wait_for


@pytest.fixture(scope="session")
def tiny(test_state_dir: Path) -> tuple[Any, Any, Any]:
    from aligner.providers import load_base_model

    return load_base_model("tiny-random-llama", state_dir=test_state_dir)


@pytest.fixture()
def stack(
    engine: Engine, database_url: str, redis_url: str, tiny: tuple[Any, Any, Any], test_state_dir: Path, tmp_path: Path
) -> Iterator[Stack]:
    """The governance API and one replica of a fresh deployment, both in this process (real sockets,
    PostgreSQL, Redis); the replica records its outputs through the real recorder."""
    import httpx

    from serving.app import ServingConfig, create_app

    world = make_world(engine, tiny[2])
    with ServerThread(governance_app(database_url, redis_url, tmp_path / "gov")) as api:
        config = ServingConfig(
            deployment=world.deployment,
            model="tiny-random-llama",
            max_batch=4,
            queue_size=16,
            api_url=api.url,
            api_key=world.keys["service"],
            redis_url=redis_url,
            push_secrets=(PUSH_SECRET,),
            database_url=database_url,
            state_dir=tmp_path / "serving",
            fence_timeout=10.0,  # a busy test machine must not turn the fence off
            reconcile_interval=0.5,
            record_interval=0.05,
            default_max_tokens=16,
        )
        app = create_app(config, loaded=attached_copy(tiny))
        with ServerThread(app) as serving:
            wait_for(lambda: httpx.get(f"{serving.url}/readyz").status_code == 200, what="replica ready")
            yield Stack(world, api, serving, app)
