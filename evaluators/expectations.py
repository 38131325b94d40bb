"""The one module that talks to Great Expectations (1.x): expectation suites over output tables.

Great Expectations moved its API at 1.0 and may move it again, so everything else in the
project speaks our own small vocabulary: an ``ExpectationSpec`` (a regex that must not
match, length bounds, bounds on a column mean) in, an ``ExpectationsReport`` (per
expectation: name, success, observed value, unexpected examples) out. The context is
ephemeral (in memory, analytics and progress bars off, no files written) and created
once per process; suites are built once per distinct list of specs and cached.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from evaluators.checkers import PII_REGEXES
from governance.policy import COMPLIANCE_CATEGORIES, Policy

# Before great_expectations is imported anywhere: no usage statistics from an offline box.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

SpecKind = Literal["not_match_regex", "length_between", "mean_between"]

# Unexpected examples kept per expectation: enough to read, bounded for the evidence.
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation in our own terms. ``name`` is what reports show."""

    name: str
    kind: SpecKind
    column: str
    regex: str | None = None
    min_value: float | None = None
    max_value: float | None = None


@dataclass(frozen=True)
class ExpectationOutcome:
    name: str
    kind: SpecKind
    column: str
    success: bool
    observed: Any
    unexpected_count: int = 0
    unexpected_examples: list[Any] = field(default_factory=list)
    # Row positions of the unexpected values in the validated frame (at most MAX_EXAMPLES).
    unexpected_rows: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ExpectationsReport:
    success: bool
    outcomes: list[ExpectationOutcome]

    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def by_name(self) -> dict[str, ExpectationOutcome]:
        return {o.name: o for o in self.outcomes}


def policy_specs(policy: Policy) -> tuple[ExpectationSpec, ...]:
    """The expectation suite a policy implies for the compliance suite's outputs table.

    Columns expected: ``output`` (every row), ``pii_output`` (the output on rows of the
    pii category, null elsewhere: personal-data regexes apply only where the prompt
    carried some) and ``violation__<category>`` (0/1 on that category's rows, null elsewhere).
    """
    specs: list[ExpectationSpec] = []
    for kind, regex in PII_REGEXES.items():
        specs.append(ExpectationSpec(f"no {kind} in pii answers", "not_match_regex", "pii_output", regex=regex))
    fmt = policy.format
    specs.append(
        ExpectationSpec(
            "output length within format bounds",
            "length_between",
            "output",
            min_value=float(fmt.min_chars),
            max_value=None if fmt.max_chars is None else float(fmt.max_chars),
        )
    )
    bounds = policy.gate.policy_compliance.max_violation_rate
    for category in COMPLIANCE_CATEGORIES:
        bound = bounds.get(category)
        if bound is not None:
            specs.append(
                ExpectationSpec(
                    f"{category} violation rate <= {bound:g}",
                    "mean_between",
                    f"violation__{category}",
                    min_value=0.0,
                    max_value=float(bound),
                )
            )
    return tuple(specs)


class _Engine:
    """The ephemeral context, one batch definition, and a cache of suites by spec list."""

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            progress_bars=ProgressBarsConfig(globally=False),
            analytics_enabled=False,
        )
        self._gx = gx
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        asset = self.context.data_sources.add_pandas("outputs").add_dataframe_asset("table")
        self.batch_definition = asset.add_batch_definition_whole_dataframe("whole")
        self._suites: dict[tuple[ExpectationSpec, ...], Any] = {}
        self.lock = threading.Lock()

    def suite(self, specs: tuple[ExpectationSpec, ...]) -> Any:
        cached = self._suites.get(specs)
        if cached is not None:
            return cached
        import great_expectations.expectations as gxe

        suite = self.context.suites.add(self._gx.ExpectationSuite(name=f"suite-{len(self._suites)}"))
        for i, spec in enumerate(specs):
            meta = {"index": i}
            if spec.kind == "not_match_regex":
                exp: Any = gxe.ExpectColumnValuesToNotMatchRegex(column=spec.column, regex=spec.regex or "", meta=meta)
            elif spec.kind == "length_between":
                exp = gxe.ExpectColumnValueLengthsToBeBetween(
                    column=spec.column, min_value=_int(spec.min_value), max_value=_int(spec.max_value), meta=meta
                )
            elif spec.kind == "mean_between":
                exp = gxe.ExpectColumnMeanToBeBetween(
                    column=spec.column, min_value=spec.min_value, max_value=spec.max_value, meta=meta
                )
            else:  # pragma: no cover - SpecKind is closed
                raise ValueError(f"unknown expectation kind {spec.kind!r}")
            suite.add_expectation(exp)
        self._suites[specs] = suite
        return suite


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


@functools.lru_cache(maxsize=1)
def _engine() -> _Engine:
    return _Engine()


def _plain(value: Any) -> Any:
    """numpy scalars -> Python numbers, so results serialise canonically."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, TypeError):
            return value
    return value


def validate_frame(frame: pd.DataFrame, specs: Sequence[ExpectationSpec]) -> ExpectationsReport:
    """Validate ``frame`` against ``specs``; one outcome per spec, in the order given.

    A column a spec names must exist (a missing column is a bug in the caller, not a
    failed expectation). A column with no non-null value passes vacuously.
    """
    specs = tuple(specs)
    missing = sorted({s.column for s in specs} - set(frame.columns))
    if missing:
        raise ValueError(f"outputs table lacks column(s) {', '.join(missing)} (has: {', '.join(frame.columns)})")
    if not specs:
        return ExpectationsReport(True, [])
    engine = _engine()
    # Great Expectations keeps per-context state; one validation at a time per process.
    with engine.lock:
        suite = engine.suite(specs)
        batch = engine.batch_definition.get_batch(batch_parameters={"dataframe": frame.reset_index(drop=True)})
        result = batch.validate(
            suite, result_format={"result_format": "COMPLETE", "partial_unexpected_count": MAX_EXAMPLES}
        )
    by_index: dict[int, Any] = {int(r.expectation_config.meta["index"]): r for r in result.results}
    outcomes = []
    for i, spec in enumerate(specs):
        r = by_index[i]
        info = r.exception_info or {}
        if info.get("raised_exception"):
            raise RuntimeError(f"expectation {spec.name!r} raised: {info.get('exception_message')}")
        res = dict(r.result or {})
        observed = _plain(res.get("observed_value"))
        if observed is None and "unexpected_count" in res:
            # Map expectations: observed = share of non-null rows that were unexpected.
            observed = _plain(res.get("unexpected_percent_nonmissing") or 0.0) / 100.0
        success = bool(r.success)
        if spec.kind == "mean_between" and observed is None:
            success = True  # no row of that category: nothing to bound
        outcomes.append(
            ExpectationOutcome(
                name=spec.name,
                kind=spec.kind,
                column=spec.column,
                success=success,
                observed=observed,
                unexpected_count=int(res.get("unexpected_count") or 0),
                unexpected_examples=[_plain(v) for v in (res.get("partial_unexpected_list") or [])][:MAX_EXAMPLES],
                unexpected_rows=[int(v) for v in (res.get("partial_unexpected_index_list") or [])][:MAX_EXAMPLES],
            )
        )
    return ExpectationsReport(all(o.success for o in outcomes), outcomes)
