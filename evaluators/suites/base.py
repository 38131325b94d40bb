"""The suite interface of the evaluation gate: cases, results, and a registry by name.

A suite ships its own cases (``Case``: id, category, prompt, expected behaviour) and
judges outputs with ``evaluate(cases, candidate_outputs, baseline_outputs, policy)``, a
pure function of texts: no model, no I/O, so every verdict can be tested on synthetic
outputs and recomputed from the evidence. Generation lives in ``evaluators.runner``.
``get_suite(name)`` finds a registered suite (the package registers the built-in ones
on import); an unknown name lists the known ones.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, TypeVar

from governance.policy import Policy


@dataclass(frozen=True)
class Case:
    """One prompt of a suite. ``expected`` names the behaviour that passes (e.g. ``refuse``)."""

    id: str
    category: str
    prompt: str
    expected: str
    # Suite-specific data: the exact answer, the probe a counterfactual belongs to, ...
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Metric:
    """One number a verdict rests on, with the threshold it was held to and its uncertainty."""

    name: str
    value: float | None
    threshold: float | None
    passed: bool
    n: int
    # "<=" or ">=": how value is compared with threshold (for the reader of the report).
    comparator: str = "<="
    p_value: float | None = None
    # The p-value after the family-wise correction the verdict used (None: not a test).
    p_adjusted: float | None = None
    interval: tuple[float, float] | None = None
    baseline: str | None = None
    # Does this metric decide the verdict, or is it reported for context only?
    decisive: bool = True
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = list(self.interval) if self.interval is not None else None
        return d


@dataclass(frozen=True)
class CaseResult:
    case_id: str
    category: str
    prompt: str
    candidate_output: str
    baseline_outputs: dict[str, str]
    passed: bool
    scores: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Waiver:
    """A bound not enforced because the bare base model breaks it too (see ``report.WaiverReport``).

    ``name`` is what an officer acknowledges on approval; unique within a gate.
    """

    name: str
    suite: str
    metric: str
    bound: float | None
    comparator: str
    base_value: float | None
    candidate_value: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SuiteResult:
    suite: str
    passed: bool
    metrics: list[Metric]
    cases: list[CaseResult]
    notes: list[str] = field(default_factory=list)
    # Free-form extras for the report (per-group tables, expectation outcomes, ...).
    details: dict[str, Any] = field(default_factory=dict)
    # bounds waived because the base breaks them too (the report lists them gate-wide)
    waivers: list[Waiver] = field(default_factory=list)

    @property
    def n_cases(self) -> int:
        return len(self.cases)

    def failing_metrics(self) -> list[Metric]:
        return [m for m in self.metrics if m.decisive and not m.passed]

    def failing_cases(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "passed": self.passed,
            "n_cases": self.n_cases,
            "metrics": [m.to_dict() for m in self.metrics],
            "notes": list(self.notes),
            "details": self.details,
            "cases": [c.to_dict() for c in self.cases],
        }


class SuiteInputError(ValueError):
    """Outputs that do not line up with the cases (wrong count, missing baseline)."""


class Suite(ABC):
    """A gate suite. Subclasses set ``name`` and implement ``load_cases`` and ``evaluate``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @abstractmethod
    def load_cases(self) -> list[Case]:
        """The suite's shipped cases, in a fixed order."""

    def select_cases(self, cases: Sequence[Case], limit: int | None) -> list[Case]:
        """A fixed subset of about ``limit`` cases, stratified by category.

        Matched sets stay whole (cases sharing ``meta["probe"]`` are one unit), units are
        taken round-robin over categories in their shipped order, and the result keeps the
        shipped order: the same policy always gates on the same cases.
        """
        if limit is None or limit >= len(cases):
            return list(cases)
        units: dict[str, list[int]] = {}
        for i, c in enumerate(cases):
            units.setdefault(str(c.meta.get("probe", c.id)), []).append(i)
        by_category: dict[str, list[list[int]]] = {}
        for members in units.values():
            by_category.setdefault(cases[members[0]].category, []).append(members)
        chosen: list[int] = []
        queues = [list(v) for v in by_category.values()]
        while len(chosen) < limit and any(queues):
            for q in queues:
                if q and len(chosen) < limit:
                    chosen.extend(q.pop(0))
        return [cases[i] for i in sorted(chosen)]

    @abstractmethod
    def evaluate(
        self,
        cases: Sequence[Case],
        candidate_outputs: Sequence[str],
        baseline_outputs: Mapping[str, Sequence[str]],
        policy: Policy,
    ) -> SuiteResult:
        """Judge the candidate's outputs (and the baselines', same order as ``cases``)."""

    @staticmethod
    def check_aligned(
        cases: Sequence[Case], candidate_outputs: Sequence[str], baseline_outputs: Mapping[str, Sequence[str]]
    ) -> None:
        n = len(cases)
        if len(candidate_outputs) != n:
            raise SuiteInputError(f"got {len(candidate_outputs)} candidate outputs for {n} cases")
        for name, outs in baseline_outputs.items():
            if len(outs) != n:
                raise SuiteInputError(f"got {len(outs)} outputs of baseline {name!r} for {n} cases")
        ids = [c.id for c in cases]
        if len(set(ids)) != n:
            raise SuiteInputError("case ids must be unique within a suite")


class UnknownSuiteError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


_REGISTRY: dict[str, type[Suite]] = {}
S = TypeVar("S", bound=type[Suite])


def register(cls: S) -> S:
    """Class decorator: make a suite findable by its ``name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a suite named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def get_suite(name: str) -> Suite:
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise UnknownSuiteError(f"unknown suite {name!r} (known: {', '.join(sorted(_REGISTRY))})")


def cases_digest(cases: Sequence[Case]) -> str:
    """sha256 over a canonical encoding of the cases (what the base-output cache is keyed by)."""
    payload = json.dumps([c.to_dict() for c in cases], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def by_category(cases: Sequence[Case]) -> dict[str, list[int]]:
    """Case indices per category, in first-seen order."""
    out: dict[str, list[int]] = {}
    for i, c in enumerate(cases):
        out.setdefault(c.category, []).append(i)
    return out


Judge = Callable[[Case, str], bool]
