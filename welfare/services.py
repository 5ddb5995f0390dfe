"""Welfare services: schemes and rule versions, what a member can claim now (and
why not), claims and their decisions, payouts from the welfare fund, and the
committee's reports.

Services take their collaborators keyword-only, validate before they write,
flush and never commit: the route or job owns the transaction. Every step of a
claim adds a timeline event, an audit event (ids only) and a due-work row that
tells the member by SMS in their language (welfare.tasks).

Concurrency: a workflow step locks the claim row first (SELECT ... FOR UPDATE
on PostgreSQL; SQLite write transactions are BEGIN IMMEDIATE and one at a
time), so two officers approving at once count each other. A payout locks the
ledger's chain head FIRST (dues.ledger.lock_head) and only then reads the
welfare fund's balance and the scheme's budget used, so of two payouts that
together exceed the balance exactly one is posted, on both databases.

Choices (README "Welfare"):
- a second claim for the same scheme and event date is refused while the first
  is not withdrawn; a rejected claim keeps its event: the way forward is its
  one appeal to the office bearers;
- claim years and budget years are calendar years;
- an actual-cost claim above the cap is granted the cap.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import statistics
import uuid
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import extract, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dues import ledger
from dues import services as dues
from dues.errors import UnknownAccount
from dues.models import EntryKind
from dues.money import Money, format_money
from union import audit, jobs, members
from union.errors import NotFound
from union.i18n import _, lazy_gettext
from union.models import Branch, Member, Role, User, utcnow
from union.policy import Principal, can_decide_claim, can_see_claim, can_see_member
from welfare.eligibility import Eligible, MemberFacts, Rules, assess
from welfare.errors import (DuplicateClaim, InsufficientFunds, InvalidClaim, NotAllowed, NotEligible, UnknownScheme,
                            WrongStatus)
from welfare.models import (ACTIVE_STATUSES, AppealStatus, BenefitKind, ClaimStatus, Evidence, PayoutMethod,
                            WelfareApproval, WelfareClaim, WelfareClaimEvent, WelfareDocument, WelfarePayout,
                            WelfareRuleVersion, WelfareScheme)

FUND = "welfare_fund"
PAYOUT_SOURCES = {PayoutMethod.cash: "cash:office", PayoutMethod.bank: "bank"}
ALLOCATION_SOURCES = ("bank", "cash:office", "general_fund")
MAX_DETAILS = 2000
MAX_REASON = 500
MAX_CLAIM_MINOR = 10_000_000  # Rs 1,00,000: far above any scheme's cap; more is a typing slip
MAX_DOCUMENT_BYTES = 2 * 1024 * 1024
DOCUMENT_TYPES = {b"%PDF-": "application/pdf", b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}

# Names of the standard schemes in the reader's language (new schemes show the name they were given).
STANDARD_NAMES = {
    "sickness": lazy_gettext("Sickness support"),
    "accident": lazy_gettext("Accident support"),
    "death": lazy_gettext("Funeral support (paid to the nominee)"),
    "old_age": lazy_gettext("Old-age support"),
    "unemployment": lazy_gettext("Unemployment support"),
    "education": lazy_gettext("Children's education"),
    "clinic_transport": lazy_gettext("Transport to a clinic"),
}
STATUS_LABELS = {
    ClaimStatus.submitted: lazy_gettext("Submitted"),
    ClaimStatus.under_review: lazy_gettext("Under review"),
    ClaimStatus.approved: lazy_gettext("Approved"),
    ClaimStatus.rejected: lazy_gettext("Rejected"),
    ClaimStatus.paid: lazy_gettext("Paid"),
    ClaimStatus.withdrawn: lazy_gettext("Withdrawn"),
}
EVIDENCE_LABELS = {
    Evidence.document: lazy_gettext("A document (bill, certificate, letter)"),
    Evidence.peer_attestation: lazy_gettext("Another member vouches for it"),
    Evidence.collector_attestation: lazy_gettext("The collector vouches for it"),
}


def scheme_name(scheme: WelfareScheme) -> str:
    return str(STANDARD_NAMES[scheme.code]) if scheme.code in STANDARD_NAMES else scheme.name


def status_label(status: str) -> str:
    return str(STATUS_LABELS.get(status, status))


def money_text(amount_minor: int, currency: str = "INR") -> str:
    return format_money(Money(int(amount_minor), currency))


# ---------------------------------------------------------------- schemes and rules


async def list_schemes(session: AsyncSession, *, active_only: bool = True) -> list[WelfareScheme]:
    query = select(WelfareScheme).order_by(WelfareScheme.id)
    if active_only:
        query = query.where(WelfareScheme.active.is_(True))
    return list((await session.execute(query)).scalars())


async def scheme_by_code(session: AsyncSession, code: object) -> WelfareScheme:
    scheme = None
    if isinstance(code, str) and code.strip():
        scheme = (await session.execute(
            select(WelfareScheme).where(WelfareScheme.code == code.strip().lower()))).scalar_one_or_none()
    if scheme is None or not scheme.active:
        raise UnknownScheme(_("There is no such welfare scheme."), field="scheme")
    return scheme


async def rules_in_force(session: AsyncSession, scheme_id: int, on_date: dt.date) -> WelfareRuleVersion:
    rv = (await session.execute(
        select(WelfareRuleVersion).where(WelfareRuleVersion.scheme_id == scheme_id,
                                         WelfareRuleVersion.effective_from <= on_date)
        .order_by(WelfareRuleVersion.effective_from.desc()).limit(1))).scalar_one_or_none()
    if rv is None:
        raise UnknownScheme(_("This scheme has no rules in force on that date."), field="event_date")
    return rv


def as_rules(rv: WelfareRuleVersion) -> Rules:
    return Rules(min_membership_months=rv.min_membership_months, min_paid_months=rv.min_paid_months,
                 waiting_days=rv.waiting_days, benefit_kind=rv.benefit_kind, amount_minor=int(rv.amount_minor),
                 currency=rv.currency, max_claims_per_year=rv.max_claims_per_year,
                 yearly_budget_minor=None if rv.yearly_budget_minor is None else int(rv.yearly_budget_minor))


@dataclass
class RuleInput:
    effective_from: dt.date
    min_membership_months: int = 0
    min_paid_months: int = 0
    waiting_days: int = 0
    benefit_kind: str = BenefitKind.fixed
    amount_minor: int = 0
    max_claims_per_year: int | None = None
    yearly_budget_minor: int | None = None
    evidence: tuple[str, ...] = (Evidence.document,)
    approvals_required: int = 1
    approval_threshold_minor: int = 300000
    approvals_above_threshold: int = 2


def _check_rules(data: RuleInput) -> None:
    def whole(value, low, high, field):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidClaim(_("%(field)s must be a whole number from %(low)d to %(high)d.",
                                 field=field, low=low, high=high), field=field)

    if not isinstance(data.effective_from, dt.date):
        raise InvalidClaim(_("Give the date the rules start, as YYYY-MM-DD."), field="effective_from")
    whole(data.min_membership_months, 0, 600, "min_membership_months")
    whole(data.min_paid_months, 0, 12, "min_paid_months")
    whole(data.waiting_days, 0, 3650, "waiting_days")
    whole(data.amount_minor, 1, MAX_CLAIM_MINOR, "amount_minor")
    if data.max_claims_per_year is not None:
        whole(data.max_claims_per_year, 1, 366, "max_claims_per_year")
    if data.yearly_budget_minor is not None:
        whole(data.yearly_budget_minor, 1, 10**12, "yearly_budget_minor")
    whole(data.approvals_required, 1, 5, "approvals_required")
    whole(data.approvals_above_threshold, 1, 5, "approvals_above_threshold")
    whole(data.approval_threshold_minor, 0, 10**12, "approval_threshold_minor")
    if data.benefit_kind not in set(BenefitKind):
        raise InvalidClaim(_("Choose a fixed sum or the actual cost up to a cap."), field="benefit_kind")
    if not data.evidence or any(e not in set(Evidence) for e in data.evidence):
        raise InvalidClaim(_("Choose at least one kind of evidence."), field="evidence")


async def add_rule_version(session: AsyncSession, *, scheme: WelfareScheme, data: RuleInput,
                           actor: Principal) -> WelfareRuleVersion:
    """A new version of a scheme's rules from `effective_from` on (the earlier versions stay for older events)."""
    if not actor.has(Role.office_bearer):
        raise NotAllowed(_("Only office bearers change welfare rules."))
    _check_rules(data)
    clash = (await session.execute(select(WelfareRuleVersion.id).where(
        WelfareRuleVersion.scheme_id == scheme.id, WelfareRuleVersion.effective_from == data.effective_from))).first()
    if clash:
        raise InvalidClaim(_("This scheme already has rules starting on that date."), field="effective_from")
    rv = WelfareRuleVersion(scheme_id=scheme.id, effective_from=data.effective_from,
                            min_membership_months=data.min_membership_months, min_paid_months=data.min_paid_months,
                            waiting_days=data.waiting_days, benefit_kind=str(data.benefit_kind),
                            amount_minor=data.amount_minor, max_claims_per_year=data.max_claims_per_year,
                            yearly_budget_minor=data.yearly_budget_minor, evidence=" ".join(sorted(set(data.evidence))),
                            approvals_required=data.approvals_required,
                            approval_threshold_minor=data.approval_threshold_minor,
                            approvals_above_threshold=data.approvals_above_threshold,
                            created_by_user_id=actor.user.id)
    session.add(rv)
    await session.flush()
    await audit.record(session, action="welfare.rules_changed", actor=actor.user, target_type="welfare_scheme",
                       target_id=scheme.code, detail={"rule_version": rv.id,
                                                      "effective_from": data.effective_from.isoformat()})
    return rv


