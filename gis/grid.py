"""Grid versions: planners redraw cells in a draft, validate it, preview its effect and publish it as a version.

A draft is a copy of the live cells (the newest version: `valid_to IS NULL`) of one village, a township or the
district; editing it touches nothing live. Validation applies the rules of a boundary package (gis/validate.py:
same rule names, same 1 m² tolerance, metres in the CGCS2000 Gauss–Krüger zone) plus the planner's own: slivers,
cells without a grid worker, codes that another version already used. Every problem carries a point and a
geometry (lon/lat) so that a map can show it.

Publishing is one transaction, serialised on the dataset_state row: the cells a draft changes or removes get
`valid_to` = the effective date, new rows start on it (history is never overwritten), worker assignments follow,
open cases in the draft's villages move to the cell that now covers them and its worker (one `reassign` entry in
each case's timeline), closed cases keep what they had. A draft remembers the version it was based on: a later
publish touching the same villages makes it stale (DraftConflict, HTTP 409). The dataset revision is bumped, so
the Locator rebuilds — events dated before the effective date still locate in the old cells.

Versions: 0 is the loaded package; each publish adds one (its id). Cells remember the version that created them
and the one that retired them, so the grid of any version can be rebuilt and any two compared.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import shape
from sqlalchemy import Connection, Engine, text

from gis import eventlog
from gis.cases import Forbidden
from gis.crs import gk_epsg, transformer
from gis.errors import NotFound, PackageInvalid, WanggeError
from gis.intake import TZ
from gis.validate import AREA_TOLERANCE_M2, REPAIR_TOLERANCE, to_metric
from gis.workflow import OPEN_SQL, ActionInvalid, Actor, IllegalTransition

MIN_CELL_AREA_M2 = 500.0  # a cell (or a part of one) smaller than this is a sliver
RECENT_DAYS = 90
SYSTEM = Actor("system", "system")
_VALID_NOW = "c.valid_from <= :on AND (c.valid_to IS NULL OR :on < c.valid_to)"


# -- errors -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridProblem:
    """One problem of a draft, located: `lon`/`lat` a point on it, `geometry` its extent (GeoJSON, lon/lat)."""

    code: str
    rule: str
    message: str
    severity: str = "error"  # errors block publishing; warnings do not
    lon: float | None = None
    lat: float | None = None
    geometry: dict[str, Any] | None = None
    layer: str = "cells"

    def __str__(self) -> str:
        return f"{self.layer} {self.code}: {self.message} [{self.rule}]"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class GridInvalid(PackageInvalid):
    """The draft has problems that block publishing (HTTP 422 listing each); nothing changed."""

    def __init__(self, problems: list[GridProblem]) -> None:
        super().__init__(problems)  # type: ignore[arg-type]
        n = len(problems)
        self.args = (f"draft cannot be published: {n} problem{'s' if n != 1 else ''}; first: {problems[0]}",)


class GeometryRejected(ActionInvalid):
    """A geometry or property that cannot even be stored in a draft (HTTP 422, naming the problem)."""


class DraftConflict(IllegalTransition):
    """The draft is stale or no longer open: someone published over it (HTTP 409); nothing changed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, [])


# -- geometry helpers (pure: usable by the planner page without a database) -------------------------------------
def _multi(g: shapely.Geometry) -> shapely.MultiPolygon:
    polys = [q for p in shapely.get_parts(g) if p.geom_type in ("Polygon", "MultiPolygon") and not p.is_empty
             for q in shapely.get_parts(p)]
    return shapely.MultiPolygon(polys)


def _project(geoms: Sequence[shapely.Geometry], src: int, dst: int) -> NDArray[np.object_]:
    tf = transformer(src, dst)
    arr = np.empty(len(geoms), dtype=object)
    arr[:] = list(geoms)
    return shapely.transform(arr, lambda xy: np.column_stack(tf.transform(xy[:, 0], xy[:, 1])))


def _point(g: shapely.Geometry, epsg: int | None = None) -> tuple[float, float]:
    p = shapely.point_on_surface(g) if not g.is_empty else shapely.Point(0, 0)
    if epsg is None:
        return round(p.x, 7), round(p.y, 7)
    lon, lat = transformer(epsg, 4490).transform(p.x, p.y)
    return round(float(lon), 7), round(float(lat), 7)


def _geojson(g: shapely.Geometry) -> dict[str, Any]:
    return json.loads(shapely.to_geojson(shapely.set_precision(g, 1e-7) if not g.is_empty else g))


def parse_geometry(geojson: Any, what: str) -> shapely.MultiPolygon:
    """A GeoJSON (Multi)Polygon in lon/lat → MultiPolygon, stored as drawn (self-intersections are kept for
    validation to locate). Anything that is not a polygon with finite lon/lat raises GeometryRejected."""
    if isinstance(geojson, dict) and geojson.get("type") == "Feature":
        geojson = geojson.get("geometry")
    if not isinstance(geojson, dict) or "type" not in geojson:
        raise GeometryRejected(f"{what}: geometry must be a GeoJSON object with a type")
    try:
        g = shape(geojson)
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise GeometryRejected(f"{what}: unreadable GeoJSON geometry ({exc})") from exc
    except shapely.errors.GEOSException as exc:
        raise GeometryRejected(f"{what}: unreadable GeoJSON geometry ({exc})") from exc
    return check_polygon(g, what)


def check_polygon(g: shapely.Geometry | None, what: str) -> shapely.MultiPolygon:
    if g is None or g.is_empty:
        raise GeometryRejected(f"{what}: the geometry is empty")
    if g.geom_type not in ("Polygon", "MultiPolygon"):
        raise GeometryRejected(f"{what}: expected a Polygon or MultiPolygon, got a {g.geom_type}")
    xy = shapely.get_coordinates(g)
    if not np.isfinite(xy).all():
        raise GeometryRejected(f"{what}: coordinates must be finite numbers")
    if (np.abs(xy[:, 0]) > 180).any() or (np.abs(xy[:, 1]) > 90).any():
        raise GeometryRejected(f"{what}: coordinates out of range: send lon/lat (EPSG:4326/4490), longitude first")
    for ring in shapely.get_rings(g):
        if len(np.unique(shapely.get_coordinates(ring), axis=0)) < 3:
            raise GeometryRejected(f"{what}: a ring needs at least 4 positions (3 distinct corners + the closing "
                                   "one)")
    return g if g.geom_type == "MultiPolygon" else shapely.MultiPolygon([g])


def split_polygon(g: shapely.Geometry, line: shapely.Geometry) -> list[shapely.Polygon]:
    """The pieces of a polygon cut by a line, largest first; the pieces share the cut's vertices exactly, so they
    cover the original with no gap or overlap. Fewer than two pieces: the line does not cross it."""
    from shapely.ops import split

    pieces: list[shapely.Polygon] = []
    for part in shapely.get_parts(g):
        pieces.extend(p for p in shapely.get_parts(split(part, line)) if p.geom_type == "Polygon")
    return sorted(pieces, key=lambda p: -p.area)


def _drop_small_holes(g: shapely.Geometry, epsg: int, limit_m2: float = AREA_TOLERANCE_M2) -> shapely.MultiPolygon:
    out = []
    for p in shapely.get_parts(_multi(g)):
        holes = [r for r in p.interiors
                 if shapely.area(_project([shapely.Polygon(r)], 4490, epsg)[0]) > limit_m2]
        out.append(shapely.Polygon(p.exterior, holes))
    return shapely.MultiPolygon(out)


def merge_polygons(geoms: Sequence[shapely.Geometry], epsg: int) -> shapely.MultiPolygon:
    """The union of adjacent cells; rounding holes below 1 m² along the old shared edges are closed."""
    return _drop_small_holes(shapely.union_all(np.array([shapely.make_valid(g) for g in geoms], dtype=object)), epsg)


def snap_polygon(g: shapely.Geometry, village: shapely.Geometry, neighbours: Sequence[shapely.Geometry],
                 tolerance_m: float, epsg: int) -> shapely.MultiPolygon:
    """An edited cell made to fit: its vertices snap to the village boundary and to neighbouring cells within
    `tolerance_m` metres, it is clipped to the village and cut away from its neighbours (no overlap is created),
    and slivers of gap narrower than the tolerance along its edges are filled (no gap is created by hand)."""
    m, v = _project([shapely.make_valid(g), village], 4490, epsg)
    n = _project(list(neighbours), 4490, epsg) if len(neighbours) else np.empty(0, dtype=object)
    others = shapely.union_all(n) if len(n) else shapely.Polygon()
    reference = shapely.union_all([shapely.boundary(v), *[shapely.boundary(x) for x in n]])
    if tolerance_m > 0:
        m = shapely.snap(m, reference, tolerance_m)
        m = shapely.make_valid(m)
    clipped = shapely.difference(shapely.intersection(m, v), others)
    if tolerance_m > 0:
        free = shapely.difference(shapely.difference(v, others), clipped)
        near = shapely.buffer(clipped, tolerance_m)
        fill = [p for p in shapely.get_parts(free)
                if p.geom_type == "Polygon" and shapely.intersects(p, near)
                and shapely.buffer(p, -tolerance_m / 2).is_empty]
        if fill:
            clipped = shapely.union_all([clipped, *fill])
    back = _project([_multi(clipped)], epsg, 4490)[0]
    return _drop_small_holes(back, epsg)


