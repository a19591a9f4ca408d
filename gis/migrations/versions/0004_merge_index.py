"""Events indexes: the one behind alarm-storm merging, and the period index of the analytics and KPIs.

Merging probes, for each incoming report, the open cases of its category whose latest report lies within the
time window; (category, last_report_at) over open cases answers that probe with a short range scan whatever the
size of the events table. It replaces ix_events_open on (category, received_at), which no query used.
Every indicator, hotspot and density is counted over the cases received in a period: ix_events_received.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NOT_FINAL = sa.text("status NOT IN ('closed', 'rejected')")


def upgrade() -> None:
    op.drop_index("ix_events_open", table_name="events")
    op.create_index("ix_events_mergeable", "events", ["category", "last_report_at"], postgresql_where=NOT_FINAL)
    op.create_index("ix_events_received", "events", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_events_received", table_name="events")
    op.drop_index("ix_events_mergeable", table_name="events")
    op.create_index("ix_events_open", "events", ["category", "received_at"], postgresql_where=NOT_FINAL)
