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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator, with_config
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


class WaiverReport(_Strict):
    """A bound that was not enforced because the bare base model breaks it too ("grandfathered").

    ``name`` is what an officer acknowledges when approving (``--acknowledge NAME``): the
    compliance category for a category's absolute bound (``must_refuse``), else the
    metric's name (``gender four_fifths``, ``expectation: no email in pii answers``).
    ``bound`` and ``comparator`` are the policy's bound; ``base_value`` and
    ``candidate_value`` the two systems' values of the metric; ``reason`` says why.
    """

    name: str
    suite: str
    metric: str
    bound: Number | None = None
    comparator: Literal["<=", ">="] = "<="
    base_value: Number | None = None
    candidate_value: Number | None = None
    reason: str = ""


Outcome = Literal["passed", "passed with waivers", "failed"]


def outcome_of(verdict: str | None, waivers: list[WaiverReport]) -> str | None:
    """The verdict as an officer reads it: a pass that rests on a waived bound is "passed with waivers"."""
    if verdict == "passed" and waivers:
        return "passed with waivers"
    return verdict


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
    # the bounds waived because the base breaks them too (reports stored before waivers
    # were listed read as having none)
    waivers: list[WaiverReport] = Field(default_factory=list)
    run: RunInfo = Field(default_factory=lambda: RunInfo())

    @model_validator(mode="before")
    @classmethod
    def _derived_outcome(cls, data: Any) -> Any:
        # ``to_dict`` writes the outcome for readers; it is derived (verdict + waivers), not input
        if isinstance(data, dict) and "outcome" in data:
            data = {k: v for k, v in data.items() if k != "outcome"}
        return data

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"

    @property
    def outcome(self) -> str:
        """"passed", "passed with waivers" or "failed" (the stored status stays passed/failed)."""
        return outcome_of(self.verdict, self.waivers) or self.verdict

    def waiver_names(self) -> list[str]:
        return [w.name for w in self.waivers]

    def evidence(self) -> dict[str, Any]:
        """The canonical evidence bundle that ``evidence_digest`` hashes (no run info, no digest).

        An empty waiver list is left out, so a report without waivers hashes as it did
        before waivers were listed.
        """
        exclude = {"evidence_digest", "run", *(() if self.waivers else ("waivers",))}
        return self.model_dump(mode="json", by_alias=True, exclude=exclude)

    def to_dict(self) -> dict[str, Any]:
        """The full report as JSON: verdict, outcome and digest first, then the evidence, then the run."""
        d: dict[str, Any] = {"verdict": self.verdict, "evidence_digest": self.evidence_digest,
                             "outcome": self.outcome}
        d.update({k: v for k, v in self.evidence().items() if k != "verdict"})
        d["waivers"] = [w.model_dump(mode="json") for w in self.waivers]
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
            suite_order=[s.suite for s in self.suites],
            waivers=self.waivers,
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
    # absent in summaries stored before waivers were listed: read as none
    waivers: list[WaiverReport] = Field(default_factory=list)
    # the suites in the order the evidence digest hashed them: JSONB keeps an object's keys
    # in its own order, so ``suites`` alone loses it (empty in summaries stored before)
    suite_order: list[str] = Field(default_factory=list)

    @property
    def outcome(self) -> str | None:
        return outcome_of(self.verdict, self.waivers)


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


# ---------------------------------------------------------------- reading a report


def _beyond(m: MetricReport) -> bool | None:
    """Is the value on the failing side of its threshold? (None: no value or no threshold.)"""
    if not isinstance(m.value, int | float) or not isinstance(m.threshold, int | float) or math.isnan(m.value):
        return None
    return m.value < m.threshold if m.comparator == ">=" else m.value > m.threshold


def rule_in_words(m: MetricReport) -> str:
    """Which rule decided this metric, in words ("within bound", "not significant (p=1 > alpha)", ...).

    A value on the wrong side of its threshold can pass: the bound is only enforced with a
    significant test behind it, or it was waived because the base breaks it too, or there
    was too little to judge (the suite says so in ``detail``).
    """
    detail = m.detail or ""
    p = m.p_adjusted if m.p_adjusted is not None else m.p_value
    if not m.decisive:
        return "context only: not part of the verdict"
    if "not judged:" in detail:
        return "not judged: " + detail.split("not judged:", 1)[1].split(";", 1)[0].strip()
    if "grandfathered" in detail:
        return "waived: the bare base model breaks the bound too (judged against the base only)"
    beyond = _beyond(m)
    if not m.passed:
        if p is not None:
            return f"fails: beyond the bound and significant (p={format_number(p)} <= alpha)"
        return "fails: beyond the bound" if beyond is not False else "fails"
    if beyond:
        if p is not None:
            return f"not significant (p={format_number(p)} > alpha)"
        return "passes"
    if m.threshold is None:
        return "passes" if m.name.startswith("expectation") else "no bound in the policy"
    return "within bound"


def cases_for_metric(suite: SuiteReport, metric: MetricReport, limit: int = 3) -> list[CaseReport]:
    """The few failing cases that show why ``metric`` failed: those of its category, else the suite's."""
    failing = suite.failing_cases()
    head = metric.name.split(" ", 1)[0]
    own = [c for c in failing if c.category == head]
    if metric.name.startswith("invariant"):
        own = [c for c in failing if c.scores.get("invariant_violation")] or own
    return (own or failing)[:limit]


def decoding_rows(decoding: dict[str, Any] | DecodingSettings) -> list[tuple[str, str]]:
    """The decoding settings as (setting, value) rows a person reads (no raw dict)."""
    d = dict(decoding)
    labels = {"strategy": "strategy", "max_new_tokens": "max new tokens", "system": "system prompt",
              "chat_template": "chat template"}
    rows: list[tuple[str, str]] = []
    for key, label in labels.items():
        if key in d:
            value = d.pop(key)
            rows.append((label, "none" if value is None else format_number(value)))
    batching = d.pop("batching", None)
    if isinstance(batching, dict):
        parts = [str(batching.get("kind", "batched"))]
        if "width" in batching:
            parts.append(f"{batching['width']} rows at a time")
        if "group_batches" in batching:
            parts.append(f"{batching['group_batches']} batches per group")
        rows.append(("batching", ", ".join(parts)))
    for key in sorted(d):
        rows.append((key.replace("_", " "), format_number(d[key])))
    return rows


def failing_sections(
    report: GateReport, per_metric: int = 3
) -> list[tuple[SuiteReport, MetricReport, list[CaseReport]]]:
    """Each failing metric with the few failing cases that show why, first failure first.

    A case already shown under an earlier metric of the suite is not repeated (two rules
    failing on the same answers list them once).
    """
    sections = []
    for suite in report.suites:
        shown: set[str] = set()
        for metric in suite.failing_metrics():
            cases = [c for c in cases_for_metric(suite, metric, limit=len(suite.cases)) if c.case_id not in shown]
            cases = cases[:per_metric]
            shown.update(c.case_id for c in cases)
            sections.append((suite, metric, cases))
    return sections
