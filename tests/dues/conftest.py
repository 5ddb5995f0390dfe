"""Fixtures of the dues tests: the standard chart with two collectors' cash
accounts and two members, a helper that posts in its own transaction, and what
an attacker with database access does to get round the ledger's triggers."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from dues import ledger
from dues.money import Money
from union import accounts
from union.models import Member

DAY = dt.date(2025, 4, 1)


@pytest.fixture
async def collectors(services, branches) -> list:
    # No password: these users only act in the ledger, and argon2 would cost a second per test.
    async with services.sessions() as db:
        made = [await accounts.create_user(db, username=f"collector{i}", password=None, roles=["collector"],
                                           branch_code="BLR") for i in (1, 2)]
        await db.commit()
        return made


@pytest.fixture
async def members(services, branches) -> list[int]:
    async with services.sessions() as db:
        made = [Member(member_no=f"BLR-{i:05d}", working_name=f"Member {i}", branch_id=branches["BLR"].id,
                       joined_on=DAY) for i in (1, 2)]
        db.add_all(made)
        await db.commit()
        return [m.id for m in made]


@pytest.fixture
async def chart(services, collectors) -> dict[str, int]:
    """The standard chart and each collector's cash account; returns account ids by code."""
    async with services.sessions() as db:
        accounts = await ledger.ensure_accounts(db)
        for user in collectors:
            account = await ledger.collector_cash_account(db, user.id)
            accounts[account.code] = account
        await db.commit()
        return {code: a.id for code, a in accounts.items()}


def cash_lines(collector, rupees: int) -> list[ledger.Line]:
    amount = Money(rupees * 100)
    return [(f"{ledger.COLLECTOR_CASH_PREFIX}{collector.id}", amount), ("dues_income", -amount)]


async def post(services, *, key: str, lines, kind: str = "cash_payment", description: str = "dues",
               effective_date: dt.date = DAY, **kw):
    """Post one entry in its own committed transaction, as a route or job would."""
    async with services.sessions() as db:
        entry = await ledger.post_entry(db, key=key, kind=kind, lines=lines, description=description,
                                        effective_date=effective_date, **kw)
        await db.commit()
        return entry


async def verify(services) -> ledger.LedgerChainReport:
    async with services.reader() as db:
        return await ledger.verify_ledger_chain(db)


async def as_attacker(services, *statements: tuple[str, dict]) -> None:
    """What someone with database access can do: switch the ledger's triggers off, then write."""
    async with services.engine.connect() as conn:
        if services.settings.is_sqlite:
            names = (await conn.execute(text(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN ('journal_entry', 'posting')"
            ))).scalars().all()
            for name in names:
                await conn.execute(text(f"DROP TRIGGER {name}"))
        else:
            await conn.execute(text("ALTER TABLE journal_entry DISABLE TRIGGER USER"))
            await conn.execute(text("ALTER TABLE posting DISABLE TRIGGER USER"))
        for sql, params in statements:
            await conn.execute(text(sql), params)
        await conn.commit()
