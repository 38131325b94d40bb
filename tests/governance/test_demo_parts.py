"""The demo's fixed parts, checked without running it: its policy (both sizes) loads, and
the traffic it sends carries what the story needs."""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

import pytest

from aligner.data import DATA_DIR
from evaluators.checkers import contains_pii
from governance.cli.demo.audit import tampered_copy
from governance.cli.demo.policy import demo_interval, demo_policy
from governance.cli.demo.state import ROOT, DemoState
from governance.cli.demo.tokens import LEAK, pii_leak_rows
from governance.cli.demo.traffic import (
    BENIGN,
    N_BAD,
    NAMES,
    PII_TEMPLATES,
    expected_delay,
    first_alarm,
    shifted_prompts,
)
from governance.policy import parse_policy


def test_demo_policies_load_and_differ_only_in_the_gate_size() -> None:
    full, _ = parse_policy(demo_policy(False))
    fast, _ = parse_policy(demo_policy(True))
    assert full.gate.max_cases == {"policy_compliance": 40, "bias": 48, "reasoning": 40}
    assert fast.gate.max_cases == {"policy_compliance": 20, "bias": 24, "reasoning": 20}
    assert (full.gate.max_new_tokens, fast.gate.max_new_tokens) == (48, 32)
    assert full.monitoring == fast.monitoring
    assert full.monitoring.reference_size == 32 and full.monitoring.min_samples == 8
    assert full.monitoring.detectors["policy_violations"].rollback
    assert not full.monitoring.rollback.fallback_to_base  # the story rolls back to an approved token
    assert demo_interval(DemoState(fast=True, db_name="x", state_dir=ROOT, work=ROOT,
                                   console=None)) == 10  # type: ignore[arg-type]


def test_clean_traffic_has_no_personal_data_and_the_shift_carries_it() -> None:
    assert not any(contains_pii(p) for p in BENIGN)
    shifted = [t.format(n=n, e=n.lower().replace(" ", ".") + "@example.com", p="415-555-1000")
               for t in PII_TEMPLATES for n in NAMES[:2]]
    # the prompts that echo contact details carry them; the sample-record one asks for new ones
    assert sum(contains_pii(p) for p in shifted) == 4


def test_a_round_of_the_shift_echoes_contact_data_in_two_prompts_of_three() -> None:
    prompts = shifted_prompts()
    assert len(prompts) == N_BAD == 24 and len(set(prompts)) == N_BAD
    assert sum(contains_pii(p) for p in prompts) == 16


def test_bad_token_rows_open_with_contact_data() -> None:
    rows = pii_leak_rows(DATA_DIR / "house_style" / "train.jsonl", 5)
    assert len(rows) == 5
    assert all(r["response"].startswith(LEAK) and contains_pii(r["response"]) for r in rows)


def test_the_tampered_copy_differs_in_one_actor_byte(tmp_path: Path) -> None:
    lines = [f'{{"seq":{i},"actor":"user:a{i}"}}' for i in range(1, 10)]
    src = tmp_path / "export.jsonl"
    src.write_text("\n".join(lines) + "\n")
    bad = tampered_copy(src, tmp_path / "bad.jsonl")
    a, b = src.read_bytes(), bad.read_bytes()
    assert len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) == 1
    assert b.split(b"\n")[5].startswith(b'{"seq":6,"actor":"X')


def test_the_story_is_small_steps() -> None:
    # issue 18 item 9: the demo is a package of small functions, none over 80 lines
    for path in (ROOT / "governance" / "cli" / "demo").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                assert node.end_lineno is not None
                assert node.end_lineno - node.lineno + 1 <= 80, f"{path.name}:{node.name}"


def test_until_defaults_to_the_last_step() -> None:
    # `govern demo` tells every step by default: its --until bound follows the story's length
    import inspect

    from governance.cli.demo.story import LAST_STEP
    from governance.cli.demo_cmds import demo_cmd

    option = inspect.signature(demo_cmd).parameters["until"].default
    assert option.default == LAST_STEP and option.max == LAST_STEP


def _check(check_id: int, **verdicts: str) -> Any:
    from governance.models import DriftCheck

    return DriftCheck(id=check_id, detectors={name: {"verdict": v} for name, v in verdicts.items()})


def test_the_delay_in_samples_is_read_at_the_deciding_detectors_first_alarm() -> None:
    """A check whose overall verdict is drift because another detector drifted is not the alarm."""
    checks = [
        _check(1, policy_violations="ok", descriptors="drift"),  # the descriptors drift first
        _check(2, policy_violations="ok", descriptors="drift"),
        _check(3, policy_violations="drift", descriptors="drift"),
        _check(4, policy_violations="drift"),
    ]
    found = first_alarm(checks, "policy_violations")
    assert found is not None and found.id == 3
    assert first_alarm(checks, "embeddings") is None
    assert first_alarm([_check(5, policy_violations="ok")], "policy_violations") is None


def test_the_predicted_delay_is_the_threshold_over_the_mean_increment() -> None:
    h, p0, p1 = 35.26, 0.01515, 0.30
    # at the design rate: Lorden's ln(ARL)/KL form with h in place of ln(ARL)
    kl = p1 * math.log(p1 / p0) + (1 - p1) * math.log((1 - p1) / (1 - p0))
    assert expected_delay(h, p0, p1, p1) == pytest.approx(h / kl)
    # a higher leak rate is detected sooner, a rate at or below p0 never (no upward drift)
    fast, mid, slow = (expected_delay(h, p0, p1, r) for r in (0.6, 0.35, 0.2))
    assert fast is not None and mid is not None and slow is not None and fast < mid < slow
    # the demo's run of 2026-12-07: 18 leaks in 51 shifted outputs, 51 observed
    assert expected_delay(h, p0, p1, 18 / 51) == pytest.approx(42, abs=1)
    assert expected_delay(h, p0, p1, p0) is None
    assert expected_delay(h, 0.0, p1, 0.5) is None
