"""Configuration, one pydantic-settings class per concern, all under the WANGGE_ prefix."""

from __future__ import annotations

from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_COMMON = SettingsConfigDict(env_prefix="WANGGE_", env_file=".env", extra="ignore")


class DatabaseSettings(BaseSettings):
    """Where the data lives: an external PostGIS (`WANGGE_DATABASE_URL`) or the embedded cluster."""

    model_config = _COMMON

    database_url: str | None = None
    data_dir: Path = Path(".wangge")
    pgdata: Path | None = None
    pg_bindir: Path | None = None

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not v.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
            raise ValueError("WANGGE_DATABASE_URL must be a PostgreSQL URL, e.g. postgresql+psycopg://user@host/db")
        if v.startswith("postgres://"):
            v = "postgresql://" + v[len("postgres://") :]
        if v.startswith("postgresql://"):
            v = "postgresql+psycopg://" + v[len("postgresql://") :]
        return v

    @property
    def cluster_dir(self) -> Path:
        return (self.pgdata or self.data_dir / "pgdata").absolute()


class LocateSettings(BaseSettings):
    """Rules for point → cell assignment."""

    model_config = _COMMON

    snap_distance_m: float = 30.0

    @field_validator("snap_distance_m")
    @classmethod
    def _non_negative(cls, v: float) -> float:
        if not v >= 0:
            raise ValueError("WANGGE_SNAP_DISTANCE_M must be a distance in metres ≥ 0")
        return v


class ServerSettings(BaseSettings):
    model_config = _COMMON

    host: str = "127.0.0.1"
    port: int = 8000


class AuthSettings(BaseSettings):
    """Bearer tokens: WANGGE_SECRET_KEY signs them; unset, a random key is kept in the data directory."""

    model_config = _COMMON

    secret_key: str | None = None
    token_minutes: int = 12 * 60
    data_dir: Path = Path(".wangge")

    @field_validator("secret_key")
    @classmethod
    def _strong(cls, v: str | None) -> str | None:
        if v is not None and (len(v) < 32 or v.lower() in {"changeme", "change-me", "secret", "password"}):
            raise ValueError("WANGGE_SECRET_KEY must be at least 32 random characters")
        return v

    def key(self) -> str:
        if self.secret_key:
            return self.secret_key
        import secrets

        path = self.data_dir / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()


class SupervisionSettings(BaseSettings):
    model_config = _COMMON

    supervision_seconds: float = 60.0
    due_soon_hours: float = 4.0
