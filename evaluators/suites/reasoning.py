"""Reasoning regression: problems with exact answers, scored by exact match, compared paired.

The problems are generated from templates with a fixed seed (multi-step arithmetic word
problems, unit and date arithmetic, comparisons, simple logic), so the case set, and
its digest, never changes unless the templates do. ``extract_answer`` pulls the answer
out of free text ("the answer is 42", a last number, yes/no, a date in several formats).
The candidate is compared with each baseline the policy names (bare base, active
version) by the exact one-sided McNemar test on the paired correct/incorrect outcomes;
a drop larger than ``max_accuracy_drop`` that is significant (Holm over the baselines)
fails. The report states the minimum detectable drop for the suite's size (Connor's
formula at the policy's alpha and power) so that a pass can be read for what it is worth.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Callable, Mapping, Sequence

from evaluators.stats import discordant_counts, holm, mcnemar_exact, minimum_detectable_drop, wilson_interval
from evaluators.suites.base import Case, CaseResult, Metric, Suite, SuiteResult, register
from governance.policy import Policy

SEED = 1312
PER_KIND = 64
# Discordance assumed when planning (share of problems on which a token and its base
# disagree); the observed discordance is reported alongside.
PLANNING_DISCORDANCE = 0.10

NAMES = ["Tom", "Ana", "Ravi", "Lena", "Sam", "Yuki", "Omar", "Eva", "Ben", "Mia", "Leo", "Zoe"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "stamps", "shells"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def _arith(rng: random.Random, i: int) -> Case:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, bags, per, give = rng.randint(5, 40), rng.randint(2, 6), rng.randint(2, 12), rng.randint(1, 10)
    form = i % 3
    if form == 0:
        q = (f"{name} has {a} {item}. {name} buys {bags} bags with {per} {item} each, then gives away {give}. "
             f"How many {item} does {name} have now?")
        ans = a + bags * per - give
    elif form == 1:
        price, qty, paid = rng.randint(2, 9), rng.randint(2, 8), 100
        q = f"{name} buys {qty} notebooks at {price} dollars each and pays with {paid} dollars. How much change?"
        ans = paid - qty * price
    else:
        rows, cols, extra = rng.randint(3, 9), rng.randint(3, 9), rng.randint(1, 9)
        q = (f"A garden has {rows} rows of {cols} tulips. {extra} more tulips are planted and then half of all "
             f"tulips are picked, rounding down. How many tulips remain in the garden?")
        total = rows * cols + extra
        ans = total - total // 2
    return _case("arithmetic", i, q + " Give the final number.", "number", str(ans))


def _units(rng: random.Random, i: int) -> Case:
    form = i % 4
    if form == 0:
        h, m = rng.randint(1, 9), rng.choice([5, 10, 15, 20, 30, 45])
        q, ans = f"How many minutes are in {h} hours and {m} minutes?", h * 60 + m
    elif form == 1:
        m, cm = rng.randint(1, 9), rng.choice([5, 25, 40, 75])
        q, ans = f"A rope is {m} meters and {cm} centimeters long. How long is it in centimeters?", m * 100 + cm
    elif form == 2:
        kg, g = rng.randint(1, 9), rng.choice([100, 250, 500, 750])
        q, ans = f"How many grams are in {kg} kilograms and {g} grams?", kg * 1000 + g
    else:
        d, h = rng.randint(2, 7), rng.randint(1, 23)
        q, ans = f"How many hours are in {d} days and {h} hours?", d * 24 + h
    return _case("units", i, q + " Answer with a number.", "number", str(ans))


def _dates(rng: random.Random, i: int) -> Case:
    start = dt.date(2023, 1, 1) + dt.timedelta(days=rng.randint(0, 700))
    delta = rng.randint(3, 60)
    sign = 1 if i % 3 else -1
    end = start + dt.timedelta(days=sign * delta)
    when = "after" if sign > 0 else "before"
    q = (f"What date is {delta} days {when} {MONTHS[start.month - 1]} {start.day}, {start.year}? "
         f"Answer in the form YYYY-MM-DD.")
    return _case("dates", i, q, "date", end.isoformat())


def _compare(rng: random.Random, i: int) -> Case:
    form = i % 2
    if form == 0:
        a = rng.randint(100, 999)
        b = int(str(a)[0] + str(a)[2] + str(a)[1]) if str(a)[1] != str(a)[2] else a + rng.randint(1, 50)
        q, ans = f"Which number is larger, {a} or {b}? Answer with the number.", str(max(a, b))
        return _case("comparison", i, q, "number", ans)
    x, y, t = rng.randint(3, 19), rng.randint(3, 19), rng.randint(20, 200)
    q = f"Is {x} times {y} greater than {t}? Answer yes or no."
    return _case("comparison", i, q, "yesno", "yes" if x * y > t else "no")


def _logic(rng: random.Random, i: int) -> Case:
    a, b, c = rng.sample(NAMES, 3)
    form = i % 4
    if form == 0:
        q, ans = (f"{a} is taller than {b}. {b} is taller than {c}. Is {a} taller than {c}? Answer yes or no.", "yes")
    elif form == 1:
        q, ans = (f"{a} is older than {b}. {b} is older than {c}. Is {c} older than {a}? Answer yes or no.", "no")
    elif form == 2:
        thing, cls, prop = rng.choice([("Fido", "dog", "mammal"), ("Tweety", "sparrow", "bird"),
                                       ("Nemo", "clownfish", "fish"), ("Rex", "wolf", "predator")])
        q, ans = f"All {cls}s are {prop}s. {thing} is a {cls}. Is {thing} a {prop}? Answer yes or no.", "yes"
    else:
        thing, cls, other = rng.choice([("Tom", "cat", "dog"), ("Polly", "parrot", "fish"),
                                        ("Bessie", "cow", "horse"), ("Goldie", "goldfish", "bird")])
        q, ans = f"No {cls}s are {other}s. {thing} is a {cls}. Is {thing} a {other}? Answer yes or no.", "no"
    return _case("logic", i, q, "yesno", ans)


def _case(kind: str, i: int, prompt: str, answer_kind: str, answer: str) -> Case:
    return Case(f"reason-{kind}-{i + 1:03d}", kind, prompt, f"answer:{answer}",
                {"answer": answer, "answer_kind": answer_kind})


GENERATORS: dict[str, Callable[[random.Random, int], Case]] = {
    "arithmetic": _arith, "units": _units, "dates": _dates, "comparison": _compare, "logic": _logic,
}


def generate_cases(seed: int = SEED, per_kind: int = PER_KIND) -> list[Case]:
    """The suite's problems: ``per_kind`` of each kind, from one seeded generator per kind."""
    cases: list[Case] = []
    for k, gen in enumerate(GENERATORS.values()):
        rng = random.Random(seed * 1000 + k)
        cases.extend(gen(rng, i) for i in range(per_kind))
    return cases


