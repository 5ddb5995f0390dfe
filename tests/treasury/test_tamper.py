"""Tamper evidence: `union audit verify` and the treasurer's page find and name an entry
changed directly in the database; a signed month-end checkpoint proves nothing up to
it changed, and catches a past that was altered and re-hashed (heads included), which
the chain walk alone cannot; a forged or malformed checkpoint is refused clearly."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select

from dues import ledger
from dues.models import JournalEntry
from tests.conftest import run_cli
from tests.helpers import PASSWORD
from tests.dues.conftest import as_attacker
from tests.union.test_accounts import cli_env
from treasury import checkpoint, periods
from treasury.errors import CheckpointMismatch


async def close_april(services, people) -> bytes:
    async with services.sessions() as db:
        _period, cp = await periods.close_month(db, month="2025-04", actor=people.treasurer,
                                                today=dt.date(2025, 5, 2), note="test", confirm=True,
                                                key=checkpoint.signing_key(services.settings))
        await db.commit()
    return checkpoint.checkpoint_file(cp)


async def test_cli_finds_and_names_a_changed_entry(services, settings, april):
    r = run_cli("audit", "verify", env=cli_env(settings))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Ledger intact: 9 entries checked." in r.stdout
    victim = april.entries["refund"]
    await as_attacker(services, ("UPDATE posting SET amount_minor = amount_minor / 10 WHERE entry_id = :id",
                                 {"id": victim.id}))
    r = run_cli("audit", "verify", env=cli_env(settings))
    assert r.returncode == 1
    assert f"Ledger BROKEN at entry {victim.id} (seq {victim.seq})" in r.stdout


async def test_checkpoint_verifies_and_catches_a_rehashed_past(services, settings, people, tmp_path):
    entries = []
    for i in range(3):
        async with services.sessions() as db:
            await ledger.ensure_accounts(db)
            entries.append(await ledger.post_entry(
                db, key=f"k{i}", kind="transfer", lines=[("bank", ledger.Money(100 + i)),
                                                         ("general_fund", ledger.Money(-100 - i))],
                description=f"entry {i}", effective_date=dt.date(2025, 4, 10)))
            await db.commit()
    document = await close_april(services, people)
    path = tmp_path / "april.json"
    path.write_bytes(document)
    body = json.loads(document)
    assert body["checkpoint"]["ledger"] == {"seq": 3, "hash": entries[-1].hash}
    assert body["checkpoint"]["month"] == "2025-04" and body["checkpoint"]["made_by"] == "tara"
    assert oct((settings.data_dir / "checkpoint_ed25519.key").stat().st_mode & 0o777) == "0o600"

    r = run_cli("audit", "verify", "--checkpoint", str(path), env=cli_env(settings))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Checkpoint of 2025-04 matches" in r.stdout

    # The attacker rewrites the last entry before the checkpoint and re-hashes it, and the head:
    # the chain walk alone sees an intact ledger.
    victim = entries[-1]
    forged_content = ledger.content_hash(key=victim.idempotency_key, kind=victim.kind, description="entry 2 (edited)",
                                         effective_date=victim.effective_date, created_by_user_id=None,
                                         member_id=None, reverses_entry_id=None,
                                         lines=[("bank", "INR", 102), ("general_fund", "INR", -102)])
    forged = ledger.chain_hash(prev_hash=victim.prev_hash, content_hash=forged_content, seq=victim.seq,
                               entry_id=victim.id, posted_at=victim.posted_at)
    await as_attacker(services,
                      ("UPDATE journal_entry SET description = 'entry 2 (edited)', content_hash = :c, hash = :h "
                       "WHERE id = :id", {"c": forged_content, "h": forged, "id": victim.id}),
                      ("UPDATE ledger_head SET last_hash = :h", {"h": forged}))
    async with services.reader() as db:
        assert (await ledger.verify_ledger_chain(db)).intact
        with pytest.raises(CheckpointMismatch) as refused:
            await checkpoint.verify_checkpoint(db, document, key=checkpoint.signing_key(settings))
    assert f"Ledger entry 3 ({victim.id}) no longer has the hash" in refused.value.message

    r = run_cli("audit", "verify", "--checkpoint", str(path), env=cli_env(settings))
    assert r.returncode == 1
    assert "Checkpoint does NOT match: Ledger entry 3" in r.stdout


@pytest.mark.parametrize("change,message", [
    (lambda d: d["checkpoint"]["ledger"].update(seq=1), "signature does not match"),
    (lambda d: d.update(signature="AAAA"), "signature does not match"),
    (lambda d: d["checkpoint"].update(public_key="bm90IG91ciBrZXk="), "not signed with this union's key"),
    (lambda d: d.pop("signature"), "not a checkpoint file"),
    (lambda d: d["checkpoint"].update(format="other"), "not a checkpoint file"),
])
async def test_a_forged_or_malformed_checkpoint_is_refused(services, settings, people, change, message):
    document = json.loads(await close_april(services, people))
    change(document)
    async with services.reader() as db:
        with pytest.raises(CheckpointMismatch) as refused:
            await checkpoint.verify_checkpoint(db, json.dumps(document), key=checkpoint.signing_key(settings))
    assert message in refused.value.message


async def test_the_treasurers_page_names_a_changed_entry(services, april, web):
    await web.login("tara", PASSWORD)
    r = await web.get("/treasury/verify")
    assert r.status_code == 200 and "Ledger intact: 9 entries checked." in r.text
    victim = april.entries["payout"]
    await as_attacker(services, ("UPDATE journal_entry SET description = 'nothing to see' WHERE id = :id",
                                 {"id": victim.id}))
    r = await web.get("/treasury/verify")
    assert f"Ledger BROKEN at entry {victim.id} (seq {victim.seq})" in r.text
    async with services.reader() as db:
        assert (await db.execute(select(JournalEntry.description).where(JournalEntry.id == victim.id))).scalar() \
            == "nothing to see"


async def test_checkpoint_download_and_upload_on_the_page(services, people, web):
    document = await close_april(services, people)
    await web.login("tara", PASSWORD)
    r = await web.get("/treasury/periods/2025-04/checkpoint")
    assert r.status_code == 200 and r.headers["content-disposition"].endswith('"union-checkpoint-2025-04.json"')
    assert json.loads(r.content) == json.loads(document)
    await web.get("/treasury/verify")
    r = await web.post("/treasury/verify", files={"checkpoint": ("april.json", r.content, "application/json")})
    assert r.status_code == 200 and "The checkpoint of 2025-04 matches" in r.text
    r = await web.post("/treasury/verify", files={"checkpoint": ("x.json", b"{not json", "application/json")})
    assert r.status_code == 422 and "This is not a checkpoint file." in r.text
    assert (await web.get("/treasury/periods/2025-03/checkpoint")).status_code == 404
