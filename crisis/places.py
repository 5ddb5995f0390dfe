"""The gazetteer of Karnataka localities (crisis/data/karnataka_places.csv, open
government data; attribution in crisis/data/README.md), for area and landmark
look-up at intake. Read-only data, loaded once per process."""

from __future__ import annotations

import csv
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "karnataka_places.csv"


@dataclass(frozen=True)
class Place:
    district: str
    name: str
    pincode: str
    lat: float
    lon: float

    @property
    def label(self) -> str:
        return f"{self.name}, {self.district}"


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


@lru_cache(maxsize=1)
def gazetteer() -> tuple[list[tuple[str, str, Place]], dict[str, list[Place]]]:
    """([(normalised name, normalised label, place)], {look-up key: places})."""
    places: list[tuple[str, str, Place]] = []
    by_key: dict[str, list[Place]] = {}
    with DATA.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            place = Place(row["district"], row["place"], row["pincode"], float(row["lat"]), float(row["lon"]))
            name, label = _norm(place.name), _norm(place.label)
            places.append((name, label, place))
            for key in {name, label, place.pincode}:
                by_key.setdefault(key, []).append(place)
    return places, by_key


def search(query: str, *, limit: int = 10) -> list[Place]:
    """Places whose name starts with the query, then those containing it; also a pincode."""
    q = _norm(query or "")
    if len(q) < 2:
        return []
    places, by_key = gazetteer()
    found = list(by_key.get(q, []))
    for stage in (lambda name, label: name.startswith(q), lambda name, label: q in label):
        for name, label, place in places:
            if len(found) >= limit:
                return found
            if stage(name, label) and place not in found:
                found.append(place)
    return found


def lookup(area: str) -> Place | None:
    """One place for an area name ("Place" or "Place, District" or a pincode); None if unknown.

    A name shared by several places resolves to the first; callers who can ask (pages)
    offer the choices from `search` instead.
    """
    found = gazetteer()[1].get(_norm(area or ""))
    return found[0] if found else None


def districts() -> list[str]:
    return sorted({place.district for _, _, place in gazetteer()[0]})
