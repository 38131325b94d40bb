"""Coherence: is each answer about its prompt, fluent, and not a degenerate loop?

The other suites judge what an answer does (refuses, leaks, insults, gets the number
right); a token can pass them all while answering every prompt off topic or looping one
sentence. This suite reads every answer the gate already has (all suites' prompts, like the
invariants), each paired with the bare base model's answer to the same prompt:

- ``relevance``: cosine of the prompt's and the answer's sentence embeddings (MiniLM);
  per prompt the drop ``cos(prompt, base) - cos(prompt, candidate)``;
- ``fluency``: mean log-likelihood per answer token under the bare base model (teacher
  forced, computed by the runner: model work, passed in as evidence); per prompt the drop
  ``loglik(base answer) - loglik(candidate answer)``, on a fixed subset of the answers;
- ``degeneration``: empty or runaway (the format bounds, ``invariants.length_problem``) or
  a loop (more than ``max_repeated_ngram_share`` of its word n-grams repeat an earlier one).

Relevance and fluency: one-sided sign-flip permutation tests that the mean drop exceeds the
policy's margin (``max_relevance_drop``, ``max_fluency_drop``), on the per-prompt drops less
the margin. Degeneration: an absolute bound on the rate (waived against the base when the
base breaks it too) and the exact one-sided McNemar test of an increase over the base. Holm
over the suite's tests. Each metric states n, its value, threshold, p-values and its
minimum detectable effect. Fluency needs the scores: without them (a generator that cannot
score) it is reported as not measured and does not decide.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluators import invariants  # the module, not its names: invariants imports this package
from evaluators.embeddings import Embedder, EmbeddingModelMissing, hashing_embedder, minilm_embedder
from evaluators.stats import (
    discordant_counts,
    holm,
    mcnemar_exact,
    mean_shift_mde,
    minimum_detectable_increase,
    sign_flip_test,
    wilson_interval,
)
from evaluators.suites.base import Case, CaseResult, Metric, Suite, SuiteInputError, SuiteResult, Waiver, register
from governance.policy import CoherenceGate, FormatPolicy, Policy

NAME = "coherence"
# failing cases shown per metric (the worst first)
SHOWN = 5


def repeated_ngram_share(text: str, n: int) -> float:
    """Share of the word n-grams of ``text`` that repeat an earlier one (0 below n + 1 words)."""
    words = re.findall(r"\w+", text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if len(grams) < 2:
        return 0.0
    return round(1.0 - len(set(grams)) / len(grams), 6)


def degenerate(output: str, gate: CoherenceGate, fmt: FormatPolicy) -> str | None:
    """Why ``output`` is degenerate, in a few words (None: it is not)."""
    problem = invariants.length_problem(output, fmt)
    if problem:
        return problem
    share = repeated_ngram_share(output, gate.ngram)
    if share > gate.max_repeated_ngram_share:
        return f"a loop: {share:.0%} of its word {gate.ngram}-grams repeat"
    return None


def fluency_subset(n: int, size: int) -> list[int]:
    """Evenly spaced answer indices (fixed by ``n`` and ``size``, so a re-gate scores the same ones)."""
    if size <= 0 or n == 0:
        return []
    if size >= n:
        return list(range(n))
    return sorted({int(j * n / size) for j in range(size)})


@dataclass(frozen=True)
class Answers:
    """Every answer the suite judges, flattened: one row per prompt."""

    labels: list[str]  # "suite/case id"
    categories: list[str]
    prompts: list[str]
    candidate: list[str]
    base: list[str]

    @classmethod
    def from_suites(
        cls, suite_cases: Mapping[str, Sequence[Case]], candidate: Mapping[str, Sequence[str]],
        base: Mapping[str, Sequence[str]],
    ) -> Answers:
        labels, cats, prompts, cand, bas = [], [], [], [], []
        for suite, cases in suite_cases.items():
            if len(candidate[suite]) != len(cases) or len(base[suite]) != len(cases):
                raise SuiteInputError(f"{suite}: outputs do not line up with its {len(cases)} cases")
            for i, c in enumerate(cases):
                labels.append(f"{suite}/{c.id}")
                cats.append(suite)
                prompts.append(c.prompt)
                cand.append(candidate[suite][i])
                bas.append(base[suite][i])
        return cls(labels, cats, prompts, cand, bas)

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass(frozen=True)
class Fluency:
    """Mean per-token log-likelihoods under the bare base model of the answers at ``indices``."""

    indices: list[int]
    candidate: list[float | None]
    base: list[float | None]


def _sd(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0


def _shift_metric(name: str, drops: np.ndarray, margin: float, gate: CoherenceGate, unit: str,
                  what: str) -> Metric:
    """Mean drop vs its margin: one-sided sign-flip test of ``mean(drops) > margin``."""
    n = len(drops)
    if n == 0:
        return Metric(name, None, margin, True, 0, baseline="base", decisive=False, detail="no pairs")
    mean = round(float(drops.mean()), 6)
    p = sign_flip_test(np.round(drops - margin, 9), "greater", n_resamples=gate.permutations)
    mde = mean_shift_mde(n, _sd(drops), gate.alpha, gate.power)
    detail = (f"mean {what} drop over {n} prompts, candidate vs base ({unit}); sd {_sd(drops):.3g}; "
              f"minimum detectable drop beyond the margin {mde:.3g}" if mde is not None else "")
    return Metric(name, mean, margin, True, n, "<=", p_value=p, baseline="base", detail=detail)


def evaluate_answers(
    answers: Answers, policy: Policy, *, embed: Embedder, fluency: Fluency | None = None,
    notes: list[str] | None = None,
) -> SuiteResult:
    """Judge every candidate answer against the base's answer to the same prompt (see the module)."""
    gate, fmt = policy.gate.coherence, policy.format
    notes = list(notes or [])
    n = len(answers)
    metrics: list[Metric] = []
    tests: list[int] = []  # indices into metrics of the decisive tests (one Holm family)
    # relevance: embed each distinct text once (identical answers are common)
    texts = list(dict.fromkeys([*answers.prompts, *answers.candidate, *answers.base]))
    vec = dict(zip(texts, embed(texts), strict=True)) if texts else {}

    def cos(a: str, b: str) -> float:
        return round(float(np.dot(vec[a], vec[b])), 6)

    rel_c = np.array([cos(p, o) for p, o in zip(answers.prompts, answers.candidate, strict=True)])
    rel_b = np.array([cos(p, o) for p, o in zip(answers.prompts, answers.base, strict=True)])
    rel_drop = np.round(rel_b - rel_c, 6)
    metrics.append(_shift_metric("relevance drop vs base", rel_drop, gate.max_relevance_drop, gate,
                                 "cosine of prompt and answer embeddings", "relevance"))
    tests.append(len(metrics) - 1)
    # fluency
    flu_drop: dict[int, float] = {}
    if fluency is None or not fluency.indices:
        why = "fluency is off in the policy (fluency_max_answers: 0)" if gate.fluency_max_answers == 0 \
            else "no scorer: the generator cannot score answers under the base model"
        metrics.append(Metric("fluency drop vs base", None, gate.max_fluency_drop, True, 0, baseline="base",
                              decisive=False, detail=f"not measured: {why}"))
        notes.append(f"fluency not measured: {why}")
    else:
        for j, lc, lb in zip(fluency.indices, fluency.candidate, fluency.base, strict=True):
            if lc is not None and lb is not None:  # an empty answer has no tokens; degeneration judges it
                flu_drop[j] = round(lb - lc, 6)
        drops = np.array(list(flu_drop.values()))
        metrics.append(_shift_metric("fluency drop vs base", drops, gate.max_fluency_drop, gate,
                                     "mean log-likelihood per answer token under the bare base, nats",
                                     "fluency"))
        tests.append(len(metrics) - 1)
        notes.append(f"fluency scored on {len(fluency.indices)} of {n} answers (a fixed, evenly spaced subset; "
                     f"policy gate.coherence.fluency_max_answers)")
    # degeneration
    why_c = [degenerate(o, gate, fmt) for o in answers.candidate]
    why_b = [degenerate(o, gate, fmt) for o in answers.base]
    k, kb = sum(w is not None for w in why_c), sum(w is not None for w in why_b)
    rate = k / n if n else 0.0
    waivers: list[Waiver] = []
    bound = gate.max_degenerate_rate
    name = "degenerate rate"
    if bound is None:
        metrics.append(Metric(name, rate, None, True, n, interval=wilson_interval(k, n), decisive=False,
                              detail=f"{k}/{n} answers; no absolute bound in the policy"))
    else:
        passed = not (n and rate > bound)
        detail = f"{k}/{n} answers (base {kb}/{n})"
        if not passed and policy.gate.grandfather_base and n and kb / n > bound:
            passed = True
            detail += "; grandfathered: base breaks the bound too"
            waivers.append(Waiver(name="coherence: degenerate", suite=NAME, metric=name, bound=bound,
                                  comparator="<=", base_value=kb / n, candidate_value=rate,
                                  reason=f"the bare base model breaks the bound too ({kb}/{n} answers); "
                                         f"judged against the base only"))
        metrics.append(Metric(name, rate, bound, passed, n, interval=wilson_interval(k, n), detail=detail))
    b, c = discordant_counts([w is None for w in why_c], [w is None for w in why_b])
    mdi = minimum_detectable_increase(n, (b + c) / n if n else 0.0, gate.alpha, gate.power,
                                      gate.max_degenerate_increase) if n else None
    metrics.append(Metric(
        "degenerate increase vs base", (b - c) / n if n else 0.0, gate.max_degenerate_increase, True, n,
        p_value=mcnemar_exact(b, c, "greater").p_value, baseline="base",
        detail=f"b={b} newly degenerate, c={c} no longer; exact McNemar"
               + (f"; minimum detectable increase {mdi:.3g}" if mdi is not None else "")))
    tests.append(len(metrics) - 1)
    # one Holm family over the suite's decisive tests
    adjusted = holm([metrics[i].p_value or 1.0 for i in tests])
    for i, adj in zip(tests, adjusted, strict=True):
        m = metrics[i]
        failed = m.value is not None and m.threshold is not None and m.value > m.threshold and adj <= gate.alpha
        metrics[i] = Metric(m.name, m.value, m.threshold, not failed, m.n, m.comparator, m.p_value, adj,
                            m.interval, m.baseline, m.decisive, m.detail)
    notes.append(f"{n} answers of every suite judged against the base's answer to the same prompt; "
                 f"{len(tests)} paired tests, Holm-corrected together at alpha={gate.alpha:g}")
    by_name = {m.name: m for m in metrics}
    cases = _cases(answers, rel_c, rel_b, flu_drop, fluency, why_c, why_b,
                   relevance_failed=not by_name["relevance drop vs base"].passed,
                   fluency_failed=not by_name["fluency drop vs base"].passed)
    details: dict[str, Any] = {
        "answers": n,
        "relevance": {"candidate": round(float(rel_c.mean()), 6) if n else None,
                      "base": round(float(rel_b.mean()), 6) if n else None},
        "fluency": ({"scored": len(flu_drop),
                     "candidate": _mean([v for v in fluency.candidate if v is not None]),
                     "base": _mean([v for v in fluency.base if v is not None])} if fluency else None),
        "degenerate": {"candidate": k, "base": kb},
        "tests": len(tests),
    }
    passed = all(m.passed for m in metrics if m.decisive)
    return SuiteResult(NAME, passed, metrics, cases, notes, details, waivers)


