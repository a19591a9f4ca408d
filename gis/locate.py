"""Point → grid cell, responsible grid worker and jurisdiction.

A `Locator` keeps one `CellIndex` per (dataset revision, date) in memory, built from PostGIS, and answers one
point or a million in a batch. Points outside every cell snap to the nearest cell within the configured distance
(metres in the Gauss–Krüger zone); farther out they stay unassigned with a reason — never a guess.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from sqlalchemy import Connection, Engine, text

from gis.cellindex import CellIndex
from gis.crs import gk_epsg, parse_crs, to_storage, transformer
from gis.errors import InvalidCoordinates
from gis.settings import LocateSettings

Ref = dict[str, str] | None
MAX_REPORTED_ERRORS = 20


@dataclass
class Snapshot:
    """Everything needed to answer locate queries for one date, detached from the database."""

    revision: int
    on: dt.date
    cell_codes: NDArray[np.object_]
    cell_names: NDArray[np.object_]
    cell_village: NDArray[np.int64]  # position in jur_* arrays
    index: CellIndex
    worker: list[Ref]
    jur_codes: NDArray[np.object_]
    jur_names: NDArray[np.object_]
    jur_level: NDArray[np.object_]
    jur_parent: NDArray[np.int64]  # position, -1 at the top
    village_pos: NDArray[np.int64]  # positions of the villages without cells on this date (not gridded yet)
    village_tree: shapely.STRtree  # over those villages only: a miss elsewhere lies outside every village
    territory: shapely.Geometry
    metric_epsg: int
    _metric_tree: shapely.STRtree | None = None
    _zones: dict[float, shapely.Geometry] | None = None
    _villages: dict[str, dict[str, Ref]] | None = None

    @property
    def villages(self) -> dict[str, dict[str, Ref]]:
        """Village code → its village, township and district references, built on first use."""
        if self._villages is None:
            self._villages = {str(self.jur_codes[pos]): _chain(self, int(pos))
                              for pos in np.flatnonzero(self.jur_level == "village")}
        return self._villages

    @property
    def metric_tree(self) -> shapely.STRtree:
        """Cells in metres, built on first use (only unassigned points need it)."""
        if self._metric_tree is None:
            tf = transformer(4490, self.metric_epsg)
            geoms = shapely.transform(self.index.geoms, lambda xy: np.column_stack(tf.transform(xy[:, 0], xy[:, 1])))
            self._metric_tree = shapely.STRtree(geoms)
        return self._metric_tree

    def snap_zone(self, distance_m: float) -> shapely.Geometry:
        """All cells grown by a little more than the snap distance, in lon/lat and prepared: most misses are
        ruled out by one test on their raw coordinates; the few inside get the exact metric test."""
        if self._zones is None:
            self._zones = {}
        if distance_m not in self._zones:
            grown = shapely.union_all(self.metric_tree.geometries).buffer(distance_m + 1.0)
            back = transformer(self.metric_epsg, 4490)
            zone = shapely.transform(grown, lambda xy: np.column_stack(back.transform(xy[:, 0], xy[:, 1])))
            shapely.prepare(zone)
            self._zones[distance_m] = zone
        return self._zones[distance_m]


def load_snapshot(engine: Engine, on: dt.date) -> Snapshot:
    valid = "valid_from <= :on AND (valid_to IS NULL OR :on < valid_to)"
    with engine.connect() as conn:
        revision = int(conn.execute(text("SELECT revision FROM dataset_state WHERE id = 1")).scalar_one())
        jur = conn.execute(
            text("SELECT id, code, name, level, parent_id, ST_AsBinary(geom) FROM jurisdictions ORDER BY code")
        ).all()
        cells = conn.execute(
            text(f"SELECT id, code, name, village_id, ST_AsBinary(geom) FROM cells WHERE {valid} ORDER BY code"),
            {"on": on},
        ).all()
        workers = conn.execute(
            text("""SELECT DISTINCT ON (a.cell_id) a.cell_id, w.id, w.name FROM worker_assignments a
                     JOIN workers w ON w.id = a.worker_id
                     WHERE a.role = 'grid_worker' AND a.valid_from <= :on
                       AND (a.valid_to IS NULL OR :on < a.valid_to)
                     ORDER BY a.cell_id, w.id"""),
            {"on": on},
        ).all()
    jpos = {r[0]: i for i, r in enumerate(jur)}
    jgeoms = shapely.from_wkb([r[5] for r in jur]) if jur else np.empty(0, dtype=object)
    levels = np.array([r[3] for r in jur], dtype=object)
    gridded = {jpos[r[3]] for r in cells}
    village_pos = np.array([i for i in np.flatnonzero(levels == "village") if i not in gridded], dtype=np.int64)
    by_cell = {r[0]: {"id": r[1], "name": r[2]} for r in workers}
    geoms = shapely.from_wkb([r[4] for r in cells]) if cells else np.empty(0, dtype=object)
    top = jgeoms[levels == "district"] if len(jgeoms) else jgeoms
    territory = shapely.union_all(top if len(top) else jgeoms)
    shapely.prepare(territory)
    bounds = shapely.total_bounds(jgeoms) if len(jgeoms) else np.array([120.0, 30.0, 120.0, 30.0])
    return Snapshot(
        revision=revision,
        on=on,
        cell_codes=np.array([r[1] for r in cells], dtype=object),
        cell_names=np.array([r[2] for r in cells], dtype=object),
        cell_village=np.array([jpos[r[3]] for r in cells], dtype=np.int64),
        index=CellIndex(geoms),
        worker=[by_cell.get(r[0]) for r in cells],
        jur_codes=np.array([r[1] for r in jur], dtype=object),
        jur_names=np.array([r[2] for r in jur], dtype=object),
        jur_level=levels,
        jur_parent=np.array([jpos.get(r[4], -1) for r in jur], dtype=np.int64),
        village_pos=village_pos,
        village_tree=shapely.STRtree(jgeoms[village_pos] if len(village_pos) else np.empty(0, dtype=object)),
        territory=territory,
        metric_epsg=gk_epsg(float((bounds[0] + bounds[2]) / 2)),
    )


def check_coordinates(x: NDArray[np.float64], y: NDArray[np.float64], geographic: bool) -> list[dict[str, Any]]:
    """Per-point problems: not finite, or out of the lon/lat range."""
    errors: list[dict[str, Any]] = []
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if geographic:
        bad_range = ~bad & ((np.abs(x) > 180) | (np.abs(y) > 90))
    else:
        bad_range = np.zeros_like(bad)
    for i in np.flatnonzero(bad | bad_range)[:MAX_REPORTED_ERRORS]:
        if bad[i]:
            msg = f"coordinates ({x[i]}, {y[i]}) are not finite numbers"
        else:
            msg = f"coordinates ({x[i]}, {y[i]}) are out of range: lon must be within ±180 and lat within ±90"
            if abs(x[i]) <= 90 < abs(y[i]) <= 180:
                msg += "; latitude and longitude look swapped: send longitude first"
        errors.append({"index": int(i), "message": msg})
    if bad.any() or bad_range.any():
        errors.append({"count": int((bad | bad_range).sum())})
    return errors


class Locator:
    """Thread-safe point location against the database's cells, cached per dataset revision and date."""

    def __init__(self, engine: Engine, settings: LocateSettings | None = None, cache_size: int = 4) -> None:
        self.engine = engine
        self.settings = settings or LocateSettings()
        self._cache: OrderedDict[dt.date, Snapshot] = OrderedDict()
        self._lock = threading.Lock()
        self._cache_size = cache_size
        self._last_change: tuple[int, dt.date | None] | None = None

    def snapshot(self, on: dt.date | None = None) -> Snapshot:
        """The cells and workers valid on a date (default today)."""
        day = on or dt.date.today()
        return self.snapshots({day})[day]

    def snapshots(self, days: set[dt.date], conn: Connection | None = None,
                  revision: int | None = None) -> dict[dt.date, Snapshot]:
        """Snapshots for several dates with one revision check (on `conn` when given, which saves a connection;
        a caller that has just read dataset_state.revision in its transaction passes it, and then the database is
        not touched at all while the cache holds those dates at that revision).
        Every date after the dataset's last change of validity (a valid_from or valid_to) shares one snapshot, so
        a year of events rarely needs more than one."""
        if revision is not None:
            hit = self._cached(days, revision)
            if hit is not None:
                return hit
        with contextlib.nullcontext(conn) if conn is not None else self.engine.connect() as conn:
            if revision is None:
                revision = int(conn.execute(text("SELECT revision FROM dataset_state WHERE id = 1")).scalar_one())
            with self._lock:
                if self._last_change is None or self._last_change[0] != revision:
                    last = conn.execute(text("""SELECT max(d) FROM (
                        SELECT max(greatest(valid_from, valid_to)) AS d FROM cells UNION ALL
                        SELECT max(valid_from) FROM cells UNION ALL
                        SELECT max(greatest(valid_from, valid_to)) FROM worker_assignments UNION ALL
                        SELECT max(valid_from) FROM worker_assignments) x""")).scalar()
                    self._last_change = (revision, last)
        out: dict[dt.date, Snapshot] = {}
        with self._lock:
            for day in days:
                key = self._key(day)
                snap = self._cache.get(key)
                if snap is None or snap.revision != revision:
                    snap = load_snapshot(self.engine, key)
                    self._cache[key] = snap
                    while len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
                else:
                    self._cache.move_to_end(key)
                out[day] = snap
        return out

    def _cached(self, days: set[dt.date], revision: int) -> dict[dt.date, Snapshot] | None:
        """The snapshots for these dates if all are in memory and of this revision, else None."""
        out: dict[dt.date, Snapshot] = {}
        with self._lock:
            if self._last_change is None or self._last_change[0] != revision:
                return None
            for day in days:
                key = self._key(day)
                snap = self._cache.get(key)
                if snap is None or snap.revision != revision:
                    return None
                self._cache.move_to_end(key)
                out[day] = snap
        return out

    def _key(self, day: dt.date) -> dt.date:
        """The cache key of a date: every date since the last change of validity shares one."""
        assert self._last_change is not None
        last_change = self._last_change[1]
        return last_change if last_change is not None and day >= last_change else day

    def locate(self, x: ArrayLike, y: ArrayLike, crs: str | int | None = None, on: dt.date | None = None
               ) -> list[dict[str, Any]]:
        """Locate points given in `crs`; raises InvalidCoordinates naming each bad point."""
        snap, a = self.locate_arrays(x, y, crs, on)
        return to_results(snap, a)

    def locate_arrays(self, x: ArrayLike, y: ArrayLike, crs: str | int | None = None, on: dt.date | None = None
                      ) -> tuple[Snapshot, Assignment]:
        """The batch path: arrays in, arrays out (no per-point Python objects)."""
        lon, lat = self.to_storage(x, y, crs)
        snap = self.snapshot(on)
        return snap, assign_arrays(snap, lon, lat, self.settings.snap_distance_m)

    @staticmethod
    def to_storage(x: ArrayLike, y: ArrayLike, crs: str | int | None) -> tuple[NDArray, NDArray]:
        parsed = parse_crs(crs)
        try:
            xa = np.atleast_1d(np.asarray(x, dtype=float))
            ya = np.atleast_1d(np.asarray(y, dtype=float))
        except (TypeError, ValueError) as exc:
            raise InvalidCoordinates("coordinates must be numbers") from exc
        if xa.shape != ya.shape:
            raise InvalidCoordinates("as many longitudes as latitudes are needed")
        errors = check_coordinates(xa, ya, parsed.geographic)
        if errors:
            raise InvalidCoordinates(str(errors[0]["message"]), errors)
        lon, lat = to_storage(xa, ya, parsed)
        errors = check_coordinates(lon, lat, True)
        if errors:
            raise InvalidCoordinates(f"coordinates cannot be transformed from {parsed.name}", errors)
        return lon, lat


