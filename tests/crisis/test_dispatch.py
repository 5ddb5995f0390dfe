"""Team selection as tables: `rank_teams` is pure, so every rule of the fallback
order (crisis/dispatch.py) is checked here without a database: skills per kind,
language within the radius, the wider radius, availability, stale live
locations, teams already asked, and the reasons recorded for every nearer team
that was passed over."""

from __future__ import annotations

import datetime as dt

import pytest

from crisis.dispatch import KIND_SKILLS, TeamView, rank_teams
from crisis.geo import haversine_km
from crisis.models import IncidentKind, Skill

NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
STALE = dt.timedelta(seconds=300)
HERE = (12.9716, 77.5946)
KM_PER_DEG = 111.19508  # great-circle km per degree of latitude (EARTH_KM 6371.0088)
ALL_SKILLS = frozenset(Skill)


def at_km(km: float) -> tuple[float, float]:
    """A point `km` due north of HERE."""
    return HERE[0] + km / KM_PER_DEG, HERE[1]


def team(id: int, km: float, *, skills=ALL_SKILLS, languages=("kn",), status="available",
         live_km: float | None = None, live_age_s: float | None = None) -> TeamView:
    lat, lon = at_km(km)
    live_lat = live_lon = live_at = None
    if live_km is not None:
        live_lat, live_lon = at_km(live_km)
        live_at = NOW - dt.timedelta(seconds=live_age_s or 0)
    return TeamView(id=id, name=f"T{id}", status=status, base_lat=lat, base_lon=lon, live_lat=live_lat,
                    live_lon=live_lon, live_at=live_at, skills=frozenset(skills), languages=frozenset(languages))


def rank(teams, *, kind="other", language="kn", radius=25.0, wide=150.0, exclude=frozenset()):
    return rank_teams(lat=HERE[0], lon=HERE[1], kind=kind, language=language, teams=teams, now=NOW,
                      stale_after=STALE, radius_km=radius, wide_radius_km=wide, exclude=set(exclude))


def ids(ranking) -> list[int]:
    return [c.team.id for c in ranking.ordered]


def passed(ranking) -> list[tuple[int, str]]:
    return [(p["team"], p["reason"]) for p in ranking.passed_over]


def test_helper_places_teams_at_the_stated_distance():
    assert haversine_km(*HERE, *at_km(10)) == pytest.approx(10, abs=0.01)


def test_every_kind_has_a_skill_rule():
    assert set(KIND_SKILLS) == set(IncidentKind)


@pytest.mark.parametrize("kind, skill", [
    ("police", "police_station"), ("hired_criminals", "police_station"), ("client_violence", "counselling"),
    ("gatekeeper", "gatekeeper"), ("eviction", "legal"), ("medical", "medical"),
])
def test_a_nearer_team_without_the_kinds_skill_is_passed_over(kind, skill):
    near = team(1, 2, skills=ALL_SKILLS - {skill})
    far = team(2, 8, skills={skill})
    ranking = rank([near, far], kind=kind)
    assert ids(ranking) == [2]
    assert passed(ranking) == [(1, f"lacks skills: {skill}")]
    assert ranking.step == "language, radius"


def test_other_kind_needs_no_skill():
    ranking = rank([team(1, 3, skills=()), team(2, 1, skills=())], kind="other")
    assert ids(ranking) == [2, 1]
    assert passed(ranking) == []


def test_nobody_with_the_skill_means_nobody():
    ranking = rank([team(1, 1, skills={"legal"}), team(2, 5, skills={"counselling"})], kind="medical")
    assert ranking.ordered == [] and ranking.step == "none"
    assert passed(ranking) == [(1, "lacks skills: medical"), (2, "lacks skills: medical")]


def test_language_match_within_the_radius_beats_a_nearer_team_without_it():
    ranking = rank([team(1, 2, languages=("te",)), team(2, 10, languages=("kn", "en")), team(3, 20, languages=("kn",))])
    assert ranking.step == "language, radius"
    # Only speakers of the language are offered while any is within the radius, nearest first.
    assert ids(ranking) == [2, 3]
    assert passed(ranking) == [(1, "does not speak kn")]
    assert ranking.ordered[0].language_match is True


def test_without_a_speaker_in_the_radius_the_nearest_team_in_the_radius_is_next():
    # The Kannada speaker is 30 km away, outside the 25 km radius: a nearer team with an interpreter wins.
    ranking = rank([team(1, 12, languages=("te",)), team(2, 4, languages=("hi",)), team(3, 30, languages=("kn",))])
    assert ranking.step == "no language match, radius"
    assert ids(ranking) == [2, 1]
    assert passed(ranking) == []
    assert ranking.ordered[0].language_match is False


def test_beyond_the_radius_a_speaker_in_the_wide_radius_comes_first():
    ranking = rank([team(1, 40, languages=("te",)), team(2, 60, languages=("kn",))])
    assert ranking.step == "language, wide radius"
    assert ids(ranking) == [2]
    assert passed(ranking) == [(1, "does not speak kn")]


