"""Chain verification at streaming speed on PostgreSQL.

`dues.ledger.verify_ledger_chain` walks every entry through SQLAlchemy rows and
names the first one that does not fit; exact, but most of its time goes into row
machinery, not hashing. On PostgreSQL this module first runs a quick pass that
checks the same things straight from asyncpg, and hands over to that walk at the
first doubt:

- every entry's content hash and chain hash are recomputed from its stored
  columns and postings (the canonical JSON rebuilt by hand, see below);
- each entry's `prev_hash` is the hash of the entry before it, seqs run 1..head
  without a gap or a repeat, each entry has two or more postings balanced per
  currency;
- the last entry is the head (seq and hash), no entry lies beyond the head (or
  below seq 1), and every posting was counted against an entry (none orphaned).

No join and no aggregate in the database: entries are read in seq order from the
seq index, postings in id order from the primary key, and the two streams are
merged in Python. `post_entry` inserts an entry's postings while it holds the head
lock, so in an intact ledger the postings of entry n+1 come right after those of
entry n; a posting that is not where it should be is a doubt (the walk decides).

(Entry ids are unique by the primary key, so a run of postings naming an entry is
all of that entry's postings once every posting has been counted.)

A large chain (`PARALLEL_FROM` entries or more) is cut into seq ranges verified
at once by worker processes (`python -m treasury.chainsql`, one per range, at
most `WORKERS`), each reading its entries and its postings by COPY (text format:
cheaper to take apart than asyncpg's records) on two connections inside the
snapshot the head was read in (`pg_export_snapshot` on a coordinating connection
of our own; the session is not touched). Each range reports the prev_hash of its
first entry and the hash of its last, and the ranges are stitched here (the first
entry of range k must point at the last hash of range k-1). The postings are
split at the first posting of each range's first entry, so every posting lies in
exactly one range. Anything odd in that machinery (no processes, no connection,
no snapshot) runs the same pass in this process, on the session's connection;
the processes are killed on every way out (a doubt, an error, a cancellation).

Why "nothing wrong" can be trusted: the JSON text is built here by hand, with the
keys in sorted order, strings escaped by the json module's own encoder and the
lines sorted as `content_hash` sorts them, so it is what `json.dumps` gives for
the same values; and even if it ever differed, it is still a faithful (one value,
one text) JSON encoding of the *current* values, so a hash that matches the stored
one means the values are those that were hashed (barring a SHA-256 collision). The
workers read dates and times as PostgreSQL's ISO text in UTC (cheaper than binary
decoding and `isoformat`) and accept only the exact shapes of years 1 to 9999; COPY's
escapes are undone exactly (an escape COPY TO does not write is a doubt); integers
are used as PostgreSQL writes them, and only digits (or null) are accepted where
the JSON takes them as they come; any other text is a doubt. A false alarm would only make the walk run; a missed change
is not possible. SQLite ledgers are small: there it always walks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
from hashlib import sha256
from json.encoder import encode_basestring as _s  # what json.dumps(ensure_ascii=False) escapes strings with

# Light imports only at module level: worker processes import this module (spawned, not forked).

PARALLEL_FROM = 200_000  # entries; below this one in-process pass is quicker than starting processes
WORKERS = max(1, min(os.cpu_count() or 1, 4))
BATCH = 10_000

# The postings count is for the pass in this process; the workers need none: their ranges of posting ids
# cover every id, and each range must use up all of its postings.
_HEAD = """SELECT {snapshot} last_seq, last_hash, {postings} AS postings,
       (SELECT count(*) FROM journal_entry WHERE seq > h.last_seq OR seq < 1) AS beyond
  FROM ledger_head h WHERE id = 1"""
# The first posting of an entry: where a range's postings begin.
_FIRST_POSTING = "SELECT min(p.id) FROM posting p WHERE p.entry_id = (SELECT id FROM journal_entry WHERE seq = $1)"
_ENTRIES = """SELECT id, seq, idempotency_key, kind, description, effective_date, posted_at,
       created_by_user_id, member_id, reverses_entry_id, content_hash, prev_hash, hash
  FROM journal_entry WHERE seq BETWEEN $1 AND $2 ORDER BY seq"""
_POSTINGS = ("SELECT entry_id, account_id, currency, amount_minor FROM posting"
             " WHERE id >= $1::bigint AND id < $2::bigint ORDER BY id")
_NO_ID = (-2**63, 2**63 - 1)
_CONTENT = ('{"created_by_user_id":%s,"description":%s,"effective_date":"%s","key":%s,"kind":%s,"lines":[%s],'
            '"member_id":%s,"reverses_entry_id":%s}')
_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+(-[0-9A-Fa-f]+)+")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class _Doubt(Exception):
    """Something does not fit: the exact walk must decide."""


# ---------------------------------------------------------------- one range


def _native_day(value) -> str:
    return value.isoformat()


def _native_time(value, utc=dt.UTC) -> str:
    return value.astimezone(utc).isoformat(timespec="microseconds")


def _text_day(value: str) -> str:
    """A date as PostgreSQL's ISO text (DateStyle ISO): YYYY-MM-DD for years 1 to 9999, as isoformat()."""
    if len(value) != 10:  # BC dates, years past 9999, infinity
        raise _Doubt
    return value


