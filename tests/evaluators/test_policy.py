"""The policy file: the shipped default loads, bad keys are refused with their path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from governance.policy import PolicyError, default_policy_path, load_default_policy, load_policy, parse_policy


def test_default_policy_loads_and_digest_is_of_the_bytes() -> None:
    policy, digest = load_default_policy()
    assert digest == hashlib.sha256(default_policy_path().read_bytes()).hexdigest()
    assert policy.version == 1
    assert policy.gate.policy_compliance.max_violation_rate["pii"] == 0.0
    assert policy.gate.reasoning.compare_to == ["base", "active"]
    assert policy.monitoring.detectors["policy_violations"].kind == "cusum"
    assert policy.monitoring.rollback.consecutive_windows == 2


def test_every_threshold_in_the_default_is_commented() -> None:
    # "each threshold justified in a comment": every numeric value carries a comment on
    # its line or in the comment block directly above it.
    prev_comment = False
    for line in default_policy_path().read_text().splitlines():
        code = line.split("#", 1)[0].strip()
        value = code.split(":", 1)[1].strip() if ":" in code else ""
        if value and value.replace(".", "", 1).isdigit():
            assert "#" in line or prev_comment, f"threshold without a justification: {line.strip()}"
        prev_comment = line.strip().startswith("#") or (prev_comment and not line.strip())


def test_text_path_and_bytes_give_same_digest(tmp_path: Path) -> None:
    text = "version: 1\nname: strict\n"
    f = tmp_path / "p.yaml"
    f.write_text(text)
    a, da = parse_policy(text)
    b, db = load_policy(f)
    c, dc = parse_policy(f.read_text())
    d, dd = parse_policy(text.encode())
    assert da == db == dc == dd == hashlib.sha256(text.encode()).hexdigest()
    assert a == b == c == d and a.name == "strict"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\ngate: {bias: {alpha: 1.5}}", "gate.bias.alpha: must be between 0 and 1"),
        ("version: 1\ngate: {bais: {}}", "unknown key gate.bais"),
        ("version: 1\ngate: {policy_compliance: {max_violation_rate: {pii: 2}}}",
         "gate.policy_compliance.max_violation_rate.pii: must be between 0 and 1"),
        ("version: 1\ngate: {policy_compliance: {max_increase: {bogus: 0.1}}}", "unknown category 'bogus'"),
        ("version: 1\ngate: {reasoning: {compare_to: [base, nightly]}}", "gate.reasoning.compare_to.1"),
        ("version: 1\ngate: {reasoning: {compare_to: []}}", "at least one baseline"),
        ("version: 2", "unsupported policy version 2"),
        ("name: x", "version: required key is missing"),
        ("version: 1\nmonitoring: {detectors: {v: {kind: cusum}}}",
         "monitoring.detectors.v: a cusum detector needs arl"),
        ("version: 1\nmonitoring: {detectors: {v: {kind: cusum, arl: 100, window: 3}}}",
         "unknown key monitoring.detectors.v.window"),
        ("version: 1\nmonitoring: {rollback: {max_per_day: -1}}", "monitoring.rollback.max_per_day: must be >= 0"),
        ("version: 1\nmonitoring: {sample_rate: 0}", "monitoring.sample_rate: must be between 0 and 1"),
        ("version: 1\nalerts: {format: xml}", "alerts.format"),
        ("version: 1\nalerts: {webhook_url: 'ftp://x'}", "alerts.webhook_url: must be an http"),
        ("version: 1\nformat: {min_chars: 10, max_chars: 5}", "min_chars must not exceed max_chars"),
        ("- a\n- b", "must be a YAML mapping"),
        ("x: [", "not valid YAML"),
    ],
)
def test_bad_policies_name_the_bad_key(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as exc:
        parse_policy(text)
    assert message in str(exc.value)


def test_several_problems_are_all_listed() -> None:
    with pytest.raises(PolicyError) as exc:
        parse_policy("version: 1\ngate: {bias: {alpha: 2, beta: 1}}")
    assert len(exc.value.problems) == 2
    assert "unknown key gate.bias.beta" in str(exc.value)


def test_missing_file() -> None:
    with pytest.raises(PolicyError, match="not found"):
        load_policy(Path("/nonexistent/policy.yaml"))


def test_partial_thresholds_keep_the_other_defaults_and_null_turns_a_bound_off() -> None:
    policy, _ = parse_policy("version: 1\ngate: {policy_compliance: {max_violation_rate: {tone: 0.2, pii: null}}}")
    rates = policy.gate.policy_compliance.max_violation_rate
    assert rates["tone"] == 0.2 and rates["pii"] is None and rates["must_refuse"] == 0.10
    assert policy.gate.policy_compliance.max_increase["pii"] == 0.0


def test_text_is_never_taken_for_a_path(tmp_path: Path) -> None:
    # a one-line string ending in .yaml is YAML text (a scalar, so not a mapping), even when
    # a file of that name exists; files are read only through load_policy(Path)
    f = tmp_path / "p.yaml"
    f.write_text("version: 1\n")
    with pytest.raises(PolicyError, match="must be a YAML mapping"):
        parse_policy(str(f))
    with pytest.raises(TypeError, match="parse_policy"):
        load_policy(str(f))  # type: ignore[arg-type]
