"""The `union` command: serve, worker, migrate, demo, users, tokens, audit, keys."""

from __future__ import annotations

import argparse
import asyncio
import os
import getpass
import sys

from union.settings import Settings


def _say(*args) -> None:
    print(*args, flush=True)


async def _with_services(settings: Settings, fn):
    from union.services import build_services

    services = await build_services(settings, jobs_backend="none")
    try:
        return await fn(services)
    finally:
        await services.close()


def _in_one_transaction(settings: Settings, work) -> tuple[bool, object]:
    """Run `await work(session)` in one committed write transaction. A refusal (UnionError) is
    printed as `error: ...` and nothing is committed: (False, None)."""
    from union.errors import UnionError

    async def run(services):
        async with services.sessions() as session:
            result = await work(session)
            await session.commit()
            return result

    try:
        return True, asyncio.run(_with_services(settings, run))
    except UnionError as exc:
        _say(f"error: {exc.message}")
        return False, None


def cmd_migrate(settings: Settings, args) -> int:
    from union.db import migrate

    _say("Applying migrations…")
    migrate(settings.resolved_database_url)
    _say("Database is up to date.")
    return 0


def cmd_serve(settings: Settings, args) -> int:
    import uvicorn

    from union.app import create_app

    cmd_migrate(settings, args)
    if args.demo and not settings.stripe_api_key:
        # Card payments through the built-in Stripe stand-in, every page marked TEST MODE (processes started
        # by uvicorn read the environment).
        settings.stripe_test_mode = True
        os.environ["UNION_STRIPE_TEST_MODE"] = "1"
    if args.demo:
        from union.demo import load_demo

        asyncio.run(_with_services(settings, lambda s: load_demo(s, only_if_empty=True, say=_say)))
    _say(f"Serving on http://{args.host}:{args.port}  (jobs: {settings.jobs_mode}, processes: {args.workers})")
    if args.workers > 1:
        if not settings.redis_url:
            _say("warning: several processes without UNION_REDIS_URL keep rate limits per process; use Redis in production.")
        # Each process builds its own app (and reads the same settings from the environment).
        uvicorn.run("union.app:create_app", factory=True, workers=args.workers, host=args.host, port=args.port,
                    log_level=settings.log_level.lower(), proxy_headers=True, server_header=False)
    else:
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=settings.log_level.lower(),
                    proxy_headers=True, server_header=False)
    return 0


def cmd_worker(settings: Settings, args) -> int:
    if not settings.redis_url:
        _say("union worker needs UNION_REDIS_URL (without Redis, `union serve` runs jobs itself).")
        return 2
    from arq.worker import Worker

    from workers.arq_worker import worker_settings

    kwargs = worker_settings(settings)
    if args.burst:
        # The start-up sweep still runs; a periodic sweep would keep a burst worker alive.
        kwargs["cron_jobs"] = []
    worker = Worker(**kwargs, burst=args.burst)
    worker.run()
    return 0


def cmd_demo(settings: Settings, args) -> int:
    from union.db import migrate
    from union.demo import load_demo

    migrate(settings.resolved_database_url)
    asyncio.run(_with_services(settings, lambda s: load_demo(s, only_if_empty=False, say=_say, members=args.members)))
    return 0


def cmd_users_create(settings: Settings, args) -> int:
    from union import accounts

    password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass("Password: ")

    ok, user = _in_one_transaction(settings, lambda session: accounts.create_user(
        session, username=args.username, password=password, roles=args.role, branch_code=args.branch))
    if not ok:
        return 1
    _say(f"Created user {user.username} with roles {', '.join(args.role)}.")
    return 0


def cmd_dues_rate(settings: Settings, args) -> int:
    import datetime as dt

    from dues import services as dues

    try:
        start = dt.date.fromisoformat(args.starting)
    except ValueError:
        _say("error: --from must be a date YYYY-MM-DD (the first day of a month)")
        return 1
    ok, rate = _in_one_transaction(settings, lambda session: dues.change_rate(
        session, plan_code=args.plan, monthly_minor=args.monthly_minor, effective_from=start,
        today=dt.date.today(), currency=settings.default_currency))
    if not ok:
        return 1
    _say(f"Plan {args.plan}: {rate.monthly_minor} {rate.currency} minor units a month from {rate.effective_from}.")
    return 0