# -- scope ------------------------------------------------------------------------------------------------------
def _jurisdiction(conn: Connection, code: str) -> Any:
    row = conn.execute(text("SELECT id, code, name, level FROM jurisdictions WHERE code = :c"), {"c": code}).first()
    if row is None:
        raise NotFound(f"no jurisdiction with code {code}")
    return row


def _villages_under(conn: Connection, code: str) -> list[str]:
    return list(conn.execute(text("""
        WITH RECURSIVE t AS (SELECT id, code, level FROM jurisdictions WHERE code = :c
                             UNION ALL SELECT j.id, j.code, j.level FROM jurisdictions j JOIN t ON j.parent_id = t.id)
        SELECT code FROM t WHERE level = 'village' ORDER BY code"""), {"c": code}).scalars())


def _within(conn: Connection, actor: Actor, code: str) -> bool:
    """Whether `code` lies within the actor's scope (the scope itself or below it)."""
    if not actor.scope_code or actor.role == "system":
        return True
    return conn.execute(text("""
        WITH RECURSIVE up AS (SELECT id, code, parent_id FROM jurisdictions WHERE code = :c
                              UNION ALL SELECT j.id, j.code, j.parent_id FROM jurisdictions j
                              JOIN up ON j.id = up.parent_id)
        SELECT 1 FROM up WHERE code = :s"""), {"c": code, "s": actor.scope_code}).first() is not None


def _epsg(conn: Connection, villages: Sequence[str]) -> int:
    x = conn.execute(text("""SELECT (ST_XMin(ST_Extent(geom)) + ST_XMax(ST_Extent(geom))) / 2 FROM jurisdictions
                             WHERE code = ANY(:v)"""), {"v": list(villages)}).scalar()
    return gk_epsg(float(x) if x is not None else 120.0)


def _state(conn: Connection, lock: bool = False) -> tuple[dt.datetime, int]:
    row = conn.execute(text("SELECT loaded_at, revision FROM dataset_state WHERE id = 1"
                            + (" FOR UPDATE" if lock else ""))).one()
    return row.loaded_at, int(row.revision)


def head_version(conn: Connection) -> int:
    loaded_at, _ = _state(conn)
    v = conn.execute(text("SELECT max(id) FROM grid_versions WHERE dataset_loaded_at = :la"),
                     {"la": loaded_at}).scalar()
    return int(v or 0)


def _log(conn: Connection, actor: Actor, action: str, now: dt.datetime, draft_id: int | None = None,
         version_id: int | None = None, data: dict[str, Any] | None = None) -> None:
    conn.execute(text("""INSERT INTO grid_log (at, actor, role, action, draft_id, version_id, data)
                         VALUES (:at, :a, :r, :act, :d, :v, CAST(:data AS jsonb))"""),
                 {"at": now, "a": actor.username, "r": actor.role, "act": action, "d": draft_id, "v": version_id,
                  "data": json.dumps(data or {}, ensure_ascii=False, default=str)})


def begin(db: Engine | Connection) -> contextlib.AbstractContextManager[Connection]:
    """A transaction on an engine, or the caller's own on a connection: several edits of a draft (a cell drawn over
    its neighbours, a gesture on several cells) are then stored together, or not at all."""
    return contextlib.nullcontext(db) if isinstance(db, Connection) else db.begin()


def _now(now: dt.datetime | None) -> dt.datetime:
    return (now or dt.datetime.now(TZ)).astimezone(TZ)


# -- drafts -----------------------------------------------------------------------------------------------------
@dataclass
class DraftCell:
    code: str
    name: str
    village_code: str
    households: int | None
    population: int | None
    worker_id: str | None
    geom: shapely.Geometry


@dataclass
class Draft:
    id: int
    scope_code: str
    villages: list[str]
    base_version: int
    status: str
    name: str | None
    created_by: str
    dataset_loaded_at: dt.datetime
    published_version: int | None
    created_at: dt.datetime
    updated_at: dt.datetime
    edits: int
    cells: list[DraftCell] = field(default_factory=list)


def _load_draft(conn: Connection, draft_id: int, actor: Actor, write: bool = False, lock: bool = False,
                cells: bool = True) -> Draft:
    row = conn.execute(text("SELECT * FROM grid_drafts WHERE id = :id" + (" FOR UPDATE" if lock else "")),
                       {"id": draft_id}).first()
    if row is None or not _within(conn, actor, row.scope_code):
        if row is not None and write:
            raise Forbidden(f"draft {draft_id} covers {row.scope_code}, outside your scope {actor.scope_code}")
        raise NotFound(f"no draft {draft_id} in your scope")
    d = Draft(row.id, row.scope_code, list(row.villages), row.base_version, row.status, row.name, row.created_by,
              row.dataset_loaded_at, row.published_version, row.created_at, row.updated_at, row.edits)
    if write and d.status != "open":
        raise DraftConflict(f"draft {d.id} is {d.status}"
                            + (f" as version {d.published_version}" if d.published_version else "")
                            + ": start a new draft")
    if cells:
        d.cells = [DraftCell(r.code, r.name, r.village_code, r.households, r.population, r.worker_id,
                             shapely.from_wkb(r.wkb))
                   for r in conn.execute(text("""SELECT code, name, village_code, households, population, worker_id,
                                                        ST_AsBinary(geom) AS wkb FROM grid_draft_cells
                                                 WHERE draft_id = :d ORDER BY code"""), {"d": draft_id})]
    return d


def create_draft(engine: Engine, actor: Actor, scope_code: str, name: str | None = None,
                 now: dt.datetime | None = None) -> dict[str, Any]:
    """A draft holding a copy of the live cells (and their grid workers) of a village, township or district."""
    now = _now(now)
    with engine.begin() as conn:
        draft_id = _create_draft(conn, actor, scope_code, name, now)
        return _draft_json(conn, _load_draft(conn, draft_id, actor))


def _create_draft(conn: Connection, actor: Actor, scope_code: str, name: str | None, now: dt.datetime) -> int:
    j = _jurisdiction(conn, scope_code)
    if not _within(conn, actor, scope_code):
        raise Forbidden(f"{scope_code} lies outside your scope {actor.scope_code}")
    villages = _villages_under(conn, scope_code)
    if not villages:
        raise ActionInvalid(f"{j.level} {scope_code} has no villages to grid")
    loaded_at, _ = _state(conn)
    base = head_version(conn)
    draft_id = int(conn.execute(text("""
        INSERT INTO grid_drafts (scope_code, villages, base_version, dataset_loaded_at, name, created_by,
                                 created_at, updated_at)
        VALUES (:s, :v, :b, :la, :n, :by, :now, :now) RETURNING id"""),
        {"s": scope_code, "v": villages, "b": base, "la": loaded_at, "n": name, "by": actor.username,
         "now": now}).scalar_one())
    n = conn.execute(text("""
        INSERT INTO grid_draft_cells (draft_id, code, name, village_code, households, population, worker_id, geom)
        SELECT :d, c.code, c.name, v.code, c.households, c.population, w.worker_id, c.geom
        FROM cells c JOIN jurisdictions v ON v.id = c.village_id
        LEFT JOIN LATERAL (SELECT a.worker_id FROM worker_assignments a WHERE a.cell_id = c.id
                           AND a.role = 'grid_worker' AND a.valid_to IS NULL ORDER BY a.worker_id LIMIT 1) w ON true
        WHERE c.valid_to IS NULL AND v.code = ANY(:v)"""), {"d": draft_id, "v": villages}).rowcount
    _log(conn, actor, "create_draft", now, draft_id, None,
         {"scope": scope_code, "base_version": base, "cells": n, "name": name})
    return draft_id


def get_draft(db: Engine | Connection, actor: Actor, draft_id: int, for_update: bool = False) -> dict[str, Any]:
    """The draft with its cells; `for_update` (on the caller's connection): locked for an edit that reads it first,
    refused as an edit would be (a draft no longer open, outside a writer's scope)."""
    with db.connect() if isinstance(db, Engine) else contextlib.nullcontext(db) as conn:
        return _draft_json(conn, _load_draft(conn, draft_id, actor, write=for_update, lock=for_update))


