"""Due-work handlers of welfare: telling the member about each step of their claim
by SMS, in their language. The text names the claim's reference, its status and
(when approved or paid) the amount, never the scheme's details, a diagnosis or a
cause of death: a shared phone may show it to anyone."""

from __future__ import annotations

from dues.money import Money, format_money
from union import i18n, jobs
from union.models import Member
from union.sms import SmsError
from welfare.models import WelfareClaim

MESSAGES = {
    "submitted": "Sangha welfare: we received your claim %(ref)s. We will tell you when it is decided.",
    "under_review": "Sangha welfare: your claim %(ref)s is being reviewed.",
    "approved": "Sangha welfare: your claim %(ref)s was approved for %(amount)s.",
    "rejected": "Sangha welfare: your claim %(ref)s was not approved. You may appeal once; ask your welfare officer.",
    "appealed": "Sangha welfare: we received your appeal for claim %(ref)s.",
    "appeal_upheld": "Sangha welfare: the office bearers heard your appeal for claim %(ref)s; the decision stands.",
    "paid": "Sangha welfare: claim %(ref)s was paid: %(amount)s.",
    "withdrawn": "Sangha welfare: claim %(ref)s was withdrawn.",
}


def _marked() -> None:  # pragma: no cover - only here so the catalog extractor sees every text above
    i18n.gettext("Sangha welfare: we received your claim %(ref)s. We will tell you when it is decided.")
    i18n.gettext("Sangha welfare: your claim %(ref)s is being reviewed.")
    i18n.gettext("Sangha welfare: your claim %(ref)s was approved for %(amount)s.")
    i18n.gettext("Sangha welfare: your claim %(ref)s was not approved. You may appeal once; ask your welfare officer.")
    i18n.gettext("Sangha welfare: we received your appeal for claim %(ref)s.")
    i18n.gettext("Sangha welfare: the office bearers heard your appeal for claim %(ref)s; the decision stands.")
    i18n.gettext("Sangha welfare: claim %(ref)s was paid: %(amount)s.")
    i18n.gettext("Sangha welfare: claim %(ref)s was withdrawn.")


def message_for(event: str, claim: WelfareClaim, language: str) -> str:
    with i18n.using(language):
        return i18n.gettext(MESSAGES[event], ref=claim.reference,
                            amount=format_money(Money(int(claim.amount_minor), claim.currency)))


@jobs.due_handler("welfare.notify")
async def notify_member(session, svc, payload: dict):
    claim = await session.get(WelfareClaim, payload["claim"])
    event = payload.get("event")
    if claim is None or event not in MESSAGES:
        return []
    member = await session.get(Member, claim.member_id)
    phone = svc.vault.decrypt(member.phone_enc) if member is not None else None
    if not phone:
        return []  # no phone on record: the member sees the step on their welfare page
    body = message_for(event, claim, member.language or svc.settings.default_language)
    # No transaction (on SQLite, the write lock) is held while the SMS provider answers.
    await session.rollback()
    try:
        await svc.sms.send(to=phone, body=body)
    except SmsError as exc:
        if exc.retry:
            raise
    return []