async def create_scheme(session: AsyncSession, *, code: str, name: str, pays_nominee: bool, rules: RuleInput,
                        actor: Principal) -> WelfareScheme:
    """A new scheme an office bearer defines, with its first rules."""
    if not actor.has(Role.office_bearer):
        raise NotAllowed(_("Only office bearers define welfare schemes."))
    code = (code or "").strip().lower()
    if not (2 <= len(code) <= 32 and code.replace("_", "").isalnum() and code.isascii()):
        raise InvalidClaim(_("A scheme code is 2 to 32 letters, digits or _."), field="code")
    name = " ".join((name or "").split())
    if not 1 <= len(name) <= 120:
        raise InvalidClaim(_("Give the scheme a name of 1 to 120 characters."), field="name")
    _check_rules(rules)
    if (await session.execute(select(WelfareScheme.id).where(WelfareScheme.code == code))).first():
        raise InvalidClaim(_("A scheme with this code already exists."), field="code")
    scheme = WelfareScheme(code=code, name=name, pays_nominee=bool(pays_nominee), created_by_user_id=actor.user.id)
    session.add(scheme)
    await session.flush()
    await add_rule_version(session, scheme=scheme, data=rules, actor=actor)
    return scheme


# ---------------------------------------------------------------- eligibility facts