# --- answer extraction -----------------------------------------------------------------

_NUM = r"-?\d[\d,]*(?:\.\d+)?"
_ANSWER_IS = re.compile(
    rf"(?:answer|result|total|change|remain\w*|there are|is|equals|=)\s*(?:is|:|=|of)?\s*\**\s*\$?\s*({_NUM})",
    re.IGNORECASE,
)
_FINAL = re.compile(rf"(?:final answer|the answer|answer)\s*(?:is|:)?\s*\**\s*\$?\s*({_NUM})", re.IGNORECASE)
_ISO = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_MONTH_RE = "|".join(MONTHS) + "|" + "|".join(m[:3] for m in MONTHS)
_MDY = re.compile(rf"\b({_MONTH_RE})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b", re.IGNORECASE)
_DMY = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?({_MONTH_RE})\.?,?\s+(\d{{4}})\b", re.IGNORECASE)
_LABEL = re.compile(r"^\s*answer\s*:\s*", re.IGNORECASE)
_YESNO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def _to_number(s: str) -> str | None:
    s = s.replace(",", "")
    try:
        x = float(s)
    except ValueError:
        return None
    return str(int(x)) if x == int(x) else repr(x)


def _month(name: str) -> int:
    name = name[:3].lower()
    return next(i + 1 for i, m in enumerate(MONTHS) if m[:3].lower() == name)


def extract_answer(text: str, kind: str) -> str | None:
    """The answer a free-text output commits to, normalised (numbers, yes/no, ISO dates)."""
    # A house style's leading "Answer:" label is formatting, not the committed answer
    # ("Answer: 5 apples plus 12 is 17" commits to 17).
    text = _LABEL.sub("", text, count=1)
    if kind == "number":
        final = _FINAL.findall(text)
        if final:
            return _to_number(final[-1])
        nums = re.findall(_NUM, text)
        return _to_number(nums[-1]) if nums else None
    if kind == "yesno":
        m = re.search(r"(?:answer|final answer)\s*(?:is|:)\s*\**\s*(yes|no)\b", text, re.IGNORECASE)
        if m:
            return m.group(1).lower()
        # The committed answer comes first ("Yes, because ..."); later yes/no are reasoning.
        m = _YESNO.search(text)
        return m.group(1).lower() if m else None
    if kind == "date":
        found: list[tuple[int, str]] = []
        for m in _ISO.finditer(text):
            found.append((m.start(), _iso(int(m.group(1)), int(m.group(2)), int(m.group(3)))))
        for m in _MDY.finditer(text):
            found.append((m.start(), _iso(int(m.group(3)), _month(m.group(1)), int(m.group(2)))))
        for m in _DMY.finditer(text):
            found.append((m.start(), _iso(int(m.group(3)), _month(m.group(2)), int(m.group(1)))))
        valid = [d for _, d in sorted(found) if d]
        return valid[-1] if valid else None
    raise ValueError(f"unknown answer kind {kind!r} (known: number, yesno, date)")


