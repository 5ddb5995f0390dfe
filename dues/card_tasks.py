"""Due work of card payments: a parked Stripe event retried until what it is about
is known (e.g. a refund of a subscription charge that arrived before its invoice),
and the hourly catch-up that applies events the webhook never delivered."""

from __future__ import annotations

from dues import card
from union import jobs


class EventNotPlaceable(Exception):
    """The event is still about a payment we cannot place; the runner retries with back-off."""


@jobs.due_handler("stripe.event")
async def apply_parked_event(session, services, payload: dict):
    billing = card._require_billing(services)
    # Stripe first (HTTP), then the database: the handler's session is not used before this point.
    event = await billing.retrieve_event(payload["event_id"])
    facts = await card.gather(billing, event)
    outcome = await card.apply_event(session, facts=facts)
    if outcome == "unresolved":
        raise EventNotPlaceable(f"stripe event {payload['event_id']} is not placeable yet")
    return None


@jobs.due_handler("stripe.catch_up")
async def catch_up_job(session, services, payload: dict):
    if card.billing_of(services) is None:
        return None  # card payments were turned off: the chain of catch-ups ends here
    await card.catch_up(services)
    follow_up = await card._seed_catch_up(session)
    return [follow_up] if follow_up is not None else None
