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
