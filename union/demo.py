"""Realistic demo data: branches at the real coordinates of Karnataka district
headquarters, members with plausible working names and a realistic mix of
languages, and a staff user for every role. Later capabilities add their own
demo data through `DEMO_STEPS`."""

from __future__ import annotations

import datetime as dt
import os
import random
import secrets

from sqlalchemy import func, select

from union import accounts
from union import members as member_service
from union.crypto import hash_secret
from union.models import Branch, Member, Role

# District headquarters (code, name, lat, lon).
BRANCHES = [
    ("BLR", "Bengaluru", 12.9716, 77.5946), ("MYS", "Mysuru", 12.2958, 76.6394),
    ("BGM", "Belagavi", 15.8497, 74.4977), ("BLY", "Ballari", 15.1394, 76.9214),
    ("KLB", "Kalaburagi", 17.3297, 76.8343), ("DWD", "Dharwad", 15.4589, 75.0078),
    ("MNG", "Mangaluru", 12.9141, 74.8560), ("SMG", "Shivamogga", 13.9299, 75.5681),
    ("TMK", "Tumakuru", 13.3379, 77.1173), ("VJP", "Vijayapura", 16.8302, 75.7100),
    ("DVG", "Davanagere", 14.4644, 75.9218), ("RCR", "Raichur", 16.2120, 77.3439),
    ("HSN", "Hassan", 13.0068, 76.0996), ("UDP", "Udupi", 13.3409, 74.7421),
    ("CTA", "Chitradurga", 14.2251, 76.3980), ("BDR", "Bidar", 17.9104, 77.5199),
]
# Bengaluru is by far the largest branch; the rest are weighted roughly by town size.
BRANCH_WEIGHTS = [30, 8, 7, 6, 6, 7, 6, 5, 5, 4, 5, 4, 3, 3, 3, 3]

NAMES = {
    "kn": ["Lakshmi", "Shanthi", "Renuka", "Yellamma", "Savitha", "Kaveri", "Manjula", "Pushpa", "Gowri", "Bhagya",
           "Rekha", "Geetha", "Padma", "Roopa", "Latha", "Shobha", "Nirmala", "Jyothi", "Kamala", "Sharada", "Hema",
           "Vani", "Durga", "Chandrika", "Akkai", "Mallika", "Chandini", "Savithri", "Girija", "Netra"],
    "te": ["Sujatha", "Padmavathi", "Radha", "Aruna", "Swapna", "Anitha", "Kalyani", "Sirisha", "Bhavani", "Rama"],
    "ta": ["Selvi", "Meena", "Valli", "Anbu", "Kala", "Malar", "Kavitha", "Revathi", "Thenmozhi", "Amudha"],
    "hi": ["Pooja", "Rani", "Sunita", "Kajal", "Neha", "Priya", "Sapna", "Rekha", "Komal", "Guddi"],
    "ur": ["Shabana", "Nazia", "Rukhsar", "Farzana", "Salma", "Parveen", "Shaheen", "Reshma", "Noor", "Ayesha"],
    "mr": ["Sangeeta", "Vandana", "Sushma", "Manisha", "Kavita", "Surekha", "Shalini", "Mangal", "Asha", "Lata"],
    "en": ["Rosy", "Mary", "Jenny", "Stella", "Daisy", "Lily", "Ruby", "Sweety"],
}
LANGUAGE_WEIGHTS = {"kn": 46, "te": 14, "ta": 10, "hi": 10, "ur": 10, "mr": 7, "en": 3}
# Bengaluru and the border districts have more Telugu, Tamil, Marathi and Urdu speakers.
INITIALS = "ABCDGHKLMNPRSTVY"

STAFF = [
    ("collector", [Role.collector], "BLR"),
    ("collector2", [Role.collector], "MYS"),
    ("welfare", [Role.welfare_officer], "BLR"),
    ("dispatcher", [Role.dispatcher], None),
    ("responder", [Role.crisis_responder], "BLR"),
    ("treasurer", [Role.treasurer], None),
    ("office", [Role.office_bearer], None),
]
DEMO_PIN = "2468"

# Later capabilities append async callables (services, rng, say) that add their own demo data.
DEMO_STEPS: list = []


def _credentials_file(services):
    return services.settings.data_dir / "demo-credentials.txt"


def _print_credentials(services, say) -> None:
    path = _credentials_file(services)
    if path.exists():
        say("Demo logins (also in %s):" % path)
        for line in path.read_text().splitlines():
            say("  " + line)


async def load_demo(services, *, only_if_empty: bool, say=print, members: int = 2000, seed: int = 2006) -> bool:
    async with services.sessions() as session:
        existing = (await session.execute(select(func.count()).select_from(Member))).scalar_one()
    if existing and only_if_empty:
        say(f"Database already has {existing} members; demo data not loaded.")
        _print_credentials(services, say)
        return False
    rng = random.Random(seed)
    today = dt.date.today()
    async with services.sessions() as session:
        have = set((await session.execute(select(Branch.code))).scalars())
        for code, name, lat, lon in BRANCHES:
            if code not in have:
                session.add(Branch(code=code, name=name, lat=lat, lon=lon))
        await session.commit()
    say(f"Branches: {len(BRANCHES)} district headquarters.")

    lines = []
    async with services.sessions() as session:
        for suffix, roles, branch in STAFF:
            username = f"demo-{suffix}"
            if (await session.execute(select(func.count()).select_from(accounts.User)
                                      .where(accounts.User.username == username))).scalar_one():
                continue
            password = secrets.token_urlsafe(9)
            await accounts.create_user(session, username=username, password=password, roles=[str(r) for r in roles],
                                       branch_code=branch, display_name=f"Demo {suffix.replace('2', ' 2')}")
            lines.append(f"{username:<16} {password:<14} {', '.join(roles)}{' in ' + branch if branch else ''}")
        await session.commit()

    pin_hash = hash_secret(DEMO_PIN)  # one hash for every demo member login: argon2 per member would take minutes
    codes = [b[0] for b in BRANCHES]
    langs, lang_w = list(LANGUAGE_WEIGHTS), list(LANGUAGE_WEIGHTS.values())
    first_member = None
    batch = 200
    for start in range(0, members, batch):
        async with services.sessions() as session:
            for i in range(start, min(members, start + batch)):
                lang = rng.choices(langs, lang_w)[0]
                name = f"{rng.choice(NAMES[lang])} {rng.choice(INITIALS)}."
                phone = f"9{rng.randrange(10**8, 10**9):09d}" if rng.random() < 0.6 else None
                joined = today - dt.timedelta(days=rng.randrange(0, 8 * 365))
                data = member_service.NewMember(working_name=name, branch_code=rng.choices(codes, BRANCH_WEIGHTS)[0],
                                         language=lang, phone=phone)
                try:
                    member = await member_service.enrol(session, data=data, vault=services.vault, phone_hash=services.phone_hash,
                                                 actor=None, today=joined,
                                                 pin_hash=pin_hash if i % 10 == 0 else None)
                except member_service.Conflict:
                    continue  # a random phone collided; skip this one
                if first_member is None:
                    first_member = member.member_no
            await session.commit()
        say(f"Members: {min(members, start + batch)}/{members}")
    if first_member:
        lines.append(f"member {first_member:<9} PIN {DEMO_PIN:<10} member (every 10th demo member has this PIN)")

    if lines:
        path = _credentials_file(services)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write("\n".join(lines) + "\n")

    for step in DEMO_STEPS:
        await step(services, rng, say)
    _print_credentials(services, say)
    return True
