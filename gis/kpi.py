"""Evaluation (督查考核): the indicators of GB/T 30428-style digital management, per village, platform, unit or
grid worker, over the cases received in a period. Responsibility is what was recorded on the case at its time
(cell, worker, village at intake; the unit it was dispatched to), never today's assignment.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

from sqlalchemy import Engine, text

from gis.cases import scope_sql
from gis.workflow import Actor

GROUPS = {"village": "e.village_code", "platform": "e.platform", "unit": "e.unit_code", "worker": "e.worker_id",
          "township": "e.township_code", "category": "e.category"}
FIELDS = ("key", "name", "received", "accepted", "closed", "closure_rate", "on_time_rate", "avg_hours", "p90_hours",
          "overdue", "rework_rate", "return_rate", "escalation_rate", "merged_reports")


def kpis(engine: Engine, actor: Actor, date_from: dt.datetime, date_to: dt.datetime, by: str,
         now: dt.datetime | None = None) -> list[dict[str, Any]]:
    if by not in GROUPS:
        raise ValueError(f"by must be one of {', '.join(GROUPS)}")
    clause, params = scope_sql(actor)
    key = GROUPS[by]
    name = {"village": "(SELECT name FROM jurisdictions WHERE code = e.village_code)",
            "township": "(SELECT name FROM jurisdictions WHERE code = e.township_code)",
            "worker": "max(e.worker_name)"}.get(by, "NULL")
    if by in ("village", "township"):
        name = f"max({name})"
    sql = f"""
        SELECT {key} AS key, {name} AS name,
            count(*) AS received,
            count(*) FILTER (WHERE e.status NOT IN ('needs_location', 'reported', 'rejected')) AS accepted,
            count(*) FILTER (WHERE e.status = 'closed') AS closed,
            count(*) FILTER (WHERE e.status = 'closed' AND e.closed_at <= e.deadline) AS closed_on_time,
            avg(extract(epoch FROM e.closed_at - e.received_at) / 3600) FILTER (WHERE e.status = 'closed') AS avg_h,
            percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM e.closed_at - e.received_at) / 3600)
                FILTER (WHERE e.status = 'closed') AS p90_h,
            count(*) FILTER (WHERE e.overdue OR (e.status NOT IN ('closed', 'rejected') AND e.deadline < :now)
                             OR (e.status = 'closed' AND e.closed_at > e.deadline)) AS overdue,
            count(*) FILTER (WHERE e.reworks > 0) AS reworked,
            count(*) FILTER (WHERE e.returns > 0) AS returned,
            count(*) FILTER (WHERE e.status IN ('dispatched', 'in_progress', 'feedback', 'review', 'closed')
                             OR e.returns > 0) AS dispatched,
            count(*) FILTER (WHERE e.escalations > 0) AS escalated,
            coalesce(sum(e.report_count - 1), 0) AS merged
        FROM events e
        WHERE e.received_at >= :dfrom AND e.received_at < :dto AND {clause}
        GROUP BY {key} ORDER BY {key} NULLS LAST"""
    with engine.connect() as conn:
        rows = conn.execute(text(sql), {**params, "dfrom": date_from, "dto": date_to,
                                        "now": now or dt.datetime.now(dt.UTC)}).all()

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    out = []
    for r in rows:
        out.append({
            "key": r.key, "name": r.name, "received": r.received, "accepted": r.accepted, "closed": r.closed,
            "closure_rate": ratio(r.closed, r.accepted), "on_time_rate": ratio(r.closed_on_time, r.closed),
            "avg_hours": None if r.avg_h is None else round(float(r.avg_h), 2),
            "p90_hours": None if r.p90_h is None else round(float(r.p90_h), 2),
            "overdue": r.overdue, "rework_rate": ratio(r.reworked, r.closed),
            "return_rate": ratio(r.returned, r.dispatched), "escalation_rate": ratio(r.escalated, r.accepted),
            "merged_reports": int(r.merged),
        })
    return out


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
