"""Windows of production outputs and the uniform random sample a check judges.

A window is every output recorded for the deployment since the previous check (by
output id: ids only increase, so nothing is counted twice or skipped, however late a
batch arrives), restricted to the version the check is about. The sample is uniform
without replacement at the policy's rate, never below ``min_samples``; a window with
fewer outputs than that is "inconclusive", never "drift", and its outputs are not used
up: they wait for the next window (a quiet deployment is judged less often, not never),
and the reference takes only what it needs. The random generator is seeded
by the window key, so a redelivered check draws the same sample.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from governance.monitoring.models import DriftCheck
from governance.outputs import service as outputs
from monitors.descriptors import OutputRecord, prompt_of


@dataclass
class WindowSample:
    after_id: int  # exclusive lower bound (the previous check's last output id)
    upto_id: int  # inclusive upper bound
    population: int  # outputs of this version in (after_id, upto_id]
    sample: list[OutputRecord] = field(default_factory=list)
    inconclusive_reason: str | None = None

    @property
    def size(self) -> int:
        return len(self.sample)


def sample_size(population: int, rate: float, min_samples: int) -> int:
    """How many outputs to judge: ``ceil(rate * N)`` but at least ``min_samples`` (and at most N)."""
    if not 0 < rate <= 1:
        raise ValueError(f"sample rate must be in (0, 1] (got {rate})")
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1 (got {min_samples})")
    return min(population, max(math.ceil(rate * population), min_samples))


def seed_for(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def window_range(session: Session, *, deployment_id: int, exclude_check_id: int | None = None) -> tuple[int, int]:
    """(after_id, upto_id): outputs recorded since the last check of this deployment, up to now."""
    stmt = select(func.max(DriftCheck.last_output_id)).where(DriftCheck.deployment_id == deployment_id)
    if exclude_check_id is not None:
        stmt = stmt.where(DriftCheck.id != exclude_check_id)
    after = session.scalar(stmt) or 0
    upto = outputs.last_output_id(session, deployment_id=deployment_id)
    return int(after), int(max(upto, after))


def load_records(session: Session, ids: list[int]) -> list[OutputRecord]:
    return [OutputRecord(i, prompt_of(messages), output)
            for i, messages, output in outputs.output_texts(session, ids=ids)]


def sample_window(
    session: Session,
    *,
    deployment_id: int,
    version_id: int | None,
    after_id: int,
    upto_id: int,
    rate: float,
    min_samples: int,
    key: str,
) -> WindowSample:
    ids = outputs.output_ids(session, deployment_id=deployment_id, version_id=version_id, after_id=after_id,
                             upto_id=upto_id)
    win = WindowSample(after_id, upto_id, len(ids))
    if len(ids) < min_samples:
        win.inconclusive_reason = f"{len(ids)} outputs in the window, fewer than min_samples={min_samples}"
        return win
    k = sample_size(len(ids), rate, min_samples)
    rng = np.random.default_rng(seed_for(key))
    chosen = sorted(int(ids[i]) for i in rng.choice(len(ids), size=k, replace=False))
    win.sample = load_records(session, chosen)
    return win