async def budget_used(session: AsyncSession, scheme_id: int, year: int) -> int:
    total = (await session.execute(
        select(func.coalesce(func.sum(WelfarePayout.amount_minor), 0))
        .where(WelfarePayout.scheme_id == scheme_id, WelfarePayout.reversed_at.is_(None),
               extract("year", WelfarePayout.paid_on) == year))).scalar_one()
    return int(total)


async def member_facts(session: AsyncSession, *, member: Member, scheme_id: int, on_date: dt.date,
                       grace_months: int, exclude_claim_id: int | None = None, standing=None) -> MemberFacts:
    if standing is None:
        standing = await dues.standing(session, member=member, today=on_date, grace_months=grace_months)
    claims = (select(func.count()).select_from(WelfareClaim)
              .where(WelfareClaim.member_id == member.id, WelfareClaim.scheme_id == scheme_id,
                     WelfareClaim.status.in_([str(s) for s in ACTIVE_STATUSES]),
                     extract("year", WelfareClaim.event_date) == on_date.year))
    if exclude_claim_id is not None:
        claims = claims.where(WelfareClaim.id != exclude_claim_id)
    return MemberFacts(joined_on=member.joined_on, paid_through=standing.paid_through,
                       exempt=str(standing.status) == "exempt",
                       claims_this_year=int((await session.execute(claims)).scalar_one()),
                       budget_used_minor=await budget_used(session, scheme_id, on_date.year))


@dataclass
class Entitlement:
    scheme: WelfareScheme
    rule: WelfareRuleVersion
    result: object  # Eligible | Ineligible

    def as_json(self) -> dict:
        return {"scheme": self.scheme.code, "name": scheme_name(self.scheme), "eligible": self.result.eligible,
                "amount_minor": self.result.amount_minor, "reasons": [str(r) for r in self.result.reasons]}

    @property
    def up_to(self) -> bool:
        return self.rule.benefit_kind == BenefitKind.actual_cost


async def entitlements(session: AsyncSession, *, member: Member, on_date: dt.date,
                       grace_months: int) -> list[Entitlement]:
    """What the member can claim on `on_date` from every open scheme, and why not."""
    found = []
    standing = await dues.standing(session, member=member, today=on_date, grace_months=grace_months)
    for scheme in await list_schemes(session):
        try:
            rv = await rules_in_force(session, scheme.id, on_date)
        except UnknownScheme:
            continue
        facts = await member_facts(session, member=member, scheme_id=scheme.id, on_date=on_date,
                                   grace_months=grace_months, standing=standing)
        found.append(Entitlement(scheme, rv, assess(facts, as_rules(rv), on_date)))
    return found


# ---------------------------------------------------------------- claims


def _event(session: AsyncSession, claim: WelfareClaim, action: str, actor) -> WelfareClaimEvent:
    event = WelfareClaimEvent(claim_id=claim.id, actor_user_id=getattr(actor, "id", None), action=action,
                              status=claim.status)
    session.add(event)
    return event


async def _step(session: AsyncSession, claim: WelfareClaim, action: str, principal: Principal | None,
                *, notify: str | None = None, detail: dict | None = None) -> list:
    """Timeline event, audit event and (for the steps the member hears about) the SMS job."""
    actor = principal.user if principal else None
    event = _event(session, claim, action, actor)
    await session.flush()
    await audit.record(session, action=f"welfare.{action}", actor=actor, target_type="welfare_claim",
                       target_id=claim.reference, detail={"status": claim.status, **(detail or {})})
    if notify is None:
        return []
    from welfare import tasks  # noqa: F401 - registers the handler

    work = await jobs.schedule(session, kind="welfare.notify", key=f"welfare-notify:{claim.id}:{event.id}",
                               payload={"claim": claim.id, "event": notify})
    return [work]


