"""The one eligibility function, as tables: every rule, and each at its boundary
(the day the waiting period ends, the twelfth paid month, the yearly limit, the
budget's last rupee)."""

from __future__ import annotations

import datetime as dt

import pytest

from union import i18n
from welfare.eligibility import (Eligible, Ineligible, MemberFacts, Rules, assess, membership_months,
                                 paid_months_of_last_twelve)

D = dt.date
JOINED = D(2024, 1, 15)
BASE = Rules(min_membership_months=6, min_paid_months=6, waiting_days=90, benefit_kind="fixed", amount_minor=100000,
             max_claims_per_year=2, yearly_budget_minor=1000000)


def facts(**kw) -> MemberFacts:
    return MemberFacts(**({"joined_on": JOINED, "paid_through": "2025-12"} | kw))


def codes(result) -> list[str]:
    return [r.code for r in result.reasons]


@pytest.mark.parametrize("joined, on, months", [
    (D(2024, 1, 15), D(2024, 1, 15), 0),
    (D(2024, 1, 15), D(2024, 2, 14), 0),  # a day short of a whole month
    (D(2024, 1, 15), D(2024, 2, 15), 1),
    (D(2024, 1, 31), D(2024, 2, 29), 0),
    (D(2024, 1, 31), D(2024, 3, 31), 2),
    (D(2024, 1, 15), D(2025, 1, 15), 12),
    (D(2024, 1, 15), D(2023, 12, 1), 0),  # before joining: never negative
])
def test_membership_months(joined, on, months):
    assert membership_months(joined, on) == months


@pytest.mark.parametrize("joined, paid_through, exempt, on, paid", [
    (D(2020, 1, 1), "2025-06", False, D(2025, 6, 10), 12),  # the twelfth paid month is the current one
    (D(2020, 1, 1), "2025-05", False, D(2025, 6, 10), 11),  # one short
    (D(2020, 1, 1), "2026-03", False, D(2025, 6, 10), 12),  # paid ahead counts at most the window
    (D(2020, 1, 1), "2024-06", False, D(2025, 6, 10), 0),  # paid through before the window
    (D(2020, 1, 1), "2024-07", False, D(2025, 6, 10), 1),  # the window's first month
    (D(2025, 3, 20), "2025-06", False, D(2025, 6, 10), 4),  # joined inside the window: March to June
    (D(2020, 1, 1), None, False, D(2025, 6, 10), 0),
    (D(2020, 1, 1), None, True, D(2025, 6, 10), 12),  # exempt counts as paid
    (D(2025, 5, 2), None, True, D(2025, 6, 10), 2),  # ...from the joining month
])
def test_paid_months_of_last_twelve(joined, paid_through, exempt, on, paid):
    assert paid_months_of_last_twelve(MemberFacts(joined_on=joined, paid_through=paid_through, exempt=exempt),
                                      on) == paid


