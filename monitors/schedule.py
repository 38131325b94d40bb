"""The beat schedule, in one place. Every entry says why it exists and why at that pace.

The dispatcher runs often and cheaply; the work it enqueues is idempotent (a check claims
its unique (deployment, window) row), so any number of beat processes may run.
"""

from __future__ import annotations

import os
from typing import Any

from governance.outbox.names import (
    AUDIT_CHECKPOINT_TASK,
    DISPATCH_CHECKS_TASK,
    DISPATCH_ROLLOUTS_TASK,
    QUEUE_OF,
    SWEEP_OUTBOX_TASK,
)

DISPATCH_EVERY = float(os.environ.get("GOVERN_DISPATCH_SECONDS", "5"))
OUTBOX_EVERY = float(os.environ.get("GOVERN_OUTBOX_SWEEP_SECONDS", "10"))
CHECKPOINT_EVERY = float(os.environ.get("GOVERN_CHECKPOINT_SECONDS", "3600"))


def _entry(task: str, every: float, *, expires: float) -> dict[str, Any]:
    # a beat that fell behind drops stale runs (``expires``) instead of piling them up
    return {"task": task, "schedule": every, "options": {"queue": QUEUE_OF[task], "expires": expires}}


def beat_schedule() -> dict[str, dict[str, Any]]:
    return {
        # Checks every active deployment at its own policy's interval: every few seconds it
        # enqueues the checks whose window has just closed. Window keys come from the
        # deployment and the interval-aligned window start, so two beats make the same key.
        "dispatch-drift-checks": _entry(DISPATCH_CHECKS_TASK, DISPATCH_EVERY, expires=DISPATCH_EVERY * 2),
        # Analyses every running rollout at its policy's `rollout.interval_seconds`: every few
        # seconds it queues the rollouts whose interval since their last verdict has passed, one
        # task per (rollout, step, last verdict), so a canary that leaks is aborted within seconds.
        "dispatch-rollouts": _entry(DISPATCH_ROLLOUTS_TASK, DISPATCH_EVERY, expires=DISPATCH_EVERY * 2),
        # Catches outbox rows whose immediate send was lost (a crash between commit and
        # send): promotions, rollbacks and queued gate runs are delivered within seconds.
        "sweep-outbox": _entry(SWEEP_OUTBOX_TASK, OUTBOX_EVERY, expires=OUTBOX_EVERY * 2),
        # A signed checkpoint of the audit chain every hour bounds what an attacker with
        # database access could rewrite unnoticed (skipped when no signing key exists).
        "audit-checkpoint": _entry(AUDIT_CHECKPOINT_TASK, CHECKPOINT_EVERY, expires=CHECKPOINT_EVERY),
    }