def _text_time(value: str) -> str:
    """A timestamptz as PostgreSQL's ISO text in UTC ("YYYY-MM-DD HH:MM:SS[.ffffff]+00", trailing zeros of the
    fraction dropped) turned into isoformat(timespec="microseconds") of the same instant; other shapes doubt."""
    size = len(value)
    if value[10:11] != " " or value[-3:] != "+00" or not (size == 22 or 24 <= size <= 29 and value[19] == "."):
        raise _Doubt
    if size == 22:
        return f"{value[:10]}T{value[11:19]}.000000+00:00"
    return f"{value[:10]}T{value[11:-3]}{'000000'[:29 - size]}+00:00"


async def _verify_range(conn, lo: int, hi: int, first_posting: int, end_posting: int, codes: dict[int, str], *,
                        progress=None, batch: int = BATCH) -> tuple[str, str, int]:
    """Check entries lo..hi and the postings with ids in [first_posting, end_posting) on an asyncpg connection
    in a transaction (this process's pass, on the session's connection: values decoded by asyncpg).
    Returns (prev_hash of entry lo, hash of entry hi, postings counted); raises _Doubt."""
    day_text, time_text = _native_day, _native_time
    content_text, null, digest = _CONTENT, "null", sha256
    quoted = {code: _s(code) for code in codes.values()}
    entries = await conn.cursor(_ENTRIES, lo, hi)
    postings = await conn.cursor(_POSTINGS, first_posting, end_posting)
    pending: list = []  # postings read and not yet matched
    at, exhausted, counted = 0, False, 0
    first_prev = prev_hash = None
    prev_seq = lo - 1

    async def more():
        nonlocal pending, at, exhausted
        rows = await postings.fetch(2 * batch)
        pending, at = pending[at:] + rows, 0
        exhausted = len(rows) < 2 * batch

    while rows := await entries.fetch(batch):
        if first_prev is None:
            first_prev = prev_hash = rows[0][11]
        for (entry_id, seq, key, kind, description, effective_date, posted_at, created_by, member_id, reverses,
             stored_content, stored_prev, stored_hash) in rows:
            if stored_prev != prev_hash or seq != prev_seq + 1:
                raise _Doubt
            # This entry's postings: the run of postings that name it.
            if len(pending) - at < 3 and not exhausted:
                await more()
            end = at
            while True:
                if end == len(pending):
                    if exhausted:
                        break
                    offset = end - at
                    await more()
                    end = at + offset
                    continue
                if pending[end][0] != entry_id:
                    break
                end += 1
            if end - at == 2:  # the usual entry: one debit, one credit
                (_, account_a, currency_a, amount_a), (_, account_b, currency_b, amount_b) = pending[at], pending[at + 1]
                if currency_a != currency_b or amount_a + amount_b:
                    raise _Doubt
                line_a = (codes.get(account_a) or f"#{account_a}", currency_a, amount_a)
                line_b = (codes.get(account_b) or f"#{account_b}", currency_b, amount_b)
                lines = (line_a, line_b) if line_a <= line_b else (line_b, line_a)
            elif end - at > 2:
                totals: dict[str, int] = {}
                found = []
                for _, account, currency, amount in pending[at:end]:
                    totals[currency] = totals.get(currency, 0) + amount
                    found.append((codes.get(account) or f"#{account}", currency, amount))
                if any(totals.values()):
                    raise _Doubt
                lines = sorted(found)
            else:
                raise _Doubt  # fewer than two postings, or they are not where they should be
            body = ",".join([f"[{quoted.get(code) or _s(code)},{_s(currency)},{amount}]"
                             for code, currency, amount in lines])
            content = digest((content_text % (
                null if created_by is None else int(created_by), _s(description), day_text(effective_date), _s(key),
                _s(kind), body, null if member_id is None else int(member_id),
                null if reverses is None else _s(reverses))).encode()).hexdigest()
            if content != stored_content:
                raise _Doubt
            if digest(f'[{_s(stored_prev)},"{content}",{seq},{_s(entry_id)},"{time_text(posted_at)}"]'
                      .encode()).hexdigest() != stored_hash:
                raise _Doubt
            prev_hash, prev_seq = stored_hash, seq
            counted += end - at
            at = end
        if progress:
            progress(len(rows))
    if prev_seq != hi:  # entries missing at the end of the range
        raise _Doubt
    if at < len(pending) or not exhausted:
        if at < len(pending) or await postings.fetch(1):
            raise _Doubt  # postings after the range's last entry that name no entry of the range
    return first_prev, prev_hash, counted


