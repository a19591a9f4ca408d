"""Cases in the database: scoped reads, actions through the state machine, the timeline, masking."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, Engine, text

from gis import eventlog
from gis.errors import NotFound, WanggeError
from gis.intake import TZ
from gis.locate import Locator
from gis.taxonomy import Taxonomy
from gis.workcalendar import WorkCalendar
from gis.workflow import LEVELS, ActionInvalid, Actor, Case, decide

UNMASKED_ROLES = ("command_centre", "admin")
_COLUMNS = """e.id, e.source, e.external_id, e.category, e.grade, e.platform, e.status, e.level, e.unit_code,
    ST_X(e.geom) AS lon, ST_Y(e.geom) AS lat, e.located_by, e.address, e.cell_code, e.cell_name, e.worker_id,
    e.worker_name, e.village_code, e.township_code, e.district_code, e.snapped, e.distance_m, e.reason, e.device_id,
    e.description, e.reporter_name, e.reporter_phone, e.occurred_at, e.received_at, e.deadline, e.closed_at,
    e.updated_at, e.report_count, e.overdue, e.due_soon, e.escalations, e.reworks, e.returns, e.version"""


class Forbidden(WanggeError):
    """The case exists but lies outside the actor's scope (HTTP 403 for actions)."""


def scope_level(code: str) -> str:
    if len(code) == 15:
        return "cell"
    if code.endswith("000000"):
        return "district"
    if code.endswith("000"):
        return "township"
    return "village"


def scope_sql(actor: Actor) -> tuple[str, dict[str, Any]]:
    """A WHERE fragment (over alias e) limiting events to what the actor may see."""
    level = scope_level(actor.scope_code) if actor.scope_code else "district"
    column = {"cell": "e.cell_code", "village": "e.village_code", "township": "e.township_code",
              "district": "e.district_code"}[level]
    params: dict[str, Any] = {"scope": actor.scope_code}
    clause = f"{column} = :scope" if actor.scope_code else "true"
    if actor.role in ("command_centre", "admin"):
        # The triage queue: reports that could not be placed belong to no jurisdiction yet.
        clause = f"({clause} OR e.township_code IS NULL)"
    if actor.role == "grid_worker":
        clause = f"({clause} OR e.worker_id = :worker)"
        params["worker"] = actor.worker_id
    if actor.role == "unit_handler":
        # Cases handed to the unit: dispatched (a sub-task, lead or assisting, kept as history) or escalated to it.
        # The unit intake proposes for a case nobody has dispatched yet is only a suggestion, not the unit's case.
        clause += (" AND ((e.unit_code = :unit AND e.escalations > 0) OR EXISTS (SELECT 1 FROM subtasks s"
                   " WHERE s.event_id = e.id AND s.unit_code = :unit))")
        params["unit"] = actor.unit_code
    return clause, params


def mask_phone(phone: str | None) -> str | None:
    if not phone:
        return phone
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 8 else "****"


def mask_name(name: str | None) -> str | None:
    return None if not name else name[0] + "*" * max(len(name) - 1, 1)


def _row_to_dict(row: Any, actor: Actor) -> dict[str, Any]:
    d = dict(row._mapping)
    for k in ("occurred_at", "received_at", "deadline", "closed_at", "updated_at"):
        if d.get(k) is not None:
            d[k] = d[k].astimezone(TZ).isoformat()
    if actor.role not in UNMASKED_ROLES:
        d["reporter_phone"] = mask_phone(d["reporter_phone"])
        d["reporter_name"] = mask_name(d["reporter_name"])
    return d


def get_event(engine: Engine | Connection, event_id: int, actor: Actor) -> dict[str, Any]:
    """One case with its timeline, reports, sub-tasks and attachments; NotFound outside the actor's scope."""
    if isinstance(engine, Engine):
        with engine.connect() as conn:
            return _get_event(conn, event_id, actor)
    return _get_event(engine, event_id, actor)