def list_drafts(engine: Engine, actor: Actor, status: str | None = "open") -> list[dict[str, Any]]:
    """Drafts within the actor's scope (newest first), without their cells."""
    with engine.connect() as conn:
        rows = conn.execute(text("""
            SELECT d.id, d.scope_code, d.villages, d.base_version, d.status, d.name, d.created_by, d.created_at,
                   d.updated_at, d.edits, d.published_version,
                   (SELECT count(*) FROM grid_draft_cells c WHERE c.draft_id = d.id) AS cells
            FROM grid_drafts d WHERE (CAST(:st AS text) IS NULL OR d.status = :st) ORDER BY d.id DESC"""),
            {"st": status}).all()
        return [{"id": r.id, "scope_code": r.scope_code, "villages": list(r.villages), "base_version": r.base_version,
                 "status": r.status, "name": r.name, "created_by": r.created_by, "cells": r.cells,
                 "created_at": r.created_at.astimezone(TZ).isoformat(),
                 "updated_at": r.updated_at.astimezone(TZ).isoformat(), "edits": r.edits,
                 "published_version": r.published_version}
                for r in rows if _within(conn, actor, r.scope_code)]


def discard_draft(engine: Engine, actor: Actor, draft_id: int, now: dt.datetime | None = None) -> None:
    """Give a draft up (it stays, marked discarded, with its log)."""
    now = _now(now)
    with engine.begin() as conn:
        d = _load_draft(conn, draft_id, actor, write=True, lock=True, cells=False)
        conn.execute(text("UPDATE grid_drafts SET status = 'discarded', updated_at = :now WHERE id = :id"),
                     {"now": now, "id": d.id})
        _log(conn, actor, "discard_draft", now, d.id)


def _draft_json(conn: Connection, d: Draft) -> dict[str, Any]:
    names = _worker_names(conn, {c.worker_id for c in d.cells if c.worker_id})
    return {
        "id": d.id, "scope_code": d.scope_code, "villages": d.villages, "base_version": d.base_version,
        "status": d.status, "name": d.name, "created_by": d.created_by, "published_version": d.published_version,
        "created_at": d.created_at.astimezone(TZ).isoformat(), "updated_at": d.updated_at.astimezone(TZ).isoformat(),
        "edits": d.edits,
        "cells": {"type": "FeatureCollection", "features": [_feature(c, names) for c in d.cells]},
    }


def _feature(c: DraftCell, names: dict[str, str]) -> dict[str, Any]:
    return {"type": "Feature", "id": c.code, "geometry": json.loads(shapely.to_geojson(c.geom)),
            "properties": {"code": c.code, "name": c.name, "village_code": c.village_code,
                           "households": c.households, "population": c.population, "worker_id": c.worker_id,
                           "worker_name": names.get(c.worker_id or "")}}


def _worker_names(conn: Connection, ids: Iterable[str]) -> dict[str, str]:
    ids = sorted(ids)
    if not ids:
        return {}
    return {r.id: r.name for r in conn.execute(text("SELECT id, name FROM workers WHERE id = ANY(:i)"), {"i": ids})}


def _touch(conn: Connection, d: Draft, now: dt.datetime) -> None:
    conn.execute(text("UPDATE grid_drafts SET updated_at = :now, edits = edits + 1 WHERE id = :id"),
                 {"now": now, "id": d.id})


def _int_or_none(v: Any, what: str) -> int | None:
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError) as exc:
        raise GeometryRejected(f"{what} must be a whole number, got {v!r}") from exc
    if not np.isfinite(f) or f < 0 or not f.is_integer():
        raise GeometryRejected(f"{what} must be a whole number ≥ 0, got {v!r}")
    return int(f)


def _worker_of(props: dict[str, Any]) -> tuple[bool, str | None]:
    """(given, worker id) from properties: `worker_id`, or `worker` as an id or {"id": ...}."""
    for key in ("worker_id", "worker"):
        if key in props:
            w = props[key]
            if isinstance(w, dict):
                w = w.get("id")
            return True, (str(w) if w not in (None, "") else None)
    return False, None


def _write_cell(conn: Connection, draft_id: int, c: DraftCell) -> None:
    conn.execute(text("""
        INSERT INTO grid_draft_cells (draft_id, code, name, village_code, households, population, worker_id, geom)
        VALUES (:d, :code, :name, :v, :hh, :pop, :w, ST_Multi(ST_GeomFromWKB(:wkb, 4490)))
        ON CONFLICT (draft_id, code) DO UPDATE SET name = excluded.name, village_code = excluded.village_code,
            households = excluded.households, population = excluded.population, worker_id = excluded.worker_id,
            geom = excluded.geom"""),
        {"d": draft_id, "code": c.code, "name": c.name, "v": c.village_code, "hh": c.households,
         "pop": c.population, "w": c.worker_id, "wkb": shapely.to_wkb(_multi(c.geom) if c.geom.is_valid else c.geom)})


def _village_geoms(conn: Connection, villages: Sequence[str]) -> dict[str, shapely.Geometry]:
    return {r.code: shapely.from_wkb(r.wkb) for r in conn.execute(
        text("SELECT code, ST_AsBinary(geom) AS wkb FROM jurisdictions WHERE code = ANY(:v)"), {"v": list(villages)})}


def put_cell(db: Engine | Connection, actor: Actor, draft_id: int, code: str, geometry: Any,
             properties: dict[str, Any] | None = None, snap_m: float = 0.0,
             now: dt.datetime | None = None) -> dict[str, Any]:
    """Create or replace one cell of a draft. With `snap_m` > 0 its edges snap to the village boundary and the
    neighbouring cells within that many metres, and it is clipped so that it overlaps nothing. On a connection,
    in the caller's transaction (see begin)."""
    now = _now(now)
    props = dict(properties or {})
    if not re.fullmatch(r"\d{15}", code):
        raise GeometryRejected(f"cell code {code!r} must be 15 digits: the village's 12-digit code + a 3-digit serial")
    if not np.isfinite(snap_m) or snap_m < 0 or snap_m > 100:
        raise GeometryRejected("snap tolerance must be between 0 and 100 metres")
    g = parse_geometry(geometry, f"cell {code}")
    with begin(db) as conn:
        d = _load_draft(conn, draft_id, actor, write=True, lock=True)
        old = next((c for c in d.cells if c.code == code), None)
        village = str(props.get("village_code") or (old.village_code if old else code[:12]))
        if village not in d.villages:
            raise GeometryRejected(f"cell {code}: village {village} is not part of draft {d.id} "
                                   f"({', '.join(d.villages[:5])}{' …' if len(d.villages) > 5 else ''})")
        given, worker = _worker_of(props)
        cell = DraftCell(
            code=code, name=str(props.get("name") or (old.name if old else f"网格{code[-3:]}")), village_code=village,
            households=_int_or_none(props["households"], "households") if "households" in props
            else (old.households if old else None),
            population=_int_or_none(props["population"], "population") if "population" in props
            else (old.population if old else None),
            worker_id=worker if given else (old.worker_id if old else None), geom=g)
        if snap_m > 0:
            epsg = _epsg(conn, [village])
            vg = _village_geoms(conn, [village])[village]
            neighbours = [c.geom for c in d.cells if c.village_code == village and c.code != code]
            cell.geom = snap_polygon(g, vg, neighbours, snap_m, epsg)
            if cell.geom.is_empty:
                raise GeometryRejected(f"cell {code}: nothing is left once clipped to village {village} and its "
                                       "neighbouring cells")
        _write_cell(conn, d.id, cell)
        _touch(conn, d, now)
        _log(conn, actor, "put_cell", now, d.id, None,
             {"code": code, "created": old is None, "snap_m": snap_m, "worker_id": cell.worker_id})
        return _feature(cell, _worker_names(conn, [cell.worker_id] if cell.worker_id else []))


def delete_cell(db: Engine | Connection, actor: Actor, draft_id: int, code: str, now: dt.datetime | None = None
                ) -> None:
    now = _now(now)
    with begin(db) as conn:
        d = _load_draft(conn, draft_id, actor, write=True, lock=True, cells=False)
        n = conn.execute(text("DELETE FROM grid_draft_cells WHERE draft_id = :d AND code = :c"),
                         {"d": d.id, "c": code}).rowcount
        if not n:
            raise NotFound(f"draft {d.id} has no cell {code}")
        _touch(conn, d, now)
        _log(conn, actor, "delete_cell", now, d.id, None, {"code": code})


def _next_codes(conn: Connection, d: Draft, village: str, n: int) -> list[str]:
    """Fresh codes in a village: above every serial any version or this draft has used (codes are never reused:
    events keep them)."""
    used = set(conn.execute(text("SELECT code FROM cells WHERE code LIKE :p"), {"p": village + "%"}).scalars())
    used |= {c.code for c in d.cells}
    top = max((int(c[12:]) for c in used if c.startswith(village) and len(c) == 15), default=0)
    if top + n > 999:
        raise GeometryRejected(f"village {village} has no free cell serials left (up to 999)")
    return [f"{village}{top + i:03d}" for i in range(1, n + 1)]


