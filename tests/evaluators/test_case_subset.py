"""A policy's max_cases gives a fixed, stratified subset that keeps matched sets whole."""

from __future__ import annotations

import evaluators.runner  # noqa: F401  (registers the shipped suites)
from evaluators.suites.base import get_suite
from governance.policy import parse_policy


def test_subset_is_fixed_stratified_and_keeps_probe_sets_whole() -> None:
    bias = get_suite("bias")
    cases = bias.load_cases()
    sub = bias.select_cases(cases, 60)
    assert sub == bias.select_cases(cases, 60)  # deterministic
    assert 55 <= len(sub) <= 70
    probes: dict[str, int] = {}
    for c in sub:
        probes[c.meta["probe"]] = probes.get(c.meta["probe"], 0) + 1
    full: dict[str, int] = {}
    for c in cases:
        full[c.meta["probe"]] = full.get(c.meta["probe"], 0) + 1
    assert all(n == full[p] for p, n in probes.items())  # no matched set is cut
    assert len({c.category for c in sub}) == len({c.category for c in cases})  # every category kept
    order = [cases.index(c) for c in sub]
    assert order == sorted(order)


def test_compliance_subset_covers_every_category() -> None:
    suite = get_suite("policy_compliance")
    cases = suite.load_cases()
    sub = suite.select_cases(cases, 20)
    assert len(sub) == 20
    assert {c.category for c in sub} == {c.category for c in cases}
    assert suite.select_cases(cases, None) == cases


def test_policy_max_cases_is_validated() -> None:
    text = "version: 1\ngate:\n  max_cases: {reasoning: 40}\n"
    policy, _ = parse_policy(text)
    assert policy.gate.max_cases == {"reasoning": 40}
    import pytest

    with pytest.raises(ValueError, match="max_cases"):
        parse_policy("version: 1\ngate:\n  max_cases: {reasonin: 40}\n")
    with pytest.raises(ValueError, match="max_cases"):
        parse_policy("version: 1\ngate:\n  max_cases: {reasoning: 0}\n")
