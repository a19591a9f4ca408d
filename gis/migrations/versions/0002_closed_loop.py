"""Closed loop: events (cases) with their linked reports, the append-only log, sub-tasks of joint handling,
supervision notices, attachments, accounts, device keys and the address gazetteer.

Events keep the codes of the cell, worker, village, township and district valid when they were located, not
foreign keys: responsibility is judged at event time, and boundary reloads or redraws must not rewrite it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import geoalchemy2
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STATUSES = ("needs_location", "reported", "accepted", "rejected", "dispatched", "in_progress", "feedback", "review",
            "closed")


def upgrade() -> None:
    op.create_table(
        "addresses",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("village_code", sa.String(12), nullable=False, index=True),
        sa.Column("road", sa.Text, nullable=False),
        sa.Column("number", sa.Text, nullable=False),
        sa.Column("name", sa.Text),
        sa.Column("geom", geoalchemy2.Geometry("POINT", srid=4490, spatial_index=False), nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("display_name", sa.Text),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("scope_code", sa.String(15), nullable=False),
        sa.Column("unit_code", sa.String(64)),
        sa.Column("worker_id", sa.String(32)),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(
            "role in ('grid_worker', 'grid_leader', 'unit_handler', 'command_centre', 'leader', 'planner', 'admin')",
            name="ck_user_role"),
        sa.CheckConstraint("role <> 'unit_handler' or unit_code is not null", name="ck_user_unit"),
    )
    op.create_table(
        "device_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("device_id", sa.String(32), nullable=False, index=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("external_id", sa.String(128)),
        sa.Column("idempotency_key", sa.String(128)),
        sa.Column("category", sa.String(64), nullable=False, index=True),
        sa.Column("grade", sa.SmallInteger, nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("unit_code", sa.String(64)),
        sa.Column("geom", geoalchemy2.Geometry("POINT", srid=4490, spatial_index=False)),
        sa.Column("located_by", sa.String(16), nullable=False),
        sa.Column("address", sa.Text),
        sa.Column("cell_code", sa.String(15), index=True),
        sa.Column("cell_name", sa.Text),
        sa.Column("worker_id", sa.String(32), index=True),
        sa.Column("worker_name", sa.Text),
        sa.Column("village_code", sa.String(12), index=True),
        sa.Column("township_code", sa.String(12), index=True),
        sa.Column("district_code", sa.String(12)),
        sa.Column("snapped", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("distance_m", sa.Float, nullable=False, server_default="0"),
        sa.Column("reason", sa.Text),
        sa.Column("device_id", sa.String(32), index=True),
        sa.Column("description", sa.Text),
        sa.Column("reporter_name", sa.Text),
        sa.Column("reporter_phone", sa.String(32)),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_report_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True)),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("report_count", sa.Integer, nullable=False, server_default="1"),
        sa.Column("overdue", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("due_soon", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("escalations", sa.Integer, nullable=False, server_default="0"),
        sa.Column("reworks", sa.Integer, nullable=False, server_default="0"),
        sa.Column("returns", sa.Integer, nullable=False, server_default="0"),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.CheckConstraint(f"status in {STATUSES!r}", name="ck_event_status"),
        sa.CheckConstraint("level in ('village', 'township', 'district')", name="ck_event_level"),
        sa.CheckConstraint("grade between 1 and 3", name="ck_event_grade"),
    )
    op.create_index("uq_events_external", "events", ["source", "external_id"], unique=True,
                    postgresql_where=sa.text("external_id is not null"))
    op.create_index("uq_events_idempotency", "events", ["source", "idempotency_key"], unique=True,
                    postgresql_where=sa.text("idempotency_key is not null"))
    op.create_index("ix_events_open", "events", ["category", "received_at"],
                    postgresql_where=sa.text("status not in ('closed', 'rejected')"))
    op.create_index("ix_events_status", "events", ["status", "deadline"])
    op.create_table(
        "event_reports",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.BigInteger, sa.ForeignKey("events.id"), nullable=False, index=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("external_id", sa.String(128)),
        sa.Column("device_id", sa.String(32)),
        sa.Column("description", sa.Text),
        sa.Column("reporter_name", sa.Text),
        sa.Column("reporter_phone", sa.String(32)),
        sa.Column("geom", geoalchemy2.Geometry("POINT", srid=4490, spatial_index=False)),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_event_reports_external", "event_reports", ["source", "external_id"],
                    postgresql_where=sa.text("external_id is not null"))
    op.create_table(
        "event_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.BigInteger, sa.ForeignKey("events.id"), nullable=False, index=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_status", sa.String(16)),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("data", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    )
    # The log is append-only: history is evidence for scoring, so the database itself refuses edits.
    op.execute("""
        CREATE FUNCTION event_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'event_log is append-only'; END $$;
        CREATE TRIGGER event_log_no_update BEFORE UPDATE OR DELETE ON event_log
        FOR EACH ROW EXECUTE FUNCTION event_log_append_only();
    """)
    op.create_table(
        "subtasks",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.BigInteger, sa.ForeignKey("events.id"), nullable=False, index=True),
        sa.Column("unit_code", sa.String(64), nullable=False, index=True),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("status", sa.String(12), nullable=False, server_default="open"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True)),
        sa.Column("note", sa.Text),
        sa.CheckConstraint("role in ('lead', 'assist')", name="ck_subtask_role"),
        sa.CheckConstraint("status in ('open', 'done', 'cancelled')", name="ck_subtask_status"),
    )
    op.create_table(
        "supervision_notices",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.BigInteger, sa.ForeignKey("events.id"), nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("unit_code", sa.String(64)),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text),
        sa.UniqueConstraint("event_id", "kind", "deadline", name="uq_notice_once"),
    )
    op.create_table(
        "attachments",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.BigInteger, sa.ForeignKey("events.id"), nullable=False, index=True),
        sa.Column("url", sa.Text),
        sa.Column("path", sa.Text),
        sa.Column("content_type", sa.String(64)),
        sa.Column("size", sa.Integer),
        sa.Column("sha256", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    for table in ("addresses", "events", "event_reports"):
        op.create_index(f"ix_{table}_geom", table, ["geom"], postgresql_using="gist")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS event_log_no_update ON event_log")
    op.execute("DROP FUNCTION IF EXISTS event_log_append_only()")
    for table in ("attachments", "supervision_notices", "subtasks", "event_log", "event_reports", "events",
                  "device_keys", "users", "addresses"):
        op.drop_table(table)
