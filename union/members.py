"""Members and branches: joining (through staff or self-service), member
numbers, encrypted sensitive fields, phone look-up by keyed hash, and staff
search limited to the branches the policy lets them see."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from union import audit
from union.crypto import Vault, hash_secret, normalise_phone
from union.errors import Conflict, Forbidden, InvalidInput, NotFound
from union.i18n import LANGUAGES, SPOKEN_LANGUAGES, _
from union.models import Branch, Member, Role, RoleGrant, User
from union.policy import Principal, can_enrol_in, can_see_member, visible_branches


@dataclass
class NewMember:
    working_name: str
    branch_code: str
    language: str
    phone: str | None = None
    legal_name: str | None = None
    date_of_birth: str | None = None  # YYYY-MM-DD
    nominee: str | None = None
    pin: str | None = None


async def branch_by_code(session: AsyncSession, code: str) -> Branch:
    branch = (await session.execute(select(Branch).where(Branch.code == (code or "").strip().upper()))).scalar_one_or_none()
    if branch is None:
        raise NotFound(_("Unknown branch."), field="branch")
    return branch


async def list_branches(session: AsyncSession) -> list[Branch]:
    return list((await session.execute(select(Branch).order_by(Branch.name))).scalars())


def _clean(data: NewMember) -> NewMember:
    name = " ".join((data.working_name or "").split())
    if not 1 <= len(name) <= 80:
        raise InvalidInput(_("Please give a working name of 1 to 80 characters."), field="working_name")
    if data.language not in SPOKEN_LANGUAGES:
        raise InvalidInput(_("Please choose a language."), field="language")
    phone = None
    if data.phone and data.phone.strip():
        try:
            phone = normalise_phone(data.phone)
        except ValueError:
            raise InvalidInput(_("That does not look like a phone number."), field="phone") from None
    dob = (data.date_of_birth or "").strip() or None
    if dob:
        try:
            born = dt.date.fromisoformat(dob)
        except ValueError:
            raise InvalidInput(_("Please give the date of birth as YYYY-MM-DD."), field="date_of_birth") from None
        if not dt.date(1900, 1, 1) <= born <= dt.date.today():
            raise InvalidInput(_("Please give the date of birth as YYYY-MM-DD."), field="date_of_birth")
        dob = born.isoformat()  # one stored form, whatever ISO variant was sent (19900417, 1990-W16-2)
    pin = (data.pin or "").strip() or None
    if pin and not (pin.isdigit() and 4 <= len(pin) <= 8):
        raise InvalidInput(_("A PIN is 4 to 8 digits."), field="pin")
    legal = " ".join((data.legal_name or "").split())[:120] or None
    nominee = " ".join((data.nominee or "").split())[:120] or None
    return NewMember(working_name=name, branch_code=data.branch_code, language=data.language, phone=phone,
                     legal_name=legal, date_of_birth=dob, nominee=nominee, pin=pin)


async def _next_member_no(session: AsyncSession, branch: Branch) -> str:
    # A conditional increment: two enrolments at once never get the same number.
    seq = (await session.execute(
        update(Branch).where(Branch.id == branch.id)
        .values(next_member_seq=Branch.next_member_seq + 1)
        .returning(Branch.next_member_seq))).scalar_one()
    return f"{branch.code}-{seq:05d}"


async def enrol(session: AsyncSession, *, data: NewMember, vault: Vault, phone_hash, actor: Principal | None,
                today: dt.date | None = None, pin_hash: str | None = None) -> Member:
    """Create a member (and, with a PIN, the member's login). actor None = self-service join."""
    data = _clean(data)
    branch = await branch_by_code(session, data.branch_code)
    if actor is not None and not can_enrol_in(actor, branch.id):
        raise Forbidden(_("You may not enrol members in that branch."), field="branch")
    digest = phone_hash(data.phone) if data.phone else None
    if digest and (await session.execute(select(Member.id).where(Member.phone_hash == digest))).first():
        raise Conflict(_("A member with this phone number already exists."), field="phone")
    member = Member(
        member_no=await _next_member_no(session, branch),
        working_name=data.working_name,
        branch_id=branch.id,
        language=data.language,
        phone_hash=digest,
        phone_enc=vault.encrypt(data.phone),
        legal_name_enc=vault.encrypt(data.legal_name),
        date_of_birth_enc=vault.encrypt(data.date_of_birth),
        nominee_enc=vault.encrypt(data.nominee),
        joined_on=today or dt.date.today(),
    )
    session.add(member)
    try:
        await session.flush()
    except IntegrityError:
        # Another enrolment with the same phone committed between our check and our insert.
        raise Conflict(_("A member with this phone number already exists."), field="phone") from None
    if data.pin or pin_hash:
        user = User(username=member.member_no.lower(), display_name=member.working_name,
                    password_hash=pin_hash or hash_secret(data.pin), member_id=member.id,
                    language=data.language if data.language in LANGUAGES else None)
        session.add(user)
        await session.flush()
        session.add(RoleGrant(user_id=user.id, role=Role.member))
        await session.flush()
    await audit.record(session, action="member.enrol", actor=getattr(actor, "user", None), target_type="member",
                       target_id=member.member_no,
                       detail={"branch": branch.code, "self_service": actor is None,
                               "fields": sorted(k for k in ("phone", "legal_name", "date_of_birth", "nominee")
                                                if getattr(data, k))})
    return member


async def get_member(session: AsyncSession, *, member_no: str, principal: Principal | None) -> Member:
    """A member the principal may see. Unknown and not-allowed look the same (404) to outsiders."""
    member = (await session.execute(
        select(Member).where(Member.member_no == (member_no or "").strip().upper()))).scalar_one_or_none()
    if member is None or not can_see_member(principal, member):
        raise NotFound(_("No member with that number."), field="member_no")
    return member


@dataclass
class SensitiveFields:
    phone: str | None
    legal_name: str | None
    date_of_birth: str | None
    nominee: str | None


async def read_sensitive(session: AsyncSession, *, member: Member, vault: Vault, principal: Principal) -> SensitiveFields:
    """Decrypt a member's sensitive fields; every such read goes to the audit log."""
    if not can_see_member(principal, member):
        raise NotFound(_("No member with that number."), field="member_no")
    await audit.record(session, action="member.read_sensitive", actor=principal.user, target_type="member",
                       target_id=member.member_no)
    return SensitiveFields(phone=vault.decrypt(member.phone_enc), legal_name=vault.decrypt(member.legal_name_enc),
                           date_of_birth=vault.decrypt(member.date_of_birth_enc),
                           nominee=vault.decrypt(member.nominee_enc))


async def search(session: AsyncSession, *, query: str, principal: Principal, phone_hash, limit: int = 50) -> list[Member]:
    """By member number, phone or working name, within the branches the principal may see."""
    query = (query or "").strip()
    if not query:
        return []
    conditions = [Member.member_no == query.upper(), func.lower(Member.working_name).contains(query.lower(), autoescape=True)]
    try:
        conditions.append(Member.phone_hash == phone_hash(normalise_phone(query)))
    except ValueError:
        pass
    stmt = select(Member).where(or_(*conditions)).order_by(Member.member_no).limit(limit)
    branches = visible_branches(principal)
    if branches is not None:
        stmt = stmt.where(Member.branch_id.in_(branches or {-1}))
    found = list((await session.execute(stmt)).scalars())
    await audit.record(session, action="member.search", actor=principal.user, target_type="member",
                       detail={"results": len(found)})
    return found


async def branch_codes(session: AsyncSession) -> dict[int, str]:
    return dict((await session.execute(select(Branch.id, Branch.code))).all())


async def member_user(session: AsyncSession, member: Member) -> User | None:
    return (await session.execute(select(User).where(User.member_id == member.id))).scalar_one_or_none()
