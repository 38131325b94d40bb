"""Per-base case selection: a regression set the bare base model is good at, chosen once and cached.

A suite can only see damage to what the base model can do: a token cannot lose accuracy
on problems the base never solved. A *selective* suite therefore ships a large pool of
problems; the first gate on a new base model (keyed by its weights digest) runs the bare
base over the pool under the gate's decoding, and keeps the cases it answers correctly,
plus a share it gets wrong so that gains stay visible (``select``). The rule is
deterministic (cases ranked by a hash of their id, taken round-robin over kinds), so the
same base, decoding, pool and rule always give the same cases, hence the same case
digest, hence cached base outputs on every later gate and re-gate.

What is cached in the state folder (``gate_cache/``, beside the base outputs):
- the bare base's outputs on the whole pool (a base-output cache entry for the pool, so a
  policy with another selection size reuses them);
- the selection: case ids, rule, per-kind base accuracy on the pool, and its digest;
- the base outputs of the selected cases, as the suite's ordinary base-output cache entry.

The gate report carries the selection's digest, rule and the base accuracy on the pool
(``annotate``), so the evidence says which cases were chosen and why, and anyone holding
the pool's base outputs can recompute the selection (``select`` is a pure function).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from evaluators.suites.base import Case, Metric, SuiteResult, cases_digest
from governance.audit.canonical import canonical_json
from governance.policy import Policy

SELECTION_VERSION = 1
RULE_TEXT = ("cases the bare base answers correctly under the gate's decoding, plus a share it gets wrong "
             "(to see gains); each part ranked by sha256 of the case id and taken round-robin over kinds")


@dataclass(frozen=True)
class SelectionRule:
    """How many cases to keep and which share of them the base answers wrongly."""

    size: int
    base_wrong_share: float

    def to_dict(self) -> dict[str, Any]:
        return {"version": SELECTION_VERSION, "size": self.size, "base_wrong_share": self.base_wrong_share,
                "rule": RULE_TEXT}


@dataclass(frozen=True)
class Selection:
    """The chosen cases of one (base, decoding, pool, rule), and what the pool run showed."""

    case_ids: list[str]
    rule: dict[str, Any]
    pool_digest: str
    pool_size: int
    base_correct_on_pool: int
    # per kind: {"n": pool cases, "correct": base-correct, "selected": kept, "selected_wrong": kept base-wrong}
    per_kind: dict[str, dict[str, int]]
    selected_base_correct: int
    selected_base_wrong: int
    digest: str = ""
    # filled by the runner: how long the pool run took (0: it came from the cache)
    pool_seconds: float = field(default=0.0, compare=False)

    @property
    def base_accuracy_on_pool(self) -> float:
        return self.base_correct_on_pool / self.pool_size if self.pool_size else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class SelectiveSuite(Protocol):
    """A suite whose cases are chosen per base model from a pool (see the module doc)."""

    name: str

    def load_pool(self, policy: Policy) -> list[Case]: ...

    def selection_rule(self, policy: Policy) -> SelectionRule | None:
        """The rule, or None where the policy turns selection off (the shipped cases are used)."""
        ...

    def is_correct(self, case: Case, output: str) -> bool: ...


def _rank(case_id: str) -> str:
    return hashlib.sha256(case_id.encode("utf-8")).hexdigest()


def _round_robin(cases: Sequence[Case], k: int) -> list[Case]:
    """``k`` cases, ranked by the hash of their id within each kind, kinds taken in turn."""
    by_kind: dict[str, list[Case]] = {}
    for c in cases:
        by_kind.setdefault(c.category, []).append(c)
    queues = [sorted(v, key=lambda c: _rank(c.id)) for _, v in sorted(by_kind.items())]
    out: list[Case] = []
    while len(out) < k and any(queues):
        for q in queues:
            if q and len(out) < k:
                out.append(q.pop(0))
    return out


def selection_digest(case_ids: Sequence[str], rule: Mapping[str, Any], pool_digest: str) -> str:
    return hashlib.sha256(canonical_json({"cases": list(case_ids), "rule": dict(rule),
                                          "pool": pool_digest}).encode("utf-8")).hexdigest()


def select(pool: Sequence[Case], correct: Sequence[bool], rule: SelectionRule) -> Selection:
    """The selection rule, a pure function of the pool and the base's correctness on it.

    ``round(size * (1 - share))`` base-correct cases and the rest base-wrong; where the
    pool has fewer base-correct cases than that, all of them, and base-wrong cases up to
    ``size`` (the suite never goes empty on a weak base; its minimum detectable drop, in
    the report, says what such a set can see). The selected cases keep the pool's order.
    """
    if len(pool) != len(correct):
        raise ValueError(f"got {len(correct)} correctness flags for {len(pool)} pool cases")
    if rule.size < 1:
        raise ValueError("selection size must be at least 1")
    if not 0.0 <= rule.base_wrong_share < 1.0:
        raise ValueError("base_wrong_share must be in [0, 1)")
    right = [c for c, ok in zip(pool, correct, strict=True) if ok]
    wrong = [c for c, ok in zip(pool, correct, strict=True) if not ok]
    want_right = round(rule.size * (1.0 - rule.base_wrong_share))
    take_right = min(want_right, len(right))
    want_wrong = min(rule.size - take_right, len(wrong))
    chosen = {c.id for c in _round_robin(right, take_right)} | {c.id for c in _round_robin(wrong, want_wrong)}
    ids = [c.id for c in pool if c.id in chosen]
    per_kind: dict[str, dict[str, int]] = {}
    for c, ok in zip(pool, correct, strict=True):
        row = per_kind.setdefault(c.category, {"n": 0, "correct": 0, "selected": 0, "selected_wrong": 0})
        row["n"] += 1
        row["correct"] += int(ok)
        if c.id in chosen:
            row["selected"] += 1
            row["selected_wrong"] += int(not ok)
    pool_digest = cases_digest(pool)
    rule_d = rule.to_dict()
    n_wrong = sum(r["selected_wrong"] for r in per_kind.values())
    return Selection(
        case_ids=ids, rule=rule_d, pool_digest=pool_digest, pool_size=len(pool), base_correct_on_pool=len(right),
        per_kind=per_kind, selected_base_correct=len(ids) - n_wrong, selected_base_wrong=n_wrong,
        digest=selection_digest(ids, rule_d, pool_digest),
    )


# --- the cache ------------------------------------------------------------------------------

CACHE_DIR = "gate_cache"


def selection_key(base_digest: str, suite: str, pool: Sequence[Case], decoding: Mapping[str, Any],
                  rule: SelectionRule) -> str:
    payload = canonical_json({"base": base_digest, "suite": suite, "pool": cases_digest(pool),
                              "decoding": dict(decoding), "rule": rule.to_dict()})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _path(state_dir: Path, key: str) -> Path:
    return state_dir / CACHE_DIR / f"selection-{key}.json"


def load_selection(state_dir: Path | None, key: str) -> Selection | None:
    """A cached selection, or None (absent, damaged, or its digest does not match its content)."""
    if state_dir is None:
        return None
    try:
        data = json.loads(_path(state_dir, key).read_text(encoding="utf-8"))
        if data.get("key") != key:
            return None
        sel = Selection(**data["selection"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if sel.digest != selection_digest(sel.case_ids, sel.rule, sel.pool_digest):
        return None  # edited or damaged: recomputed, never trusted
    return sel


def save_selection(state_dir: Path | None, key: str, selection: Selection) -> None:
    if state_dir is None:
        return
    path = _path(state_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    body = replace(selection, pool_seconds=0.0).to_dict()
    tmp.write_text(json.dumps({"key": key, "selection": body}, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def selected_cases(pool: Sequence[Case], selection: Selection) -> list[Case]:
    keep = set(selection.case_ids)
    return [c for c in pool if c.id in keep]


# --- the report -----------------------------------------------------------------------------


def annotate(result: SuiteResult, selection: Selection) -> SuiteResult:
    """The suite's result with the selection stated: digest, rule, base accuracy on the pool."""
    details = dict(result.details)
    details["selection"] = {
        "digest": selection.digest,
        "pool_digest": selection.pool_digest,
        "rule": selection.rule,
        "pool_size": selection.pool_size,
        "base_accuracy_on_pool": round(selection.base_accuracy_on_pool, 6),
        "per_kind": {k: {**v, "base_accuracy": round(v["correct"] / v["n"], 6) if v["n"] else 0.0}
                     for k, v in selection.per_kind.items()},
        "selected": len(selection.case_ids),
        "selected_base_correct": selection.selected_base_correct,
        "selected_base_wrong": selection.selected_base_wrong,
    }
    metric = Metric(
        "base accuracy on the selection pool", round(selection.base_accuracy_on_pool, 6), None, True,
        selection.pool_size, decisive=False,
        detail=(f"{selection.base_correct_on_pool} of {selection.pool_size} pool problems; kept "
                f"{selection.selected_base_correct} the base answers correctly and {selection.selected_base_wrong} "
                f"it gets wrong (rule: {RULE_TEXT}); selection digest {selection.digest[:12]}"),
    )
    note = (f"cases selected per base model: {len(selection.case_ids)} of a {selection.pool_size}-problem pool on "
            f"which the bare base scores {selection.base_accuracy_on_pool:.1%} "
            f"({selection.selected_base_wrong} base-wrong cases kept to see gains)")
    return replace(result, metrics=[*result.metrics, metric], notes=[*result.notes, note], details=details)
