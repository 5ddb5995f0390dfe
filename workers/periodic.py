"""Hourly housekeeping shared by both job runners (the arq cron and the embedded loop):
make sure each domain's self-rescheduling due-work chain exists. Each step is
idempotent, so several workers running it at once, or twice, is harmless."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


async def ensure_scheduled_work(services) -> None:
    from dues import card, reminders

    for step in (reminders.ensure_current_month, card.ensure_catch_up):
        try:
            await step(services)
        except Exception:  # one domain's failure must not stop the others; the next hour retries
            log.exception("hourly scheduling step %s failed", step.__qualname__)