# ---------------------------------------------------------------- one range, as a worker reads it

# COPY's text format is cheaper to take apart than asyncpg's records (about a third of the cost). NULL is
# written "null" (its JSON), possible only in the integer columns; the one nullable text column comes with a
# flag. PostgreSQL's text output of integers is what str(int) gives, so those are used as they come.
_COPY_ENTRIES = """SELECT id, seq, idempotency_key, kind, description, effective_date, posted_at,
       created_by_user_id, member_id, reverses_entry_id IS NULL, coalesce(reverses_entry_id, ''),
       content_hash, prev_hash, hash
  FROM journal_entry WHERE seq BETWEEN {lo:d} AND {hi:d} ORDER BY seq"""
_COPY_POSTINGS = """SELECT entry_id, account_id, currency, amount_minor FROM posting
 WHERE id >= {first:d} AND id < {end:d} ORDER BY id"""
_COPY_ESCAPES = {"\\\\": "\\", "\\n": "\n", "\\r": "\r", "\\t": "\t", "\\b": "\b", "\\f": "\f", "\\v": "\v"}
_COPY_ESCAPE = re.compile(r"\\.?")


def _unescape(field: str) -> str:
    """A field of COPY's text format as stored (COPY TO escapes exactly these); anything else doubts."""
    def one(match):
        try:
            return _COPY_ESCAPES[match.group()]
        except KeyError:
            raise _Doubt from None
    return _COPY_ESCAPE.sub(one, field)


async def _copy_lines(conn, statement: str, lines: asyncio.Queue) -> None:
    """The rows of a COPY ... TO STDOUT, as lists of text lines on `lines` (None at the end). asyncpg reads
    no more from the server while the queue is full: memory stays bounded."""
    rest = b""

    async def sink(chunk: bytes) -> None:
        nonlocal rest
        data = rest + chunk
        cut = data.rfind(b"\n")
        if cut >= 0:  # whole lines only: a character's UTF-8 bytes may be split between chunks
            rest = data[cut + 1:]
            await lines.put(data[:cut].decode().split("\n"))
        else:
            rest = data

    await conn.copy_from_query(statement, output=sink, format="text", null="null")
    if rest:
        raise _Doubt  # a row without its end
    await lines.put(None)


