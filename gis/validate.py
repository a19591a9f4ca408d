"""Validation and repair of a boundary package before anything is written.

All measures are in metres in the CGCS2000 Gauss–Krüger zone of the package; tolerances follow the issue:
geometry repairs may change an area by at most 0.1 %, overlaps and gaps count above 1 m².
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import shapely
from numpy.typing import NDArray
from shapely.validation import explain_validity

from gis.crs import gk_epsg, transformer
from gis.errors import PackageInvalid, Problem
from gis.models import DEVICE_KINDS, LEVELS, ROLES
from gis.package import REQUIRED_COLUMNS, Package, normalise_package

AREA_TOLERANCE_M2 = 1.0
REPAIR_TOLERANCE = 0.001
_PARENT_LEVEL = {"district": None, "township": "district", "village": "township"}


@dataclass
class Validated:
    """A package that passed: polygons repaired and made MultiPolygon, with metric areas."""

    package: Package
    metric_epsg: int
    jurisdiction_area_m2: NDArray[np.float64]
    cell_area_m2: NDArray[np.float64]
    notes: list[str] = field(default_factory=list)


def to_metric(geoms: NDArray[np.object_], epsg: int, densify: bool = True) -> NDArray[np.object_]:
    """Project to metres. Long edges are first cut into ~50 m pieces: a straight edge in degrees is not straight
    in the projection, and a parent drawn with few vertices must still contain children drawn with many."""
    tf = transformer(4490, epsg)
    if densify:
        geoms = shapely.segmentize(geoms, 0.0005)

    def project(xy: NDArray[np.float64]) -> NDArray[np.float64]:
        x, y = tf.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geoms, project)


def _multi(g: shapely.Geometry) -> shapely.Geometry:
    """Keep the polygonal parts of a geometry as one MultiPolygon (make_valid may add lines or points)."""
    parts = [p for p in shapely.get_parts(g) if p.geom_type in ("Polygon", "MultiPolygon") and not p.is_empty]
    polys = [q for p in parts for q in shapely.get_parts(p)]
    return shapely.MultiPolygon(polys)


class _Checker:
    def __init__(self, pkg: Package) -> None:
        self.pkg = pkg
        self.problems: list[Problem] = []
        self.notes: list[str] = []
        bounds = pkg.jurisdictions.total_bounds if len(pkg.jurisdictions) else np.array([120.0, 30.0, 120, 30])
        lon = float((bounds[0] + bounds[2]) / 2) if np.isfinite(bounds).all() else 120.0
        self.epsg = gk_epsg(lon)

    def add(self, layer: str, code: object, rule: str, message: str) -> None:
        self.problems.append(Problem(layer, str(code) if code is not None else "?", rule, message))

    # -- attributes -------------------------------------------------------------------------------------
    def columns(self, layer: str, df: pd.DataFrame) -> bool:
        missing = [c for c in REQUIRED_COLUMNS[layer] if df[c].isna().all()] if len(df) else []
        for c in missing:
            self.add(layer, "-", "missing-field", f"field {c!r} is missing or empty in every feature")
        return not missing

    def unique(self, layer: str, values: pd.Series, what: str = "code") -> None:
        for code, n in values.dropna().value_counts().items():
            if n > 1:
                self.add(layer, code, "duplicate", f"{what} {code} appears {n} times")

    # -- geometry -----------------------------------------------------------------------------------------
    def polygons(self, layer: str, codes: pd.Series, geoms: NDArray[np.object_]) -> tuple[NDArray, NDArray]:
        """Repair what can be repaired; return (lon/lat multipolygons, metric multipolygons). Bad ones → None."""
        out = np.empty(len(geoms), dtype=object)
        for i, (code, g) in enumerate(zip(codes, geoms, strict=True)):
            if g is None or shapely.is_missing(g) or g.is_empty:
                self.add(layer, code, "geometry", "missing or unparseable geometry")
                continue
            if g.geom_type not in ("Polygon", "MultiPolygon"):
                self.add(layer, code, "geometry", f"expected a Polygon or MultiPolygon, got a {g.geom_type}")
                continue
            minx, miny, maxx, maxy = g.bounds
            if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
                self.add(layer, code, "geometry", "coordinates out of range: check the CRS the file declares")
                continue
            out[i] = g
        metric = np.empty(len(geoms), dtype=object)
        ok = np.array([g is not None for g in out], dtype=bool)
        if ok.any():
            metric[ok] = to_metric(out[ok], self.epsg)
        for i in np.flatnonzero(ok).tolist():
            g, m = out[i], metric[i]
            if shapely.is_valid(m) and shapely.is_valid(g):
                out[i], metric[i] = _multi(g), _multi(m)
                continue
            reason = explain_validity(g)
            # Measure the invalid shape as drawn (densifying could insert the very vertex that repairs it).
            raw = to_metric(np.array([g], dtype=object), self.epsg, densify=False)[0]
            before = abs(shapely.area(raw))
            fixed_g = _multi(shapely.make_valid(g))
            fixed_m = _multi(shapely.make_valid(to_metric(np.array([fixed_g], dtype=object), self.epsg)[0]))
            after = shapely.area(fixed_m)
            change = abs(after - before) / before if before > 0 else 1.0
            if change > REPAIR_TOLERANCE or fixed_m.is_empty:
                self.add(layer, codes.iloc[i], "invalid-geometry",
                         f"invalid geometry ({reason}) cannot be repaired without changing its area by "
                         f"{change:.2%} (limit 0.1 %)")
                out[i] = metric[i] = None
            else:
                self.notes.append(f"{layer} {codes.iloc[i]}: repaired invalid geometry ({reason}), "
                                  f"area changed by {change:.4%}")
                out[i], metric[i] = fixed_g, fixed_m
        return out, metric


def _where(g: shapely.Geometry, epsg: int) -> str:
    p = shapely.point_on_surface(g)
    lon, lat = transformer(epsg, 4490).transform(p.x, p.y)
    return f"near {lon:.6f}, {lat:.6f}"


def validate(pkg: Package, progress: Callable[[str], None] | None = None) -> Validated:
    """Check every rule; raise PackageInvalid listing each offending feature, or return the repaired package."""
    say = progress or (lambda _msg: None)
    pkg = normalise_package(pkg)
    c = _Checker(pkg)
    jur, cells, devices, workers = pkg.jurisdictions.copy(), pkg.cells.copy(), pkg.devices.copy(), pkg.workers

    # Jurisdictions: codes, levels, hierarchy, geometry.
    say("checking jurisdictions")
    c.columns("jurisdictions", jur)
    c.unique("jurisdictions", jur["code"])
    for code in jur["code"]:
        if code is not None and not re.fullmatch(r"\d{12}", code):
            c.add("jurisdictions", code, "code", "code must be the 12-digit statistical division code")
    level_of = dict(zip(jur["code"], jur["level"], strict=True))
    for code, level, parent in zip(jur["code"], jur["level"], jur["parent_code"], strict=True):
        if level not in LEVELS:
            c.add("jurisdictions", code, "level", f"level {level!r} is not one of {', '.join(LEVELS)}")
            continue
        if parent is None:
            if level != "district":
                c.add("jurisdictions", code, "parent", f"a {level} needs a parent_code")
        elif parent not in level_of:
            c.add("jurisdictions", code, "unknown-parent", f"parent_code {parent} names no jurisdiction")
        elif level_of[parent] != _PARENT_LEVEL[level]:
            c.add("jurisdictions", code, "parent",
                  f"parent {parent} is a {level_of[parent]}, a {level} belongs to a {_PARENT_LEVEL[level]}")
    jgeo, jmet = c.polygons("jurisdictions", jur["code"], jur.geometry.values)

    # Cells: codes, village, geometry, containment, overlaps, gaps.
    say("checking cells")
    c.columns("cells", cells)
    c.unique("cells", cells["code"])
    villages = {code for code, lvl in level_of.items() if lvl == "village"}
    for code, village in zip(cells["code"], cells["village_code"], strict=True):
        if village not in villages:
            c.add("cells", code, "unknown-village", f"village_code {village} names no village")
        elif code is None or not re.fullmatch(re.escape(village) + r"\d{3}", code):
            c.add("cells", code, "code", f"cell code must be its village code {village} + a 3-digit serial")
    cgeo, cmet = c.polygons("cells", cells["code"], cells.geometry.values)
    jidx = {code: i for i, code in enumerate(jur["code"])}
    say("checking containment, overlaps and gaps")
    _check_cells(c, cells, cgeo, cmet, jur, jmet, jidx)
    _check_children(c, jur, jmet, jidx)

    # Workers and devices.
    say("checking workers and devices")
    _check_workers(c, workers, set(cells["code"].dropna()), villages)
    _check_devices(c, devices, jgeo)
    if pkg.addresses is not None and len(pkg.addresses):
        _check_addresses(c, pkg.addresses, villages)

    if c.problems:
        raise PackageInvalid(c.problems)
    jur = jur.set_geometry(list(jgeo), crs=4490)
    cells = cells.set_geometry(list(cgeo), crs=4490)
    water = pkg.water.copy()
    if len(water):
        water = water.set_geometry([_multi(shapely.make_valid(g)) for g in water.geometry.values], crs=4490)
    fixed = Package(jur, cells, devices, water, workers, pkg.source, pkg.addresses)
    return Validated(fixed, c.epsg, shapely.area(jmet).astype(float), shapely.area(cmet).astype(float), c.notes)


def _check_cells(c: _Checker, cells: pd.DataFrame, cgeo: NDArray, cmet: NDArray, jur: pd.DataFrame, jmet: NDArray,
                 jidx: dict[str, int]) -> None:
    ok = np.array([g is not None for g in cmet], dtype=bool)
    # A cell must lie inside its village.
    for i in np.flatnonzero(ok):
        v = jidx.get(cells["village_code"].iloc[i])
        if v is None or jmet[v] is None:
            continue
        outside = shapely.area(shapely.difference(cmet[i], jmet[v]))
        if outside > AREA_TOLERANCE_M2:
            c.add("cells", cells["code"].iloc[i], "outside-village",
                  f"{outside:.1f} m² lies outside its village {cells['village_code'].iloc[i]} "
                  f"({_where(shapely.difference(cmet[i], jmet[v]), c.epsg)})")
    # No two cells may overlap. Measured on the vertices as drawn: neighbours share them exactly, and densifying
    # each side separately would open slivers of rounding between them.
    idx = np.flatnonzero(ok)
    geoms = to_metric(np.array([_multi(g) for g in cgeo[idx]], dtype=object), c.epsg, densify=False)
    tree = shapely.STRtree(geoms)
    a, b = tree.query(geoms, predicate="intersects")
    keep = a < b
    a, b = a[keep], b[keep]
    if len(a):
        inter = shapely.intersection(geoms[a], geoms[b])
        areas = shapely.area(inter)
        for k in np.flatnonzero(areas > AREA_TOLERANCE_M2):
            ca, cb = cells["code"].iloc[idx[a[k]]], cells["code"].iloc[idx[b[k]]]
            c.add("cells", ca, "overlap", f"overlaps cell {cb} by {areas[k]:.1f} m² ({_where(inter[k], c.epsg)})")
    # Cells must cover their village: no gap above tolerance (villages without cells are not gridded yet).
    for village, group in cells[ok].groupby("village_code"):
        v = jidx.get(village)
        if v is None or jmet[v] is None:
            continue
        pos = [cells.index.get_loc(lbl) for lbl in group.index]
        gap = shapely.difference(jmet[v], shapely.union_all(cmet[pos]))
        for part in shapely.get_parts(gap):
            area = shapely.area(part)
            if part.geom_type == "Polygon" and area > AREA_TOLERANCE_M2:
                c.add("jurisdictions", village, "gap",
                      f"gap of {area:.1f} m² between its cells ({_where(part, c.epsg)})")


def _check_children(c: _Checker, jur: pd.DataFrame, jmet: NDArray, jidx: dict[str, int]) -> None:
    """Villages inside their township, townships inside their district."""
    for i, parent in enumerate(jur["parent_code"]):
        p = jidx.get(parent) if parent is not None else None
        if p is None or jmet[i] is None or jmet[p] is None:
            continue
        outside = shapely.difference(jmet[i], jmet[p])
        if shapely.area(outside) > AREA_TOLERANCE_M2:
            c.add("jurisdictions", jur["code"].iloc[i], "outside-parent",
                  f"{shapely.area(outside):.1f} m² lies outside its parent {parent} ({_where(outside, c.epsg)})")


def _check_workers(c: _Checker, workers: pd.DataFrame, cells: set[str], villages: set[str]) -> None:
    if not len(workers):
        return
    c.columns("workers", workers)
    c.unique("workers", workers["id"], what="worker id")
    for wid, role, cell, village in zip(
        workers["id"], workers["role"], workers["cell_code"], workers["village_code"], strict=True
    ):
        if role not in ROLES:
            c.add("workers", wid, "role", f"role {role!r} is not one of {', '.join(ROLES)}")
        elif role == "grid_worker" and cell not in cells:
            c.add("workers", wid, "unknown-cell", f"cell_code {cell} names no cell")
        elif role == "grid_leader" and village not in villages:
            c.add("workers", wid, "unknown-village", f"village_code {village} names no village")


def _check_devices(c: _Checker, devices: pd.DataFrame, jgeo: NDArray) -> None:
    if not len(devices):
        return
    c.columns("devices", devices)
    c.unique("devices", devices["id"], what="device id")
    territory = shapely.union_all([g for g in jgeo if g is not None]) if any(g is not None for g in jgeo) else None
    if territory is not None:
        shapely.prepare(territory)
    for did, kind, g in zip(devices["id"], devices["kind"], devices.geometry.values, strict=True):
        if kind not in DEVICE_KINDS:
            c.add("devices", did, "kind", f"kind {kind!r} is not one of {', '.join(DEVICE_KINDS)}")
        if g is None or g.is_empty or g.geom_type != "Point":
            c.add("devices", did, "geometry", "expected a Point geometry")
        elif territory is not None and not territory.covers(g):
            c.add("devices", did, "outside", f"lies outside every jurisdiction ({g.x:.6f}, {g.y:.6f})")


def _check_addresses(c: _Checker, addresses: pd.DataFrame, villages: set[str]) -> None:
    c.columns("addresses", addresses)
    c.unique("addresses", addresses["id"], what="address id")
    for aid, village, g in zip(addresses["id"], addresses["village_code"], addresses.geometry.values, strict=True):
        if village not in villages:
            c.add("addresses", aid, "unknown-village", f"village_code {village} names no village")
        if g is None or g.is_empty or g.geom_type != "Point":
            c.add("addresses", aid, "geometry", "expected a Point geometry")