CASES = [
    # name, facts overrides, rules overrides, date, claimed, expected reason codes (empty: eligible), amount
    ("all rules met", {}, {}, D(2025, 6, 1), None, [], 100000),
    ("membership one day short", {}, {"waiting_days": 0}, D(2024, 7, 14), None, ["membership"], None),
    ("membership exactly six months", {}, {"waiting_days": 0}, D(2024, 7, 15), None, [], 100000),
    ("waiting period: the day before it ends", {}, {"min_membership_months": 0, "min_paid_months": 0, "waiting_days": 90},
     JOINED + dt.timedelta(days=89), None, ["waiting_period"], None),
    ("waiting period: the day it ends", {}, {"min_membership_months": 0, "min_paid_months": 0, "waiting_days": 90},
     JOINED + dt.timedelta(days=90), None, [], 100000),
    ("eleven months paid of twelve", {"joined_on": D(2020, 1, 1), "paid_through": "2025-05"},
     {"min_paid_months": 12}, D(2025, 6, 10), None, ["paid_months"], None),
    ("the twelfth paid month", {"joined_on": D(2020, 1, 1), "paid_through": "2025-06"},
     {"min_paid_months": 12}, D(2025, 6, 10), None, [], 100000),
    ("nothing paid", {"paid_through": None}, {}, D(2025, 6, 1), None, ["paid_months"], None),
    ("exempt member counts as paid", {"paid_through": None, "exempt": True}, {}, D(2025, 6, 1), None, [], 100000),
    ("one claim below the yearly limit", {"claims_this_year": 1}, {}, D(2025, 6, 1), None, [], 100000),
    ("at the yearly limit", {"claims_this_year": 2}, {}, D(2025, 6, 1), None, ["yearly_limit"], None),
    ("no yearly limit", {"claims_this_year": 50}, {"max_claims_per_year": None}, D(2025, 6, 1), None, [], 100000),
    ("budget: the last rupee", {"budget_used_minor": 900000}, {}, D(2025, 6, 1), None, [], 100000),
    ("budget: a paisa over", {"budget_used_minor": 900001}, {}, D(2025, 6, 1), None, ["budget"], None),
    ("no budget", {"budget_used_minor": 10**9}, {"yearly_budget_minor": None}, D(2025, 6, 1), None, [], 100000),
    ("actual cost below the cap", {}, {"benefit_kind": "actual_cost"}, D(2025, 6, 1), 35050, [], 35050),
    ("actual cost above the cap gets the cap", {}, {"benefit_kind": "actual_cost"}, D(2025, 6, 1), 250000, [],
     100000),
    ("actual cost without a cost: up to the cap", {}, {"benefit_kind": "actual_cost"}, D(2025, 6, 1), None, [],
     100000),
    ("actual cost of zero", {}, {"benefit_kind": "actual_cost"}, D(2025, 6, 1), 0, ["amount"], None),
    ("before joining", {}, {"min_membership_months": 0, "min_paid_months": 0, "waiting_days": 0},
     D(2024, 1, 14), None, ["not_a_member"], None),
    ("everything unmet at once", {"paid_through": None, "claims_this_year": 2, "budget_used_minor": 1000000}, {},
     D(2024, 2, 1), None, ["membership", "paid_months", "waiting_period", "yearly_limit", "budget"], None),
]


@pytest.mark.parametrize("name, fact_kw, rule_kw, on, claimed, expected, amount", CASES, ids=[c[0] for c in CASES])
def test_rules(name, fact_kw, rule_kw, on, claimed, expected, amount):
    rules = Rules(**(BASE.__dict__ | rule_kw))
    result = assess(facts(**fact_kw), rules, on, claimed_minor=claimed)
    assert codes(result) == expected
    if expected:
        assert isinstance(result, Ineligible) and result.eligible is False and result.amount_minor is None
        assert all(str(r) for r in result.reasons)
    else:
        assert isinstance(result, Eligible) and result.eligible is True
        assert result.amount_minor == amount and result.currency == "INR" and result.reasons == ()


def test_reasons_are_plain_language_and_name_the_numbers():
    result = assess(facts(paid_through="2024-03"), BASE, D(2024, 4, 1))
    assert [str(r) for r in result.reasons] == [
        "You need 6 months of membership; you have 2.",
        "You need 6 months of dues paid in the last twelve; you have 3.",
        "New members wait 90 days after joining; you can claim from 2024-04-14.",
    ]


def test_reasons_are_rendered_in_the_current_language():
    result = assess(facts(paid_through=None), BASE, D(2025, 6, 1))
    reason = result.reasons[0]
    token = i18n.set_language("en")
    try:
        english = str(reason)
    finally:
        i18n._current.reset(token)
    assert english == "You need 6 months of dues paid in the last twelve; you have 0."
    # The reason is lazy: the same object renders again in whatever language is current then.
    token = i18n.set_language("kn")
    try:
        assert str(reason)  # Kannada once the lead translates it; never empty
    finally:
        i18n._current.reset(token)
