"""GeoJSON layers (RFC 7946, WGS84 lon/lat) with the boundary-package properties, built in PostGIS."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter, Query, Response
from sqlalchemy import text

from api.deps import EngineDep
from gis.errors import NotFound

router = APIRouter(prefix="/api/v1", tags=["layers"])

# CGCS2000 and WGS84 differ by centimetres: coordinates are emitted as stored, lon first (RFC 7946).
_COLLECT = """SELECT json_build_object('type', 'FeatureCollection', 'features', coalesce(json_agg(
    json_build_object('type', 'Feature', 'id', f.fid, 'geometry', ST_AsGeoJSON(f.geom, 7, 0)::json,
                      'properties', to_jsonb(f) - 'geom' - 'fid') ORDER BY f.fid), '[]'::json))::text
FROM ({inner}) f"""


def _geojson(engine: Any, inner: str, params: dict[str, Any]) -> Response:
    with engine.connect() as conn:
        body = conn.execute(text(_COLLECT.format(inner=inner)), params).scalar_one()
    return Response(body, media_type="application/geo+json")


@router.get("/jurisdictions", response_class=Response,
            responses={200: {"content": {"application/geo+json": {}}}})
def jurisdictions(engine: EngineDep, level: Literal["district", "township", "village"] | None = None) -> Response:
    return _geojson(engine, """
        SELECT j.code AS fid, j.code, j.name, j.level, p.code AS parent_code, j.kind, j.households, j.population,
               round(j.area_m2::numeric / 1e6, 4) AS area_km2, j.geom
        FROM jurisdictions j LEFT JOIN jurisdictions p ON p.id = j.parent_id
        WHERE (CAST(:level AS text) IS NULL OR j.level = :level)""", {"level": level})


@router.get("/cells", response_class=Response, responses={200: {"content": {"application/geo+json": {}}}})
def cells(
    engine: EngineDep,
    village: str | None = Query(None, description="12-digit village code"),
    date: dt.date | None = Query(None, description="cells valid on this day; default today"),
) -> Response:
    if village is not None:
        with engine.connect() as conn:
            known = conn.execute(text("SELECT 1 FROM jurisdictions WHERE code = :c AND level = 'village'"),
                                 {"c": village}).first()
        if not known:
            raise NotFound(f"no village with code {village}")
    return _geojson(engine, """
        SELECT c.code AS fid, c.code, c.name, v.code AS village_code, c.households, c.population,
               round(c.area_m2::numeric, 1) AS area_m2, c.valid_from, c.valid_to,
               w.id AS worker_id, w.name AS worker_name, c.geom
        FROM cells c JOIN jurisdictions v ON v.id = c.village_id
        LEFT JOIN LATERAL (
            SELECT wk.id, wk.name FROM worker_assignments a JOIN workers wk ON wk.id = a.worker_id
            WHERE a.cell_id = c.id AND a.role = 'grid_worker' AND a.valid_from <= :on
              AND (a.valid_to IS NULL OR :on < a.valid_to) ORDER BY wk.id LIMIT 1) w ON true
        WHERE c.valid_from <= :on AND (c.valid_to IS NULL OR :on < c.valid_to)
          AND (CAST(:village AS text) IS NULL OR v.code = :village)""",
        {"village": village, "on": date or dt.date.today()})


@router.get("/devices", response_class=Response, responses={200: {"content": {"application/geo+json": {}}}})
def devices(engine: EngineDep, kind: Literal["sensor", "camera"] | None = None) -> Response:
    return _geojson(engine, """SELECT id AS fid, id, kind, subtype, name, geom FROM devices
                               WHERE (CAST(:kind AS text) IS NULL OR kind = :kind)""", {"kind": kind})


@router.get("/water", response_class=Response, responses={200: {"content": {"application/geo+json": {}}}})
def water(engine: EngineDep) -> Response:
    return _geojson(engine, "SELECT id AS fid, name, kind, geom FROM water_bodies", {})
