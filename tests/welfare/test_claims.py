"""The claim workflow: filing (by the member or staff on their behalf), distinct
officers' approvals, who may not approve, rejection with a reason and its one
appeal, withdrawal, duplicates, refusals that change nothing, and the member
told by SMS at every step without sensitive details."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from tests.welfare.conftest import TODAY, entry_count, file, fund, fund_balance, step
from union import jobs
from union.errors import NotFound
from union.models import AuditEvent, DueWork
from welfare import services as welfare
from welfare.errors import DuplicateClaim, InvalidClaim, NotAllowed, NotEligible, UnknownScheme, WrongStatus
from welfare.models import WelfareApproval, WelfareClaim, WelfareClaimEvent


async def count(services, model) -> int:
    async with services.reader() as db:
        return (await db.execute(select(func.count()).select_from(model))).scalar_one()


async def reload(services, claim_id: int) -> WelfareClaim:
    async with services.reader() as db:
        return await db.get(WelfareClaim, claim_id)


async def test_staff_file_two_officers_approve_and_the_payout_is_posted(services, world):
    await fund(services, world, 50000)
    claim = await file(services, world, who="collector", member="asha", scheme="death",
                       details="Cause of death: tuberculosis")
    assert claim.status == "submitted" and claim.amount_minor == 1000000 and claim.approvals_needed == 2
    assert claim.filed_by_user_id == world.users["collector"].id

    # A collector files but does not decide (nor see the details: to them the claim is not there).
    with pytest.raises(NotFound):
        await step(services, welfare.approve, claim_id=claim.id, principal=world.who["collector"])
    first = await step(services, welfare.approve, claim_id=claim.id, principal=world.who["officer1"])
    assert first.status == "under_review"
    # The same officer twice is still one approval.
    with pytest.raises(NotAllowed):
        await step(services, welfare.approve, claim_id=claim.id, principal=world.who["officer1"])
    assert (await reload(services, claim.id)).status == "under_review"
    second = await step(services, welfare.approve, claim_id=claim.id, principal=world.who["officer2"])
    assert second.status == "approved" and second.decided_at is not None

    before = await fund_balance(services)
    payout = await step(services, welfare.pay, claim_id=claim.id, principal=world.who["officer1"], method="bank",
                        reference="UTR-778812", today=TODAY)
    assert payout.amount_minor == 1000000 and payout.method == "bank" and payout.reference == "UTR-778812"
    assert await fund_balance(services) == before - 1000000
    assert (await reload(services, claim.id)).status == "paid"
    async with services.reader() as db:
        lines = await welfare.ledger.entry_lines(db, payout.entry_id)
        actions = list((await db.execute(select(WelfareClaimEvent.action).where(
            WelfareClaimEvent.claim_id == claim.id).order_by(WelfareClaimEvent.id))).scalars())
    assert sorted((code, m.amount_minor) for code, m in lines) == [("bank", -1000000), ("welfare_fund", 1000000)]
    assert actions == ["submitted", "approval", "approved", "paid"]

    # The member is told at every step, by SMS, in their language, with no sensitive details.
    assert await jobs.sweep(services) >= 4
    texts = [m["body"] for m in services.sms.sent if m["to"] == "+919876500001"]
    assert any("we received your claim " + claim.reference in t for t in texts)
    assert any("under review" in t or "being reviewed" in t for t in texts)
    assert any("approved for ₹10,000.00" in t for t in texts)
    assert any("was paid: ₹10,000.00" in t for t in texts)
    assert not any("tuberculosis" in t or "death" in t.lower() for t in texts)


async def test_claimant_and_filer_cannot_approve(services, world):
    # The officer who filed cannot approve what they filed.
    claim = await file(services, world, who="officer1", member="bhavya", scheme="unemployment",
                       evidence="peer_attestation", attester=world.members["asha"].member_no)
    with pytest.raises(NotAllowed, match="filed"):
        await step(services, welfare.approve, claim_id=claim.id, principal=world.who["officer1"])
    with pytest.raises(NotAllowed, match="filed"):
        await step(services, welfare.reject, vault=services.vault, claim_id=claim.id,
                   principal=world.who["officer1"], reason="no")
    # A member who is also a welfare officer cannot approve their own claim.
    from union import accounts

    async with services.sessions() as db:
        from union.models import RoleGrant

        db.add(RoleGrant(user_id=world.users["asha"].id, role="welfare_officer", branch_id=world.members["asha"].branch_id))
        await db.commit()
        asha = await accounts.principal_for(db, world.users["asha"], "session")
    own = await file(services, world, who="officer2", member="asha", scheme="unemployment",
                     evidence="peer_attestation", attester=world.members["bhavya"].member_no)
    with pytest.raises(NotAllowed, match="own claim"):
        await step(services, welfare.approve, claim_id=own.id, principal=asha)
    assert await count(services, WelfareApproval) == 0
    # Another officer can: 1,500 rupees is below the threshold, one approval decides.
    done = await step(services, welfare.approve, claim_id=own.id, principal=world.who["officer1"])
    assert done.status == "approved" and done.approvals_needed == 1


async def test_officer_of_another_branch_neither_sees_nor_decides(services, world):
    claim = await file(services, world, who="collector", member="asha", scheme="sickness", claimed_minor=120000,
                       details="Diagnosis: dengue")
    with pytest.raises(NotFound):
        await step(services, welfare.approve, claim_id=claim.id, principal=world.who["officer-mys"])
    async with services.sessions() as db:
        with pytest.raises(NotFound):
            await welfare.visible_claim(db, claim_id=claim.id, principal=world.who["officer-mys"])
        # The branch's officer and an office bearer see the details; each view is audited.
        for who in ("officer1", "bearer"):
            c = await welfare.visible_claim(db, claim_id=claim.id, principal=world.who[who])
            assert await welfare.read_details(db, claim=c, vault=services.vault,
                                              principal=world.who[who]) == "Diagnosis: dengue"
        await db.commit()
        reads = list((await db.execute(select(AuditEvent.actor).where(
            AuditEvent.action == "welfare.claim_read", AuditEvent.target_id == claim.reference))).scalars())
    assert sorted(reads) == ["bearer", "officer1"]
    # Encrypted at rest: the raw row holds no plaintext.
    async with services.engine.connect() as conn:
        raw = (await conn.execute(text("SELECT details_enc FROM welfare_claim WHERE id = :id"), {"id": claim.id})).scalar_one()
    assert "dengue" not in raw and raw.startswith("gAAAA")


async def test_refusals_change_nothing(services, world):
    claims, events, entries, audits = (await count(services, WelfareClaim), await count(services, WelfareClaimEvent),
                                       await entry_count(services), await count(services, AuditEvent))
    with pytest.raises(NotEligible) as refused:
        await file(services, world, who="collector", member="new", scheme="death")
    codes = [r.code for r in refused.value.reasons]
    assert codes == ["membership", "paid_months", "waiting_period"]
    assert "You need 6 months of membership; you have 0." in refused.value.message
    with pytest.raises(UnknownScheme):
        await file(services, world, who="collector", member="asha", scheme="lottery")
    with pytest.raises(InvalidClaim):
        await file(services, world, who="collector", member="asha", scheme="education", evidence="peer_attestation")
    with pytest.raises(InvalidClaim):  # an actual-cost scheme needs the cost
        await file(services, world, who="collector", member="asha", scheme="sickness")
    with pytest.raises(InvalidClaim):  # the event cannot be in the future
        await file(services, world, who="collector", member="asha", scheme="death",
                   event_date=TODAY.replace(year=TODAY.year + 1))
    with pytest.raises(NotFound):  # a collector of one branch cannot file for another's member
        await file(services, world, who="collector", member="chitra", scheme="death")
    assert (await count(services, WelfareClaim), await count(services, WelfareClaimEvent), await entry_count(services),
            await count(services, AuditEvent)) == (claims, events, entries, audits)


async def test_second_claim_for_the_same_event(services, world):
    first = await file(services, world, who="collector", member="asha", scheme="accident", claimed_minor=50000)
    with pytest.raises(DuplicateClaim):
        await file(services, world, who="officer1", member="asha", scheme="accident", claimed_minor=20000)
    # Another event (another date) is another claim.
    other = await file(services, world, who="collector", member="asha", scheme="accident", claimed_minor=20000,
                       event_date=TODAY - __import__("datetime").timedelta(days=3))
    assert other.id != first.id
    # The yearly limit (two accident claims) now refuses a third, with the reason.
    with pytest.raises(NotEligible) as refused:
        await file(services, world, who="collector", member="asha", scheme="accident", claimed_minor=10000,
                   event_date=TODAY - __import__("datetime").timedelta(days=5))
    assert [r.code for r in refused.value.reasons] == ["yearly_limit"]
    # A withdrawn claim frees its event.
    withdrawn = await step(services, welfare.withdraw, claim_id=first.id, principal=world.who["asha"])
    assert withdrawn.status == "withdrawn" and withdrawn.event_key is None
    again = await file(services, world, who="collector", member="asha", scheme="accident", claimed_minor=50000)
    assert again.status == "submitted"


async def test_rejection_needs_a_reason_and_there_is_one_appeal(services, world):
    await fund(services, world, 10000)
    claim = await file(services, world, who="collector", member="bhavya", scheme="unemployment",
                       evidence="peer_attestation", attester=world.members["asha"].member_no)
    with pytest.raises(InvalidClaim, match="reason"):
        await step(services, welfare.reject, vault=services.vault, claim_id=claim.id,
                   principal=world.who["officer1"], reason="  ")
    assert (await reload(services, claim.id)).status == "submitted"
    rejected = await step(services, welfare.reject, vault=services.vault, claim_id=claim.id,
                          principal=world.who["officer1"], reason="Not out of work per the branch")
    assert rejected.status == "rejected"
    assert services.vault.decrypt(rejected.rejection_reason_enc) == "Not out of work per the branch"
    # A rejected claim keeps its event: the way forward is the appeal, not a second claim.
    with pytest.raises(DuplicateClaim):
        await file(services, world, who="collector", member="bhavya", scheme="unemployment",
                   evidence="peer_attestation", attester=world.members["asha"].member_no)
    # Only office bearers decide an appeal, and only once one was made.
    with pytest.raises(WrongStatus):
        await step(services, welfare.decide_appeal, claim_id=claim.id, principal=world.who["bearer"], overturn=True)
    appealed = await step(services, welfare.appeal, vault=services.vault, claim_id=claim.id,
                          principal=world.who["collector"], reason="The venue closed in the raid")
    assert appealed.appeal_status == "pending"
    with pytest.raises(WrongStatus, match="one appeal"):
        await step(services, welfare.appeal, vault=services.vault, claim_id=claim.id,
                   principal=world.who["collector"])
    with pytest.raises(NotAllowed):
        await step(services, welfare.decide_appeal, claim_id=claim.id, principal=world.who["officer2"], overturn=True)
    overturned = await step(services, welfare.decide_appeal, claim_id=claim.id, principal=world.who["bearer"],
                            overturn=True)
    assert overturned.status == "approved" and overturned.appeal_status == "overturned"
    payout = await step(services, welfare.pay, claim_id=claim.id, principal=world.who["bearer"], method="cash",
                        reference="", today=TODAY)
    assert payout.amount_minor == 150000


async def test_notifications_use_the_members_language_and_skip_members_without_a_phone(services, world):
    claim = await file(services, world, who="collector", member="asha", scheme="clinic_transport",
                       claimed_minor=30000, details="HIV clinic visit")
    async with services.reader() as db:
        rows = list((await db.execute(select(DueWork).where(DueWork.kind == "welfare.notify"))).scalars())
    assert [r.payload for r in rows] == [f'{{"claim": {claim.id}, "event": "submitted"}}']
    await jobs.sweep(services)
    assert services.sms.sent == [{"to": "+919876500001", "body":
                                  f"Sangha welfare: we received your claim {claim.reference}. "
                                  "We will tell you when it is decided."}]
