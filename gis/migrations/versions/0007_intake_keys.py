"""One table of intake keys: idempotency by a unique index instead of advisory locks and two probes.

Every accepted report leaves its keys — its external_id (kind 'e') and its Idempotency-Key (kind 'i'), per source —
with the case it opened or joined. A retry finds its case with one probe of the primary key; two concurrent
reports with the same key cannot both pass, because the second one's insert waits for the first transaction and
then fails (the intake decides it again, and finds the key). Before, the keys of cases lived in two unique indexes
of events and those of merged reports in a plain index of event_reports, so the intake serialised every key
through 512 advisory-lock buckets — all of them for a batch of 10,000, which made concurrent batches and single
reports wait for each other — and probed twice per report. The Idempotency-Key of a merged report was not kept at
all: a retried merged report was merged again.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "intake_keys",
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(1), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("event_id", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("source", "kind", "key", name="intake_keys_pkey"),
        sa.CheckConstraint("kind IN ('e', 'i')", name="ck_intake_keys_kind"),
    )
    # Cases first: a key is kept once, with the case it first opened.
    op.execute("""
        INSERT INTO intake_keys (source, kind, key, event_id)
        SELECT source, 'e', external_id, id FROM events WHERE external_id IS NOT NULL
        UNION ALL SELECT source, 'i', idempotency_key, id FROM events WHERE idempotency_key IS NOT NULL;
        INSERT INTO intake_keys (source, kind, key, event_id)
        SELECT DISTINCT ON (source, external_id) source, 'e', external_id, event_id FROM event_reports
        WHERE external_id IS NOT NULL ORDER BY source, external_id, id
        ON CONFLICT DO NOTHING;
    """)
    op.drop_index("uq_events_external", table_name="events")
    op.drop_index("uq_events_idempotency", table_name="events")
    op.drop_index("ix_event_reports_external", table_name="event_reports")


def downgrade() -> None:
    op.create_index("ix_event_reports_external", "event_reports", ["source", "external_id"],
                    postgresql_where=sa.text("external_id IS NOT NULL"))
    op.create_index("uq_events_idempotency", "events", ["source", "idempotency_key"], unique=True,
                    postgresql_where=sa.text("idempotency_key IS NOT NULL"))
    op.create_index("uq_events_external", "events", ["source", "external_id"], unique=True,
                    postgresql_where=sa.text("external_id IS NOT NULL"))
    op.drop_table("intake_keys")
