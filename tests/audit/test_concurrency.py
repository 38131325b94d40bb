"""50 concurrent writers, some rolling back: the chain has no gaps, no fork, only committed entries."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

from sqlalchemy import select, text

from governance.audit.models import AuditEntry
from governance.audit.service import append, verify_chain_in_db
from governance.db import make_engine, unit_of_work

WRITERS = 50


class _Rollback(Exception):
    pass


def test_fifty_concurrent_writers_some_rolling_back(scratch_db: Callable[[], str]) -> None:
    url = scratch_db()
    # one connection per writer, all open at once: real concurrency, not a queue at the pool
    engine = make_engine(url, pool_size=WRITERS, max_overflow=0)
    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []
    rolled_back = {i for i in range(WRITERS) if i % 5 == 3}

    def writer(i: int) -> None:
        try:
            with unit_of_work(engine) as session:
                session.execute(text("select 1"))  # hold a connection before the race starts
                start.wait(timeout=60)
                # a "change" and its two audit entries, in one transaction
                session.execute(text("create temp table if not exists scratch (i int)"))
                append(
                    session,
                    actor=f"user:w{i}",
                    action="test.write",
                    subject_type="writer",
                    subject_id=i,
                    payload={"writer": i, "part": 1},
                )
                append(
                    session,
                    actor=f"user:w{i}",
                    action="test.write",
                    subject_type="writer",
                    subject_id=i,
                    payload={"writer": i, "part": 2},
                )
                if i in rolled_back:
                    raise _Rollback
        except _Rollback:
            pass
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]

    with unit_of_work(engine) as session:
        rows = session.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars().all()
        committed = set(range(WRITERS)) - rolled_back
        # gapless, starting at 1
        assert [r.seq for r in rows] == list(range(1, 2 * len(committed) + 1))
        # no fork: every entry links to its predecessor
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
        # only committed writers, each exactly twice and back to back (the lock spans the transaction)
        writers = [int(r.subject_id) for r in rows]
        assert set(writers) == committed
        assert all(writers[j] == writers[j + 1] for j in range(0, len(writers), 2))
        check = verify_chain_in_db(session)
        assert check.ok and check.size == len(rows), check
    engine.dispose()
