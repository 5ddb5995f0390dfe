"""Choosing teams: a pure function over candidate teams, so the rules can be
tested as tables and benchmarked without a database.

Fallback order (each step only when the one before found nobody):
  1. available teams that have every skill the kind needs and speak the caller's
     language, within the normal radius, nearest first;
  2. the same without the language match (an interpreter on the phone is better
     than nobody), within the normal radius;
  3. steps 1 and 2 again within the wide radius;
  4. nobody: the incident escalates (dispatchers alerted, broadcast to every
     available team within the escalation radius).
A team's position is its live location while fresh, otherwise its base.
Every nearer team that was not chosen gets a reason in the decision record.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from crisis.geo import haversine_km
from crisis.models import IncidentKind, Skill, TeamStatus

KIND_SKILLS: dict[str, frozenset[str]] = {
    IncidentKind.police: frozenset({Skill.police_station}),
    IncidentKind.hired_criminals: frozenset({Skill.police_station}),
    IncidentKind.client_violence: frozenset({Skill.counselling}),
    IncidentKind.gatekeeper: frozenset({Skill.gatekeeper}),
    IncidentKind.eviction: frozenset({Skill.legal}),
    IncidentKind.medical: frozenset({Skill.medical}),
    IncidentKind.other: frozenset(),
}


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ is several times slower, and every
class TeamView:          # dispatch builds hundreds of these; treat them as read-only all the same
    id: int
    name: str
    status: str
    base_lat: float
    base_lon: float
    live_lat: float | None
    live_lon: float | None
    live_at: dt.datetime | None
    skills: frozenset[str]
    languages: frozenset[str]

    def position(self, now: dt.datetime, stale_after: dt.timedelta) -> tuple[float, float, str]:
        if self.live_at is not None and self.live_lat is not None and now - self.live_at <= stale_after:
            return self.live_lat, self.live_lon, "live"
        return self.base_lat, self.base_lon, "base"


@dataclass(slots=True)
class Candidate:
    team: TeamView
    distance_km: float
    position: str  # live or base
    language_match: bool
    eta_seconds: int | None = None


@dataclass
class Ranking:
    """Candidates in the order they should be offered, and why others were passed over."""

    ordered: list[Candidate]
    passed_over: list[dict] = field(default_factory=list)
    step: str = ""


# Why a nearer team was passed over (the dispatcher's log; crisis.teamcache gives the same words).
ALREADY_OFFERED = "already offered this incident"


def not_available(status: str) -> str:
    return f"not available ({status})"


def lacks_skills(needed: frozenset, skills: frozenset) -> str:
    return "lacks skills: " + ", ".join(sorted(needed - skills))


def does_not_speak(language: str) -> str:
    return f"does not speak {language}"


def rank_teams(*, lat: float, lon: float, kind: str, language: str, teams: list[TeamView], now: dt.datetime,
               stale_after: dt.timedelta, radius_km: float, wide_radius_km: float,
               exclude: set[int] = frozenset()) -> Ranking:
    needed = KIND_SKILLS.get(kind, frozenset())
    eligible: list[Candidate] = []
    rejected: list[tuple[float, TeamView, str]] = []
    for team in teams:
        t_lat, t_lon, where = team.position(now, stale_after)
        distance = haversine_km(lat, lon, t_lat, t_lon)
        if distance > wide_radius_km:
            continue
        if team.id in exclude:
            rejected.append((distance, team, ALREADY_OFFERED))
        elif team.status != TeamStatus.available:
            rejected.append((distance, team, not_available(team.status)))
        elif not needed <= team.skills:
            rejected.append((distance, team, lacks_skills(needed, team.skills)))
        else:
            eligible.append(Candidate(team, distance, where, language in team.languages))
    eligible.sort(key=lambda c: c.distance_km)
    steps = [
        ("language, radius", lambda c: c.language_match and c.distance_km <= radius_km),
        ("no language match, radius", lambda c: c.distance_km <= radius_km),
        ("language, wide radius", lambda c: c.language_match),
        ("no language match, wide radius", lambda c: True),
    ]
    for step, accept in steps:
        ordered = [c for c in eligible if accept(c)]
        if ordered:
            break
    else:
        step, ordered = "none", []
    chosen_distance = ordered[0].distance_km if ordered else wide_radius_km
    chosen_ids = {c.team.id for c in ordered}
    passed = [{"team": t.id, "name": t.name, "km": round(d, 2), "reason": reason}
              for d, t, reason in rejected if d < chosen_distance]
    for c in eligible:
        if c.team.id not in chosen_ids and c.distance_km < chosen_distance:
            passed.append({"team": c.team.id, "name": c.team.name, "km": round(c.distance_km, 2),
                           "reason": does_not_speak(language)})
    passed.sort(key=lambda p: p["km"])
    return Ranking(ordered, passed, step)


def naive_nearest(*, lat: float, lon: float, kind: str, language: str, teams: list[TeamView], now: dt.datetime,
                  stale_after: dt.timedelta) -> TeamView | None:
    """The obvious full scan (for the benchmark's comparison): nearest eligible team with the language."""
    needed = KIND_SKILLS.get(kind, frozenset())
    best, best_d = None, float("inf")
    for team in teams:
        if team.status != TeamStatus.available or not needed <= team.skills or language not in team.languages:
            continue
        t_lat, t_lon, _ = team.position(now, stale_after)
        d = haversine_km(lat, lon, t_lat, t_lon)
        if d < best_d:
            best, best_d = team, d
    return best
