"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import functools

from union import accounts
from union.crypto import hash_secret
from union.models import User

PASSWORD = "correct horse battery"


@functools.cache
def hashed(secret: str) -> str:
    """argon2 once per run, not once per user: the suite stays fast."""
    return hash_secret(secret)


async def quick_user(services, username: str, roles: list[str], branch: str | None = None) -> User:
    """A user whose password is PASSWORD, without spending argon2 time on each one."""
    async with services.sessions() as db:
        user = await accounts.create_user(db, username=username, password=None, roles=roles, branch_code=branch,
                                          password_hash=hashed(PASSWORD))
        await db.commit()
    return user
