"""Adds crisis response's long-lived clients to the shared services: the push
sender and VAPID key, the in-memory team table for dispatch, and the
optional routing provider."""

from crisis.push import build_push_sender
from crisis.routing import OsrmRouting
from crisis.teamcache import TeamCache
from union.services import SERVICE_EXTENSIONS


def extend_services(services) -> None:
    services.extras["push"], services.extras["vapid"] = build_push_sender(services.settings, services.http)
    # Kept exact by the database: stamps of migration 0009 (SQLite), writers' transaction ids of 0010 (PostgreSQL).
    services.extras["team_cache"] = TeamCache()
    if services.settings.routing_url:
        services.extras["routing"] = OsrmRouting(services.http, services.settings.routing_url,
                                                 timeout=services.settings.routing_timeout_seconds)


SERVICE_EXTENSIONS.append(extend_services)
