"""Output recording: a bounded in-memory queue, batched writes, and a disk spool for outages.

`record(row)` never blocks serving: it appends to a bounded queue, or, when the queue is
full, straight to the spool file. A flusher thread takes up to `batch_size` rows (or
whatever arrived within `flush_interval`) and writes them through a sink in one
transaction. When the sink fails (PostgreSQL down), the batch is appended to a JSONL
spool in the state folder with fsync, and further batches go there directly until
`retry_interval` has passed; once a write succeeds again, the spool is replayed in
batches. Rows carry a request id that is unique per deployment and the sink inserts with
ON CONFLICT DO NOTHING, so a replay that is cut short and repeated never doubles a row:
no output is lost, none is recorded twice.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from governance.db import make_engine, unit_of_work
from governance.errors import InvalidInput, NotFound
from governance.outputs.service import ingest_outputs

log = logging.getLogger(__name__)

Row = dict[str, Any]


class PermanentSinkError(RuntimeError):
    """The sink refused the rows for good (e.g. an unknown version id): retrying cannot help."""


class OutputSink(Protocol):
    def write(self, rows: Sequence[Row]) -> None:
        """Store the rows in one transaction, ignoring request ids already stored; raise on failure."""


class DatabaseSink:
    """Writes through `governance.outputs.service.ingest_outputs`, one transaction per batch."""

    def __init__(self, database_url: str, deployment: str, *, connect_timeout: int = 2) -> None:
        self.deployment = deployment
        # A short connect timeout: an unreachable database must send batches to the spool fast.
        self.engine = make_engine(database_url, connect_args={"connect_timeout": connect_timeout}, pool_size=2)

    def write(self, rows: Sequence[Row]) -> None:
        prepared = [_with_datetime(r) for r in rows]
        try:
            with unit_of_work(self.engine) as session:
                ingest_outputs(session, deployment=self.deployment, rows=prepared)
        except (InvalidInput, NotFound) as exc:
            raise PermanentSinkError(str(exc)) from exc

    def close(self) -> None:
        self.engine.dispose()


@dataclass
class RecorderStats:
    recorded: int = 0  # rows handed to record()
    written: int = 0  # rows the sink accepted (fresh and live)
    spooled: int = 0  # rows appended to the spool
    replayed: int = 0  # rows written back from the spool
    failures: int = 0  # failed sink writes
    dead_lettered: int = 0  # rows the database refused for good (kept in <spool>.rejected)


class OutputRecorder:
    def __init__(
        self,
        sink: OutputSink,
        *,
        spool_path: Path,
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.25,
        retry_interval: float = 2.0,
        on_spool: Callable[[int], None] | None = None,
    ) -> None:
        self.sink = sink
        self.spool_path = spool_path
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self.on_spool = on_spool
        self.stats = RecorderStats()
        self._queue: deque[Row] = deque()
        self._cond = threading.Condition()
        self._spool_lock = threading.Lock()
        self._stop = False
        self._down_until = 0.0
        self._busy = False
        self._thread: threading.Thread | None = None
        spool_path.parent.mkdir(parents=True, exist_ok=True)

    # -- the serving side ------------------------------------------------------------------
    def record(self, row: Row) -> None:
        """Hand one output over; never blocks on the database."""
        with self._cond:
            self.stats.recorded += 1
            if len(self._queue) < self.max_queue:
                self._queue.append(row)
                if len(self._queue) >= self.batch_size:
                    self._cond.notify()
                return
        self._spool([row])  # queue full: the disk is the overflow

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def spool_pending(self) -> int:
        """Rows waiting on disk (spool plus an interrupted replay)."""
        total = 0
        for path in self._spool_files():
            try:
                with path.open("rb") as fh:
                    total += sum(1 for _ in fh)
            except OSError:
                pass
        return total

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="serving-recorder", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Flush what is queued (to the database or the spool) and stop."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        rest = self._drain(len(self._queue))
        if rest:
            self._write_or_spool(rest)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the in-memory queue is empty (written or spooled); for tests and shutdown."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify()
        while time.monotonic() < deadline:
            if not self._queue and not self._busy:
                return True
            time.sleep(0.01)
        return False

    # -- the flusher -----------------------------------------------------------------------
    def _drain(self, n: int) -> list[Row]:
        with self._cond:
            out: list[Row] = []
            while self._queue and len(out) < n:
                out.append(self._queue.popleft())
            return out

    def _loop(self) -> None:
        last_replay_try = 0.0
        while True:
            with self._cond:
                if not self._stop and len(self._queue) < self.batch_size:
                    self._cond.wait(self.flush_interval)
                if self._stop:
                    return
                self._busy = True
            try:
                batch = self._drain(self.batch_size)
                if batch:
                    self._write_or_spool(batch)
                now = time.monotonic()
                if now >= self._down_until and now - last_replay_try >= self.retry_interval / 4:
                    last_replay_try = now
                    if any(p.exists() for p in self._spool_files()):
                        self.replay()
            except Exception:  # the flusher must survive anything; rows already went to the spool
                log.exception("recorder loop error")
            finally:
                self._busy = False

    def _write_or_spool(self, batch: list[Row]) -> None:
        if time.monotonic() < self._down_until:
            self._spool(batch)
            return
        try:
            self.sink.write(batch)
            self.stats.written += len(batch)
        except PermanentSinkError as exc:
            self._write_each(batch, exc)
        except Exception as exc:
            self.stats.failures += 1
            self._down_until = time.monotonic() + self.retry_interval
            log.warning("recording %d outputs failed (%s); spooling to %s", len(batch), _short(exc), self.spool_path)
            self._spool(batch)

    def _write_each(self, batch: list[Row], first: Exception) -> None:
        """One bad row must not take its batch down: write rows singly, set aside the refused ones."""
        log.error("the database refused a batch of %d outputs (%s); writing them one by one", len(batch), first)
        for row in batch:
            try:
                self.sink.write([row])
                self.stats.written += 1
            except PermanentSinkError as exc:
                self._dead_letter(row, str(exc))
            except Exception:
                self._spool([row])

    def _dead_letter(self, row: Row, reason: str) -> None:
        path = self.spool_path.with_name(self.spool_path.name + ".rejected")
        line = json.dumps({"reason": reason, "row": row}, default=str) + "\n"
        with self._spool_lock, path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.stats.dead_lettered += 1

    # -- the spool -------------------------------------------------------------------------
    def _replay_path(self) -> Path:
        return self.spool_path.with_name(self.spool_path.name + ".replay")

    def _spool_files(self) -> list[Path]:
        return [self._replay_path(), self.spool_path]

    def _spool(self, rows: list[Row]) -> None:
        data = "".join(json.dumps(r, default=str, separators=(",", ":")) + "\n" for r in rows).encode()
        with self._spool_lock:
            fd = os.open(self.spool_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        self.stats.spooled += len(rows)
        if self.on_spool is not None:
            self.on_spool(len(rows))

    def _replay_batch(self, batch: list[Row]) -> int:
        try:
            self.sink.write(batch)
        except PermanentSinkError as exc:
            log.error("the database refused spooled outputs (%s); setting the refused ones aside", exc)
            good = 0
            for row in batch:
                try:
                    self.sink.write([row])
                    good += 1
                except PermanentSinkError as one:
                    self._dead_letter(row, str(one))
            return good
        return len(batch)

    def replay(self) -> int:
        """Write spooled rows back through the sink; returns rows written. Safe to repeat."""
        replay = self._replay_path()
        with self._spool_lock:
            if not replay.exists() and self.spool_path.exists():
                # New spills go to a fresh spool while this one is replayed.
                self.spool_path.replace(replay)
        if not replay.exists():
            return 0
        written = 0
        batch: list[Row] = []
        try:
            with replay.open("r", encoding="utf-8") as fh:
                for line in fh:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        batch.append(json.loads(line))
                    except json.JSONDecodeError:
                        # A torn last line from a crash mid-append: nothing we can recover.
                        log.error("skipping a corrupt spool line in %s", replay)
                        continue
                    if len(batch) >= self.batch_size:
                        written += self._replay_batch(batch)
                        batch = []
                if batch:
                    written += self._replay_batch(batch)
        except Exception as exc:
            # Leave the file: rows already written are skipped by the unique request id next time.
            self.stats.failures += 1
            self._down_until = time.monotonic() + self.retry_interval
            log.warning("spool replay interrupted (%s); will retry", _short(exc))
            self.stats.replayed += written
            return written
        replay.unlink()
        self.stats.replayed += written
        log.info("replayed %d spooled outputs", written)
        return written


def _with_datetime(row: Row) -> Row:
    # The spool stores times as ISO text; the database wants datetimes.
    created = row.get("created_at")
    if isinstance(created, str):
        return {**row, "created_at": datetime.fromisoformat(created)}
    return row


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]
