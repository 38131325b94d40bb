"""The gate runner: generate the suites' outputs, judge them, and write the evidence report.

After the suites, the invariants (``evaluators.invariants``) judge every candidate answer
of every suite once more (insults, repeated personal data, empty or runaway answers),
paired with the baselines' answers; they add no generation.

Generation is batched greedy decoding with one token per row: the candidate and the
deployment's active version share batches (each batch holds both rows of a chunk of
cases), and the bare base model runs the same chunk, same prompts and padding, in the
batch right after, which is what lets its outputs be cached without changing the
candidate's batches. Cases are ordered by prompt length so padding stays small. The
base model's outputs are cached in the state folder by (base digest, case-set digest,
decoding settings), so a repeated gate does not regenerate them. Everything after
generation is a pure function of texts: the verdict and the evidence digest (sha256
over a canonical encoding of every prompt, output, score, statistic and threshold,
plus the digests of the policy and the tokens) are the same for the same inputs.
The report is the typed contract ``governance.gates.report.GateReport``
(``dashboards.gate_report_html`` renders it as a page).

The model side is behind the ``Generator`` protocol; ``AlignerGenerator`` implements it
with ``aligner.generation.generate``; tests use a fake.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from evaluators import invariants
from evaluators.checkers import is_refusal
from evaluators.suites.base import Case, Suite, SuiteResult, cases_digest, get_suite
from governance.audit.canonical import canonical_json
from governance.gates.report import GateReport, RunInfo
from governance.policy import Policy

DEFAULT_SUITES = ("policy_compliance", "bias", "reasoning")
CACHE_DIR = "gate_cache"
# A generation group (one ``Generator.generate`` call, one unit of sharding) holds this
# many batches' worth of rows: long enough that continuous batching keeps its rows full,
# short enough that a gate splits into several shards.
GROUP_BATCHES = 8

Progress = Callable[[int, int], None]


class Generator(Protocol):
    """What the runner needs from a model: greedy outputs for prompts, one token per row."""

    #: sha256 of the base model's weights (keys the base-output cache).
    base_digest: str

    def decoding(self) -> dict[str, Any]:
        """The decoding settings that change outputs (max_new_tokens, system prompt, ...)."""
        ...

    def generate(
        self, prompts: Sequence[str], row_tokens: Sequence[Any | None], progress: Callable[[int], None] | None = None,
        *, max_new_tokens: Sequence[int | None] | None = None,
    ) -> list[str]:
        """One output per prompt; ``row_tokens[i]`` is the token for row i (None: bare base).

        ``progress``, when given, may be called with the number of rows finished so far.
        ``max_new_tokens[i]``, when given and not None, caps row i's decoding below the
        generator's own limit (a case's ``meta["max_new_tokens"]``); the runner passes None
        for groups where no case sets one.
        """
        ...


def aligner_decoding(max_new_tokens: int, system: str | None = None, *, width: int = 16) -> dict[str, Any]:
    """The decoding settings of ``AlignerGenerator`` (known without loading the model).

    ``width`` (the policy's ``gate.batch_size``) and the group size decide which rows decode
    side by side, so they are part of the settings the base-output cache is keyed by.
    """
    return {"strategy": "greedy", "max_new_tokens": max_new_tokens, "system": system, "chat_template": True,
            "batching": {"kind": "continuous", "width": width, "group_batches": GROUP_BATCHES}}


class AlignerGenerator:
    """A ``Generator`` over a transformers model with an Aligner adapter attached.

    Each ``generate`` call is one group of rows, decoded ``width`` rows at a time with
    continuous batching (``aligner.batching.generate_continuous``): a finished row leaves
    the batch at once and the next prompt of the group takes its place.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        base_digest: str,
        max_new_tokens: int = 96,
        system: str | None = None,
        width: int = 16,
    ) -> None:
        if width < 1:
            raise ValueError("width must be at least 1")
        self.model, self.tokenizer = model, tokenizer
        self.base_digest = base_digest
        self.max_new_tokens = max_new_tokens
        self.system = system
        self.width = width

    def decoding(self) -> dict[str, Any]:
        return aligner_decoding(self.max_new_tokens, self.system, width=self.width)

    def generate(
        self, prompts: Sequence[str], row_tokens: Sequence[Any | None], progress: Callable[[int], None] | None = None,
        *, max_new_tokens: Sequence[int | None] | None = None,
    ) -> list[str]:
        from aligner.batching import generate_continuous  # defers torch

        limit: int | list[int] = self.max_new_tokens
        if max_new_tokens is not None:
            limit = [self.max_new_tokens if m is None else min(int(m), self.max_new_tokens) for m in max_new_tokens]
        return generate_continuous(self.model, self.tokenizer, list(prompts), row_tokens=list(row_tokens),
                                   max_new_tokens=limit, system=self.system, width=self.width,
                                   progress=progress)


