"""The one settings module: every `UNION_*` environment variable (and `./.env`).

Embedded defaults need nothing installed: SQLite under the data folder, secrets
generated on first run into that folder with mode 0600, jobs in-process when no
Redis is configured.
"""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _secret_file(path: Path, make: callable) -> str:
    """Read a secret from `path`, creating it (mode 0600) on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    # O_EXCL: two processes starting together must not write two different secrets.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="UNION_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("./var"), description="Folder for the SQLite file and generated secrets.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite under data_dir. PostgreSQL: postgresql+asyncpg://...")
    redis_url: str | None = Field(default=None, description="Redis for arq jobs and rate limits; unset = in-process jobs.")
    secret_key: str | None = Field(default=None, description="Signs CSRF tokens; default generated into data_dir/secret.key.")
    encryption_keys: str | None = Field(default=None, description="Comma-separated Fernet keys, newest first; default data_dir/encryption.keys.")
    hash_key: str | None = Field(default=None, description="Key of the keyed hash used to find phone numbers; default data_dir/hash.key.")
    stripe_api_key: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_api_base: str | None = Field(default=None, description="Stripe API address (a local stand-in in tests); unset = Stripe's.")
    stripe_test_mode: bool = Field(default=False, description="Without a Stripe key: take card payments through the built-in Stripe stand-in (TEST MODE, no real money). `union serve --demo` turns it on.")
    ack_timeout_seconds: int = 60
    push_allow_local_endpoints: bool = False
    session_idle_minutes: int = 30
    session_max_hours: int = 12
    secure_cookies: bool = Field(default=False, description="Mark cookies Secure; set true behind TLS.")
    max_body_bytes: int = 3_145_728  # a 2 MB welfare document with its form
    login_attempts_per_window: int = 10
    public_requests_per_window: int = 30
    rate_window_seconds: int = 300
    sweep_interval_seconds: float = 5.0
    default_language: str = "en"
    default_currency: str = "INR"
    grace_months: int = Field(default=2, ge=0, description="Months a member may be behind on dues and still be in grace (not lapsed).")
    quick_exit_url: str = "https://www.google.com/search?q=weather"
    log_level: str = "INFO"
    base_url: str = Field(default="http://127.0.0.1:8000", description="Public address, used in SMS links and VAPID claims.")
    dues_reminder_day: int = Field(default=10, ge=1, le=28, description="Day of the month the dues reminders go to members in grace.")

    # Crisis response
    location_stale_seconds: int = 300
    dispatch_radius_km: float = 25.0
    dispatch_wide_radius_km: float = 150.0
    escalation_radius_km: float = 50.0
    max_offer_misses: int = 3
    two_team_kinds: str = Field(default="police", description="Incident kinds that ask for two teams (space-separated).")
    retention_days: int = 30
    follow_up_days: int = 3
    routing_url: str | None = Field(default=None, description="OSRM base URL; unset = great-circle distance only.")
    routing_timeout_seconds: float = 1.0
    push_backend: str = Field(default="webpush", description="webpush, or recording (demo and tests).")
    vapid_subject: str = Field(default="mailto:admin@example.org", description="Contact for push services (VAPID sub).")

    # SMS (a Twilio-compatible HTTP API) and inbound webhooks
    sms_backend: str = Field(default="recording", description="recording (stand-in) or http (Twilio-compatible API).")
    sms_api_base: str = "https://api.twilio.com"
    sms_account_sid: str | None = None
    sms_auth_token: str | None = Field(default=None, description="Also verifies inbound webhook signatures.")
    sms_from: str | None = None

    # Treasurer's books
    checkpoint_signing_key: str | None = Field(default=None, description="Ed25519 private key (base64 of 32 bytes) that signs month-end checkpoints; default generated into data_dir/checkpoint_ed25519.key.")

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Accept the plain forms people copy from docs; we always use async drivers.
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+asyncpg://" + url.split("://", 1)[1]
            elif url.startswith("sqlite:///"):
                url = "sqlite+aiosqlite:///" + url[len("sqlite:///"):]
            return url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{(self.data_dir / 'union.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def jobs_mode(self) -> str:
        return "redis" if self.redis_url else "embedded"

    @cached_property
    def resolved_secret_key(self) -> str:
        return self.secret_key or _secret_file(self.data_dir / "secret.key", lambda: secrets.token_urlsafe(48))

    @cached_property
    def resolved_hash_key(self) -> bytes:
        value = self.hash_key or _secret_file(self.data_dir / "hash.key", lambda: secrets.token_urlsafe(48))
        return value.encode()

    @property
    def encryption_keys_file(self) -> Path:
        return self.data_dir / "encryption.keys"

    @property
    def vapid_key_file(self) -> Path:
        return self.data_dir / "vapid_private.pem"

    @cached_property
    def resolved_checkpoint_signing_key(self) -> str:
        import base64

        return self.checkpoint_signing_key or _secret_file(
            self.data_dir / "checkpoint_ed25519.key", lambda: base64.b64encode(secrets.token_bytes(32)).decode())

    def load_encryption_keys(self) -> list[str]:
        """Fernet keys, newest (primary) first."""
        if self.encryption_keys:
            return [k.strip() for k in self.encryption_keys.split(",") if k.strip()]
        from cryptography.fernet import Fernet

        text = _secret_file(self.encryption_keys_file, lambda: Fernet.generate_key().decode())
        return [line.strip() for line in text.splitlines() if line.strip()]


def get_settings(**overrides) -> Settings:
    return Settings(**overrides)
