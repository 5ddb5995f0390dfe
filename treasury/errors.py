"""Errors of the treasurer's books. Services raise them before changing anything;
the edge (page, API, CLI) turns them into clear, translated answers."""

from union.errors import UnionError


class TreasuryError(UnionError):
    """Base of every error the treasury services raise on purpose."""


class InvalidPeriod(TreasuryError):
    """Raised when a month is not YYYY-MM, has not ended yet, or a date range is malformed."""

    status_code = 422
    code = "invalid_period"


class AlreadyClosed(TreasuryError):
    """Raised when a month that is already closed is closed again."""

    status_code = 409
    code = "already_closed"


class NotReconciled(TreasuryError):
    """Raised when a month with reconciliation differences is closed without the treasurer's
    explicit confirmation and a note."""

    status_code = 409
    code = "not_reconciled"


class CheckpointMismatch(TreasuryError):
    """Raised when a checkpoint file is malformed, not signed by this union's key, or does not
    match the chains in the database (something before it was changed)."""

    status_code = 422
    code = "checkpoint_mismatch"


class BankCsvInvalid(TreasuryError):
    """Raised when a bank-statement CSV is malformed; `problems` lists each bad row."""

    status_code = 422
    code = "invalid_bank_csv"

    def __init__(self, message: str = "", *, problems: list[str] | None = None, field: str | None = None):
        super().__init__(message, field=field)
        self.problems = problems or []


class MatchRefused(TreasuryError):
    """Raised when a bank line cannot be matched to the chosen ledger entry (not a bank entry,
    another amount, or already matched)."""

    status_code = 409
    code = "match_refused"
