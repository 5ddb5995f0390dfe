"""Dispatch benchmark (issue 3): (a) the dispatch decision among 10,000 teams
beside a naive scan of the same data; (b) from the incident request to the push
handed to a local push service, at 20 and 100 concurrent callers, on SQLite
(embedded jobs) and on PostgreSQL with Redis (arq worker); (c) lateness of the
acknowledgement timers under that load.

    .venv/bin/python bench/dispatch.py                 # full run (about 10-14 minutes)
    .venv/bin/python bench/dispatch.py --quick         # smoke run (about 8 minutes)
    .venv/bin/python bench/dispatch.py --only decision # or sqlite, postgres (comma-separated)
    .venv/bin/python bench/dispatch.py --only sqlite,postgres --modes none   # (c) alone

Everything runs on 127.0.0.1. Benchmarks are run by hand (DESIGN §8): nothing
here asserts a time; the figures are printed with the machine they ran on.

(a) Decision. N teams (default 10,000) over Karnataka (lat 11.6-18.4, lon
    74.1-78.5): 60 % clustered around district centres from the gazetteer, 40 %
    spread evenly; mixed skills, languages and statuses, a third with a live
    location (some stale). The same teams go into a fresh migrated SQLite database
    (and a throw-away PostgreSQL database when one answers). For random incident
    points (70 % near district centres) the run times, point by point and
    interleaved: `crisis.services.rank_for` with a session (the bounding-box SQL
    query plus rank_teams: the real decision path), the pure `rank_teams` over the
    candidates the box returned, and `naive_nearest` over all teams in memory; on a
    subset also `rank_teams` over all teams (no box), which doubles as a
    correctness check: its ranking must equal rank_for's.

(b) End to end. A fresh data folder (or database), `union serve` in a subprocess
    (plus `union worker` with PostgreSQL and Redis), a local push service in its
    own process that timestamps every POST (time.monotonic is system-wide on
    Linux, so the load generator's clock and the push service's agree) and answers
    201, and teams within ~15 km of central Bengaluru, each with one crisis
    responder and one push subscription with a real P-256 key, so the real
    WebPushSender encrypts and signs. For each incident: the HTTP response time of
    POST /api/crisis/incidents, and the time from sending it until the push
    service received the first push of the incident's offer (found by decrypting
    each push with its subscription's key: the payload is {"type": "offer",
    "offer": id}). Two kinds of load per number of callers C:
      burst      C callers press "Get help" at the same moment (one request each),
                 a few times over, each burst after the last one's pushes arrived;
      sustained  C callers each send again as soon as answered, M incidents in all.
    This runs with the default acknowledgement window (60 s), so no offer lapses
    while pushes are measured.

(c) Timers. Then the web process (and worker) are restarted with a short window
    (--ack, default 20 s: re-offers at a rate the machine can sustain; the table
    gives how many offers expired and how many a second) and the sustained load
    is sent again, spread over twice the window (--timer-spread) so that offers
    lapse while requests still arrive; no team ever answers, so offers lapse and
    are re-offered during and after the load.
    Lateness = Offer.answered_at (status lapsed) - Offer.deadline_at, for every
    offer whose deadline passed at least 2 s before the end of the phase; one still
    pending then is counted at its observed lateness (a lower bound).

Settings for the run: UNION_PUSH_ALLOW_LOCAL_ENDPOINTS=true; a high
UNION_MAX_OFFER_MISSES (teams never answer here, and three misses would escalate
and broadcast to every available team, a different path); a high per-address
intake limit (every caller is 127.0.0.1; each also gives a new phone number).
Between phases the open incidents are cancelled, pending offers withdrawn, their
pending due work marked done and every team made available again, by SQL, so a
phase does not inherit the last one's backlog. Every loop is bounded in count and
in time. The web process's (and worker's) CPU per incident is read from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import datetime as dt
import itertools
import json
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.http_floor import PG_ADMIN, Server, _pg, free_port, machine, start  # noqa: E402

KARNATAKA = (11.6, 18.4, 74.1, 78.5)  # lat min, lat max, lon min, lon max
BENGALURU = (12.9716, 77.5946)
KM_PER_DEG = 111.195
SKILLS = ("police_station", "legal", "medical", "counselling", "gatekeeper", "trans_led")
LANGS = ("kn", "te", "ta", "hi", "ur", "mr", "en")
KINDS = ("police", "client_violence", "hired_criminals", "gatekeeper", "eviction", "medical", "other")
OPEN = ("new", "offered", "accepted", "en_route", "on_scene", "escalated")


# --- Small helpers -------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (as bench/http_floor.py); nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fmt(x: float, digits: int = 2) -> str:
    return "-" if x != x else f"{x:.{digits}f}"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


T0 = time.monotonic()


def say(*args) -> None:
    print(f"[{time.monotonic() - T0:6.1f} s]", *args, flush=True)


def load_text() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process and its child processes (`union serve --workers N`) used so
    far (Linux /proc), 0 when unknown."""
    def own(p: int) -> tuple[float, int]:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[1])

    try:
        total = own(pid)[0]
    except (OSError, IndexError, ValueError):
        return 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != pid:
            try:
                cpu, parent = own(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
            if parent == pid:
                total += cpu
    return total


def district_centres() -> list[tuple[float, float]]:
    """Mean position of each district's places in the gazetteer (about 30 towns)."""
    sums: dict[str, list[float]] = {}
    with (ROOT / "crisis" / "data" / "karnataka_places.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            s = sums.setdefault(row["district"], [0.0, 0.0, 0])
            s[0] += float(row["lat"])
            s[1] += float(row["lon"])
            s[2] += 1
    return [(a / n, b / n) for a, b, n in sums.values()]


def clamp_box(lat: float, lon: float) -> tuple[float, float]:
    lat_min, lat_max, lon_min, lon_max = KARNATAKA
    return min(lat_max, max(lat_min, lat)), min(lon_max, max(lon_min, lon))


# --- The local push service (a subprocess: `dispatch.py --push-service --port P`) -----------

async def _push_service(port: int) -> None:
    """RFC 8030 enough for WebPushSender: POST /push/<id> -> 201 with a Location. Every POST is kept
    with its arrival time (time.monotonic, system-wide); GET /_records?from=i returns them as JSON."""
    records: list[list] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                arrived = time.monotonic()
                url = urlsplit(target)
                if method == "POST" and url.path.startswith("/push/"):
                    records.append([arrived, url.path, base64.b64encode(body).decode(), headers.get("urgency", ""),
                                    headers.get("ttl", ""), headers.get("authorization", "")[:6]])
                    reply = (b"HTTP/1.1 201 Created\r\nLocation: /message/" + secrets.token_hex(6).encode()
                             + b"\r\nContent-Length: 0\r\n\r\n")
                elif method == "GET" and url.path == "/_records":
                    since = int(parse_qs(url.query).get("from", ["0"])[0])
                    data = json.dumps(records[since:since + 5000]).encode()
                    reply = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(data)).encode() + b"\r\n\r\n" + data)
                else:
                    reply = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
                writer.write(reply)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:  # shutting down with idle keep-alive connections open
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        # Bounded: a push service left behind by a crashed run goes away by itself after an hour.
        try:
            await asyncio.wait_for(stop.wait(), timeout=3600)
        except TimeoutError:
            pass


# --- (a) The decision among many teams --------------------------------------------------------