def _share(total: int | None, weights: Sequence[float]) -> list[int | None]:
    """Split a count in proportion to weights, by largest remainder (the parts add up to the total)."""
    if total is None:
        return [None] * len(weights)
    w = np.asarray(weights, dtype=float)
    raw = total * w / w.sum() if w.sum() > 0 else np.full(len(w), total / len(w))
    base = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - base))[: total - int(base.sum())]:
        base[i] += 1
    return [int(x) for x in base]


def split_cell(db: Engine | Connection, actor: Actor, draft_id: int, code: str, line_geojson: Any,
               now: dt.datetime | None = None) -> list[str]:
    """Cut a cell along a line drawn across it. The largest piece keeps the code and the grid worker; the others
    get fresh codes and no worker yet (validation asks for one); households and population are shared by area.
    The pieces cover the old cell exactly: no gap, no overlap. Returns the codes, the kept one first."""
    now = _now(now)
    try:
        line = shape(line_geojson.get("geometry", line_geojson) if isinstance(line_geojson, dict) else line_geojson)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, shapely.errors.GEOSException) as exc:
        raise GeometryRejected(f"split line: unreadable GeoJSON geometry ({exc})") from exc
    if line.geom_type not in ("LineString", "MultiLineString") or line.is_empty:
        raise GeometryRejected(f"split line: expected a LineString, got a {line.geom_type}")
    with begin(db) as conn:
        d = _load_draft(conn, draft_id, actor, write=True, lock=True)
        cell = next((c for c in d.cells if c.code == code), None)
        if cell is None:
            raise NotFound(f"draft {d.id} has no cell {code}")
        pieces = split_polygon(shapely.make_valid(cell.geom), line)
        if len(pieces) < 2:
            raise GeometryRejected(f"split line does not cross cell {code} from one edge to another")
        epsg = _epsg(conn, [cell.village_code])
        areas = shapely.area(_project(pieces, 4490, epsg))
        small = float(areas.min())
        if small < MIN_CELL_AREA_M2:
            raise GeometryRejected(f"splitting cell {code} there leaves a piece of {small:.0f} m² "
                                   f"(below the {MIN_CELL_AREA_M2:.0f} m² minimum)")
        codes = [code, *_next_codes(conn, d, cell.village_code, len(pieces) - 1)]
        hh, pop = _share(cell.households, areas), _share(cell.population, areas)
        for i, (c, piece) in enumerate(zip(codes, pieces, strict=True)):
            _write_cell(conn, d.id, DraftCell(c, cell.name if i == 0 else f"{cell.name}-{i + 1}", cell.village_code,
                                              hh[i], pop[i], cell.worker_id if i == 0 else None,
                                              shapely.MultiPolygon([piece])))
        _touch(conn, d, now)
        _log(conn, actor, "split_cell", now, d.id, None, {"code": code, "into": codes})
        return codes


def merge_cells(engine: Engine, actor: Actor, draft_id: int, codes: Sequence[str],
                now: dt.datetime | None = None) -> str:
    """Merge adjacent cells of one village into the one with the lowest code (its name and worker are kept;
    households and population add up). Returns the kept code."""
    now = _now(now)
    codes = sorted(set(codes))
    if len(codes) < 2:
        raise GeometryRejected("merging needs at least two cell codes")
    with engine.begin() as conn:
        d = _load_draft(conn, draft_id, actor, write=True, lock=True)
        by_code = {c.code: c for c in d.cells}
        missing = [c for c in codes if c not in by_code]
        if missing:
            raise NotFound(f"draft {d.id} has no cell {', '.join(missing)}")
        cells = [by_code[c] for c in codes]
        if len({c.village_code for c in cells}) > 1:
            raise GeometryRejected("cells of different villages cannot be merged: "
                                   + ", ".join(f"{c.code} ({c.village_code})" for c in cells))
        epsg = _epsg(conn, [cells[0].village_code])
        metric = _project([shapely.make_valid(c.geom) for c in cells], 4490, epsg)
        # Connected through shared edges (a touch at one corner does not count).
        joined, todo = {0}, True
        while todo:
            todo = False
            for i in range(len(cells)):
                if i not in joined and any(
                        shapely.area(shapely.intersection(shapely.buffer(metric[i], 0.5), metric[j])) > 0.5
                        for j in joined):
                    joined.add(i)
                    todo = True
        if len(joined) < len(cells):
            apart = [cells[i].code for i in range(len(cells)) if i not in joined]
            raise GeometryRejected(f"cell{'s' if len(apart) > 1 else ''} {', '.join(apart)} share no edge with "
                                   f"{cells[0].code}: only neighbouring cells can be merged")
        merged = merge_polygons([c.geom for c in cells], epsg)
        keep = cells[0]

        def total(values: list[int | None]) -> int | None:
            return None if all(v is None for v in values) else sum(v or 0 for v in values)

        _write_cell(conn, d.id, DraftCell(keep.code, keep.name, keep.village_code,
                                          total([c.households for c in cells]), total([c.population for c in cells]),
                                          keep.worker_id, merged))
        conn.execute(text("DELETE FROM grid_draft_cells WHERE draft_id = :d AND code = ANY(:c)"),
                     {"d": d.id, "c": codes[1:]})
        _touch(conn, d, now)
        _log(conn, actor, "merge_cells", now, d.id, None, {"codes": codes, "into": keep.code})
        return keep.code


def replace_cells(conn: Connection, actor: Actor, d: Draft, cells: Sequence[DraftCell], now: dt.datetime,
                  source: str) -> None:
    """Make a draft hold exactly these cells (a file brought back from QGIS)."""
    for c in cells:
        if c.village_code not in d.villages:
            raise GeometryRejected(f"cell {c.code}: village {c.village_code} is not part of draft {d.id}")
    conn.execute(text("DELETE FROM grid_draft_cells WHERE draft_id = :d"), {"d": d.id})
    for c in cells:
        _write_cell(conn, d.id, c)
    _touch(conn, d, now)
    _log(conn, actor, "replace_cells", now, d.id, None, {"source": source, "cells": len(cells)})


# -- validation -------------------------------------------------------------------------------------------------
def _locate_reason(reason: str) -> tuple[float, float] | None:
    m = re.search(r"\[\s*([-\d.eE+]+)\s+([-\d.eE+]+)", reason)
    return (round(float(m.group(1)), 7), round(float(m.group(2)), 7)) if m else None


def _problem(code: str, rule: str, message: str, geom_metric: shapely.Geometry | None, epsg: int,
             severity: str = "error", layer: str = "cells") -> GridProblem:
    if geom_metric is None or geom_metric.is_empty:
        return GridProblem(code, rule, message, severity, layer=layer)
    ll = _project([geom_metric], epsg, 4490)[0]
    lon, lat = _point(ll)
    return GridProblem(code, rule, message, severity, lon, lat, _geojson(ll), layer)


