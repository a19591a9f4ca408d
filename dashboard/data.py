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

from gis import hotspots
from gis.cases import scope_level, scope_sql
from gis.gcj02 import wgs84_to_gcj02
from gis.intake import TZ
from gis.workflow import OPEN_SQL, Actor


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
                json_build_object('type', 'Feature', 'geometry', ST_AsGeoJSON(f.geom, 5, 0)::json,
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
    """Per village in scope: density in [start, end) and the backlog now (gis.hotspots.village_stats)."""
    return hotspots.village_stats(engine, start, end, actor=actor, now=now)


def wall_figures(engine: Engine, actor: Actor, now: dt.datetime | None = None) -> dict[str, Any]:
    """Everything the wall shows for today, from one pass over the cases that matter (today's, the backlog):

    `villages`: the rows of gis.hotspots.village_stats for today's window (code, name, area_km2, population, events,
    per_km2, per_1000, open, in_progress, overdue, closed_today) with every village in scope; `totals`: received
    today, closed today, on_time_rate of today's closures, open and overdue, the triage queue (cases without a
    village) included; `platforms`: received today per platform.
    """
    now = (now or dt.datetime.now(TZ)).astimezone(TZ)
    day0 = local_midnight(now)
    clause, params = scope_sql(actor)
    vclause, vparams = villages_clause(actor)
    today = "{0}.received_at >= :day0 AND {0}.received_at < :day1"
    closed_today = "p.status = 'closed' AND p.closed_at >= :day0 AND p.closed_at < :day1"
    open_ = "p.status NOT IN ('closed', 'rejected') AND p.received_at < :day1"
    # Three disjoint parts, each an index-only scan of a covering index (migration 0005): the open backlog, today's
    # arrivals already closed or rejected, and today's closures of earlier arrivals.
    sql = f"""
        WITH p AS (
            SELECT e.village_code, e.platform, e.status, e.received_at, NULL::timestamptz AS closed_at, e.deadline,
                   e.overdue
            FROM events e WHERE {clause} AND e.status NOT IN ('closed', 'rejected')
            UNION ALL
            SELECT e.village_code, e.platform, e.status, e.received_at, e.closed_at, e.deadline, false
            FROM events e WHERE {clause} AND {today.format("e")} AND e.status IN ('closed', 'rejected')
            UNION ALL
            SELECT e.village_code, e.platform, 'closed', e.received_at, e.closed_at, e.deadline, false
            FROM events e WHERE {clause} AND e.status = 'closed' AND e.closed_at >= :day0 AND e.closed_at < :day1
              AND NOT ({today.format("e")}))
        SELECT p.village_code AS code, p.platform,
               count(*) FILTER (WHERE {today.format("p")}) AS received,
               count(*) FILTER (WHERE {closed_today}) AS closed_today,
               count(*) FILTER (WHERE {closed_today} AND p.closed_at <= p.deadline) AS on_time_today,
               count(*) FILTER (WHERE {open_}) AS open,
               count(*) FILTER (WHERE p.status IN ('dispatched', 'in_progress', 'feedback', 'review')
                                AND p.received_at < :day1) AS in_progress,
               count(*) FILTER (WHERE {open_} AND (p.overdue OR p.deadline < :now)) AS overdue
        FROM p GROUP BY 1, 2"""
    keys = ("received", "closed_today", "on_time_today", "open", "in_progress", "overdue")
    with engine.connect() as conn:
        # On one core: a parallel plan is no faster here, and the wall is computed while a browser loads the page
        # on the same machine.
        conn.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
        villages = conn.execute(text(f"""SELECT v.code, v.name, v.area_m2, v.population FROM jurisdictions v
                                         WHERE v.level = 'village' AND {vclause}"""), vparams).all()
        groups = conn.execute(text(sql), {**params, "day0": day0, "day1": day0 + dt.timedelta(days=1),
                                          "now": now}).all()
    per_village: dict[str, dict[str, int]] = {}
    totals = dict.fromkeys(keys, 0)
    platforms: dict[str, int] = {}
    for g in groups:
        acc = per_village.setdefault(g.code, dict.fromkeys(keys, 0)) if g.code else None
        for k in keys:
            totals[k] += getattr(g, k)
            if acc is not None:
                acc[k] += getattr(g, k)
        if g.received:
            platforms[g.platform] = platforms.get(g.platform, 0) + g.received
    rows = []
    for v in villages:
        acc = per_village.get(v.code, dict.fromkeys(keys, 0))
        km2 = float(v.area_m2 or 0) / 1e6
        n = acc["received"]
        rows.append({"code": v.code, "name": v.name, "area_km2": round(km2, 3), "population": v.population,
                     "events": n, "per_km2": round(n / km2, 2) if km2 else None,
                     "per_1000": round(n * 1000 / v.population, 2) if v.population else None,
                     "open": acc["open"], "in_progress": acc["in_progress"], "overdue": acc["overdue"],
                     "closed_today": acc["closed_today"]})
    rows.sort(key=lambda r: (-r["events"], r["code"]))
    return {"villages": rows, "platforms": platforms,
            "totals": {"received": totals["received"], "closed": totals["closed_today"], "open": totals["open"],
                       "overdue": totals["overdue"],
                       "on_time_rate": (round(totals["on_time_today"] / totals["closed_today"], 4)
                                        if totals["closed_today"] else None)}}


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
