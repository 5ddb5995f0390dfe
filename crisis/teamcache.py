"""The team table in memory for dispatch decisions, kept exact by the database.

Before each decision the cache asks the database, in one small statement run in
the decision's own transaction, for the team rows changed since the state it
holds; with no change that is one row (the clock). So the database stays the
truth (DESIGN §3): whoever changes teams (this process, another one, the CLI or
plain SQL) is seen, a second process keeps its own copy and brings it up to date
the same way, and nothing another process needs lives only here. A grid of cells
finds the teams near a point without looking at the others, and `rank` makes the
decision over the records it holds, with the exact result of
`crisis.dispatch.rank_teams` over the teams of the search box.

How "changed since" is known differs by database:

SQLite (migration 0009): every team row carries a stamp that triggers set on each
insert and update from the `teamclock` row. SQLite has one writer, so stamps are
handed out in commit order and "every row stamped after v" is exact.

PostgreSQL (migration 0010): concurrent transactions would commit such stamps out
of order, so a trigger stamps each inserted or updated row with the writing
transaction's id instead (`pg_current_xact_id()`: no lock, no shared row), and
the cache keeps the snapshot (`pg_current_snapshot()`) in which it read. The
rows changed since are those whose writer that snapshot does not see
(`NOT pg_visible_in_snapshot`): writers still running when it was taken, or
that started after it; all of them have an id of at least the snapshot's xmin,
so an index range on the stamp finds them. Snapshots taken later see everything
earlier ones saw, and the copy's refreshes take turns (a lock in the process),
so the copy only moves forward. The asking transaction's own id is not listed
among the running ones in its own snapshot, so it is added to the snapshot kept:
its later team changes are then found too.

On both, only committed rows may enter the shared copy: the session asking must
hold no uncommitted team changes of its own. A caller that cannot promise that
gets the newer rows as a private overlay for its own decision only. A deleted team
moves the clock's epoch (both databases' triggers): the copy is read again.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3

from sqlalchemy.ext.asyncio import AsyncSession

from crisis.dispatch import (ALREADY_OFFERED, KIND_SKILLS, Candidate, Ranking, TeamView, does_not_speak, lacks_skills,
                             not_available)
from crisis.geo import EARTH_KM, bounding_box
from crisis.models import Team, TeamStatus

CELL_DEGREES = 0.1  # about 11 km of latitude: a 25 km box spans 5 to 6 cells each way

_team = Team.__table__.c
_DEG = math.pi / 180.0  # what math.radians multiplies by: the distances below are haversine_km's to the bit
# Below this fraction of the latitude-only lower bound a rejected team cannot be nearer than the chosen one.
_BOUND_SLACK = 1 - 1e-9

_COLUMNS = "t.id, t.name, t.status, t.base_lat, t.base_lon, t.live_lat, t.live_lon, t.live_at, t.skills, t.languages"

# SQLite: select(clock, team columns).select_from(teamclock LEFT JOIN team ON team.version > ?);
# SEARCH team USING INDEX ix_team_version: with nothing changed, one row and no team row read.
_CHANGES_SQL = (f"SELECT c.version, c.epoch, {_COLUMNS}, t.version FROM teamclock AS c"
                " LEFT JOIN team AS t ON t.version > ? WHERE c.id = 1")

# PostgreSQL: the epoch, this statement's snapshot, this transaction's id (if it has one), and the team rows
# whose writer the kept snapshot ($2) does not see; $1 is that snapshot's xmin (an index range on version).
_PG_HEAD = ("SELECT c.epoch, pg_current_snapshot()::text, pg_current_xact_id_if_assigned()::text, "
            f"{_COLUMNS}, t.version FROM teamclock AS c LEFT JOIN team AS t ON ")
_PG_CHANGES_SQL = (_PG_HEAD + "t.version >= $1 AND NOT pg_visible_in_snapshot(t.version::text::xid8, $2::text::pg_snapshot)"
                   " WHERE c.id = 1")
_PG_ALL_SQL = _PG_HEAD + "true WHERE c.id = 1"

_NEEDS = frozenset(KIND_SKILLS.values()) | {frozenset()}
# The passed-over reasons rank_teams writes, by status or by (needed, team skills); bounded by the statuses
# and skill sets there are.
_REASONS: dict = {}

# Fields of a record (a tuple: reading it is the hot loop of every decision).
_ID, _BLAT, _BLON, _BP, _BC, _LLAT, _LLON, _LP, _LC, _LAT, _AVAIL, _SKILLS, _LANGS, _VIEW, _DUAL = range(15)


def _cell(lat: float, lon: float) -> tuple[int, int]:
    return math.floor(lat / CELL_DEGREES), math.floor(lon / CELL_DEGREES)


def _record(team: TeamView) -> tuple:
    bp = team.base_lat * _DEG
    live = team.live_lat is not None and team.live_lon is not None
    lp = team.live_lat * _DEG if live else None
    dual = live and _cell(team.base_lat, team.base_lon) != _cell(team.live_lat, team.live_lon)
    return (team.id, team.base_lat, team.base_lon, bp, math.cos(bp),
            team.live_lat if live else None, team.live_lon if live else None, lp, math.cos(lp) if live else None,
            team.live_at if live else None, team.status == TeamStatus.available, team.skills, team.languages, team,
            dual)


def _snapshot_with(snapshot: str, own: str | None) -> str:
    """The snapshot text with this transaction's own id listed as running (see the module's docstring)."""
    if not own:
        return snapshot
    xmin, xmax, xip = snapshot.split(":")
    running = {int(x) for x in xip.split(",") if x}
    own_id = int(own)
    if own_id >= int(xmax):
        return snapshot  # cannot happen (an id given before the snapshot is below its xmax); nothing to add
    running.add(own_id)
    return f"{min(int(xmin), own_id)}:{xmax}:{','.join(str(x) for x in sorted(running))}"


def _position(rec, box, fresh_from, *, inside: bool = False):
    """Where a team counts from in a ranking: (radians of latitude, their cosine, longitude, "live" or
    "base"), its live location while fresh, else its base; None when neither lies in the search box.
    inside: its cell lies wholly in the box (no test needed). The box test is the team's, whichever
    cell found it."""
    if not inside:
        min_lat, max_lat, min_lon, max_lon = box
        if not (min_lat <= rec[1] <= max_lat and min_lon <= rec[2] <= max_lon):
            llat = rec[5]
            if llat is None or not (min_lat <= llat <= max_lat and min_lon <= rec[6] <= max_lon):
                return None
    live_at = rec[9]
    if live_at is not None and live_at >= fresh_from:
        return rec[7], rec[8], rec[6], "live"
    return rec[3], rec[4], rec[2], "base"


class TeamCache:
    def __init__(self) -> None:
        self.version = -1  # SQLite: newest stamp applied; -1: never loaded
        self.snapshot: str | None = None  # PostgreSQL: the snapshot the copy reflects; None: never loaded
        self.epoch = -1
        self.teams: dict[int, TeamView] = {}
        self.stamps: dict[int, int] = {}
        self.records: dict[int, tuple] = {}
        # Per set of skills a kind needs, two grids: the teams a decision of that kind ranks (available, with
        # the skills) and the others, needed only for the passed-over reasons of teams nearer than the chosen
        # one (a few cells around the point). The grids of the empty set hold every team between them.
        self.grids: dict[frozenset, dict[tuple[int, int], dict[int, tuple]]] = {n: {} for n in _NEEDS}
        self.other_grids: dict[frozenset, dict[tuple[int, int], dict[int, tuple]]] = {n: {} for n in _NEEDS}
        self._live_at = None  # SQLAlchemy's conversion of the stored live_at
        self._lock: asyncio.Lock | None = None

    # --- reading the database ---------------------------------------------------------

    async def _driver(self, session: AsyncSession):
        # One session asks for many decisions in one transaction (a lapse's dispatch, the benchmark): the
        # transaction's driver connection is remembered with it (it cannot change until the transaction ends).
        tx = session.sync_session.get_transaction()
        known = session.info.get("teamcache.driver")
        if tx is not None and known is not None and known[0] is tx and self._live_at is not None:
            return known[1], known[2]
        conn = await session.connection()
        if self._live_at is None:
            dialect = conn.dialect
            self._live_at = _team.live_at.type.dialect_impl(dialect).result_processor(dialect, None) or (lambda v: v)
        # The DBAPI connection the session's connection already holds (no await: get_raw_connection() would
        # cost a greenlet hand-off for an attribute read).
        found = conn.dialect.name, conn.sync_connection.connection.driver_connection
        session.info["teamcache.driver"] = (session.sync_session.get_transaction(), *found)
        return found

    async def _changes(self, raw, since: int) -> tuple[int, int, list]:
        """SQLite: (clock version, epoch, team rows stamped after `since`) in one statement, in the session's
        own transaction, on the driver connection under the session; the rows are converted as SQLAlchemy
        would. Through the ORM a statement costs several hand-offs to aiosqlite's thread, and even one
        hand-off (0.3-0.6 ms of CPU on a busy machine: a thread switch and a wake-up of the event loop)
        costs ten times the statement itself (a few index entries; a read in WAL mode waits for no
        writer). So an update check runs on the sqlite3 connection directly: the session holds the
        connection and awaits nothing else meanwhile, so aiosqlite's thread is idle on it (SQLAlchemy opens
        file databases with check_same_thread=False; elsewhere, and for the first load, it is one hand-off)."""
        direct = getattr(raw, "_conn", None) if since != -1 else None
        rows = None
        if direct is not None:
            try:
                rows = direct.execute(_CHANGES_SQL, (since,)).fetchall()
            except sqlite3.ProgrammingError:  # created with check_same_thread (an in-memory database)
                rows = None
        if rows is None:
            rows = await raw.execute_fetchall(_CHANGES_SQL, (since,))
        if not rows:
            raise LookupError("teamclock has no row: is migration 0009 applied?")
        convert = self._live_at
        teams = [(*row[2:9], convert(row[9]), *row[10:]) for row in rows if row[2] is not None]
        return rows[0][0], rows[0][1], teams

    async def _pg_changes(self, raw, since: str | None) -> tuple[int, str, list]:
        """PostgreSQL: (epoch, snapshot to keep, team rows whose writer `since` does not see; all rows
        when `since` is None) in one statement of the session's own transaction."""
        if since is None:
            rows = await raw.fetch(_PG_ALL_SQL)
        else:
            rows = await raw.fetch(_PG_CHANGES_SQL, int(since.split(":", 1)[0]), since)
        if not rows:
            raise LookupError("teamclock has no row: is migration 0009 applied?")
        convert = self._live_at
        teams = [(*row[3:10], convert(row[10]), *row[11:]) for row in rows if row[3] is not None]
        return rows[0][0], _snapshot_with(rows[0][1], rows[0][2]), teams

    @staticmethod
    def _view(row) -> TeamView:
        from crisis.services import _words

        id_, name, status, base_lat, base_lon, live_lat, live_lon, live_at, skills, languages, _ = row
        return TeamView(id_, name, status, base_lat, base_lon, live_lat, live_lon, live_at, _words(skills),
                        _words(languages))

    # --- the shared copy --------------------------------------------------------------

    @staticmethod
    def _cells_of(record: tuple) -> set[tuple[int, int]]:
        cells = {_cell(record[_BLAT], record[_BLON])}
        if record[_LLAT] is not None:
            cells.add(_cell(record[_LLAT], record[_LLON]))
        return cells

    def _grids_of(self, record: tuple):
        for needed in _NEEDS:
            yield (self.grids if record[_AVAIL] and needed <= record[_SKILLS] else self.other_grids)[needed]

    def _put(self, team: TeamView) -> None:
        team_id = team.id
        record = _record(team)
        old = self.records.get(team_id)
        if old is not None:
            old_cells = self._cells_of(old)
            for grid in self._grids_of(old):
                for cell in old_cells:
                    found = grid.get(cell)
                    if found is not None:
                        found.pop(team_id, None)
        new_cells = self._cells_of(record)
        for grid in self._grids_of(record):
            for cell in new_cells:
                grid.setdefault(cell, {})[team_id] = record
        self.teams[team_id] = team
        self.records[team_id] = record

    def _apply(self, rows, *, stamped: bool) -> None:
        for row in rows:
            team_id, stamp = row[0], row[-1]
            if stamped:
                if self.stamps.get(team_id, -1) >= stamp:
                    continue  # another decision of this process applied it (or a newer state) already
                self.stamps[team_id] = stamp
            self._put(self._view(row))

    def _reset(self) -> None:
        self.version, self.snapshot, self.epoch = -1, None, -1
        self.teams, self.stamps, self.records = {}, {}, {}
        self.grids = {n: {} for n in _NEEDS}
        self.other_grids = {n: {} for n in _NEEDS}

    async def refresh(self, session: AsyncSession, *, committed_only: bool) -> dict[int, TeamView] | None:
        """Bring the copy up to date. Returns the overlay a caller with uncommitted changes must use
        ({} when there is none), or None when such a caller cannot use the copy at all (never loaded,
        or a team was deleted): it then asks the database directly."""
        dialect, raw = await self._driver(session)
        if dialect == "sqlite":
            return await self._refresh_sqlite(raw, committed_only=committed_only)
        return await self._refresh_pg(raw, committed_only=committed_only)

    async def _refresh_sqlite(self, raw, *, committed_only: bool) -> dict[int, TeamView] | None:
        since = self.version
        version, epoch, rows = await self._changes(raw, since)
        if committed_only:
            if since != -1 and epoch != self.epoch:  # a team was deleted: read everything again
                self._reset()
                version, epoch, rows = await self._changes(raw, -1)
            self._apply(rows, stamped=True)
            self.version = max(self.version, version)
            self.epoch = epoch
            return {}
        if since == -1 or epoch != self.epoch:
            return None
        return {row[0]: self._view(row) for row in rows}

    async def _refresh_pg(self, raw, *, committed_only: bool) -> dict[int, TeamView] | None:
        if not committed_only:
            since = self.snapshot
            if since is None:
                return None
            epoch, _, rows = await self._pg_changes(raw, since)
            if epoch != self.epoch:
                return None
            return {row[0]: self._view(row) for row in rows}
        # Refreshes of the shared copy take turns: each reads in a snapshot at least as new as the last
        # one's, so a slower, older read can never overwrite a newer one. (The connection is already the
        # session's: holding the lock never waits for the pool.)
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            since = self.snapshot
            epoch, snapshot, rows = await self._pg_changes(raw, since)
            if since is not None and epoch != self.epoch:  # a team was deleted: read everything again
                self._reset()
                epoch, snapshot, rows = await self._pg_changes(raw, None)
            self._apply(rows, stamped=False)
            self.snapshot, self.epoch = snapshot, epoch
        return {}

    # --- finding and ranking -----------------------------------------------------------

    def _in_box(self, box, cells):
        """(records, inside) for every cell of the grid that meets the box; inside=True: the cell lies wholly
        inside the box, so each of its teams has a position in it."""
        min_lat, max_lat, min_lon, max_lon = box
        (c0, d0), (c1, d1) = _cell(min_lat, min_lon), _cell(max_lat, max_lon)
        for c in range(c0, c1 + 1):
            for d in range(d0, d1 + 1):
                found = cells.get((c, d))
                if found:
                    # A cell wholly inside the box holds only teams with a position in the box.
                    inside = (c0 < c < c1 and d0 < d < d1)
                    yield found, inside

    def near(self, lat: float, lon: float, box: tuple[float, float, float, float],
             overlay: dict[int, TeamView]) -> list[TeamView]:
        """Teams whose base or live position lies in the box (any status): what the SQL box query returns."""
        min_lat, max_lat, min_lon, max_lon = box
        ids: set[int] = set()
        for grid in (self.grids[frozenset()], self.other_grids[frozenset()]):
            for found, _ in self._in_box(box, grid):
                ids.update(found)
        if overlay:
            ids |= overlay.keys()
        out = []
        for team_id in ids:
            team = overlay.get(team_id) if overlay else None
            if team is None:
                team = self.teams[team_id]
            if ((min_lat <= team.base_lat <= max_lat and min_lon <= team.base_lon <= max_lon)
                    or (team.live_lat is not None and team.live_lon is not None
                        and min_lat <= team.live_lat <= max_lat and min_lon <= team.live_lon <= max_lon)):
                out.append(team)
        out.sort(key=lambda t: t.id)
        return out

    def rank(self, *, lat: float, lon: float, kind: str, language: str, now, stale_after, radius_km: float,
             wide_radius_km: float, exclude, overlay: dict[int, TeamView]) -> Ranking:
        """Exactly rank_teams(teams=near(lat, lon, bounding_box(lat, lon, wide_radius_km), overlay), ...),
        without building a TeamView list or a candidate for teams that cannot matter: a team that is not
        eligible needs its distance only if a lower bound of it is below the chosen team's distance."""
        box = bounding_box(lat, lon, wide_radius_km)
        needed = KIND_SKILLS.get(kind, frozenset())
        fresh_from = now - stale_after  # now - live_at <= stale_after, in exact datetime arithmetic
        sin, cos, asin, sqrt = math.sin, math.cos, math.asin, math.sqrt
        p1 = lat * _DEG
        c1 = cos(p1)
        two_r = 2 * EARTH_KM
        limit = wide_radius_km
        eligible: list = []  # (distance, id, record, where, language match)
        rejected: list = []  # (id, record, p2, c2, lon2, where)
        seen: set[int] = set()
        key = needed if needed in self.grids else frozenset()  # (always a kind's set; else judge one by one)
        groups = [(found.values(), inside, False) for found, inside in self._in_box(box, self.grids[key])]
        if overlay:
            groups.append(([_record(t) for t in overlay.values()], False, True))
        for group, inside, from_overlay in groups:
            for rec in group:
                tid = rec[0]
                if overlay and not from_overlay and tid in overlay:
                    continue  # the overlay's own state of this team is ranked instead
                if rec[14]:  # in two cells (base and live): rank it once
                    if tid in seen:
                        continue
                    seen.add(tid)
                position = _position(rec, box, fresh_from, inside=inside)
                if position is None:
                    continue
                p2, c2, lon2, where = position
                if tid in exclude or not rec[10] or not needed <= rec[11]:
                    rejected.append((tid, rec, p2, c2, lon2, where))
                    continue
                # haversine_km, operation for operation (so the same float): radians of the team's latitude
                # and its cosine come precomputed; min(1.0, root) spelt as a comparison (no call).
                root = sqrt(sin((p2 - p1) / 2) ** 2 + c1 * c2 * sin(((lon2 - lon) * _DEG) / 2) ** 2)
                d = two_r * asin(root if root < 1.0 else 1.0)
                if d > limit:
                    continue
                eligible.append((d, tid, rec, where, language in rec[12]))
        eligible.sort()  # by distance, then id (ids are unique: the records are never compared)
        if any(e[4] and e[0] <= radius_km for e in eligible):
            step, ordered = "language, radius", [e for e in eligible if e[4] and e[0] <= radius_km]
        elif any(e[0] <= radius_km for e in eligible):
            step, ordered = "no language match, radius", [e for e in eligible if e[0] <= radius_km]
        elif any(e[4] for e in eligible):
            step, ordered = "language, wide radius", [e for e in eligible if e[4]]
        elif eligible:
            step, ordered = "no language match, wide radius", list(eligible)
        else:
            step, ordered = "none", []
        chosen_distance = ordered[0][0] if ordered else limit
        # Teams that are not available: only those nearer than the chosen one get a reason, so only the cells
        # within that distance are read (the box of that radius, widened by 0.01 degrees: a box's edge is
        # computed, not exact), each team still subject to the search box's test like every other.
        near_box = bounding_box(lat, lon, chosen_distance)
        near_box = (near_box[0] - 0.01, near_box[1] + 0.01, near_box[2] - 0.01, near_box[3] + 0.01)
        seen_other: set[int] = set()
        for group, _ in self._in_box(near_box, self.other_grids[key]):
            for rec in group.values():
                tid = rec[0]
                if overlay and tid in overlay:
                    continue
                if rec[14]:
                    if tid in seen_other:
                        continue
                    seen_other.add(tid)
                position = _position(rec, box, fresh_from)
                if position is not None:
                    rejected.append((tid, rec, *position))
        passed = []
        bound = chosen_distance / (EARTH_KM * _BOUND_SLACK)  # |latitude difference| (radians) beyond which d >= it
        for tid, rec, p2, c2, lon2, where in rejected:
            if abs(p2 - p1) > bound:
                continue
            root = sqrt(sin((p2 - p1) / 2) ** 2 + c1 * c2 * sin(((lon2 - lon) * _DEG) / 2) ** 2)
            d = two_r * asin(root if root < 1.0 else 1.0)
            if d > limit or not d < chosen_distance:
                continue
            team = rec[13]
            if tid in exclude:
                reason = ALREADY_OFFERED
            elif not rec[10]:
                reason = _REASONS.get(team.status)
                if reason is None:
                    reason = _REASONS[team.status] = not_available(team.status)
            else:
                reason = _REASONS.get((needed, team.skills))
                if reason is None:  # a few dozen sets of skills: each reason is made once
                    reason = _REASONS[(needed, team.skills)] = lacks_skills(needed, team.skills)
            passed.append({"team": tid, "name": team.name, "km": round(d, 2), "reason": reason})
        if len(passed) > 1:
            passed.sort(key=lambda p: p["team"])  # rank_teams lists these in team order (then sorts by km)
        if len(ordered) < len(eligible):
            chosen_ids = {e[1] for e in ordered}
            for d, tid, rec, where, match in eligible:
                if not d < chosen_distance:
                    break
                if tid not in chosen_ids:
                    passed.append({"team": tid, "name": rec[13].name, "km": round(d, 2),
                                   "reason": does_not_speak(language)})
        passed.sort(key=lambda p: p["km"])
        return Ranking([Candidate(rec[13], d, where, match) for d, tid, rec, where, match in ordered], passed, step)