def test_then_anyone_in_the_wide_radius():
    ranking = rank([team(1, 40, languages=("te",)), team(2, 90, languages=("hi",)), team(3, 200, languages=("kn",))])
    assert ranking.step == "no language match, wide radius"
    assert ids(ranking) == [1, 2]
    assert passed(ranking) == []  # the speaker 200 km away is outside the wide radius: not considered


def test_teams_beyond_the_wide_radius_are_not_considered_at_all():
    ranking = rank([team(1, 151), team(2, 400, status="off_duty")])
    assert ranking.ordered == [] and ranking.step == "none"
    assert ranking.passed_over == []


@pytest.mark.parametrize("status", ["off_duty", "offered", "busy"])
def test_teams_that_are_not_available_are_skipped_with_their_state(status):
    ranking = rank([team(1, 1, status=status), team(2, 6)])
    assert ids(ranking) == [2]
    assert passed(ranking) == [(1, f"not available ({status})")]


def test_mixed_unavailable_teams_are_listed_nearest_first_with_km():
    ranking = rank([team(4, 5), team(1, 1, status="off_duty"), team(3, 3, status="busy"),
                    team(2, 2, status="offered"), team(5, 9, status="busy")])
    assert ids(ranking) == [4]
    assert passed(ranking) == [(1, "not available (off_duty)"), (2, "not available (offered)"),
                               (3, "not available (busy)")]
    assert [p["km"] for p in ranking.passed_over] == [1.0, 2.0, 3.0]
    assert [p["name"] for p in ranking.passed_over] == ["T1", "T2", "T3"]


def test_a_fresh_live_location_is_used():
    # Based 50 km away, but reported its position 1 km away a minute ago.
    moving = team(1, 50, live_km=1, live_age_s=60)
    ranking = rank([moving, team(2, 5)])
    assert ids(ranking) == [1, 2]
    assert ranking.ordered[0].position == "live"
    assert ranking.ordered[0].distance_km == pytest.approx(1, abs=0.01)


def test_a_live_location_exactly_at_the_stale_limit_still_counts():
    ranking = rank([team(1, 50, live_km=1, live_age_s=300), team(2, 5)])
    assert ids(ranking)[0] == 1 and ranking.ordered[0].position == "live"


def test_a_stale_live_location_falls_back_to_the_base():
    stale = team(1, 50, live_km=1, live_age_s=301)
    ranking = rank([stale, team(2, 5)])
    assert ids(ranking) == [2]  # the stale team's base (50 km) is outside the radius
    ranking = rank([stale], radius=25, wide=150)
    assert ranking.step == "language, wide radius"
    assert ranking.ordered[0].position == "base"
    assert ranking.ordered[0].distance_km == pytest.approx(50, abs=0.01)


def test_a_fresh_live_location_far_away_counts_even_if_the_base_is_near():
    ranking = rank([team(1, 1, live_km=80, live_age_s=10), team(2, 5)])
    assert ids(ranking) == [2]
    assert ranking.passed_over == []  # team 1 is now 80 km away: not nearer than the chosen team


def test_teams_already_offered_this_incident_are_excluded():
    ranking = rank([team(1, 1), team(2, 2), team(3, 3)], exclude={1, 2})
    assert ids(ranking) == [3]
    assert passed(ranking) == [(1, "already offered this incident"), (2, "already offered this incident")]


def test_once_every_speaker_was_asked_the_nearest_other_team_is_next():
    teams = [team(1, 2, languages=("te",)), team(2, 10, languages=("kn",))]
    ranking = rank(teams, exclude={2})
    assert ranking.step == "no language match, radius"
    assert ids(ranking) == [1]
    assert passed(ranking) == []  # team 2 is farther than team 1


def test_passed_over_lists_exactly_the_nearer_teams_with_the_right_reason():
    teams = [
        team(1, 1, status="off_duty"),
        team(2, 2, skills={"legal"}),
        team(3, 3, languages=("ur",)),
        team(4, 4, status="busy"),
        team(5, 6),                         # chosen
        team(6, 7, status="off_duty"),      # farther: not listed
        team(7, 8, languages=("te",)),      # farther: not listed
    ]
    ranking = rank(teams, kind="police")
    assert ids(ranking)[0] == 5
    assert passed(ranking) == [(1, "not available (off_duty)"), (2, "lacks skills: police_station"),
                               (3, "does not speak kn"), (4, "not available (busy)")]


def test_equally_near_teams_are_both_candidates_and_neither_is_passed_over():
    a, b = team(1, 5), team(2, 5)
    ranking = rank([a, b])
    assert sorted(ids(ranking)) == [1, 2]
    assert ranking.ordered[0].distance_km == ranking.ordered[1].distance_km
    assert ranking.passed_over == []
    # The order among equals is the input order (stable), so a ranking is reproducible.
    assert ids(rank([b, a])) == [2, 1]


def test_nobody_at_all_gives_an_empty_ranking():
    ranking = rank([])
    assert ranking.ordered == [] and ranking.passed_over == [] and ranking.step == "none"


def test_nobody_available_lists_every_team_in_the_wide_radius():
    ranking = rank([team(1, 1, status="busy"), team(2, 100, status="off_duty")])
    assert ranking.ordered == [] and ranking.step == "none"
    assert passed(ranking) == [(1, "not available (busy)"), (2, "not available (off_duty)")]