@dataclass(frozen=True)
class Row:
    suite: str
    index: int  # case index within its suite
    system: str  # candidate | active | base


def evidence_digest(evidence: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(dict(evidence)).encode("utf-8")).hexdigest()


# --- base-output cache -----------------------------------------------------------------


def base_cache_key(base_digest: str, suite: str, cases: Sequence[Case], decoding: Mapping[str, Any]) -> str:
    payload = canonical_json({"base": base_digest, "suite": suite, "cases": cases_digest(cases),
                              "decoding": dict(decoding)})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _cache_path(state_dir: Path, key: str) -> Path:
    return state_dir / CACHE_DIR / f"base-{key}.json"


def load_cached_base(state_dir: Path | None, key: str, n: int) -> list[str] | None:
    if state_dir is None:
        return None
    path = _cache_path(state_dir, key)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    outputs = data.get("outputs")
    if data.get("key") != key or not isinstance(outputs, list) or len(outputs) != n:
        return None  # a stale or damaged entry is regenerated, never trusted
    return [str(o) for o in outputs]


def save_cached_base(state_dir: Path | None, key: str, outputs: Sequence[str]) -> None:
    if state_dir is None:
        return
    path = _cache_path(state_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "outputs": list(outputs)}, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)  # atomic: a crashed run never leaves half an entry


# --- generation plan --------------------------------------------------------------------