def check_draft(conn: Connection, d: Draft, min_area_m2: float = MIN_CELL_AREA_M2) -> list[GridProblem]:
    """Every problem of a draft (errors and warnings), each located."""
    problems: list[GridProblem] = []
    epsg = _epsg(conn, d.villages)
    villages = _village_geoms(conn, d.villages)
    vmet = dict(zip(villages, _project(list(villages.values()), 4490, epsg), strict=True))
    cells = d.cells
    codes = [c.code for c in cells]
    known_workers = set(_worker_names(conn, {c.worker_id for c in cells if c.worker_id}))
    history = conn.execute(text("""
        SELECT c.code, v.code AS village, c.valid_from, c.valid_to, c.version_id FROM cells c
        JOIN jurisdictions v ON v.id = c.village_id WHERE c.code = ANY(:codes) ORDER BY c.valid_from"""),
        {"codes": codes}).all()
    live_here = {r.code for r in history if r.valid_to is None and r.village in d.villages}
    used = {r.code: r for r in history if r.code not in live_here}

    # Geometry: valid, or repairable within 0.1 % of its area; then in metres for the checks below.
    fixed: list[shapely.Geometry | None] = []
    for c in cells:
        g = c.geom
        if shapely.is_valid(g):
            fixed.append(g if g.geom_type == "MultiPolygon" else _multi(g))
            continue
        reason = shapely.is_valid_reason(g)
        raw = shapely.area(_project([g], 4490, epsg)[0])
        repaired = _multi(shapely.make_valid(g))
        after = shapely.area(_project([repaired], 4490, epsg)[0])
        change = abs(after - raw) / raw if raw > 0 else 1.0
        where = _locate_reason(reason) or _point(g)
        gj = {"type": "Point", "coordinates": list(where)}
        if change > REPAIR_TOLERANCE or repaired.is_empty:
            problems.append(GridProblem(c.code, "invalid-geometry",
                                        f"invalid geometry ({reason}) cannot be repaired without changing its area "
                                        f"by {change:.2%} (limit 0.1 %)", "error", where[0], where[1], gj))
            fixed.append(None)
        else:
            problems.append(GridProblem(c.code, "invalid-geometry",
                                        f"invalid geometry ({reason}); publishing repairs it (area changes by "
                                        f"{change:.4%})", "warning", where[0], where[1], gj))
            fixed.append(repaired)
    ok = [i for i, g in enumerate(fixed) if g is not None]
    dens = np.empty(len(cells), dtype=object)
    raw_m = np.empty(len(cells), dtype=object)
    if ok:
        arr = np.empty(len(ok), dtype=object)
        arr[:] = [fixed[i] for i in ok]
        dens[ok] = to_metric(arr, epsg)
        raw_m[ok] = to_metric(arr, epsg, densify=False)

    for i, c in enumerate(cells):
        if not re.fullmatch(re.escape(c.village_code) + r"\d{3}", c.code):
            problems.append(_problem(c.code, "code", f"cell code must be its village code {c.village_code} + a "
                                     "3-digit serial", dens[i], epsg))
        if c.code in used:
            r = used[c.code]
            until = f"until {r.valid_to}" if r.valid_to else "still live"
            problems.append(_problem(c.code, "code-collision",
                                     f"code {c.code} belongs to another version's cell (village {r.village}, valid "
                                     f"from {r.valid_from}, {until}); cases keep their cell codes, so a new cell "
                                     "needs a new code", dens[i], epsg))
        if not c.worker_id:
            problems.append(_problem(c.code, "no-worker", "no grid worker assigned (定人: every cell needs one)",
                                     dens[i], epsg))
        elif c.worker_id not in known_workers:
            problems.append(_problem(c.code, "unknown-worker", f"worker {c.worker_id} does not exist", dens[i], epsg))
        if dens[i] is None:
            continue
        total = shapely.area(dens[i])
        parts = list(shapely.get_parts(dens[i]))
        for p in parts:
            a = shapely.area(p)
            if a < min_area_m2:
                what = "the cell" if len(parts) == 1 else f"a part of {total:,.0f} m² cell"
                problems.append(_problem(c.code, "sliver", f"sliver: {what} has only {a:.1f} m² (minimum "
                                         f"{min_area_m2:g} m²)", p, epsg))
    # Overlaps, measured on the vertices as drawn (as in package validation).
    if len(ok) > 1:
        geoms = raw_m[ok]
        tree = shapely.STRtree(geoms)
        a, b = tree.query(geoms, predicate="intersects")
        keep = a < b
        a, b = a[keep], b[keep]
        # Neighbours touch along shared edges; only pairs whose interiors meet need the (costly) intersection.
        inner = shapely.relate_pattern(geoms[a], geoms[b], "T********")
        a, b = a[inner], b[inner]
        if len(a):
            inter = shapely.intersection(geoms[a], geoms[b])
            areas = shapely.area(inter)
            for k in np.flatnonzero(areas > AREA_TOLERANCE_M2):
                ca, cb = cells[ok[a[k]]].code, cells[ok[b[k]]].code
                problems.append(_problem(ca, "overlap", f"overlaps cell {cb} by {areas[k]:.1f} m²", inter[k], epsg))
    # Containment and gaps, per village: its cells must cover it and stay inside it. The cells poking out are
    # looked for only when their union does.
    for village, v in vmet.items():
        idx = [i for i in ok if cells[i].village_code == village]
        covered = shapely.union_all(dens[idx]) if idx else shapely.Polygon()
        # One overlay: the parts of the symmetric difference inside the village are gaps, the others poke out.
        parts = shapely.get_parts(shapely.symmetric_difference(v, covered))
        inside = shapely.intersects(v, shapely.point_on_surface(parts)) if len(parts) else np.empty(0, dtype=bool)
        if float(shapely.area(parts[~inside]).sum()) > AREA_TOLERANCE_M2:
            for i in idx:
                outside = shapely.difference(dens[i], v)
                if shapely.area(outside) > AREA_TOLERANCE_M2:
                    problems.append(_problem(cells[i].code, "outside-village", f"{shapely.area(outside):.1f} m² "
                                             f"lies outside its village {village}", outside, epsg))
        for part in parts[inside]:
            area = shapely.area(part)
            if part.geom_type == "Polygon" and area > AREA_TOLERANCE_M2:
                problems.append(_problem(village, "gap", f"gap of {area:.1f} m² between the cells of village "
                                         f"{village}", part, epsg, layer="jurisdictions"))
    return problems


def validate_draft(engine: Engine, actor: Actor, draft_id: int, min_area_m2: float = MIN_CELL_AREA_M2,
                   now: dt.datetime | None = None) -> dict[str, Any]:
    now = _now(now)
    with engine.begin() as conn:
        d = _load_draft(conn, draft_id, actor)
        problems = check_draft(conn, d, min_area_m2)
        errors = sum(p.severity == "error" for p in problems)
        _log(conn, actor, "validate", now, d.id, None, {"errors": errors, "warnings": len(problems) - errors})
    return {"draft": d.id, "valid": errors == 0, "errors": errors, "warnings": len(problems) - errors,
            "cells": len(d.cells), "problems": [p.as_dict() for p in problems]}


# -- preview ----------------------------------------------------------------------------------------------------
def _assign_points(codes: Sequence[str], villages: Sequence[str], geoms: Sequence[shapely.Geometry],
                   x: NDArray[np.float64], y: NDArray[np.float64], pv: Sequence[str]) -> NDArray[np.int64]:
    """Positions of the cells that take each point: the covering cell (the lowest code on a shared edge), else the
    nearest cell of the point's village, else the nearest cell. Cells are sorted by code."""
    out = np.full(len(x), -1, dtype=np.int64)
    if not len(codes) or not len(x):
        return out
    arr = np.empty(len(geoms), dtype=object)
    arr[:] = [shapely.make_valid(g) for g in geoms]
    tree = shapely.STRtree(arr)
    pts = shapely.points(x, y)
    p, c = tree.query(pts, predicate="intersects")
    best = np.full(len(x), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, p, c)
    hit = best < np.iinfo(np.int64).max
    out[hit] = best[hit]
    village_arr = np.asarray(villages, dtype=object)
    for i in np.flatnonzero(~hit):
        same = np.flatnonzero(village_arr == pv[int(i)])
        cand = same if len(same) else np.arange(len(arr))
        dist = shapely.distance(arr[cand], pts[i])
        out[i] = int(cand[int(np.argmin(dist))])
    return out


def _live_cells(conn: Connection, villages: Sequence[str], on: dt.date | None = None) -> list[Any]:
    """The cells of these villages in the newest version (on=None) or valid on a day, with their worker."""
    valid = "c.valid_to IS NULL" if on is None else _VALID_NOW
    wvalid = "a.valid_to IS NULL" if on is None else "a.valid_from <= :on AND (a.valid_to IS NULL OR :on < a.valid_to)"
    return list(conn.execute(text(f"""
        SELECT c.id, c.code, c.name, v.code AS village_code, c.households, c.population, c.valid_from,
               w.worker_id, w.valid_from AS worker_from, ST_AsBinary(c.geom) AS wkb
        FROM cells c JOIN jurisdictions v ON v.id = c.village_id
        LEFT JOIN LATERAL (SELECT a.worker_id, a.valid_from FROM worker_assignments a WHERE a.cell_id = c.id
                           AND a.role = 'grid_worker' AND {wvalid} ORDER BY a.worker_id LIMIT 1) w ON true
        WHERE {valid} AND v.code = ANY(:v) ORDER BY c.code"""), {"v": list(villages), "on": on}).all())


def _events(conn: Connection, villages: Sequence[str], since: dt.datetime, open_only: bool = False) -> list[Any]:
    when = f"e.status IN {OPEN_SQL}" if open_only else f"(e.received_at >= :since OR e.status IN {OPEN_SQL})"
    return list(conn.execute(text(f"""
        SELECT e.id, ST_X(e.geom) AS x, ST_Y(e.geom) AS y, e.village_code, e.status, e.category, e.received_at,
               e.cell_code, e.worker_id, e.status IN {OPEN_SQL} AS open, e.received_at >= :since AS recent
        FROM events e WHERE e.village_code = ANY(:v) AND e.geom IS NOT NULL AND {when}"""),
        {"v": list(villages), "since": since}).all())


