"""The demo's policy: ``policies/demo.yaml``, with ``--fast`` an even smaller gate."""

from __future__ import annotations

from governance.cli.demo.state import ROOT, DemoFailed, DemoState
from governance.policy import parse_policy

FAST_GATE = (
    ("max_new_tokens: 48 ", "max_new_tokens: 32 "),
    ("max_cases: {policy_compliance: 40, bias: 48, reasoning: 40}",
     "max_cases: {policy_compliance: 20, bias: 24, reasoning: 20}"),
)


def demo_policy(fast: bool) -> str:
    """policies/demo.yaml; with --fast an even smaller gate (the stored file says so)."""
    text = (ROOT / "policies" / "demo.yaml").read_text()
    if fast:
        for old, new in FAST_GATE:
            if old not in text:
                raise DemoFailed(f"policies/demo.yaml no longer contains {old!r}; update FAST_GATE")
            text = text.replace(old, new)
        text = "# govern demo --fast: the demo policy with a smaller gate (max_cases, max_new_tokens)\n" + text
    return text


def demo_interval(st: DemoState) -> int:
    policy, _ = parse_policy(demo_policy(st.fast))
    return int(policy.monitoring.interval_seconds)