def _clean_text(value: object, limit: int, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidClaim(_("%(field)s must be text.", field=field), field=field)
    value = value.strip()
    if len(value) > limit:
        raise InvalidClaim(_("%(field)s is too long (at most %(count)d characters).", field=field, count=limit),
                           field=field)
    return value or None


def parse_date(value: object, field: str) -> dt.date:
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise InvalidClaim(_("Give the date as YYYY-MM-DD."), field=field)


def _member_visible_or_404(principal: Principal, member: Member) -> None:
    if not can_see_member(principal, member):
        raise NotFound(_("No member with that number."), field="member_no")


@dataclass
class NewClaim:
    member_no: str
    scheme: str
    event_date: object
    evidence: str
    claimed_minor: int | None = None
    attester_member_no: str | None = None
    details: str | None = None


async def file_claim(*, session: AsyncSession, vault, principal: Principal, data: NewClaim, today: dt.date,
                     grace_months: int) -> tuple[WelfareClaim, list]:
    """File a claim for a member (the member themself, or staff on the member's behalf).

    Refused with the reasons when the member is not eligible on the event date; a second claim for
    the same scheme and event date is a DuplicateClaim. Returns the claim and the due work to nudge."""
    if not isinstance(data.member_no, str) or not data.member_no.strip():
        raise InvalidClaim(_("A member number is required."), field="member_no")
    member = await members.get_member(session, member_no=data.member_no, principal=principal)
    own = principal.member_id == member.id
    if not own and not any(principal.has(r, member.branch_id)
                           for r in (Role.collector, Role.welfare_officer, Role.office_bearer)):
        raise NotFound(_("No member with that number."), field="member_no")
    scheme = await scheme_by_code(session, data.scheme)
    event_date = parse_date(data.event_date, "event_date")
    if event_date > today:
        raise InvalidClaim(_("The date of the event cannot be in the future."), field="event_date")
    if event_date < today - dt.timedelta(days=366):
        raise InvalidClaim(_("Claims must be made within a year of the event."), field="event_date")
    rv = await rules_in_force(session, scheme.id, event_date)
    accepted = rv.evidence.split()
    if data.evidence not in accepted:
        raise InvalidClaim(_("This scheme does not accept that kind of evidence."), field="evidence")
    attester_member_id = attester_user_id = None
    if data.evidence == Evidence.peer_attestation:
        number = (data.attester_member_no or "").strip().upper()
        attester = (await session.execute(select(Member).where(Member.member_no == number))).scalar_one_or_none()
        if attester is None or attester.id == member.id:
            raise InvalidClaim(_("Give the member number of another member who vouches for it."),
                               field="attester_member_no")
        attester_member_id = attester.id
    elif data.evidence == Evidence.collector_attestation:
        if not principal.has(Role.collector, member.branch_id):
            raise InvalidClaim(_("A collector of the member's branch must file a claim they vouch for."),
                               field="evidence")
        attester_user_id = principal.user.id
    claimed = None
    if rv.benefit_kind == BenefitKind.actual_cost:
        claimed = data.claimed_minor
        if isinstance(claimed, bool) or not isinstance(claimed, int) or not 0 < claimed <= MAX_CLAIM_MINOR:
            raise InvalidClaim(_("Give the actual cost, more than zero."), field="claimed_minor")
    details = _clean_text(data.details, MAX_DETAILS, "details")

    # Before eligibility: "already claimed" is the precise answer (the yearly limit would count it too).
    event_key = f"{member.id}:{scheme.id}:{event_date.isoformat()}"
    if (await session.execute(select(WelfareClaim.id).where(WelfareClaim.event_key == event_key))).first():
        raise DuplicateClaim(_("There is already a claim for this event."), field="event_date")
    facts = await member_facts(session, member=member, scheme_id=scheme.id, on_date=event_date,
                               grace_months=grace_months)
    result = assess(facts, as_rules(rv), event_date, claimed_minor=claimed)
    if not isinstance(result, Eligible):
        raise NotEligible(_("Not eligible: %(reasons)s", reasons=" ".join(str(r) for r in result.reasons)),
                          reasons=result.reasons, field="scheme")
    needed = (rv.approvals_above_threshold if result.amount_minor > rv.approval_threshold_minor
              else rv.approvals_required)
    claim = WelfareClaim(reference="W-" + secrets.token_hex(4).upper(), member_id=member.id,
                         branch_id=member.branch_id, scheme_id=scheme.id, rule_version_id=rv.id,
                         status=ClaimStatus.submitted, event_date=event_date, event_key=event_key,
                         amount_minor=result.amount_minor, claimed_minor=claimed, currency=rv.currency,
                         approvals_needed=needed, evidence_kind=data.evidence, attester_member_id=attester_member_id,
                         attester_user_id=attester_user_id, details_enc=vault.encrypt(details),
                         filed_by_user_id=principal.user.id)
    session.add(claim)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        # The same event was claimed by a concurrent request that committed first.
        raise DuplicateClaim(_("There is already a claim for this event."), field="event_date") from None
    works = await _step(session, claim, "submitted", principal, notify="submitted",
                        detail={"scheme": scheme.code, "amount_minor": claim.amount_minor,
                                "on_behalf": not own})
    return claim, works


async def _locked_claim(session: AsyncSession, claim_id: int) -> WelfareClaim:
    claim = (await session.execute(
        select(WelfareClaim).where(WelfareClaim.id == claim_id).with_for_update()
        .execution_options(populate_existing=True))).scalar_one_or_none()
    if claim is None:
        raise NotFound(_("No such claim."), field="claim")
    return claim


def _not_party(claim: WelfareClaim, principal: Principal, member_user_id: int | None) -> None:
    if principal.member_id == claim.member_id or principal.user.id == member_user_id:
        raise NotAllowed(_("You cannot decide your own claim."))
    if claim.filed_by_user_id == principal.user.id:
        raise NotAllowed(_("The person who filed a claim cannot decide it."))


async def _member_user_id(session: AsyncSession, member_id: int) -> int | None:
    return (await session.execute(select(User.id).where(User.member_id == member_id))).scalar_one_or_none()


async def visible_claim(session: AsyncSession, *, claim_id: int, principal: Principal) -> WelfareClaim:
    """A claim the principal may see at all: the member's own, or staff who may see its details.
    Otherwise it does not exist (404)."""
    claim = await session.get(WelfareClaim, claim_id)
    if claim is None or not (principal.member_id == claim.member_id or can_see_claim(principal, claim.branch_id)):
        raise NotFound(_("No such claim."), field="claim")
    return claim


async def read_details(session: AsyncSession, *, claim: WelfareClaim, vault, principal: Principal) -> str | None:
    """Decrypt a claim's details for a welfare officer of the branch or an office bearer; audited."""
    if not can_see_claim(principal, claim.branch_id):
        raise NotFound(_("No such claim."), field="claim")
    await audit.record(session, action="welfare.claim_read", actor=principal.user, target_type="welfare_claim",
                       target_id=claim.reference)
    return vault.decrypt(claim.details_enc)


async def _claim_awaiting_decision(session: AsyncSession, claim_id: int, principal: Principal) -> WelfareClaim:
    """The claim, locked, if this principal may decide it now: a welfare officer of the member's
    branch who is neither the claimant nor the filer, while the claim waits for a decision."""
    claim = await _locked_claim(session, claim_id)
    if not can_see_claim(principal, claim.branch_id):
        raise NotFound(_("No such claim."), field="claim")
    if not can_decide_claim(principal, claim.branch_id):
        raise NotAllowed(_("Only welfare officers of the member's branch decide claims."))
    _not_party(claim, principal, await _member_user_id(session, claim.member_id))
    if claim.status not in (ClaimStatus.submitted, ClaimStatus.under_review):
        raise WrongStatus(_("This claim is not waiting for a decision."))
    return claim


async def approve(*, session: AsyncSession, claim_id: int, principal: Principal) -> tuple[WelfareClaim, list]:
    """One welfare officer's approval; the claim is approved when enough distinct officers agree."""
    claim = await _claim_awaiting_decision(session, claim_id, principal)
    if (await session.execute(select(WelfareApproval.id).where(
            WelfareApproval.claim_id == claim.id, WelfareApproval.user_id == principal.user.id))).first():
        raise NotAllowed(_("You have already approved this claim; another officer must approve it."))
    session.add(WelfareApproval(claim_id=claim.id, user_id=principal.user.id))
    await session.flush()
    count = (await session.execute(select(func.count()).select_from(WelfareApproval)
                                   .where(WelfareApproval.claim_id == claim.id))).scalar_one()
    if count >= claim.approvals_needed:
        claim.status, claim.decided_at = ClaimStatus.approved, utcnow()
        notify = "approved"
    else:
        notify = "under_review" if claim.status == ClaimStatus.submitted else None
        claim.status = ClaimStatus.under_review
    session.add(claim)
    works = await _step(session, claim, "approved" if claim.status == ClaimStatus.approved else "approval",
                        principal, notify=notify, detail={"approvals": count, "needed": claim.approvals_needed})
    return claim, works


async def reject(*, session: AsyncSession, vault, claim_id: int, principal: Principal,
                 reason: object) -> tuple[WelfareClaim, list]:
    reason = _clean_text(reason, MAX_REASON, "reason")
    if not reason:
        raise InvalidClaim(_("A rejection needs a reason."), field="reason")
    claim = await _claim_awaiting_decision(session, claim_id, principal)
    claim.status, claim.decided_at = ClaimStatus.rejected, utcnow()
    claim.rejection_reason_enc = vault.encrypt(reason)
    session.add(claim)
    return claim, await _step(session, claim, "rejected", principal, notify="rejected")


async def appeal(*, session: AsyncSession, vault, claim_id: int, principal: Principal,
                 reason: object = None) -> tuple[WelfareClaim, list]:
    """The one appeal of a rejected claim, by the member or staff on the member's behalf."""
    reason = _clean_text(reason, MAX_REASON, "reason")
    claim = await _locked_claim(session, claim_id)
    member = await session.get(Member, claim.member_id)
    if not can_see_member(principal, member):
        raise NotFound(_("No such claim."), field="claim")
    if claim.status != ClaimStatus.rejected:
        raise WrongStatus(_("Only a rejected claim can be appealed."))
    if claim.appeal_status is not None:
        raise WrongStatus(_("This claim was already appealed; there is one appeal."))
    claim.appeal_status = AppealStatus.pending
    claim.appeal_reason_enc = vault.encrypt(reason)
    session.add(claim)
    return claim, await _step(session, claim, "appealed", principal, notify="appealed")


async def decide_appeal(*, session: AsyncSession, claim_id: int, principal: Principal,
                        overturn: bool) -> tuple[WelfareClaim, list]:
    """The office bearers' decision on an appeal: overturned (approved) or upheld (stays rejected)."""
    claim = await _locked_claim(session, claim_id)
    if not can_see_claim(principal, claim.branch_id):
        raise NotFound(_("No such claim."), field="claim")
    if not principal.has(Role.office_bearer, claim.branch_id):
        raise NotAllowed(_("Appeals are decided by the office bearers."))
    _not_party(claim, principal, await _member_user_id(session, claim.member_id))
    if claim.status != ClaimStatus.rejected or claim.appeal_status != AppealStatus.pending:
        raise WrongStatus(_("There is no appeal waiting on this claim."))
    claim.appeal_decided_by_user_id = principal.user.id
    if overturn:
        claim.appeal_status, claim.status, claim.decided_at = AppealStatus.overturned, ClaimStatus.approved, utcnow()
        notify = "approved"
    else:
        claim.appeal_status = AppealStatus.upheld
        notify = "appeal_upheld"
    session.add(claim)
    return claim, await _step(session, claim, f"appeal_{claim.appeal_status}", principal, notify=notify)


async def withdraw(*, session: AsyncSession, claim_id: int, principal: Principal) -> tuple[WelfareClaim, list]:
    """The member (or staff for them) withdraws a claim not yet paid; its event may be claimed again."""
    claim = await _locked_claim(session, claim_id)
    member = await session.get(Member, claim.member_id)
    if not (principal.member_id == claim.member_id or can_see_claim(principal, claim.branch_id)
            or principal.has(Role.collector, claim.branch_id)):
        raise NotFound(_("No such claim."), field="claim")
    _member_visible_or_404(principal, member)
    if claim.status not in (ClaimStatus.submitted, ClaimStatus.under_review, ClaimStatus.approved):
        raise WrongStatus(_("Only a claim that is not yet paid or decided against can be withdrawn."))
    claim.status, claim.withdrawn_at, claim.event_key = ClaimStatus.withdrawn, utcnow(), None
    session.add(claim)
    return claim, await _step(session, claim, "withdrawn", principal, notify="withdrawn")


# ---------------------------------------------------------------- the welfare fund and payouts


async def fund_balance(session: AsyncSession, currency: str = "INR") -> int:
    """The welfare fund's credit balance: what it holds (equity accounts have credit balances)."""
    await ledger.ensure_accounts(session, currency)
    return -(await ledger.balances(session, accounts=[FUND]))[FUND].amount_minor


async def fund_balance_read(session: AsyncSession) -> int:
    """As fund_balance, for read-only sessions (the chart may not exist yet: then 0)."""
    try:
        return -(await ledger.balances(session, accounts=[FUND]))[FUND].amount_minor
    except UnknownAccount:  # the chart is created with the first posting
        return 0


async def allocate_to_fund(*, session: AsyncSession, principal: Principal, amount: Money, source: str,
                           today: dt.date, note: str = "", key: str | None = None):
    """Set money aside for welfare: Dr <source> / Cr welfare_fund (source bank or office cash for
    contributions received for welfare, general_fund for a transfer between funds)."""
    if not (principal.has(Role.office_bearer) or principal.has(Role.treasurer)):
        raise NotAllowed(_("Only office bearers and treasurers allocate money to the welfare fund."))
    if not isinstance(amount, Money) or not 0 < amount.amount_minor <= 10**12:
        raise InvalidClaim(_("The amount must be more than zero."), field="amount")
    if source not in ALLOCATION_SOURCES:
        raise InvalidClaim(_("Choose where the money comes from."), field="source")
    note = _clean_text(note, 200, "note") or "Members' contributions allocated to welfare"
    await ledger.ensure_accounts(session, amount.currency)
    entry = await ledger.post_entry(session, key=key or f"welfare-allocation:{uuid.uuid4()}", kind=EntryKind.transfer,
                                    lines=[(source, amount), (FUND, -amount)], description=note,
                                    effective_date=today, actor=principal.user)
    await audit.record(session, action="welfare.fund_allocated", actor=principal.user, target_type="ledger",
                       target_id=entry.id, detail={"amount_minor": amount.amount_minor, "source": source})
    return entry


async def pay(*, session: AsyncSession, claim_id: int, principal: Principal, method: object, reference: object,
              today: dt.date) -> tuple[WelfarePayout, list]:
    """Pay an approved claim from the welfare fund: Dr welfare_fund / Cr cash:office (cash) or bank
    (bank transfer, with its reference). Never overdraws the fund or the scheme's yearly budget."""
    if method not in {m.value for m in PayoutMethod}:
        raise InvalidClaim(_("Choose cash or bank transfer."), field="method")
    reference = _clean_text(reference, 80, "reference") or ""
    if method == PayoutMethod.bank and not reference:
        raise InvalidClaim(_("A bank transfer needs its reference."), field="reference")
    await ledger.ensure_accounts(session)
    # The chain head first: every posting waits for it, so the balance read below stays true until we post.
    await ledger.lock_head(session)
    claim = await _locked_claim(session, claim_id)
    if not can_see_claim(principal, claim.branch_id):
        raise NotFound(_("No such claim."), field="claim")
    _not_party(claim, principal, await _member_user_id(session, claim.member_id))
    if claim.status != ClaimStatus.approved:
        raise WrongStatus(_("Only an approved claim can be paid."))
    rv = await session.get(WelfareRuleVersion, claim.rule_version_id)
    amount = Money(int(claim.amount_minor), claim.currency)
    if amount.amount_minor > int(rv.amount_minor):
        raise InsufficientFunds(_("The amount is above the scheme's cap."), field="amount")
    if rv.yearly_budget_minor is not None and (
            await budget_used(session, claim.scheme_id, today.year) + amount.amount_minor > rv.yearly_budget_minor):
        raise InsufficientFunds(_("This payout would go over the scheme's budget for the year."), field="amount")
    balance = -(await ledger.balances(session, accounts=[FUND]))[FUND].amount_minor
    if balance < amount.amount_minor:
        raise InsufficientFunds(_("The welfare fund does not hold enough for this payout (it holds %(balance)s).",
                                  balance=money_text(balance, amount.currency)), field="amount")
    scheme = await session.get(WelfareScheme, claim.scheme_id)
    member = await session.get(Member, claim.member_id)
    earlier = (await session.execute(select(func.count()).select_from(WelfarePayout)
                                     .where(WelfarePayout.claim_id == claim.id))).scalar_one()
    entry = await ledger.post_entry(
        session, key=f"welfare-payout:{claim.id}:{earlier + 1}", kind="welfare_payout",
        lines=[(FUND, amount), (PAYOUT_SOURCES[PayoutMethod(method)], -amount)],
        description=f"Welfare {scheme.code} claim {claim.reference} for member {member.member_no}"
                    + (" (to the nominee)" if scheme.pays_nominee else "") + (f", ref {reference}" if reference else ""),
        effective_date=today, actor=principal.user, member_id=claim.member_id)
    payout = WelfarePayout(claim_id=claim.id, scheme_id=claim.scheme_id, amount_minor=amount.amount_minor,
                           currency=amount.currency, method=str(method), reference=reference, entry_id=entry.id,
                           paid_on=today, paid_by_user_id=principal.user.id)
    session.add(payout)
    claim.status, claim.paid_at = ClaimStatus.paid, utcnow()
    session.add(claim)
    await session.flush()
    works = await _step(session, claim, "paid", principal, notify="paid",
                        detail={"payout": payout.id, "entry_id": entry.id, "amount_minor": amount.amount_minor,
                                "method": str(method)})
    return payout, works


async def reverse_payout(*, session: AsyncSession, payout_id: int, principal: Principal, reason: object,
                         today: dt.date) -> WelfarePayout:
    """Correct a payout by a reversing entry (never by changing it); the claim goes back to approved."""
    reason = _clean_text(reason, MAX_REASON, "reason")
    if not reason:
        raise InvalidClaim(_("A correction needs a reason."), field="reason")
    if not principal.has(Role.office_bearer):
        raise NotAllowed(_("Only office bearers correct payouts."))
    await ledger.lock_head(session)
    payout = await session.get(WelfarePayout, payout_id)
    if payout is None:
        raise NotFound(_("No such payout."), field="payout")
    if payout.reversed_at is not None:
        raise WrongStatus(_("This payout was already reversed."))
    claim = await _locked_claim(session, payout.claim_id)
    reversal = await ledger.reverse_entry(session, entry_id=payout.entry_id, key=f"welfare-reversal:{payout.id}",
                                          reason=f"Correction of welfare payout {claim.reference}: {reason}",
                                          actor=principal.user, effective_date=today)
    payout.reversal_entry_id, payout.reversed_at = reversal.id, utcnow()
    claim.status, claim.paid_at = ClaimStatus.approved, None
    session.add_all([payout, claim])
    await _step(session, claim, "payout_reversed", principal, detail={"payout": payout.id, "entry_id": reversal.id})
    return payout


# ---------------------------------------------------------------- documents


def sniff_document(data: bytes) -> str:
    """The content type from the file's first bytes (never the name or the browser's word)."""
    for magic, content_type in DOCUMENT_TYPES.items():
        if data.startswith(magic):
            return content_type
    raise InvalidClaim(_("Upload a PDF, JPEG or PNG file."), field="document")


async def add_document(*, session: AsyncSession, vault, claim_id: int, principal: Principal,
                       data: bytes) -> WelfareDocument:
    claim = await session.get(WelfareClaim, claim_id)
    if claim is None or not (principal.member_id == claim.member_id or can_see_claim(principal, claim.branch_id)
                             or claim.filed_by_user_id == principal.user.id):
        raise NotFound(_("No such claim."), field="claim")
    if not data:
        raise InvalidClaim(_("Choose a file to upload."), field="document")
    if len(data) > MAX_DOCUMENT_BYTES:
        raise InvalidClaim(_("The file is too large (at most 2 MB)."), field="document")
    content_type = sniff_document(data)
    document = WelfareDocument(claim_id=claim.id, content_type=content_type, size_bytes=len(data),
                               data_enc=vault.encrypt(base64.b64encode(data).decode()),
                               uploaded_by_user_id=principal.user.id)
    session.add(document)
    await session.flush()
    await audit.record(session, action="welfare.document_added", actor=principal.user, target_type="welfare_claim",
                       target_id=claim.reference, detail={"document": document.id, "bytes": len(data)})
    return document


async def read_document(*, session: AsyncSession, vault, claim_id: int, document_id: int,
                        principal: Principal) -> tuple[WelfareDocument, bytes]:
    claim = await session.get(WelfareClaim, claim_id)
    document = await session.get(WelfareDocument, document_id)
    if claim is None or document is None or document.claim_id != claim.id or not can_see_claim(principal,
                                                                                               claim.branch_id):
        raise NotFound(_("No such document."), field="document")
    await audit.record(session, action="welfare.document_read", actor=principal.user, target_type="welfare_claim",
                       target_id=claim.reference, detail={"document": document.id})
    return document, base64.b64decode(vault.decrypt(document.data_enc))


# ---------------------------------------------------------------- lists and reports


async def claim_queue(session: AsyncSession, *, principal: Principal, status: str | None = None,
                      limit: int = 200) -> list[tuple[WelfareClaim, Member, WelfareScheme]]:
    query = (select(WelfareClaim, Member, WelfareScheme).join(Member, Member.id == WelfareClaim.member_id)
             .join(WelfareScheme, WelfareScheme.id == WelfareClaim.scheme_id)
             .order_by(WelfareClaim.created_at.desc(), WelfareClaim.id.desc()).limit(limit))
    branches = principal.branches_for({Role.welfare_officer, Role.office_bearer})
    if branches is not None:
        query = query.where(WelfareClaim.branch_id.in_(branches or {-1}))
    if status:
        query = query.where(WelfareClaim.status == status)
    return [tuple(row) for row in (await session.execute(query)).all()]


async def member_claims(session: AsyncSession, member_id: int) -> list[tuple[WelfareClaim, WelfareScheme]]:
    rows = await session.execute(
        select(WelfareClaim, WelfareScheme).join(WelfareScheme, WelfareScheme.id == WelfareClaim.scheme_id)
        .where(WelfareClaim.member_id == member_id).order_by(WelfareClaim.created_at.desc(), WelfareClaim.id.desc()))
    return [tuple(r) for r in rows.all()]


async def claim_timeline(session: AsyncSession, claim_id: int) -> list[tuple[WelfareClaimEvent, str]]:
    rows = await session.execute(
        select(WelfareClaimEvent, User.username).outerjoin(User, User.id == WelfareClaimEvent.actor_user_id)
        .where(WelfareClaimEvent.claim_id == claim_id).order_by(WelfareClaimEvent.at, WelfareClaimEvent.id))
    return [(event, name or "") for event, name in rows.all()]


async def claim_payouts(session: AsyncSession, claim_id: int) -> list[WelfarePayout]:
    return list((await session.execute(select(WelfarePayout).where(WelfarePayout.claim_id == claim_id)
                                       .order_by(WelfarePayout.id))).scalars())


async def claim_approvers(session: AsyncSession, claim_id: int) -> list[str]:
    return list((await session.execute(
        select(User.username).join(WelfareApproval, WelfareApproval.user_id == User.id)
        .where(WelfareApproval.claim_id == claim_id).order_by(WelfareApproval.id))).scalars())


async def claim_documents(session: AsyncSession, claim_id: int) -> list[WelfareDocument]:
    return list((await session.execute(
        select(WelfareDocument).where(WelfareDocument.claim_id == claim_id).order_by(WelfareDocument.id))).scalars())


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    at = max(0, min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1))))
    return ordered[at]


