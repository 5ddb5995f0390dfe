"""Eligibility: ONE pure function, `assess(facts, rules, on_date)`, decides whether a
member may claim from a scheme on a date, and for how much, or lists every rule
that is not met with a plain-language reason.

It reads nothing and writes nothing, so the member's page, the entitlements API,
claim filing and the table-driven tests all get the same answer. Reasons are
lazy translations: they are rendered in whatever language is current when they
are turned into text (the member's, or the API caller's).

How the facts are counted (services.member_facts loads them):
- months of membership: whole calendar months from the joining date to the date
  (joined 15 March: one month on 15 April, not on 14 April);
- months paid of the last twelve: of the twelve calendar months ending with the
  date's month, those on or after the joining month and on or before the month
  the member's dues are paid through (dues standing). An exempt member (hardship
  waiver) counts every month since joining as paid;
- waiting period: the member may claim from the day `waiting_days` after joining
  (joined 1 January, 90 days: from 1 April);
- claims this year: the member's claims for the scheme with an event in the same
  calendar year that are not withdrawn or rejected (the one being judged excluded);
- budget: the scheme's payouts this calendar year, not reversed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from union.i18n import lazy_gettext


@dataclass(frozen=True)
class Rules:
    min_membership_months: int = 0
    min_paid_months: int = 0
    waiting_days: int = 0
    benefit_kind: str = "fixed"  # or "actual_cost" (up to amount_minor)
    amount_minor: int = 0
    currency: str = "INR"
    max_claims_per_year: int | None = None
    yearly_budget_minor: int | None = None


@dataclass(frozen=True)
class MemberFacts:
    joined_on: dt.date
    paid_through: str | None  # "YYYY-MM" from dues standing
    exempt: bool = False
    claims_this_year: int = 0
    budget_used_minor: int = 0  # the scheme's payouts this year


@dataclass(frozen=True)
class Reason:
    code: str
    message: object  # a lazy translation: str() renders it in the current language

    def __str__(self) -> str:
        return str(self.message)


@dataclass(frozen=True)
class Eligible:
    amount_minor: int
    currency: str
    eligible: bool = field(default=True, init=False)
    reasons: tuple = field(default=(), init=False)


@dataclass(frozen=True)
class Ineligible:
    reasons: tuple[Reason, ...]
    eligible: bool = field(default=False, init=False)
    amount_minor: None = field(default=None, init=False)


def month_index(day: dt.date) -> int:
    return day.year * 12 + day.month - 1


def membership_months(joined_on: dt.date, on_date: dt.date) -> int:
    months = (on_date.year - joined_on.year) * 12 + on_date.month - joined_on.month
    if on_date.day < joined_on.day:
        months -= 1
    return max(months, 0)


def paid_months_of_last_twelve(facts: MemberFacts, on_date: dt.date) -> int:
    now = month_index(on_date)
    first = max(now - 11, month_index(facts.joined_on))
    if facts.exempt:
        last = now
    elif facts.paid_through is None:
        return 0
    else:
        year, month = facts.paid_through.split("-")
        last = min(int(year) * 12 + int(month) - 1, now)
    return max(last - first + 1, 0)


def assess(facts: MemberFacts, rules: Rules, on_date: dt.date, *, claimed_minor: int | None = None):
    """Eligible(amount) or Ineligible(reasons): every unmet rule, in a fixed order.

    `claimed_minor` is the actual cost for an actual-cost scheme; without it the amount is the cap
    ("up to"). A cost above the cap is not a reason to refuse: the claim gets the cap."""
    reasons: list[Reason] = []
    if on_date < facts.joined_on:
        reasons.append(Reason("not_a_member", lazy_gettext("You were not yet a member on that date.")))
    months = membership_months(facts.joined_on, on_date)
    if months < rules.min_membership_months:
        reasons.append(Reason("membership", lazy_gettext(
            "You need %(needed)d months of membership; you have %(have)d.",
            needed=rules.min_membership_months, have=months)))
    paid = paid_months_of_last_twelve(facts, on_date)
    if paid < rules.min_paid_months:
        reasons.append(Reason("paid_months", lazy_gettext(
            "You need %(needed)d months of dues paid in the last twelve; you have %(have)d.",
            needed=rules.min_paid_months, have=paid)))
    claim_from = facts.joined_on + dt.timedelta(days=rules.waiting_days)
    if facts.joined_on <= on_date < claim_from:
        reasons.append(Reason("waiting_period", lazy_gettext(
            "New members wait %(days)d days after joining; you can claim from %(date)s.",
            days=rules.waiting_days, date=claim_from.isoformat())))
    if rules.max_claims_per_year is not None and facts.claims_this_year >= rules.max_claims_per_year:
        reasons.append(Reason("yearly_limit", lazy_gettext(
            "You have already made %(count)d claims of this kind this year (the limit).",
            count=facts.claims_this_year)))

    amount = rules.amount_minor
    if rules.benefit_kind == "actual_cost" and claimed_minor is not None:
        amount = min(max(claimed_minor, 0), rules.amount_minor)
    if amount <= 0:
        reasons.append(Reason("amount", lazy_gettext("The cost must be more than zero.")))
    if rules.yearly_budget_minor is not None and facts.budget_used_minor + amount > rules.yearly_budget_minor:
        reasons.append(Reason("budget", lazy_gettext(
            "This scheme's budget for the year is used up; ask the welfare committee.")))
    if reasons:
        return Ineligible(tuple(reasons))
    return Eligible(amount, rules.currency)
