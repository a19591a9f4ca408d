"""What the dashboard reads from PostGIS: aggregates and map layers, never raw event lists beyond a short ticker.

Every function takes the account (an Actor) and limits itself to what that account may see (gis.cases.scope_sql
for events; the villages inside the account's scope code for geometry). Geometry leaves here as GeoJSON in
WGS84, or shifted to GCJ-02 when the configured basemap is a GCJ-02 one (`shift`).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Engine, text

from gis.cases import scope_level, scope_sql
from gis.gcj02 import wgs84_to_gcj02
from gis.intake import TZ
from gis.workflow import OPEN_SQL, Actor

OPEN_NOT_STARTED = "('needs_location', 'reported', 'accepted', 'dispatched')"
IN_PROGRESS = "('in_progress', 'feedback', 'review')"


def villages_clause(actor: Actor) -> tuple[str, dict[str, Any]]:
    """A WHERE fragment over alias v (village jurisdictions) for the villages inside the account's scope."""
    code = actor.scope_code or ""
    level = scope_level(code) if code else "district"
    if level == "district":
        return ("v.parent_id IN (SELECT t.id FROM jurisdictions t JOIN jurisdictions d ON d.id = t.parent_id "
                "WHERE d.code = :vscope)" if code else "true"), {"vscope": code}
    if level == "township":
        return "v.parent_id = (SELECT id FROM jurisdictions WHERE code = :vscope)", {"vscope": code}
    return "v.code = :vscope", {"vscope": code[:12]}


# -- geometry ---------------------------------------------------------------------------------------------------

def _shift_coords(coords: Any) -> Any:
    if isinstance(coords[0], (int, float)):
        x, y = wgs84_to_gcj02(float(coords[0]), float(coords[1]))
        return [round(x, 6), round(y, 6)]
    return [_shift_coords(c) for c in coords]


def shift_fc(fc: dict[str, Any]) -> dict[str, Any]:
    """Shift every coordinate of a FeatureCollection from WGS84 to GCJ-02 (for AMap/Tencent basemaps)."""
    for f in fc.get("features", []):
        g = f.get("geometry")
        if g and g.get("coordinates"):
            g["coordinates"] = _shift_coords(g["coordinates"])
    return fc


def _collect(engine: Engine, inner: str, params: dict[str, Any], shift: bool) -> dict[str, Any]:
    sql = f"""SELECT json_build_object('type', 'FeatureCollection', 'features', coalesce(json_agg(
                json_build_object('type', 'Feature', 'geometry', ST_AsGeoJSON(f.geom, 5)::json,
                                  'properties', to_jsonb(f) - 'geom')), '[]'::json))::text FROM ({inner}) f"""
    with engine.connect() as conn:
        fc: dict[str, Any] = json.loads(conn.execute(text(sql), params).scalar_one())
    return shift_fc(fc) if shift else fc


def village_shapes(engine: Engine, actor: Actor, shift: bool = False) -> dict[str, Any]:
    """Village outlines in scope, simplified for display (≈ 3 m), with code and name."""
    clause, params = villages_clause(actor)
    return _collect(engine, f"""SELECT v.code, v.name,
                                       ST_SimplifyPreserveTopology(v.geom, 0.00003) AS geom
                                FROM jurisdictions v WHERE v.level = 'village' AND {clause}""", params, shift)


def township_shapes(engine: Engine, actor: Actor, shift: bool = False) -> dict[str, Any]:
    clause, params = villages_clause(actor)
    return _collect(engine, f"""SELECT t.code, t.name, ST_SimplifyPreserveTopology(t.geom, 0.00003) AS geom
                                FROM jurisdictions t WHERE t.level = 'township' AND t.id IN (
                                    SELECT v.parent_id FROM jurisdictions v WHERE v.level = 'village' AND {clause})""",
                    params, shift)


