"""Hotspot analytics for the leaders' page and the reports: per-village figures with trends, hexagon and grid-cell
density, Getis-Ord Gi* hot and cold spots (PySAL esda), and places where the same problem keeps coming back.

Conventions shared by every function:

- `start`, `end` are aware datetimes; the window is half-open [start, end) on `received_at` (as the KPIs count).
- `categories` (taxonomy codes) and `platform` (a platform key as stored on the case) narrow the events.
- `actor` limits the events to what that account may see, exactly as gis/cases.py does (`scope_sql`); None means the
  whole district. Villages, cells and the Gi* study area are those inside the actor's scope code.
- Counting and spatial aggregation run in PostGIS, in the CGCS2000 Gauss–Krüger zone of the data (metres);
  GeoJSON comes out in WGS84 lon/lat (RFC 7946). Only Gi* itself runs in Python, on the aggregated units.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from sqlalchemy import Connection, Engine, text

from gis.cases import scope_level, scope_sql
from gis.crs import gk_epsg, transformer
from gis.errors import NotFound
from gis.intake import TZ
from gis.workflow import Actor

GI_CLASSES = ("hot_99", "hot_95", "hot_90", "cold_99", "cold_95", "cold_90", "none")
LEVELS_P = ((0.01, "99"), (0.05, "95"), (0.10, "90"))
MIN_LOCAL = 3  # events in a unit's window (it and its neighbours) for it to be a hot spot (getis_ord)
SQRT3 = math.sqrt(3.0)


def _check_window(start: dt.datetime, end: dt.datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware datetimes")
    if end <= start:
        raise ValueError(f"the period is empty: {start.isoformat()} is not before {end.isoformat()}")


def _filters(categories: Sequence[str] | None, platform: str | None, actor: Actor | None) -> tuple[str, dict[str, Any]]:
    """WHERE fragment over alias e for everything but the time window. Empty `categories` means all."""
    where: list[str] = ["true"]
    params: dict[str, Any] = {}
    if categories:
        where.append("e.category = ANY(:categories)")
        params["categories"] = list(categories)
    if platform:
        where.append("e.platform = :platform")
        params["platform"] = platform
    if actor is not None:
        clause, scope_params = scope_sql(actor)
        where.append(clause)
        params.update(scope_params)
    return " AND ".join(where), params


def _village_scope(actor: Actor | None, alias: str = "v") -> tuple[str, dict[str, Any]]:
    """WHERE fragment over villages (alias `alias`) inside the actor's scope code (statistical codes nest)."""
    code = actor.scope_code if actor is not None else ""
    if not code:
        return "true", {}
    level = scope_level(code)
    clause = {"district": f"left({alias}.code, 6) = left(:vscope, 6)",
              "township": f"left({alias}.code, 9) = left(:vscope, 9)",
              "village": f"{alias}.code = :vscope",
              "cell": f"{alias}.code = left(:vscope, 12)"}[level]
    return clause, {"vscope": code}


def _revision_and_srid(conn: Connection) -> tuple[int, int]:
    """The dataset revision (cache key for the study areas) and the Gauss–Krüger zone of the data."""
    row = conn.execute(text("""SELECT (SELECT revision FROM dataset_state WHERE id = 1) AS rev,
        (SELECT ST_X(ST_Centroid(ST_SetSRID(ST_Extent(geom)::geometry, 4490))) FROM jurisdictions) AS lon""")).one()
    return int(row.rev or 0), gk_epsg(float(row.lon) if row.lon is not None else 120.0)


def _local_day(t: dt.datetime) -> dt.date:
    return t.astimezone(TZ).date()


def _ratio(a: float, b: float, digits: int = 4) -> float | None:
    return round(a / b, digits) if b else None


def _hex_ij_sql(x: str, y: str) -> str:
    """SQL for the (i, j) of the ST_Hexagon (flat-topped, odd columns shifted up by half a height, origin 0 0,
    edge :size) holding the metric point (x, y): axial coordinates rounded in cube space, then odd-q offset."""
    return f"""
        CROSS JOIN LATERAL (SELECT ({x}) / :size AS x, ({y}) / :size AS y) hu
        CROSS JOIN LATERAL (SELECT 2.0 / 3.0 * hu.x AS qf, -hu.x / 3.0 + sqrt(3.0) / 3.0 * hu.y AS rf) hf
        CROSS JOIN LATERAL (SELECT round(hf.qf) AS q0, round(hf.rf) AS r0, round(-hf.qf - hf.rf) AS s0) hr
        CROSS JOIN LATERAL (SELECT abs(hr.q0 - hf.qf) AS dq, abs(hr.r0 - hf.rf) AS dr,
                                   abs(hr.s0 + hf.qf + hf.rf) AS ds) hd
        CROSS JOIN LATERAL (SELECT
            (CASE WHEN hd.dq > hd.dr AND hd.dq > hd.ds THEN -hr.r0 - hr.s0 ELSE hr.q0 END)::bigint AS q,
            (CASE WHEN hd.dq > hd.dr AND hd.dq > hd.ds THEN hr.r0 WHEN hd.dr > hd.ds THEN -hr.q0 - hr.s0
                  ELSE hr.r0 END)::bigint AS r) ha
        CROSS JOIN LATERAL (SELECT ha.q AS i, ha.r + (ha.q - (ha.q & 1)) / 2 AS j) hx"""


