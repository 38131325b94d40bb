"""The gate-report contract: typed models of what the evaluators write and every reader reads.

The evaluators (``evaluators.runner``) build a ``GateReport`` from their suites' results
and validate it here before anything is stored; ``evaluators.store`` writes its
``GateSummary`` (no cases) into ``gate_runs.summary`` and each ``CaseReport`` as a row;
``governance.gates.service`` reads both back into a ``GateReport``, and the dashboards,
the CLI and the HTML page read only these models. Numbers keep their JSON type (an
integer stays an integer) because the evidence digest hashes them canonically. Stored
JSON that does not fit the models is refused with ``ReportUnreadable`` naming the run and
the field, never guessed at; a key written by an older runner that is simply absent reads
with the default the old reader used. ``format_number`` is the one way a report's numbers
are shown to a person (terminal, HTML page, dashboard).
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, with_config
from typing_extensions import TypedDict

REPORT_SCHEMA = 1
# A JSON number as written: ints stay ints, so the canonical encoding (and the digest) is unchanged.
Number = int | float


def format_number(value: Any) -> str:
    """A report value as a person reads it: 4 significant digits, tiny p-values in e-notation.

    None is "—" (not measured); NaN is "NaN" (measured, but undefined, e.g. a rate over
    no cases), never "nan" or "—", so the reader can tell the two apart; infinities are
    "inf"/"-inf"; booleans "yes"/"no"; a pair (an interval) "[lo, hi]"; a mapping is
    shown as sorted JSON, cut at 200 characters.
    """
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.2e}"
        return f"{value:.4g}"
    if isinstance(value, list | tuple) and len(value) == 2:
        return f"[{format_number(value[0])}, {format_number(value[1])}]"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)[:200]
    return str(value)


class ReportUnreadable(ValueError):
    """Stored report JSON that does not fit the contract (an unknown key, a wrong type)."""


class _Strict(BaseModel):
    # An unknown key is a producer/reader mismatch: refuse it rather than drop it silently.
    model_config = ConfigDict(extra="forbid")


class MetricReport(_Strict):
    """One number a suite's verdict rests on, with its threshold, uncertainty and whether it decides.

    ``comparator`` says how ``value`` is held to ``threshold``; ``p_value`` is the raw
    test's, ``p_adjusted`` after the family-wise (Holm) correction the verdict used;
    ``baseline`` names the system a relative metric compares with (base, active); a
    metric with ``decisive`` false is reported for context only.
    """

    name: str
    value: Number | None = None
    threshold: Number | None = None
    passed: bool
    n: int = 0
    comparator: Literal["<=", ">="] = "<="
    p_value: Number | None = None
    p_adjusted: Number | None = None
    interval: tuple[Number, Number] | None = None
    baseline: str | None = None
    decisive: bool = True
    detail: str = ""


class CaseReport(_Strict):
    """One case as judged: the prompt, the candidate's and each baseline's output, the suite's scores.

    ``baseline_outputs`` maps a system (``base``, ``active``) to its output; ``scores``
    are the suite's own per-case values (violation and reason, extracted answer, group).
    """

    case_id: str
    category: str
    prompt: str
    candidate_output: str
    baseline_outputs: dict[str, str] = Field(default_factory=dict)
    passed: bool
    scores: dict[str, Any] = Field(default_factory=dict)


class SuiteReport(_Strict):
    """One suite's verdict, its metrics, notes for the reader, its own detail tables and its cases.

    ``details`` are the suite's free-form tables (compliance: per-category rates and the
    expectation outcomes; bias: per-attribute statistics; reasoning: accuracies); the
    form-vs-knowledge summary reads them, the pages do not.
    """

    suite: str
    passed: bool
    n_cases: int
    metrics: list[MetricReport] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)
    cases: list[CaseReport] = Field(default_factory=list)

    def failing_metrics(self) -> list[MetricReport]:
        return [m for m in self.metrics if m.decisive and not m.passed]

    def failing_cases(self) -> list[CaseReport]:
        return [c for c in self.cases if not c.passed]


class FormVsKnowledge(TypedDict, total=False):
    """How far the token moved form (refusals, length, violations) against knowledge (accuracy).

    ``form`` and ``knowledge`` map a delta's name (candidate minus bare base) to its
    value; ``reading`` is the one-sentence interpretation. A plain mapping, so readers
    index it (``fvk["reading"]``).
    """

    form: dict[str, Number]
    knowledge: dict[str, Number]
    reading: str


class BatchingSettings(TypedDict, total=False):
    """Which rows decode side by side: continuous batching ``width`` rows at a time, in groups."""

    kind: str
    width: int
    group_batches: int


@with_config(ConfigDict(extra="allow"))
class DecodingSettings(TypedDict, total=False):
    """The decoding settings that change outputs (part of the evidence and of the base-cache key).

    These are ``AlignerGenerator``'s; another ``Generator`` may report further settings,
    which are kept as they are (they are hashed into the evidence).
    """

    strategy: str
    max_new_tokens: int
    system: str | None
    chat_template: bool
    batching: BatchingSettings


class RunInfo(TypedDict, total=False):
    """How the run went (not evidence: timings differ between identical runs)."""

    rows_generated: int
    batches: int  # generation groups planned (the stored key predates the name "group")
    base_cached: list[str]
    generation_seconds: float
    total_seconds: float


class GateReport(_Strict):
    """Everything a gate verdict rests on: digests, decoding, every suite with its cases, and the verdict.

    ``evidence()`` is the canonical bundle that ``evidence_digest`` hashes; ``to_dict()``
    is the full JSON (verdict first); ``stored_summary()`` is what ``gate_runs.summary``
    holds (the cases are stored as rows).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_version: int = Field(REPORT_SCHEMA, alias="schema")
    verdict: Literal["passed", "failed"]
    evidence_digest: str = ""
    policy_sha256: str
    candidate_digest: str = ""
    active_digest: str | None = None
    base_digest: str = ""
    decoding: DecodingSettings = Field(default_factory=lambda: DecodingSettings())
    form_vs_knowledge: FormVsKnowledge = Field(default_factory=lambda: FormVsKnowledge())
    suites: list[SuiteReport] = Field(default_factory=list)
    run: RunInfo = Field(default_factory=lambda: RunInfo())

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"

    def evidence(self) -> dict[str, Any]:
        """The canonical evidence bundle that ``evidence_digest`` hashes (no run info, no digest)."""
        return self.model_dump(mode="json", by_alias=True, exclude={"evidence_digest", "run"})

    def to_dict(self) -> dict[str, Any]:
        """The full report as JSON: verdict and digest first, then the evidence, then the run."""
        d: dict[str, Any] = {"verdict": self.verdict, "evidence_digest": self.evidence_digest}
        d.update({k: v for k, v in self.evidence().items() if k != "verdict"})
        d["run"] = dict(self.run)
        return d

    def stored_summary(self) -> GateSummary:
        """Per suite: verdict, metrics, notes, failing-case count (no cases); the digests and the details."""
        return GateSummary(
            verdict=self.verdict,
            evidence_digest=self.evidence_digest,
            policy_sha256=self.policy_sha256,
            form_vs_knowledge=self.form_vs_knowledge,
            suites={
                s.suite: StoredSuite(passed=s.passed, n_cases=s.n_cases, failing_cases=len(s.failing_cases()),
                                     metrics=s.metrics, notes=s.notes)
                for s in self.suites
            },
            run=self.run,
            candidate_digest=self.candidate_digest,
            active_digest=self.active_digest,
            base_digest=self.base_digest,
            decoding=self.decoding,
            details={s.suite: s.details for s in self.suites},
        )


