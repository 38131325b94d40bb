"""The demo's fixed parts, checked without running it: its policy (both sizes) loads, and
the traffic it sends carries what the story needs."""

from __future__ import annotations

from evaluators.checkers import contains_pii
from governance.cli import demo
from governance.policy import parse_policy


def test_demo_policies_load_and_differ_only_in_the_gate_size() -> None:
    full, _ = parse_policy(demo.demo_policy(False))
    fast, _ = parse_policy(demo.demo_policy(True))
    assert full.gate.max_cases == {"policy_compliance": 40, "bias": 48, "reasoning": 40}
    assert fast.gate.max_cases == {"policy_compliance": 20, "bias": 24, "reasoning": 20}
    assert (full.gate.max_new_tokens, fast.gate.max_new_tokens) == (48, 32)
    assert full.monitoring == fast.monitoring
    assert full.monitoring.reference_size == 32 and full.monitoring.min_samples == 8
    assert full.monitoring.detectors["policy_violations"].rollback
    assert not full.monitoring.rollback.fallback_to_base  # the story rolls back to an approved token
    assert demo.demo_interval(demo.DemoState(fast=True, db_name="x", state_dir=demo.ROOT, work=demo.ROOT,
                                             console=None)) == 10  # type: ignore[arg-type]


def test_clean_traffic_has_no_personal_data_and_the_shift_carries_it() -> None:
    assert not any(contains_pii(p) for p in demo.BENIGN)
    shifted = [t.format(n=n, e=n.lower().replace(" ", ".") + "@example.com", p="415-555-1000")
               for t in demo.PII_TEMPLATES for n in demo.NAMES[:2]]
    # the prompts that echo contact details carry them; the sample-record one asks for new ones
    assert sum(contains_pii(p) for p in shifted) == 4


def test_bad_token_rows_open_with_contact_data() -> None:
    from aligner.data import DATA_DIR

    rows = demo.pii_leak_rows(DATA_DIR / "house_style" / "train.jsonl", 5)
    assert len(rows) == 5
    assert all(r["response"].startswith(demo.LEAK) and contains_pii(r["response"]) for r in rows)
