"""Schemathesis against the serving replica's OpenAPI document (`serving.app.create_app`, tiny model).

The replica runs without the control plane (no database, an unreachable API): it serves
the bare base model, which is enough to fuzz its request handling. Same rules as the
API's fuzzing: no 5xx, answers as documented, no leaks. Serving is owned by its own
package; what this finds is reported there, not patched here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from schemathesis import GenerationMode

from tests.hardening.fuzzing import Secrets, fuzz_operations, not_a_server_error


@pytest.fixture(scope="module")
def tiny(test_state_dir: Path) -> tuple[Any, Any, Any]:
    from aligner.providers import load_base_model

    return load_base_model("tiny-random-llama", state_dir=test_state_dir)


def _serving_app(tiny: tuple[Any, Any, Any], tmp_path: Path) -> Any:
    from serving import app as serving_app  # defers torch (serving.app loads the model stack)
    from tests.serving.helpers import attached_copy

    config = serving_app.ServingConfig(
        deployment="fuzz",
        model="tiny-random-llama",
        max_batch=4,
        queue_size=16,
        api_url="http://127.0.0.1:9",
        api_key="gov_aaaaaaaa_fuzz",
        state_dir=tmp_path / "serving",
        reconcile_interval=30,
        default_max_tokens=4,
        fence=False,
    )
    return serving_app.create_app(config, loaded=attached_copy(tiny))


@pytest.mark.slow
def test_fuzz_serving_no_server_errors_no_leaks(tiny: tuple[Any, Any, Any], tmp_path: Path) -> None:
    """No 5xx and no leaks (``/readyz`` is skipped: without a control plane its 503 is the truth)."""
    app = _serving_app(tiny, tmp_path)
    seen: dict[int, int] = {}
    with TestClient(app):  # runs the lifespan: the engine's thread serves the fuzzer's requests
        failures = fuzz_operations(
            app,
            headers={},
            secrets=Secrets(["gov_aaaaaaaa_fuzz"]),
            examples=10,
            modes=(GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
            seen=seen,
            checks=[not_a_server_error],
            skip={"GET /readyz"},
        )
    print("serving statuses:", dict(sorted(seen.items())))
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow
def test_fuzz_serving_answers_as_documented(tiny: tuple[Any, Any, Any], tmp_path: Path) -> None:
    """Every answer (status, media type, headers, body) is the one the OpenAPI document declares.

    The replica is made ready on the bare base model (generation 0, as a deployment with
    no active version serves), so /readyz answers 200 and completions really generate: a
    not-ready replica's 503s are documented, but `not_a_server_error` refuses every 5xx.
    """
    from serving.tokens import ServedToken

    app = _serving_app(tiny, tmp_path)
    with TestClient(app):
        engine = app.state.serving.engine
        assert engine.propose(ServedToken(None, None, 0, None))
        deadline = time.monotonic() + 10
        while not engine.ready and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.ready, "the replica did not apply the base-model token"
        failures = fuzz_operations(app, headers={}, secrets=Secrets(["gov_aaaaaaaa_fuzz"]), examples=6)
    assert not failures, "\n\n".join(failures)