def make_team_views(n: int, rng: random.Random, now: dt.datetime):
    from crisis.dispatch import TeamView

    centres = district_centres()
    lat_min, lat_max, lon_min, lon_max = KARNATAKA
    statuses = ["available"] * 60 + ["off_duty"] * 25 + ["busy"] * 10 + ["offered"] * 5
    teams = []
    for i in range(1, n + 1):
        if rng.random() < 0.6:
            c = rng.choice(centres)
            lat, lon = clamp_box(c[0] + rng.gauss(0, 0.08), c[1] + rng.gauss(0, 0.08))  # about 9 km spread
        else:
            lat, lon = rng.uniform(lat_min, lat_max), rng.uniform(lon_min, lon_max)
        skills = frozenset(rng.sample(SKILLS, rng.randint(1, 4)))
        langs = {"kn"} if rng.random() < 0.8 else set()
        langs |= set(rng.sample(LANGS, rng.randint(1, 2)))
        live_lat = live_lon = live_at = None
        if rng.random() < 0.35:
            live_lat, live_lon = clamp_box(lat + rng.gauss(0, 0.03), lon + rng.gauss(0, 0.03))
            live_at = now - dt.timedelta(seconds=rng.uniform(0, 900))  # a third older than the 300 s staleness
        teams.append(TeamView(i, f"T{i:05d}", rng.choice(statuses), lat, lon, live_lat, live_lon, live_at,
                              skills, frozenset(langs)))
    return teams


def make_points(n: int, rng: random.Random):
    centres = district_centres()
    lat_min, lat_max, lon_min, lon_max = KARNATAKA
    points = []
    for _ in range(n):
        if rng.random() < 0.7:
            c = rng.choice(centres)
            lat, lon = clamp_box(c[0] + rng.gauss(0, 0.1), c[1] + rng.gauss(0, 0.1))
        else:
            lat, lon = rng.uniform(lat_min, lat_max), rng.uniform(lon_min, lon_max)
        lang = "kn" if rng.random() < 0.6 else rng.choice(LANGS)
        points.append((lat, lon, rng.choice(KINDS), lang))
    return points


async def insert_teams(url: str, teams) -> None:
    from sqlalchemy import insert, text

    from crisis.models import Team
    from union.db import make_engine, make_sessionmaker
    from union.models import Branch

    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as db:
            branch = Branch(code="KA", name="Karnataka", lat=12.97, lon=77.59)
            db.add(branch)
            await db.flush()
            created = dt.datetime.now(dt.UTC)
            rows = [dict(id=t.id, name=t.name, branch_id=branch.id, base_lat=t.base_lat, base_lon=t.base_lon,
                         live_lat=t.live_lat, live_lon=t.live_lon, live_at=t.live_at, status=t.status,
                         skills=" ".join(sorted(t.skills)), languages=" ".join(sorted(t.languages)),
                         current_incident_id=None, created_at=created) for t in teams]
            for i in range(0, len(rows), 1000):
                await db.execute(insert(Team.__table__), rows[i:i + 1000])
            await db.commit()
        if not url.startswith("sqlite"):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT setval(pg_get_serial_sequence('team', 'id'), (SELECT max(id) FROM team))"))
                await conn.commit()
            # What autovacuum would do shortly after a bulk load.
            async with engine.connect() as conn:
                await conn.execute(text("ANALYZE team"))
                await conn.commit()
    finally:
        await engine.dispose()