async def _verify_range_copy(entries_conn, postings_conn, lo: int, hi: int, first_posting: int,
                             end_posting: int, codes: dict[int, str], *, progress=None) -> tuple[str, str, int]:
    """_verify_range, with the entries and the postings each streamed by COPY on a connection of its own
    (both in one snapshot). Same checks, same result."""
    entry_lines: asyncio.Queue = asyncio.Queue(8)
    posting_lines: asyncio.Queue = asyncio.Queue(8)
    readers = [asyncio.ensure_future(_copy_lines(entries_conn, _COPY_ENTRIES.format(lo=lo, hi=hi), entry_lines)),
               asyncio.ensure_future(_copy_lines(postings_conn, _COPY_POSTINGS.format(
                   first=max(first_posting, _NO_ID[0]), end=min(end_posting, _NO_ID[1])), posting_lines))]
    checker = asyncio.ensure_future(_check_copied(entry_lines, posting_lines, lo, hi, codes, progress))
    tasks = [checker, *readers]
    try:
        # Whichever fails first decides (a reader that fails leaves the checker waiting for lines).
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()
        return checker.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _check_copied(entry_lines, posting_lines, lo, hi, codes, progress):
    names = {str(k): v for k, v in codes.items()}
    quoted = {str(k): _s(v) for k, v in codes.items()}
    content_text, digest, unescape = _CONTENT, sha256, _unescape
    bodies: dict[tuple, str] = {}  # two postings' text in an entry's JSON, by their stored values
    pending: list = []  # postings read and not yet matched, as [entry_id, account_id, currency, amount]
    at, exhausted, counted, unreported = 0, False, 0, 0
    first_prev = prev_hash = None
    prev_seq = lo - 1

    async def more():
        nonlocal pending, at, exhausted
        rows = await posting_lines.get()
        if rows is None:
            exhausted = True
            pending, at = pending[at:], 0
            return
        fresh = []
        for line in rows:
            row = line.split("\t")
            if len(row) != 4:
                raise _Doubt
            if "\\" in line:
                row = [unescape(f) for f in row]
            fresh.append(row)
        pending, at = pending[at:] + fresh, 0

    while (rows := await entry_lines.get()) is not None:
        for line in rows:
            row = line.split("\t")
            if len(row) != 14:
                raise _Doubt
            if "\\" in line:
                row = [unescape(f) for f in row]
            (entry_id, seq, key, kind, description, day, posted, created_by, member_id, no_reverse, reverses,
             stored_content, stored_prev, stored_hash) = row
            if first_prev is None:
                if not _HEX64.fullmatch(stored_prev):
                    raise _Doubt
                first_prev = prev_hash = stored_prev
            seq = int(seq)
            if stored_prev != prev_hash or seq != prev_seq + 1:
                raise _Doubt
            # This entry's postings: the run of postings that name it (usually two, already read).
            if (at + 2 < len(pending) and pending[at][0] == entry_id and pending[at + 1][0] == entry_id
                    and pending[at + 2][0] != entry_id):
                end = at + 2
            else:
                end = at
                while True:
                    if end == len(pending):
                        if exhausted:
                            break
                        offset = end - at
                        await more()
                        end = at + offset
                        continue
                    if pending[end][0] != entry_id:
                        break
                    end += 1
            if end - at == 2:  # the usual entry: one debit, one credit
                (_, account_a, currency, amount_a), (_, account_b, currency_b, amount_b) = pending[at], pending[at + 1]
                pair = (account_a, currency, amount_a, account_b, currency_b, amount_b)
                body = bodies.get(pair)  # the same two lines again (same accounts, same amounts): same text
                if body is None:
                    value_a, value_b = int(amount_a), int(amount_b)
                    if currency != currency_b or value_a + value_b:
                        raise _Doubt
                    name_a, name_b = names.get(account_a) or f"#{account_a}", names.get(account_b) or f"#{account_b}"
                    if name_b < name_a or name_b == name_a and value_b < value_a:  # one currency: by code, amount
                        name_a, name_b, account_a, account_b, amount_a, amount_b = (
                            name_b, name_a, account_b, account_a, amount_b, amount_a)
                    currency = _s(currency)
                    body = (f"[{quoted.get(account_a) or _s(name_a)},{currency},{amount_a}],"
                            f"[{quoted.get(account_b) or _s(name_b)},{currency},{amount_b}]")
                    if len(bodies) >= 100_000:  # bounded memory
                        bodies.clear()
                    bodies[pair] = body
            elif end - at > 2:
                totals: dict[str, int] = {}
                found = []
                for _, account, currency, amount in pending[at:end]:
                    totals[currency] = totals.get(currency, 0) + int(amount)
                    found.append((names.get(account) or f"#{account}", currency, int(amount), account))
                if any(totals.values()):
                    raise _Doubt
                found.sort(key=lambda line: line[:3])
                body = ",".join([f"[{quoted.get(account) or _s(code)},{_s(currency)},{amount}]"
                                 for code, currency, amount, account in found])
            else:
                raise _Doubt  # fewer than two postings, or they are not where they should be
            # Integers as PostgreSQL writes them are their JSON (digits only here: no sign, no other text).
            if not (created_by == "null" or created_by.isdigit()) or not (member_id == "null" or member_id.isdigit()):
                raise _Doubt
            if len(day) != 10:  # see _text_day
                raise _Doubt
            content = digest((content_text % (
                created_by, _s(description), day, _s(key), _s(kind), body, member_id,
                "null" if no_reverse == "t" else _s(reverses))).encode()).hexdigest()
            if content != stored_content:
                raise _Doubt
            if len(posted) == 29 and posted[10] == " " and posted[19] == "." and posted[26:] == "+00":
                posted = f"{posted[:10]}T{posted[11:26]}+00:00"  # the usual shape of _text_time, inline
            else:
                posted = _text_time(posted)
            if digest(f'["{stored_prev}","{content}",{seq},{_s(entry_id)},"{posted}"]'.encode()).hexdigest() != stored_hash:
                raise _Doubt
            prev_hash, prev_seq = stored_hash, seq
            counted += end - at
            at = end
        unreported += len(rows)
        if progress and unreported >= BATCH:  # chunks are small: say it every BATCH entries or so
            progress(unreported)
            unreported = 0
    if progress and unreported:
        progress(unreported)
    if prev_seq != hi:  # entries missing at the end of the range
        raise _Doubt
    while not exhausted:
        await more()
    if at < len(pending):
        raise _Doubt  # postings after the range's last entry that name no entry of the range
    return first_prev, prev_hash, counted


