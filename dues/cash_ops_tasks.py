"""Registers the due-work handlers of cash operations (imported by workers/registry.py):
dues messages (SMS receipts and reminders) and the monthly reminder run, and the demo step."""

import dues.cash_ops_messages  # noqa: F401  (dues.notice)
import dues.reminders  # noqa: F401  (dues.reminders)
import dues.cash_ops_demo  # noqa: F401  (appends to union.demo.DEMO_STEPS)