@dataclass
class DecisionFigures:
    label: str
    samples: list[float] = field(default_factory=list)  # wall-clock milliseconds
    cpu: list[float] = field(default_factory=list)  # this process's CPU milliseconds (all its threads)
    note: str = ""

    def add(self, t0: float, c0: float, *, extend: bool = False) -> None:
        wall, cpu = (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000
        if extend:
            self.samples[-1] += wall
            self.cpu[-1] += cpu
        else:
            self.samples.append(wall)
            self.cpu.append(cpu)


async def time_decisions(url: str, teams, points, *, settings, now, with_pure: bool, all_subset: int):
    """Per point, interleaved: rank_for (SQL + rank), pure rank_teams over the box candidates, naive scan."""
    from sqlalchemy import event

    from crisis.dispatch import naive_nearest, rank_teams
    from crisis.services import rank_for, teams_near
    from union.db import make_engine, make_sessionmaker

    from crisis.teamcache import TeamCache

    # As the app's services: the in-memory team table (crisis/teamcache.py), on both databases.
    svc = SimpleNamespace(settings=settings, extras={"team_cache": TeamCache()})
    stale = dt.timedelta(seconds=settings.location_stale_seconds)
    radius, wide = settings.dispatch_radius_km, settings.dispatch_wide_radius_km
    engine = make_engine(url)
    captured: list = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _capture(conn, cursor, statement, parameters, context, executemany):
        if "FROM team" in statement:  # the last one: a steady-state query, not the first load
            captured[:] = [(statement, parameters)]

    def ranked_ids(r):
        # Passed-over teams at the same rounded distance may come in either order.
        return [c.team.id for c in r.ordered], sorted((p["km"], p["team"], p["reason"]) for p in r.passed_over), r.step

    real = DecisionFigures("rank_for: box query + rank_teams")
    pure = DecisionFigures("rank_teams over the box candidates")
    naive = DecisionFigures(f"naive_nearest over all {len(teams):,}")
    full = DecisionFigures(f"rank_teams over all {len(teams):,} (no box)")
    box_sizes: list[int] = []
    wide_used = same_as_naive = naive_comparable = identical = compared = 0
    reader = make_sessionmaker(engine, read_only=True)
    first_ms: list[float] = []
    try:
        async with reader() as db:  # warm-up: connection, statement cache, imports (and loading the team table)
            t0 = time.perf_counter()
            for lat, lon, kind, lang in points[:20]:
                await rank_for(db, svc, lat=lat, lon=lon, kind=kind, language=lang, exclude=set(), now=now,
                               committed_only=True)
                if not first_ms:
                    first_ms.append((time.perf_counter() - t0) * 1000)
        for start_at in range(0, len(points), 100):
            async with reader() as db:
                for n, (lat, lon, kind, lang) in enumerate(points[start_at:start_at + 100], start_at):
                    t0, c0 = time.perf_counter(), time.process_time()
                    r = await rank_for(db, svc, lat=lat, lon=lon, kind=kind, language=lang, exclude=set(), now=now,
                                       committed_only=True)
                    real.add(t0, c0)
                    if with_pure:
                        normal = await teams_near(db, lat, lon, radius)
                        box_sizes.append(len(normal))
                        t0, c0 = time.perf_counter(), time.process_time()
                        p = rank_teams(lat=lat, lon=lon, kind=kind, language=lang, teams=normal, now=now,
                                       stale_after=stale, radius_km=radius, wide_radius_km=radius)
                        pure.add(t0, c0)
                        if not p.ordered:  # rank_for's second pass: the wide box
                            wide_used += 1
                            wide_teams = await teams_near(db, lat, lon, wide)
                            t0, c0 = time.perf_counter(), time.process_time()
                            p = rank_teams(lat=lat, lon=lon, kind=kind, language=lang, teams=wide_teams, now=now,
                                           stale_after=stale, radius_km=radius, wide_radius_km=wide)
                            pure.add(t0, c0, extend=True)
                        t0, c0 = time.perf_counter(), time.process_time()
                        best = naive_nearest(lat=lat, lon=lon, kind=kind, language=lang, teams=teams, now=now,
                                             stale_after=stale)
                        naive.add(t0, c0)
                        if r.ordered and r.step == "language, radius":
                            naive_comparable += 1
                            same_as_naive += best is not None and best.id == r.ordered[0].team.id
                    if n < all_subset:
                        t0, c0 = time.perf_counter(), time.process_time()
                        a = rank_teams(lat=lat, lon=lon, kind=kind, language=lang, teams=teams, now=now,
                                       stale_after=stale, radius_km=radius, wide_radius_km=radius)
                        if not a.ordered:
                            a = rank_teams(lat=lat, lon=lon, kind=kind, language=lang, teams=teams, now=now,
                                           stale_after=stale, radius_km=radius, wide_radius_km=wide)
                        full.add(t0, c0)
                        compared += 1
                        identical += ranked_ids(a) == ranked_ids(r)
        plan = ""
        if captured:
            statement, params = captured[0]
            async with engine.connect() as conn:
                raw = (await conn.get_raw_connection()).driver_connection
                if url.startswith("sqlite"):
                    cur = await raw.execute("EXPLAIN QUERY PLAN " + statement, params)
                    plan = "; ".join(row[-1] for row in await cur.fetchall())
                    if "team_cache" in svc.extras:  # what rank_for asks on SQLite (the box query is the wide one's)
                        from crisis.teamcache import _CHANGES_SQL

                        cur = await raw.execute("EXPLAIN QUERY PLAN " + _CHANGES_SQL, (10 ** 9,))
                        plan = ("clock query: " + "; ".join(row[-1] for row in await cur.fetchall())
                                + " | box query (teams_near, for escalations and the pure-ranking row): " + plan)
                else:
                    rows = await raw.fetch("EXPLAIN " + statement, *params)
                    plan = " / ".join(r[0].strip() for r in rows)
        if not url.startswith("sqlite") and svc.extras["team_cache"].snapshot:
            from crisis.teamcache import _PG_CHANGES_SQL

            snap = svc.extras["team_cache"].snapshot
            async with engine.connect() as conn:
                raw = (await conn.get_raw_connection()).driver_connection
                rows = await raw.fetch("EXPLAIN " + _PG_CHANGES_SQL, int(snap.split(":")[0]), snap)
                plan = "changes query (the teams whose writer the kept snapshot does not see): " + " / ".join(
                    r[0].strip() for r in rows)
    finally:
        await engine.dispose()
    stats = dict(box_mean=statistics.mean(box_sizes) if box_sizes else float("nan"),
                 box_p99=pct(box_sizes, 0.99), wide_used=wide_used, same_as_naive=same_as_naive,
                 naive_comparable=naive_comparable, identical=identical, compared=compared, plan=plan,
                 first_ms=first_ms[0] if first_ms else float("nan"), cached="team_cache" in svc.extras)
    return [real, pure, naive, full] if with_pure else [real, full], stats


def decision_benchmark(args, workdir: Path) -> list[str]:
    """(a); returns the lines of its report."""
    from union.db import migrate
    from union.settings import Settings

    rng = random.Random(args.seed)
    now = dt.datetime.now(dt.UTC)
    teams = make_team_views(args.teams, rng, now)
    points = make_points(args.points, rng)
    settings = Settings(_env_file=None, data_dir=workdir / "decision")
    lines = [f"(a) Dispatch decision among {len(teams):,} teams over Karnataka, {len(points):,} random incident points"
             f" (radius {settings.dispatch_radius_km:g} km, then {settings.dispatch_wide_radius_km:g} km)"]
    sqlite_url = f"sqlite+aiosqlite:///{(workdir / 'decision.db').resolve()}"
    say(f"(a) building {len(teams):,} teams in a fresh SQLite database …")
    migrate(sqlite_url)
    asyncio.run(insert_teams(sqlite_url, teams))
    say(f"(a) timing {len(points):,} decisions on SQLite …")
    all_subset = min(len(points), args.full_scan_points)
    figures, stats = asyncio.run(time_decisions(sqlite_url, teams, points, settings=settings, now=now,
                                                with_pure=True, all_subset=all_subset))
    figures[0].label = "rank_for: teams in memory + rank (SQLite)"
    pg_figures, pg_stats, pg_error = [], None, ""
    if args.postgres_available:
        pg_name = f"union_bench_{uuid.uuid4().hex[:10]}"
        try:
            asyncio.run(_pg(f"CREATE DATABASE {pg_name}"))
            pg_url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + "/" + pg_name
            say("(a) the same teams in a throw-away PostgreSQL database …")
            migrate(pg_url)
            asyncio.run(insert_teams(pg_url, teams))
            pg_figures, pg_stats = asyncio.run(time_decisions(pg_url, teams, points, settings=settings, now=now,
                                                              with_pure=False, all_subset=all_subset))
            pg_figures = pg_figures[:1]
            pg_figures[0].label = "rank_for: teams in memory + rank (PostgreSQL)"
        except Exception as exc:  # noqa: BLE001 - report and go on with the rest
            pg_error = f"{type(exc).__name__}: {exc}"
        finally:
            asyncio.run(_pg(f"DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)"))
    rows = [figures[0]] + pg_figures + figures[1:]
    header = (f"  {'what (same points, same run)':<50}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
              f"{'cpu p50':>9}{'cpu p99':>9}")
    lines += [header, "  " + "-" * (len(header) - 2)]
    for f in rows:
        lines.append(f"  {f.label:<50}{len(f.samples):>6}{fmt(pct(f.samples, .5), 3):>9}"
                     f"{fmt(pct(f.samples, .99), 3):>9}{fmt(max(f.samples) if f.samples else float('nan'), 3):>9}"
                     f"{fmt(pct(f.cpu, .5), 3):>9}{fmt(pct(f.cpu, .99), 3):>9}")
    lines.append("  (wall-clock; cpu = CPU time of the benchmark process, SQLite's thread included, which leaves out"
                 " waiting for a core on this shared machine; PostgreSQL's own CPU is not in it)")
    lines.append(f"  candidates returned by the {settings.dispatch_radius_km:g} km box: mean "
                 f"{stats['box_mean']:.0f}, p99 {stats['box_p99']:.0f}; wide box needed for {stats['wide_used']} "
                 f"of {len(points)} points")
    lines.append(f"  correctness: rank_for's ranking (order and passed-over teams) equals rank_teams over all teams "
                 f"for {stats['identical']} of {stats['compared']} points")
    lines.append(f"  naive_nearest picked the same team as rank_for for {stats['same_as_naive']} of "
                 f"{stats['naive_comparable']} points decided at the first step (language, radius)")
    lines.append(f"  SQLite plan: {stats['plan']}")
    if stats.get("cached"):
        lines.append(f"  Both databases' decisions use the team table in memory (crisis/teamcache.py): the first "
                     f"decision loaded all {len(teams):,} teams in {stats['first_ms']:.0f} ms (SQLite)"
                     + (f", {pg_stats['first_ms']:.0f} ms (PostgreSQL)" if pg_stats else "")
                     + "; every decision after it asks the database, in its own transaction, for the team rows changed"
                     " since (SQLite: stamped after the copy's clock; PostgreSQL: written by transactions the copy's"
                     " snapshot does not see); none here: nothing changes teams during (a); under load (b) it is the"
                     " teams reserved or released since the last decision")
    if pg_stats:
        lines.append(f"  correctness on PostgreSQL: rank_for's ranking equals rank_teams over all teams for "
                     f"{pg_stats['identical']} of {pg_stats['compared']} points")
        lines.append(f"  PostgreSQL plan: {pg_stats['plan']}")
    if pg_error:
        lines.append(f"  PostgreSQL: not measured ({pg_error})")
    target = pct(figures[0].samples, .99)
    lines.append(f"  target p99 < 2 ms for the decision: SQLite {'met' if target < 2 else 'MISSED'} ({target:.2f} ms)"
                 + (f", PostgreSQL {'met' if pct(pg_figures[0].samples, .99) < 2 else 'MISSED'} "
                    f"({pct(pg_figures[0].samples, .99):.2f} ms)" if pg_figures else ""))
    real, pure, naive, full = figures
    lines.append(f"  reading: rank_for takes {pct(real.samples, .5):.2f} ms (p50) on SQLite: the changes query and"
                 " the ranking over the copy's records (a grid per set of skills a kind needs: only teams that can"
                 " be chosen are ranked; teams that cannot get a distance only when they may be nearer than the"
                 f" chosen one). rank_teams over the ~{stats['box_mean']:.0f} TeamViews of the box query alone "
                 f"takes {pct(pure.samples, .5):.2f} ms. Without the box, ranking all {len(teams):,} teams takes "
                 f"{pct(full.samples, .5):.2f} ms and the naive scan {pct(naive.samples, .5):.2f} ms (which does less:"
                 " no fallbacks, no passed-over reasons). Where wall p99 is well above cpu p99 the tail is time spent"
                 " waiting for a core, not work.")
    return lines


# --- (b)+(c) End to end ------------------------------------------------------------------------

@dataclass
class Sub:
    key: object  # ec private key
    auth: bytes
    team_id: int


async def seed_e2e(settings, *, n_teams: int, push_url: str, rng: random.Random) -> dict[str, Sub]:
    """Teams around Bengaluru through the app's own services: a crisis_responder user per team
    (no password: nobody logs in), the team, and one push subscription with a real P-256 key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    import workers.registry  # noqa: F401
    from crisis import services as crisis
    from crisis.models import PushSubscription
    from union import accounts
    from union.models import Branch
    from union.services import build_services

    services = await build_services(settings, jobs_backend="none")
    subs: dict[str, Sub] = {}
    try:
        async with services.sessions() as db:
            db.add(Branch(code="BLR", name="Bengaluru", lat=BENGALURU[0], lon=BENGALURU[1]))
            await db.flush()
            for i in range(n_teams):
                user = await accounts.create_user(db, username=f"bench-r{i:04d}", password=None,
                                                  roles=["crisis_responder"], branch_code="BLR")
                lat = BENGALURU[0] + rng.gauss(0, 6) / KM_PER_DEG  # about 6 km spread around the centre
                lon = BENGALURU[1] + rng.gauss(0, 6) / KM_PER_DEG
                skills = [s for s in SKILLS if s != "trans_led" or rng.random() < 0.3]  # every kind can be served
                langs = sorted({"kn", "en"} | set(rng.sample(LANGS, 2)))
                team = await crisis.create_team(db, data=crisis.NewTeam(
                    name=f"Bench team {i:04d}", branch="BLR", base_lat=lat, base_lon=lon, skills=skills,
                    languages=langs, members=[user.username]), principal=None)
                key = ec.generate_private_key(ec.SECP256R1())
                auth = secrets.token_bytes(16)
                endpoint = f"{push_url}/push/{i:04d}-{secrets.token_urlsafe(9)}"
                p256dh = b64url(key.public_key().public_bytes(serialization.Encoding.X962,
                                                              serialization.PublicFormat.UncompressedPoint))
                db.add(PushSubscription(user_id=user.id, endpoint=endpoint, p256dh=p256dh, auth=b64url(auth)))
                subs[urlsplit(endpoint).path] = Sub(key, auth, team.id)
            await db.commit()
    finally:
        await services.close()
    return subs


@dataclass
class RoundResult:
    backend: str
    mode: str  # burst or sustained
    callers: int
    ack: int = 60
    sent: int = 0
    ok: int = 0
    errors: dict = field(default_factory=dict)
    seconds: float = 0.0  # of load (sustained: first send to last answer; bursts: summed)
    http_ms: list[float] = field(default_factory=list)
    push_ms: list[float] = field(default_factory=list)
    no_push: int = 0  # no push by the end of the phase
    lapsed_unpushed: int = 0  # the offer lapsed before its push was sent (so the push job sent nothing)
    no_team: int = 0
    two_team: int = 0
    lateness_ms: list[float] = field(default_factory=list)
    still_pending: int = 0
    pushes: int = 0
    bad_headers: int = 0
    offers: int = 0
    drain_seconds: float = 0.0
    load: str = ""
    cpu_ms: dict = field(default_factory=dict)  # process name -> CPU ms per incident, until the pushes arrived
    timers: bool = False  # (c): offers lapse and are re-offered during the phase

    @property
    def label(self) -> str:
        return (("SQLite, embedded" if self.backend == "sqlite" else "PostgreSQL, Redis+arq") + f", {self.mode}"
                + (f", ack {self.ack} s" if self.timers else ""))


class PushLog:
    """Pulls the push service's records and decrypts each with its subscription's key."""

    def __init__(self, client, base: str, subs: dict[str, Sub]):
        self.client, self.base, self.subs = client, base, subs
        self.seen = 0
        self.first_arrival: dict[int, float] = {}  # offer id -> monotonic arrival of its first push
        self.undecryptable = 0
        self.bad_headers = 0
        self.count = 0

    async def pull(self, ack: int) -> None:
        import http_ece

        for _ in range(100):  # bounded: 5000 records a page
            r = await self.client.get(f"{self.base}/_records", params={"from": self.seen}, timeout=30)
            batch = r.json()
            if not batch:
                return
            self.seen += len(batch)
            for arrived, path, body64, urgency, ttl, auth in batch:
                self.count += 1
                sub = self.subs.get(path)
                try:
                    payload = json.loads(http_ece.decrypt(base64.b64decode(body64), private_key=sub.key,
                                                          auth_secret=sub.auth, version="aes128gcm"))
                except Exception:  # noqa: BLE001
                    self.undecryptable += 1
                    continue
                if urgency != "high" or not ttl.isdigit() or int(ttl) < ack or auth.lower() != "vapid ":
                    self.bad_headers += 1
                if payload.get("type") == "offer" and set(payload) == {"type", "offer"}:
                    offer = int(payload["offer"])
                    self.first_arrival[offer] = min(arrived, self.first_arrival.get(offer, arrived))


async def offers_since(services, since: dt.datetime):
    from sqlalchemy import select

    from crisis.models import Incident, Offer

    async with services.reader() as db:
        rows = (await db.execute(
            select(Offer.id, Offer.incident_id, Offer.created_at, Offer.deadline_at, Offer.status,
                   Offer.answered_at, Offer.broadcast, Incident.reference, Incident.created_at.label("i_created"))
            .join(Incident, Incident.id == Offer.incident_id)
            .where(Incident.created_at >= since))).all()
    return rows


async def reset_teams(services) -> None:
    """Everyone available again: cancel open incidents, withdraw pending offers, and mark the due work
    that only concerned them (pushes, SMS and deadlines not run yet) done, so that the next phase does
    not carry this one's leftovers. Only the benchmark does this; the app never needs to.

    The app's jobs keep running meanwhile (a lapse re-offers, a push records its success), so the rows
    are locked in the app's own order (incident, then its offers, then teams, then due work; each in id
    order), and a deadlock that remains possible with a two-team dispatch in flight is retried."""
    from sqlalchemy import select, update
    from sqlalchemy.exc import DBAPIError

    from crisis.models import Incident, Offer, Team
    from union.models import DueWork, utcnow

    for attempt in range(8):
        try:
            async with services.sessions() as db:
                now = utcnow()
                # Every open incident first (what the app's answers and lapses lock first, FOR UPDATE).
                await db.execute(select(Incident.id).where(Incident.status.in_(OPEN)).order_by(Incident.id)
                                 .with_for_update())
                await db.execute(select(Offer.id).where(Offer.status == "pending").order_by(Offer.id)
                                 .with_for_update())
                await db.execute(update(Offer).where(Offer.status == "pending")
                                 .values(status="withdrawn", answered_at=now))
                await db.execute(update(Incident).where(Incident.status.in_(OPEN))
                                 .values(status="cancelled", cancelled_at=now))
                await db.execute(select(Team.id).order_by(Team.id).with_for_update())
                await db.execute(update(Team).values(status="available", current_incident_id=None))
                kinds = ["crisis.push", "crisis.offer_sms", "crisis.offer_deadline", "crisis.retry_dispatch"]
                await db.execute(select(DueWork.id).where(DueWork.state == "pending", DueWork.kind.in_(kinds))
                                 .order_by(DueWork.id).with_for_update())
                await db.execute(update(DueWork).where(DueWork.state == "pending", DueWork.kind.in_(kinds))
                                 .values(state="done", done_at=now, last_error="benchmark reset"))
                await db.commit()
            return
        except DBAPIError as exc:
            if "deadlock" not in str(exc).lower() or attempt == 7:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))


async def due_backlog(services) -> int:
    from sqlalchemy import func, or_, select

    from union.models import DueWork, utcnow

    now = utcnow()
    async with services.reader() as db:
        return (await db.execute(select(func.count()).select_from(DueWork).where(
            or_(DueWork.state == "running", (DueWork.state == "pending") & (DueWork.due_at <= now))))).scalar_one()


async def settle(services, *, cap: float = 60.0) -> None:
    """Reset, wait until no due work is running or due (bounded), reset again (a job in flight may
    have re-offered), and give the job runner a moment to drop the nudges of the rows marked done."""
    await reset_teams(services)
    end = time.monotonic() + cap
    while time.monotonic() < end and await due_backlog(services) > 0:
        await asyncio.sleep(0.25)
    await asyncio.sleep(1.0)
    await reset_teams(services)
    await asyncio.sleep(1.0)


@dataclass
class Load:
    """What a phase needs: the app, the push log, the database (for offers), and the callers' data."""

    backend: str
    client: object  # httpx.AsyncClient on the app
    services: object
    log: PushLog
    ack: int
    rng: random.Random
    phones: object  # itertools.count
    pids: dict = field(default_factory=dict)  # process name -> pid, for CPU accounting
    timers: bool = False  # the (c) configuration: a window short enough for offers to lapse in the phase

    def cpu(self) -> dict[str, float]:
        return {name: proc_cpu_seconds(pid) for name, pid in self.pids.items()}

    def cpu_per_incident(self, result: RoundResult, before: dict[str, float]) -> None:
        after = self.cpu()
        result.cpu_ms = {name: (after[name] - before[name]) * 1000 / max(1, result.ok) for name in before}

    def body(self) -> dict:
        rng = self.rng
        return {"kind": rng.choice(KINDS), "language": "kn" if rng.random() < 0.6 else rng.choice(LANGS),
                "location": {"lat": BENGALURU[0] + rng.gauss(0, 5) / KM_PER_DEG,
                             "lon": BENGALURU[1] + rng.gauss(0, 5) / KM_PER_DEG},
                "callback_phone": f"+919{next(self.phones):09d}", "note": "bench"}

    async def post(self, result: RoundResult, sent: dict[str, float]) -> None:
        import httpx

        body = self.body()
        t0 = time.monotonic()
        try:
            r = await self.client.post("/api/crisis/incidents", json=body)
            status = r.status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        t1 = time.monotonic()
        result.sent += 1
        if status == 201:
            result.ok += 1
            result.http_ms.append((t1 - t0) * 1000)
            sent[r.json()["reference"]] = t0
        else:
            result.errors[status] = result.errors.get(status, 0) + 1

    async def initial_offers(self, since: dt.datetime, refs) -> dict[str, list[tuple[int, str]]]:
        """(offer id, status) of the offers made in the request's own transaction (created_at equals the
        incident's), by incident reference."""
        initial: dict[str, list[tuple[int, str]]] = {}
        for row in await offers_since(self.services, since):
            if row.reference in refs and not row.broadcast and row.created_at == row.i_created:
                initial.setdefault(row.reference, []).append((row.id, row.status))
        return initial

    async def wait_pushes(self, since: dt.datetime, refs, *, at_least: float, cap: float) -> float:
        """Poll until every incident in `refs` has a push for an initial offer (or none of those offers is
        pending any more: a push job that finds its offer lapsed sends nothing) and `at_least` seconds
        passed, or `cap` seconds passed; returns the seconds waited."""
        t0 = time.monotonic()
        while True:
            await self.log.pull(self.ack)
            initial = await self.initial_offers(since, refs)
            waiting = [ref for ref in refs if ref in initial
                       and not any(i in self.log.first_arrival for i, _ in initial[ref])
                       and any(status == "pending" for _, status in initial[ref])]
            elapsed = time.monotonic() - t0
            if (not waiting and elapsed >= at_least) or elapsed > cap:
                return elapsed
            await asyncio.sleep(0.25)

    async def analyse(self, result: RoundResult, since: dt.datetime, sent: dict[str, float]) -> None:
        from union.models import utcnow

        await self.log.pull(self.ack)
        snapshot = utcnow()
        initial = await self.initial_offers(since, sent)
        for ref, t0 in sent.items():
            offers = initial.get(ref, [])
            if not offers:
                result.no_team += 1
                continue
            result.two_team += len(offers) > 1
            arrivals = [self.log.first_arrival[i] for i, _ in offers if i in self.log.first_arrival]
            if arrivals:
                result.push_ms.append((min(arrivals) - t0) * 1000)
            elif all(status == "lapsed" for _, status in offers):
                result.lapsed_unpushed += 1
            else:
                result.no_push += 1
        for row in await offers_since(self.services, since):
            if row.broadcast or row.reference not in sent:
                continue
            result.offers += 1
            if row.deadline_at > snapshot - dt.timedelta(seconds=2):
                continue
            if row.status == "lapsed" and row.answered_at is not None:
                result.lateness_ms.append((row.answered_at - row.deadline_at).total_seconds() * 1000)
            elif row.status == "pending":
                result.still_pending += 1
                result.lateness_ms.append((snapshot - row.deadline_at).total_seconds() * 1000)
        result.pushes = self.log.count
        result.bad_headers = self.log.bad_headers + self.log.undecryptable


