"""Benchmark: production-output ingest end to end (HTTP + JSON + one INSERT per batch).

Not part of the test run. Usage (machine PostgreSQL/Redis, or set the GOVERN_TEST_ URLs):

    .venv/bin/python bench/bench_ingest.py [--batches 20 --batch-size 1000 --clients 2]

Creates a throwaway database, starts the API with uvicorn on a free port, posts batches
of realistic outputs from `--clients` threads and prints a table (outputs/s).
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time
import uuid

import httpx
import psycopg
import uvicorn

from governance import migrate
from governance.api.app import create_app
from governance.db import make_engine
from governance.settings import Settings
from tests.governance.conftest import make_world

PG = os.environ.get("GOVERN_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("GOVERN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=2)
    args = ap.parse_args()

    name = f"govern_bench_{uuid.uuid4().hex[:8]}"
    admin = PG.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = PG.rsplit("/", 1)[0] + f"/{name}"
    try:
        engine = make_engine(url)
        migrate.upgrade(engine)
        world = make_world(engine)
        vid = world.approved()
        world.promote(vid)
        settings = Settings(database_url=url, redis_url=REDIS, max_ingest_batch=max(1000, args.batch_size))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        srv = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=srv.run, daemon=True).start()
        while not srv.started:
            time.sleep(0.05)
        headers = world.actor("service").headers
        msg = [{"role": "user", "content": "How do I reset my password? " * 3}]

        def batch(b: int) -> list[dict[str, object]]:
            return [
                {
                    "request_id": f"b{b}-r{i}",
                    "version_id": vid,
                    "generation": 1,
                    "messages": msg,
                    "output": "Go to settings, choose 'security', then 'reset password'. " * 4,
                    "prompt_tokens": 24,
                    "completion_tokens": 60,
                    "latency_ms": 42.0,
                }
                for i in range(args.batch_size)
            ]

        payloads = [{"outputs": batch(b)} for b in range(args.batches)]
        accepted = [0] * args.clients

        def client(c: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as http:
                for b in range(c, args.batches, args.clients):
                    r = http.post(f"/v1/deployments/{world.deployment}/outputs", json=payloads[b])
                    r.raise_for_status()
                    accepted[c] += r.json()["accepted"]

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        dt = time.perf_counter() - t0
        total = sum(accepted)
        print(
            f"| batches | batch size | clients | outputs | seconds | outputs/s |\n|---|---|---|---|---|---|\n"
            f"| {args.batches} | {args.batch_size} | {args.clients} | {total} | {dt:.2f} | {total / dt:,.0f} |"
        )
        srv.should_exit = True
        engine.dispose()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


if __name__ == "__main__":
    main()
