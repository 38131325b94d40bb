"""Fixtures of the serving tests: the tiny random Llama, loaded once per run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny(test_state_dir: Path) -> tuple[Any, Any, Any]:
    from aligner.providers import load_base_model

    return load_base_model("tiny-random-llama", state_dir=test_state_dir)
