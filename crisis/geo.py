"""Great-circle distance and bounding boxes (enough for choosing the nearest team;
an optional routing provider re-ranks by travel time)."""

from __future__ import annotations

import math

EARTH_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dphi = p2 - p1
    dlmb = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(a)))


def bounding_box(lat: float, lon: float, radius_km: float) -> tuple[float, float, float, float]:
    """(min_lat, max_lat, min_lon, max_lon) containing every point within radius_km."""
    dlat = math.degrees(radius_km / EARTH_KM)
    dlon = math.degrees(radius_km / (EARTH_KM * max(0.01, math.cos(math.radians(lat)))))
    return lat - dlat, lat + dlat, lon - dlon, lon + dlon


def valid_point(lat, lon) -> bool:
    return (isinstance(lat, (int, float)) and isinstance(lon, (int, float)) and not isinstance(lat, bool)
            and not isinstance(lon, bool) and math.isfinite(lat) and math.isfinite(lon)
            and -90 <= lat <= 90 and -180 <= lon <= 180)
