"""Audit log benchmark: append throughput under concurrency, and export + verify of a large log.

Runs against a scratch database of its own (created, migrated and dropped here) on the
PostgreSQL server of ``GOVERN_BENCH_ADMIN_URL`` (default: the machine's at 127.0.0.1:5432,
else the embedded one). The large log is a precomputed valid chain bulk-loaded with COPY;
it is then exported through the real export path (``export_to_file``) and verified by the
real offline verifier (``verify_export``, one thread, so one core) and in the database
(``verify_chain_in_db``). Target: offline verify >= 100,000 entries/s.

    .venv/bin/python bench/bench_audit.py [--entries 1000000] [--seconds 5] [--writers 1,4,16]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.table import Table

from governance import migrate
from governance.audit.canonical import GENESIS_HASH, body_from_stored, canonical_json, format_ts
from governance.audit.export import export_to_file
from governance.audit.service import append, verify_chain_in_db
from governance.audit.verify import verify_export
from governance.db import make_engine, unit_of_work

MACHINE_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _admin_url() -> str:
    url = os.environ.get("GOVERN_BENCH_ADMIN_URL")
    if url:
        return url
    try:
        with psycopg.connect(MACHINE_PG.replace("+psycopg", ""), connect_timeout=3):
            return MACHINE_PG
    except psycopg.OperationalError:
        from governance.embedded import resolve_database_url

        return resolve_database_url()


class Scratch:
    """A migrated database of our own; dropped on exit."""

    def __init__(self, admin_url: str) -> None:
        base, _, query = admin_url.partition("?")
        self.q = f"?{query}" if query else ""
        self.admin = base.replace("postgresql+psycopg://", "postgresql://") + self.q
        self.name = f"govern_bench_{uuid.uuid4().hex[:8]}"
        self.url = f"{base.rsplit('/', 1)[0]}/{self.name}{self.q}"

    def __enter__(self) -> Scratch:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'create database "{self.name}"')
        eng = make_engine(self.url)
        migrate.upgrade(eng)
        eng.dispose()
        return self

    def __exit__(self, *exc: object) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{self.name}" with (force)')


def bench_append(url: str, writers: int, seconds: float, *, durable: bool = True) -> tuple[int, float]:
    """Each writer commits one append per transaction until time is up; returns (entries, s)."""
    engine = make_engine(url, pool_size=writers, max_overflow=0)
    if not durable:
        # shows the CPU-bound ceiling: with durable commits the head lock is held through the fsync
        from sqlalchemy import event

        @event.listens_for(engine, "connect")
        def _async_commit(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            with dbapi_conn.cursor() as cur:
                cur.execute("SET synchronous_commit = off")

    done = [0] * writers
    start = threading.Barrier(writers + 1)
    stop_at = [0.0]

    def run(i: int) -> None:
        start.wait()
        while time.perf_counter() < stop_at[0]:
            with unit_of_work(engine) as session:
                append(
                    session,
                    actor=f"user:w{i}",
                    action="bench.append",
                    subject_type="bench",
                    subject_id=i,
                    payload={"writer": i, "n": done[i], "note": "throughput"},
                )
            done[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    engine.dispose()
    return sum(done), elapsed


def synthetic_rows(n: int) -> Iterator[tuple[object, ...]]:
    """A valid chain of ``n`` entries shaped like real governance events."""
    actions = ["version.submit", "gate.result", "version.approve", "deployment.promote", "alert.raise"]
    base = datetime(2026, 1, 1, tzinfo=UTC)
    prev = GENESIS_HASH
    sha = hashlib.sha256
    for seq in range(1, n + 1):
        ts = format_ts(base + timedelta(milliseconds=seq))
        actor = f"user:eng{seq % 7}" if seq % 3 else "system:monitor/cusum"
        key_id = f"k{seq % 7:015d}" if seq % 3 else None
        payload = canonical_json(
            {"version_id": seq // 5, "digest": f"{seq:064x}", "note": "Überprüfung ok", "score": seq / 7}
        )
        action = actions[seq % 5]
        subject_id = str(seq // 5)
        body = body_from_stored(
            seq=seq,
            ts=ts,
            actor=actor,
            actor_key_id=key_id,
            action=action,
            subject_type="version",
            subject_id=subject_id,
            payload_text=payload,
        )
        h = sha((prev + body).encode("utf-8")).hexdigest()
        yield (seq, ts, actor, key_id, action, "version", subject_id, payload, prev, h)
        prev = h


def bulk_load(url: str, n: int) -> float:
    t0 = time.perf_counter()
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cols = "seq, ts, actor, actor_key_id, action, subject_type, subject_id, payload, prev_hash, hash"
        with cur.copy(f"copy audit_log ({cols}) from stdin") as copy:
            for row in synthetic_rows(n):
                copy.write_row(row)
        cur.execute("analyze audit_log")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each append run")
    ap.add_argument("--writers", default="1,4,16", help="comma-separated; empty skips the append runs")
    args = ap.parse_args()
    console = Console()
    admin = _admin_url()
    table = Table("benchmark", "entries", "seconds", "entries/s", "entries/CPU-s", title="audit log")

    with Scratch(admin) as db:
        for w in (int(x) for x in args.writers.split(",") if x.strip()):
            n, s = bench_append(db.url, w, args.seconds)
            table.add_row(f"append, {w} concurrent writer(s), 1 entry/txn", f"{n:,}", f"{s:.2f}", f"{n / s:,.0f}")
        if args.writers.strip():
            n, s = bench_append(db.url, 16, args.seconds, durable=False)
            table.add_row("append, 16 writers, synchronous_commit=off", f"{n:,}", f"{s:.2f}", f"{n / s:,.0f}")
        engine = make_engine(db.url)
        with unit_of_work(engine) as session:
            check = verify_chain_in_db(session)
        assert check.ok, check
        engine.dispose()

    with Scratch(admin) as db, tempfile.TemporaryDirectory() as tmp:
        n = args.entries
        s = bulk_load(db.url, n)
        table.add_row("generate + COPY a valid chain (setup)", f"{n:,}", f"{s:.2f}", f"{n / s:,.0f}")
        key = Ed25519PrivateKey.generate()
        engine = make_engine(db.url)
        out = Path(tmp) / "audit.jsonl"
        t0 = time.perf_counter()
        plan = export_to_file(engine, out, key=key, actor="system:bench")
        s = time.perf_counter() - t0
        size_mb = out.stat().st_size / 1e6
        table.add_row(
            f"export JSONL ({size_mb:,.0f} MB), server-side cursor",
            f"{plan.count:,}",
            f"{s:.2f}",
            f"{plan.count / s:,.0f}",
        )
        t0, c0 = time.perf_counter(), time.process_time()
        result = verify_export(out, public_key=key.public_key())
        s, c = time.perf_counter() - t0, time.process_time() - c0
        assert result.ok, result.summary()
        table.add_row(
            "verify JSONL offline (1 thread)",
            f"{result.count:,}",
            f"{s:.2f}",
            f"{result.count / s:,.0f}",
            f"{result.count / c:,.0f}",
        )
        t0 = time.perf_counter()
        with unit_of_work(engine) as session:
            check = verify_chain_in_db(session)
        s = time.perf_counter() - t0
        assert check.ok, check
        table.add_row("verify_chain_in_db", f"{check.size:,}", f"{s:.2f}", f"{check.size / s:,.0f}")
        csv_out = Path(tmp) / "audit.csv"
        t0 = time.perf_counter()
        plan = export_to_file(engine, csv_out, key=key, actor="system:bench", fmt="csv")
        s = time.perf_counter() - t0
        table.add_row("export CSV", f"{plan.count:,}", f"{s:.2f}", f"{plan.count / s:,.0f}")
        t0, c0 = time.perf_counter(), time.process_time()
        result = verify_export(csv_out, public_key=key.public_key())
        s, c = time.perf_counter() - t0, time.process_time() - c0
        assert result.ok, result.summary()
        table.add_row(
            "verify CSV offline (1 thread)",
            f"{result.count:,}",
            f"{s:.2f}",
            f"{result.count / s:,.0f}",
            f"{result.count / c:,.0f}",
        )
        engine.dispose()
    console.print(table)
    console.print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