def cmd_tokens_create(settings: Settings, args) -> int:
    from union import accounts

    async def create(session):
        user = await accounts.get_user(session, args.username)
        return await accounts.create_token(session, user=user, label=args.label or "")

    ok, raw = _in_one_transaction(settings, create)
    if not ok:
        return 1
    print(raw)
    return 0


def cmd_audit_verify(settings: Settings, args) -> int:
    # Re-hashed by the database on PostgreSQL, walked in Python otherwise (and whenever anything is off).
    from treasury.chainsql import verify_ledger as verify_ledger_chain
    from union.audit import verify_chain

    async def run(services):
        async with services.reader() as session:
            books = await verify_ledger_chain(session, progress=lambda n: _say(f"  checked {n} ledger entries…"))
        async with services.sessions() as session:
            log = await verify_chain(session, progress=lambda n: _say(f"  checked {n} audit events…"))
        return books, log

    if getattr(args, "checkpoint", None):
        return _verify_checkpoint(settings, args.checkpoint)
    books, log = asyncio.run(_with_services(settings, run))
    if books.intact:
        _say(f"Ledger intact: {books.checked} entries checked.")
    else:
        _say(f"Ledger BROKEN at entry {books.broken_entry_id or '-'} (seq {books.broken_seq or '-'}): {books.reason}.")
    if log.intact:
        _say(f"Audit log intact: {log.checked} events checked.")
    else:
        _say(f"Audit log BROKEN at event {log.broken_id}: {log.reason}.")
    return 0 if books.intact and log.intact else 1


def _verify_checkpoint(settings: Settings, path: str) -> int:
    """`union audit verify --checkpoint FILE`: the chains, and a signed month-end checkpoint against them."""
    from treasury.checkpoint import signing_key, verify_checkpoint
    from union.errors import UnionError

    try:
        with open(path, "rb") as fh:
            data = fh.read(1_000_000)
    except OSError as exc:
        _say(f"error: cannot read {path}: {exc.strerror}")
        return 2

    async def run(services):
        async with services.reader() as session:
            return await verify_checkpoint(session, data, key=signing_key(settings),
                                           progress=lambda n: _say(f"  checked {n} ledger entries…"))

    try:
        report = asyncio.run(_with_services(settings, run))
    except UnionError as exc:
        _say(f"Checkpoint does NOT match: {exc.message}")
        return 1
    _say(f"Checkpoint of {report.month} matches: ledger up to entry seq {report.ledger_seq} and audit log up to "
         f"event {report.audit_id} are unchanged.")
    books, log = report.ledger, report.audit
    if books.intact:
        _say(f"Ledger intact: {books.checked} entries checked.")
    else:
        _say(f"Ledger BROKEN at entry {books.broken_entry_id or '-'} (seq {books.broken_seq or '-'}): {books.reason}.")
    if log.intact:
        _say(f"Audit log intact: {log.checked} events checked.")
    else:
        _say(f"Audit log BROKEN at event {log.broken_id}: {log.reason}.")
    return 0 if books.intact and log.intact else 1


