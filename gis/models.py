"""The relational model. Alembic migrations (gis/migrations) create and change it; this module mirrors them.

Geometry is CGCS2000 lon/lat (EPSG:4490). Cells and worker assignments carry validity dates so that a redrawn
grid keeps its history (a row is valid on day d when valid_from <= d and (valid_to is null or d < valid_to)).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from geoalchemy2 import Geometry
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
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
    # The grid version that created this row (None: the loaded package, version 0) and the one that retired it.
    version_id: Mapped[int | None] = mapped_column(ForeignKey("grid_versions.id"))
    retired_version_id: Mapped[int | None] = mapped_column(ForeignKey("grid_versions.id"))


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



# -- migration 0002: the closed loop (mirrored here for reference; the code reads and writes them with SQL) --------
class Address(Base):
    __tablename__ = "addresses"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    village_code: Mapped[str] = mapped_column(String(12), index=True)
    road: Mapped[str] = mapped_column(Text)
    number: Mapped[str] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    geom = mapped_column(Geometry("POINT", srid=SRID, spatial_index=False), nullable=False)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str | None] = mapped_column(Text)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(32))
    scope_code: Mapped[str] = mapped_column(String(15))
    unit_code: Mapped[str | None] = mapped_column(String(64))
    worker_id: Mapped[str | None] = mapped_column(String(32))
    active: Mapped[bool] = mapped_column(Boolean, server_default="true")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DeviceKey(Base):
    __tablename__ = "device_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(32), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Event(Base):
    """A case. It keeps the codes of its cell, worker and jurisdictions at event time, not foreign keys. Never
    deleted (a trigger refuses it: its log refers to it)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str | None] = mapped_column(String(128))
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    category: Mapped[str] = mapped_column(String(64), index=True)
    grade: Mapped[int] = mapped_column(SmallInteger)
    platform: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    level: Mapped[str] = mapped_column(String(16))
    unit_code: Mapped[str | None] = mapped_column(String(64))
    geom = mapped_column(Geometry("POINT", srid=SRID, spatial_index=False))
    located_by: Mapped[str] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(Text)
    cell_code: Mapped[str | None] = mapped_column(String(15), index=True)
    cell_name: Mapped[str | None] = mapped_column(Text)
    worker_id: Mapped[str | None] = mapped_column(String(32), index=True)
    worker_name: Mapped[str | None] = mapped_column(Text)
    village_code: Mapped[str | None] = mapped_column(String(12), index=True)
    township_code: Mapped[str | None] = mapped_column(String(12), index=True)
    district_code: Mapped[str | None] = mapped_column(String(12))
    snapped: Mapped[bool] = mapped_column(Boolean, server_default="false")
    distance_m: Mapped[float] = mapped_column(Float, server_default="0")
    reason: Mapped[str | None] = mapped_column(Text)
    device_id: Mapped[str | None] = mapped_column(String(32), index=True)
    description: Mapped[str | None] = mapped_column(Text)
    reporter_name: Mapped[str | None] = mapped_column(Text)
    reporter_phone: Mapped[str | None] = mapped_column(String(32))
    occurred_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_report_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    deadline: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    report_count: Mapped[int] = mapped_column(Integer, server_default="1")
    overdue: Mapped[bool] = mapped_column(Boolean, server_default="false")
    due_soon: Mapped[bool] = mapped_column(Boolean, server_default="false")
    escalations: Mapped[int] = mapped_column(Integer, server_default="0")
    reworks: Mapped[int] = mapped_column(Integer, server_default="0")
    returns: Mapped[int] = mapped_column(Integer, server_default="0")
    version: Mapped[int] = mapped_column(Integer, server_default="1")


class EventReport(Base):
    __tablename__ = "event_reports"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"), index=True)
    source: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str | None] = mapped_column(String(128))
    device_id: Mapped[str | None] = mapped_column(String(32))
    description: Mapped[str | None] = mapped_column(Text)
    reporter_name: Mapped[str | None] = mapped_column(Text)
    reporter_phone: Mapped[str | None] = mapped_column(String(32))
    geom = mapped_column(Geometry("POINT", srid=SRID, spatial_index=False))
    occurred_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class IntakeKey(Base):
    """The keys of every accepted report (kind 'e': external_id, 'i': Idempotency-Key) with the case it opened or
    joined: idempotency rests on this primary key (migration 0007)."""

    __tablename__ = "intake_keys"

    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    kind: Mapped[str] = mapped_column(String(1), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_id: Mapped[int] = mapped_column(BigInteger)


class EventLogEntry(Base):
    """Append-only (the database refuses updates and deletes): the case timeline."""

    __tablename__ = "event_log"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # No foreign key (migration 0006): a check per entry cost as much as writing it; cases are never deleted.
    event_id: Mapped[int] = mapped_column(BigInteger, index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)


class Subtask(Base):
    __tablename__ = "subtasks"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"), index=True)
    unit_code: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(12), server_default="open")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    done_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    note: Mapped[str | None] = mapped_column(Text)


class SupervisionNotice(Base):
    __tablename__ = "supervision_notices"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    deadline: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    unit_code: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    note: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("event_id", "kind", "deadline", name="uq_notice_once"),)


class Attachment(Base):
    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"), index=True)
    url: Mapped[str | None] = mapped_column(Text)
    path: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class GridVersion(Base):
    """A published redraw of some villages' cells (migration 0003). Version 0, the loaded package, has no row."""

    __tablename__ = "grid_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    based_on: Mapped[int] = mapped_column(Integer)
    scope_code: Mapped[str] = mapped_column(String(12))
    villages: Mapped[list[str]] = mapped_column(ARRAY(String(12)))
    effective_date: Mapped[dt.date] = mapped_column(Date)
    published_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    published_by: Mapped[str] = mapped_column(String(64))
    draft_id: Mapped[int] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(Text)
    dataset_loaded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    reassigned_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB)


class GridDraft(Base):
    """A planner's working copy of the live cells of one village, a township or the district."""

    __tablename__ = "grid_drafts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope_code: Mapped[str] = mapped_column(String(12))
    villages: Mapped[list[str]] = mapped_column(ARRAY(String(12)))
    base_version: Mapped[int] = mapped_column(Integer)
    dataset_loaded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(12))
    name: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    edits: Mapped[int] = mapped_column(Integer)
    published_version: Mapped[int | None] = mapped_column(ForeignKey("grid_versions.id"))

    __table_args__ = (CheckConstraint("status in ('open', 'published', 'discarded')", name="ck_grid_draft_status"),)


class GridDraftCell(Base):
    __tablename__ = "grid_draft_cells"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    draft_id: Mapped[int] = mapped_column(ForeignKey("grid_drafts.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(15))
    name: Mapped[str] = mapped_column(Text)
    village_code: Mapped[str] = mapped_column(String(12))
    households: Mapped[int | None] = mapped_column(Integer)
    population: Mapped[int | None] = mapped_column(Integer)
    worker_id: Mapped[str | None] = mapped_column(String(32))
    geom = mapped_column(Geometry("MULTIPOLYGON", srid=SRID, spatial_index=False), nullable=False)

    __table_args__ = (UniqueConstraint("draft_id", "code", name="uq_grid_draft_cell"),)


class GridLogEntry(Base):
    """Append-only (the database refuses updates and deletes): every change to drafts and versions."""

    __tablename__ = "grid_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(32))
    draft_id: Mapped[int | None] = mapped_column(Integer, index=True)
    version_id: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
