"""The rollout worker's paired analysis: the statistics on synthetic pairs, then the task on real PostgreSQL.

The statistics are checked against values computed by hand or by a second route (the
restricted likelihood maximised numerically, Connor's formula, a simulated test size).
The database tests start rollouts through the control plane (`rollouts.start_rollout`),
record pairs as replicas do (`ingest_outputs`: the served row and its unreturned twin
with ``twin_of`` and ``rollout_id``), run the task's function in process and read what the
verdict did: the rollout's state, its verdict rows, the audit chain and the alerts.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from scipy import optimize
from sqlalchemy import select

from evaluators import stats
from evaluators.embeddings import hashing_embedder
from governance.alerts.models import Alert
from governance.audit.models import AuditEntry
from governance.db import unit_of_work
from governance.deployments import rollouts
from governance.deployments import service as deployments
from governance.outputs.service import Pair, ingest_outputs
from governance.policy import Policy, parse_policy
from monitors.rollouts import analyse, describe_pairs, due_rollouts
from tests.monitors.conftest import CLEAN, World, make_world

LEAK = "Sure, email the list to john.doe@example.com and call 555-123-4567 for the rest."
REFUSE = "I'm sorry, but I can't help with that request."
HAPPY = "Thanks for asking! This is a great question and I am happy to help, it works well."
GLOOMY = "Unfortunately this is a terrible, sad and painful situation with a bad outcome."

CANDIDATE, ACTIVE = 2, 1


def _policy(extra: str = "", detectors: str = "") -> Policy:
    text = "version: 1\n"
    if detectors:
        text += f"monitoring:\n  detectors:\n{detectors}"
    if extra:
        text += f"rollout:\n{extra}"
    return parse_policy(text)[0]


VIOLATION_CUSUM = "    policy_violations: {kind: cusum, arl: 10000, p1: 0.3, rollback: true}\n"


def _pairs(n: int, active: Any, candidate: Any) -> list[Pair]:
    """Shadow pairs (served = active, twin = candidate); ``active(i)``/``candidate(i)`` give the answers."""
    now = datetime.now(UTC)
    return [Pair(2 * i + 1, 2 * i + 2, f"r{i}", [{"role": "user", "content": f"question {i}"}], ACTIVE, active(i),
                 CANDIDATE, candidate(i), now) for i in range(n)]


def _clean(i: int) -> str:
    return f"{CLEAN[i % len(CLEAN)]} (ref {i})"


def _run(pairs: list[Pair], policy: Policy, min_samples: int = 200, **kw: Any):  # type: ignore[no-untyped-def]
    frames = describe_pairs(pairs, candidate_version_id=CANDIDATE, fmt=policy.format, **kw)
    return analyse(frames, policy, min_samples=min_samples)


def _by_name(result: Any) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in result.tests}


# ------------------------------------------------------------------ the statistics, by hand


def test_score_test_is_mcnemar_at_margin_zero_and_matches_the_restricted_likelihood() -> None:
    res = stats.paired_difference_test(12, 3, 200, 0.0)
    assert res.z == pytest.approx((12 - 3) / math.sqrt(15))
    # a second route to the restricted MLE of p_c under p_b - p_c = margin: maximise the likelihood numerically
    b, c, n, m = 30, 8, 300, 0.05

    def nll(q: float) -> float:
        return -(b * math.log(q + m) + c * math.log(q) + (n - b - c) * math.log(1 - 2 * q - m))

    q = optimize.minimize_scalar(nll, bounds=(1e-9, (1 - m) / 2 - 1e-9), method="bounded",
                                 options={"xatol": 1e-12}).x
    z = (b - c - n * m) / math.sqrt(n * (2 * q + m * (1 - m)))
    res = stats.paired_difference_test(b, c, n, m)
    assert res.z == pytest.approx(z, rel=1e-5)
    assert res.p_value == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)), rel=1e-5)
    assert stats.paired_difference_test(0, 0, 100, 0.02).p_value > 0.5  # nothing discordant: no evidence
    assert stats.paired_difference_test(5, 0, 100, 1.0).p_value == 1.0


def test_score_test_holds_its_level_at_the_margin() -> None:
    rng = np.random.default_rng(7)
    n, margin = 400, 0.05
    probs = [0.02 + margin, 0.02, 1 - 0.04 - margin]  # p_b - p_c = margin exactly: the null's boundary
    cells = rng.multinomial(n, probs, size=4000)
    rejected = np.mean([stats.paired_difference_test(int(b), int(c), n, margin).p_value <= 0.05
                        for b, c, _ in cells])
    assert 0.03 <= rejected <= 0.07


def test_minimum_detectable_increase_is_connors_and_has_the_power_it_states() -> None:
    n, psi = 200, 0.2
    mde = stats.minimum_detectable_increase(n, psi, 0.05, 0.8)
    assert mde == pytest.approx(stats.minimum_detectable_drop(n, psi, 0.05, 0.8), rel=1e-6)
    assert stats.connor_power(n, mde, psi, 0.05) == pytest.approx(0.8, abs=1e-4)
    # identical answers (psi = 0): an increase d needs d discordant, so (z_a + z_b sqrt(1 - d))^2 / d = n
    d = stats.minimum_detectable_increase(200, 0.0, 0.05, 0.8)
    za, zb = 1.6448536, 0.8416212
    assert (za + zb * math.sqrt(1 - d)) ** 2 / d == pytest.approx(200, rel=1e-4)
    # a margin moves it up by about the margin; more pairs, smaller effects
    assert stats.minimum_detectable_increase(200, 0.1, margin=0.02) > stats.minimum_detectable_increase(200, 0.1)
    assert stats.minimum_detectable_increase(800, 0.1) < stats.minimum_detectable_increase(200, 0.1)
    assert stats.mean_shift_mde(100, 1.0, 0.05, 0.8) == pytest.approx((za + zb) / 10, rel=1e-6)
    assert stats.mean_shift_mde(0, 1.0) is None


# ------------------------------------------------------------------ the analysis on synthetic pairs


def test_candidate_violating_ten_percent_against_one_fails_at_200() -> None:
    bad_c = set(range(5, 200, 10))  # 20 of 200: 10 %
    bad_a = {3, 101}  # 2 of 200: 1 %
    res = _run(_pairs(200, lambda i: LEAK if i in bad_a else _clean(i), lambda i: LEAK if i in bad_c else _clean(i)),
               _policy())
    assert res.decision == "fail" and res.judged
    t = _by_name(res)["policy_violations"]
    assert (t["b"], t["c"], t["n"]) == (20, 2, 200)
    # exact one-sided McNemar: P(X >= 20), X ~ Bin(22, 1/2) = (1 + 22 + 231) / 2^22
    assert t["p_value"] == pytest.approx(254 / 2**22)
    assert t["threshold"] == 0.0 and t["statistic"] == pytest.approx(18 / 200)
    assert t["outcome"] == "fail" and t["decides"]
    assert t["p_holm"] == pytest.approx(3 * 254 / 2**22)  # the smallest of three deciding p-values
    assert res.summary.startswith("candidate violates policy on 20 of 200 prompts where the active does not "
                                  "(2 reverse), McNemar p = ")
    assert res.summary.endswith(": fail")
    # the officers see the leaking pairs first, with the checks that differ
    first = res.differing[0]
    assert first["candidate_answer"] == LEAK and "violation" in first["checks"] and "pii" in first["checks"]
    assert first["prompt"].startswith("question ")
    assert len(res.differing) == 20


def test_identical_answers_pass_with_sane_minimum_detectable_effects() -> None:
    res = _run(_pairs(200, _clean, _clean), _policy())
    assert res.decision == "pass" and res.differing == []
    tests = _by_name(res)
    for name in ("policy_violations", "refusal", "sentiment"):
        t = tests[name]
        assert t["decides"] and t["outcome"] == "pass" and t["n"] == 200 and t["p_value"] > 0.5
        assert set(t) >= {"name", "n", "statistic", "threshold", "p_value", "mde", "decides", "outcome", "detail"}
    # MDEs at Holm's first step (alpha / 3) with power 0.8, for 200 pairs
    assert 0.03 < tests["policy_violations"]["mde"] < 0.06
    assert tests["refusal"]["threshold"] == 0.02 and 0.05 < tests["refusal"]["mde"] < 0.1
    assert tests["sentiment"]["threshold"] == -0.05 and -0.3 < tests["sentiment"]["mde"] < -0.05
    assert tests["length"]["decides"] is False and tests["length"]["outcome"] == "not significant"
    assert tests["length"]["mde"] > 0.5  # a change past the tolerated 1.5x
    emb = tests["embedding_distance"]
    assert emb["n"] == 0 and emb["p_value"] is None and "not computed" in emb["detail"]
    assert res.summary.endswith(": pass")


def test_a_sentiment_drop_fails() -> None:
    res = _run(_pairs(200, lambda i: HAPPY, lambda i: GLOOMY), _policy())
    t = _by_name(res)["sentiment"]
    assert t["statistic"] < -0.5 and t["outcome"] == "fail" and t["p_value"] < 0.001
    assert res.decision == "fail" and "mean sentiment change" in res.summary
    # a tolerated drop larger than the real one does not fail
    res = _run(_pairs(200, lambda i: HAPPY, lambda i: GLOOMY), _policy("  max_sentiment_drop: 2.0\n"))
    assert _by_name(res)["sentiment"]["outcome"] == "pass"


def test_a_length_change_is_evidence_unless_the_policy_lets_it_decide() -> None:
    def longer(i: int) -> str:
        return " ".join([_clean(i)] * 3)

    res = _run(_pairs(200, _clean, longer), _policy())
    t = _by_name(res)["length"]
    assert t["statistic"] == pytest.approx(2.0, abs=0.1)  # three times as long
    assert t["outcome"] == "fail" and t["decides"] is False and "evidence only" in t["detail"]
    assert res.decision == "pass"
    res = _run(_pairs(200, _clean, longer), _policy("  decide: [policy_violations, length]\n"))
    assert _by_name(res)["length"]["decides"] and res.decision == "fail"


def test_holm_over_the_deciding_tests() -> None:
    # 5 candidate-only violations and 5 candidate-only refusals: each exact McNemar p = 1/32
    def cand(i: int) -> str:
        return LEAK if i in (10, 50, 90, 130, 170) else REFUSE if i in (30, 70, 110, 150, 190) else _clean(i)

    pairs = _pairs(200, _clean, cand)
    one = _run(pairs, _policy("  decide: [policy_violations]\n"))
    assert _by_name(one)["policy_violations"]["p_value"] == pytest.approx(1 / 32)
    assert one.decision == "fail"  # alone: 1/32 <= 0.05
    two = _run(pairs, _policy("  decide: [policy_violations, refusal]\n  max_refusal_increase: 0.0\n"))
    tests = _by_name(two)
    assert tests["refusal"]["p_value"] == pytest.approx(1 / 32)
    assert tests["policy_violations"]["p_holm"] == pytest.approx(2 / 32)
    assert tests["refusal"]["p_holm"] == pytest.approx(2 / 32)
    assert two.decision == "pass"  # two tests at 1/32 each: Holm's 2/32 > 0.05


def test_fewer_pairs_than_min_samples_judge_nothing_fixed() -> None:
    res = _run(_pairs(60, _clean, lambda i: LEAK if i % 20 == 0 else _clean(i)), _policy(), min_samples=200)
    assert res.decision == "pending" and not res.judged
    assert [t["name"] for t in res.tests] == []  # no rollback-capable detector in this policy
    assert res.summary == "60 of 200 pairs so far: pending"


def test_the_early_abort_fires_on_a_leaking_candidate_before_min_samples() -> None:
    policy = _policy(detectors=VIOLATION_CUSUM)
    res = _run(_pairs(40, _clean, lambda i: LEAK if i % 2 else _clean(i)), policy, min_samples=200)
    assert res.decision == "fail" and res.early_abort and not res.judged
    t = _by_name(res)["early_abort:policy_violations"]
    assert t["fired"] and t["outcome"] == "fail" and t["decides"]
    assert t["statistic"] >= t["threshold"] > 0 and t["arl"] == 10000 and t["p1"] == 0.3
    assert t["candidate_flagged"] == 20 and t["active_flagged"] == 0 and t["first_alarm_pair"] <= 20
    assert res.summary.startswith("early abort: candidate's violation flag on 20 of 40 pairs")
    # a clean candidate does not fire, and stays pending below min_samples
    res = _run(_pairs(40, _clean, _clean), policy, min_samples=200)
    assert res.decision == "pending" and _by_name(res)["early_abort:policy_violations"]["outcome"] == "not significant"


def test_embedding_distance_with_an_embedder_and_its_interval() -> None:
    policy = _policy("  decide: [policy_violations, embedding_distance]\n  max_embedding_distance: 0.2\n")
    res = _run(_pairs(200, _clean, lambda i: GLOOMY + f" {i}"), policy, with_embeddings=True,
               embedder=hashing_embedder)
    t = _by_name(res)["embedding_distance"]
    assert t["n"] == 200 and t["statistic"] > 0.5 and t["outcome"] == "fail" and t["decides"]
    lo, hi = t["interval"]
    assert lo <= t["statistic"] <= hi and t["mde"] > 0.2
    same = _run(_pairs(200, _clean, _clean), policy, with_embeddings=True, embedder=hashing_embedder)
    assert _by_name(same)["embedding_distance"]["statistic"] == pytest.approx(0.0, abs=1e-9)
    assert same.decision == "pass"


def test_canary_pairs_map_the_served_answer_to_the_candidate() -> None:
    now = datetime.now(UTC)
    canary = [Pair(2 * i + 1, 2 * i + 2, f"r{i}", [{"role": "user", "content": "q"}], CANDIDATE,
                   LEAK if i % 10 == 0 else _clean(i), ACTIVE, _clean(i), now) for i in range(200)]
    stray = Pair(999, 1000, "stray", [], 7, "x", 8, "y", now)  # neither answer is the candidate's
    frames = describe_pairs([*canary, stray], candidate_version_id=CANDIDATE)
    assert frames.n == 200 and frames.skipped == 1 and frames.upto_output_id == 1000
    assert int(frames.candidate.flags["violation"].sum()) == 20 and int(frames.active.flags["violation"].sum()) == 0


# ------------------------------------------------------------------ the task, on PostgreSQL

ROLLOUT_POLICY = """
rollout:
  min_samples: 100
  interval_seconds: 1
  steps: [5, 50, 100]
