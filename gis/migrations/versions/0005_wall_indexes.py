"""Covering indexes for the command-centre wall: today's figures from index-only scans.

The wall counts, per village and platform, the open backlog, the cases received today and those closed today.
Over a million cases a sequential scan of the events table takes 0.3–0.9 s on two cores, while a browser loads the
page on the same machine. Three indexes answer the three parts instead; intake writes no new index (two it
writes anyway carry more columns, which makes their entries wider):
- ix_events_mergeable (open cases; the merge probe's index, written on every intake anyway) carries the columns the
  backlog needs;
- ix_events_received (the period index, written on every intake anyway) carries those of today's arrivals;
- ix_events_closed (closed cases by closing time) is new; intake never writes it, closing a case does (that update
  changes the status, which other indexes hold: it was never a HOT update).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NOT_FINAL = sa.text("status NOT IN ('closed', 'rejected')")
OPEN_COLUMNS = ["township_code", "village_code", "platform", "status", "received_at", "deadline", "overdue"]
RECEIVED_COLUMNS = ["township_code", "village_code", "platform", "status", "closed_at", "deadline"]
CLOSED_COLUMNS = ["township_code", "village_code", "platform", "deadline", "received_at"]


def upgrade() -> None:
    op.drop_index("ix_events_mergeable", table_name="events")
    op.create_index("ix_events_mergeable", "events", ["category", "last_report_at"], postgresql_where=NOT_FINAL,
                    postgresql_include=OPEN_COLUMNS)
    op.drop_index("ix_events_received", table_name="events")
    op.create_index("ix_events_received", "events", ["received_at"], postgresql_include=RECEIVED_COLUMNS)
    op.create_index("ix_events_closed", "events", ["closed_at"], postgresql_where=sa.text("status = 'closed'"),
                    postgresql_include=CLOSED_COLUMNS)


def downgrade() -> None:
    op.drop_index("ix_events_closed", table_name="events")
    op.drop_index("ix_events_received", table_name="events")
    op.create_index("ix_events_received", "events", ["received_at"])
    op.drop_index("ix_events_mergeable", table_name="events")
    op.create_index("ix_events_mergeable", "events", ["category", "last_report_at"], postgresql_where=NOT_FINAL)