async def burst_phase(load: Load, *, callers: int, bursts: int, cap: float) -> RoundResult:
    """`bursts` times: `callers` requests sent at the same moment (each caller presses "Get help" once);
    then wait until each of them has its push (at most 30 s) and half a second more. At the end, wait
    until the offers' deadlines had time to fire, for (c)."""
    from union.models import utcnow

    result = RoundResult(load.backend, "burst", callers, load.ack, timers=load.timers)
    since = utcnow() - dt.timedelta(milliseconds=5)
    sent: dict[str, float] = {}
    stop_at = time.monotonic() + cap
    cpu0 = load.cpu()
    for n in range(bursts):
        if time.monotonic() > stop_at:
            break
        mine: dict[str, float] = {}
        t0 = time.monotonic()
        await asyncio.gather(*(load.post(result, mine) for _ in range(callers)))
        result.seconds += time.monotonic() - t0
        sent.update(mine)
        await load.wait_pushes(since, mine, at_least=0.0 if n == bursts - 1 else 0.5, cap=30)
    load.cpu_per_incident(result, cpu0)
    result.drain_seconds = await load.wait_pushes(since, sent, at_least=load.ack + 2.5 if load.timers else 0,
                                                  cap=max(60, load.ack + 10))
    await load.analyse(result, since, sent)
    return result


