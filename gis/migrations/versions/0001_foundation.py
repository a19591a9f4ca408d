"""Foundation: jurisdictions, effective-dated cells and worker assignments, devices, water bodies.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import geoalchemy2
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _geom(kind: str) -> geoalchemy2.Geometry:
    # Indexes are created explicitly below (GiST), so that the migration says what exists.
    return geoalchemy2.Geometry(kind, srid=4490, spatial_index=False)


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    op.create_table(
        "jurisdictions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.String(12), nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("jurisdictions.id"), index=True),
        sa.Column("kind", sa.Text),
        sa.Column("households", sa.Integer),
        sa.Column("population", sa.Integer),
        sa.Column("area_m2", sa.Float, nullable=False),
        sa.Column("geom", _geom("MULTIPOLYGON"), nullable=False),
        sa.CheckConstraint("level in ('district', 'township', 'village')", name="ck_level"),
        sa.CheckConstraint("code ~ '^[0-9]{12}$'", name="ck_jurisdiction_code"),
    )
    op.create_table(
        "cells",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.String(15), nullable=False, index=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("village_id", sa.Integer, sa.ForeignKey("jurisdictions.id"), nullable=False, index=True),
        sa.Column("households", sa.Integer),
        sa.Column("population", sa.Integer),
        sa.Column("area_m2", sa.Float, nullable=False),
        sa.Column("valid_from", sa.Date, nullable=False),
        sa.Column("valid_to", sa.Date),
        sa.Column("geom", _geom("MULTIPOLYGON"), nullable=False),
        sa.CheckConstraint("code ~ '^[0-9]{15}$'", name="ck_cell_code"),
        sa.CheckConstraint("valid_to is null or valid_to > valid_from", name="ck_cell_validity"),
    )
    # One live cell per code; retired versions keep their code.
    op.create_index("uq_cells_live_code", "cells", ["code"], unique=True, postgresql_where=sa.text("valid_to is null"))
    op.create_table(
        "workers",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("phone", sa.String(32)),
    )
    op.create_table(
        "worker_assignments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("worker_id", sa.String(32), sa.ForeignKey("workers.id"), nullable=False, index=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("cell_id", sa.Integer, sa.ForeignKey("cells.id"), index=True),
        sa.Column("village_id", sa.Integer, sa.ForeignKey("jurisdictions.id"), index=True),
        sa.Column("valid_from", sa.Date, nullable=False),
        sa.Column("valid_to", sa.Date),
        sa.CheckConstraint(
            "(role = 'grid_worker' and cell_id is not null and village_id is null) or "
            "(role = 'grid_leader' and village_id is not null and cell_id is null)",
            name="ck_assignment_target",
        ),
        sa.CheckConstraint("valid_to is null or valid_to > valid_from", name="ck_assignment_validity"),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subtype", sa.String(32), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("geom", _geom("POINT"), nullable=False),
        sa.CheckConstraint("kind in ('sensor', 'camera')", name="ck_device_kind"),
    )
    op.create_table(
        "water_bodies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("geom", _geom("MULTIPOLYGON"), nullable=False),
    )
    for table in ("jurisdictions", "cells", "devices", "water_bodies"):
        op.create_index(f"ix_{table}_geom", table, ["geom"], postgresql_using="gist")
    op.create_table(
        "dataset_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("loaded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.execute("INSERT INTO dataset_state (id, revision) VALUES (1, 0)")


def downgrade() -> None:
    for table in (
        "dataset_state", "water_bodies", "devices", "worker_assignments", "workers", "cells",
        "jurisdictions",
    ):
        op.drop_table(table)