def water_shapes(engine: Engine, actor: Actor, shift: bool = False) -> dict[str, Any]:
    clause, params = villages_clause(actor)
    return _collect(engine, f"""SELECT w.name, ST_SimplifyPreserveTopology(w.geom, 0.00003) AS geom
                                FROM water_bodies w WHERE EXISTS (SELECT 1 FROM jurisdictions v
                                WHERE v.level = 'village' AND {clause} AND ST_Intersects(v.geom, w.geom))""",
                    params, shift)


def cell_shapes(engine: Engine, actor: Actor, shift: bool = False, village: str | None = None) -> dict[str, Any]:
    """Live grid cells in scope (or of one village) with their grid worker."""
    clause, params = villages_clause(actor)
    extra = ""
    if village:
        extra = " AND v.code = :village"
        params["village"] = village
    if scope_level(actor.scope_code or "330212000000") == "cell":
        extra += " AND c.code = :cscope"
        params["cscope"] = actor.scope_code
    return _collect(engine, f"""
        SELECT c.code, c.name, v.code AS village_code, w.name AS worker_name,
               ST_SimplifyPreserveTopology(c.geom, 0.00002) AS geom
        FROM cells c JOIN jurisdictions v ON v.id = c.village_id
        LEFT JOIN LATERAL (SELECT wk.name FROM worker_assignments a JOIN workers wk ON wk.id = a.worker_id
                           WHERE a.cell_id = c.id AND a.role = 'grid_worker' AND a.valid_to IS NULL
                           ORDER BY wk.id LIMIT 1) w ON true
        WHERE c.valid_to IS NULL AND {clause}{extra}""", params, shift)


def device_points(engine: Engine, actor: Actor, shift: bool = False) -> dict[str, Any]:
    clause, params = villages_clause(actor)
    return _collect(engine, f"""SELECT d.id, d.kind, d.name, d.geom FROM devices d WHERE EXISTS (
                                    SELECT 1 FROM jurisdictions v WHERE v.level = 'village' AND {clause}
                                    AND ST_Intersects(v.geom, d.geom))""", params, shift)


def scope_bounds(engine: Engine, actor: Actor) -> list[list[float]]:
    """[[south, west], [north, east]] of the villages in scope (Leaflet's order)."""
    clause, params = villages_clause(actor)
    with engine.connect() as conn:
        r = conn.execute(text(f"""SELECT ST_XMin(e) AS x0, ST_YMin(e) AS y0, ST_XMax(e) AS x1, ST_YMax(e) AS y1
                                  FROM (SELECT ST_Extent(v.geom) AS e FROM jurisdictions v
                                        WHERE v.level = 'village' AND {clause}) s"""), params).one()
    if r.x0 is None:
        return [[29.6, 121.4], [29.8, 121.7]]
    return [[r.y0, r.x0], [r.y1, r.x1]]


# -- aggregates -------------------------------------------------------------------------------------------------

def local_midnight(now: dt.datetime) -> dt.datetime:
    return now.astimezone(TZ).replace(hour=0, minute=0, second=0, microsecond=0)


