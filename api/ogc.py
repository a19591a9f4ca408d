"""OGC API – Features, read-only, at /ogc: Part 1 (core, GeoJSON, OpenAPI 3.0) and Part 2 (CRS by reference).

Collections: jurisdictions, cells (the version valid today; `datetime` selects the versions valid then), devices and
events (no personal data: reporter names, phones, free-text descriptions and addresses stay out). Every query runs
in PostGIS (bbox against the GiST indexes); only one page of features reaches Python, as JSON text built by the
database. The next and prev links page by key (`after` / `before` the feature id at the page's edge), so that the
last page of a million events costs what the first does; `offset` is still taken for a page asked for by number.

Coordinates are stored in CGCS2000 (EPSG:4490). CRS84 output is lon/lat as stored (CGCS2000 and WGS84 differ by
centimetres, the null transformation PROJ applies too); EPSG:4490 output is lat/lon, the axis order of the EPSG
definition, as Part 2 demands, announced in the Content-Crs header.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import zoneinfo
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text

from api.deps import EngineDep
from gis.errors import NotFound, WanggeError

router = APIRouter(prefix="/ogc", tags=["OGC API – Features"])

TZ = zoneinfo.ZoneInfo("Asia/Shanghai")  # cells' validity days and date-only datetimes are days in China
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG4490 = "http://www.opengis.net/def/crs/EPSG/0/4490"
CRS_NAMES = {CRS84: CRS84, "[OGC:CRS84]": CRS84, EPSG4490: EPSG4490, "[EPSG:4490]": EPSG4490}
GEOJSON = "application/geo+json"
JSON = "application/json"
OPENAPI = "application/vnd.oai.openapi+json;version=3.0"
SCHEMA = "application/schema+json"
DEFAULT_LIMIT = 10
MAX_LIMIT = 10_000
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
]
GREGORIAN = "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"


class BadParameter(WanggeError):
    """A query parameter the API does not define or cannot read (HTTP 400, the error table's default)."""


@dataclass(frozen=True)
class Collection:
    id: str
    title: str
    description: str
    table: str  # the main table with its alias: counted, filtered, and measured for the extent
    alias: str
    joins: str  # joined only for the page of features returned
    fid: str  # SQL for the feature id
    order: str  # SQL for a stable, unique order (a row value when it has two parts)
    props: tuple[tuple[str, str], ...]  # (property name, SQL), the whole list of what is published
    time: str | None  # None, "validity" (valid_from/valid_to days) or "occurred_at" (a timestamp)
    by_id: str  # WHERE clause selecting one feature by :fid

    @property
    def geom(self) -> str:
        return f"{self.alias}.geom"


_WORKER_DAY = "greatest(c.valid_from, least(CAST(:ref AS date), coalesce(c.valid_to - 1, CAST(:ref AS date))))"

COLLECTIONS: dict[str, Collection] = {c.id: c for c in (
    Collection(
        id="jurisdictions", title="Jurisdictions (行政区划)",
        description="District, townships and villages with their 12-digit statistical division codes.",
        table="jurisdictions j", alias="j", joins="LEFT JOIN jurisdictions p ON p.id = j.parent_id",
        fid="j.code", order="j.code",
        props=(("code", "j.code"), ("name", "j.name"), ("level", "j.level"), ("parent_code", "p.code"),
               ("kind", "j.kind"), ("households", "j.households"), ("population", "j.population"),
               ("area_km2", "round(j.area_m2::numeric / 1e6, 4)")),
        time=None, by_id="j.code = :fid"),
    Collection(
        id="cells", title="Grid cells (网格)",
        description="Grid cells with their grid worker. Without `datetime` the cells valid today; `datetime` (an "
                    "instant or an interval) selects the versions valid then. A feature id is the cell code and "
                    "the first day of the version, CODE@YYYY-MM-DD; items/CODE is the version valid today.",
        table="cells c", alias="c",
        joins="JOIN jurisdictions v ON v.id = c.village_id "
              "LEFT JOIN LATERAL (SELECT wk.id, wk.name FROM worker_assignments a "
              "JOIN workers wk ON wk.id = a.worker_id WHERE a.cell_id = c.id AND a.role = 'grid_worker' "
              f"AND a.valid_from <= {_WORKER_DAY} AND (a.valid_to IS NULL OR {_WORKER_DAY} < a.valid_to) "
              "ORDER BY wk.id LIMIT 1) w ON true",
        fid="c.code || '@' || to_char(c.valid_from, 'YYYY-MM-DD')", order="(c.code, c.valid_from)",
        props=(("code", "c.code"), ("name", "c.name"), ("village_code", "v.code"),
               ("households", "c.households"), ("population", "c.population"),
               ("area_m2", "round(c.area_m2::numeric, 1)"), ("valid_from", "c.valid_from"),
               ("valid_to", "c.valid_to"), ("worker_id", "w.id"), ("worker_name", "w.name")),
        time="validity", by_id="c.code = :code AND c.valid_from = :day"),
    Collection(
        id="devices", title="Sensors and cameras (物联感知设备)",
        description="IoT sensors and video cameras; the feature id is the device id.",
        table="devices d", alias="d", joins="", fid="d.id", order="d.id",
        props=(("name", "d.name"), ("kind", "d.kind"), ("subtype", "d.subtype")),
        time=None, by_id="d.id = :fid"),
    Collection(
        id="events", title="Cases (事件)",
        description="Cases of the closed loop, without personal data (no reporter, phone, description or "
                    "address). `datetime` filters the time a case occurred; a case without a location has no "
                    "geometry.",
        table="events e", alias="e", joins="", fid="e.id", order="e.id",
        props=(("category", "e.category"), ("platform", "e.platform"), ("grade", "e.grade"),
               ("status", "e.status"), ("level", "e.level"), ("unit_code", "e.unit_code"),
               ("source", "e.source"), ("located_by", "e.located_by"), ("cell_code", "e.cell_code"),
               ("cell_name", "e.cell_name"), ("worker_id", "e.worker_id"), ("village_code", "e.village_code"),
               ("township_code", "e.township_code"), ("district_code", "e.district_code"),
               ("device_id", "e.device_id"), ("snapped", "e.snapped"),
               ("distance_m", "round(e.distance_m::numeric, 1)"), ("report_count", "e.report_count"),
               ("occurred_at", "e.occurred_at"), ("received_at", "e.received_at"), ("deadline", "e.deadline"),
               ("closed_at", "e.closed_at"), ("updated_at", "e.updated_at"), ("overdue", "e.overdue"),
               ("due_soon", "e.due_soon"), ("escalations", "e.escalations"), ("reworks", "e.reworks"),
               ("returns", "e.returns")),
        time="occurred_at", by_id="e.id = :fid"),
)}


# JSON Schema types of the properties (string unless named here); GDAL and QGIS type their fields by them.
_INTEGER = {"households", "population", "grade", "report_count", "escalations", "reworks", "returns"}
_NUMBER = {"area_km2", "area_m2", "distance_m"}
_BOOLEAN = {"snapped", "overdue", "due_soon"}
_DATE = {"valid_from", "valid_to"}
_DATE_TIME = {"occurred_at", "received_at", "deadline", "closed_at", "updated_at"}


def _schema_type(name: str) -> dict[str, str]:
    if name in _INTEGER:
        return {"type": "integer"}
    if name in _NUMBER:
        return {"type": "number"}
    if name in _BOOLEAN:
        return {"type": "boolean"}
    if name in _DATE:
        return {"type": "string", "format": "date"}
    if name in _DATE_TIME:
        return {"type": "string", "format": "date-time"}
    return {"type": "string"}


# ---------------------------------------------------------------------------------------------------- parameters

ITEMS_PARAMETERS = {"bbox", "bbox-crs", "limit", "offset", "after", "before", "datetime", "crs"}


def _params(request: Request, formats: tuple[str, ...] = ("json",)) -> dict[str, str]:
    """The query parameters, refusing any the API does not define (Part 1, /req/core/query-param-unknown).

    The parameters of /items are let through (and ignored) everywhere else: GDAL adds the query of an
    OAPIF:https://…/ogc?datetime=… connection to every request it makes, the landing page's included.
    """
    query = request.query_params
    unknown = sorted(set(query) - ITEMS_PARAMETERS - {"f"})
    if unknown:
        raise BadParameter(f"unknown query parameter {', '.join(unknown)}; the API takes "
                           f"{', '.join(sorted(ITEMS_PARAMETERS | {'f'}))}")
    f = query.get("f")
    if f is not None and f not in formats:
        raise BadParameter(f"f={f} is not offered; use {' or '.join(formats)}")
    return {k: query[k] for k in query}


def _crs(value: str | None, name: str) -> str:
    if value is None:
        return CRS84
    try:
        return CRS_NAMES[value.strip()]
    except KeyError:
        raise BadParameter(f"{name}={value} is not offered; use {CRS84} or {EPSG4490}") from None


def _int(value: str | None, name: str, default: int, minimum: int) -> int:
    if value is None:
        return default
    try:
        n = int(value)
    except ValueError:
        raise BadParameter(f"{name}={value} is not an integer") from None
    if n < minimum:
        raise BadParameter(f"{name}={value} is below its minimum {minimum}")
    return n


def _edge(c: Collection, feature_id: str, name: str) -> dict[str, Any]:
    """The order key (:k1, :k2) of the feature id given as a page's edge in `after` or `before`."""
    if c.id == "events":
        if not re.fullmatch(r"[0-9]{1,18}", feature_id):
            raise BadParameter(f"{name}={feature_id} is not an event id")
        return {"k1": int(feature_id)}
    if c.id == "cells":
        code, _, day = feature_id.partition("@")
        try:
            return {"k1": code, "k2": dt.date.fromisoformat(day)}
        except ValueError:
            raise BadParameter(f"{name}={feature_id} is not a cell feature id (CODE@YYYY-MM-DD)") from None
    return {"k1": feature_id}


Envelope = tuple[float, float, float, float]  # lon/lat


def _bbox(value: str, crs: str) -> list[Envelope]:
    """The bbox as lon/lat envelopes (two when it crosses the antimeridian)."""
    parts = value.split(",")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise BadParameter(f"bbox={value} is not 4 or 6 comma-separated numbers") from None
    if len(numbers) not in (4, 6) or not all(math.isfinite(n) for n in numbers):
        raise BadParameter(f"bbox={value} is not 4 or 6 comma-separated numbers")
    lo, hi = (numbers[:2], numbers[2:]) if len(numbers) == 4 else (numbers[:2], numbers[3:5])
    if crs == EPSG4490:  # EPSG:4490 has latitude first
        lo, hi = lo[::-1], hi[::-1]
    (x0, y0), (x1, y1) = lo, hi
    axes = "minimum lat, minimum lon, maximum lat, maximum lon" if crs == EPSG4490 else \
        "minimum lon, minimum lat, maximum lon, maximum lat"
    if y0 > y1:
        raise BadParameter(f"bbox={value}: the minimum latitude is above the maximum; the order is {axes}")
    # A box that only overhangs the globe (a zoomed-out map) is clipped; one wholly off it is an error.
    if y0 > 90 or y1 < -90 or min(x0, x1) > 180 or max(x0, x1) < -180:
        raise BadParameter(f"bbox={value} is out of range; in {crs} the order is {axes}")
    y0, y1 = max(y0, -90.0), min(y1, 90.0)
    if x1 - x0 >= 360:
        x0, x1 = -180.0, 180.0
    x0, x1 = max(min(x0, 180.0), -180.0), max(min(x1, 180.0), -180.0)
    if x0 > x1:  # crosses the antimeridian
        return [(x0, y0, 180.0, y1), (-180.0, y0, x1, y1)]
    return [(x0, y0, x1, y1)]


_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ONE_MICROSECOND = dt.timedelta(microseconds=1)


def _moment(value: str, end: bool) -> dt.datetime:
    """One RFC 3339 date-time (with Z or an offset), or a date: a whole day in China, its start or its end."""
    try:
        if _DATE_ONLY.match(value):
            day = dt.date.fromisoformat(value)
            start = dt.datetime.combine(day + dt.timedelta(days=1) if end else day, dt.time(), TZ)
            return start
        moment = dt.datetime.fromisoformat(value.upper())
    except ValueError:
        raise BadParameter(f"datetime: {value} is not an RFC 3339 date-time or date") from None
    if "T" not in value.upper() or moment.tzinfo is None:
        raise BadParameter(f"datetime: {value} needs a date, a time and a time zone (Z or +08:00), or a date alone")
    return moment + _ONE_MICROSECOND if end else moment


@dataclass(frozen=True)
class Period:
    """A half-open period [start, end) of instants; None is open."""

    start: dt.datetime | None
    end: dt.datetime | None

    def days(self) -> tuple[dt.date | None, dt.date | None]:
        """The first and last day (in China) the period touches."""
        return (self.start.astimezone(TZ).date() if self.start else None,
                (self.end - _ONE_MICROSECOND).astimezone(TZ).date() if self.end else None)


def _period(value: str) -> Period:
    parts = value.split("/")
    if len(parts) == 1:
        if parts[0] in ("", ".."):
            raise BadParameter("datetime: an instant cannot be open; use an interval such as 2024-01-01/..")
        return Period(_moment(parts[0], end=False), _moment(parts[0], end=True))
    if len(parts) != 2:
        raise BadParameter(f"datetime={value} is neither an instant nor an interval start/end")
    start = None if parts[0] in ("", "..") else _moment(parts[0], end=False)
    end = None if parts[1] in ("", "..") else _moment(parts[1], end=True)
    if start and end and start >= end:
        raise BadParameter(f"datetime={value}: the interval ends before it starts")
    return Period(start, end)


# ---------------------------------------------------------------------------------------------------- queries

def _collection(collection_id: str) -> Collection:
    try:
        return COLLECTIONS[collection_id]
    except KeyError:
        raise NotFound(f"no collection {collection_id}; the collections are {', '.join(COLLECTIONS)}") from None


def _geometry(c: Collection, crs: str) -> str:
    geom = f"ST_FlipCoordinates({c.geom})" if crs == EPSG4490 else c.geom
    # Options 0: no "crs" member (RFC 7946 has none; PostGIS names any SRID but 4326 by default, here EPSG:4490
    # inside a CRS84 response); the response's Content-Crs header names the CRS.
    return f"ST_AsGeoJSON({geom}, 7, 0)::json"


def _feature(c: Collection, crs: str) -> str:
    props = ", ".join(f"'{name}', {sql}" for name, sql in c.props)
    return (f"json_build_object('type', 'Feature', 'id', {c.fid}, 'geometry', {_geometry(c, crs)}, "
            f"'properties', json_build_object({props}))")


def _today() -> dt.date:
    return dt.datetime.now(TZ).date()


def _filters(c: Collection, boxes: list[Envelope], period: Period | None) -> tuple[list[str], dict[str, Any]]:
    where: list[str] = []
    params: dict[str, Any] = {}
    if boxes:
        ors = []
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            ors.append(f"ST_Intersects({c.geom}, ST_MakeEnvelope(:x0_{i}, :y0_{i}, :x1_{i}, :y1_{i}, 4490))")
            params.update({f"x0_{i}": x0, f"y0_{i}": y0, f"x1_{i}": x1, f"y1_{i}": y1})
        where.append("(" + " OR ".join(ors) + ")")
    if c.time == "validity":
        first, last = period.days() if period else (_today(), _today())
        if last is not None:
            where.append("c.valid_from <= :last_day")
            params["last_day"] = last
        if first is not None:
            where.append("(c.valid_to IS NULL OR :first_day < c.valid_to)")
            params["first_day"] = first
        # The grid worker shown is the one of the last day of the version within the period asked for.
        params["ref"] = last or _today()
    elif c.time == "occurred_at" and period is not None:
        if period.start is not None:
            where.append("e.occurred_at >= :start")
            params["start"] = period.start
        if period.end is not None:
            where.append("e.occurred_at < :end")
            params["end"] = period.end
    return where, params


def _sql(c: Collection, crs: str, where: list[str], edge: str | None = None) -> tuple[str, str]:
    """The count of the features matched, and one page of them (:limit from :offset, or by key `edge` "after" or
    "before" the feature whose order key is :k1, :k2) as a JSON array, with the ids of its first and last feature
    and whether there are more beyond it (one feature more is read to know)."""
    condition = " AND ".join(where) or "true"
    count_sql = f"SELECT count(*) FROM {c.table} WHERE {condition}"
    parts = c.order.strip("()").split(", ")
    order = ", ".join(parts)
    if edge is not None:
        key = "(:k1, CAST(:k2 AS date))" if len(parts) == 2 else ":k1"
        condition = f"{condition} AND {c.order} {'>' if edge == 'after' else '<'} {key}"
        if edge == "before":  # the nearest features below the edge, read backwards
            order = ", ".join(f"{k} DESC" for k in parts)
    page_sql = f"""SELECT count(*) FILTER (WHERE p.n <= :limit),
               coalesce(json_agg(p.feature ORDER BY p.k) FILTER (WHERE p.n <= :limit), '[]'::json)::text,
               (array_agg(p.fid ORDER BY p.k) FILTER (WHERE p.n <= :limit))[1],
               (array_agg(p.fid ORDER BY p.k DESC) FILTER (WHERE p.n <= :limit))[1], count(*) > :limit FROM (
        SELECT {_feature(c, crs)} AS feature, {c.order} AS k, ({c.fid})::text AS fid,
               row_number() OVER (ORDER BY {order}) AS n
        FROM (SELECT * FROM {c.table} WHERE {condition} ORDER BY {order} LIMIT :limit + 1 OFFSET :offset) {c.alias}
        {c.joins}) p"""
    return count_sql, page_sql


@dataclass
class Page:
    matched: int | None  # counted on a first page only (see items)
    returned: int
    features: str  # a JSON array
    first: str | None  # the ids of its first and last feature
    last: str | None
    beyond: bool  # more features follow in the direction paged (after it; before it when paging back)


def _page(engine: Engine, c: Collection, crs: str, where: list[str], params: dict[str, Any],
          limit: int, offset: int, edge: str | None = None, count: bool = True) -> Page:
    """numberMatched (with `count`), numberReturned and the features of one page as JSON text, all computed in
    PostGIS."""
    count_sql, page_sql = _sql(c, crs, where, edge)
    with engine.connect() as conn:
        matched = conn.execute(text(count_sql), params).scalar_one() if count else None
        row = conn.execute(text(page_sql), {**params, "limit": limit, "offset": offset}).one()
    return Page(matched, *row)


def _count(engine: Engine, c: Collection, where: list[str], params: dict[str, Any]) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(_sql(c, CRS84, where)[0]), params).scalar_one())


