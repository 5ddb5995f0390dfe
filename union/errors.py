"""Errors of the union core. The edge (route, job, CLI) turns them into clear,
translated messages; a service raises before it changes anything."""

from __future__ import annotations


class UnionError(Exception):
    """Base of every error a union-core service raises on purpose."""

    status_code = 400
    code = "invalid"

    def __init__(self, message: str = "", *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(UnionError):
    """Raised when the named member, user or branch does not exist (or may not be seen)."""

    status_code = 404
    code = "not_found"


class Conflict(UnionError):
    """Raised when the change would duplicate something unique (a phone, a username)."""

    status_code = 409
    code = "conflict"


class InvalidInput(UnionError):
    """Raised when a value is malformed or out of range."""

    status_code = 422
    code = "invalid"


class Forbidden(UnionError):
    """Raised when the policy does not allow the principal to do this."""

    status_code = 403
    code = "forbidden"


class AuthenticationFailed(UnionError):
    """Raised on a wrong username/password or member number/PIN (one message for both cases)."""

    status_code = 401
    code = "authentication_failed"


class RateLimited(UnionError):
    """Raised when too many attempts came from one address or for one account."""

    status_code = 429
    code = "rate_limited"
