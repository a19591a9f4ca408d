"""The relational model. Alembic migrations (gis/migrations) create and change it; this module mirrors them.

Geometry is CGCS2000 lon/lat (EPSG:4490). Cells and worker assignments carry validity dates so that a redrawn
grid keeps its history (a row is valid on day d when valid_from <= d and (valid_to is null or d < valid_to)).
"""

from __future__ import annotations

import datetime as dt

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SRID = 4490
LEVELS = ("district", "township", "village")
ROLES = ("grid_worker", "grid_leader")
DEVICE_KINDS = ("sensor", "camera")


class Base(DeclarativeBase):
    pass


class Jurisdiction(Base):
    __tablename__ = "jurisdictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(12), unique=True)
    name: Mapped[str] = mapped_column(Text)
    level: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("jurisdictions.id"), index=True)
    kind: Mapped[str | None] = mapped_column(Text)
    households: Mapped[int | None] = mapped_column(Integer)
    population: Mapped[int | None] = mapped_column(Integer)
    area_m2: Mapped[float] = mapped_column(Float)
    geom = mapped_column(Geometry("MULTIPOLYGON", srid=SRID, spatial_index=False), nullable=False)

    __table_args__ = (CheckConstraint("level in ('district', 'township', 'village')", name="ck_level"),)


class Cell(Base):
    __tablename__ = "cells"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(15), index=True)
    name: Mapped[str] = mapped_column(Text)
    village_id: Mapped[int] = mapped_column(ForeignKey("jurisdictions.id"), index=True)
    households: Mapped[int | None] = mapped_column(Integer)
    population: Mapped[int | None] = mapped_column(Integer)
    area_m2: Mapped[float] = mapped_column(Float)
    valid_from: Mapped[dt.date] = mapped_column(Date)
    valid_to: Mapped[dt.date | None] = mapped_column(Date)
    geom = mapped_column(Geometry("MULTIPOLYGON", srid=SRID, spatial_index=False), nullable=False)


class Worker(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(String(32))


class Assignment(Base):
    """A worker's responsibility for a cell (grid worker) or a village (grid leader) over a period."""

    __tablename__ = "worker_assignments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker_id: Mapped[str] = mapped_column(ForeignKey("workers.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    cell_id: Mapped[int | None] = mapped_column(ForeignKey("cells.id"), index=True)
    village_id: Mapped[int | None] = mapped_column(ForeignKey("jurisdictions.id"), index=True)
    valid_from: Mapped[dt.date] = mapped_column(Date)
    valid_to: Mapped[dt.date | None] = mapped_column(Date)

    __table_args__ = (
        CheckConstraint(
            "(role = 'grid_worker' and cell_id is not null and village_id is null) or "
            "(role = 'grid_leader' and village_id is not null and cell_id is null)",
            name="ck_assignment_target",
        ),
    )


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    subtype: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(Text)
    geom = mapped_column(Geometry("POINT", srid=SRID, spatial_index=False), nullable=False)

    __table_args__ = (CheckConstraint("kind in ('sensor', 'camera')", name="ck_device_kind"),)


class WaterBody(Base):
    """Rivers and lakes, for the map only: they belong to the cells they cross (属地兜底)."""

    __tablename__ = "water_bodies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))
    geom = mapped_column(Geometry("MULTIPOLYGON", srid=SRID, spatial_index=False), nullable=False)


class DatasetState(Base):
    """One row: bumped on every load so that in-memory indexes know when to rebuild."""

    __tablename__ = "dataset_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str | None] = mapped_column(Text)
    loaded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