def _get_event(conn: Connection, event_id: int, actor: Actor) -> dict[str, Any]:
    clause, params = scope_sql(actor)
    row = conn.execute(text(f"SELECT {_COLUMNS} FROM events e WHERE e.id = :id AND {clause}"),
                       {**params, "id": event_id}).first()
    if row is None:
        raise NotFound(f"no event {event_id} in your scope")
    event = _row_to_dict(row, actor)
    event["timeline"] = [
        {**dict(r._mapping), "at": r.at.astimezone(TZ).isoformat()}
        for r in conn.execute(text("""SELECT id, at, actor, role, action, from_status, to_status, note, data
                                      FROM event_log WHERE event_id = :id ORDER BY id"""), {"id": event_id})
    ]
    event["subtasks"] = [dict(r._mapping) | {"created_at": r.created_at.astimezone(TZ).isoformat(),
                                              "done_at": r.done_at.astimezone(TZ).isoformat() if r.done_at else None}
                         for r in conn.execute(text("""SELECT unit_code, role, status, created_at, done_at
                             FROM subtasks WHERE event_id = :id ORDER BY id"""), {"id": event_id})]
    event["attachments"] = [dict(r._mapping) for r in conn.execute(
        text("SELECT id, url, content_type, size FROM attachments WHERE event_id = :id ORDER BY id"),
        {"id": event_id})]
    return event


def list_events(engine: Engine, actor: Actor, status: str | None = None, village: str | None = None,
                platform: str | None = None, overdue: bool | None = None, date_from: dt.datetime | None = None,
                date_to: dt.datetime | None = None, limit: int = 50, offset: int = 0) -> dict[str, Any]:
    clause, params = scope_sql(actor)
    where = [clause]
    for col, val in (("status", status), ("village_code", village), ("platform", platform)):
        if val is not None:
            where.append(f"e.{col} = :{col}")
            params[col] = val
    if overdue is not None:
        where.append("e.overdue = :overdue")
        params["overdue"] = overdue
    if date_from is not None:
        where.append("e.received_at >= :dfrom")
        params["dfrom"] = date_from
    if date_to is not None:
        where.append("e.received_at < :dto")
        params["dto"] = date_to
    sql_where = " AND ".join(where)
    with engine.connect() as conn:
        total = conn.execute(text(f"SELECT count(*) FROM events e WHERE {sql_where}"), params).scalar_one()
        rows = conn.execute(text(f"SELECT {_COLUMNS} FROM events e WHERE {sql_where} ORDER BY e.id DESC "
                                 "LIMIT :limit OFFSET :offset"), {**params, "limit": limit, "offset": offset}).all()
    return {"total": total, "limit": limit, "offset": offset, "items": [_row_to_dict(r, actor) for r in rows]}


