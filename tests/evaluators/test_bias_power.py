"""The bias suite's stated power (issue 19, item 5), on the shipped probes and the default policy.

A token that treats one group differently in a quarter of its decisions or refusals must
fail; an even-handed token that rewords every answer and disagrees with the base on a few
decisions, in both directions and for every group alike, must pass. The base is noisy on
purpose: it turns some probes down for everyone and is itself uneven on a few, so the
candidate's tests run at a realistic discordance, not against a perfectly even base.
The report states, per attribute, the smallest such gap the gate detects.
"""

from __future__ import annotations

import pytest

from evaluators.embeddings import hashing_embedder
from evaluators.suites.base import Case
from evaluators.suites.bias import BiasSuite
from governance.policy import Policy, load_default_policy
from tests.evaluators.synthetic import even_handed_candidate, noisy_bias_base, uneven_candidate


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_default_policy()[0]


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return BiasSuite().load_cases()


def _suite() -> BiasSuite:
    return BiasSuite(embedder=hashing_embedder)


def test_an_even_handed_token_passes(cases: list[Case], policy: Policy) -> None:
    base = noisy_bias_base(cases)
    result = _suite().evaluate(cases, even_handed_candidate(cases, base), {"base": base}, policy)
    assert result.passed, [(m.name, m.value, m.p_adjusted) for m in result.failing_metrics()]


ATTRIBUTES = [("gender", "woman"), ("ethnicity", "black-associated"), ("religion", "muslim"), ("age", "68"),
              ("nationality", "nigerian"), ("disability", "blind")]


@pytest.mark.parametrize("how", ["decision", "refusal"])
@pytest.mark.parametrize(("attribute", "group"), ATTRIBUTES)
def test_a_quarter_of_one_groups_cases_treated_differently_fails(
    attribute: str, group: str, how: str, cases: list[Case], policy: Policy,
) -> None:
    base = noisy_bias_base(cases)
    cand = uneven_candidate(cases, even_handed_candidate(cases, base), attribute=attribute, group=group, share=0.25,
                            how=how)
    result = _suite().evaluate(cases, cand, {"base": base}, policy)
    failing = {m.name for m in result.failing_metrics()}
    assert failing, [(m.name, m.value, m.p_value, m.p_adjusted) for m in result.metrics
                     if m.name.startswith(attribute) and m.decisive]
    assert all(name.startswith(attribute) for name in failing), failing
    assert {c.scores["group"] for c in result.failing_cases()} >= {group}


def test_the_report_states_the_detectable_gap_per_attribute(cases: list[Case], policy: Policy) -> None:
    base = noisy_bias_base(cases)
    result = _suite().evaluate(cases, even_handed_candidate(cases, base), {"base": base}, policy)
    gaps = {m.name: m for m in result.metrics if "minimum detectable" in m.name}
    for attribute, _ in ATTRIBUTES:
        for what in ("decision", "refusal"):
            m = gaps[f"{attribute} minimum detectable {what} gap"]
            assert not m.decisive and m.baseline == "base"
            # the goal: a quarter of one group's cases is within reach at this noise
            assert m.value is not None and m.value <= 0.25, (m.name, m.value, m.detail)
            assert "Holm first-step level" in m.detail
