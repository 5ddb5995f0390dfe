"""Committee reports, approvals landing at the same moment, and key rotation
covering welfare's encrypted columns."""

from __future__ import annotations

import asyncio

from cryptography.fernet import Fernet
from sqlalchemy import func, select

from tests.welfare.conftest import TODAY, file, fund, step
from union.crypto import Vault
from union.keys import reencrypt_all
from welfare import services as welfare
from welfare.errors import NotAllowed
from welfare.models import WelfareApproval, WelfareClaim


async def test_two_officers_approving_at_once_both_count(services, world):
    claim = await file(services, world, who="collector", member="asha", scheme="death")
    assert claim.approvals_needed == 2

    async def approve(officer):
        try:
            return await step(services, welfare.approve, claim_id=claim.id, principal=world.who[officer])
        except NotAllowed as exc:  # pragma: no cover - would mean the lock failed
            return exc

    await asyncio.gather(approve("officer1"), approve("officer2"))
    async with services.reader() as db:
        final = await db.get(WelfareClaim, claim.id)
        approvals = (await db.execute(select(func.count()).select_from(WelfareApproval))).scalar_one()
    assert approvals == 2 and final.status == "approved"


async def test_committee_report(services, world):
    await fund(services, world, 50000)
    paid = await file(services, world, who="collector", member="asha", scheme="clinic_transport", claimed_minor=40000)
    await step(services, welfare.approve, claim_id=paid.id, principal=world.who["officer1"])
    await step(services, welfare.pay, claim_id=paid.id, principal=world.who["officer2"], method="cash",
               reference="", today=TODAY)
    await file(services, world, who="collector", member="bhavya", scheme="clinic_transport", claimed_minor=10000)
    mysore = await file(services, world, who="officer-mys", member="chitra", scheme="clinic_transport",
                        claimed_minor=20000)
    async with services.reader() as db:
        everyone = await welfare.committee_report(db, principal=world.who["bearer"], year=TODAY.year)
        blr_only = await welfare.committee_report(db, principal=world.who["officer1"], year=TODAY.year)
    assert sorted((r["scheme"], r["status"], r["branch"], r["claims"], r["amount_minor"]) for r in everyone["counts"]) == [
        ("clinic_transport", "paid", "BLR", 1, 40000), ("clinic_transport", "submitted", "BLR", 1, 10000),
        ("clinic_transport", "submitted", "MYS", 1, 20000)]
    assert everyone["by_status"] == {"paid": 1, "submitted": 2}
    transport = next(b for b in everyone["budgets"] if b["scheme"] == "clinic_transport")
    assert transport == {"scheme": "clinic_transport", "name": "Transport to a clinic", "paid_minor": 40000,
                         "budget_minor": 10000000, "currency": "INR"}
    assert everyone["timing"]["count"] == 1 and everyone["timing"]["median_days"] >= 0
    assert {r["branch"] for r in blr_only["counts"]} == {"BLR"}
    assert mysore.reference not in str(blr_only)


async def test_key_rotation_reencrypts_claim_details(services, world):
    claim = await file(services, world, who="collector", member="asha", scheme="death", details="Cause: stroke")
    old_token = claim.details_enc
    new_vault = Vault([Fernet.generate_key().decode(), *services.vault.keys])
    await reencrypt_all(services.sessions, new_vault)
    async with services.reader() as db:
        rotated = (await db.get(WelfareClaim, claim.id)).details_enc
    assert rotated != old_token
    assert Vault(new_vault.keys[:1]).decrypt(rotated) == "Cause: stroke"
