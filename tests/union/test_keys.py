"""Key rotation end to end: `union keys rotate` adds a new primary key to the key
file and re-encrypts every sensitive column under it; `--remove-old` leaves only
the newest key, and then the old keys can read nothing."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from tests.conftest import run_cli
from union import keys, members
from union.crypto import Vault
from union.models import SENSITIVE_COLUMNS, Member
from union.services import build_services
from union.settings import Settings

PEOPLE = [
    {"working_name": "Asha", "phone": "9845000001", "legal_name": "Asha Kumari Gowda", "date_of_birth": "1988-02-03",
     "nominee": "Ravi Gowda"},
    {"working_name": "Bindu", "phone": "9845000002", "legal_name": "Bindu Shree", "date_of_birth": None,
     "nominee": None},
    {"working_name": "Chandra", "phone": None, "legal_name": None, "date_of_birth": "1979-11-30",
     "nominee": "Meena Chandra"},
    {"working_name": "Devi", "phone": None, "legal_name": None, "date_of_birth": None, "nominee": None},
]
FIELDS = ["phone", "legal_name", "date_of_birth", "nominee"]


def cli_env(settings: Settings, encryption_keys: str = "") -> dict:
    return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "UNION_DATABASE_URL": settings.database_url,
            "UNION_DATA_DIR": str(settings.data_dir), "UNION_SECRET_KEY": settings.secret_key,
            "UNION_HASH_KEY": settings.hash_key, "UNION_ENCRYPTION_KEYS": encryption_keys,
            "UNION_REDIS_URL": "", "UNION_LOG_LEVEL": "WARNING"}


def expected(person: dict) -> dict:
    out = {k: person[k] for k in FIELDS}
    if out["phone"]:
        out["phone"] = "+91" + out["phone"]
    return out


async def enrol_people(services) -> dict[str, dict]:
    made = {}
    async with services.sessions() as db:
        for p in PEOPLE:
            member = await members.enrol(db, data=members.NewMember(branch_code="BLR", language="kn", **p),
                                         vault=services.vault, phone_hash=services.phone_hash, actor=None)
            made[member.member_no] = expected(p)
        await db.commit()
    return made


async def stored_tokens(services) -> dict[str, dict]:
    async with services.sessions() as db:
        rows = (await db.execute(select(Member))).scalars().all()
    return {m.member_no: {f: getattr(m, f + "_enc") for f in FIELDS} for m in rows}


def decrypt_all(vault: Vault, tokens: dict[str, dict]) -> dict[str, dict]:
    return {no: {f: vault.decrypt(t) for f, t in fields.items()} for no, fields in tokens.items()}


def read_key_file(settings: Settings) -> list[str]:
    return [line for line in settings.encryption_keys_file.read_text().splitlines() if line.strip()]


@pytest.fixture
async def file_settings(database_url, tmp_path) -> Settings:
    """Settings WITHOUT encryption keys in the environment: the key file in the data folder is used."""
    return Settings(_env_file=None, data_dir=tmp_path / "keyvar", database_url=database_url, redis_url=None,
                    secret_key="test-secret", hash_key="test-hash-key", encryption_keys=None)


@pytest.fixture
async def file_services(file_settings):
    svc = await build_services(file_settings, jobs_backend="none")
    async with svc.sessions() as db:
        db.add(members.Branch(code="BLR", name="Bengaluru", lat=12.97, lon=77.59))
        await db.commit()
    yield svc
    await svc.close()


def test_every_encrypted_column_is_listed_for_rotation():
    enc = {(model.__tablename__, c.name) for model, _ in SENSITIVE_COLUMNS for c in model.__table__.columns
           if c.name.endswith("_enc")}
    listed = {(model.__tablename__, column) for model, column in SENSITIVE_COLUMNS}
    assert enc <= listed


async def test_rotate_with_the_key_file_then_remove_old(file_settings, file_services):
    settings, services = file_settings, file_services
    first = read_key_file(settings)
    assert len(first) == 1
    assert stat.S_IMODE(settings.encryption_keys_file.stat().st_mode) == 0o600
    originals = await enrol_people(services)
    before = await stored_tokens(services)
    values = sum(1 for fields in before.values() for t in fields.values() if t is not None)
    assert decrypt_all(Vault(first), before) == originals

    r = run_cli("keys", "rotate", env=cli_env(settings))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"New primary key written to {settings.encryption_keys_file}." in r.stdout
    assert f"Re-encrypted {values} values under the primary key." in r.stdout
    assert "Old keys are kept for now" in r.stdout
    second = read_key_file(settings)
    assert len(second) == 2 and second[1] == first[0] and second[0] != first[0]
    assert stat.S_IMODE(settings.encryption_keys_file.stat().st_mode) == 0o600
    rotated = await stored_tokens(services)
    for no, fields in rotated.items():
        for f, token in fields.items():
            assert (token is None) == (before[no][f] is None)
            assert token is None or token != before[no][f]
    # Already readable with the new key alone.
    assert decrypt_all(Vault(second[:1]), rotated) == originals

    r = run_cli("keys", "rotate", "--remove-old", env=cli_env(settings))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Old keys removed; only the primary key remains." in r.stdout
    remaining = read_key_file(settings)
    assert len(remaining) == 1 and remaining[0] not in first + second
    final = await stored_tokens(services)
    assert decrypt_all(Vault(remaining), final) == originals
    for old in (first[0], second[0]):
        for fields in final.values():
            for token in fields.values():
                if token is not None:
                    with pytest.raises(ValueError, match="cannot decrypt"):
                        Vault([old]).decrypt(token)

    # A freshly started app reads the key file and shows the original values; phones are still found.
    fresh = await build_services(Settings(_env_file=None, data_dir=settings.data_dir, database_url=settings.database_url,
                                          secret_key="test-secret", hash_key="test-hash-key"), jobs_backend="none")
    try:
        assert fresh.vault.keys == remaining
        async with fresh.sessions() as db:
            found = await db.execute(select(Member.member_no).where(
                Member.phone_hash == fresh.phone_hash("+919845000001")))
            assert found.scalar_one() == "BLR-00001"
    finally:
        await fresh.close()


async def test_rotate_with_keys_in_the_environment(services, settings, branches):
    """With UNION_ENCRYPTION_KEYS the operator puts the new key first, then runs --reencrypt-only."""
    originals = await enrol_people(services)
    old_key = settings.encryption_keys
    before = await stored_tokens(services)

    r = run_cli("keys", "rotate", env=cli_env(settings, old_key))
    assert r.returncode == 0, r.stdout + r.stderr
    new_key = r.stdout.strip().splitlines()[-1]
    Fernet(new_key.encode())  # a valid key
    assert new_key != old_key
    assert await stored_tokens(services) == before  # nothing re-encrypted yet
    assert not settings.encryption_keys_file.exists()  # and no key file written

    r = run_cli("keys", "rotate", "--reencrypt-only", "--remove-old", env=cli_env(settings, f"{new_key},{old_key}"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Remove the old keys from UNION_ENCRYPTION_KEYS yourself" in r.stdout
    after = await stored_tokens(services)
    assert decrypt_all(Vault([new_key]), after) == originals
    with pytest.raises(ValueError):
        decrypt_all(Vault([old_key]), after)


async def test_reencrypt_all_works_in_batches(services, branches):
    originals = await enrol_people(services)
    new = keys.new_key()
    vault = Vault([new, *services.vault.keys])
    changed = await keys.reencrypt_all(services.sessions, vault, batch=1)
    assert changed == sum(1 for fields in originals.values() for v in fields.values() if v is not None)
    assert decrypt_all(Vault([new]), await stored_tokens(services)) == originals