async def sustained_phase(load: Load, *, callers: int, total: int, cap: float, spread: float = 0.0) -> RoundResult:
    """`callers` callers, each sending its next request as soon as the last one was answered, until
    `total` were sent (or `cap` seconds passed); then the same drain as for bursts. `spread` > 0: the
    k-th request is not sent before k * spread / total seconds (so that, for (c), the load lasts longer
    than the acknowledgement window and the lapses come while requests still arrive)."""
    from union.models import utcnow

    result = RoundResult(load.backend, "sustained", callers, load.ack, timers=load.timers)
    since = utcnow() - dt.timedelta(milliseconds=5)
    sent: dict[str, float] = {}
    counter = itertools.count()
    stop_at = time.monotonic() + cap

    async def caller() -> None:
        while (k := next(counter)) < total and time.monotonic() < stop_at:
            if spread:
                await asyncio.sleep(max(0.0, t0 + k * spread / total - time.monotonic()))
            await load.post(result, sent)

    cpu0 = load.cpu()
    t0 = time.monotonic()
    await asyncio.gather(*(caller() for _ in range(callers)))
    result.seconds = time.monotonic() - t0
    await load.wait_pushes(since, sent, at_least=0.0, cap=60)
    load.cpu_per_incident(result, cpu0)
    result.drain_seconds = await load.wait_pushes(since, sent, at_least=load.ack + 2.5 if load.timers else 0,
                                                  cap=max(60, load.ack + 10))
    await load.analyse(result, since, sent)
    return result