def preview(engine: Engine, actor: Actor, draft_id: int, now: dt.datetime | None = None) -> dict[str, Any]:
    """The draft against the live grid: per cell and per grid worker, the area, households, population, events
    of the last 90 days and open cases; the cells whose worker changes; the open cases that would move."""
    now = _now(now)
    since = now - dt.timedelta(days=RECENT_DAYS)
    with engine.connect() as conn:
        d = _load_draft(conn, draft_id, actor)
        epsg = _epsg(conn, d.villages)
        live = _live_cells(conn, d.villages)
        events = _events(conn, d.villages, since)
        names = _worker_names(conn, {c.worker_id for c in d.cells if c.worker_id} | {r.worker_id for r in live
                                                                                      if r.worker_id})
    x = np.array([e.x for e in events], dtype=float)
    y = np.array([e.y for e in events], dtype=float)
    pv = [e.village_code for e in events]
    is_open = np.array([bool(e.open) for e in events], dtype=bool)
    recent = np.array([bool(e.recent) for e in events], dtype=bool)

    def side(codes: list[str], villages: list[str], geoms: list[shapely.Geometry], hh: list[int | None],
             pop: list[int | None], workers: list[str | None]) -> tuple[list[dict[str, Any]], NDArray[np.int64]]:
        pos = _assign_points(codes, villages, geoms, x, y, pv)
        areas = shapely.area(to_metric(np.array([shapely.make_valid(g) for g in geoms], dtype=object), epsg)) \
            if geoms else np.empty(0)
        ev = np.bincount(pos[recent & (pos >= 0)], minlength=len(codes)) if len(codes) else np.empty(0, int)
        op = np.bincount(pos[is_open & (pos >= 0)], minlength=len(codes)) if len(codes) else np.empty(0, int)
        rows = [{"code": codes[i], "village_code": villages[i], "area_m2": round(float(areas[i]), 1),
                 "households": hh[i], "population": pop[i], "worker_id": workers[i],
                 "worker_name": names.get(workers[i] or ""), "events_90d": int(ev[i]), "open_cases": int(op[i])}
                for i in range(len(codes))]
        return rows, pos

    drows, dpos = side([c.code for c in d.cells], [c.village_code for c in d.cells], [c.geom for c in d.cells],
                       [c.households for c in d.cells], [c.population for c in d.cells],
                       [c.worker_id for c in d.cells])
    lrows, _ = side([r.code for r in live], [r.village_code for r in live], [shapely.from_wkb(r.wkb) for r in live],
                    [r.households for r in live], [r.population for r in live], [r.worker_id for r in live])
    live_wkb = {r.code: bytes(r.wkb) for r in live}
    dmap, lmap = {r["code"]: r for r in drows}, {r["code"]: r for r in lrows}
    cells = []
    for code in sorted(set(dmap) | set(lmap)):
        dr, lr = dmap.get(code), lmap.get(code)
        if lr is None:
            status = "added"
        elif dr is None:
            status = "removed"
        else:
            dc = next(c for c in d.cells if c.code == code)
            same_geom = shapely.to_wkb(dc.geom) == live_wkb[code] or shapely.equals(
                shapely.make_valid(dc.geom), shapely.from_wkb(live_wkb[code]))
            same = same_geom and all(dr[k] == lr[k] for k in ("households", "population", "worker_id")) and \
                dc.name == next(r.name for r in live if r.code == code)
            status = "unchanged" if same else "changed"
        cells.append({"code": code, "status": status, "draft": dr, "live": lr})
    worker_changes = [{"code": c["code"], "from_worker": (c["live"] or {}).get("worker_id"),
                       "to_worker": (c["draft"] or {}).get("worker_id")}
                      for c in cells if c["status"] != "unchanged"
                      and (c["live"] or {}).get("worker_id") != (c["draft"] or {}).get("worker_id")]
    workers: dict[str, dict[str, Any]] = {}
    for key, rows in (("live", lrows), ("draft", drows)):
        for r in rows:
            w = workers.setdefault(r["worker_id"] or "", {
                "worker_id": r["worker_id"], "worker_name": names.get(r["worker_id"] or ""),
                **{k: {"cells": 0, "area_m2": 0.0, "households": 0, "population": 0, "events_90d": 0,
                       "open_cases": 0} for k in ("live", "draft")}})
            s = w[key]
            s["cells"] += 1
            s["area_m2"] = round(s["area_m2"] + r["area_m2"], 1)
            s["households"] += r["households"] or 0
            s["population"] += r["population"] or 0
            s["events_90d"] += r["events_90d"]
            s["open_cases"] += r["open_cases"]
    moves = []
    dcodes = [c.code for c in d.cells]
    dworker = [c.worker_id for c in d.cells]
    for k in np.flatnonzero(is_open):
        e, p = events[k], int(dpos[k])
        to_cell, to_worker = (dcodes[p], dworker[p]) if p >= 0 else (None, None)
        if (to_cell, to_worker) != (e.cell_code, e.worker_id):
            moves.append({"event_id": e.id, "status": e.status, "category": e.category, "from_cell": e.cell_code,
                          "to_cell": to_cell, "from_worker": e.worker_id, "to_worker": to_worker})
    counts = {s: sum(c["status"] == s for c in cells) for s in ("added", "removed", "changed", "unchanged")}
    return {"draft": d.id, "base_version": d.base_version, "summary": {**counts, "moving_cases": len(moves)},
            "cells": cells, "workers": sorted(workers.values(), key=lambda w: w["worker_id"] or ""),
            "worker_changes": worker_changes, "moving_cases": moves}


# -- publish ----------------------------------------------------------------------------------------------------
def publish(engine: Engine, actor: Actor, draft_id: int, effective: dt.date, note: str | None = None,
            now: dt.datetime | None = None) -> dict[str, Any]:
    """Publish a draft as a new grid version effective from a date (all or nothing)."""
    now = _now(now)
    with engine.begin() as conn:
        # One publish (or load) at a time: the state row is the lock, and its revision tells caches to rebuild.
        loaded_at, _ = _state(conn, lock=True)
        d = _load_draft(conn, draft_id, actor, write=True, lock=True)
        if d.dataset_loaded_at != loaded_at:
            raise DraftConflict(f"draft {d.id} is stale: the boundary dataset was reloaded after it was made; "
                                "start a new draft")
        later = conn.execute(text("""
            SELECT id, published_by, published_at, villages FROM grid_versions
            WHERE id > :b AND dataset_loaded_at = :la AND villages && CAST(:v AS varchar(12)[]) ORDER BY id LIMIT 1"""),
            {"b": d.base_version, "la": loaded_at, "v": d.villages}).first()
        if later is not None:
            both = sorted(set(later.villages) & set(d.villages))
            raise DraftConflict(
                f"draft {d.id} is based on version {d.base_version}, but {later.published_by} published version "
                f"{later.id} at {later.published_at.astimezone(TZ):%Y-%m-%d %H:%M} changing village "
                f"{', '.join(both[:3])}{' …' if len(both) > 3 else ''}: start a new draft from the current grid")
        problems = [p for p in check_draft(conn, d) if p.severity == "error"]
        if problems:
            raise GridInvalid(problems)
        epsg = _epsg(conn, d.villages)
        live = {r.code: r for r in _live_cells(conn, d.villages)}
        new = {c.code: c for c in d.cells}
        changed, added, removed = [], [], []
        for code, c in new.items():
            geom = c.geom if shapely.is_valid(c.geom) else _multi(shapely.make_valid(c.geom))
            c.geom = geom
            r = live.get(code)
            if r is None:
                added.append(c)
            elif (shapely.to_wkb(geom) != bytes(r.wkb) and not shapely.equals(geom, shapely.from_wkb(r.wkb))) or \
                    (c.name, c.households, c.population, c.worker_id) != (r.name, r.households, r.population,
                                                                         r.worker_id):
                changed.append(c)
        removed = [r for code, r in live.items() if code not in new]
        retired = [live[c.code] for c in changed] + removed
        if not retired and not added:
            raise ActionInvalid(f"draft {d.id} does not change the grid: nothing to publish")
        floor = max([r.valid_from for r in retired] + [r.worker_from for r in retired if r.worker_from], default=None)
        if floor is not None and effective <= floor:
            raise ActionInvalid(f"effective date {effective} must be after {floor}, when the cells it replaces "
                                "took effect")
        vid = conn.execute(text("""
            INSERT INTO grid_versions (based_on, scope_code, villages, effective_date, published_at, published_by,
                                       draft_id, note, dataset_loaded_at)
            VALUES (:b, :s, :v, :eff, :now, :by, :d, :note, :la) RETURNING id"""),
            {"b": d.base_version, "s": d.scope_code, "v": d.villages, "eff": effective, "now": now,
             "by": actor.username, "d": d.id, "note": note, "la": loaded_at}).scalar_one()
        ids = [r.id for r in retired]
        if ids:
            conn.execute(text("""UPDATE worker_assignments SET valid_to = :eff
                                 WHERE cell_id = ANY(:ids) AND valid_to IS NULL"""), {"eff": effective, "ids": ids})
            conn.execute(text("UPDATE cells SET valid_to = :eff, retired_version_id = :vid WHERE id = ANY(:ids)"),
                         {"eff": effective, "vid": vid, "ids": ids})
        fresh = changed + added
        if fresh:
            villages = {r.code: r.id for r in conn.execute(text(
                "SELECT id, code FROM jurisdictions WHERE code = ANY(:v)"), {"v": d.villages})}
            areas = shapely.area(to_metric(np.array([c.geom for c in fresh], dtype=object), epsg))
            new_ids = conn.execute(text("""
                INSERT INTO cells (code, name, village_id, households, population, area_m2, valid_from, version_id,
                                   geom)
                SELECT code, name, village_id, households, population, area_m2, :eff, :vid,
                       ST_Multi(ST_GeomFromWKB(wkb, 4490))
                FROM unnest(CAST(:codes AS text[]), CAST(:names AS text[]), CAST(:vids AS int[]),
                            CAST(:hh AS int[]), CAST(:pop AS int[]), CAST(:areas AS float8[]), CAST(:wkbs AS bytea[]))
                     AS t(code, name, village_id, households, population, area_m2, wkb)
                RETURNING id, code"""),
                {"eff": effective, "vid": vid, "codes": [c.code for c in fresh], "names": [c.name for c in fresh],
                 "vids": [villages[c.village_code] for c in fresh], "hh": [c.households for c in fresh],
                 "pop": [c.population for c in fresh], "areas": [float(a) for a in areas],
                 "wkbs": [shapely.to_wkb(c.geom) for c in fresh]}).all()
            cid = {r.code: r.id for r in new_ids}
            conn.execute(text("""
                INSERT INTO worker_assignments (worker_id, role, cell_id, valid_from)
                SELECT w, 'grid_worker', c, :eff FROM unnest(CAST(:w AS text[]), CAST(:c AS int[])) AS t(w, c)"""),
                {"eff": effective, "w": [c.worker_id for c in fresh], "c": [cid[c.code] for c in fresh]})
        summary = {"added": sorted(c.code for c in added), "changed": sorted(c.code for c in changed),
                   "removed": sorted(r.code for r in removed), "unchanged": len(new) - len(added) - len(changed)}
        conn.execute(text("UPDATE grid_versions SET summary = CAST(:s AS jsonb) WHERE id = :id"),
                     {"s": json.dumps(summary), "id": vid})
        conn.execute(text("UPDATE grid_drafts SET status = 'published', published_version = :v, updated_at = :now "
                          "WHERE id = :id"), {"v": vid, "now": now, "id": d.id})
        conn.execute(text("UPDATE dataset_state SET revision = revision + 1 WHERE id = 1"))
        _log(conn, actor, "publish", now, d.id, vid, {"effective_date": effective, **summary})
        moved = 0
        if effective <= now.date():
            moved = _reassign(conn, vid, d.villages, actor, now)
    return {**version(engine, vid), "reassigned_cases": moved}


