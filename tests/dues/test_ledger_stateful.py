"""A hypothesis state machine posts cash payments, card payments, card fees,
refunds, disputes lost and won, waivers, cash hand-overs, reversals (of any of
these, reversals included), idempotent replays, conflicting replays and
unbalanced attempts against a real database, and after every step checks that
every entry sums to zero, that account balances equal a plain in-memory model,
that each member's dues credit (what standing counts as paid:
dues.services.paid_total) equals the model's, that no posted entry or posting
ever changed, and that the hash chain is intact.

The entries are posted with dues.ledger directly, in the shapes the dues
services post them (cash: Dr cash:collector / Cr dues_income; card: Dr stripe /
Cr dues_income; fee: Dr card_fees / Cr stripe; refund and dispute: Dr refunds
or disputes / Cr stripe, a dispute won the other way round; waiver: Dr
dues_waived / Cr dues_income; the member's id on every entry that moves their
credit), so the machine checks the ledger and the standing arithmetic whatever
service posts them. The model of a member's credit is kept per rule (a payment,
waiver or won dispute adds its amount, a refund or lost dispute takes it away, a
reversal undoes its entry's), not from the postings.

How async meets hypothesis: the state machine is synchronous, and the engine
(asyncpg, aiosqlite) is bound to the test's event loop, where the `services`
fixture made it. The test therefore runs hypothesis in a worker thread
(`asyncio.to_thread`) while the test's loop stays free; every rule hands its
coroutine back to that loop with `run_coroutine_threadsafe` and blocks on the
result. One loop owns every connection, a rule runs one transaction at a time
(so SQLite's single writer never waits on itself), and an exception in a rule
surfaces in hypothesis' thread, where it shrinks the failing run as usual.
"""

from __future__ import annotations

import asyncio
import uuid

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, multiple, rule, run_state_machine_as_test
from sqlalchemy import func, select, text

from dues import ledger
from dues.errors import AlreadyReversed, IdempotencyConflict, UnbalancedEntry
from dues.models import EntryKind, JournalEntry, Posting
from dues.money import Money
from dues.services import paid_total
from tests.dues.conftest import DAY

amounts = st.integers(min_value=1, max_value=5_000_00)  # paise: up to ₹5,000


