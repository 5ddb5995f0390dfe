"""Errors of welfare. Services raise them before changing anything; the edge
(route or job) turns them into clear, translated answers."""

from union.errors import UnionError


class WelfareError(UnionError):
    """Base of every error the welfare services raise on purpose."""


class UnknownScheme(WelfareError):
    """Raised when a claim or a rule names a scheme that does not exist or is closed."""

    status_code = 404
    code = "unknown_scheme"


class NotEligible(WelfareError):
    """Raised when a claim is filed for a member who does not meet the scheme's rules on the
    event date; `reasons` holds every unmet rule (lazy translations)."""

    status_code = 422
    code = "not_eligible"

    def __init__(self, message: str = "", *, reasons=(), field: str | None = None):
        super().__init__(message, field=field)
        self.reasons = tuple(reasons)


class DuplicateClaim(WelfareError):
    """Raised when the member already has a claim for the same scheme and event date that
    was not withdrawn."""

    status_code = 409
    code = "duplicate_claim"


class NotAllowed(WelfareError):
    """Raised when this person may not take this step on this claim: the claimant or the
    filer approving, an officer approving twice, an officer of another branch."""

    status_code = 403
    code = "not_allowed"


class WrongStatus(WelfareError):
    """Raised when the claim's status does not allow the step (paying a claim that is not
    approved, appealing twice, withdrawing a paid claim)."""

    status_code = 409
    code = "wrong_status"


class InsufficientFunds(WelfareError):
    """Raised when a payout would overdraw the welfare fund or the scheme's yearly budget,
    or exceeds the scheme's cap."""

    status_code = 409
    code = "insufficient_funds"


class InvalidClaim(WelfareError):
    """Raised when a field of a claim, a decision, a payout, a rule or an upload is missing
    or malformed."""

    status_code = 422
    code = "invalid"
