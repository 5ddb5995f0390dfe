"""Group commit for cash payments: one writer per process posts what is waiting in one transaction.

Each SQL statement through SQLAlchemy's async layer costs about a millisecond of CPU, a payment
recorded alone is about fifteen of them and one commit (one fsync on SQLite), and every payment
takes the ledger head and the audit head, so payments are posted one at a time however many
collectors submit at once. `PaymentBatcher` turns that queue into batches: callers
`await batcher.submit(request)`; one writer task takes everything queued (up to `cap`), records it
with `dues.services.record_cash_payments` (a constant number of statements per batch), schedules
each payment's receipt SMS in the same transaction, commits once, then answers each caller with its
own payment or its own error.

If the batch fails unexpectedly (a race with another process that the unique constraints catch, a
closed period, a lost connection), it is rolled back and its requests are retried one by one, each
in its own transaction, so one bad request never fails the others.

Cancellation: a caller that stops waiting before its batch starts is dropped (nothing posted for
it); once its batch has started the payment is posted or not as a whole, and the answer is
discarded. `close()` refuses new requests, lets the writer finish what is queued and waits for it,
so shutdown loses nothing and leaves nothing half-posted. The writer task only runs while there is
work: it starts on a submit and ends when the queue is empty. While it runs it keeps one session for
consecutive batches (each commit still gives the connection back to the pool).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque

from dues.cash_ops_messages import schedule_receipt_sms
from dues.services import PaymentOutcome, PaymentRequest, record_cash_payments, speaking
from union import i18n, jobs
from union.errors import UnionError
from union.services import SERVICE_EXTENSIONS

log = logging.getLogger(__name__)

EXTRA = "dues_payments"  # key of the batcher in Services.extras
DEFAULT_CAP = 64


class BatcherClosed(RuntimeError):
    """submit() after close(): the process is shutting down."""


class PaymentBatcher:
    """The per-process group committer of cash payments (see the module's docstring).

    `sessions` is the write sessionmaker (Services.sessions); `queue` returns the job queue to
    nudge after the commit (Services.jobs, read when needed since it is built after the batcher)."""

    def __init__(self, sessions, *, queue=None, cap: int = DEFAULT_CAP, receipt_sms: bool = True):
        self._sessions = sessions
        self._queue = queue or (lambda: None)
        self.cap = max(1, int(cap))
        self.receipt_sms = receipt_sms
        self._waiting: deque[tuple[PaymentRequest, asyncio.Future]] = deque()
        self._writer: asyncio.Task | None = None
        self._closed = False
        self.batches = 0  # counters for the benchmark and tests
        self.fallbacks = 0

    async def submit(self, request: PaymentRequest) -> PaymentOutcome:
        """Post one payment with whatever else is waiting; its outcome, or its error raised."""
        if self._closed:
            raise BatcherClosed("the payment batcher is closed")
        if request.language is None:  # its errors are made in the writer task: in the caller's language
            request = dataclasses.replace(request, language=i18n.current_language())
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="dues-payment-batcher")
        outcome = await future
        if outcome.error is not None:
            raise outcome.error
        return outcome

    async def close(self) -> None:
        """Refuse new payments, finish the ones queued, wait for the writer."""
        self._closed = True
        if self._writer is not None and not self._writer.done():
            try:
                await asyncio.shield(self._writer)
            except Exception:  # noqa: BLE001 - its callers got the error; closing must not fail
                log.exception("the payment batcher's writer failed")

    async def _drain(self) -> None:
        batch: list[tuple[PaymentRequest, asyncio.Future]] = []
        try:
            # One session while the queue drains (not one per batch). Callers that submit while it closes
            # find this task running: the outer loop takes them.
            while self._waiting:
                async with self._sessions() as session:
                    while batch := self._take():
                        written = await self._post(session, batch)
                        batch = []
                        if not written:
                            break  # a failed batch gives its session up: the next one starts afresh
                        # Let the callers just answered (and anyone else ready) queue their next payment
                        # before the queue is judged empty and the session given back.
                        await asyncio.sleep(0)
        except BaseException as exc:
            # The writer itself was cancelled (the loop is closing) or broke: nobody may wait for ever.
            # A batch cut off before its commit was rolled back by its session; after it, it stands.
            failure = exc if isinstance(exc, Exception) else BatcherClosed("the payment batcher was stopped")
            for _request, future in [*batch, *self._waiting]:
                if not future.done():
                    future.set_exception(failure)
            self._waiting.clear()
            raise

    def _take(self) -> list[tuple[PaymentRequest, asyncio.Future]]:
        """Up to `cap` queued requests whose callers still wait (one that gave up before its batch
        started is dropped)."""
        batch = []
        while self._waiting and len(batch) < self.cap:
            request, future = self._waiting.popleft()
            if not future.done():
                batch.append((request, future))
        return batch

    async def _post(self, session, batch: list[tuple[PaymentRequest, asyncio.Future]]) -> bool:
        """Write the batch in `session` and answer its callers. False when the batch failed: its
        requests were then retried one by one, each in a session of its own."""
        requests = [request for request, _ in batch]
        try:
            outcomes = await self._write(session, requests)
        except Exception:  # noqa: BLE001 - rolled back: retry each alone, so one bad request fails alone
            log.warning("a batch of %d cash payments failed; retrying them one by one", len(batch), exc_info=True)
            self.fallbacks += 1
            for request, future in batch:
                try:
                    with speaking(request):
                        (outcome,) = await self._write_alone(request)
                except UnionError as exc:  # e.g. PeriodClosed
                    outcome = PaymentOutcome(request, error=exc)
                except Exception as exc:  # noqa: BLE001 - this request's own failure (e.g. a race lost)
                    outcome = await self._after_failure(request, exc)
                    if outcome is None:
                        if not future.done():
                            future.set_exception(exc)
                        continue
                if not future.done():
                    future.set_result(outcome)
            return False
        for (_request, future), outcome in zip(batch, outcomes):
            if not future.done():
                future.set_result(outcome)
        return True

    async def _after_failure(self, request: PaymentRequest, exc: Exception) -> PaymentOutcome | None:
        """A request that failed alone on an IntegrityError lost a race for its receipt number (another
        process committed the same receipt first): recorded again, it now gets its Conflict."""
        from sqlalchemy.exc import IntegrityError

        if not isinstance(exc, IntegrityError):
            return None
        try:
            (outcome,) = await self._write_alone(request)
        except Exception:  # noqa: BLE001
            return None
        return outcome

    async def _write_alone(self, request: PaymentRequest) -> list[PaymentOutcome]:
        async with self._sessions() as session:
            return await self._write(session, [request])

    async def _write(self, session, requests: list[PaymentRequest]) -> list[PaymentOutcome]:
        """One transaction in the writer's session: record the payments, schedule their receipts,
        commit, nudge the jobs. On failure it is rolled back and the session can go on."""
        try:
            outcomes = await record_cash_payments(session, requests)
            works = (await schedule_receipt_sms(session, [(o.payment, o.member) for o in outcomes if o.payment])
                     if self.receipt_sms else [])
            # After the commit nothing raises: a failed nudge is logged and the sweeper runs the work.
            await jobs.commit_and_nudge(session, self._queue(), works)
        except Exception:
            try:
                await session.rollback()
            except Exception:  # noqa: BLE001 - a lost connection: the session is given up anyway
                log.warning("rolling back a failed batch of cash payments failed", exc_info=True)
            raise
        finally:
            session.expunge_all()  # the next batch starts clean; what callers get is detached, as before
        self.batches += 1
        return outcomes


def batcher(services) -> PaymentBatcher:
    """The process's batcher in `services` (created on first use when the extension did not run)."""
    found = services.extras.get(EXTRA)
    if found is None:
        found = services.extras[EXTRA] = PaymentBatcher(services.sessions, queue=lambda: services.jobs)
    return found


def extend_services(services) -> None:
    batcher(services)


SERVICE_EXTENSIONS.append(extend_services)