class LedgerMachine(RuleBasedStateMachine):
    """Bound to a database by `bound_to`; each hypothesis example starts from whatever earlier examples
    left in it, so the model starts from the balances the database reports."""

    services = loop = None
    collectors: list = []
    member_ids: list[int] = []
    entries = Bundle("entries")

    @classmethod
    def bound_to(cls, *, services, loop, collectors, member_ids) -> type[LedgerMachine]:
        return type("BoundLedgerMachine", (cls,), {"services": services, "loop": loop, "collectors": collectors,
                                                   "member_ids": member_ids})

    def __init__(self):
        super().__init__()
        self.run_id = uuid.uuid4().hex[:8]  # keys stay unique across examples sharing one database
        self.steps = 0
        self.requests: dict[str, dict] = {}  # entry id -> the post_entry arguments that made it
        self.stored: dict[str, tuple] = {}  # entry id -> its rows as first read back
        self.reversed: set[str] = set()
        self.credit_moves: dict[str, tuple[int | None, int]] = {}  # entry id -> (member id, credit it adds)
        self.expected, self.entries_before, self.credit = self.wait(self._starting_point())

    def wait(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    async def _starting_point(self):
        async with self.services.reader() as db:
            balances = await ledger.balances(db)
            count = (await db.execute(select(func.count()).select_from(JournalEntry))).scalar_one()
            credit = {member_id: await paid_total(db, member_id) for member_id in self.member_ids}
        return {code: m.amount_minor for code, m in balances.items()}, count, credit

    # ------------------------------------------------------------ posting

    def _key(self, what: str) -> str:
        self.steps += 1
        return f"{self.run_id}:{what}:{self.steps}"

    async def _post(self, request: dict) -> JournalEntry:
        async with self.services.sessions() as db:
            entry = await ledger.post_entry(db, **request)
            await db.commit()
            return entry

    async def _rows(self, entry_ids) -> dict[str, tuple]:
        ids = list(entry_ids)
        async with self.services.reader() as db:
            params = {f"p{i}": v for i, v in enumerate(ids)}
            marks = ", ".join(f":p{i}" for i in range(len(ids))) or "NULL"
            entries = (await db.execute(text(f"SELECT * FROM journal_entry WHERE id IN ({marks})"), params)).all()
            postings = (await db.execute(text(f"SELECT * FROM posting WHERE entry_id IN ({marks}) ORDER BY id"),
                                         params)).all()
        return {row.id: (tuple(row), tuple(tuple(p) for p in postings if p.entry_id == row.id)) for row in entries}

    def _record(self, entry: JournalEntry, request: dict, credit: int = 0) -> str:
        for code, money in request["lines"]:
            self.expected[code] += money.amount_minor
        member_id = request.get("member_id")
        assert credit == 0 or member_id is not None
        if credit:
            self.credit[member_id] += credit
        self.credit_moves[entry.id] = (member_id, credit)
        self.requests[entry.id] = request
        self.stored.update(self.wait(self._rows([entry.id])))
        return entry.id

    def _post_new(self, kind: str, lines: list[ledger.Line], credit: int = 0, **extra) -> str:
        request = dict(key=self._key(kind), kind=kind, lines=lines, description=f"{kind} (test)",
                       effective_date=DAY, **extra)
        return self._record(self.wait(self._post(request)), request, credit)

    def _cash(self, index: int) -> str:
        return f"{ledger.COLLECTOR_CASH_PREFIX}{self.collectors[index].id}"

    @rule(target=entries, collector=st.sampled_from([0, 1]), member=st.sampled_from([0, 1]), amount=amounts)
    def cash_payment(self, collector, member, amount):
        return self._post_new(EntryKind.cash_payment, [(self._cash(collector), Money(amount)),
                                                       ("dues_income", Money(-amount))],
                              actor=self.collectors[collector], member_id=self.member_ids[member], credit=amount)

    @rule(target=entries, member=st.sampled_from([0, 1]), amount=amounts)
    def card_payment(self, member, amount):
        return self._post_new(EntryKind.card_payment, [("stripe", Money(amount)), ("dues_income", Money(-amount))],
                              member_id=self.member_ids[member], credit=amount)

    @rule(target=entries, fee=st.integers(1, 2_000))
    def card_fee(self, fee):
        # Stripe's fee is the union's cost, not the member's: it moves nobody's credit.
        return self._post_new(EntryKind.card_fee, [("card_fees", Money(fee)), ("stripe", Money(-fee))])

    @rule(target=entries, member=st.sampled_from([0, 1]), amount=amounts)
    def refund(self, member, amount):
        return self._post_new(EntryKind.refund, [("refunds", Money(amount)), ("stripe", Money(-amount))],
                              member_id=self.member_ids[member], actor=self.collectors[0], credit=-amount)

    @rule(target=entries, member=st.sampled_from([0, 1]), amount=amounts)
    def dispute(self, member, amount):
        return self._post_new(EntryKind.dispute, [("disputes", Money(amount)), ("stripe", Money(-amount))],
                              member_id=self.member_ids[member], credit=-amount)

    @rule(target=entries, member=st.sampled_from([0, 1]), amount=amounts)
    def dispute_won(self, member, amount):
        # The bank decided for the union: the money and the member's credit come back.
        return self._post_new(EntryKind.dispute, [("stripe", Money(amount)), ("disputes", Money(-amount))],
                              member_id=self.member_ids[member], credit=amount)

    @rule(target=entries, member=st.sampled_from([0, 1]), months=st.integers(1, 6))
    def waiver(self, member, months):
        amount = months * 100_00  # waived months count toward standing as if paid
        return self._post_new(EntryKind.waiver, [("dues_waived", Money(amount)), ("dues_income", Money(-amount))],
                              member_id=self.member_ids[member], actor=self.collectors[0], credit=amount)

    @rule(target=entries, collector=st.sampled_from([0, 1]), amount=amounts)
    def handover(self, collector, amount):
        return self._post_new(EntryKind.handover, [("cash:office", Money(amount)),
                                                   (self._cash(collector), Money(-amount))])

    @rule(target=entries, entry_id=entries)
    def reverse(self, entry_id):
        key = self._key("reversal")

        async def reverse():
            async with self.services.sessions() as db:
                reversal = await ledger.reverse_entry(db, entry_id=entry_id, key=key, reason="correction",
                                                      actor=None, effective_date=DAY)
                await db.commit()
                return reversal, await ledger.entry_lines(db, reversal.id)

        if entry_id in self.reversed:
            try:
                self.wait(reverse())
            except AlreadyReversed:
                return multiple()
            raise AssertionError("an entry was reversed twice")
        reversal, lines = self.wait(reverse())
        assert sorted(lines) == sorted((code, -m) for code, m in self.requests[entry_id]["lines"])
        self.reversed.add(entry_id)
        member_id, credit = self.credit_moves[entry_id]
        return self._record(reversal, dict(key=key, kind=EntryKind.reversal, lines=lines, description="correction",
                                           effective_date=DAY, member_id=member_id, reverses=entry_id), -credit)

    @rule(entry_id=entries)
    def replay(self, entry_id):
        assert self.wait(self._post(self.requests[entry_id])).id == entry_id

    @rule(entry_id=entries, extra=st.integers(1, 100))
    def conflicting_replay(self, entry_id, extra):
        request = dict(self.requests[entry_id])
        lines = list(request["lines"])
        # Still balanced, still no zero line: more on one debit, as much more on one credit.
        debit = next(i for i, (_, m) in enumerate(lines) if m.amount_minor > 0)
        credit = next(i for i, (_, m) in enumerate(lines) if m.amount_minor < 0)
        for i, sign in ((debit, 1), (credit, -1)):
            code, money = lines[i]
            lines[i] = (code, money + Money(sign * extra, money.currency))
        request["lines"] = lines
        try:
            self.wait(self._post(request))
        except IdempotencyConflict:
            return
        raise AssertionError("a replay with other amounts was accepted")

    @rule(amount=amounts, off_by=st.integers(1, 100))
    def unbalanced_attempt(self, amount, off_by):
        request = dict(key=self._key("unbalanced"), kind="cash_payment", description="", effective_date=DAY,
                       lines=[("bank", Money(amount)), ("dues_income", Money(-amount - off_by))])
        try:
            self.wait(self._post(request))
        except UnbalancedEntry:
            return
        raise AssertionError("an unbalanced entry was posted")

    # ------------------------------------------------------------ invariants

    async def _unbalanced_entries(self) -> list:
        async with self.services.reader() as db:
            by_currency = select(Posting.entry_id).group_by(Posting.entry_id, Posting.currency).having(
                func.sum(Posting.amount_minor) != 0)
            too_few = select(JournalEntry.id).outerjoin(Posting, Posting.entry_id == JournalEntry.id).group_by(
                JournalEntry.id).having(func.count(Posting.id) < 2)
            return [*(await db.execute(by_currency)).scalars(), *(await db.execute(too_few)).scalars()]

    async def _books(self):
        async with self.services.reader() as db:
            balances = await ledger.balances(db)
            report = await ledger.verify_ledger_chain(db)
            credit = {member_id: await paid_total(db, member_id) for member_id in self.member_ids}
        return balances, report, credit

    @invariant()
    def every_entry_sums_to_zero(self):
        assert self.wait(self._unbalanced_entries()) == []

    @invariant()
    def balances_and_member_credit_match_the_model_and_the_chain_is_intact(self):
        balances, report, credit = self.wait(self._books())
        assert {code: m.amount_minor for code, m in balances.items()} == self.expected
        assert credit == self.credit
        assert sum(self.expected.values()) == 0
        assert report.intact, report
        assert report.checked == self.entries_before + len(self.requests)

    @invariant()
    def no_posted_entry_ever_changes(self):
        assert self.wait(self._rows(self.stored)) == self.stored


async def test_ledger_state_machine(services, chart, collectors, members):
    machine = LedgerMachine.bound_to(services=services, loop=asyncio.get_running_loop(), collectors=collectors,
                                     member_ids=members)
    budget = settings(max_examples=15, stateful_step_count=20, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    await asyncio.to_thread(run_state_machine_as_test, machine, settings=budget)
