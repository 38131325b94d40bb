"""The recorder against the real PostgreSQL: batches, duplicates ignored, spool on failure, replay, overflow."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from serving.recorder import DatabaseSink, OutputRecorder, Row
from tests.serving.helpers import World, make_world, wait_for


class Switchable:
    """The real database sink behind a switch, to cut the connection at a chosen moment."""

    def __init__(self, inner: DatabaseSink) -> None:
        self.inner = inner
        self.down = False
        self.fail_after_batches: int | None = None
        self.writes = 0

    def write(self, rows: Sequence[Row]) -> None:
        if self.down or (self.fail_after_batches is not None and self.writes >= self.fail_after_batches):
            raise ConnectionError("database unreachable (switched off)")
        self.inner.write(rows)
        self.writes += 1


@pytest.fixture()
def world(engine: Engine, tiny: tuple[Any, Any, Any]) -> World:
    return make_world(engine, tiny[2])


def _rows(n: int, tag: str) -> list[Row]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "request_id": f"{tag}-{i}",
            "version_id": None,
            "generation": 0,
            "messages": [{"role": "user", "content": "q"}],
            "output": f"a{i}",
            "prompt_tokens": 3,
            "completion_tokens": 2,
            "latency_ms": 1.5,
            "created_at": now,
        }
        for i in range(n)
    ]


def _count(engine: Engine, tag: str) -> tuple[int, int]:
    with engine.connect() as c:
        row = c.execute(
            text("select count(*), count(distinct request_id) from outputs where request_id like :p"), {"p": f"{tag}-%"}
        ).one()
    return int(row[0]), int(row[1])


def test_batches_reach_the_table_once(world: World, engine: Engine, database_url: str, tmp_path: Path) -> None:
    sink = DatabaseSink(database_url, world.deployment)
    rec = OutputRecorder(sink, spool_path=tmp_path / "spool.jsonl", batch_size=100, flush_interval=0.02)
    rec.start()
    tag = uuid.uuid4().hex[:8]
    rows = _rows(250, tag)
    for r in rows + rows[:50]:  # the repeats are ignored by (deployment, request id)
        rec.record(r)
    assert rec.flush()
    rec.stop()
    assert _count(engine, tag) == (250, 250)
    assert rec.stats.spooled == 0


def test_outage_spools_to_disk_and_replays_without_loss_or_doubles(
    world: World, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    sink = Switchable(DatabaseSink(database_url, world.deployment))
    spool = tmp_path / "spool.jsonl"
    rec = OutputRecorder(sink, spool_path=spool, batch_size=20, flush_interval=0.02, retry_interval=0.2)
    rec.start()
    tag = uuid.uuid4().hex[:8]
    rows = _rows(120, tag)
    sink.down = True
    for r in rows[:60]:
        rec.record(r)
    wait_for(lambda: rec.stats.spooled == 60, what="60 spooled rows")
    assert sum(1 for _ in spool.open()) == 60
    assert _count(engine, tag) == (0, 0)
    # the database comes back, but the replay is cut after one batch: the rest must come later, once
    sink.down = False
    sink.fail_after_batches = sink.writes + 1
    wait_for(lambda: rec.stats.failures >= 2, what="an interrupted replay")
    sink.fail_after_batches = None
    for r in rows[60:]:
        rec.record(r)
    wait_for(lambda: _count(engine, tag)[0] == 120 and rec.spool_pending == 0, what="all rows after the replay")
    rec.stop()
    assert _count(engine, tag) == (120, 120)
    assert not spool.exists() or spool.stat().st_size == 0


def test_a_full_queue_spills_to_the_spool_instead_of_blocking(world: World, database_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    rec = OutputRecorder(DatabaseSink(database_url, world.deployment), spool_path=spool, max_queue=3, batch_size=100)
    rows = _rows(10, uuid.uuid4().hex[:8])
    for r in rows:  # not started: nothing drains the queue
        rec.record(r)
    assert rec.queue_depth == 3 and rec.stats.spooled == 7
    assert [json.loads(line)["request_id"] for line in spool.open()] == [r["request_id"] for r in rows[3:]]


def test_rows_the_database_refuses_are_set_aside_not_retried_forever(
    world: World, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.jsonl"
    rec = OutputRecorder(
        DatabaseSink(database_url, world.deployment), spool_path=spool, batch_size=10, flush_interval=0.02
    )
    rec.start()
    tag = uuid.uuid4().hex[:8]
    rows = _rows(5, tag)
    rows[2]["version_id"] = 999_999  # unknown version: refused for good
    for r in rows:
        rec.record(r)
    assert rec.flush()
    rec.stop()
    assert _count(engine, tag) == (4, 4)
    rejected = [json.loads(line) for line in spool.with_name(spool.name + ".rejected").open()]
    assert [r["row"]["request_id"] for r in rejected] == [f"{tag}-2"]