def plan_rows(
    suite_cases: Mapping[str, Sequence[Case]],
    systems: Mapping[str, Sequence[str]],
    batch_size: int,
    *,
    separate: Sequence[str] = ("base",),
    group_batches: int = GROUP_BATCHES,
) -> list[list[Row]]:
    """Groups of rows, chunk by chunk of cases; each group is one ``Generator.generate`` call.

    Cases are ordered by prompt length (ties by suite and index) and cut into chunks of
    ``batch_size * group_batches // (shared systems)`` cases; the rows of the shared systems
    (candidate, active) of a chunk form one group, so they decode side by side with
    per-row tokens (``batch_size`` rows at a time). The ``separate`` systems (the
    cacheable bare base) get a group of their own right after, over the same chunk. So
    the candidate's groups are the same whether the base is cached or not, and however
    the groups are sharded: a repeated gate reproduces the candidate's outputs bit for bit.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if group_batches < 1:
        raise ValueError("group_batches must be at least 1")
    shared_n = max((len([x for x in v if x not in separate]) for v in systems.values()), default=1)
    cases_per_group = max(1, batch_size * group_batches // max(1, shared_n))
    ordered = sorted(
        ((suite, i, case) for suite, cases in suite_cases.items() for i, case in enumerate(cases)),
        key=lambda t: (len(t[2].prompt), t[0], t[1]),
    )
    groups: list[list[Row]] = []
    for start in range(0, len(ordered), cases_per_group):
        chunk = ordered[start : start + cases_per_group]
        for wanted in (lambda x: x not in separate, lambda x: x in separate):
            group = [Row(suite, i, sys) for suite, i, _case in chunk for sys in systems[suite] if wanted(sys)]
            if group:
                groups.append(group)
    return groups


def generate_rows(
    generator: Generator,
    groups: Sequence[Sequence[Row]],
    suite_cases: Mapping[str, Sequence[Case]],
    tokens: Mapping[str, Any | None],
    progress: Progress | None = None,
) -> dict[Row, str]:
    """Run the groups; returns the output of every row. (A shard is any subset of groups.)"""
    total = sum(len(g) for g in groups)
    done = 0
    out: dict[Row, str] = {}
    for group in groups:
        prompts = [suite_cases[r.suite][r.index].prompt for r in group]

        rows_done = None
        if progress is not None:
            def rows_done(k: int, report: Progress = progress, before: int = done, size: int = len(group)) -> None:
                report(before + min(k, size), total)

        budgets = [suite_cases[r.suite][r.index].meta.get("max_new_tokens") for r in group]
        outputs = generator.generate(prompts, [tokens[r.system] for r in group], progress=rows_done,
                                     max_new_tokens=budgets if any(b is not None for b in budgets) else None)
        if len(outputs) != len(group):
            raise RuntimeError(f"generator returned {len(outputs)} outputs for {len(group)} prompts")
        out.update(zip(group, outputs, strict=True))
        done += len(group)
        if progress is not None:
            progress(done, total)
    return out


# --- the gate ----------------------------------------------------------------------------


@dataclass
class GatePlan:
    """What a gate generates, fixed before any generation (so shards agree on it)."""

    suites: list[Suite]
    suite_cases: dict[str, list[Case]]
    decoding: dict[str, Any]
    base_digest: str
    has_active: bool
    # suites whose base outputs come from the cache (not generated in this gate)
    cached: dict[str, list[str]]
    cache_keys: dict[str, str]
    groups: list[list[Row]]  # generation groups, in plan order
    # the suites planned as cached (may name a suite whose outputs this process lacks)
    assumed_cached: list[str] = field(default_factory=list)

    def shard(self, index: int, count: int) -> list[list[Row]]:
        """Every ``count``-th group from ``index``: shards of (almost) equal work."""
        if not 0 <= index < count:
            raise ValueError(f"shard index must be in [0, {count}) (got {index})")
        return self.groups[index::count]

    @property
    def rows(self) -> int:
        return sum(len(g) for g in self.groups)


def plan_gate(
    *,
    base_digest: str,
    decoding: Mapping[str, Any],
    policy: Policy,
    has_active: bool,
    state_dir: str | Path | None = None,
    suites: Sequence[str | Suite] = DEFAULT_SUITES,
    cases: Mapping[str, Sequence[Case]] | None = None,
    assume_cached: Sequence[str] | None = None,
) -> GatePlan:
    """Load the cases, look up the cached base outputs, and cut the rows into generation groups.

    ``assume_cached`` fixes which suites' base outputs count as cached (a sharded gate
    decides once, so every worker plans the same groups); their outputs are loaded if
    this process can see them, and ``finish_gate`` insists on them.
    """
    state = Path(state_dir) if state_dir is not None else None
    suite_objs = [get_suite(s) if isinstance(s, str) else s for s in suites]
    suite_cases = {
        s.name: list(cases[s.name]) if cases and s.name in cases
        else s.select_cases(s.load_cases(), policy.gate.max_cases.get(s.name))  # type: ignore[call-overload]
        for s in suite_objs
    }
    cached: dict[str, list[str]] = {}
    keys: dict[str, str] = {}
    systems: dict[str, list[str]] = {}
    for s in suite_objs:
        keys[s.name] = base_cache_key(base_digest, s.name, suite_cases[s.name], decoding)
        hit = load_cached_base(state, keys[s.name], len(suite_cases[s.name]))
        is_cached = hit is not None if assume_cached is None else s.name in assume_cached
        if hit is not None and is_cached:
            cached[s.name] = hit
        systems[s.name] = ["candidate", *(["active"] if has_active else []), *([] if is_cached else ["base"])]
    groups = plan_rows(suite_cases, systems, policy.gate.batch_size)
    plan = GatePlan(suite_objs, suite_cases, dict(decoding), base_digest, has_active, cached, keys, groups)
    plan.assumed_cached = sorted(assume_cached) if assume_cached is not None else sorted(cached)
    return plan


def finish_gate(
    plan: GatePlan,
    outputs: Mapping[Row, str],
    *,
    policy: Policy,
    policy_sha256: str,
    candidate_digest: str,
    active_digest: str | None,
    state_dir: str | Path | None = None,
) -> GateReport:
    """Judge the generated outputs (all shards merged), store new base outputs, build the report."""
    state = Path(state_dir) if state_dir is not None else None
    absent = [name for name in plan.assumed_cached if name not in plan.cached]
    if absent:
        raise ValueError(f"base outputs of {', '.join(absent)} were planned as cached but this worker has no "
                         f"cache entry for them (share the state folder between gate workers)")
    missing = [r for g in plan.groups for r in g if r not in outputs]
    if missing:
        raise ValueError(f"{len(missing)} planned rows have no output (e.g. {missing[0]}); is a shard missing?")
    results: list[SuiteResult] = []
    all_cand: dict[str, list[str]] = {}
    all_baselines: dict[str, dict[str, list[str]]] = {}
    for s in plan.suites:
        n = len(plan.suite_cases[s.name])
        cand = [outputs[Row(s.name, i, "candidate")] for i in range(n)]
        base = plan.cached.get(s.name) or [outputs[Row(s.name, i, "base")] for i in range(n)]
        if s.name not in plan.cached:
            save_cached_base(state, plan.cache_keys[s.name], base)
        baselines: dict[str, list[str]] = {"base": base}
        if plan.has_active:
            baselines["active"] = [outputs[Row(s.name, i, "active")] for i in range(n)]
        results.append(s.evaluate(plan.suite_cases[s.name], cand, baselines, policy))
        all_cand[s.name], all_baselines[s.name] = cand, baselines
    if policy.gate.invariants.enabled and results:
        # every answer the suites already have, judged once more by the invariants (no generation)
        results.append(invariants.evaluate(plan.suite_cases, all_cand, all_baselines, policy))
    report = build_report(
        results, policy_sha256=policy_sha256, candidate_digest=candidate_digest, active_digest=active_digest,
        base_digest=plan.base_digest, decoding=plan.decoding,
    )
    report.run = RunInfo(rows_generated=plan.rows, batches=len(plan.groups), base_cached=sorted(plan.cached))
    return report


def outputs_to_json(outputs: Mapping[Row, str]) -> list[list[Any]]:
    """Shard results as plain lists (what a Celery result backend carries)."""
    return [[r.suite, r.index, r.system, text] for r, text in outputs.items()]


def outputs_from_json(rows: Sequence[Sequence[Any]]) -> dict[Row, str]:
    return {Row(str(s), int(i), str(system)): str(text) for s, i, system, text in rows}


def generate_and_judge(
    generator: Generator,
    *,
    policy: Policy,
    policy_sha256: str,
    candidate: Any,
    candidate_digest: str,
    active: Any | None = None,
    active_digest: str | None = None,
    state_dir: str | Path | None = None,
    suites: Sequence[str | Suite] = DEFAULT_SUITES,
    cases: Mapping[str, Sequence[Case]] | None = None,
    progress: Progress | None = None,
) -> GateReport:
    """Generate, judge and report in one process. ``cases`` overrides a suite's shipped cases."""
    t0 = time.perf_counter()
    plan = plan_gate(base_digest=generator.base_digest, decoding=generator.decoding(), policy=policy,
                     has_active=active is not None, state_dir=state_dir, suites=suites, cases=cases)
    tokens: dict[str, Any | None] = {"candidate": candidate, "base": None, "active": active}
    t_gen = time.perf_counter()
    outputs = generate_rows(generator, plan.groups, plan.suite_cases, tokens, progress)
    gen_seconds = time.perf_counter() - t_gen
    report = finish_gate(plan, outputs, policy=policy, policy_sha256=policy_sha256,
                         candidate_digest=candidate_digest, active_digest=active_digest, state_dir=state_dir)
    report.run.update({"generation_seconds": round(gen_seconds, 3),
                       "total_seconds": round(time.perf_counter() - t0, 3)})
    return report


