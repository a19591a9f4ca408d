"""Grid versions: planners' drafts of a village's (or a township's) cells, published as numbered versions.

Cells remember the version that created them and the version that retired them, so the grid of any version can be
rebuilt (version 0 is the loaded package: cells created by no version). History is never overwritten: a publish
sets `valid_to` on the cells it replaces and inserts new rows valid from the effective date. The grid log is
append-only, like the case log.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import geoalchemy2
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "grid_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("based_on", sa.Integer, nullable=False),
        sa.Column("scope_code", sa.String(12), nullable=False),
        sa.Column("villages", postgresql.ARRAY(sa.String(12)), nullable=False),
        sa.Column("effective_date", sa.Date, nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_by", sa.String(64), nullable=False),
        sa.Column("draft_id", sa.Integer, nullable=False),
        sa.Column("note", sa.Text),
        # The load this version builds on (dataset_state.loaded_at): a new `wangge load` starts a new history.
        sa.Column("dataset_loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reassigned_at", sa.DateTime(timezone=True)),
        sa.Column("summary", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    )
    op.create_index("ix_grid_versions_villages", "grid_versions", ["villages"], postgresql_using="gin")
    op.add_column("cells", sa.Column("version_id", sa.Integer, sa.ForeignKey("grid_versions.id")))
    op.add_column("cells", sa.Column("retired_version_id", sa.Integer, sa.ForeignKey("grid_versions.id")))
    op.create_table(
        "grid_drafts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("scope_code", sa.String(12), nullable=False),
        sa.Column("villages", postgresql.ARRAY(sa.String(12)), nullable=False),
        sa.Column("base_version", sa.Integer, nullable=False),
        sa.Column("dataset_loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(12), nullable=False, server_default="open"),
        sa.Column("name", sa.Text),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("edits", sa.Integer, nullable=False, server_default="0"),
        sa.Column("published_version", sa.Integer, sa.ForeignKey("grid_versions.id")),
        sa.CheckConstraint("status in ('open', 'published', 'discarded')", name="ck_grid_draft_status"),
    )
    op.create_table(
        "grid_draft_cells",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("draft_id", sa.Integer, sa.ForeignKey("grid_drafts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("code", sa.String(15), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("village_code", sa.String(12), nullable=False),
        sa.Column("households", sa.Integer),
        sa.Column("population", sa.Integer),
        sa.Column("worker_id", sa.String(32)),
        # Stored as drawn, even when invalid: validation locates the problem; publishing refuses it.
        sa.Column("geom", geoalchemy2.Geometry("MULTIPOLYGON", srid=4490, spatial_index=False), nullable=False),
        sa.UniqueConstraint("draft_id", "code", name="uq_grid_draft_cell"),
    )
    op.create_index("ix_grid_draft_cells_geom", "grid_draft_cells", ["geom"], postgresql_using="gist")
    op.create_table(
        "grid_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("draft_id", sa.Integer, index=True),
        sa.Column("version_id", sa.Integer),
        sa.Column("data", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    )
    op.execute("""
        CREATE FUNCTION grid_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'grid_log is append-only'; END $$;
        CREATE TRIGGER grid_log_no_update BEFORE UPDATE OR DELETE ON grid_log
        FOR EACH ROW EXECUTE FUNCTION grid_log_append_only();
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS grid_log_no_update ON grid_log")
    op.execute("DROP FUNCTION IF EXISTS grid_log_append_only()")
    op.drop_table("grid_log")
    op.drop_table("grid_draft_cells")
    op.drop_table("grid_drafts")
    op.drop_column("cells", "retired_version_id")
    op.drop_column("cells", "version_id")
    op.drop_table("grid_versions")
