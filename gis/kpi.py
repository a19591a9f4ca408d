"""Evaluation (督查考核): the indicators of GB/T 30428-style digital management, per village, platform, unit or
grid worker, over the cases received in a period. Responsibility is what was recorded on the case at its time
(cell, worker, village at intake; the unit it was dispatched to), never today's assignment.

The on-time rate (按期结案率) comes two ways, as townships count it: `on_time_rate` over the cases closed, and
`on_time_rate_due` (按期办结率) over the cases due (应办结: closed, or past their deadline by the end of the period
or now, whichever is earlier; rejected ones aside) — where a case left open past its deadline counts against the
rate instead of not counting at all.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

from sqlalchemy import Engine, text

from gis.cases import scope_sql
from gis.taxonomy import Taxonomy
from gis.workflow import Actor

GROUPS = {"village": "e.village_code", "platform": "e.platform", "unit": "e.unit_code", "worker": "e.worker_id",
          "township": "e.township_code", "category": "e.category"}
FIELDS = ("key", "name", "received", "accepted", "closed", "closure_rate", "on_time_rate", "due", "on_time_rate_due",
          "avg_hours", "p90_hours", "overdue", "rework_rate", "return_rate", "escalation_rate", "merged_reports")


def kpis(engine: Engine, actor: Actor, date_from: dt.datetime, date_to: dt.datetime, by: str,
         now: dt.datetime | None = None, taxonomy: Taxonomy | None = None) -> list[dict[str, Any]]:
    """One row per group; with a taxonomy, platform, unit and category rows carry their Chinese names too."""
    if by not in GROUPS:
        raise ValueError(f"by must be one of {', '.join(GROUPS)}")
    clause, params = scope_sql(actor)
    if by == "unit":
        # The unit that holds the case once it was handed over (dispatched or escalated to it); a case nobody has
        # dispatched yet is nobody's (key NULL). A unit that returned a case keeps that return in its own row
        # (dispatched and returned), not in the row of the unit that got the case next.
        holders = """
            SELECT CASE WHEN e.escalations > 0 OR EXISTS (SELECT 1 FROM subtasks s WHERE s.event_id = e.id
                        AND s.role = 'lead' AND s.unit_code = e.unit_code) THEN e.unit_code END AS key,
                   true AS holder,
                   EXISTS (SELECT 1 FROM event_log l WHERE l.event_id = e.id AND l.action = 'return'
                           AND l.data->>'unit' = e.unit_code) AS returned
            UNION ALL
            SELECT DISTINCT l.data->>'unit', false, true FROM event_log l WHERE l.event_id = e.id
                AND l.action = 'return' AND l.data->>'unit' IS DISTINCT FROM e.unit_code"""
    else:
        holders = f"SELECT {GROUPS[by]} AS key, true AS holder, e.returns > 0 AS returned"
    name = {"village": "max((SELECT name FROM jurisdictions WHERE code = e.village_code))",
            "township": "max((SELECT name FROM jurisdictions WHERE code = e.township_code))",
            "worker": "max(e.worker_name)"}.get(by, "NULL")
    sql = f"""
        SELECT k.key, {name} AS name,
            count(*) FILTER (WHERE k.holder) AS received,
            count(*) FILTER (WHERE k.holder AND e.status NOT IN ('needs_location', 'reported', 'rejected'))
                AS accepted,
            count(*) FILTER (WHERE k.holder AND e.status = 'closed') AS closed,
            count(*) FILTER (WHERE k.holder AND e.status = 'closed' AND e.closed_at <= e.deadline) AS closed_on_time,
            count(*) FILTER (WHERE k.holder AND e.status <> 'rejected'
                             AND (e.status = 'closed' OR e.deadline < :cutoff)) AS due,
            avg(extract(epoch FROM e.closed_at - e.received_at) / 3600)
                FILTER (WHERE k.holder AND e.status = 'closed') AS avg_h,
            percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM e.closed_at - e.received_at) / 3600)
                FILTER (WHERE k.holder AND e.status = 'closed') AS p90_h,
            count(*) FILTER (WHERE k.holder AND (e.overdue
                             OR (e.status NOT IN ('closed', 'rejected') AND e.deadline < :now)
                             OR (e.status = 'closed' AND e.closed_at > e.deadline))) AS overdue,
            count(*) FILTER (WHERE k.holder AND e.reworks > 0) AS reworked,
            count(*) FILTER (WHERE k.returned) AS returned,
            count(*) FILTER (WHERE NOT k.holder OR e.returns > 0
                             OR e.status IN ('dispatched', 'in_progress', 'feedback', 'review', 'closed'))
                AS dispatched,
            count(*) FILTER (WHERE k.holder AND e.escalations > 0) AS escalated,
            coalesce(sum(e.report_count - 1) FILTER (WHERE k.holder), 0) AS merged
        FROM events e CROSS JOIN LATERAL ({holders}) k
        WHERE e.received_at >= :dfrom AND e.received_at < :dto AND {clause}
        GROUP BY k.key ORDER BY k.key NULLS LAST"""
    now = now or dt.datetime.now(dt.UTC)
    with engine.connect() as conn:
        rows = conn.execute(text(sql), {**params, "dfrom": date_from, "dto": date_to, "now": now,
                                        "cutoff": min(date_to, now)}).all()

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    names: dict[str, str] = {}
    if taxonomy is not None:
        names = {"platform": {k: p.name_zh for ps in taxonomy.platform_sets.values() for k, p in ps.platforms.items()},
                 "unit": {k: u.name_zh for k, u in taxonomy.units.items()},
                 "category": {k: c.name_zh for k, c in taxonomy.categories.items()}}.get(by, {})
    out = []
    for r in rows:
        out.append({
            "key": r.key, "name": r.name if r.name is not None else names.get(r.key),
            "received": r.received, "accepted": r.accepted, "closed": r.closed,
            "closure_rate": ratio(r.closed, r.accepted), "on_time_rate": ratio(r.closed_on_time, r.closed),
            "due": r.due, "on_time_rate_due": ratio(r.closed_on_time, r.due),
            "avg_hours": None if r.avg_h is None else round(float(r.avg_h), 2),
            "p90_hours": None if r.p90_h is None else round(float(r.p90_h), 2),
            "overdue": r.overdue, "rework_rate": ratio(r.reworked, r.accepted),
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
