"""Writing a validated boundary package to PostGIS in one transaction, and reading it back out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely
from sqlalchemy import Connection, Engine, text

from gis.db import fresh_ids_sql
from gis.package import COLUMNS, Package, read_package, write_package
from gis.validate import Validated, validate

Progress = Callable[[str, int, int], None]  # (step, done, total)
_BATCH = 2000


@dataclass
class LoadSummary:
    jurisdictions: int
    cells: int
    workers: int
    devices: int
    water: int
    revision: int
    notes: list[str]


def _ids(conn: Connection, seq_table: str, n: int) -> list[int]:
    if n == 0:
        return []
    rows = conn.execute(text(fresh_ids_sql(seq_table, ":n")), {"n": n})
    return [r[0] for r in rows]


def _none(v: object) -> object:
    return None if v is None or (isinstance(v, float) and pd.isna(v)) else v


def _int(v: object) -> int | None:
    v = _none(v)
    return None if v is None else int(float(v))  # type: ignore[arg-type]


def _insert(conn: Connection, sql: str, rows: list[dict[str, object]], step: str, progress: Progress | None) -> None:
    stmt = text(sql)
    for start in range(0, len(rows), _BATCH):
        conn.execute(stmt, rows[start : start + _BATCH])
        if progress:
            progress(step, min(start + _BATCH, len(rows)), len(rows))


def load_package(
    engine: Engine,
    source: str | Path | Package,
    valid_from: dt.date | None = None,
    progress: Progress | None = None,
) -> LoadSummary:
    """Validate, then replace the boundary dataset in one transaction: everything lands or nothing does."""
    pkg = source if isinstance(source, Package) else read_package(source)
    checked = validate(pkg, progress=(lambda m: progress(m, 0, 0)) if progress else None)
    with engine.begin() as conn:
        return _write(conn, checked, valid_from or dt.date.today(), progress)


def _write(conn: Connection, v: Validated, valid_from: dt.date, progress: Progress | None) -> LoadSummary:
    pkg = v.package
    # Serialise loads: the state row is the lock, and its revision tells caches to rebuild.
    conn.execute(text("SELECT revision FROM dataset_state WHERE id = 1 FOR UPDATE"))
    for table in ("worker_assignments", "workers", "devices", "cells", "water_bodies", "addresses"):
        conn.execute(text(f"DELETE FROM {table}"))
    conn.execute(text("UPDATE jurisdictions SET parent_id = NULL"))
    conn.execute(text("DELETE FROM jurisdictions"))

    jur = pkg.jurisdictions
    jids = dict(zip(jur["code"], _ids(conn, "jurisdictions", len(jur)), strict=True))
    rows = [
        {
            "id": jids[code], "code": code, "name": name, "level": level,
            "parent_id": jids.get(parent) if parent else None, "kind": _none(kind),
            "households": _int(hh), "population": _int(pop), "area_m2": float(area), "wkb": shapely.to_wkb(g),
        }
        for code, name, level, parent, kind, hh, pop, area, g in zip(
            jur["code"], jur["name"], jur["level"], jur["parent_code"], jur["kind"], jur["households"],
            jur["population"], v.jurisdiction_area_m2, jur.geometry.values, strict=True,
        )
    ]
    # Parents first so that the foreign key holds row by row.
    order = {"district": 0, "township": 1, "village": 2}
    rows.sort(key=lambda r: order[str(r["level"])])
    _insert(conn, """INSERT INTO jurisdictions (id, code, name, level, parent_id, kind, households, population,
                     area_m2, geom) VALUES (:id, :code, :name, :level, :parent_id, :kind, :households, :population,
                     :area_m2, ST_Multi(ST_GeomFromWKB(:wkb, 4490)))""", rows, "jurisdictions", progress)

    cells = pkg.cells
    cids = dict(zip(cells["code"], _ids(conn, "cells", len(cells)), strict=True))
    rows = [
        {
            "id": cids[code], "code": code, "name": name, "village_id": jids[village], "households": _int(hh),
            "population": _int(pop), "area_m2": float(area), "valid_from": valid_from, "wkb": shapely.to_wkb(g),
        }
        for code, name, village, hh, pop, area, g in zip(
            cells["code"], cells["name"], cells["village_code"], cells["households"], cells["population"],
            v.cell_area_m2, cells.geometry.values, strict=True,
        )
    ]
    _insert(conn, """INSERT INTO cells (id, code, name, village_id, households, population, area_m2, valid_from, geom)
                     VALUES (:id, :code, :name, :village_id, :households, :population, :area_m2, :valid_from,
                     ST_Multi(ST_GeomFromWKB(:wkb, 4490)))""", rows, "cells", progress)

    w = pkg.workers
    _insert(conn, "INSERT INTO workers (id, name, phone) VALUES (:id, :name, :phone)",
            [{"id": i, "name": n, "phone": _none(p)} for i, n, p in zip(w["id"], w["name"], w["phone"], strict=True)],
            "workers", progress)
    _insert(conn, """INSERT INTO worker_assignments (worker_id, role, cell_id, village_id, valid_from)
                     VALUES (:worker_id, :role, :cell_id, :village_id, :valid_from)""",
            [
                {
                    "worker_id": i, "role": role, "valid_from": valid_from,
                    "cell_id": cids[cell] if role == "grid_worker" else None,
                    "village_id": jids[village] if role == "grid_leader" else None,
                }
                for i, role, cell, village in zip(w["id"], w["role"], w["cell_code"], w["village_code"], strict=True)
            ], "assignments", progress)

    d = pkg.devices
    _insert(conn, """INSERT INTO devices (id, kind, subtype, name, geom)
                     VALUES (:id, :kind, :subtype, :name, ST_GeomFromWKB(:wkb, 4490))""",
            [
                {"id": i, "kind": k, "subtype": s, "name": n, "wkb": shapely.to_wkb(g)}
                for i, k, s, n, g in zip(d["id"], d["kind"], d["subtype"], d["name"], d.geometry.values, strict=True)
            ], "devices", progress)
    wt = pkg.water
    _insert(conn, """INSERT INTO water_bodies (name, kind, geom)
                     VALUES (:name, :kind, ST_Multi(ST_GeomFromWKB(:wkb, 4490)))""",
            [
                {"name": n, "kind": _none(k) or "river", "wkb": shapely.to_wkb(g)}
                for n, k, g in zip(wt["name"], wt["kind"], wt.geometry.values, strict=True)
            ], "water", progress)
    ad = pkg.addresses if pkg.addresses is not None else None
    if ad is not None and len(ad):
        _insert(conn, """INSERT INTO addresses (id, village_code, road, number, name, geom)
                         VALUES (:id, :v, :road, :num, :name, ST_GeomFromWKB(:wkb, 4490))""",
                [
                    {"id": i, "v": v, "road": r, "num": n, "name": _none(nm), "wkb": shapely.to_wkb(g)}
                    for i, v, r, n, nm, g in zip(ad["id"], ad["village_code"], ad["road"], ad["number"], ad["name"],
                                                 ad.geometry.values, strict=True)
                ], "addresses", progress)
    revision = conn.execute(
        text("""UPDATE dataset_state SET revision = revision + 1, source = :src, loaded_at = now()
                WHERE id = 1 RETURNING revision"""),
        {"src": pkg.source},
    ).scalar_one()
    for table in ("jurisdictions", "cells", "devices"):
        conn.execute(text(f"ANALYZE {table}"))
    return LoadSummary(len(jur), len(cells), len(w), len(d), len(wt), int(revision), v.notes)


def revision(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT revision FROM dataset_state WHERE id = 1")).scalar_one())


def read_dataset(engine: Engine, on: dt.date | None = None) -> Package:
    """The dataset as a package: jurisdictions, the cells and assignments valid on `on` (default today)."""
    on = on or dt.date.today()
    valid = "valid_from <= :on AND (valid_to IS NULL OR :on < valid_to)"
    with engine.connect() as conn:
        jur = gpd.read_postgis(
            text("""SELECT j.code, j.name, j.level, p.code AS parent_code, j.kind, j.households, j.population,
                           j.geom FROM jurisdictions j LEFT JOIN jurisdictions p ON p.id = j.parent_id
                    ORDER BY j.code"""), conn, geom_col="geom")
        cells = gpd.read_postgis(
            text(f"""SELECT c.code, c.name, v.code AS village_code, c.households, c.population, c.geom
                     FROM cells c JOIN jurisdictions v ON v.id = c.village_id WHERE {valid} ORDER BY c.code"""),
            conn, geom_col="geom", params={"on": on})
        devices = gpd.read_postgis(
            text("SELECT id, kind, subtype, name, geom FROM devices ORDER BY id"), conn, geom_col="geom")
        water = gpd.read_postgis(text("SELECT name, kind, geom FROM water_bodies ORDER BY id"), conn, geom_col="geom")
        addresses = gpd.read_postgis(
            text("SELECT id, village_code, road, number, name, geom FROM addresses ORDER BY id"), conn, geom_col="geom")
        workers = pd.read_sql(
            text("""SELECT w.id, w.name, w.phone, a.role, c.code AS cell_code, v.code AS village_code
                     FROM worker_assignments a JOIN workers w ON w.id = a.worker_id
                     LEFT JOIN cells c ON c.id = a.cell_id LEFT JOIN jurisdictions v ON v.id = a.village_id
                     WHERE a.valid_from <= :on AND (a.valid_to IS NULL OR :on < a.valid_to)
                     ORDER BY w.id"""),
            conn, params={"on": on})
    frames = [f.rename_geometry("geometry") for f in (jur, cells, devices, water, addresses)]
    for f in frames:
        f.set_crs(4490, allow_override=True, inplace=True)
    return Package(frames[0], frames[1], frames[2], frames[3], workers[list(COLUMNS["workers"])], source="database",
                   addresses=frames[4])


def export_dataset(engine: Engine, out: str | Path, fmt: str = "geojson", on: dt.date | None = None) -> list[Path]:
    return write_package(read_dataset(engine, on), out, fmt)
