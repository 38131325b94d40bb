"""Step 5 of the demo: before the approved "safer" version reaches a user, the engineer puts it in
shadow beside the active one; the users' traffic shifts (they paste contact details and ask for
them back), every request is decoded a second time with the candidate in the same batch, and the
worker's paired test flags the candidate: its twins write out personal data where the active
version's answers to the same prompts do not. No user received one of its answers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from governance.cli.demo.replicas import wait_replicas
from governance.cli.demo.state import DEPLOYMENT, DemoFailed, DemoState, said, say, wait_for
from governance.cli.demo.traffic import send_traffic, shifted_prompts
from governance.db import get_engine, unit_of_work
from governance.deployments.models import Rollout, RolloutVerdict
from governance.models import Output

# the worker judges the pairs once a step has the policy's min_samples (policies/demo.yaml: 24)
VERDICT_TIMEOUT_S = 180


def shadow_before_promotion(st: DemoState) -> None:
    active, candidate = st.versions["house"], st.versions["safer"]
    with st.client(st.users.engineer) as eng:
        ro = eng.start_rollout(DEPLOYMENT, candidate, mode="shadow", sample=1.0)
    rollout_id = int(ro["id"])
    say(st, f"engineer started shadow rollout {rollout_id}: version {candidate} decoded beside the active "
            f"version {active} on every request, in the same batch; users get only the active version's answers")
    wait_replicas(st, int(ro["generation"]))
    res = send_traffic(st, shifted_prompts(), "shadow: users paste contact details")
    served = {r["fingerprint"] for r in res}
    say(st, f"{len(res)} requests answered; the users' answers came from {', '.join(sorted(served))}")
    ro_row = wait_for("the worker's paired verdict on the shadow", lambda: _ended(rollout_id),
                      timeout=VERDICT_TIMEOUT_S, interval=1)
    if ro_row["state"] != "failed":
        raise DemoFailed(f"the shadow of version {candidate} ended {ro_row['state']!r}: "
                         f"{ro_row['end_reason']}; expected the paired test to flag its leaks")
    verdict = _verdict(rollout_id)
    said(st, f"shadow verdict: {verdict['decision']} on {verdict['n_pairs']} pairs: {verdict['summary']}")
    failed = [t for t in verdict["tests"] if t.get("decides") and t.get("outcome") == "fail"]
    for t in failed:
        said(st, f"  {t['name'].replace('_', ' ')}: {t['detail']}")
    _show_a_pair(st, verdict)
    returned = _returned_candidate_answers(candidate)
    if returned:
        raise DemoFailed(f"{returned} answers of the shadowed version {candidate} reached users")
    say(st, f"no user received an answer from version {candidate}: every one of its answers is an unreturned twin")
    st.numbers["shadow_verdict"] = (f"{verdict['decision']} on {verdict['n_pairs']} pairs"
                                    + (f" ({', '.join(t['name'] for t in failed)})" if failed else ""))


def _ended(rollout_id: int) -> dict[str, Any] | None:
    with unit_of_work(get_engine()) as s:
        ro = s.get(Rollout, rollout_id)
        if ro is None or ro.state == "running":
            return None
        return {"state": ro.state, "end_reason": ro.end_reason}


def _verdict(rollout_id: int) -> dict[str, Any]:
    with unit_of_work(get_engine()) as s:
        v = s.scalars(select(RolloutVerdict).where(RolloutVerdict.rollout_id == rollout_id)
                      .order_by(RolloutVerdict.id.desc())).first()
        if v is None:
            raise DemoFailed(f"rollout {rollout_id} ended without a verdict")
        return {"decision": v.decision, "n_pairs": v.n_pairs, "summary": v.summary, "tests": list(v.tests),
                "differing": list(v.differing)}


def _show_a_pair(st: DemoState, verdict: dict[str, Any]) -> None:
    """One pair the checks tell apart, side by side, as the officer's version page shows them."""
    for pair in verdict["differing"][:1]:
        prompt = str(pair.get("prompt", ""))[:90]
        said(st, f"  prompt:    {prompt!r}")
        said(st, f"  active:    {str(pair.get('active_answer', ''))[:90]!r}")
        said(st, f"  candidate: {str(pair.get('candidate_answer', ''))[:90]!r}  ({', '.join(pair.get('checks', []))})")


def _returned_candidate_answers(version_id: int) -> int:
    with unit_of_work(get_engine()) as s:
        return int(s.scalar(select(func.count()).select_from(Output).where(
            Output.version_id == version_id, Output.twin_of.is_(None))) or 0)