def wait_for_worker(proc: subprocess.Popen, redis_url: str, log: Path, timeout: float = 60) -> None:
    """The arq worker writes its health-check key on its first poll (after its start-up sweep)."""
    from redis import Redis

    client = Redis.from_url(redis_url)
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise SystemExit(f"union worker exited with {proc.returncode}; its log:\n{log.read_text()}")
            if client.exists("arq:queue:health-check"):
                return
            time.sleep(0.1)
    finally:
        client.close()
    raise SystemExit(f"union worker did not start within {timeout:.0f} s; its log:\n{log.read_text()}")


def stop_worker(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGINT)  # arq finishes its running jobs and exits
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=5)


async def rounds(app_base: str, push_base: str, subs, settings, ack: int, modes: list[str], pids: dict,
                 backend: str, args, rng: random.Random, timers: bool = False) -> list[RoundResult]:
    """The phases of one server configuration: a warm-up, then per caller count the chosen modes."""
    import httpx

    import workers.registry  # noqa: F401
    from union.services import build_services

    services = await build_services(settings, jobs_backend="none")
    phones = itertools.count((int(time.time() * 1000) % 10_000_000) * 10)
    out = []
    # Idle connections are dropped before uvicorn's 5 s keep-alive timeout, so a request never races the
    # server closing its connection (an httpx ReadError that says nothing about the app).
    limits = httpx.Limits(max_connections=max(args.callers), max_keepalive_connections=max(args.callers),
                          keepalive_expiry=2.0)
    try:
        async with httpx.AsyncClient(base_url=app_base, limits=limits, timeout=60) as client:
            load = Load(backend, client, services, PushLog(client, push_base, subs), ack, rng, phones, pids,
                        timers=timers)
            # Warm-up (not measured): connections, caches, the first VAPID signatures.
            await burst_phase(load, callers=5, bursts=2, cap=60)
            await settle(services)
            totals = args.timer_incidents if timers else args.incidents
            for callers, bursts, total in zip(args.callers, args.bursts, totals):
                for mode in modes:
                    load0 = load_text()
                    if mode == "burst" and bursts > 0:
                        say(f"  {backend}, ack {ack} s: {bursts} bursts of {callers} simultaneous incidents …")
                        res = await burst_phase(load, callers=callers, bursts=bursts, cap=args.round_cap)
                    elif mode == "sustained" and total > 0:
                        say(f"  {backend}, ack {ack} s: {callers} callers, {total} incidents"
                            + (f" spread over {args.timer_spread:g} s …" if timers else " without pause …"))
                        res = await sustained_phase(load, callers=callers, total=total, cap=args.round_cap,
                                                    spread=args.timer_spread if timers else 0.0)
                    else:
                        continue
                    res.load = f"{load0} -> {load_text()}"
                    out.append(res)
                    await settle(services)
    finally:
        await services.close()
    return out