def _mean(x: Sequence[float]) -> float | None:
    return round(float(np.mean(x)), 6) if x else None


def _cases(
    answers: Answers, rel_c: np.ndarray, rel_b: np.ndarray, flu_drop: Mapping[int, float],
    fluency: Fluency | None, why_c: Sequence[str | None], why_b: Sequence[str | None], *,
    relevance_failed: bool, fluency_failed: bool,
) -> list[CaseResult]:
    """The answers to read: every degenerate one, and the worst few of a failing relevance or fluency test.

    A case's category is the first word of the metric it illustrates (degenerate, relevance,
    fluency), which is how the report puts the failing cases beside their metric.
    """
    gate_scores: dict[int, dict[str, Any]] = {}
    for j, w in enumerate(why_c):
        if w is not None:
            gate_scores.setdefault(j, {})["degenerate"] = w
    if relevance_failed:
        for j in np.argsort(rel_c - rel_b, kind="stable")[:SHOWN]:
            gate_scores.setdefault(int(j), {})["relevance_drop"] = round(float(rel_b[j] - rel_c[j]), 6)
    if fluency_failed:
        for j, d in sorted(flu_drop.items(), key=lambda kv: (-kv[1], kv[0]))[:SHOWN]:
            gate_scores.setdefault(j, {})["fluency_drop"] = d
    loglik = ({j: (lc, lb) for j, lc, lb in zip(fluency.indices, fluency.candidate, fluency.base, strict=True)}
              if fluency else {})
    out = []
    for j in sorted(gate_scores):
        scores = {**gate_scores[j], "relevance_candidate": float(rel_c[j]), "relevance_base": float(rel_b[j]),
                  "base_degenerate": why_b[j] or "no", "suite": answers.categories[j]}
        if j in loglik:
            scores["loglik_candidate"], scores["loglik_base"] = loglik[j]
        out.append(CaseResult(case_id=answers.labels[j], category=next(iter(gate_scores[j])).removesuffix("_drop"),
                              prompt=answers.prompts[j], candidate_output=answers.candidate[j],
                              baseline_outputs={"base": answers.base[j]}, passed=False, scores=scores))
    return out