# ---------------------------------------------------------------- worker processes


def _worker_main() -> None:
    """A worker process (`python -m treasury.chainsql`): one range verified inside the exported snapshot.
    Reads its job as JSON on stdin (the DSN holds a password: never on the command line); writes
    "progress N" lines, then one of "done [first_prev, last_hash, postings]", "doubt", "error ..."."""
    import json
    import sys

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    try:
        job = json.loads(sys.stdin.readline())
        codes = {int(k): v for k, v in job["codes"].items()}
        say("done " + json.dumps(asyncio.run(_worker_range(job["dsn"], job["snapshot"], job["spec"], codes,
                                                           lambda n: say(f"progress {n}")))))
    except (_Doubt, ValueError, TypeError, AttributeError, IndexError, UnicodeError):
        say("doubt")  # a value that does not fit or does not read: the walk names it
    except BaseException as exc:  # noqa: BLE001 - the machinery failed (no connection, ...): the parent verifies
        say("error " + repr(exc).replace("\n", " "))


async def _worker_range(dsn: str, snapshot: str, spec: list, codes: dict[int, str], progress):
    import asyncpg

    lo, hi, first_posting, end_posting = spec
    # ISO dates and UTC times as text (see _text_day/_text_time): settings of this connection only.
    settings = {"DateStyle": "ISO", "TimeZone": "UTC"}
    conns = [await asyncpg.connect(dsn, server_settings=settings)]
    try:
        conns.append(await asyncpg.connect(dsn, server_settings=settings))
        for conn in conns:
            await conn.execute(f"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot}'")
        return await _verify_range_copy(conns[0], conns[1], lo, hi, first_posting, end_posting, codes,
                                        progress=progress)
    finally:
        for conn in conns:
            await conn.close()  # ends the transactions