# ---------------------------------------------------------------------------------------------------- responses

def _root(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/ogc"


def _link(href: str, rel: str, type_: str, title: str) -> dict[str, str]:
    return {"href": href, "rel": rel, "type": type_, "title": title}


def _json(body: Any) -> JSONResponse:
    return JSONResponse(body, media_type=JSON)


def _geojson(head: dict[str, Any], features: str | None, crs: str, tail: dict[str, Any]) -> Response:
    """A GeoJSON document whose features (JSON text from PostGIS) are spliced in without being parsed."""
    parts = [json.dumps(head, ensure_ascii=False)[:-1]]
    if features is not None:
        parts.append(', "features": ' + features)
    parts.append(", " + json.dumps(tail, ensure_ascii=False)[1:])
    return Response("".join(parts), media_type=GEOJSON, headers={"Content-Crs": f"<{crs}>"})


_EXTENT_SQL = """SELECT ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b)
                  FROM (SELECT ST_Extent({geom}) AS b FROM {table}) x"""
_TEMPORAL_SQL = {
    "validity": """SELECT min(valid_from), CASE WHEN bool_or(valid_to IS NULL) THEN NULL ELSE max(valid_to) END
                   FROM cells""",
    "occurred_at": "SELECT min(occurred_at), NULL FROM events",  # open end: cases keep coming
}


def _rfc3339(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return dt.datetime.combine(value, dt.time(), TZ).isoformat()


def _metadata(conn: Any, request: Request, c: Collection) -> dict[str, Any]:
    base = f"{_root(request)}/collections/{c.id}"
    extent: dict[str, Any] = {}
    box = conn.execute(text(_EXTENT_SQL.format(geom=c.geom, table=c.table))).one()
    if box[0] is not None:
        extent["spatial"] = {"bbox": [[round(box[0], 7), round(box[1], 7), round(box[2], 7), round(box[3], 7)]],
                             "crs": CRS84}
    if c.time is not None:
        start, end = conn.execute(text(_TEMPORAL_SQL[c.time])).one()
        extent["temporal"] = {"interval": [[_rfc3339(start), _rfc3339(end)]], "trs": GREGORIAN}
    return {
        "id": c.id,
        "title": c.title,
        "description": c.description,
        "itemType": "feature",
        "extent": extent,
        "crs": [CRS84, EPSG4490],
        "storageCrs": EPSG4490,
        "links": [
            _link(base, "self", JSON, f"{c.title} (this document)"),
            _link(f"{base}/items", "items", GEOJSON, f"{c.title} as GeoJSON"),
            # RFC 8288 compares relation types case-insensitively; GDAL looks for this spelling.
            _link(f"{base}/schema", "describedBy", SCHEMA, f"the properties of {c.id} (JSON Schema)"),
        ],
    }


def _schema(request: Request, c: Collection) -> dict[str, Any]:
    """A JSON Schema of the collection's GeoJSON features; every property may also be null (not known)."""
    return {
        "$schema": "https://json-schema.org/draft/2019-09/schema",
        "$id": f"{_root(request)}/collections/{c.id}/schema",
        "title": c.title,
        "description": "A GeoJSON feature of this collection; properties are null where not known.",
        "type": "object",
        "required": ["type", "id", "geometry", "properties"],
        "properties": {
            "type": {"type": "string", "enum": ["Feature"]},
            "id": {"type": "integer" if c.id == "events" else "string"},
            "geometry": {"$ref": "https://geojson.org/schema/Geometry.json"},
            "properties": {"type": "object",
                           "properties": {name: _schema_type(name) for name, _ in c.props}},
        },
    }


# ---------------------------------------------------------------------------------------------------- OpenAPI

def _parameter(name: str, description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema, **extra}


_CRS_SCHEMA = {"type": "string", "format": "uri", "enum": [CRS84, EPSG4490], "default": CRS84}
_F = _parameter("f", "the format; only JSON (GeoJSON for features) is offered", {"type": "string", "enum": ["json"]})
_CRS = _parameter("crs", "the CRS of the geometries returned; EPSG:4490 has latitude first", _CRS_SCHEMA)
_ITEMS_OPENAPI = [
    _parameter("bbox", "minimum and maximum corner, 4 or 6 numbers, in bbox-crs (default CRS84: lon,lat,lon,lat)",
               {"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}},
               style="form", explode=False),
    _parameter("bbox-crs", "the CRS of bbox; EPSG:4490 has latitude first", _CRS_SCHEMA),
    _parameter("limit", f"features per page; above {MAX_LIMIT} the maximum is used",
               {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
               style="form", explode=False),
    _parameter("offset", "features skipped (a page by number; the next and prev links page by key instead)",
               {"type": "integer", "minimum": 0, "default": 0}),
    _parameter("after", "the page after the feature with this id (the next links carry it)", {"type": "string"}),
    _parameter("before", "the page before the feature with this id (the prev links carry it)",
               {"type": "string"}),
    _parameter("datetime", "an RFC 3339 instant or interval (start/end, `..` open), or a date (a day in China); "
               "cells: the versions valid then; events: the time the case occurred", {"type": "string"},
               style="form", explode=False),
    _CRS,
    _F,
]
_FEATURE_RESPONSE: dict[int | str, dict[str, Any]] = {"200": {"description": "GeoJSON", "content": {GEOJSON: {}}}}


# ---------------------------------------------------------------------------------------------------- routes

@router.get("", summary="Landing page", openapi_extra={"parameters": [_F]})
def landing(request: Request) -> JSONResponse:
    _params(request)
    root = _root(request)
    base = str(request.base_url).rstrip("/")
    return _json({
        "title": "wangge — grid management (网格化管理)",
        "description": "Jurisdictions, grid cells (with their versions), sensors and cameras, and cases, "
                       "read-only, as OGC API – Features.",
        "links": [
            _link(root, "self", JSON, "this document"),
            _link(f"{base}/ogc/api", "service-desc", OPENAPI, "the API definition (OpenAPI 3.0)"),
            _link(f"{base}/docs", "service-doc", "text/html", "the API documentation"),
            _link(f"{root}/conformance", "conformance", JSON, "the conformance classes implemented"),
            _link(f"{root}/collections", "data", JSON, "the collections"),
        ],
    })


@router.get("/api", include_in_schema=False)
def api_definition(request: Request) -> Response:
    return Response(json.dumps(request.app.openapi(), ensure_ascii=False), media_type=OPENAPI)


@router.get("/conformance", summary="Conformance classes", openapi_extra={"parameters": [_F]})
def conformance(request: Request) -> JSONResponse:
    _params(request)
    return _json({"conformsTo": CONFORMANCE})


@router.get("/collections", summary="Collections", openapi_extra={"parameters": [_F]})
def collections(request: Request, engine: EngineDep) -> JSONResponse:
    _params(request)
    root = _root(request)
    with engine.connect() as conn:
        items = [_metadata(conn, request, c) for c in COLLECTIONS.values()]
    return _json({
        "links": [_link(f"{root}/collections", "self", JSON, "the collections (this document)")],
        "collections": items,
        "crs": [CRS84, EPSG4490],
    })


@router.get("/collections/{collectionId}", summary="One collection", openapi_extra={"parameters": [_F]})
def collection(request: Request, engine: EngineDep, collection_id: str = Path(alias="collectionId")) -> JSONResponse:
    c = _collection(collection_id)
    _params(request)
    with engine.connect() as conn:
        return _json(_metadata(conn, request, c))


@router.get("/collections/{collectionId}/schema", summary="The properties of a collection's features (JSON Schema)",
            response_class=Response, responses={200: {"content": {SCHEMA: {}}}},
            openapi_extra={"parameters": [_F]})
def schema(request: Request, collection_id: str = Path(alias="collectionId")) -> Response:
    c = _collection(collection_id)
    _params(request)
    return Response(json.dumps(_schema(request, c), ensure_ascii=False), media_type=SCHEMA)


@router.get("/collections/{collectionId}/items", summary="Features of a collection", response_class=Response,
            responses=_FEATURE_RESPONSE, openapi_extra={"parameters": _ITEMS_OPENAPI})
def items(request: Request, engine: EngineDep, collection_id: str = Path(alias="collectionId")) -> Response:
    c = _collection(collection_id)
    q = _params(request, formats=("json", "geojson"))
    crs = _crs(q.get("crs"), "crs")
    bbox_crs = _crs(q.get("bbox-crs"), "bbox-crs")
    boxes = _bbox(q["bbox"], bbox_crs) if "bbox" in q else []
    period = _period(q["datetime"]) if "datetime" in q else None
    limit = min(_int(q.get("limit"), "limit", DEFAULT_LIMIT, 1), MAX_LIMIT)
    offset = _int(q.get("offset"), "offset", 0, 0)
    edges = [name for name in ("after", "before") if name in q]
    if len(edges) > 1 or (edges and offset):
        raise BadParameter("give one of offset, after and before")
    edge = edges[0] if edges else None
    where, params = _filters(c, boxes, period)
    if edge is not None:
        params.update(_edge(c, q[edge], edge))
    # numberMatched (optional in OGC API – Features) is given on a first page only: counting a million cases cost
    # 60–80 ms of every 260 ms page when a client walked them (bench/ogc.py), and clients take the total from the
    # first page (GDAL asks for it with limit=1).
    first = edge is None and offset == 0
    page = _page(engine, c, crs, where, params, limit, offset, edge, count=first)

    url = request.url
    links = [
        _link(str(url), "self", GEOJSON, "this document"),
        _link(f"{_root(request)}/collections/{c.id}", "collection", JSON, c.title),
    ]
    bare = url.remove_query_params(["offset", "after", "before"])
    after, before = page.beyond, offset > 0  # more after this page; before it
    if edge == "after":
        before = True  # at least the feature it starts after
    elif edge == "before":
        after, before = True, page.beyond
    if after:  # (an empty page before the first feature: the first page is next)
        nxt = bare.include_query_params(after=page.last, limit=limit) if page.last is not None else \
            bare.include_query_params(limit=limit)
        links.append(_link(str(nxt), "next", GEOJSON, "next page"))
    if before:
        if page.first is not None:
            prev = bare.include_query_params(before=page.first, limit=limit)
        elif edge == "after":  # an empty page after the last feature: the last page
            matched = page.matched if page.matched is not None else _count(engine, c, where, params)
            prev = bare.include_query_params(offset=max(0, matched - limit), limit=limit)
        else:  # an offset past the end
            prev = bare.include_query_params(offset=max(0, offset - limit), limit=limit)
        links.append(_link(str(prev), "prev", GEOJSON, "previous page"))
    stamp = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return _geojson({"type": "FeatureCollection"}, page.features, crs,
                    {**({} if page.matched is None else {"numberMatched": page.matched}),
                     "numberReturned": page.returned, "timeStamp": stamp, "links": links})


@router.get("/collections/{collectionId}/items/{featureId}", summary="One feature", response_class=Response,
            responses=_FEATURE_RESPONSE, openapi_extra={"parameters": [_CRS, _F]})
def item(request: Request, engine: EngineDep, collection_id: str = Path(alias="collectionId"),
         feature_id: str = Path(alias="featureId")) -> Response:
    c = _collection(collection_id)
    q = _params(request, formats=("json", "geojson"))
    crs = _crs(q.get("crs"), "crs")
    missing = NotFound(f"no feature {feature_id} in {c.id}")
    params: dict[str, Any] = {"fid": feature_id}
    where = c.by_id
    if c.id == "events":
        if not re.fullmatch(r"[0-9]{1,18}", feature_id):
            raise missing
        params["fid"] = int(feature_id)
    elif c.id == "cells":
        code, _, day = feature_id.partition("@")
        params = {"code": code, "ref": _today()}
        if day:
            try:
                params["day"] = dt.date.fromisoformat(day)
            except ValueError:
                raise missing from None
        else:  # a bare code: the version valid today
            where = "c.code = :code AND c.valid_from <= :ref AND (c.valid_to IS NULL OR :ref < c.valid_to)"
    sql = f"""SELECT {_feature(c, crs)}::text FROM (SELECT * FROM {c.table} WHERE {where} LIMIT 1) {c.alias}
              {c.joins}"""
    with engine.connect() as conn:
        feature = conn.execute(text(sql), params).scalar_one_or_none()
    if feature is None:
        raise missing
    root = _root(request)
    body = json.loads(feature)
    body["links"] = [
        _link(str(request.url), "self", GEOJSON, "this document"),
        _link(f"{root}/collections/{c.id}", "collection", JSON, c.title),
    ]
    return Response(json.dumps(body, ensure_ascii=False), media_type=GEOJSON, headers={"Content-Crs": f"<{crs}>"})