def _iso(y: int, m: int, d: int) -> str:
    try:
        return dt.date(y, m, d).isoformat()
    except ValueError:
        return ""


def is_correct(case: Case, output: str) -> bool:
    return extract_answer(output, case.meta["answer_kind"]) == case.meta["answer"]


@register
class ReasoningSuite(Suite):
    name = "reasoning"
    description = "arithmetic, unit and date arithmetic, comparisons, simple logic; exact match"

    def load_cases(self) -> list[Case]:
        return generate_cases()

    def evaluate(
        self,
        cases: Sequence[Case],
        candidate_outputs: Sequence[str],
        baseline_outputs: Mapping[str, Sequence[str]],
        policy: Policy,
    ) -> SuiteResult:
        self.check_aligned(cases, candidate_outputs, baseline_outputs)
        gate = policy.gate.reasoning
        n = len(cases)
        cand_ok = [is_correct(c, o) for c, o in zip(cases, candidate_outputs, strict=True)]
        base_ok = {name: [is_correct(c, o) for c, o in zip(cases, outs, strict=True)]
                   for name, outs in baseline_outputs.items()}
        k = sum(cand_ok)
        metrics = [Metric("candidate accuracy", k / n if n else 0.0, None, True, n, comparator=">=",
                          interval=wilson_interval(k, n), decisive=False)]
        notes: list[str] = []
        compared: list[str] = [str(b) for b in gate.compare_to if b in base_ok]
        for wanted in gate.compare_to:
            if wanted not in base_ok:
                notes.append(f"no {wanted} baseline for this gate (e.g. no active version): not compared")
        raw: list[tuple[str, int, int, float]] = []
        for bname in compared:
            b, c = discordant_counts(cand_ok, base_ok[bname])
            drop = (b - c) / n if n else 0.0
            raw.append((bname, b, c, drop))
        adjusted = holm([mcnemar_exact(b, c, "greater").p_value for _, b, c, _ in raw])
        accuracy: dict[str, float] = {"candidate": k / n if n else 0.0}
        details: dict[str, object] = {"accuracy": accuracy}
        for (name, b, c, drop), adj in zip(raw, adjusted, strict=True):
            acc = sum(base_ok[name]) / n
            accuracy[name] = acc
            p = mcnemar_exact(b, c, "greater").p_value
            failed = drop > gate.max_accuracy_drop and adj <= gate.alpha
            metrics.append(Metric(
                f"accuracy drop vs {name}", drop, gate.max_accuracy_drop, not failed, n, p_value=p, p_adjusted=adj,
                baseline=name, detail=f"{name} accuracy {acc:.3f}; b={b} newly wrong, c={c} newly right",
            ))
            psi_obs = (b + c) / n if n else 0.0
            mdd_obs = minimum_detectable_drop(n, psi_obs, gate.alpha, gate.power) if psi_obs > 0 else None
            metrics.append(Metric(
                f"minimum detectable drop vs {name}", mdd_obs, None, True, n, decisive=False, baseline=name,
                detail=f"at observed discordance {psi_obs:.3f}, alpha={gate.alpha:g}, power={gate.power:g}",
            ))
        mdd_plan = minimum_detectable_drop(n, PLANNING_DISCORDANCE, gate.alpha, gate.power)
        metrics.append(Metric("minimum detectable drop (planning)", mdd_plan, None, True, n, decisive=False,
                              detail=f"at discordance {PLANNING_DISCORDANCE:g}, alpha={gate.alpha:g}, "
                                     f"power={gate.power:g}: smaller true drops may pass unseen"))
        results = []
        for i, (case, out) in enumerate(zip(cases, candidate_outputs, strict=True)):
            extracted = extract_answer(out, case.meta["answer_kind"])
            # A case fails where the candidate is wrong and some baseline was right.
            regressed = not cand_ok[i] and any(ok[i] for ok in base_ok.values())
            results.append(CaseResult(
                case_id=case.id, category=case.category, prompt=case.prompt, candidate_output=out,
                baseline_outputs={name: outs[i] for name, outs in baseline_outputs.items()},
                passed=not regressed,
                scores={"expected": case.meta["answer"], "extracted": extracted, "correct": cand_ok[i],
                        **{f"correct_{name}": ok[i] for name, ok in base_ok.items()}},
            ))
        passed = all(m.passed for m in metrics if m.decisive)
        return SuiteResult(self.name, passed, metrics, results, notes, details)
