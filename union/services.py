"""Long-lived collaborators, built once by `build_services(settings)` for the web
app's lifespan, the arq worker's start-up and the CLI."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from union.crypto import KeyedHasher, Vault
from union.db import make_engine, make_sessionmaker
from union.ratelimit import LocalRateLimiter, RateLimiter, RedisRateLimiter
from union.settings import Settings


# Callables (services) -> None that domains register to add their clients to `extras`.
SERVICE_EXTENSIONS: list = []


@dataclass
class Services:
    settings: Settings
    engine: object
    writer: object  # the engine behind `sessions`: the same as `engine` except on SQLite
    sessions: object  # async_sessionmaker: read-write transactions (BEGIN IMMEDIATE on SQLite)
    reader: object  # async_sessionmaker for transactions that only read (no write lock on SQLite)
    vault: Vault
    phone_hash: KeyedHasher
    rate_limiter: RateLimiter
    jobs: object = None  # union.jobs.JobQueue
    redis: object = None
    http: object = None  # the shared httpx.AsyncClient for outside services
    sms: object = None  # union.sms.SmsSender
    extras: dict = field(default_factory=dict)

    async def close(self) -> None:
        if self.jobs is not None:
            await self.jobs.stop()
        for extra in self.extras.values():
            close = getattr(extra, "close", None)  # domain clients with connections of their own (billing)
            if close is not None and inspect.iscoroutinefunction(close):
                await close()
        if self.http is not None:
            await self.http.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()
        if self.writer is not self.engine:
            await self.writer.dispose()


async def build_services(settings: Settings, *, jobs_backend: str | None = None) -> Services:
    """jobs_backend: "embedded", "redis", or "none" (the arq worker runs jobs itself)."""
    engine = make_engine(settings.resolved_database_url)
    # On SQLite all writes go through one connection (see make_engine); reads use the other pool.
    writer = make_engine(settings.resolved_database_url, single_writer=True) if settings.is_sqlite else engine
    redis = None
    if settings.redis_url:
        from redis.asyncio import Redis

        redis = Redis.from_url(settings.redis_url)
    services = Services(
        settings=settings,
        engine=engine,
        writer=writer,
        sessions=make_sessionmaker(writer),
        reader=make_sessionmaker(engine, read_only=True),
        vault=Vault(settings.load_encryption_keys()),
        phone_hash=KeyedHasher(settings.resolved_hash_key),
        rate_limiter=RedisRateLimiter(redis) if redis is not None else LocalRateLimiter(),
        redis=redis,
    )
    import httpx

    from union.sms import build_sms_sender

    services.http = httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)
    services.sms = build_sms_sender(settings, services.http)
    for extend in SERVICE_EXTENSIONS:  # each domain adds its own long-lived clients
        extend(services)
    backend = jobs_backend or settings.jobs_mode
    if backend == "redis":
        from workers.arq_worker import ArqJobs

        services.jobs = await ArqJobs.connect(settings.redis_url)
    elif backend == "embedded":
        from workers.embedded import EmbeddedJobs

        services.jobs = EmbeddedJobs(services, sweep_interval=settings.sweep_interval_seconds)
    if services.jobs is not None:
        await services.jobs.start()
    return services