class _MachineryFailed(Exception):
    """The worker processes could not do the pass (not a doubt about the chain)."""


async def _in_workers(dsn: str, snapshot: str, specs: list[tuple], codes: dict[int, str], progress) -> list:
    """Run each range in a worker process; their results in range order. Raises _Doubt or _MachineryFailed.
    The processes are plain subprocesses (no multiprocessing: nothing of the caller's __main__ is re-run)
    and are killed on every way out that leaves one running (doubt, error, cancellation)."""
    import json
    import sys
    from pathlib import Path

    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    processes: list[asyncio.subprocess.Process] = []
    done = 0

    async def run(process, spec):
        nonlocal done
        process.stdin.write(json.dumps({"dsn": dsn, "snapshot": snapshot, "spec": list(spec),
                                        "codes": {str(k): v for k, v in codes.items()}}).encode() + b"\n")
        await process.stdin.drain()
        process.stdin.close()
        while line := (await process.stdout.readline()).decode().strip():
            word, _, rest = line.partition(" ")
            if word == "progress":
                done += int(rest)
                if progress:
                    progress(done)
            elif word == "done":
                await process.wait()
                return tuple(json.loads(rest))
            elif word == "doubt":
                raise _Doubt
            else:
                raise _MachineryFailed(line)
        raise _MachineryFailed(f"worker process ended without a result (exit {await process.wait()})")

    tasks = []
    try:
        for _spec in specs:
            processes.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "treasury.chainsql", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, env=env, cwd=root))
        tasks = [asyncio.ensure_future(run(process, spec[1:])) for process, spec in zip(processes, specs)]
        return list(await asyncio.gather(*tasks))  # the first doubt or failure ends the wait
    except OSError as exc:
        raise _MachineryFailed(repr(exc)) from exc
    finally:
        for task in tasks:
            task.cancel()
        for process in processes:
            if process.returncode is None:
                try:
                    process.kill()
                except ProcessLookupError:
                    pass
        for process in processes:
            await asyncio.shield(process.wait())  # reaped, even when we are being cancelled


# ---------------------------------------------------------------- the quick pass


def _worker_dsn(session) -> str:
    url = session.get_bind().url
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _stitched(ranges: list, *, last_hash: str, posting_count: int | None, genesis: str) -> bool:
    """Range k begins where range k-1 ended; the first begins at the genesis, the last ends at the head;
    every posting was counted against an entry (when `posting_count` is given)."""
    expected = genesis
    for first_prev, last, _counted in ranges:
        if first_prev != expected:
            return False
        expected = last
    return expected == last_hash and posting_count in (None, sum(counted for _, _, counted in ranges))


