"""Demo welfare: the welfare fund funded from the bank, a second welfare officer in
Bengaluru (two distinct approvals are needed above Rs 3,000), and a realistic set
of claims in every status, filed by collectors for members who phoned in, the
paid ones posted to the ledger. Deterministic: members are picked in order among
those the rules let claim."""

from __future__ import annotations

import datetime as dt
import os
import secrets

from sqlalchemy import select

from dues.money import Money
from union import accounts
from union.demo import DEMO_STEPS
from union.models import Branch, Member, User
from welfare import services as welfare
from welfare.errors import WelfareError

# (scheme, days before today, claimed rupees or None, evidence, details, what happens to it)
SCENARIOS = [
    ("clinic_transport", 40, 300, "document", "Auto fare to the ART centre and back", "paid"),
    ("death", 35, None, "collector_attestation", "Died at home after a long illness; funeral at the crematorium",
     "paid"),
    ("education", 30, 4000, "document", "School fees for her daughter, class 6", "paid"),
    ("sickness", 25, 2800, "document", "Typhoid; tests and medicines at the government hospital", "paid"),
    ("accident", 20, 2500, "document", "Fell from a bus; stitches and an X-ray", "approved"),
    ("death", 15, None, "document", "Death certificate from the municipality", "under_review"),
    ("unemployment", 12, None, "peer_attestation", "Lodge closed after a police raid; no work for two months",
     "rejected"),
    ("unemployment", 10, None, "peer_attestation", "Evicted from the lodge by the owner", "appealed"),
    ("sickness", 8, 1500, "document", "Fever and a chest infection", "withdrawn"),
    ("old_age", 6, None, "collector_attestation", "Sixty-three years old, cannot work any more", "approved_on_appeal"),
    ("clinic_transport", 3, 250, "peer_attestation", "Taxi to the TB clinic", "submitted"),
    ("sickness", 2, 3500, "document", "Hospital stay for two nights", "submitted"),
]
FUND_RUPEES = 300000


async def _user(session, username: str) -> User | None:
    return (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()


async def _second_officer(services, session, say) -> User:
    user = await _user(session, "demo-welfare2")
    if user is None:
        password = secrets.token_urlsafe(9)
        user = await accounts.create_user(session, username="demo-welfare2", password=password,
                                          roles=["welfare_officer"], branch_code="BLR", display_name="Demo welfare 2")
        path = services.settings.data_dir / "demo-credentials.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(f"{'demo-welfare2':<16} {password:<14} welfare_officer in BLR\n")
    return user


async def load_welfare_demo(services, rng, say) -> None:
    today = dt.date.today()
    async with services.sessions() as session:
        needed = {name: await _user(session, name) for name in ("demo-collector", "demo-welfare", "demo-office")}
        if any(user is None for user in needed.values()):
            say("Welfare: demo staff missing; no demo claims.")
            return
        needed["demo-welfare2"] = await _second_officer(services, session, say)
        who = {name: await accounts.principal_for(session, user, "session") for name, user in needed.items()}
        await welfare.allocate_to_fund(session=session, principal=who["demo-office"], amount=Money(FUND_RUPEES * 100),
                                       source="bank", today=today - dt.timedelta(days=60),
                                       note="Members' contributions allocated to welfare (demo)",
                                       key="demo:welfare-fund")
        blr = (await session.execute(select(Branch).where(Branch.code == "BLR"))).scalar_one()
        candidates = list((await session.execute(
            select(Member).where(Member.branch_id == blr.id).order_by(Member.id))).scalars())
        await session.commit()

    made = {}
    used: set[int] = set()
    for scheme, days_ago, rupees, evidence, details, outcome in SCENARIOS:
        event_date = today - dt.timedelta(days=days_ago)
        claim = None
        for member in candidates:
            if member.id in used:
                continue
            attester = next((m for m in candidates if m.id != member.id), None)
            try:
                async with services.sessions() as session:
                    claim, _works = await welfare.file_claim(
                        session=session, vault=services.vault, principal=who["demo-collector"],
                        data=welfare.NewClaim(member_no=member.member_no, scheme=scheme, event_date=event_date,
                                              evidence=evidence, claimed_minor=rupees * 100 if rupees else None,
                                              attester_member_no=attester.member_no if attester else None,
                                              details=details),
                        today=today, grace_months=services.settings.grace_months)
                    await session.commit()
            except WelfareError:
                continue
            used.add(member.id)
            break
        if claim is None:
            continue
        await _play(services, who, claim, outcome, today)
        made[outcome] = made.get(outcome, 0) + 1
    say(f"Welfare: fund of Rs {FUND_RUPEES:,} and {sum(made.values())} claims "
        f"({', '.join(f'{n} {k}' for k, n in sorted(made.items()))}).")


async def _play(services, who, claim, outcome: str, today: dt.date) -> None:
    async def run(fn, **kw):
        async with services.sessions() as session:
            result = await fn(session=session, claim_id=claim.id, **kw)
            await session.commit()
            return result

    if outcome == "submitted":
        return
    if outcome in ("rejected", "appealed", "approved_on_appeal"):
        await run(welfare.reject, vault=services.vault, principal=who["demo-welfare"],
                  reason="No one at the branch could confirm it yet")
        if outcome != "rejected":
            await run(welfare.appeal, vault=services.vault, principal=who["demo-collector"],
                      reason="Two members of the branch confirm it")
        if outcome == "approved_on_appeal":
            await run(welfare.decide_appeal, principal=who["demo-office"], overturn=True)
        return
    if outcome == "withdrawn":
        await run(welfare.withdraw, principal=who["demo-collector"])
        return
    await run(welfare.approve, principal=who["demo-welfare"])
    if outcome == "under_review":
        return
    if claim.approvals_needed > 1:
        await run(welfare.approve, principal=who["demo-welfare2"])
    if outcome == "paid":
        bank = claim.amount_minor >= 300000
        await run(welfare.pay, principal=who["demo-welfare"], method="bank" if bank else "cash",
                  reference=f"UTR{claim.id:08d}" if bank else "", today=today)


DEMO_STEPS.append(load_welfare_demo)