class Cases:
    """Actions on cases: the state machine applied under a row lock, logged, and announced on the feed."""

    def __init__(self, engine: Engine, taxonomy: Taxonomy, calendar: WorkCalendar, locator: Locator) -> None:
        self.engine = engine
        self.taxonomy = taxonomy
        self.calendar = calendar
        self.locator = locator

    def act(self, event_id: int, action: str, actor: Actor, payload: dict[str, Any],
            now: dt.datetime | None = None) -> dict[str, Any]:
        now = (now or dt.datetime.now(TZ)).astimezone(TZ)
        clause, params = scope_sql(actor)
        with self.engine.begin() as conn:
            row = conn.execute(text(f"""SELECT id, status, level, unit_code, worker_id, category, grade
                                        FROM events e WHERE e.id = :id AND {clause} FOR UPDATE"""),
                               {**params, "id": event_id}).first()
            if row is None:
                exists = conn.execute(text("SELECT 1 FROM events WHERE id = :id"), {"id": event_id}).first()
                if exists:
                    raise Forbidden(f"event {event_id} is outside your scope")
                raise NotFound(f"no event {event_id}")
            subtasks = conn.execute(text("SELECT unit_code, role, status FROM subtasks WHERE event_id = :id"),
                                    {"id": event_id}).all()
            cat = self.taxonomy.category(row.category)
            case = Case(id=row.id, status=row.status, level=row.level, unit_code=row.unit_code,
                        worker_id=row.worker_id, category=row.category, village_may_close=cat.village_may_close,
                        open_assists=tuple(s.unit_code for s in subtasks if s.role == "assist" and s.status == "open"))
            next_unit = None
            if action == "escalate" and row.level != LEVELS[-1]:
                next_unit = self.taxonomy.lead_unit(row.category, LEVELS[LEVELS.index(row.level) + 1]).code
            if action == "dispatch" and payload.get("unit"):
                for u in [payload["unit"], *(payload.get("assisting") or [])]:
                    self.taxonomy.unit(u)  # NotFound for unknown units
            d = decide(case, action, actor, payload, now, next_unit)
            if action == "feedback" and case.open_assists:
                raise ActionInvalid(f"assisting units still working: {', '.join(case.open_assists)}")
            sets = {"status": d.to_status, "updated_at": now, **d.updates}
            if d.restart_deadline:
                sets |= {"deadline": self.calendar.deadline(now, self.taxonomy.time_limit(row.category, row.grade)),
                         "overdue": False, "due_soon": False}
            extra, extra_params = "", {}
            if action == "locate":
                relocated, (glon, glat) = self._relocate(payload["lon"], payload["lat"], payload.get("crs"))
                sets |= relocated
                extra, extra_params = ", geom = ST_SetSRID(ST_MakePoint(:glon, :glat), 4490)", {"glon": glon,
                                                                                               "glat": glat}
            assignments = ", ".join(f"{k} = :set_{k}" for k in sets)
            increments = "".join(f", {c} = {c} + 1" for c in d.increments)
            conn.execute(text(f"UPDATE events SET {assignments}{increments}{extra}, version = version + 1 "
                              "WHERE id = :id"),
                         {**{f"set_{k}": v for k, v in sets.items()}, **extra_params, "id": event_id})
            if action in ("dispatch", "return", "escalate"):
                conn.execute(text("""UPDATE subtasks SET status = 'cancelled', done_at = :now
                                     WHERE event_id = :id AND status = 'open'"""), {"id": event_id, "now": now})
            for unit, role in d.subtasks:
                conn.execute(text("""INSERT INTO subtasks (event_id, unit_code, role, created_at)
                                     VALUES (:id, :u, :r, :now)"""), {"id": event_id, "u": unit, "r": role, "now": now})
            if d.close_subtask:
                conn.execute(text("""UPDATE subtasks SET status = 'done', done_at = :now WHERE event_id = :id
                                     AND unit_code = :u AND role = 'assist' AND status = 'open'"""),
                             {"id": event_id, "u": d.close_subtask, "now": now})
            if action == "close":
                conn.execute(text("UPDATE subtasks SET status = 'done', done_at = :now WHERE event_id = :id "
                                  "AND status = 'open'"), {"id": event_id, "now": now})
            for url in payload.get("photos") or []:
                conn.execute(text("INSERT INTO attachments (event_id, url, created_at) VALUES (:e, :u, :now)"),
                             {"e": event_id, "u": url, "now": now})
            log = d.log
            eventlog.append(conn, event_id, now, log["actor"], log["role"], action, log["from_status"],
                            log["to_status"], log["note"], log["data"])
            eventlog.notify(conn, [event_id])
            return get_event(conn, event_id, actor)

    def _relocate(self, lon: Any, lat: Any, crs: str | None) -> tuple[dict[str, Any], tuple[float, float]]:
        x, y = self.locator.to_storage([lon], [lat], crs)
        res = self.locator.locate(x, y, "EPSG:4490")[0]
        if res["cell"] is None:
            raise ActionInvalid(f"the new location is still in no grid cell: {res['reason']}")
        return {
            "located_by": "operator", "reason": None, "snapped": res["snapped"], "distance_m": res["distance_m"],
            "cell_code": res["cell"]["code"], "cell_name": res["cell"]["name"],
            "worker_id": (res["worker"] or {}).get("id"), "worker_name": (res["worker"] or {}).get("name"),
            "village_code": res["village"]["code"], "township_code": res["township"]["code"],
            "district_code": res["district"]["code"],
        }, (float(x[0]), float(y[0]))
