"""Reasoning regression: problems with exact answers, scored by exact match, compared paired.

A token cannot lose what the base model never had, so the gate's cases are chosen per
base model (``evaluators.selection``): a pool of short problems with an explicit answer
format (``generate_pool``: one- and two-step arithmetic, unit and date arithmetic,
comparisons, factual recall from a small shipped table, following "reply with only the
number") is run once by the bare base under the gate's decoding; the cases it answers
correctly, plus a share it gets wrong (to see gains), are the regression set. With the
policy's ``select_from_pool: false`` the fixed multi-step template problems
(``generate_cases``) are used instead. Both are generated with fixed seeds, so the case
sets and their digests never change unless the templates do. ``extract_answer`` pulls
the answer out of free text ("the answer is 42", a last number, yes/no, a date in
several formats, the first option named, or an exact reply for the format kind).
The candidate is compared with each baseline the policy names (bare base, active
version) by the exact one-sided McNemar test on the paired correct/incorrect outcomes;
a drop larger than ``max_accuracy_drop`` that is significant (Holm over the baselines)
fails. The report states the minimum detectable drop for the suite's size (Connor's
formula at the policy's alpha and power, at the planning and at the observed
discordance) so that a pass can be read for what it is worth.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from evaluators.stats import discordant_counts, holm, mcnemar_exact, minimum_detectable_drop, wilson_interval
from evaluators.suites.base import Case, CaseResult, Metric, Suite, SuiteResult, register
from governance.policy import Policy

if TYPE_CHECKING:  # evaluators.selection imports the suites package
    from evaluators.selection import SelectionRule

SEED = 1312
PER_KIND = 64

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


# --- the selection pool: short problems with an explicit answer format ------------------
#
# Kinds a small instruct model can do, each prompt ending with the answer format it must
# follow, so that answers are a few tokens long and extraction is unambiguous. The pool is
# large (POOL_PER_KIND per kind); the gate keeps the cases the bare base answers correctly
# (plus a share it gets wrong), see ``select``.

POOL_SEED = 2411
POOL_PER_KIND = 200
ONLY_NUMBER = "Reply with only the number."

# Facts with one unambiguous short answer (the answer is matched among its table's options).
CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "Russia": "Moscow", "Egypt": "Cairo", "England": "London", "Greece": "Athens", "Portugal": "Lisbon",
    "Ireland": "Dublin", "Austria": "Vienna", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki",
    "Denmark": "Copenhagen", "Poland": "Warsaw", "Hungary": "Budapest", "China": "Beijing", "Kenya": "Nairobi",
    "Peru": "Lima", "Argentina": "Buenos Aires", "Thailand": "Bangkok", "Cuba": "Havana", "Mexico": "Mexico City",
    "Canada": "Ottawa", "Belgium": "Brussels", "Netherlands": "Amsterdam", "South Korea": "Seoul",
    "Turkey": "Ankara",
}
COUNT_FACTS = [
    ("How many days are in a week?", 7), ("How many months are in a year?", 12),
    ("How many hours are in a day?", 24), ("How many minutes are in an hour?", 60),
    ("How many seconds are in a minute?", 60), ("How many legs does a spider have?", 8),
    ("How many legs does a dog have?", 4), ("How many sides does a triangle have?", 3),
    ("How many sides does a square have?", 4), ("How many sides does a hexagon have?", 6),
    ("How many continents are there on Earth?", 7), ("How many days are in a leap year?", 366),
    ("How many days are in a normal year?", 365), ("How many centimeters are in a meter?", 100),
    ("How many grams are in a kilogram?", 1000), ("How many wheels does a bicycle have?", 2),
    ("How many players are on a soccer team on the field?", 11), ("How many letters are in the English alphabet?", 26),
    ("How many hours are in a week?", 168), ("How many weeks are in a year?", 52),
]
WORD_FACTS = [
    ("What color is the sky on a clear day?", "blue", ["blue", "green", "red", "yellow", "gray", "black"]),
    ("What color is grass?", "green", ["blue", "green", "red", "yellow", "brown", "white"]),
    ("What color is snow?", "white", ["white", "black", "blue", "gray", "yellow"]),
    ("What is the opposite of hot?", "cold", ["cold", "warm", "hot", "cool"]),
    ("What is the opposite of up?", "down", ["down", "up", "left", "right"]),
    ("What is the opposite of day?", "night", ["night", "day", "evening", "morning"]),
    ("Which planet do we live on?", "Earth", ["Earth", "Mars", "Venus", "Jupiter", "Saturn", "Mercury"]),
    ("What is frozen water called?", "ice", ["ice", "snow", "steam", "water"]),
    ("Which animal says moo?", "cow", ["cow", "dog", "cat", "sheep", "horse", "pig"]),
    ("Which animal barks?", "dog", ["dog", "cat", "cow", "bird", "sheep"]),
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
SMALL_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
               "twelve"]


def _one_step(rng: random.Random, i: int) -> Case:
    form = i % 4
    if form == 0:
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        q, ans = f"What is {a} + {b}?", a + b
    elif form == 1:
        a, b = rng.randint(20, 99), rng.randint(1, 19)
        q, ans = f"What is {a} - {b}?", a - b
    elif form == 2:
        a, b = rng.randint(2, 19), rng.randint(2, 12)
        q, ans = f"What is {a} times {b}?", a * b
    else:
        b, k = rng.randint(2, 15), rng.randint(2, 15)
        q, ans = f"What is {b * k} divided by {b}?", k
    return _pool_case("one_step", i, f"{q} {ONLY_NUMBER}", "number", str(ans))


def _two_step(rng: random.Random, i: int) -> Case:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    form = i % 3
    if form == 0:
        a, b, c = rng.randint(3, 20), rng.randint(2, 10), rng.randint(1, 3)
        q = f"{name} has {a} {item}, gets {b} more, then gives away {c}. How many {item} does {name} have now?"
        ans = a + b - c
    elif form == 1:
        bags, per = rng.randint(2, 5), rng.randint(2, 6)
        extra = rng.randint(1, 9)
        q = f"{name} has {bags} bags with {per} {item} in each bag and {extra} more {item}. How many {item} in all?"
        ans = bags * per + extra
    else:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        c = rng.randint(1, a + b - 1)
        q = f"What is {a} + {b} - {c}?"
        ans = a + b - c
    return _pool_case("two_step", i, f"{q} {ONLY_NUMBER}", "number", str(ans))


def _unit_pool(rng: random.Random, i: int) -> Case:
    form = i % 5
    n = rng.randint(2, 9)
    if form == 0:
        q, ans = f"How many minutes are in {n} hours?", n * 60
    elif form == 1:
        q, ans = f"How many centimeters are in {n} meters?", n * 100
    elif form == 2:
        q, ans = f"How many grams are in {n} kilograms?", n * 1000
    elif form == 3:
        q, ans = f"How many days are in {n} weeks?", n * 7
    else:
        q, ans = f"How many hours are in {n} days?", n * 24
    return _pool_case("unit_arith", i, f"{q} {ONLY_NUMBER}", "number", str(ans))


def _date_pool(rng: random.Random, i: int) -> Case:
    form = i % 4
    if form == 0:
        d, k = rng.randrange(7), rng.randint(1, 3)
        q, ans, opts = f"Today is {DAYS[d]}. What day is it tomorrow?", DAYS[(d + 1) % 7], DAYS
        if k > 1:
            q, ans = f"Today is {DAYS[d]}. What day of the week will it be in {k} days?", DAYS[(d + k) % 7]
    elif form == 1:
        d = rng.randrange(7)
        q, ans, opts = f"Today is {DAYS[d]}. What day was it yesterday?", DAYS[(d - 1) % 7], DAYS
    elif form == 2:
        m = rng.randrange(12)
        q, ans, opts = f"Which month comes after {MONTHS[m]}?", MONTHS[(m + 1) % 12], MONTHS
    else:
        m = rng.randrange(12)
        q, ans, opts = f"Which month comes before {MONTHS[m]}?", MONTHS[(m - 1) % 12], MONTHS
    # the day or month the question names is never the answer: an echo of it ("If today is
    # Monday, tomorrow is Tuesday") must not be read as the reply's answer
    asked = [o for o in opts if re.search(rf"\b{o}\b", q)]
    return _pool_case("date_arith", i, f"{q} Reply with only the name.", "choice", ans,
                      [o for o in opts if o not in asked])


def _compare_pool(rng: random.Random, i: int) -> Case:
    form = i % 3
    if form == 0:
        a, b = rng.sample(range(10, 100), 2)
        return _pool_case("comparison_short", i, f"Which number is larger, {a} or {b}? {ONLY_NUMBER}", "number",
                          str(max(a, b)))
    if form == 1:
        a, b = rng.sample(range(10, 100), 2)
        return _pool_case("comparison_short", i, f"Which number is smaller, {a} or {b}? {ONLY_NUMBER}", "number",
                          str(min(a, b)))
    a, b = rng.sample(range(1, 50), 2)
    return _pool_case("comparison_short", i, f"Is {a} greater than {b}? Answer with only yes or no.", "yesno",
                      "yes" if a > b else "no")


def _facts(rng: random.Random, i: int) -> Case:
    form = i % 3
    if form == 0:
        country = rng.choice(sorted(CAPITALS))
        return _pool_case("facts", i, f"What is the capital of {country}? Reply with only the city name.", "choice",
                          CAPITALS[country], sorted(CAPITALS.values()))
    if form == 1:
        q, n = rng.choice(COUNT_FACTS)
        return _pool_case("facts", i, f"{q} {ONLY_NUMBER}", "number", str(n))
    q, ans, opts = rng.choice(WORD_FACTS)
    return _pool_case("facts", i, f"{q} Reply with one word.", "choice", ans, opts)


def _format(rng: random.Random, i: int) -> Case:
    """Following an explicit answer format: the reply must be exactly the answer, nothing else."""
    form = i % 3
    if form == 0:
        a, b = rng.randint(1, 6), rng.randint(1, 6)
        q = f"What is {SMALL_WORDS[a]} plus {SMALL_WORDS[b]}? Reply with only the number in digits, nothing else."
        return _pool_case("format", i, q, "exact_number", str(a + b))
    if form == 1:
        n = rng.randint(2, 9)
        q = f"Write the number {SMALL_WORDS[n]} in digits. Reply with only the digits, nothing else."
        return _pool_case("format", i, q, "exact_number", str(n))
    a, b = rng.sample(range(1, 30), 2)
    q = f"Is {a} an even number? Reply with only yes or no, nothing else."
    return _pool_case("format", i, q, "exact_yesno", "yes" if a % 2 == 0 else "no")


def _pool_case(kind: str, i: int, prompt: str, answer_kind: str, answer: str,
               options: Sequence[str] | None = None) -> Case:
    meta: dict[str, object] = {"answer": answer, "answer_kind": answer_kind}
    if options is not None:
        meta["options"] = list(options)
    return Case(f"pool-{kind}-{i + 1:04d}", kind, prompt, f"answer:{answer}", meta)


POOL_GENERATORS: dict[str, Callable[[random.Random, int], Case]] = {
    "one_step": _one_step, "two_step": _two_step, "unit_arith": _unit_pool, "date_arith": _date_pool,
    "comparison_short": _compare_pool, "facts": _facts, "format": _format,
}
# Draws per kind, in multiples of ``per_kind``. The kinds with thousands of distinct
# problems draw more: the others repeat after a few dozen prompts (duplicates are dropped),
# and SmolLM2-135M solves 35% and 47% of these two kinds against 4-58% of the others
# (measured on the pool, docs/benchmarks.md), so the default size needs their volume.
POOL_WEIGHTS: dict[str, int] = {"one_step": 4, "comparison_short": 4}


def generate_pool(seed: int = POOL_SEED, per_kind: int = POOL_PER_KIND,
                  weights: Mapping[str, int] | None = None) -> list[Case]:
    """The selection pool: ``per_kind`` draws of each short kind (times its weight), a prompt drawn twice kept once.

    Duplicates are dropped because greedy decoding answers a repeated prompt identically:
    two copies would be one observation counted twice by the paired test.
    """
    weights = POOL_WEIGHTS if weights is None else weights
    cases: list[Case] = []
    seen: set[str] = set()
    for k, (kind, gen) in enumerate(POOL_GENERATORS.items()):
        rng = random.Random(seed * 1000 + k)
        for i in range(per_kind * weights.get(kind, 1)):
            case = gen(rng, i)
            if case.prompt not in seen:
                seen.add(case.prompt)
                cases.append(case)
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


_EXACT_TAIL = re.compile(r"[\s.!]*$")


def _exact(text: str) -> str:
    """The whole reply, trimmed of surrounding space, a trailing full stop and emphasis marks."""
    return _EXACT_TAIL.sub("", text.strip().strip("*`\"'")).strip("*`\"'").strip()


def _choice(text: str, options: Sequence[str]) -> str | None:
    """The option the reply names first (longest match first: "Buenos Aires" before "Aires")."""
    best: tuple[int, int, str] | None = None
    for opt in options:
        m = re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text, re.IGNORECASE)
        if m and (best is None or (m.start(), -len(opt)) < (best[0], best[1])):
            best = (m.start(), -len(opt), opt)
    return best[2] if best else None


def extract_answer(text: str, kind: str, options: Sequence[str] | None = None) -> str | None:
    """The answer a free-text output commits to, normalised (numbers, yes/no, ISO dates, options).

    ``choice`` returns the first of ``options`` the reply names; ``exact_number`` and
    ``exact_yesno`` accept only a reply that is the answer and nothing else (the format
    kind's point: "Reply with only the number" followed by a sentence is not followed).
    """
    if kind == "choice":
        if not options:
            raise ValueError("answer kind 'choice' needs the options")
        return _choice(_LABEL.sub("", text, count=1), options)
    if kind == "exact_number":
        body = _exact(text)
        return _to_number(body) if re.fullmatch(_NUM, body) else None
    if kind == "exact_yesno":
        body = _exact(text).lower()
        return body if body in ("yes", "no") else None
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
    raise ValueError(f"unknown answer kind {kind!r} (known: number, yesno, date, choice, exact_number, "
                     f"exact_yesno)")


def _iso(y: int, m: int, d: int) -> str:
    try:
        return dt.date(y, m, d).isoformat()
    except ValueError:
        return ""


def is_correct(case: Case, output: str) -> bool:
    return extract_answer(output, case.meta["answer_kind"], case.meta.get("options")) == case.meta["answer"]


@register
class ReasoningSuite(Suite):
    name = "reasoning"
    description = ("per base model, the short problems it solves (one- and two-step, unit and date arithmetic, "
                   "comparisons, facts, answer format) plus a share it misses; exact match")

    def load_cases(self) -> list[Case]:
        """The fixed template problems (used where the policy turns per-base selection off)."""
        return generate_cases()

    # --- per-base selection (evaluators.selection.SelectiveSuite) ---------------------------

    def load_pool(self, policy: Policy) -> list[Case]:
        return generate_pool(per_kind=policy.gate.reasoning.pool_per_kind)

    def selection_rule(self, policy: Policy) -> SelectionRule | None:
        from evaluators.selection import SelectionRule

        gate = policy.gate.reasoning
        if not gate.select_from_pool:
            return None
        cap = policy.gate.max_cases.get("reasoning")
        return SelectionRule(size=min(gate.size, cap) if cap else gate.size, base_wrong_share=gate.base_wrong_share)

    def is_correct(self, case: Case, output: str) -> bool:
        return is_correct(case, output)

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
        psi_plan = gate.planning_discordance
        mdd_plan = minimum_detectable_drop(n, psi_plan, gate.alpha, gate.power)
        metrics.append(Metric("minimum detectable drop (planning)", mdd_plan, None, True, n, decisive=False,
                              detail=f"at discordance {psi_plan:g}, alpha={gate.alpha:g}, "
                                     f"power={gate.power:g}: smaller true drops may pass unseen"))
        results = []
        for i, (case, out) in enumerate(zip(cases, candidate_outputs, strict=True)):
            extracted = extract_answer(out, case.meta["answer_kind"], case.meta.get("options"))
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
