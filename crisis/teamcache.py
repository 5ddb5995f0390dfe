"""The team table in memory for dispatch decisions (SQLite), kept exact by the
database's change stamps.

Every team row carries a stamp that the database sets on each insert and update
(triggers of migration 0009, whoever writes: this process, another one, the CLI
or plain SQL), and `teamclock` holds the newest stamp. Before each decision the
cache asks, in one small query, for the clock and the rows stamped after the
stamp it holds; with no change that is one row. So the database stays the truth
(DESIGN §3): a second process keeps its own copy and brings it up to date the same
way, and nothing another process needs lives only here. A grid of cells finds
the teams whose base or live position lies in a search box without looking at
the others.

Only committed rows may enter the shared copy: the session asking must hold no
uncommitted team changes of its own (a write that is rolled back would give its
stamp again to another change, which the copy would then miss). A caller that
cannot promise that gets the newer rows as a private overlay for its own
decision only. A deleted team moves the clock's epoch: the copy is read again.

SQLite only: it has one writer, so stamps are handed out in commit order. On
PostgreSQL the decision uses the indexed box query (crisis.services.teams_near).
"""

from __future__ import annotations

import math

from sqlalchemy.ext.asyncio import AsyncSession

from crisis.dispatch import TeamView
from crisis.models import Team

CELL_DEGREES = 0.2  # about 22 km of latitude: a 25 km box spans 3 to 4 cells each way

_team = Team.__table__.c


# The same as select(clock, team columns).select_from(teamclock LEFT JOIN team ON team.version > ?);
# SEARCH team USING INDEX ix_team_version: with nothing changed, one row and no team row read.
_CHANGES_SQL = (
    "SELECT c.version, c.epoch, t.id, t.name, t.status, t.base_lat, t.base_lon, t.live_lat, t.live_lon, t.live_at,"
    " t.skills, t.languages, t.version FROM teamclock AS c LEFT JOIN team AS t ON t.version > ? WHERE c.id = 1")


def _cell(lat: float, lon: float) -> tuple[int, int]:
    return math.floor(lat / CELL_DEGREES), math.floor(lon / CELL_DEGREES)


class TeamCache:
    def __init__(self) -> None:
        self.version = -1  # newest stamp applied; -1: never loaded
        self.epoch = -1
        self.teams: dict[int, TeamView] = {}
        self.stamps: dict[int, int] = {}
        self.cells: dict[tuple[int, int], set[int]] = {}
        self._live_at = None  # SQLAlchemy's conversion of the stored live_at

    # --- reading the database ---------------------------------------------------------

    async def _changes(self, session: AsyncSession, since: int) -> tuple[int, int, list]:
        """(clock version, epoch, team rows stamped after `since`) in one statement, in the session's
        own transaction. It runs on the driver connection under the session: through the ORM a
        statement costs several hand-offs to aiosqlite's thread (about 1 ms of CPU on a busy machine,
        more than the rest of the decision); the rows are converted as SQLAlchemy would."""
        conn = await session.connection()
        if self._live_at is None:
            dialect = conn.dialect
            self._live_at = _team.live_at.type.dialect_impl(dialect).result_processor(dialect, None) or (lambda v: v)
        raw = (await conn.get_raw_connection()).driver_connection
        cursor = await raw.execute(_CHANGES_SQL, (since,))
        try:
            rows = await cursor.fetchall()
        finally:
            await cursor.close()
        if not rows:
            raise LookupError("teamclock has no row: is migration 0009 applied?")
        convert = self._live_at
        teams = [(*row[2:9], convert(row[9]), *row[10:]) for row in rows if row[2] is not None]
        return rows[0][0], rows[0][1], teams

    @staticmethod
    def _view(row) -> TeamView:
        from crisis.services import _words

        id_, name, status, base_lat, base_lon, live_lat, live_lon, live_at, skills, languages, _ = row
        return TeamView(id_, name, status, base_lat, base_lon, live_lat, live_lon, live_at, _words(skills),
                        _words(languages))

    # --- the shared copy --------------------------------------------------------------

    def _cells_of(self, team: TeamView) -> set[tuple[int, int]]:
        cells = {_cell(team.base_lat, team.base_lon)}
        if team.live_lat is not None and team.live_lon is not None:
            cells.add(_cell(team.live_lat, team.live_lon))
        return cells

    def _apply(self, rows) -> None:
        for row in rows:
            team_id, stamp = row[0], row[-1]
            if self.stamps.get(team_id, -1) >= stamp:
                continue  # another decision of this process applied it (or a newer state) already
            old = self.teams.get(team_id)
            team = self._view(row)
            if old is not None:
                for cell in self._cells_of(old) - self._cells_of(team):
                    self.cells.get(cell, set()).discard(team_id)
            for cell in self._cells_of(team):
                self.cells.setdefault(cell, set()).add(team_id)
            self.teams[team_id] = team
            self.stamps[team_id] = stamp

    def _reset(self) -> None:
        self.version, self.epoch = -1, -1
        self.teams, self.stamps, self.cells = {}, {}, {}

    async def refresh(self, session: AsyncSession, *, committed_only: bool) -> dict[int, TeamView] | None:
        """Bring the copy up to date. Returns the overlay a caller with uncommitted changes must use
        ({} when there is none), or None when such a caller cannot use the copy at all (never loaded,
        or a team was deleted): it then asks the database directly."""
        since = self.version
        version, epoch, rows = await self._changes(session, since)
        if committed_only:
            if since != -1 and epoch != self.epoch:  # a team was deleted: read everything again
                self._reset()
                version, epoch, rows = await self._changes(session, -1)
            self._apply(rows)
            self.version = max(self.version, version)
            self.epoch = epoch
            return {}
        if since == -1 or epoch != self.epoch:
            return None
        return {row[0]: self._view(row) for row in rows}

    def near(self, lat: float, lon: float, box: tuple[float, float, float, float],
             overlay: dict[int, TeamView]) -> list[TeamView]:
        """Teams whose base or live position lies in the box (any status): what the SQL box query returns."""
        min_lat, max_lat, min_lon, max_lon = box
        (c0, d0), (c1, d1) = _cell(min_lat, min_lon), _cell(max_lat, max_lon)
        ids: set[int] = set()
        cells = self.cells
        for c in range(c0, c1 + 1):
            for d in range(d0, d1 + 1):
                found = cells.get((c, d))
                if found:
                    ids |= found
        if overlay:
            ids |= overlay.keys()
        teams = self.teams
        out = []
        for team_id in ids:
            team = overlay.get(team_id) if overlay else None
            if team is None:
                team = teams[team_id]
            if ((min_lat <= team.base_lat <= max_lat and min_lon <= team.base_lon <= max_lon)
                    or (team.live_lat is not None and team.live_lon is not None
                        and min_lat <= team.live_lat <= max_lat and min_lon <= team.live_lon <= max_lon)):
                out.append(team)
        out.sort(key=lambda t: t.id)
        return out