class StoredSuite(_Strict):
    """A suite as ``gate_runs.summary`` holds it: verdict, case count, failing-case count, metrics, notes."""

    passed: bool
    n_cases: int = 0
    failing_cases: int = 0
    metrics: list[MetricReport] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class GateSummary(_Strict):
    """The JSON of ``gate_runs.summary``: the report without its cases (they are rows of their own).

    Every key has the default the pre-contract reader used when it was absent, so rows of
    a running gate (``{}``) and of older runners read; an unknown key or a wrong type does not.
    """

    verdict: Literal["passed", "failed"] | None = None
    evidence_digest: str = ""
    policy_sha256: str = ""
    form_vs_knowledge: FormVsKnowledge = Field(default_factory=lambda: FormVsKnowledge())
    suites: dict[str, StoredSuite] = Field(default_factory=dict)
    run: RunInfo = Field(default_factory=lambda: RunInfo())
    candidate_digest: str = ""
    active_digest: str | None = None
    base_digest: str = ""
    decoding: DecodingSettings = Field(default_factory=lambda: DecodingSettings())
    details: dict[str, dict[str, Any]] = Field(default_factory=dict)


def read_summary(data: Any, *, source: str = "gate run") -> GateSummary:
    """Validate a stored ``gate_runs.summary`` (None reads as empty); ``ReportUnreadable`` if it does not fit."""
    try:
        return GateSummary.model_validate(data or {})
    except ValidationError as exc:
        raise ReportUnreadable(f"{source}: the stored gate summary does not fit the report contract "
                               f"({exc.error_count()} problems): {_first_problem(exc)}") from exc


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    return f"{where}: {err['msg']}"