def build_report(
    results: Sequence[SuiteResult],
    *,
    policy_sha256: str,
    candidate_digest: str,
    active_digest: str | None,
    base_digest: str,
    decoding: Mapping[str, Any],
) -> GateReport:
    """Verdict (every suite must pass), form-vs-knowledge summary and evidence digest.

    The suites' results are validated against the report contract here, before anything
    can be stored: a suite that writes a field the contract lacks fails the gate loudly.
    """
    verdict = "passed" if results and all(r.passed for r in results) else "failed"
    report = GateReport.model_validate({
        "verdict": verdict,
        "suites": [r.to_dict() for r in results],
        "policy_sha256": policy_sha256,
        "candidate_digest": candidate_digest,
        "active_digest": active_digest,
        "base_digest": base_digest,
        "decoding": dict(decoding),
        "form_vs_knowledge": form_vs_knowledge(results),
        # every bound a suite waived because the base breaks it too: a pass then reads
        # "passed with waivers" and an approval must acknowledge each by name
        "waivers": [w.to_dict() for r in results for w in r.waivers],
    })
    report.evidence_digest = evidence_digest(report.evidence())
    return report


def form_vs_knowledge(results: Sequence[SuiteResult]) -> dict[str, Any]:
    """How far the token moved form (refusals, tone, format, length) against knowledge (accuracy).

    The Aligner paper's probe: a global token should change how a model says things far
    more than what it knows. Deltas are candidate minus bare base, over the gate's cases.
    """
    by = {r.suite: r for r in results}
    form: dict[str, Any] = {}
    # the invariants' cases repeat answers of the other suites: counted once, in their own suite
    all_cases = [c for r in results if r.suite != invariants.NAME for c in r.cases if "base" in c.baseline_outputs]
    if all_cases:
        n = len(all_cases)
        form["refusal_rate_delta"] = round(
            (sum(is_refusal(c.candidate_output) for c in all_cases)
             - sum(is_refusal(c.baseline_outputs["base"]) for c in all_cases)) / n, 6)
        form["mean_words_delta"] = round(
            (sum(len(c.candidate_output.split()) for c in all_cases)
             - sum(len(c.baseline_outputs["base"].split()) for c in all_cases)) / n, 6)
        form["outputs_changed_share"] = round(
            sum(c.candidate_output != c.baseline_outputs["base"] for c in all_cases) / n, 6)
    comp = by.get("policy_compliance")
    if comp is not None:
        for cat, info in comp.details.get("categories", {}).items():
            base_rate = info.get("baseline_rates", {}).get("base")
            if base_rate is not None:
                form[f"{cat}_violation_delta"] = round(info["rate"] - base_rate, 6)
    knowledge: dict[str, Any] = {}
    reasoning = by.get("reasoning")
    if reasoning is not None:
        acc = reasoning.details.get("accuracy", {})
        if "candidate" in acc and "base" in acc:
            knowledge = {"accuracy_candidate": acc["candidate"], "accuracy_base": acc["base"],
                         "accuracy_delta": round(acc["candidate"] - acc["base"], 6)}
    form_moves = [abs(v) for k, v in form.items() if k.endswith("_delta") and k != "mean_words_delta"]
    form_size = max(form_moves, default=0.0)
    know_size = abs(knowledge.get("accuracy_delta", 0.0))
    if not form and not knowledge:
        reading = "nothing to compare (no base outputs)"
    elif form_size == 0 and know_size == 0:
        reading = "the token moved neither form nor knowledge on these cases"
    elif know_size <= form_size / 2 or know_size <= 0.02:
        reading = "mostly form: the token changed how the model answers more than what it gets right"
    else:
        reading = "knowledge moved too: reasoning accuracy changed as much as form did"
    return {"form": form, "knowledge": knowledge, "reading": reading}