def cmd_keys_rotate(settings: Settings, args) -> int:
    from union.crypto import Vault
    from union.keys import new_key, reencrypt_all, write_keys

    old = settings.load_encryption_keys()
    from_env = bool(settings.encryption_keys)
    keys = old if args.reencrypt_only else [new_key(), *old]
    vault = Vault(keys)
    if not from_env and not args.reencrypt_only:
        write_keys(settings.encryption_keys_file, keys)  # new key first, old ones still readable
        _say(f"New primary key written to {settings.encryption_keys_file}.")
    elif from_env and not args.reencrypt_only:
        _say("UNION_ENCRYPTION_KEYS is set: put this new key first in it, then run `union keys rotate --reencrypt-only`:")
        _say(keys[0])
        return 0

    async def run(services):
        return await reencrypt_all(services.sessions, vault,
                                   progress=lambda col, n: _say(f"  re-encrypted {n} values ({col})"))

    changed = asyncio.run(_with_services(settings, run))
    _say(f"Re-encrypted {changed} values under the primary key.")
    if args.remove_old:
        if from_env:
            _say("Remove the old keys from UNION_ENCRYPTION_KEYS yourself; only the first is needed now.")
        else:
            write_keys(settings.encryption_keys_file, keys[:1])
            _say("Old keys removed; only the primary key remains.")
    elif len(keys) > 1:
        _say("Old keys are kept for now; run again with --remove-old (or edit the key file) to drop them.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="union", description="Trade union membership and crisis response platform.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="migrate, then serve the web app")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--demo", action="store_true", help="load demo data first if the database is empty")
    p.add_argument("--workers", type=int, default=1, help="web processes (default 1)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="run the arq job worker (needs UNION_REDIS_URL)")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.set_defaults(func=cmd_worker)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

    p = sub.add_parser("demo", help="load realistic demo data")
    p.add_argument("--members", type=int, default=2000, help="how many demo members (default 2000)")
    p.set_defaults(func=cmd_demo)

    users = sub.add_parser("users", help="manage users").add_subparsers(dest="users_command", required=True)
    p = users.add_parser("create", help="create a user; the password is read from stdin")
    p.add_argument("--username", required=True)
    p.add_argument("--role", required=True, action="append",
                   choices=["member", "collector", "welfare_officer", "dispatcher", "crisis_responder",
                            "treasurer", "office_bearer"], help="repeat for several roles")
    p.add_argument("--branch", help="branch code that limits the roles (default: every branch)")
    p.set_defaults(func=cmd_users_create)

    tokens = sub.add_parser("tokens", help="API bearer tokens").add_subparsers(dest="tokens_command", required=True)
    p = tokens.add_parser("create", help="print a new API bearer token for a user (stored hashed)")
    p.add_argument("--username", required=True)
    p.add_argument("--label", default="")
    p.set_defaults(func=cmd_tokens_create)

    dues_cmd = sub.add_parser("dues", help="dues plans").add_subparsers(dest="dues_command", required=True)
    p = dues_cmd.add_parser("rate", help="set a plan's monthly amount from the first day of a coming month")
    p.add_argument("--plan", required=True, help="plan code, e.g. standard or concessional")
    p.add_argument("--monthly-minor", type=int, required=True, help="monthly amount in minor units (paise)")
    p.add_argument("--from", dest="starting", required=True, help="YYYY-MM-01, a coming month")
    p.set_defaults(func=cmd_dues_rate)

    audit = sub.add_parser("audit", help="tamper evidence").add_subparsers(dest="audit_command", required=True)
    p = audit.add_parser("verify", help="check the ledger's and the audit log's hash chains; exit 0 when intact")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="also check a signed month-end checkpoint (downloaded by the treasurer) against them")
    p.set_defaults(func=cmd_audit_verify)

    keys = sub.add_parser("keys", help="encryption keys").add_subparsers(dest="keys_command", required=True)
    p = keys.add_parser("rotate", help="add a new primary key and re-encrypt every sensitive field under it")
    p.add_argument("--remove-old", action="store_true", help="drop the old keys after re-encrypting")
    p.add_argument("--reencrypt-only", action="store_true", help="re-encrypt under the current first key, add none")
    p.set_defaults(func=cmd_keys_rotate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    import logging

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its per-plugin INFO lines drown the command's own output
    from sqlalchemy.exc import OperationalError, ProgrammingError

    try:
        return args.func(settings, args) or 0
    except (OperationalError, ProgrammingError) as exc:
        # A missing table means an unmigrated database (or a wrong UNION_DATABASE_URL): say so, not a traceback.
        text = str(exc.orig if getattr(exc, "orig", None) is not None else exc)
        if "no such table" in text or "does not exist" in text:
            _say(f"The database at UNION_DATABASE_URL is not set up ({text.splitlines()[0]}).")
            _say("Run `union migrate` first, or check UNION_DATABASE_URL.")
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