def village_stats(engine: Engine, actor: Actor, start: dt.datetime, end: dt.datetime,
                  now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Per village in scope: density in [start, end) and the backlog now (gis.hotspots when it is there)."""
    try:
        from gis import hotspots

        return hotspots.village_stats(engine, start, end, actor=actor, now=now)
    except (ImportError, NotImplementedError):
        return _village_stats(engine, actor, start, end, now or dt.datetime.now(TZ))


def _village_stats(engine: Engine, actor: Actor, start: dt.datetime, end: dt.datetime,
                   now: dt.datetime) -> list[dict[str, Any]]:
    # Interim until gis.hotspots.village_stats lands: one pass over the scope's events, grouped by village.
    vclause, vparams = villages_clause(actor)
    eclause, eparams = scope_sql(actor)
    sql = f"""
        WITH agg AS (
            SELECT e.village_code AS code,
                   count(*) FILTER (WHERE e.received_at >= :start AND e.received_at < :end) AS events,
                   count(*) FILTER (WHERE e.received_at >= :start - (:end - :start) AND e.received_at < :start)
                       AS previous,
                   count(*) FILTER (WHERE e.status IN {OPEN_NOT_STARTED}) AS open,
                   count(*) FILTER (WHERE e.status IN {IN_PROGRESS}) AS in_progress,
                   count(*) FILTER (WHERE e.status IN {OPEN_SQL} AND (e.overdue OR e.deadline < :now)) AS overdue,
                   count(*) FILTER (WHERE e.status = 'closed' AND e.closed_at >= :day) AS closed_today,
                   count(*) FILTER (WHERE e.status = 'closed' AND e.received_at >= :start
                                    AND e.received_at < :end) AS closed,
                   count(*) FILTER (WHERE e.status = 'closed' AND e.received_at >= :start
                                    AND e.received_at < :end AND e.closed_at <= e.deadline) AS on_time
            FROM events e
            WHERE {eclause} AND e.village_code IS NOT NULL
              AND (e.received_at >= :start - (:end - :start) OR e.status IN {OPEN_SQL} OR e.closed_at >= :day)
            GROUP BY e.village_code)
        SELECT v.code, v.name, v.area_m2 / 1e6 AS area_km2, v.population,
               coalesce(a.events, 0) AS events, coalesce(a.previous, 0) AS previous,
               coalesce(a.open, 0) AS open, coalesce(a.in_progress, 0) AS in_progress,
               coalesce(a.overdue, 0) AS overdue, coalesce(a.closed_today, 0) AS closed_today,
               coalesce(a.closed, 0) AS closed, coalesce(a.on_time, 0) AS on_time
        FROM jurisdictions v LEFT JOIN agg a ON a.code = v.code
        WHERE v.level = 'village' AND {vclause}
        ORDER BY coalesce(a.events, 0) DESC, v.code"""
    with engine.connect() as conn:
        rows = conn.execute(text(sql), {**vparams, **eparams, "start": start, "end": end, "now": now,
                                        "day": local_midnight(now)}).all()
    out = []
    for r in rows:
        area = float(r.area_km2 or 0)
        out.append({
            "code": r.code, "name": r.name, "area_km2": round(area, 3), "population": r.population,
            "events": r.events, "per_km2": round(r.events / area, 2) if area else None,
            "per_1000": round(r.events * 1000 / r.population, 2) if r.population else None,
            "open": r.open, "in_progress": r.in_progress, "overdue": r.overdue, "closed_today": r.closed_today,
            "on_time_rate": round(r.on_time / r.closed, 4) if r.closed else None, "previous": r.previous,
            "trend": (r.events > r.previous) - (r.events < r.previous),
        })
    return out


def today_figures(engine: Engine, actor: Actor, now: dt.datetime | None = None) -> dict[str, Any]:
    """Today's KPIs (received, closed, on-time rate of today's closures), the backlog, and received per platform."""
    now = now or dt.datetime.now(TZ)
    day = local_midnight(now)
    clause, params = scope_sql(actor)
    with engine.connect() as conn:
        r = conn.execute(text(f"""
            SELECT count(*) FILTER (WHERE e.received_at >= :day) AS received,
                   count(*) FILTER (WHERE e.status = 'closed' AND e.closed_at >= :day) AS closed,
                   count(*) FILTER (WHERE e.status = 'closed' AND e.closed_at >= :day
                                    AND e.closed_at <= e.deadline) AS on_time,
                   count(*) FILTER (WHERE e.status IN {OPEN_SQL}) AS open,
                   count(*) FILTER (WHERE e.status IN {OPEN_SQL} AND (e.overdue OR e.deadline < :now)) AS overdue
            FROM events e WHERE {clause}
              AND (e.received_at >= :day OR e.closed_at >= :day OR e.status IN {OPEN_SQL})"""),
            {**params, "day": day, "now": now}).one()
        platforms = {p: n for p, n in conn.execute(text(f"""
            SELECT e.platform, count(*) FROM events e WHERE {clause} AND e.received_at >= :day
            GROUP BY e.platform"""), {**params, "day": day}).all()}
    return {"received": r.received, "closed": r.closed, "open": r.open, "overdue": r.overdue,
            "on_time_rate": round(r.on_time / r.closed, 4) if r.closed else None, "platforms": platforms}


def latest_events(engine: Engine, actor: Actor, limit: int = 12) -> list[dict[str, Any]]:
    """The newest cases in scope for the ticker (id, category, status, cell, worker, village, time)."""
    clause, params = scope_sql(actor)
    with engine.connect() as conn:
        rows = conn.execute(text(f"""
            SELECT e.id, e.category, e.status, e.cell_code, e.cell_name, e.worker_name, e.village_code,
                   (SELECT name FROM jurisdictions WHERE code = e.village_code) AS village_name, e.received_at,
                   e.overdue
            FROM events e WHERE {clause} ORDER BY e.id DESC LIMIT :limit"""), {**params, "limit": limit}).all()
    return [dict(r._mapping) for r in rows]


def changed_events(engine: Engine, actor: Actor, ids: list[int], shift: bool = False) -> list[dict[str, Any]]:
    """The changed cases in scope, as the live feed pushes them to the wall (position, status, codes)."""
    clause, params = scope_sql(actor)
    with engine.connect() as conn:
        rows = conn.execute(text(f"""
            SELECT e.id, e.status, e.category, e.platform, e.village_code, e.cell_code, e.overdue,
                   ST_X(e.geom) AS lon, ST_Y(e.geom) AS lat, e.cell_name, e.worker_name, e.received_at,
                   (SELECT name FROM jurisdictions WHERE code = e.village_code) AS village_name,
                   e.received_at > now() - interval '2 minutes' AND e.version = 1 AS new
            FROM events e WHERE e.id = ANY(:ids) AND {clause}"""), {**params, "ids": ids}).all()
    out = []
    for r in rows:
        d = dict(r._mapping)
        if shift and d["lon"] is not None:
            d["lon"], d["lat"] = wgs84_to_gcj02(d["lon"], d["lat"])
        out.append(d)
    return out


def village_events(engine: Engine, actor: Actor, village: str, start: dt.datetime, end: dt.datetime,
                   cell: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """A village's (or one cell's) newest cases of the window, for the drill-down list (bounded)."""
    clause, params = scope_sql(actor)
    extra = " AND e.cell_code = :cell" if cell else ""
    with engine.connect() as conn:
        rows = conn.execute(text(f"""
            SELECT e.id, e.category, e.status, e.cell_code, e.cell_name, e.worker_name, e.received_at, e.overdue
            FROM events e WHERE {clause} AND e.village_code = :village{extra}
              AND e.received_at >= :start AND e.received_at < :end
            ORDER BY e.received_at DESC LIMIT :limit"""),
            {**params, "village": village, "cell": cell, "start": start, "end": end, "limit": limit}).all()
    return [dict(r._mapping) for r in rows]


def village_cell_counts(engine: Engine, actor: Actor, village: str, start: dt.datetime,
                        end: dt.datetime) -> list[dict[str, Any]]:
    clause, params = scope_sql(actor)
    with engine.connect() as conn:
        rows = conn.execute(text(f"""
            SELECT e.cell_code, max(e.cell_name) AS cell_name, max(e.worker_name) AS worker_name, count(*) AS n,
                   count(*) FILTER (WHERE e.status IN {OPEN_SQL}) AS open
            FROM events e WHERE {clause} AND e.village_code = :village
              AND e.received_at >= :start AND e.received_at < :end
            GROUP BY e.cell_code ORDER BY n DESC, e.cell_code LIMIT 100"""),
            {**params, "village": village, "start": start, "end": end}).all()
    return [dict(r._mapping) for r in rows]
