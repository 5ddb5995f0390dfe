"""Accounts: users, role grants, login with password or member number + PIN,
server-side sessions (fresh id at login, inactivity and absolute timeouts,
ending every session of a user), and API bearer tokens stored hashed."""

from __future__ import annotations

import datetime as dt
import re
import secrets

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from union import audit
from union.crypto import hash_secret, token_digest, verify_secret
from union.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound
from union.i18n import _
from union.models import ApiToken, Branch, Member, Role, RoleGrant, User, WebSession, utcnow
from union.policy import Principal

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}$")
SESSION_TOUCH_EVERY = dt.timedelta(seconds=60)


async def create_user(session: AsyncSession, *, username: str, password: str | None, roles: list[str],
                      branch_code: str | None = None, display_name: str = "", member: Member | None = None,
                      language: str | None = None, actor=None, password_hash: str | None = None) -> User:
    username = username.strip().lower()
    if not USERNAME.match(username):
        raise InvalidInput(_("A username is 2 to 63 lower-case letters, digits, dots, dashes or underscores."),
                           field="username")
    for role in roles:
        if role not in Role.__members__:
            raise InvalidInput(_("Unknown role: %(role)s", role=role), field="role")
    if password is not None and len(password) < 8 and Role.member not in roles:
        raise InvalidInput(_("A staff password needs at least 8 characters."), field="password")
    if (await session.execute(select(User.id).where(User.username == username))).first():
        raise Conflict(_("That username is taken."), field="username")
    branch_id = None
    if branch_code:
        branch = (await session.execute(select(Branch).where(Branch.code == branch_code.upper()))).scalar_one_or_none()
        if branch is None:
            raise NotFound(_("Unknown branch: %(code)s", code=branch_code), field="branch")
        branch_id = branch.id
    user = User(username=username, display_name=display_name or username,
                password_hash=password_hash or (hash_secret(password) if password else None),
                member_id=member.id if member else None, language=language)
    session.add(user)
    await session.flush()
    for role in roles:
        # A member's own role is never branch-limited: it is about themselves.
        session.add(RoleGrant(user_id=user.id, role=role, branch_id=None if role == Role.member else branch_id))
    await session.flush()
    await audit.record(session, action="user.create", actor=actor, target_type="user", target_id=user.id,
                       detail={"roles": sorted(roles), "branch": branch_code})
    return user


async def load_grants(session: AsyncSession, user_id: int) -> dict[str, set[int] | None]:
    grants: dict[str, set[int] | None] = {}
    for role, branch_id in (await session.execute(
            select(RoleGrant.role, RoleGrant.branch_id).where(RoleGrant.user_id == user_id))).all():
        if branch_id is None:
            grants[role] = None
        elif grants.get(role, set()) is not None:
            grants.setdefault(role, set()).add(branch_id)
    return grants


async def principal_for(session: AsyncSession, user: User, via: str) -> Principal:
    return Principal(user=user, grants=await load_grants(session, user.id), member_id=user.member_id, via=via)


async def authenticate_password(session: AsyncSession, *, username: str, password: str) -> User:
    user = (await session.execute(
        select(User).where(User.username == username.strip().lower()))).scalar_one_or_none()
    # One message, and the same work, whether or not the user exists.
    if not verify_secret(user.password_hash if user and user.is_active else None, password):
        raise AuthenticationFailed(_("Wrong username or password."))
    return user


async def authenticate_member_pin(session: AsyncSession, *, member_no: str, pin: str) -> User:
    user = (await session.execute(
        select(User).join(Member, Member.id == User.member_id)
        .where(Member.member_no == member_no.strip().upper()))).scalar_one_or_none()
    if not verify_secret(user.password_hash if user and user.is_active else None, pin):
        raise AuthenticationFailed(_("Wrong member number or PIN."))
    return user


async def start_session(session: AsyncSession, *, user: User, max_hours: int) -> str:
    """A fresh random session id (never reuse one from before login); returns the cookie value."""
    raw = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(WebSession(id=token_digest(raw), user_id=user.id, created_at=now, last_seen_at=now,
                           expires_at=now + dt.timedelta(hours=max_hours)))
    await audit.record(session, action="session.start", actor=user, target_type="user", target_id=user.id)
    await session.flush()
    return raw


async def resolve_session(session: AsyncSession, raw: str, *, idle_minutes: int) -> tuple[User | None, str | None]:
    """Read-only look-up of a session: (user or None, what the caller must write: "expired", "touch" or None).

    Reads run without the write lock; the rare writes (ending an expired session,
    sliding the inactivity timer once a minute) go through `settle_session`.
    """
    digest = token_digest(raw)
    row = (await session.execute(select(WebSession).where(WebSession.id == digest))).scalar_one_or_none()
    if row is None:
        return None, None
    now = utcnow()
    if now >= row.expires_at or now - row.last_seen_at > dt.timedelta(minutes=idle_minutes):
        return None, "expired"
    user = await session.get(User, row.user_id)
    if user is None or not user.is_active:
        return None, None
    return user, "touch" if now - row.last_seen_at > SESSION_TOUCH_EVERY else None


async def settle_session(session: AsyncSession, raw: str, action: str) -> None:
    digest = token_digest(raw)
    if action == "expired":
        await session.execute(delete(WebSession).where(WebSession.id == digest))
    elif action == "touch":
        await session.execute(update(WebSession).where(WebSession.id == digest).values(last_seen_at=utcnow()))


async def end_session(session: AsyncSession, raw: str) -> None:
    await session.execute(delete(WebSession).where(WebSession.id == token_digest(raw)))


async def end_all_sessions(session: AsyncSession, *, user: User, actor) -> int:
    """End every session and revoke every API token of `user` (a seized phone)."""
    count = (await session.execute(
        select(func.count()).select_from(WebSession).where(WebSession.user_id == user.id))).scalar_one()
    await session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    await session.execute(update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                          .values(revoked_at=utcnow()))
    await audit.record(session, action="session.end_all", actor=actor, target_type="user", target_id=user.id,
                       detail={"sessions": count})
    return count


TOKEN_PREFIX = "union_"


async def create_token(session: AsyncSession, *, user: User, label: str = "", actor=None) -> str:
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, digest=token_digest(raw), label=label))
    await audit.record(session, action="token.create", actor=actor, target_type="user", target_id=user.id)
    await session.flush()
    return raw


async def resolve_token(session: AsyncSession, raw: str) -> User | None:
    row = (await session.execute(select(ApiToken).where(
        ApiToken.digest == token_digest(raw), ApiToken.revoked_at.is_(None)))).scalar_one_or_none()
    if row is None:
        return None
    user = await session.get(User, row.user_id)
    return user if user and user.is_active else None


async def get_user(session: AsyncSession, username: str) -> User:
    user = (await session.execute(select(User).where(User.username == username.strip().lower()))).scalar_one_or_none()
    if user is None:
        raise NotFound(_("No such user."), field="username")
    return user