def _reassign(conn: Connection, vid: int, villages: Sequence[str], actor: Actor, now: dt.datetime) -> int:
    """Open cases of the villages follow the grid valid today: the covering cell and its worker. Each move is a
    `reassign` entry of the case's timeline; closed and rejected cases keep what they had."""
    today = now.date()
    cells = _live_cells(conn, villages, today)
    events = _events(conn, villages, now, open_only=True)
    codes = [r.code for r in cells]
    pos = _assign_points(codes, [r.village_code for r in cells], [shapely.from_wkb(r.wkb) for r in cells],
                         np.array([e.x for e in events], dtype=float), np.array([e.y for e in events], dtype=float),
                         [e.village_code for e in events])
    moves = [(e, cells[int(p)]) for e, p in zip(events, pos, strict=True)
             if p >= 0 and (cells[int(p)].code, cells[int(p)].worker_id) != (e.cell_code, e.worker_id)]
    if moves:
        params = {"ids": [e.id for e, _ in moves], "cells": [c.code for _, c in moves],
                  "names": [c.name for _, c in moves], "workers": [c.worker_id for _, c in moves],
                  "now": now, "actor": actor.username, "role": actor.role, "vid": vid}
        conn.execute(text("""
            CREATE TEMP TABLE grid_moves ON COMMIT DROP AS
            SELECT t.id, t.cell, t.cell_name, t.worker, w.name AS worker_name, e.status, e.cell_code AS old_cell,
                   e.worker_id AS old_worker
            FROM unnest(CAST(:ids AS bigint[]), CAST(:cells AS text[]), CAST(:names AS text[]),
                        CAST(:workers AS text[])) AS t(id, cell, cell_name, worker)
            JOIN events e ON e.id = t.id LEFT JOIN workers w ON w.id = t.worker"""), params)
        conn.execute(text("""
            UPDATE events e SET cell_code = m.cell, cell_name = m.cell_name, worker_id = m.worker,
                   worker_name = m.worker_name, updated_at = :now, version = e.version + 1
            FROM grid_moves m WHERE e.id = m.id"""), params)
        conn.execute(text("""
            INSERT INTO event_log (event_id, at, actor, role, action, from_status, to_status, note, data)
            SELECT m.id, :now, :actor, :role, 'reassign', m.status, m.status,
                   'grid version ' || :vid || ': cell ' || coalesce(m.old_cell, '-') || ' → ' || m.cell
                   || ', grid worker ' || coalesce(m.old_worker, '-') || ' → ' || coalesce(m.worker, '-'),
                   jsonb_build_object('grid_version', CAST(:vid AS int), 'from_cell', m.old_cell, 'to_cell', m.cell,
                                      'from_worker', m.old_worker, 'to_worker', m.worker)
            FROM grid_moves m ORDER BY m.id"""), params)
        conn.execute(text("DROP TABLE grid_moves"))
        eventlog.notify(conn, [e.id for e, _ in moves])
    conn.execute(text("""UPDATE grid_versions SET reassigned_at = :now,
                         summary = summary || jsonb_build_object('reassigned_cases', CAST(:n AS int))
                         WHERE id = :id"""),
                 {"now": now, "n": len(moves), "id": vid})
    return len(moves)


def reassign_due(engine: Engine, now: dt.datetime | None = None) -> int:
    """Reassign the open cases of versions whose effective date has come (published ahead of time). Idempotent;
    meant for the periodic supervision sweep."""
    now = _now(now)
    moved = 0
    with engine.begin() as conn:
        _state(conn, lock=True)
        for v in conn.execute(text("""SELECT id, villages FROM grid_versions WHERE reassigned_at IS NULL
                                      AND effective_date <= :today ORDER BY id"""), {"today": now.date()}).all():
            moved += _reassign(conn, v.id, v.villages, SYSTEM, now)
    return moved


# -- versions ---------------------------------------------------------------------------------------------------
def _version_row(r: Any) -> dict[str, Any]:
    return {"version": r.id, "based_on": r.based_on, "scope_code": r.scope_code, "villages": list(r.villages),
            "effective_date": r.effective_date.isoformat(), "published_at": r.published_at.astimezone(TZ).isoformat(),
            "published_by": r.published_by, "draft_id": r.draft_id, "note": r.note,
            "reassigned_at": r.reassigned_at.astimezone(TZ).isoformat() if r.reassigned_at else None,
            "summary": r.summary}


def list_versions(engine: Engine) -> list[dict[str, Any]]:
    """Version 0 (the loaded package) and every version published on it, oldest first."""
    with engine.connect() as conn:
        state = conn.execute(text("SELECT loaded_at, source FROM dataset_state WHERE id = 1")).one()
        base = conn.execute(text("""SELECT min(valid_from) AS since, count(*) AS n FROM cells
                                    WHERE version_id IS NULL""")).one()
        rows = conn.execute(text("SELECT * FROM grid_versions WHERE dataset_loaded_at = :la ORDER BY id"),
                            {"la": state.loaded_at}).all()
    v0 = {"version": 0, "based_on": None, "scope_code": None, "villages": [],
          "effective_date": base.since.isoformat() if base.since else None,
          "published_at": state.loaded_at.astimezone(TZ).isoformat(), "published_by": "wangge load",
          "draft_id": None, "note": f"loaded package {state.source or ''}".strip(), "reassigned_at": None,
          "summary": {"cells": base.n}}
    return [v0, *(_version_row(r) for r in rows)]


def version(engine: Engine, vid: int) -> dict[str, Any]:
    for v in list_versions(engine):
        if v["version"] == vid:
            return v
    raise NotFound(f"no grid version {vid} of the current dataset")