def _hex_area_km2(size_m: float) -> float:
    return 1.5 * SQRT3 * size_m * size_m / 1e6


def _hex_counts(conn: Connection, srid: int, start: dt.datetime, end: dt.datetime, size_m: float,
                categories: Sequence[str] | None, platform: str | None,
                actor: Actor | None) -> dict[tuple[int, int], int]:
    where, params = _filters(categories, platform, actor)
    # MATERIALIZED: each point is projected once (inlined, the planner would repeat ST_Transform in every term).
    rows = conn.execute(text(f"""
        WITH p AS MATERIALIZED (
            SELECT ST_X(g) AS x, ST_Y(g) AS y FROM (
                SELECT ST_Transform(e.geom, {srid}) AS g FROM events e
                WHERE e.received_at >= :start AND e.received_at < :end AND e.geom IS NOT NULL AND {where}) t)
        SELECT hx.i, hx.j, count(*) AS n FROM p {_hex_ij_sql("p.x", "p.y")}
        GROUP BY hx.i, hx.j"""), {**params, "start": start, "end": end, "size": float(size_m)}).all()
    return {(int(r.i), int(r.j)): int(r.n) for r in rows}


def _hex_polygons(keys: Sequence[tuple[int, int]], size_m: float, srid: int) -> list[dict[str, Any]]:
    """GeoJSON (WGS84) of ST_Hexagon(size_m, i, j) in the metric CRS `srid`, computed with the same layout
    (vertices at ±size on the x axis and ±size/2, ±height/2 around the centre)."""
    if not keys:
        return []
    ij = np.asarray(keys, dtype=np.int64)
    height = SQRT3 * size_m
    cx = 1.5 * size_m * ij[:, 0]
    cy = height * ij[:, 1] + np.where(ij[:, 0] & 1, height / 2, 0.0)
    dx = np.array([-1.0, -0.5, 0.5, 1.0, 0.5, -0.5, -1.0]) * size_m
    dy = np.array([0.0, -0.5, -0.5, 0.0, 0.5, 0.5, 0.0]) * height
    lon, lat = transformer(srid, 4326).transform(cx[:, None] + dx, cy[:, None] + dy)
    lon, lat = np.round(lon, 6), np.round(lat, 6)
    return [{"type": "Polygon", "coordinates": [[[float(a), float(b)] for a, b in zip(lon[k], lat[k], strict=True)]]}
            for k in range(len(ij))]


