"""Errors of dues and the ledger. Services raise them before changing anything;
the edge (route, webhook, job) turns them into clear, translated answers."""

from union.errors import UnionError


class DuesError(UnionError):
    """Base of every error the dues services and the ledger raise on purpose."""


class InvalidAmount(DuesError):
    """Raised when an amount is not a whole number of minor units (a float, a bool, a
    Decimal with a fraction, text that is not a number, more decimals than the
    currency has) or is zero where a movement of money is needed."""

    status_code = 422
    code = "invalid_amount"


class CurrencyMismatch(DuesError):
    """Raised when amounts in different currencies are added, subtracted or compared,
    when a currency code is not ISO 4217, or when a posting's currency is not its
    account's currency."""

    status_code = 422
    code = "currency_mismatch"


class UnbalancedEntry(DuesError):
    """Raised when a journal entry has fewer than two postings or its postings do
    not sum to zero in each currency."""

    status_code = 422
    code = "unbalanced_entry"


class IdempotencyConflict(DuesError):
    """Raised when an idempotency key that was already used is posted again with
    different content (amounts, accounts, description, date, member, actor)."""

    status_code = 409
    code = "idempotency_conflict"


class UnknownAccount(DuesError):
    """Raised when a posting or a balance query names a ledger account code that does not exist."""

    status_code = 422
    code = "unknown_account"


class UnknownEntry(DuesError):
    """Raised when a journal entry to reverse (or that a new entry says it reverses) does not exist."""

    status_code = 404
    code = "not_found"


class AlreadyReversed(DuesError):
    """Raised when an entry that already has a reversing entry is reversed again."""

    status_code = 409
    code = "already_reversed"


class InvalidEntry(DuesError):
    """Raised when an entry's key, kind, description or effective date is missing or malformed."""

    status_code = 422
    code = "invalid"


class PeriodClosed(DuesError):
    """Raised when an entry would be dated in an accounting month the treasurer has closed
    (the database refuses it too: migration 0008). Post a correction in an open month instead."""

    status_code = 409
    code = "period_closed"