async def committee_report(session: AsyncSession, *, principal: Principal, year: int) -> dict:
    """Claims by scheme, status and branch; amounts paid against budget; days from filing to payout."""
    branches = principal.branches_for({Role.welfare_officer, Role.office_bearer, Role.treasurer})

    by = (select(WelfareScheme.code, WelfareClaim.status, Branch.code, func.count(), func.sum(WelfareClaim.amount_minor))
          .join(WelfareScheme, WelfareScheme.id == WelfareClaim.scheme_id)
          .join(Branch, Branch.id == WelfareClaim.branch_id)
          .where(extract("year", WelfareClaim.created_at) == year)
          .group_by(WelfareScheme.code, WelfareClaim.status, Branch.code)
          .order_by(WelfareScheme.code, WelfareClaim.status, Branch.code))
    if branches is not None:
        by = by.where(WelfareClaim.branch_id.in_(branches or {-1}))
    counts = [{"scheme": s, "status": st, "branch": b, "claims": int(n), "amount_minor": int(a or 0)}
              for s, st, b, n, a in (await session.execute(by)).all()]

    paid_query = (select(WelfarePayout.scheme_id, func.sum(WelfarePayout.amount_minor))
                  .where(WelfarePayout.reversed_at.is_(None), extract("year", WelfarePayout.paid_on) == year)
                  .group_by(WelfarePayout.scheme_id))
    if branches is not None:
        paid_query = (paid_query.join(WelfareClaim, WelfareClaim.id == WelfarePayout.claim_id)
                      .where(WelfareClaim.branch_id.in_(branches or {-1})))
    paid = {sid: int(total or 0) for sid, total in (await session.execute(paid_query)).all()}
    budgets = []
    for scheme in await list_schemes(session, active_only=False):
        try:
            rv = await rules_in_force(session, scheme.id, dt.date(year, 12, 31))
        except UnknownScheme:
            continue
        budgets.append({"scheme": scheme.code, "name": scheme_name(scheme), "paid_minor": paid.get(scheme.id, 0),
                        "budget_minor": None if rv.yearly_budget_minor is None else int(rv.yearly_budget_minor),
                        "currency": rv.currency})

    times_query = (select(WelfareClaim.created_at, WelfareClaim.paid_at)
                   .where(WelfareClaim.paid_at.is_not(None), extract("year", WelfareClaim.paid_at) == year))
    if branches is not None:
        times_query = times_query.where(WelfareClaim.branch_id.in_(branches or {-1}))
    days = [(paid_at - created).total_seconds() / 86400 for created, paid_at in (await session.execute(times_query)).all()]
    timing = None
    if days:
        timing = {"count": len(days), "median_days": round(statistics.median(days), 1),
                  "p90_days": round(_percentile(days, 90), 1), "max_days": round(max(days), 1)}
    by_status = defaultdict(int)
    for row in counts:
        by_status[row["status"]] += row["claims"]
    return {"year": year, "counts": counts, "by_status": dict(by_status), "budgets": budgets, "timing": timing}


def claim_json(claim: WelfareClaim, scheme: WelfareScheme, member: Member) -> dict:
    return {"id": claim.id, "reference": claim.reference, "member_no": member.member_no, "scheme": scheme.code,
            "status": claim.status, "event_date": claim.event_date.isoformat(), "amount_minor": claim.amount_minor,
            "currency": claim.currency, "approvals_needed": claim.approvals_needed,
            "appeal_status": claim.appeal_status}
