"""Payouts from the welfare fund: never above the fund's balance, the scheme's
yearly budget or its cap, also when two land at the same moment (exactly one of
two payouts that together exceed the balance succeeds, on both databases);
corrections only by reversing entries; uploaded documents encrypted and
type-checked."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, text, update

from dues import ledger
from dues.models import JournalEntry
from tests.welfare.conftest import TODAY, entry_count, file, fund, fund_balance, step
from welfare import services as welfare
from welfare.errors import InsufficientFunds, InvalidClaim, WrongStatus
from welfare.models import WelfareClaim, WelfarePayout

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


async def approved_claim(services, world, member: str, scheme: str = "death", **kw) -> WelfareClaim:
    claim = await file(services, world, who="collector", member=member, scheme=scheme, **kw)
    for officer in ("officer1", "officer2") if claim.approvals_needed == 2 else ("officer1",):
        claim = await step(services, welfare.approve, claim_id=claim.id, principal=world.who[officer])
    assert claim.status == "approved"
    return claim


async def try_pay(services, world, claim_id: int, officer: str):
    try:
        async with services.sessions() as db:
            payout, _works = await welfare.pay(session=db, claim_id=claim_id, principal=world.who[officer],
                                               method="cash", reference="", today=TODAY)
            await db.commit()
            return payout
    except InsufficientFunds as exc:
        return exc


async def test_two_payouts_at_once_exactly_one_succeeds(services, world):
    """Two approvals land together: Rs 10,000 each from a fund holding Rs 15,000."""
    await fund(services, world, 15000)
    one = await approved_claim(services, world, "asha")
    two = await approved_claim(services, world, "bhavya")
    entries = await entry_count(services)
    results = await asyncio.gather(try_pay(services, world, one.id, "officer1"),
                                   try_pay(services, world, two.id, "officer2"))
    paid = [r for r in results if isinstance(r, WelfarePayout)]
    refused = [r for r in results if isinstance(r, InsufficientFunds)]
    assert len(paid) == 1 and len(refused) == 1, results
    assert "does not hold enough" in refused[0].message
    assert await fund_balance(services) == 500000
    assert await entry_count(services) == entries + 1
    async with services.reader() as db:
        statuses = sorted((await db.execute(select(WelfareClaim.status).where(
            WelfareClaim.id.in_([one.id, two.id])))).scalars())
        assert (await ledger.verify_ledger_chain(db)).intact
    assert statuses == ["approved", "paid"]


async def test_concurrent_api_payouts_against_one_fund(services, world, client, make_token):
    await fund(services, world, 15000)
    one = await approved_claim(services, world, "asha")
    two = await approved_claim(services, world, "bhavya")
    tokens = [await make_token(world.users["officer1"]), await make_token(world.users["bearer"])]
    responses = await asyncio.gather(*[
        client.post(f"/api/welfare/claims/{claim.id}/pay", json={"method": "bank", "reference": f"UTR-{claim.id}"},
                    headers={"Authorization": f"Bearer {token}"}) for claim, token in zip((one, two), tokens)])
    assert sorted(r.status_code for r in responses) == [201, 409]
    ok = next(r for r in responses if r.status_code == 201).json()
    assert ok["status"] == "paid" and ok["payout"]["amount_minor"] == 1000000 and ok["fund_balance_minor"] == 500000
    refused = next(r for r in responses if r.status_code == 409).json()
    assert refused["error"] == "insufficient_funds"
    r = await client.get("/api/welfare/fund", headers={"Authorization": f"Bearer {tokens[1]}"})
    assert r.json() == {"balance_minor": 500000, "currency": "INR"}


async def test_payout_never_goes_over_the_budget_or_the_cap(services, world):
    await fund(services, world, 100000)
    # A scheme with a Rs 1,500 yearly budget and a fixed Rs 1,000: two approved claims, room for one payout.
    async with services.sessions() as db:
        await welfare.create_scheme(db, code="festival", name="Festival advance", pays_nominee=False,
                                    rules=welfare.RuleInput(effective_from=TODAY.replace(month=1, day=1),
                                                            amount_minor=100000, yearly_budget_minor=150000,
                                                            evidence=("peer_attestation",)),
                                    actor=world.who["bearer"])
        await db.commit()
    attest = {"evidence": "peer_attestation"}
    one = await approved_claim(services, world, "asha", "festival", attester=world.members["bhavya"].member_no,
                               **attest)
    two = await approved_claim(services, world, "bhavya", "festival", attester=world.members["asha"].member_no,
                               **attest)
    await step(services, welfare.pay, claim_id=one.id, principal=world.who["officer1"], method="cash", reference="",
               today=TODAY)
    entries, balance = await entry_count(services), await fund_balance(services)
    with pytest.raises(InsufficientFunds, match="budget"):
        await step(services, welfare.pay, claim_id=two.id, principal=world.who["officer1"], method="cash",
                   reference="", today=TODAY)
    assert (await entry_count(services), await fund_balance(services)) == (entries, balance)

    # The amount is the rules' (never above the cap); a tampered row is refused.
    three = await approved_claim(services, world, "asha", "clinic_transport", claimed_minor=40000)
    async with services.sessions() as db:
        await db.execute(update(WelfareClaim).where(WelfareClaim.id == three.id).values(amount_minor=60000))
        await db.commit()
    with pytest.raises(InsufficientFunds, match="cap"):
        await step(services, welfare.pay, claim_id=three.id, principal=world.who["officer1"], method="cash",
                   reference="", today=TODAY)
    assert await entry_count(services) == entries


async def test_payout_needs_an_approved_claim_and_a_bank_reference(services, world):
    await fund(services, world, 50000)
    claim = await file(services, world, who="collector", member="asha", scheme="death")
    with pytest.raises(WrongStatus):
        await step(services, welfare.pay, claim_id=claim.id, principal=world.who["officer1"], method="cash",
                   reference="", today=TODAY)
    claim = await approved_claim(services, world, "bhavya")
    with pytest.raises(InvalidClaim, match="reference"):
        await step(services, welfare.pay, claim_id=claim.id, principal=world.who["officer1"], method="bank",
                   reference=" ", today=TODAY)
    with pytest.raises(InvalidClaim):
        await step(services, welfare.pay, claim_id=claim.id, principal=world.who["officer1"], method="cheque",
                   reference="", today=TODAY)


async def test_correction_by_reversing_entry(services, world):
    await fund(services, world, 20000)
    claim = await approved_claim(services, world, "asha")
    payout = await step(services, welfare.pay, claim_id=claim.id, principal=world.who["officer1"], method="cash",
                        reference="", today=TODAY)
    assert await fund_balance(services) == 1000000
    async with services.sessions() as db:
        reversed_ = await welfare.reverse_payout(session=db, payout_id=payout.id, principal=world.who["bearer"],
                                                 reason="Paid twice by mistake", today=TODAY)
        await db.commit()
    assert reversed_.reversal_entry_id and reversed_.reversed_at is not None
    assert await fund_balance(services) == 2000000
    async with services.reader() as db:
        assert (await db.get(WelfareClaim, claim.id)).status == "approved"
        original = await db.get(JournalEntry, payout.entry_id)
        reversal = await db.get(JournalEntry, reversed_.reversal_entry_id)
        assert original is not None and reversal.reverses_entry_id == original.id
        assert await welfare.budget_used(db, claim.scheme_id, TODAY.year) == 0
    # Paid again (correctly this time): a new entry, the old ones stay.
    again = await step(services, welfare.pay, claim_id=claim.id, principal=world.who["officer1"], method="bank",
                       reference="UTR-1", today=TODAY)
    assert again.entry_id not in (payout.entry_id, reversed_.reversal_entry_id)
    assert await fund_balance(services) == 1000000


async def test_documents_are_type_checked_size_limited_and_encrypted(services, world):
    claim = await file(services, world, who="collector", member="asha", scheme="death")
    async with services.sessions() as db:
        for bad, match in ((b"", "Choose"), (b"MZ\x90\x00 not a document", "PDF, JPEG or PNG"),
                           (b"%PDF-" + b"0" * welfare.MAX_DOCUMENT_BYTES, "too large")):
            with pytest.raises(InvalidClaim, match=match):
                await welfare.add_document(session=db, vault=services.vault, claim_id=claim.id,
                                           principal=world.who["collector"], data=bad)
        document = await welfare.add_document(session=db, vault=services.vault, claim_id=claim.id,
                                              principal=world.who["collector"], data=PNG)
        await db.commit()
    assert document.content_type == "image/png" and document.size_bytes == len(PNG)
    async with services.engine.connect() as conn:
        raw = (await conn.execute(text("SELECT data_enc FROM welfare_document WHERE id = :id"),
                                  {"id": document.id})).scalar_one()
    assert raw.startswith("gAAAA") and "iVBORw0KGgo" not in raw  # not even the base64 of the PNG header
    async with services.sessions() as db:
        found, data = await welfare.read_document(session=db, vault=services.vault, claim_id=claim.id,
                                                  document_id=document.id, principal=world.who["officer1"])
        await db.commit()
    assert data == PNG