def end_to_end(backend: str, args, workdir: Path) -> tuple[list[RoundResult], list[str]]:
    """(b) and (c) for one backend: "sqlite" (embedded jobs) or "postgres" (PostgreSQL + Redis + arq worker)."""
    from redis import Redis

    from union.settings import Settings

    home = workdir / backend
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNION_")}
    env.update({
        "UNION_DATA_DIR": str(home / "var"), "UNION_LOG_LEVEL": "WARNING",
        "UNION_PUSH_ALLOW_LOCAL_ENDPOINTS": "true", "UNION_PUSH_BACKEND": "webpush",
        # Teams never answer in this benchmark: without this, three misses escalate and broadcast to
        # every available team (hundreds of pushes an incident), a different path from the one measured.
        "UNION_MAX_OFFER_MISSES": "1000",
        # All callers share 127.0.0.1; each also gives a new phone number, which the limit never refuses.
        "UNION_PUBLIC_REQUESTS_PER_WINDOW": "1000000",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    })
    notes: list[str] = []
    pg_name = None
    redis_url = None
    procs: list[Server] = []
    worker: subprocess.Popen | None = None
    union_cli = [sys.executable, "-m", "union.cli"]
    try:
        if backend == "postgres":
            redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
            r = Redis.from_url(redis_url)
            try:
                if r.dbsize():
                    raise SystemExit(f"Redis db {args.redis_db} is not empty: choose another with --redis-db")
            finally:
                r.close()
            pg_name = f"union_bench_{uuid.uuid4().hex[:10]}"
            asyncio.run(_pg(f"CREATE DATABASE {pg_name}"))
            env["UNION_DATABASE_URL"] = PG_ADMIN.rsplit("/", 1)[0] + "/" + pg_name
            env["UNION_REDIS_URL"] = redis_url
        done = subprocess.run(union_cli + ["migrate"], env=env, cwd=home, capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise SystemExit(f"union migrate failed:\n{done.stdout}\n{done.stderr}")

        push_port = free_port()
        procs.append(start("push service", [sys.executable, str(Path(__file__).resolve()), "--push-service",
                                            "--port", str(push_port)], env=env, cwd=home,
                           ready_path="/_records?from=0", port=push_port, log=home / "push.log"))
        push_base = procs[-1].base_url
        settings = Settings(_env_file=None, data_dir=home / "var", database_url=env.get("UNION_DATABASE_URL"),
                            redis_url=None)
        rng = random.Random(args.seed + (1 if backend == "sqlite" else 2))
        t0 = time.perf_counter()
        subs = asyncio.run(seed_e2e(settings, n_teams=args.e2e_teams, push_url=push_base, rng=rng))
        say(f"  {backend}: {len(subs)} teams, responders and push subscriptions in {time.perf_counter() - t0:.1f} s")

        pids = {"push service": procs[0].proc.pid}
        results: list[RoundResult] = []
        # Two configurations, each with a fresh web process (and worker): (b) with the default
        # acknowledgement window, so no offer lapses while the pushes are measured; then (c) with a short
        # window and no team ever answering, so offers lapse and are re-offered under the same load.
        for ack, modes, timers in ((args.window, args.modes, False), (args.ack, ["sustained"], True)):
            if not modes:
                continue
            env["UNION_ACK_TIMEOUT_SECONDS"] = str(ack)
            if backend == "postgres":
                if args.arq_poll_delay is None:
                    argv = union_cli + ["worker"]
                else:  # what-if: the same worker settings with another poll delay (not what `union worker` runs)
                    argv = [sys.executable, "-c",
                            "from arq.worker import Worker; from union.settings import Settings; "
                            "from workers.arq_worker import worker_settings; "
                            f"Worker(**worker_settings(Settings()), poll_delay={float(args.arq_poll_delay)!r}).run()"]
                fh = (home / f"worker-ack{ack}.log").open("wb")
                worker = subprocess.Popen(argv, env=env, cwd=home, stdout=fh, stderr=subprocess.STDOUT)
                fh.close()
                wait_for_worker(worker, redis_url, home / f"worker-ack{ack}.log")
                pids["worker"] = worker.pid
            app_port = free_port()
            web = ["--workers", str(args.web_processes)] if backend == "postgres" and args.web_processes > 1 else []
            procs.append(start("union serve", union_cli + ["serve", "--host", "127.0.0.1", "--port", str(app_port)] + web,
                               env=env, cwd=home, ready_path="/healthz", port=app_port,
                               log=home / f"app-ack{ack}.log"))
            pids["web"] = procs[-1].proc.pid
            results += asyncio.run(rounds(procs[-1].base_url, push_base, subs, settings, ack, modes, dict(pids),
                                          backend, args, rng, timers))
            for server in procs[1:]:
                if server.proc.poll() is not None:
                    notes.append(f"{server.name} exited early ({server.proc.returncode})")
            procs.pop().stop()
            if worker is not None:
                stop_worker(worker)
                worker = None
        if backend == "postgres" and args.web_processes > 1:
            notes.append(f"{args.web_processes} web processes (union serve --workers {args.web_processes}); "
                         "their CPU is summed as 'web'")
        if args.arq_poll_delay is not None and backend == "postgres":
            notes.append(f"WHAT-IF: the arq worker ran with poll_delay={args.arq_poll_delay} s "
                         "(`union worker` uses arq's default of 0.5 s)")
        for path in sorted(home.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()
            found = []
            for n, line in enumerate(lines):
                if " WARNING " in line or " ERROR " in line:
                    found.append(line)
                elif line.startswith("Traceback"):  # name the exception: the first unindented line after it
                    end = next((m for m in range(n + 1, len(lines)) if lines[m] and not lines[m][0].isspace()), n)
                    found.append("Traceback … " + lines[end])
            if found and path.name != "push.log":
                notes.append(f"{path.name}: {len(found)} warnings or errors, e.g. {found[0][:300]}")
        return results, notes
    finally:
        for server in reversed(procs):
            server.stop()
        if worker is not None:
            stop_worker(worker)
        if pg_name:
            asyncio.run(_pg(f"DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)"))
        if redis_url:
            r = Redis.from_url(redis_url)
            try:
                r.flushdb()  # it was empty when we started (checked above)
            finally:
                r.close()


def e2e_lines(results: list[RoundResult], args) -> list[str]:
    lines = []
    header = (f"  {'database, jobs, load':<38}{'callers':>8}{'ok/sent':>9}{'inc/s':>7}{'http p50':>10}{'p99':>7}"
              f"{'push p50':>10}{'p99':>7}{'max':>7}  target")
    lines += [header, "  " + "-" * (len(header) - 2)]
    for r in results:
        target = 50 if r.callers <= 20 else 150
        p99 = pct(r.push_ms, .99)
        verdict = "-" if p99 != p99 else ("met" if p99 < target else "MISSED")
        lines.append(f"  {r.label:<38}{r.callers:>8}{f'{r.ok}/{r.sent}':>9}{r.ok / r.seconds if r.seconds else 0:>7.0f}"
                     f"{fmt(pct(r.http_ms, .5), 0):>10}{fmt(pct(r.http_ms, .99), 0):>7}"
                     f"{fmt(pct(r.push_ms, .5), 0):>10}{fmt(p99, 0):>7}"
                     f"{fmt(max(r.push_ms) if r.push_ms else float('nan'), 0):>7}  p99<{target} {verdict}")
    lines.append("  (milliseconds. push = from sending the request to the push service receiving the first push of"
                 " the incident's offer.")
    lines.append("   burst: the callers each send one request at the same moment, a few times over; sustained: each"
                 " caller sends again as soon as answered. inc/s: incidents answered per second of load)")
    for r in results:
        lines.append(f"    {r.backend} {r.mode} x{r.callers}: {r.offers} offers ({r.two_team} two-team incidents), "
                     f"{r.pushes} pushes received in all so far, no team {r.no_team}, no push by the end {r.no_push}, "
                     f"offer lapsed before its push was sent {r.lapsed_unpushed}, "
                     f"errors {r.errors or 'none'}, bad push headers or undecryptable {r.bad_headers}, "
                     f"drain {r.drain_seconds:.1f} s, load avg {r.load}")
        lines.append("      CPU ms per incident until its push: "
                     + ", ".join(f"{name} {ms:.1f}" for name, ms in r.cpu_ms.items())
                     + (" (PostgreSQL's and Redis's own CPU not counted)" if r.backend == "postgres" else ""))
    if not any(r.timers for r in results):
        return lines
    lines.append("")
    lines.append(f"(c) Acknowledgement timer lateness (window {args.ack} s, incidents sent over {args.timer_spread:g} s,"
                 " no team answers: answered_at of the lapse minus deadline_at, over the offers of the phase)")
    header = (f"  {'database, jobs, load':<38}{'callers':>8}{'timers':>8}{'per s':>7}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'max ms':>9}{'pending':>9}  target")
    lines += [header, "  " + "-" * (len(header) - 2)]
    for r in results:
        if not r.timers:
            continue  # no offer lapses within a phase with the default window
        p99 = pct(r.lateness_ms, .99)
        verdict = "-" if p99 != p99 else ("met" if p99 < 1000 else "MISSED")
        rate = len(r.lateness_ms) / (r.seconds + r.drain_seconds) if r.seconds + r.drain_seconds else float("nan")
        lines.append(f"  {r.label:<38}{r.callers:>8}{len(r.lateness_ms):>8}{fmt(rate, 1):>7}"
                     f"{fmt(pct(r.lateness_ms, .5), 0):>9}"
                     f"{fmt(p99, 0):>9}{fmt(max(r.lateness_ms) if r.lateness_ms else float('nan'), 0):>9}"
                     f"{r.still_pending:>9}  p99<1000 {verdict}")
    lines.append("  (timers: offers whose deadline passed 2 s or more before the end of the phase, first offers and"
                 " re-offers; per s: those per second of the phase, load and drain; pending: not yet lapsed then,"
                 " counted at their observed lateness, a lower bound)")
    return lines


def e2e_reading(results: list[RoundResult], args) -> list[str]:
    """A short interpretation computed from the figures: the CPU floor, and where the push waits."""
    lines = ["Reading (b) and (c):"]
    for backend in ("sqlite", "postgres"):
        rows = [r for r in results if r.backend == backend and not r.timers and r.cpu_ms]
        if not rows:
            continue
        web = statistics.median(r.cpu_ms.get("web", 0.0) for r in rows)
        name = "SQLite, embedded jobs" if backend == "sqlite" else "PostgreSQL, Redis + arq"
        text = (f"  {name}: the web process used ~{web:.0f} ms of CPU per incident"
                + (" (request and its jobs: they run in the same process)" if backend == "sqlite" else
                   f" for the request, the worker ~{statistics.median(r.cpu_ms.get('worker', 0.0) for r in rows):.0f}"
                   " ms for its jobs"))
        text += (f". One process on one event loop serves requests one CPU slice at a time, so N simultaneous"
                 f" incidents need at least N x {web:.0f} ms of a core before the last is answered: "
                 f"{20 * web:.0f} ms for 20 and {100 * web:.0f} ms for 100, against targets of 50 and 150 ms.")
        lines.append(text)
        gaps = [pct(r.push_ms, .5) - pct(r.http_ms, .5) for r in rows if r.push_ms and r.http_ms]
        if gaps:
            lines.append(f"    push p50 minus HTTP p50 (the job path after the commit): "
                         + ", ".join(f"{g:.0f}" for g in gaps) + " ms"
                         + (" (includes arq's poll of the queue, every 0.5 s by default)" if backend == "postgres"
                            else " (the embedded runner shares the event loop and SQLite's one write lock with intake)"))
    timers = [r for r in results if r.timers and r.lateness_ms]
    if timers:
        lines.append(f"  (c): with a {args.ack} s window and nobody answering, every open incident is re-offered every"
                     f" {args.ack} s (a push, an SMS timer and a deadline each time) while requests still arrive."
                     " Deadlines are claimed by the job runner's timer loop (union.jobs.TIMER_KINDS), not behind the"
                     " queued pushes and intake work; a much shorter window asks for more re-offers per second than"
                     " the machine can make, and then the lateness measures that backlog, not the timers.")
    lines.append(f"  This machine: {os.cpu_count()} cores shared with other work (load average above), and the load"
                 " generator, the push service, the web process and the worker compete for them too.")
    return lines


# --- Main ------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run with small numbers")
    parser.add_argument("--only", default="decision,sqlite,postgres",
                        help="comma-separated parts: decision, sqlite, postgres (default: all)")
    parser.add_argument("--teams", type=int, help="(a) teams over Karnataka (default 10000)")
    parser.add_argument("--points", type=int, help="(a) incident points (default 2000; quick 300)")
    parser.add_argument("--full-scan-points", type=int, help="(a) points also ranked over all teams (default 300)")
    parser.add_argument("--e2e-teams", type=int, help="(b) teams around Bengaluru (default 400; quick 200)")
    parser.add_argument("--callers", default="20,100", help="(b) concurrent callers, comma-separated")
    parser.add_argument("--bursts", help="(b) bursts per caller count (default 5,2; quick 2,1)")
    parser.add_argument("--incidents", help="(b) incidents of the sustained phase per caller count "
                                            "(default 150,250; quick 40,100)")
    parser.add_argument("--modes", default="burst,sustained", help="(b) burst, sustained or both (default)")
    parser.add_argument("--timer-incidents", help="(c) incidents of the short-window phase per caller count "
                                                  "(default 100,200; quick 40,100)")
    parser.add_argument("--ack", type=int, default=20,
                        help="(c) acknowledgement window in seconds (default 20: re-offers the machine can keep up with)")
    parser.add_argument("--timer-spread", type=float, default=None,
                        help="(c) seconds over which each phase's incidents are sent (default twice the window, so"
                             " offers lapse while requests still arrive)")
    parser.add_argument("--window", type=int, default=60,
                        help="(b) acknowledgement window while pushes are measured (default 60, the app's default)")
    parser.add_argument("--round-cap", type=float, default=120.0, help="(b) at most this many seconds of load a round")
    parser.add_argument("--redis-db", type=int, default=15, help="a Redis db number that is empty (default 15)")
    parser.add_argument("--arq-poll-delay", type=float, default=None,
                        help="what-if: run the worker with this arq poll_delay instead of `union worker`")
    parser.add_argument("--web-processes", type=int, default=1,
                        help="PostgreSQL: web processes (`union serve --workers N`, the production shape; default 1)."
                             " SQLite runs one process (embedded jobs, one writer)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, SQLite files)")
    parser.add_argument("--push-service", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.push_service:
        asyncio.run(_push_service(args.port))
        return 0
    # The run is self-contained: settings come from what it sets, not from the shell's UNION_* variables.
    for name in [k for k in os.environ if k.startswith("UNION_") and not k.startswith("UNION_TEST_")]:
        del os.environ[name]

    q = args.quick
    args.teams = max(100, min(args.teams or 10_000, 200_000))
    args.points = max(10, min(args.points or (300 if q else 2000), 20_000))
    args.full_scan_points = max(0, min(args.full_scan_points if args.full_scan_points is not None else
                                       (50 if q else 300), args.points))
    args.e2e_teams = max(20, min(args.e2e_teams or (200 if q else 400), 5000))
    args.callers = [max(1, min(int(x), 500)) for x in args.callers.split(",")]

    def per_level(text: str, top: int) -> list[int]:
        values = [max(0, min(int(x), top)) for x in text.split(",")]
        return (values + values[-1:] * len(args.callers))[:len(args.callers)]

    args.bursts = per_level(args.bursts or ("2,1" if q else "5,2"), 50)
    args.incidents = per_level(args.incidents or ("40,100" if q else "150,250"), 5000)
    args.timer_incidents = per_level(args.timer_incidents or ("40,100" if q else "100,200"), 5000)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip() in ("burst", "sustained")]
    args.ack = max(1, min(args.ack, 120))
    args.timer_spread = max(0.0, min(args.timer_spread if args.timer_spread is not None else 2.0 * args.ack, 600.0))
    args.window = max(30, min(args.window, 600))
    args.round_cap = max(5.0, min(args.round_cap, 600.0))
    args.web_processes = max(1, min(args.web_processes, 8))
    parts = {p.strip() for p in args.only.split(",") if p.strip()}

    try:
        asyncio.run(_pg("SELECT 1"))
        args.postgres_available = True
    except Exception as exc:  # noqa: BLE001
        args.postgres_available = False
        say(f"PostgreSQL at {PG_ADMIN.rsplit('/', 1)[0]} does not answer ({type(exc).__name__}); skipping it")

    load_start = load_text()
    t_start = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="union-bench-dispatch-"))
    report: list[str] = []
    e2e: list[RoundResult] = []
    notes: list[str] = []
    try:
        say(f"Working in {workdir} …")
        if "decision" in parts:
            report += decision_benchmark(args, workdir)
            report.append("")
        for backend in ("sqlite", "postgres"):
            if backend not in parts:
                continue
            if backend == "postgres" and not args.postgres_available:
                notes.append("PostgreSQL end to end: skipped (no PostgreSQL)")
                continue
            say(f"(b) end to end on {backend} …")
            results, backend_notes = end_to_end(backend, args, workdir)
            e2e += results
            notes += [f"{backend}: {n}" for n in backend_notes]
        if e2e:
            report.append(f"(b) Incident request -> push received by the local push service "
                          f"({args.e2e_teams} teams within ~15 km of central Bengaluru, one responder and one "
                          f"push subscription each; real pywebpush encryption and VAPID)")
            report += e2e_lines(e2e, args)
            report += [""] + e2e_reading(e2e, args)
    finally:
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    info = machine()
    info["load avg"] = f"{load_start} at start, {load_text()} at end (1/5/15 min)"
    print()
    print("Dispatch benchmark (issue 3), " + ("QUICK smoke run" if q else "full run")
        + f", {time.perf_counter() - t_start:.0f} s")
    for key, value in info.items():
        print(f"  {key:<12} {value}")
    print("  NOTE: this machine's cores are shared with other work (see the load average), and the load generator,")
    print("        the push service, the web process and the worker all run on it too: figures are a floor for it.")
    print()
    for line in report:
        print(line)
    if notes:
        print()
        print("Notes:")
        for n in notes:
            print(f"  - {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