_IN_VERSION = """(c.version_id IS NULL OR c.version_id <= :{v}) AND (c.retired_version_id IS NULL
                  OR c.retired_version_id > :{v})"""


def diff_versions(engine: Engine, a: int, b: int, geometry: bool = True) -> dict[str, Any]:
    """Cells added, removed and changed from version a to version b (either order), with the area whose cell
    changed (the symmetric difference, m²) and the attributes that changed."""
    known = {v["version"] for v in list_versions(engine)}
    for v in (a, b):
        if v not in known:
            raise NotFound(f"no grid version {v} of the current dataset")
    with engine.connect() as conn:
        epsg = _epsg(conn, list(conn.execute(text("SELECT code FROM jurisdictions WHERE level = 'district'"))
                                .scalars()))
        rows = conn.execute(text(f"""
            WITH va AS (SELECT c.* FROM cells c WHERE {_IN_VERSION.format(v='a')}),
                 vb AS (SELECT c.* FROM cells c WHERE {_IN_VERSION.format(v='b')}),
                 j AS (SELECT coalesce(va.code, vb.code) AS code, va.id AS aid, vb.id AS bid, va.geom AS ag,
                              vb.geom AS bg, va.name AS aname, vb.name AS bname, va.households AS ahh,
                              vb.households AS bhh, va.population AS apop, vb.population AS bpop,
                              coalesce(va.village_id, vb.village_id) AS village_id
                       FROM va FULL JOIN vb ON va.code = vb.code WHERE va.id IS DISTINCT FROM vb.id)
            SELECT j.code, j.aid, j.bid, v.code AS village_code, j.aname, j.bname, j.ahh, j.bhh, j.apop, j.bpop,
                   (SELECT worker_id FROM worker_assignments WHERE cell_id = j.aid AND role = 'grid_worker'
                    ORDER BY valid_from DESC, worker_id LIMIT 1) AS aworker,
                   (SELECT worker_id FROM worker_assignments WHERE cell_id = j.bid AND role = 'grid_worker'
                    ORDER BY valid_from DESC, worker_id LIMIT 1) AS bworker,
                   ST_Area(ST_Transform(j.ag, :epsg)) AS aarea, ST_Area(ST_Transform(j.bg, :epsg)) AS barea,
                   CASE WHEN j.ag IS NOT NULL AND j.bg IS NOT NULL
                        THEN ST_Area(ST_Transform(ST_SymDifference(j.ag, j.bg), :epsg)) END AS moved,
                   ST_AsGeoJSON(CASE WHEN j.ag IS NULL THEN j.bg WHEN j.bg IS NULL THEN j.ag
                                     ELSE ST_SymDifference(j.ag, j.bg) END, 7, 0) AS gj
            FROM j JOIN jurisdictions v ON v.id = j.village_id ORDER BY j.code"""),
            {"a": a, "b": b, "epsg": epsg}).all()
        same = conn.execute(text(f"""SELECT count(*) FROM cells c WHERE {_IN_VERSION.format(v='a')}
                                     AND {_IN_VERSION.format(v='b')}"""), {"a": a, "b": b}).scalar_one()
    added, removed, changed = [], [], []
    for r in rows:
        g = {"geometry": json.loads(r.gj)} if geometry and r.gj else {}
        if r.aid is None:
            added.append({"code": r.code, "village_code": r.village_code, "name": r.bname,
                          "area_m2": round(r.barea, 1), "worker_id": r.bworker, **g})
        elif r.bid is None:
            removed.append({"code": r.code, "village_code": r.village_code, "name": r.aname,
                            "area_m2": round(r.aarea, 1), "worker_id": r.aworker, **g})
        else:
            attrs = {k: [x, y] for k, x, y in (("name", r.aname, r.bname), ("households", r.ahh, r.bhh),
                                               ("population", r.apop, r.bpop), ("worker_id", r.aworker, r.bworker))
                     if x != y}
            changed.append({"code": r.code, "village_code": r.village_code, "area_m2": [round(r.aarea, 1),
                                                                                         round(r.barea, 1)],
                            "geometry_change_m2": round(r.moved, 1), "changes": attrs, **g})
    return {"from": a, "to": b, "added": added, "removed": removed, "changed": changed, "unchanged": same}


# -- files (QGIS round trip) ------------------------------------------------------------------------------------
def export_village(engine: Engine, village: str, out: str | Path, on: dt.date | None = None) -> Path:
    """A GeoPackage with the village's live cells (layer `cells`, with worker_id) and its boundary (`village`)."""
    import geopandas as gpd

    out = Path(out)
    with engine.connect() as conn:
        j = _jurisdiction(conn, village)
        if j.level != "village":
            raise ActionInvalid(f"{village} is a {j.level}; export one village's cells")
        rows = _live_cells(conn, [village], on)
        names = _worker_names(conn, {r.worker_id for r in rows if r.worker_id})
        vg = _village_geoms(conn, [village])[village]
    cells = gpd.GeoDataFrame(
        {"code": [r.code for r in rows], "name": [r.name for r in rows],
         "village_code": [r.village_code for r in rows],
         "households": [r.households for r in rows], "population": [r.population for r in rows],
         "worker_id": [r.worker_id for r in rows], "worker_name": [names.get(r.worker_id or "") for r in rows]},
        geometry=[shapely.from_wkb(r.wkb) for r in rows], crs=4490)
    for col in ("households", "population"):
        cells[col] = cells[col].astype("Int64")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    cells.to_file(out, layer="cells", driver="GPKG")
    gpd.GeoDataFrame({"code": [village], "name": [j.name]}, geometry=[vg], crs=4490).to_file(
        out, layer="village", driver="GPKG", mode="a")
    return out


def read_cells_file(path: str | Path, village: str) -> list[DraftCell]:
    """Cells from a GeoPackage (layer `cells`, else the first polygon layer), GeoJSON or shapefile, in any CRS
    the file declares. An unreadable file raises one WanggeError line; a bad feature names its code."""
    import geopandas as gpd
    import pandas as pd
    import pyogrio

    path = Path(path)
    if not path.exists():
        raise WanggeError(f"no such file: {path}")
    try:
        layers = [str(x[0]) for x in pyogrio.list_layers(path)]
        layer = "cells" if "cells" in layers else next(
            (str(name) for name, kind in pyogrio.list_layers(path) if kind and "Polygon" in str(kind)),
            layers[0] if layers else None)
        df = gpd.read_file(path, layer=layer)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, ValueError, OSError) as exc:
        raise WanggeError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") \
            from exc
    df.columns = [c if c == df.geometry.name else str(c).lower() for c in df.columns]
    if "code" not in df.columns:
        raise WanggeError(f"{path}: layer {layer!r} has no `code` field (15-digit cell code)")
    if df.crs is not None and df.crs.to_epsg() not in (4326, 4490):
        df = df.to_crs(4490)
    out = []
    for i, row in enumerate(df.itertuples(index=False)):
        rec = row._asdict()
        raw = rec.get("code")
        code = str(int(raw)) if isinstance(raw, float) and np.isfinite(raw) else str(raw or "").strip()
        what = f"{path.name} feature {i + 1} (code {code or '?'})"
        if not re.fullmatch(r"\d{15}", code):
            raise GeometryRejected(f"{what}: code must be 15 digits")
        geom = check_polygon(rec.get(df.geometry.name), what)

        def num(k: str, rec: dict[str, Any] = rec, what: str = what) -> int | None:
            v = rec.get(k)
            return None if v is None or v is pd.NA or (isinstance(v, float) and not np.isfinite(v)) \
                else _int_or_none(v, f"{what}: {k}")

        vcode = rec.get("village_code")
        worker = rec.get("worker_id")
        out.append(DraftCell(code, str(rec.get("name") or f"网格{code[-3:]}"),
                             str(vcode).strip() if isinstance(vcode, str) and vcode.strip() else village,
                             num("households"), num("population"),
                             str(worker).strip() if isinstance(worker, str) and worker.strip() else None, geom))
    dup = sorted({c.code for c in out if sum(x.code == c.code for x in out) > 1})
    if dup:
        raise GeometryRejected(f"{path.name}: cell code {', '.join(dup)} appears more than once")
    return out


def draft_from_file(engine: Engine, actor: Actor, path: str | Path, village: str, name: str | None = None,
                    now: dt.datetime | None = None) -> int:
    """A new draft of a village holding exactly the cells of a file (edited in QGIS). One transaction."""
    now = _now(now)
    cells = read_cells_file(path, village)
    with engine.begin() as conn:
        draft_id = _create_draft(conn, actor, village, name or f"from {Path(path).name}", now)
        draft = _load_draft(conn, draft_id, actor, write=True, cells=False)
        replace_cells(conn, actor, draft, cells, now, str(path))
    return draft_id