def _ref(snap: Snapshot, pos: int) -> Ref:
    return None if pos < 0 else {"code": str(snap.jur_codes[pos]), "name": str(snap.jur_names[pos])}


def _chain(snap: Snapshot, village: int) -> dict[str, Ref]:
    """Village, township and district references above a village position."""
    out: dict[str, Ref] = {"village": None, "township": None, "district": None}
    pos = village
    while pos >= 0:
        out[str(snap.jur_level[pos])] = _ref(snap, pos)
        pos = int(snap.jur_parent[pos])
    return out


@dataclass
class Assignment:
    """Batch answer as arrays: positions into the snapshot's cells (-1: none).

    For points left unassigned (`far`), `village` holds the village they lie in (-1: none); the nearest cell and
    its distance — only needed to explain a JSON answer — are computed on demand by `to_results`.
    """

    cell: NDArray[np.int32]
    snapped: NDArray[np.bool_]
    distance_m: NDArray[np.float64]
    far: NDArray[np.int64]
    village: NDArray[np.int64]
    lon: NDArray[np.float64]
    lat: NDArray[np.float64]
    snap_distance_m: float


def assign_arrays(snap: Snapshot, lon: NDArray, lat: NDArray, snap_distance_m: float) -> Assignment:
    """The core rule on CGCS2000 lon/lat: contained → snapped within the distance → unassigned (never a guess).

    Raises InvalidCoordinates for points outside every jurisdiction that fall inside one once swapped.
    """
    pos = snap.index.assign(lon, lat)
    distance = np.zeros(len(lon))
    snapped = np.zeros(len(lon), dtype=bool)
    missing = np.flatnonzero(pos < 0)
    far = missing
    if len(missing) and len(snap.cell_codes) and snap_distance_m > 0:
        close = shapely.intersects_xy(snap.snap_zone(snap_distance_m), lon[missing], lat[missing])
        candidates = missing[close]
        pts = _metric_points(snap, lon[candidates], lat[candidates])
        p, c = snap.metric_tree.query_nearest(pts, max_distance=snap_distance_m, all_matches=True)
        best = np.full(len(candidates), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(best, p, c)  # ties go to the lowest code
        near = best < np.iinfo(np.int64).max
        hit = candidates[near]
        pos[hit] = best[near]
        snapped[hit] = True
        distance[hit] = shapely.distance(pts[near], snap.metric_tree.geometries[best[near]])
        far = np.setdiff1d(missing, hit, assume_unique=True)
    village = np.full(len(far), -1, dtype=np.int64)
    if len(far):
        p, v = snap.village_tree.query(shapely.points(lon[far], lat[far]), predicate="intersects")
        village[p[::-1]] = snap.village_pos[v[::-1]]  # the first match wins, as before
        _refuse_swapped(snap, lon, lat, far[village < 0])
    return Assignment(pos, snapped, distance, far, village, lon, lat, snap_distance_m)


def _metric_points(snap: Snapshot, lon: NDArray, lat: NDArray) -> NDArray[np.object_]:
    mx, my = transformer(4490, snap.metric_epsg).transform(lon, lat)
    return shapely.points(mx, my)


def _refuse_swapped(snap: Snapshot, lon: NDArray, lat: NDArray, outside: NDArray) -> None:
    """Points outside every jurisdiction that land inside one with lat and lon swapped are refused, by index."""
    if not len(outside) or snap.territory.is_empty:
        return
    x, y = lon[outside], lat[outside]
    # A miss is outside every cell and every ungridded village, hence outside the territory: only the swap
    # needs testing (and the envelope test rejects most swapped pairs at once).
    swapped = outside[shapely.intersects_xy(snap.territory, y, x)]
    if len(swapped):
        errors: list[dict[str, Any]] = [
            {"index": int(i), "message": f"point ({lon[i]}, {lat[i]}) lies outside every jurisdiction but inside "
                                         "one with latitude and longitude swapped: send longitude first"}
            for i in swapped[:MAX_REPORTED_ERRORS]
        ]
        raise InvalidCoordinates(str(errors[0]["message"]), errors)


def to_results(snap: Snapshot, a: Assignment) -> list[dict[str, Any]]:
    """The JSON shape of /api/v1/locate, one dict per point (read-only: points inside one cell share theirs)."""
    chains: dict[int, dict[str, Ref]] = {}
    none: dict[str, Ref] = {"village": None, "township": None, "district": None}

    def chain(v: int) -> dict[str, Ref]:
        if v < 0:
            return none
        if v not in chains:
            chains[v] = _chain(snap, v)
        return chains[v]

    far_info = _explain_far(snap, a)
    results: list[dict[str, Any]] = []
    # What a cell's points share is made once per cell (its dicts are shared by those points' answers: read-only),
    # and so is the whole answer of a point inside its cell (most points: 10,000 dicts fewer a batch).
    places: dict[int, dict[str, Any]] = {}
    inside: dict[int, dict[str, Any]] = {}
    snapped, distance = a.snapped.tolist(), np.round(a.distance_m, 2).tolist()
    for i, cell in enumerate(a.cell.tolist()):
        if cell >= 0:
            exact = not snapped[i] and not distance[i]
            if exact and (res := inside.get(cell)) is not None:
                results.append(res)
                continue
            place = places.get(cell)
            if place is None:
                place = places[cell] = {
                    "cell": {"code": str(snap.cell_codes[cell]), "name": str(snap.cell_names[cell])},
                    "worker": snap.worker[cell], **chain(int(snap.cell_village[cell]))}
            res = {**place, "snapped": snapped[i], "distance_m": distance[i], "reason": None}
            if exact:
                inside[cell] = res
            results.append(res)
        else:
            village, dist, reason = far_info[i]
            results.append({"cell": None, "worker": None, **chain(village), "snapped": False,
                            "distance_m": dist, "reason": reason})
    return results


def _explain_far(snap: Snapshot, a: Assignment) -> dict[int, tuple[int, float, str]]:
    """(village, distance to the nearest cell, reason) for each unassigned point."""
    out: dict[int, tuple[int, float, str]] = {}
    if not len(a.far):
        return out
    nearest = np.full(len(a.far), -1, dtype=np.int64)
    dist = np.zeros(len(a.far))
    if len(snap.cell_codes):
        pts = _metric_points(snap, a.lon[a.far], a.lat[a.far])
        p, c = snap.metric_tree.query_nearest(pts, all_matches=True)
        best = np.full(len(a.far), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(best, p, c)
        nearest = best
        dist = shapely.distance(pts, snap.metric_tree.geometries[best])
    for k, i in enumerate(a.far.tolist()):
        v = int(a.village[k])
        if v >= 0:
            reason = f"inside village {snap.jur_codes[v]} but in no grid cell"
        elif snap.territory.is_empty:
            reason = "no boundary data loaded: run `wangge load`"
        elif nearest[k] >= 0:
            reason = (f"outside every grid cell: nearest cell {snap.cell_codes[nearest[k]]} is {dist[k]:.0f} m away "
                      f"(snap distance {a.snap_distance_m:g} m)")
        else:
            reason = "outside every grid cell"
        out[i] = (v, round(float(dist[k]), 2), reason)
    return out
