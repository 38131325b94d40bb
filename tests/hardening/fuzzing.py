"""Schemathesis plumbing shared by the fuzz tests: the checks, the leak check, the per-operation runner.

Schemathesis 4.x: `schemathesis.openapi.from_asgi` loads the app's own OpenAPI document,
each operation gives a Hypothesis strategy of cases (`APIOperation.as_strategy`), and
`Case.call` sends a case through the ASGI app in-process. We drive Hypothesis directly
(`@given` inside the test) so the cases run against the run's real database and Redis
with fixtures of our own; failures of all operations are collected and reported
together instead of stopping at the first.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

LEAK_MARKERS = ("Traceback", "psycopg", "sqlalchemy", 'File "/')


@dataclass
class Secrets:
    """What no response may contain: the test keys, their prefixes as `gov_<prefix>_`, their hashes."""

    keys: list[str]
    hashes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from governance.auth.service import hash_key

        self.hashes = [hash_key(k) for k in self.keys]
        self.prefixes = ["_".join(k.split("_")[:2]) + "_" for k in self.keys]


def leak_problems(text: str, secrets: Secrets) -> list[str]:
    problems = [f"body contains {m!r}" for m in LEAK_MARKERS if m.lower() in text.lower()]
    problems += ["body contains a test API key" for k in secrets.prefixes if k in text]
    problems += ["body contains a test key hash" for h in secrets.hashes if h in text]
    return problems


def make_leak_check(secrets: Secrets) -> Any:
    def no_leaks(ctx: Any, response: Any, case: Any) -> bool:
        text = response.content.decode("utf-8", "replace") if response.content else ""
        text += " " + " ".join(f"{k}: {v}" for k, v in response.headers.items())
        problems = leak_problems(text, secrets)
        if problems:
            raise AssertionError("; ".join(problems))
        return True

    return no_leaks


def not_a_server_error(ctx: Any, response: Any, case: Any) -> bool:
    if response.status_code >= 500:
        raise AssertionError(f"server error {response.status_code}: {response.content[:300]!r}")
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
HEX64 = re.compile(r"\b[0-9a-f]{64}\b")


def strip_auth(case: Any) -> None:
    """Cases never carry credentials of their own: the run's identity is the only one sent."""
    if case.headers:
        for name in list(case.headers):
            if name.lower() in {"authorization", "x-api-key", "cookie"}:
                del case.headers[name]


def load_schema(app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def fuzz_operations(
    app: Any,
    *,
    headers: dict[str, str],
    secrets: Secrets,
    examples: int,
    modes: Iterable[GenerationMode] = (GenerationMode.POSITIVE,),
    path_parameters: dict[str, Any] | None = None,
    seen: dict[int, int] | None = None,
    random_paths: bool = True,
    checks: list[Any] | None = None,
    skip: Iterable[str] = (),
) -> list[str]:
    """Fuzz every operation of the app's schema as one identity; returns the failures found."""
    schema = load_schema(app)
    checks = [*(CHECKS if checks is None else checks), make_leak_check(secrets)]
    failures: list[str] = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.label in skip:
            continue
        fixed = {k: v for k, v in (path_parameters or {}).items() if k in op.path}
        for mode in modes:
            strategies = [op.as_strategy(generation_mode=mode)] if random_paths or not fixed else []
            if fixed:
                strategies.append(op.as_strategy(generation_mode=mode, path_parameters=fixed))
            for strategy in strategies:
                failures += _run(strategy, f"{op.label} [{mode.value}]", headers, checks, examples, seen)
    return failures


def _run(
    strategy: Any, label: str, headers: dict[str, str], checks: list[Any], examples: int, seen: dict[int, int] | None
) -> list[str]:
    errors: list[str] = []

    @hsettings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        strip_auth(case)
        response = case.call(headers=headers)
        if seen is not None:
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except (Exception, BaseExceptionGroup) as exc:  # collect; all operations are reported at the end
            if len(errors) < 3:
                errors.append(f"{label} -> {response.status_code}: {str(exc)[:1500]}")

    with contextlib.suppress(Unsatisfiable):  # negative data for an operation without input: nothing to send
        run()
    return errors