def village_stats(engine: Engine, start: dt.datetime, end: dt.datetime, *, categories: Sequence[str] | None = None,
                  platform: str | None = None, actor: Actor | None = None,
                  now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """One row per village in scope (villages without events included), ordered by `events` descending, code.

    Keys: code, name, area_km2, population, events (received in [start, end)), per_km2, per_1000 (None without a
    population), open, in_progress, overdue (the backlog now: cases received before `end` still open; of them those
    handed to a handler — dispatched, in_progress, feedback, review; of them those flagged overdue or past their
    deadline at `now`), closed_today (closed on the local calendar day of `now`), on_time_rate (closed by the
    deadline ÷ closed, of the window's cases; None when none closed), previous (events in
    [start - (end - start), start)), trend (+1 more than previous, -1 fewer, 0 equal). `now` defaults to the
    current time. Cases without a village (the triage queue) are in no row.
    """
    _check_window(start, end)
    now = (now or dt.datetime.now(TZ)).astimezone(TZ)
    day0 = dt.datetime.combine(now.date(), dt.time(), TZ)
    where, params = _filters(categories, platform, actor)
    vwhere, vparams = _village_scope(actor)
    sql = f"""
        WITH v AS (SELECT v.code, v.name, v.area_m2, v.population FROM jurisdictions v
                   WHERE v.level = 'village' AND {vwhere}),
        -- One pass over the cases that matter: the two periods, the open backlog, today's closures.
        w AS (SELECT e.village_code AS code,
                     count(*) FILTER (WHERE e.received_at >= :start AND e.received_at < :end) AS events,
                     count(*) FILTER (WHERE e.received_at >= :pstart AND e.received_at < :start) AS previous,
                     count(*) FILTER (WHERE e.received_at >= :start AND e.received_at < :end
                                      AND e.status = 'closed') AS closed,
                     count(*) FILTER (WHERE e.received_at >= :start AND e.received_at < :end
                                      AND e.status = 'closed' AND e.closed_at <= e.deadline) AS on_time,
                     count(*) FILTER (WHERE e.status NOT IN ('closed', 'rejected') AND e.received_at < :end) AS open,
                     count(*) FILTER (WHERE e.status IN ('dispatched', 'in_progress', 'feedback', 'review')
                                      AND e.received_at < :end) AS in_progress,
                     count(*) FILTER (WHERE e.status NOT IN ('closed', 'rejected') AND e.received_at < :end
                                      AND (e.overdue OR e.deadline < :now)) AS overdue,
                     count(*) FILTER (WHERE e.status = 'closed' AND e.closed_at >= :day0 AND e.closed_at < :day1)
                         AS closed_today
              FROM events e
              WHERE ((e.received_at >= :pstart AND e.received_at < :end)
                     OR (e.status NOT IN ('closed', 'rejected') AND e.received_at < :end)
                     OR (e.status = 'closed' AND e.closed_at >= :day0 AND e.closed_at < :day1))
                AND e.village_code IS NOT NULL AND {where}
              GROUP BY 1)
        SELECT v.code, v.name, v.area_m2, v.population, coalesce(w.events, 0) AS events,
               coalesce(w.previous, 0) AS previous, coalesce(w.closed, 0) AS closed,
               coalesce(w.on_time, 0) AS on_time, coalesce(w.open, 0) AS open,
               coalesce(w.in_progress, 0) AS in_progress, coalesce(w.overdue, 0) AS overdue,
               coalesce(w.closed_today, 0) AS closed_today
        FROM v LEFT JOIN w USING (code)
        ORDER BY events DESC, v.code"""
    with engine.connect() as conn:
        rows = conn.execute(text(sql), {**params, **vparams, "start": start, "end": end,
                                        "pstart": start - (end - start), "now": now, "day0": day0,
                                        "day1": day0 + dt.timedelta(days=1)}).all()
    out = []
    for r in rows:
        km2 = float(r.area_m2) / 1e6
        out.append({
            "code": r.code, "name": r.name, "area_km2": round(km2, 3), "population": r.population,
            "events": r.events, "per_km2": _ratio(r.events, km2, 2),
            "per_1000": _ratio(r.events * 1000, r.population or 0, 2),
            "open": r.open, "in_progress": r.in_progress, "overdue": r.overdue, "closed_today": r.closed_today,
            "on_time_rate": _ratio(r.on_time, r.closed), "previous": r.previous,
            "trend": (r.events > r.previous) - (r.events < r.previous),
        })
    return out


def hex_density(engine: Engine, start: dt.datetime, end: dt.datetime, *, size_m: float = 250,
                categories: Sequence[str] | None = None, platform: str | None = None,
                actor: Actor | None = None) -> dict[str, Any]:
    """GeoJSON FeatureCollection of the non-empty hexagons (PostGIS ST_Hexagon layout, edge `size_m` metres in the
    Gauss–Krüger zone): properties `i`, `j` (hexagon index), `count`, `per_km2`. Collection members: `size_m`,
    `max_count`, `total`.
    """
    _check_window(start, end)
    with engine.connect() as conn:
        _, srid = _revision_and_srid(conn)
        counts = _hex_counts(conn, srid, start, end, size_m, categories, platform, actor)
    area = _hex_area_km2(size_m)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    geoms = _hex_polygons([k for k, _ in ranked], size_m, srid)
    features = [{"type": "Feature", "geometry": g,
                 "properties": {"i": k[0], "j": k[1], "count": n, "per_km2": round(n / area, 2)}}
                for (k, n), g in zip(ranked, geoms, strict=True)]
    return {"type": "FeatureCollection", "features": features, "size_m": size_m,
            "max_count": max(counts.values(), default=0), "total": sum(counts.values())}


def cell_density(engine: Engine, start: dt.datetime, end: dt.datetime, *, categories: Sequence[str] | None = None,
                 platform: str | None = None, actor: Actor | None = None) -> dict[str, Any]:
    """GeoJSON FeatureCollection of every grid cell valid on the local date of `end` in scope (zeros included):
    properties `code`, `name`, `village_code`, `count` (events of the window in the cell: the cell recorded on the
    case when that cell version was in force when it occurred, otherwise the live cell holding its point),
    `area_km2`, `per_km2`. Collection members: `max_count`, `total`.
    """
    _check_window(start, end)
    with engine.connect() as conn:
        rev, _ = _revision_and_srid(conn)
        cells = _cell_universe(conn, rev, _local_day(end), actor)
        counts = _cell_counts(conn, start, end, _local_day(end), categories, platform, actor)
    features = []
    for c in cells:
        n = counts.get(c["code"], 0)
        features.append({"type": "Feature", "geometry": c["geometry"], "properties": {
            "code": c["code"], "name": c["name"], "village_code": c["village_code"], "count": n,
            "area_km2": round(c["area_km2"], 4), "per_km2": _ratio(n, c["area_km2"], 2)}})
    return {"type": "FeatureCollection", "features": features,
            "max_count": max((f["properties"]["count"] for f in features), default=0),
            "total": sum(f["properties"]["count"] for f in features)}


def getis_ord(engine: Engine, start: dt.datetime, end: dt.datetime, *, unit: Literal["hex", "cell"] = "hex",
              size_m: float = 250, alpha: float = 0.05, categories: Sequence[str] | None = None,
              platform: str | None = None, actor: Actor | None = None, permutations: int = 999,
              seed: int = 12345, correction: Literal["none", "fdr"] = "none", min_local: int = MIN_LOCAL
              ) -> dict[str, Any]:
    """Getis-Ord Gi* (esda.G_Local, star=True) over every unit of the study area, empty ones included.

    unit="hex": all hexagons meeting the scope's jurisdictions, binary weights of the six touching hexagons;
    unit="cell": the grid cells valid at `end`, queen contiguity. Features carry `count`, `gi_z` (standardised
    Gi*), `p` (one-sided permutation pseudo p-value, `permutations` conditional permutations seeded with `seed`,
    so the same data give the same answer), `class` (one of GI_CLASSES: hot/cold by the sign of gi_z when p ≤ alpha,
    the suffix the finest of 99/95/90 that p reaches, i.e. p ≤ 0.01/0.05/0.10) and, for hexagons, `i`, `j`, for
    cells `code`, `name`. Collection members: `unit`, `alpha`, `p_kind` ("permutation"), `permutations`,
    `counts` (features per class), `correction`, `min_local`.

    A hot spot needs at least `min_local` events in its window (the unit and its neighbours, `local` on each
    feature): in a quiet period a single report stands out against a town of empty units, and the test calls its
    unit and every neighbour "hot 99 %" — true of the numbers, useless to a township leader. (Cold spots are not
    bounded: an empty window is what they are.)

    With correction="fdr" the classes follow `q` on each feature instead of p: the Benjamini–Hochberg adjustment
    of the normal-approximation p-values of gi_z (one-sided, as p). Among a thousand units tested at α = 0.05
    about fifty look hot or cold by chance alone; the adjustment keeps the expected share of false ones among
    those shown at α. (Permutation p-values from 999 draws cannot fall below 0.001: too coarse to survive the
    adjustment over a thousand units, however strong the cluster.)
    """
    _check_window(start, end)
    if unit not in ("hex", "cell"):
        raise ValueError(f"unit must be hex or cell, not {unit!r}")
    if not 0 < alpha < 1:
        raise ValueError("alpha must lie between 0 and 1")
    if correction not in ("none", "fdr"):
        raise ValueError(f"correction must be none or fdr, not {correction!r}")
    if min_local < 1:
        raise ValueError("min_local must be at least 1")
    with engine.connect() as conn:
        rev, srid = _revision_and_srid(conn)
        if unit == "hex":
            hexes = _hex_universe(conn, rev, srid, float(size_m), actor)
            hcounts = _hex_counts(conn, srid, start, end, size_m, categories, platform, actor)
            index = {(h["i"], h["j"]): k for k, h in enumerate(hexes)}
            y = np.array([hcounts.get((h["i"], h["j"]), 0) for h in hexes], dtype=float)
            neighbours = [[index[nb] for nb in _hex_neighbours(h["i"], h["j"]) if nb in index] for h in hexes]
            props = [{"i": h["i"], "j": h["j"]} for h in hexes]
            geoms = [h["geometry"] for h in hexes]
        else:
            cells = _cell_universe(conn, rev, _local_day(end), actor)
            ccounts = _cell_counts(conn, start, end, _local_day(end), categories, platform, actor)
            y = np.array([ccounts.get(c["code"], 0) for c in cells], dtype=float)
            neighbours = [c["neighbours"] for c in cells]
            props = [{"code": c["code"], "name": c["name"], "village_code": c["village_code"]} for c in cells]
            geoms = [c["geometry"] for c in cells]
    local = _window_sums(y, neighbours)
    z, p = _gi_star(y, neighbours, permutations, seed, local)
    q = fdr_adjust(_normal_p(z)) if correction == "fdr" else None
    features = []
    tally = dict.fromkeys(GI_CLASSES, 0)
    for k in range(len(y)):
        cls = _classify(float(z[k]), float(p[k] if q is None else q[k]), alpha)
        if cls.startswith("hot") and local[k] < min_local:
            cls = "none"
        tally[cls] += 1
        extra = {} if q is None else {"q": round(float(q[k]), 4)}
        features.append({"type": "Feature", "geometry": geoms[k], "properties": {
            **props[k], "count": int(y[k]), "local": int(local[k]), "gi_z": round(float(z[k]), 4),
            "p": round(float(p[k]), 4), **extra, "class": cls}})
    return {"type": "FeatureCollection", "features": features, "unit": unit,
            "size_m": size_m if unit == "hex" else None, "alpha": alpha, "p_kind": "permutation",
            "permutations": permutations, "seed": seed, "correction": correction, "min_local": min_local,
            "total": int(y.sum()), "counts": tally}


def _normal_p(z: np.ndarray) -> np.ndarray:
    """One-sided p-values of standard normal z-scores (toward the sign of each)."""
    from scipy.stats import norm

    return np.asarray(norm.sf(np.abs(z)), dtype=float)


def fdr_adjust(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q): q of the k-th smallest of n p-values is the least n·p(j)/j over
    j ≥ k, at most 1. A unit is significant at false-discovery rate α when its q ≤ α."""
    n = len(p)
    if n == 0:
        return np.asarray(p, dtype=float)
    order = np.argsort(p, kind="stable")
    scaled = np.asarray(p, dtype=float)[order] * n / np.arange(1, n + 1)
    q = np.empty(n)
    q[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return q


def recurring_places(engine: Engine, start: dt.datetime, end: dt.datetime, *, radius_m: float = 50,
                     min_count: int = 3, categories: Sequence[str] | None = None, platform: str | None = None,
                     actor: Actor | None = None, limit: int = 500) -> list[dict[str, Any]]:
    """Places where cases of one category recur: DBSCAN clusters (ST_ClusterDBSCAN, eps `radius_m` metres in the
    Gauss–Krüger zone, at least `min_count` cases) per category, most cases first (at most `limit`). DBSCAN chains
    dense neighbours, so a place can be wider than `radius_m`: `radius_m` of a result says how wide it is.

    Keys: category, count (cases), reports (reports merged into them included), first, last (received_at,
    ISO, Asia/Shanghai), village_code, village_name, cell_code (the most frequent), lon, lat (WGS84 centroid),
    radius_m (farthest case from the centroid), event_ids (newest first, at most 50).
    """
    _check_window(start, end)
    if radius_m <= 0 or min_count < 2:
        raise ValueError("radius_m must be positive and min_count at least 2")
    where, params = _filters(categories, platform, actor)
    with engine.connect() as conn:
        _, srid = _revision_and_srid(conn)
        rows = conn.execute(text(f"""
            WITH p AS MATERIALIZED (
                SELECT e.id, e.category, e.received_at, e.report_count, e.village_code, e.cell_code,
                       ST_Transform(e.geom, {srid}) AS g
                FROM events e WHERE e.received_at >= :start AND e.received_at < :end AND e.geom IS NOT NULL
                AND {where}),
            c AS (SELECT p.*, ST_ClusterDBSCAN(p.g, eps => :radius, minpoints => :minc)
                                OVER (PARTITION BY p.category) AS cid FROM p),
            k AS (SELECT category, cid, count(*) AS n, sum(report_count) AS reports, min(received_at) AS first,
                         max(received_at) AS last,
                         mode() WITHIN GROUP (ORDER BY village_code) AS village_code,
                         mode() WITHIN GROUP (ORDER BY cell_code) AS cell_code,
                         ST_Collect(g) AS pts, (array_agg(id ORDER BY received_at DESC, id DESC))[1:50] AS ids
                  FROM c WHERE cid IS NOT NULL GROUP BY category, cid HAVING count(*) >= :minc)
            SELECT k.category, k.n, k.reports, k.first, k.last, k.village_code, j.name AS village_name,
                   k.cell_code, ST_X(ll) AS lon, ST_Y(ll) AS lat, ST_MaxDistance(k.pts, ctr) AS spread, k.ids
            FROM k CROSS JOIN LATERAL (SELECT ST_Centroid(k.pts) AS ctr) m
            CROSS JOIN LATERAL (SELECT ST_Transform(m.ctr, 4326) AS ll) t
            LEFT JOIN jurisdictions j ON j.code = k.village_code
            ORDER BY k.n DESC, k.last DESC, k.category LIMIT :limit"""),
            {**params, "start": start, "end": end, "radius": float(radius_m), "minc": int(min_count),
             "limit": int(limit)}).all()
    return [{"category": r.category, "count": r.n, "reports": int(r.reports),
             "first": r.first.astimezone(TZ).isoformat(), "last": r.last.astimezone(TZ).isoformat(),
             "village_code": r.village_code, "village_name": r.village_name, "cell_code": r.cell_code,
             "lon": round(float(r.lon), 6), "lat": round(float(r.lat), 6), "radius_m": round(float(r.spread), 1),
             "event_ids": list(r.ids)} for r in rows]


# --- study areas (cached per database, dataset revision, scope and size: they change only with a boundary load) ---

_CACHE: dict[tuple[Any, ...], Any] = {}
_CACHE_SIZE = 32


def _cached(key: tuple[Any, ...], build: Any) -> Any:
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = build()
    return _CACHE[key]


def _hex_universe(conn: Connection, rev: int, srid: int, size_m: float, actor: Actor | None) -> list[dict[str, Any]]:
    """Every hexagon meeting a village of the scope, with its WGS84 geometry."""
    vwhere, vparams = _village_scope(actor)

    def build() -> list[dict[str, Any]]:
        rows = conn.execute(text(f"""
            WITH a AS MATERIALIZED (SELECT ST_Transform(v.geom, {srid}) AS g FROM jurisdictions v
                                    WHERE v.level = 'village' AND {vwhere}),
            b AS (SELECT ST_SetSRID(ST_Extent(g)::geometry, {srid}) AS box FROM a)
            SELECT h.i, h.j FROM b CROSS JOIN LATERAL ST_HexagonGrid(:size, b.box) h
            WHERE EXISTS (SELECT 1 FROM a WHERE ST_Intersects(a.g, h.geom))
            ORDER BY h.i, h.j"""), {**vparams, "size": size_m}).all()
        keys = [(int(r.i), int(r.j)) for r in rows]
        return [{"i": k[0], "j": k[1], "geometry": g} for k, g in zip(keys, _hex_polygons(keys, size_m, srid),
                                                                          strict=True)]

    return list(_cached(("hex", str(conn.engine.url), rev, srid, size_m, vwhere, tuple(vparams.values())), build))


def _hex_neighbours(i: int, j: int) -> list[tuple[int, int]]:
    """The six hexagons sharing an edge with (i, j) in the ST_Hexagon layout (odd columns half a row up)."""
    up = i & 1  # odd columns sit half a row higher: their side neighbours are at rows j and j + 1
    return [(i, j - 1), (i, j + 1), (i - 1, j - 1 + up), (i - 1, j + up), (i + 1, j - 1 + up), (i + 1, j + up)]


def _cell_universe(conn: Connection, rev: int, day: dt.date, actor: Actor | None) -> list[dict[str, Any]]:
    """The grid cells valid on `day` in the scope's villages, with WGS84 geometry and their queen neighbours
    (cells that touch, within 0.1 m) as indexes into the list."""
    vwhere, vparams = _village_scope(actor)

    def build() -> list[dict[str, Any]]:
        live = "c.valid_from <= :day AND (c.valid_to IS NULL OR c.valid_to > :day)"
        params = {**vparams, "day": day}
        rows = conn.execute(text(f"""
            SELECT c.id, c.code, c.name, v.code AS village_code, c.area_m2,
                   ST_AsGeoJSON(ST_Transform(c.geom, 4326), 6) AS g
            FROM cells c JOIN jurisdictions v ON v.id = c.village_id WHERE {live} AND {vwhere}
            ORDER BY c.code"""), params).all()
        pairs = conn.execute(text(f"""
            SELECT a.id AS a, b.id AS b FROM cells a JOIN cells b
              ON a.id < b.id AND ST_DWithin(a.geom, b.geom, 0.000001)
            WHERE {live.replace("c.", "a.")} AND {live.replace("c.", "b.")}"""), params).all()
        index = {r.id: k for k, r in enumerate(rows)}
        neighbours: list[list[int]] = [[] for _ in rows]
        for p in pairs:
            if p.a in index and p.b in index:
                neighbours[index[p.a]].append(index[p.b])
                neighbours[index[p.b]].append(index[p.a])
        return [{"code": r.code, "name": r.name, "village_code": r.village_code, "area_km2": float(r.area_m2) / 1e6,
                 "geometry": json.loads(r.g), "neighbours": neighbours[k]} for k, r in enumerate(rows)]

    return list(_cached(("cell", str(conn.engine.url), rev, day, vwhere, tuple(vparams.values())), build))


def _cell_counts(conn: Connection, start: dt.datetime, end: dt.datetime, day: dt.date,
                 categories: Sequence[str] | None, platform: str | None, actor: Actor | None) -> dict[str, int]:
    """Events of the window per grid cell valid on `day`.

    A case located while today's version of its cell was already in force counts for the cell recorded on it (the
    locate result: the cell holding the point, the lower code on a shared edge, or the cell it was snapped to). Only
    cases located against boundaries redrawn since are placed again, by their point in PostGIS."""
    where, params = _filters(categories, platform, actor)
    rows = conn.execute(text(f"""
        WITH live AS (SELECT c.code, c.valid_from FROM cells c
                      WHERE c.valid_from <= :day AND (c.valid_to IS NULL OR c.valid_to > :day)),
        p AS MATERIALIZED (
            SELECT e.cell_code, e.geom, l.code AS live_code FROM events e
            LEFT JOIN live l ON l.code = e.cell_code AND l.valid_from <= (e.occurred_at AT TIME ZONE :tz)::date
            WHERE e.received_at >= :start AND e.received_at < :end AND {where}),
        recorded AS (SELECT live_code AS code, count(*) AS n FROM p WHERE live_code IS NOT NULL GROUP BY 1),
        replaced AS (
            SELECT x.code, count(*) AS n FROM p CROSS JOIN LATERAL (
                SELECT c.code FROM cells c WHERE ST_Intersects(c.geom, p.geom) AND c.valid_from <= :day
                  AND (c.valid_to IS NULL OR c.valid_to > :day) ORDER BY c.code LIMIT 1) x
            WHERE p.live_code IS NULL AND p.geom IS NOT NULL GROUP BY 1)
        SELECT code, sum(n) AS n FROM (SELECT * FROM recorded UNION ALL SELECT * FROM replaced) u GROUP BY code"""),
        {**params, "start": start, "end": end, "day": day, "tz": str(TZ)}).all()
    return {r.code: int(r.n) for r in rows}


# --- Gi* ---

def _window_sums(y: np.ndarray, neighbours: list[list[int]]) -> np.ndarray:
    """Each unit's count plus its neighbours': the window Gi* tests."""
    return y + np.array([y[nb].sum() for nb in neighbours], dtype=float) if len(y) else y


def _gi_star(y: np.ndarray, neighbours: list[list[int]], permutations: int,
             seed: int, window: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Standardised Gi* (esda.G_Local, binary weights, star=True) and its one-sided conditional-permutation pseudo
    p-value per unit. Without events (or with the same count everywhere) nothing stands out: z 0, p 1.

    The permutations follow esda's conditional randomisation (y_i stays, its k_i neighbours are drawn without
    replacement from the other n - 1 units, one set of draws shared by all units), vectorised with numpy because
    esda's own loop is slow without numba; the generator is seeded, so the same data always give the same p.
    The nearer tail is taken with ties counted in both, p = (min(#draws ≥ observed, #draws ≤ observed) + 1) /
    (P + 1): esda's folding, min(larger, P - larger), counts a tie as larger only, so an empty unit among empty
    neighbours — every draw ties at zero — got p = 1/(P + 1), and a quiet period showed the whole town as a 99 %
    cold spot.
    """
    n = len(y)
    card = np.array([len(nb) for nb in neighbours], dtype=np.int64)
    if n < 3 or float(y.max(initial=0)) == float(y.min(initial=0)) or not card.any():
        return np.zeros(n), np.ones(n)
    from esda.getisord import G_Local
    from libpysal.graph import Graph
    from scipy import sparse

    rows = np.repeat(np.arange(n), card)
    cols = np.fromiter((j for nb in neighbours for j in nb), dtype=np.int64, count=int(card.sum()))
    graph = Graph.from_sparse(sparse.csr_array((np.ones(len(rows)), (rows, cols)), shape=(n, n)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = G_Local(y, graph, transform="B", star=True, permutations=0)
    z = np.nan_to_num(np.asarray(g.Zs, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
    if permutations <= 0:
        return z, np.ones(n)
    rng = np.random.default_rng(seed)
    kmax = int(card.max())
    rids = np.stack([rng.permutation(n - 1)[:kmax] for _ in range(permutations)])  # (P, kmax)
    observed = _window_sums(y, neighbours) if window is None else window
    larger = np.zeros(n, dtype=np.int64)
    smaller = np.zeros(n, dtype=np.int64)
    for k in np.unique(card[card > 0]):
        r = rids[None, :, :k]
        units = np.flatnonzero(card == k)
        for lo in range(0, len(units), 256):
            i = units[lo:lo + 256]
            drawn = y[r + (r >= i[:, None, None])].sum(axis=2)  # (units, P): the draws skip unit i itself
            larger[i] = ((y[i][:, None] + drawn) >= observed[i][:, None]).sum(axis=1)
            smaller[i] = ((y[i][:, None] + drawn) <= observed[i][:, None]).sum(axis=1)
    p = (np.minimum(larger, smaller) + 1) / (permutations + 1)
    p[card == 0] = 1.0  # an island has nothing to compare with
    z[card == 0] = 0.0
    return z, p


def _classify(z: float, p: float, alpha: float) -> str:
    if p > alpha or z == 0:
        return "none"
    for level, suffix in LEVELS_P:
        if p <= level:
            return ("hot_" if z > 0 else "cold_") + suffix
    return "none"  # alpha above 0.10 and p between 0.10 and alpha: no named class


def category_breakdown(engine: Engine, start: dt.datetime, end: dt.datetime, *, platform: str | None = None,
                       actor: Actor | None = None) -> list[dict[str, Any]]:
    """Events of the window per category (code, platform, events, previous, trend), most events first."""
    _check_window(start, end)
    where, params = _filters(None, platform, actor)
    with engine.connect() as conn:
        rows = conn.execute(text(f"""
            SELECT e.category, max(e.platform) AS platform,
                   count(*) FILTER (WHERE e.received_at >= :start) AS events,
                   count(*) FILTER (WHERE e.received_at < :start) AS previous
            FROM events e WHERE e.received_at >= :pstart AND e.received_at < :end AND {where}
            GROUP BY e.category ORDER BY events DESC, e.category"""),
            {**params, "start": start, "end": end, "pstart": start - (end - start)}).all()
    return [{"category": r.category, "platform": r.platform, "events": r.events, "previous": r.previous,
             "trend": (r.events > r.previous) - (r.events < r.previous)} for r in rows if r.events or r.previous]


def area_bounds(engine: Engine, actor: Actor | None = None, village: str | None = None) -> dict[str, Any]:
    """The scope's (or one village's) name and WGS84 bounds [[south, west], [north, east]]; NotFound for an unknown
    village or one outside the scope."""
    vwhere, vparams = _village_scope(actor)
    extra = ""
    if village is not None:
        extra, vparams = " AND v.code = :village", {**vparams, "village": village}
    with engine.connect() as conn:
        row = conn.execute(text(f"""
            SELECT n, ST_XMin(b) AS w, ST_YMin(b) AS s, ST_XMax(b) AS e, ST_YMax(b) AS nn FROM (
                SELECT count(*) AS n, ST_Extent(ST_Transform(v.geom, 4326)) AS b FROM jurisdictions v
                WHERE v.level = 'village' AND {vwhere}{extra}) k"""), vparams).one()
        if not row.n:
            raise NotFound(f"no village {village}" + (" in your scope" if actor is not None else "")
                           if village else "no village in this scope")
        code = village or (actor.scope_code if actor is not None and actor.scope_code else None)
        name = None
        if code:
            name = conn.execute(text("SELECT name FROM jurisdictions WHERE code = left(:c, 12)"), {"c": code}).scalar()
        if name is None:
            name = conn.execute(text("SELECT name FROM jurisdictions WHERE level = 'district' ORDER BY code LIMIT 1"
                                     )).scalar()
    return {"name": name, "bounds": [[row.s, row.w], [row.nn, row.e]]}


def village_outlines(engine: Engine, actor: Actor | None = None, village: str | None = None,
                     tolerance_m: float = 2.0) -> dict[str, Any]:
    """GeoJSON (WGS84) of the villages in scope (or one), simplified to ~`tolerance_m`: code, name, population."""
    vwhere, vparams = _village_scope(actor)
    extra = ""
    if village is not None:
        extra, vparams = " AND v.code = :village", {**vparams, "village": village}
    with engine.connect() as conn:
        _, srid = _revision_and_srid(conn)
        rows = conn.execute(text(f"""
            SELECT v.code, v.name, v.population,
                   ST_AsGeoJSON(ST_Transform(ST_SimplifyPreserveTopology(ST_Transform(v.geom, {srid}), :tol), 4326),
                                6) AS g
            FROM jurisdictions v WHERE v.level = 'village' AND {vwhere}{extra} ORDER BY v.code"""),
            {**vparams, "tol": float(tolerance_m)}).all()
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": json.loads(r.g),
         "properties": {"code": r.code, "name": r.name, "population": r.population}} for r in rows]}
