"""Supervision (督办): mark cases overdue or about to be due, notify the responsible unit, escalate by rule.

`sweep` is idempotent and keeps all its state in the database (flags on events, one notice per case, kind and
deadline), so a restart neither loses nor repeats a notice. The server runs it every minute; `wangge supervise`
runs it once.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import Engine, text

from gis import eventlog
from gis.cases import Cases
from gis.intake import TZ
from gis.workflow import OPEN_SQL, Actor

log = logging.getLogger("wangge.supervision")
SYSTEM = Actor("supervision", "system")
# A case nobody accepts runs out of time too: every open status is supervised, reported and unplaced included.


@dataclass
class SweepResult:
    overdue: int = 0
    due_soon: int = 0
    escalated: int = 0


def sweep(engine: Engine, cases: Cases, now: dt.datetime | None = None, due_soon_hours: float = 4.0) -> SweepResult:
    now = (now or dt.datetime.now(TZ)).astimezone(TZ)
    out = SweepResult()
    with engine.begin() as conn:
        rows = conn.execute(text(f"""
            SELECT id, status, deadline, unit_code, overdue, due_soon FROM events
            WHERE status IN {OPEN_SQL} AND deadline IS NOT NULL
              AND ((deadline <= :now AND NOT overdue) OR (deadline > :now AND deadline <= :soon AND NOT due_soon))
            ORDER BY id FOR UPDATE SKIP LOCKED"""),
            {"now": now, "soon": now + dt.timedelta(hours=due_soon_hours)}).all()
        changed = []
        for r in rows:
            kind = "overdue" if r.deadline <= now else "due_soon"
            inserted = conn.execute(text("""
                INSERT INTO supervision_notices (event_id, kind, deadline, unit_code, at, note)
                VALUES (:e, :k, :d, :u, :now, :note) ON CONFLICT ON CONSTRAINT uq_notice_once DO NOTHING
                RETURNING id"""), {"e": r.id, "k": kind, "d": r.deadline, "u": r.unit_code, "now": now,
                                   "note": f"deadline {r.deadline.astimezone(TZ):%Y-%m-%d %H:%M}"}).first()
            conn.execute(text(f"UPDATE events SET {kind} = true, updated_at = :now WHERE id = :id"),
                         {"id": r.id, "now": now})
            if inserted:
                eventlog.append(conn, r.id, now, SYSTEM.username, SYSTEM.role, "supervise", r.status, r.status,
                                f"{'overdue' if kind == 'overdue' else 'due soon'}: notice to {r.unit_code or '-'}",
                                {"kind": kind, "unit": r.unit_code, "deadline": r.deadline.isoformat()})
            setattr(out, kind, getattr(out, kind) + 1)
            changed.append(r.id)
        eventlog.notify(conn, changed)
    out.escalated = _auto_escalate(engine, cases, now)
    return out


def _auto_escalate(engine: Engine, cases: Cases, now: dt.datetime) -> int:
    """Overdue cases whose category says so go up one level (their deadline restarts there)."""
    auto = [c.code for c in cases.taxonomy.categories.values() if c.auto_escalate]
    with engine.connect() as conn:
        ids = conn.execute(text("""SELECT id FROM events WHERE overdue AND deadline <= :now AND level <> 'district'
                                   AND status IN ('accepted', 'dispatched', 'in_progress')
                                   AND category = ANY(:cats) ORDER BY id"""), {"now": now, "cats": auto}).scalars()
        todo = list(ids)
    for event_id in todo:
        cases.act(event_id, "escalate", SYSTEM, {"reason": "deadline passed (auto-escalation rule)", "auto": True},
                  now=now)
    return len(todo)