"""


@pytest.fixture()
def rworld(engine: Any, settings_env: None) -> World:
    return make_world(engine, extra_policy=ROLLOUT_POLICY)


def _start(w: World, version_id: int, mode: str, steps: list[int] | None = None) -> int:
    with unit_of_work(w.engine) as s:
        ro = rollouts.start_rollout(s, deployment=w.deployment, version_id=version_id, mode=mode,
                                    principal=w.people["ml_engineer"], steps=steps)
        return int(ro.id)


def _ingest(w: World, rollout_id: int, active_id: int, candidate_id: int, mode: str, n: int, candidate: Any,
            start: int = 0) -> None:
    """``n`` pairs as a replica records them: the served row and the unreturned twin naming it."""
    rows = []
    for i in range(start, start + n):
        rid = f"ro{rollout_id}-{i}"
        msgs = [{"role": "user", "content": f"question {i}"}]
        act, cand = (active_id, _clean(i)), (candidate_id, candidate(i))
        served, twin = (act, cand) if mode == "shadow" else (cand, act)
        rows.append({"request_id": rid, "version_id": served[0], "messages": msgs, "output": served[1],
                     "rollout_id": rollout_id})
        rows.append({"request_id": f"{rid}-twin", "version_id": twin[0], "messages": msgs, "output": twin[1],
                     "rollout_id": rollout_id, "twin_of": rid})
    with unit_of_work(w.engine) as s:
        inserted, _ = ingest_outputs(s, deployment=w.deployment, rows=rows)
        assert inserted == 2 * n


def _evaluate(rollout_id: int) -> dict[str, Any]:
    from monitors import tasks

    return tasks.evaluate_rollout_task(rollout_id)  # in process: the task's body, not a worker


def _rollout(w: World, rollout_id: int) -> Any:
    with unit_of_work(w.engine) as s:
        ro = rollouts.get_rollout(s, rollout_id=rollout_id)
        s.expunge(ro)
        return ro


def _alerts(w: World) -> list[Alert]:
    with unit_of_work(w.engine) as s:
        return list(s.scalars(select(Alert).where(Alert.deployment_id == w.deployment_id)))


def _audit(w: World, action: str) -> list[AuditEntry]:
    with unit_of_work(w.engine) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action,
                                                       AuditEntry.subject_id == w.deployment)))


def _leaks(i: int) -> str:
    return LEAK if i % 7 == 3 else _clean(i)  # about 14 %, spread out


def test_a_leaking_shadow_candidate_fails(rworld: World) -> None:
    w = rworld
    active = w.release()
    cand = w.release(promote=False, approve=False)  # gate passed, not approved: shadow only
    rid = _start(w, cand, "shadow")
    _ingest(w, rid, active, cand, "shadow", 100, _leaks)
    out = _evaluate(rid)
    assert out["status"] == "recorded" and out["decision"] == "fail" and out["n_pairs"] == 100
    assert _rollout(w, rid).state == "failed"
    with unit_of_work(w.engine) as s:
        [verdict] = rollouts.verdicts(s, rollout_id=rid)
        assert verdict.decision == "fail" and verdict.n_pairs == 100 and verdict.id == out["verdict_id"]
        assert {t["name"] for t in verdict.tests} >= {"policy_violations", "refusal", "sentiment", "length"}
        assert verdict.differing and verdict.differing[0]["candidate_answer"] == LEAK
        assert verdict.summary.startswith("candidate violates policy on 14 of 100 prompts")
    [entry] = _audit(w, "rollout.shadow_failed")
    assert entry.actor == "system:monitor/rollout"
    assert json.loads(entry.payload)["verdict_id"] == out["verdict_id"]
    [alert] = [a for a in _alerts(w) if a.kind == "rollout_failed"]
    assert alert.severity == "warning" and alert.details["verdict_id"] == out["verdict_id"]
    assert verdict.summary in alert.message
    # idempotent: the rollout ended, a redelivered task changes nothing
    again = _evaluate(rid)
    assert again["status"] == "not_running"
    with unit_of_work(w.engine) as s:
        assert len(rollouts.verdicts(s, rollout_id=rid)) == 1


def test_a_good_shadow_candidate_passes_and_too_few_pairs_stay_pending(rworld: World) -> None:
    w = rworld
    active = w.release()
    cand = w.release(promote=False, approve=False)
    rid = _start(w, cand, "shadow")
    _ingest(w, rid, active, cand, "shadow", 40, _clean)
    pending = _evaluate(rid)
    assert pending["decision"] == "pending" and pending["n_pairs"] == 40
    assert _rollout(w, rid).state == "running"
    # no new pair since: the next look adds no verdict row
    assert _evaluate(rid)["status"] == "unchanged"
    _ingest(w, rid, active, cand, "shadow", 70, _clean, start=40)
    done = _evaluate(rid)
    assert done["decision"] == "pass" and done["n_pairs"] == 110
    assert _rollout(w, rid).state == "passed"
    with unit_of_work(w.engine) as s:
        assert [v.decision for v in rollouts.verdicts(s, rollout_id=rid)] == ["pass", "pending"]
        assert rollouts.shadow_evidence(s, version_id=cand).id == done["verdict_id"]
    assert len(_audit(w, "rollout.shadow_passed")) == 1
    assert [a for a in _alerts(w) if a.kind.startswith("rollout")] == []


def test_a_passing_canary_advances_a_step(rworld: World) -> None:
    w = rworld
    active = w.release()
    cand = w.release(promote=False)  # approved: a canary serves users
    rid = _start(w, cand, "canary")
    before = _rollout(w, rid)
    with unit_of_work(w.engine) as s:
        gen_before = int(deployments.get_deployment_or_raise(s, name=w.deployment).generation)
    _ingest(w, rid, active, cand, "canary", 100, _clean)
    out = _evaluate(rid)
    assert out["decision"] == "pass" and "advanced to 50%" in (out["change"] or "")
    after = _rollout(w, rid)
    assert after.state == "running" and after.step_index == 1 and after.step_started_at > before.step_started_at
    with unit_of_work(w.engine) as s:
        dep = deployments.get_deployment_or_raise(s, name=w.deployment)
        assert int(dep.generation) == gen_before + 1 == after.generation
        assert [e.kind for e in rollouts.events(s, rollout_id=rid)] == ["start", "verdict", "advance"]
    # the new step counts its own pairs: the ones of step 0 are not judged again
    again = _evaluate(rid)
    assert again["decision"] == "pending" and again["n_pairs"] == 0


def test_a_canary_passing_its_last_step_is_promoted(rworld: World) -> None:
    w = rworld
    active = w.release()
    cand = w.release(promote=False)
    rid = _start(w, cand, "canary", steps=[50, 100])
    _ingest(w, rid, active, cand, "canary", 100, _clean)
    out = _evaluate(rid)
    assert out["decision"] == "pass" and "is active" in (out["change"] or "")
    assert _rollout(w, rid).state == "completed"
    assert w.active() == cand
    assert len(_audit(w, "rollout.complete")) == 1


def test_a_leaking_canary_is_aborted_by_the_cusum_before_min_samples(rworld: World) -> None:
    w = rworld
    active = w.release()
    cand = w.release(promote=False)
    rid = _start(w, cand, "canary")
    _ingest(w, rid, active, cand, "canary", 40, lambda i: LEAK if i % 2 else _clean(i))
    out = _evaluate(rid)
    assert out["decision"] == "fail" and out["n_pairs"] == 40  # min_samples is 100
    ro = _rollout(w, rid)
    assert ro.state == "aborted"
    with unit_of_work(w.engine) as s:
        [verdict] = rollouts.verdicts(s, rollout_id=rid)
        names = [t["name"] for t in verdict.tests]
        assert names == ["early_abort:policy_violations"] and verdict.tests[0]["fired"]
        assert deployments.active_info(s, name=w.deployment).rollout is None  # all traffic on the active token
    [entry] = _audit(w, "rollout.abort")
    assert entry.actor == "system:monitor/rollout"
    [alert] = [a for a in _alerts(w) if a.kind == "rollout_aborted"]
    assert alert.severity == "critical" and alert.details["verdict_id"] == out["verdict_id"]
    assert alert.details["early_abort"] is True and "early abort" in alert.message


def test_the_dispatcher_queues_each_due_rollout_once(rworld: World, redis_url: str) -> None:
    from monitors import tasks
    from monitors.celery_app import app, configure

    configure(app, redis_url)  # the workers' app sends to this run's Redis
    w = rworld
    active = w.release()
    cand = w.release(promote=False, approve=False)
    rid = _start(w, cand, "shadow")
    now = datetime.now(UTC)
    with unit_of_work(w.engine) as s:
        assert rid not in [d.rollout_id for d in due_rollouts(s, now - timedelta(seconds=5))]  # not yet due
        [due] = [d for d in due_rollouts(s, now + timedelta(seconds=2)) if d.rollout_id == rid]
        assert due.interval_seconds == 1 and due.key == f"r{rid}:s0:v0"
    later = now + timedelta(seconds=2)
    assert rid in tasks.dispatch_rollouts(later, redis_url=redis_url)
    assert rid not in tasks.dispatch_rollouts(later, redis_url=redis_url)  # already queued
    _ingest(w, rid, active, cand, "shadow", 10, _clean)
    assert _evaluate(rid)["decision"] == "pending"
    # a new verdict is a new look: due again one interval later, under a new key
    assert rid in tasks.dispatch_rollouts(datetime.now(UTC) + timedelta(seconds=2), redis_url=redis_url)
    # a look that finds no new pair records nothing and gives its key back: the next dispatch
    # looks again at once, so pairs arriving right after a quiet look wait one interval, not the key's expiry
    nxt = datetime.now(UTC) + timedelta(seconds=4)
    assert rid not in tasks.dispatch_rollouts(nxt, redis_url=redis_url)  # that look is still queued
    with unit_of_work(w.engine) as s:
        [due] = [d for d in due_rollouts(s, nxt) if d.rollout_id == rid]
    quiet = tasks.evaluate_rollout_task(rid, dispatch_key=due.key)
    assert quiet["status"] == "unchanged"
    assert rid in tasks.dispatch_rollouts(nxt, redis_url=redis_url)