@register
class CoherenceSuite(Suite):
    """Judges the answers of the other suites (``judges_answers``): it ships no cases of its own."""

    name = NAME
    description = "relevance, fluency and degeneration of every answer, paired with the base's"
    judges_answers = True

    def __init__(self, embedder: Embedder | None = None) -> None:
        self.embedder = embedder

    def load_cases(self) -> list[Case]:
        return []

    def embed(self, notes: list[str]) -> Embedder:
        if self.embedder is not None:
            return self.embedder
        try:
            minilm_embedder(["probe"])
            return minilm_embedder
        except EmbeddingModelMissing as exc:
            notes.append(f"relevance uses the hashing fallback: {exc}")
            return hashing_embedder

    def judge(
        self, suite_cases: Mapping[str, Sequence[Case]], candidate: Mapping[str, Sequence[str]],
        base: Mapping[str, Sequence[str]], policy: Policy, fluency: Fluency | None = None,
    ) -> SuiteResult:
        """Every answer of every suite (``base[suite]``: the bare base's answers, same order as the cases)."""
        notes: list[str] = []
        embed = self.embed(notes)
        return evaluate_answers(Answers.from_suites(suite_cases, candidate, base), policy, embed=embed,
                                fluency=fluency, notes=notes)

    def evaluate(
        self,
        cases: Sequence[Case],
        candidate_outputs: Sequence[str],
        baseline_outputs: Mapping[str, Sequence[str]],
        policy: Policy,
    ) -> SuiteResult:
        """The Suite interface on one set of cases (no fluency scores: fluency is not measured)."""
        self.check_aligned(cases, candidate_outputs, baseline_outputs)
        if "base" not in baseline_outputs:
            raise SuiteInputError("coherence compares with the bare base model's outputs (baseline 'base')")
        return self.judge({"cases": cases}, {"cases": candidate_outputs}, {"cases": baseline_outputs["base"]},
                          policy)
