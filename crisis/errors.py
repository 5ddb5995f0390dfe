"""Errors of crisis response; the edge turns them into clear, translated answers."""

from union.errors import UnionError


class CrisisError(UnionError):
    """Base of every error crisis services raise on purpose."""


class BadIntake(CrisisError):
    """Raised when a help request's kind, language, location or phone is malformed or unknown."""

    status_code = 422
    code = "invalid"


class UnknownArea(BadIntake):
    """Raised when an area name is not in the gazetteer; carries suggestions."""

    def __init__(self, message: str, suggestions: list[str]):
        super().__init__(message, field="location")
        self.suggestions = suggestions


class OfferClosed(CrisisError):
    """Raised when an offer is answered after it lapsed, was declined, withdrawn or already accepted."""

    status_code = 409
    code = "offer_closed"


class NotYourTeam(CrisisError):
    """Raised when someone answers or updates for a team they are not a member of."""

    status_code = 403
    code = "forbidden"


class BadTransition(CrisisError):
    """Raised when an incident or team cannot move to the asked status from where it is."""

    status_code = 409
    code = "bad_transition"


class IncidentNotFound(CrisisError):
    """Raised for an unknown reference or a wrong status token (the same answer for both)."""

    status_code = 404
    code = "not_found"