async def _parallel_pass(dsn: str, *, genesis: str, progress=None) -> int | None:
    """The quick pass cut into seq ranges for worker processes, coordinated from a connection of our own
    whose snapshot (head, postings count, range boundaries) the workers share. _MachineryFailed when it
    cannot run; the session is left untouched either way."""
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        raise _MachineryFailed(repr(exc)) from exc
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            try:
                head = await conn.fetchrow(_HEAD.format(snapshot="pg_export_snapshot() AS snapshot,", postings="NULL"))
            except asyncpg.PostgresError as exc:  # e.g. a server that cannot export snapshots
                raise _MachineryFailed(repr(exc)) from exc
            last_seq, last_hash, posting_count, beyond, snapshot = (
                head["last_seq"], head["last_hash"], head["postings"], head["beyond"], head["snapshot"])
            if not _SNAPSHOT_ID.fullmatch(snapshot or ""):
                raise _MachineryFailed(f"unexpected snapshot id {snapshot!r}")
            if beyond:
                return None
            if last_seq == 0:
                empty = await conn.fetchval("SELECT NOT EXISTS (SELECT FROM posting)")
                return 0 if last_hash == genesis and empty else None
            codes = dict(await conn.fetch("SELECT id, code FROM ledger_account"))
            parts = max(1, min(WORKERS, last_seq))
            starts = [1 + k * last_seq // parts for k in range(parts)] + [last_seq + 1]
            firsts = [_NO_ID[0]]
            for start in starts[1:-1]:
                try:
                    first = await conn.fetchval(_FIRST_POSTING, start)
                except asyncpg.CardinalityViolationError:  # two entries with one seq
                    return None
                if first is None:  # no entry with that seq, or one without postings
                    return None
                firsts.append(first)
            firsts.append(_NO_ID[1])
            specs = [(k, starts[k], starts[k + 1] - 1, firsts[k], firsts[k + 1]) for k in range(parts)]
            ranges = await _in_workers(dsn, snapshot, specs, codes, progress)
    finally:
        await conn.close()
    return last_seq if _stitched(ranges, last_hash=last_hash, posting_count=posting_count, genesis=genesis) else None


async def _quick_pass(session, *, progress=None) -> int | None:
    """How many entries the chain holds when every check passes; None at the first doubt."""
    from sqlalchemy import text

    from migrations.helpers import GENESIS

    if WORKERS > 1 and (await session.execute(
            text("SELECT last_seq FROM ledger_head WHERE id = 1"))).scalar_one() >= PARALLEL_FROM:
        try:
            return await _parallel_pass(_worker_dsn(session), genesis=GENESIS, progress=progress)
        except _MachineryFailed:
            pass  # the same pass in this process, on the session's connection
    driver = (await (await session.connection()).get_raw_connection()).driver_connection  # asyncpg, in our transaction
    row = (await session.execute(text(_HEAD.format(snapshot="", postings="(SELECT count(*) FROM posting)")))).one()
    if row.beyond:
        return None
    if row.last_seq == 0:
        return 0 if (row.last_hash, row.postings) == (GENESIS, 0) else None
    codes = dict((await session.execute(text("SELECT id, code FROM ledger_account"))).all())
    done = 0

    def step(n):
        nonlocal done
        done += n
        progress(done)

    ranges = [await _verify_range(driver, 1, row.last_seq, *_NO_ID, codes,
                                  progress=step if progress else None)]
    return row.last_seq if _stitched(ranges, last_hash=row.last_hash, posting_count=row.postings,
                                     genesis=GENESIS) else None


async def verify_ledger(session, *, progress=None):
    """The ledger's chain verified (see the module docstring): fast on PostgreSQL, exact everywhere."""
    from dues.ledger import LedgerChainReport

    if session.get_bind().dialect.name == "postgresql":
        try:
            checked = await _quick_pass(session, progress=progress)
        except (_Doubt, ValueError, TypeError, AttributeError, IndexError, UnicodeError):
            checked = None  # an oddly shaped value: let the walk name it
        if checked is not None:
            return LedgerChainReport(checked)
    return await verify_ledger_chain(session, progress=progress)


async def verify_ledger_chain(session, *, progress=None):
    """The exact walk (dues.ledger), imported when needed: worker processes import this module."""
    from dues.ledger import verify_ledger_chain as walk

    return await walk(session, progress=progress)


if __name__ == "__main__":
    _worker_main()
