"""The one place that records refusals of governed actions.

A refused governed action (a `DomainError` carrying a `Refusal`) is rolled back by the
edge, which then writes one ``denied`` audit entry in a transaction of its own
(`record_refusal`), so the log shows who tried what even though nothing changed. HTTP
requests do this in `governance.api.deps`; workers and CLI commands that call services
directly get the same behaviour from `governed_unit_of_work`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from governance import metrics
from governance.audit import service as audit
from governance.db import unit_of_work
from governance.errors import DomainError

log = logging.getLogger(__name__)


def record_refusal(engine: Engine, exc: DomainError) -> None:
    """Write the ``denied`` audit entry of a refused governed action in its own transaction."""
    if exc.refusal is None:
        return
    r = exc.refusal
    try:
        with unit_of_work(engine) as session:
            audit.append(
                session,
                actor=r.actor,
                actor_key_id=r.actor_key_id,
                action="denied",
                subject_type=r.subject_type,
                subject_id=r.subject_id,
                payload={"attempted": r.attempted, "status": exc.status, "code": exc.code, "reason": exc.message},
            )
    except Exception:  # the refusal still reaches the caller; losing its entry is logged loudly
        log.exception("could not record the refusal of %s by %s", r.attempted, r.actor)
    metrics.DENIED.labels(action=r.attempted, status=str(exc.status)).inc()


@contextmanager
def governed_unit_of_work(engine: Engine) -> Iterator[Session]:
    """`unit_of_work` for workers and CLI edges: a refused action is rolled back, then audited."""
    try:
        with unit_of_work(engine) as session:
            yield session
    except DomainError as exc:
        record_refusal(engine, exc)
        raise
