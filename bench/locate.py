"""Benchmark: point → grid cell with wangge's batch path, against bare shapely and plain PostGIS joins.

Two grids are measured in one run:
  demo  the demo township package data/boundaries/demo-j-town;
  grid  a generated district of --cells Voronoi cells (fixed seed): villages of 100 cells, townships of 100
        villages (1,000 villages × 100 cells at the default 100,000), with one grid worker per cell.
Each grid is loaded with gis.store.load_package (its load time is reported), then --points points drawn uniformly
(fixed seed) in the bounding box of its cells, as EPSG:4326 lon/lat, are located by:
  wangge batch   Locator(engine).locate_arrays(x, y, "EPSG:4326") after a warm-up call that builds the index
                 (the index build is timed on its own line);
  (a) STRtree    shapely.points(x, y) + STRtree(cells).query(points, predicate="within") on the same polygons read
                 from the database (tree build excluded);
  (b) PostGIS    SELECT p.id, c.id FROM bench_points p JOIN cells c ON ST_Intersects(c.geom, p.geom), all rows
                 fetched by psycopg (the COPY of the points into an UNLOGGED table + GiST index is timed apart);
  (c) PostGIS    the same join against the cells cut by ST_Subdivide(geom, 64) (built by this script: it measures
                 whether subdivision would pay; the project does not subdivide because it does not).
Each method runs --repeat times; the best time counts. wangge must agree with STRtree on every point within exactly
one cell (the disagreements are counted; there must be none). Results: a table per grid, bench/results/locate.json.

    .venv/bin/python bench/locate.py                                   # full run: 1M points, 100k cells (minutes)
    .venv/bin/python bench/locate.py --points 100000 --cells 2000 --only grid
    .venv/bin/python bench/locate.py --database-url postgresql+psycopg://me@127.0.0.1:5432/postgres

Without --database-url (or WANGGE_DATABASE_URL) a throw-away embedded cluster (fsync off) runs in a temporary folder
and is removed at the end. With a server URL, the databases wangge_bench_demo and wangge_bench_grid are created on it
(its user must be allowed to create databases and the postgis extension) and dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import shapely
from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.engine import make_url

from gis import db
from gis.cluster import Cluster
from gis.locate import Locator
from gis.package import COLUMNS, Package
from gis.settings import DatabaseSettings
from gis.store import load_package

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "boundaries" / "demo-j-town"
RESULTS = ROOT / "bench" / "results" / "locate.json"
DISTRICT = (121.0, 29.2, 122.2, 30.2)  # lon/lat box of the generated district
PER_VILLAGE, PER_TOWNSHIP, GRID = 100, 100, 1e-7
SEED = 20240226
console = Console(width=112, log_path=False)


@contextlib.contextmanager
def step(label: str) -> Iterator[dict[str, float]]:
    """Time a block, showing a spinner while it runs and its duration when it is done."""
    out: dict[str, float] = {}
    with console.status(f"{label} …"):
        t0 = time.perf_counter()
        yield out
        out["s"] = time.perf_counter() - t0
    console.log(f"{label}: {out['s']:.2f} s")


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


# -- the generated grid ------------------------------------------------------------------------------------------
def obj(values: Any) -> pd.Series:
    """A column of Python objects: pandas 3 would infer a string dtype and turn None into NaN."""
    return pd.Series(list(values), dtype=object)


def make_grid(n_cells: int, seed: int = SEED) -> Package:
    """A district of Voronoi cells. Village regions are a Voronoi partition of seeded points; each gets 100 cell
    seeds, and the cells are one Voronoi partition of all cell seeds clipped to the district, so neighbouring cells
    share exact edges. A village is the union of its cells, a township of its villages: an exact planar partition."""
    rng = np.random.default_rng(seed)
    nv = max(1, n_cells // PER_VILLAGE)
    nt = -(-nv // PER_TOWNSHIP)
    district = shapely.box(*DISTRICT)
    vseed = rng.uniform(DISTRICT[:2], DISTRICT[2:], size=(nv, 2))
    regions = shapely.intersection(shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(vseed), extend_to=district, ordered=True)), district)
    seeds = []
    for region in regions:
        minx, miny, maxx, maxy = region.bounds
        got = np.empty((0, 2))
        while len(got) < PER_VILLAGE:
            cand = rng.uniform((minx, miny), (maxx, maxy), size=(4 * PER_VILLAGE, 2))
            got = np.vstack([got, cand[shapely.contains_xy(region, cand[:, 0], cand[:, 1])]])
        seeds.append(got[:PER_VILLAGE])
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(np.vstack(seeds)), extend_to=district, ordered=True))
    cells = shapely.set_precision(shapely.intersection(cells, district), GRID)
    assert (shapely.get_type_id(cells) == 3).all(), "a generated cell is not a single polygon"
    village = np.repeat(np.arange(nv), PER_VILLAGE)

    # Codes: townships are west→east strips of villages; villages and cells are numbered north→south, west→east.
    rank = np.empty(nv, dtype=np.int64)
    rank[np.argsort(vseed[:, 0], kind="stable")] = np.arange(nv)
    township = rank * nt // nv
    vcode, vname = np.empty(nv, dtype=object), np.empty(nv, dtype=object)
    for t in range(nt):
        members = np.flatnonzero(township == t)
        for k, v in enumerate(members[np.lexsort((vseed[members, 0], -vseed[members, 1]))]):
            vcode[v], vname[v] = f"330212{101 + t:03d}{k + 1:03d}", f"第{t + 1}镇第{k + 1}村"
    centre = shapely.centroid(cells)
    order = np.lexsort((shapely.get_x(centre), -shapely.get_y(centre), village))
    serial = np.empty(len(cells), dtype=np.int64)
    serial[order] = np.arange(len(cells)) % PER_VILLAGE + 1
    ccode = np.array([f"{vcode[v]}{s:03d}" for v, s in zip(village, serial, strict=True)], dtype=object)
    cname = [f"{vname[v]}第{s}网格" for v, s in zip(village, serial, strict=True)]
    hh = rng.integers(30, 300, len(cells))
    pop = (hh * rng.uniform(2.2, 3.2, len(cells))).astype(np.int64)

    vgeom = [shapely.union_all(cells[v * PER_VILLAGE:(v + 1) * PER_VILLAGE], grid_size=GRID) for v in range(nv)]
    tgeom = [shapely.union_all(np.array(vgeom, dtype=object)[township == t], grid_size=GRID) for t in range(nt)]
    vhh, vpop = np.bincount(village, hh, nv), np.bincount(village, pop, nv)
    thh, tpop = np.bincount(township, vhh, nt), np.bincount(township, vpop, nt)
    tcodes = [f"330212{101 + t:03d}000" for t in range(nt)]
    jur = gpd.GeoDataFrame({
        "code": obj(["330212000000", *tcodes, *vcode]),
        "name": obj(["合成区", *[f"第{t + 1}镇" for t in range(nt)], *vname]),
        "level": obj(["district"] + ["township"] * nt + ["village"] * nv),
        "parent_code": obj([None, *["330212000000"] * nt, *[tcodes[t] for t in township]]),
        "kind": obj([None] * (1 + nt) + ["村"] * nv),
        "households": [int(hh.sum()), *thh.astype(int), *vhh.astype(int)],
        "population": [int(pop.sum()), *tpop.astype(int), *vpop.astype(int)],
    }, geometry=[shapely.union_all(tgeom, grid_size=GRID), *tgeom, *vgeom], crs=4490)
    cell_df = gpd.GeoDataFrame({"code": obj(ccode), "name": obj(cname), "village_code": obj(vcode[village]),
                                "households": hh, "population": pop}, geometry=cells, crs=4490)
    n = len(cells)
    workers = pd.DataFrame({"id": obj(f"W{i + 1:06d}" for i in range(n)),
                            "name": obj(f"网格员{i + 1}" for i in range(n)),
                            "phone": obj(f"138{i:08d}" for i in range(n)), "role": obj(["grid_worker"] * n),
                            "cell_code": obj(ccode), "village_code": obj([None] * n)})
    empty = {k: gpd.GeoDataFrame({c: obj([]) for c in COLUMNS[k]}, geometry=[], crs=4490) for k in ("devices", "water")}
    return Package(jur, cell_df, empty["devices"], empty["water"], workers, source=f"bench grid {n_cells}")


# -- the benchmark of one grid -----------------------------------------------------------------------------------
def pg_connect(url: str) -> psycopg.Connection:
    u = make_url(url)
    return psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password,
                           dbname=u.database, autocommit=True)


def bench(name: str, url: str, source: Path | Package, n_points: int, repeat: int, seed: int) -> dict[str, Any]:
    engine = db.engine_for(url)
    r: dict[str, Any] = {"points": n_points}
    with step(f"[{name}] load_package (validate + write)") as t:
        load_package(engine, source)
    r["load_s"] = t["s"]
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, code, ST_AsBinary(geom) FROM cells ORDER BY code")).all()
        # Would subdividing the cells pay for SQL lookups? Build the subdivided table here and measure it.
        conn.execute(text("""CREATE UNLOGGED TABLE IF NOT EXISTS cell_parts AS
                             SELECT id AS cell_id, (ST_Dump(ST_Subdivide(geom, 64))).geom AS geom FROM cells"""))
        conn.execute(text("CREATE INDEX IF NOT EXISTS ix_cell_parts_geom ON cell_parts USING gist (geom)"))
        conn.execute(text("ANALYZE cell_parts"))
        conn.commit()
        r["cell_parts"] = conn.execute(text("SELECT count(*) FROM cell_parts")).scalar_one()
    codes = np.array([row[1] for row in rows], dtype=object)
    geoms = shapely.from_wkb([row[2] for row in rows])
    r["cells"] = len(geoms)
    r["vertices_per_cell"] = float(shapely.get_num_coordinates(geoms).mean())
    minx, miny, maxx, maxy = shapely.total_bounds(geoms)
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(minx, maxx, n_points), rng.uniform(miny, maxy, n_points)

    locator = Locator(engine)
    with step(f"[{name}] wangge index build (Locator.snapshot)") as t:
        locator.snapshot()
    r["index_build_s"] = t["s"]
    locator.locate_arrays(x[:1000], y[:1000], "EPSG:4326")  # warm-up
    with step(f"[{name}] wangge batch ×{repeat}"):
        t_wangge, (snap, a) = best_of(lambda: locator.locate_arrays(x, y, "EPSG:4326"), repeat)
    r["snap_m"] = locator.settings.snap_distance_m
    r["wangge"] = {"inside": int(((a.cell >= 0) & ~a.snapped).sum()), "snapped": int(a.snapped.sum()),
                   "unassigned": int((a.cell < 0).sum())}
    t_index, _ = best_of(lambda: snap.index.assign(x, y), repeat)  # for information: the tile index alone

    shapely.prepare(geoms)  # the tree would prepare them on first use; keep that out of the timing, like the index
    t0 = time.perf_counter()
    tree = shapely.STRtree(geoms)
    r["strtree_build_s"] = time.perf_counter() - t0
    with step(f"[{name}] STRtree query ×{repeat}"):
        t_tree, (p, c) = best_of(lambda: tree.query(shapely.points(x, y), predicate="within"), repeat)
    hits = np.bincount(p, minlength=n_points)
    tree_cell = np.full(n_points, -1, dtype=np.int64)
    tree_cell[p] = c
    one = np.flatnonzero(hits == 1)
    w = a.cell[one]
    wrong = (w < 0) | (snap.cell_codes[np.maximum(w, 0)] != codes[tree_cell[one]])
    r["agreement"] = {"checked": len(one), "disagreements": int(wrong.sum()),
                      "strtree_no_cell": int((hits == 0).sum()), "strtree_several": int((hits > 1).sum())}

    with pg_connect(url) as pg:
        with step(f"[{name}] COPY {n_points:,} points + GiST index + ANALYZE") as t:
            pg.execute("DROP TABLE IF EXISTS bench_points")
            pg.execute("CREATE UNLOGGED TABLE bench_points (id integer NOT NULL, geom geometry(Point, 4490))")
            hexes = shapely.to_wkb(shapely.set_srid(shapely.points(x, y), 4490), hex=True, include_srid=True)
            with pg.cursor().copy("COPY bench_points (id, geom) FROM STDIN") as cp:
                for start in range(0, n_points, 100_000):
                    cp.write("".join(f"{i}\t{h}\n" for i, h in enumerate(hexes[start:start + 100_000], start)))
            pg.execute("CREATE INDEX ON bench_points USING gist (geom)")
            pg.execute("ANALYZE bench_points")
        r["copy_index_s"] = t["s"]

        def join(table: str, cell: str) -> Callable[[], list[tuple[int, int]]]:
            sql = f"SELECT p.id, c.{cell} FROM bench_points p JOIN {table} c ON ST_Intersects(c.geom, p.geom)"

            def run() -> list[tuple[int, int]]:
                with pg.cursor() as cur:
                    cur.execute(sql)
                    return cur.fetchall()
            return run

        with step(f"[{name}] PostGIS join on cells ×{repeat}"):
            t_join, rows_join = best_of(join("cells", "id"), repeat)
        with step(f"[{name}] PostGIS join on cell_parts ×{repeat}"):
            t_parts, rows_parts = best_of(join("cell_parts", "cell_id"), repeat)
        pg.execute("DROP TABLE bench_points")

    methods = [("wangge batch", t_wangge, None), ("  (info: CellIndex.assign alone)", t_index, None),
               ("(a) shapely STRtree", t_tree, len(p)), ("(b) PostGIS join on cells", t_join, len(rows_join)),
               ("(c) PostGIS join on cell_parts", t_parts, len(rows_parts))]
    r["methods"] = [{"method": m, "seconds": s, "points_per_s": n_points / s, "time_vs_wangge": s / t_wangge,
                     "pairs": pairs} for m, s, pairs in methods]
    r["speed_ratio"] = {"wangge/strtree": t_tree / t_wangge, "wangge/postgis_cells": t_join / t_wangge,
                        "wangge/postgis_cell_parts": t_parts / t_wangge}
    return r


def show(name: str, r: dict[str, Any]) -> None:
    table = Table(title=f"{name}: {r['cells']:,} cells ({r['cell_parts']:,} cell_parts, "
                        f"{r['vertices_per_cell']:.0f} vertices/cell), {r['points']:,} points", title_justify="left")
    for col in ("method", "seconds", "points/s", "time ÷ wangge", "pairs returned"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for m in r["methods"]:
        table.add_row(m["method"], f"{m['seconds']:.3f}", f"{m['points_per_s']:,.0f}", f"{m['time_vs_wangge']:.2f}",
                      "" if m["pairs"] is None else f"{m['pairs']:,}")
    console.print(table)
    w, ag = r["wangge"], r["agreement"]
    console.print(f"  load_package {r['load_s']:.2f} s · wangge index build {r['index_build_s']:.2f} s · "
                  f"STRtree build {r['strtree_build_s']:.2f} s · COPY + GiST index {r['copy_index_s']:.2f} s")
    console.print(f"  wangge: {w['inside']:,} inside a cell, {w['snapped']:,} snapped (≤ {r['snap_m']:g} m), "
                  f"{w['unassigned']:,} unassigned with a reason")
    console.print("  (the info row times wangge's tile index alone, without the snapping/explaining of misses)")
    console.print(f"  agreement with STRtree: {ag['disagreements']} disagreements on {ag['checked']:,} points within "
                  f"exactly one cell ({ag['strtree_no_cell']:,} in none, {ag['strtree_several']:,} in several)")
    targets = {"wangge/strtree": 1.0, "wangge/postgis_cells": 3.0, "wangge/postgis_cell_parts": None}
    for key, value in r["speed_ratio"].items():
        goal = targets[key]
        verdict = "" if goal is None else f" (target ≥ {goal:.1f}: {'met' if value >= goal else 'NOT met'})"
        console.print(f"  speed ratio {key}: {value:.2f}{verdict}")


# -- servers, databases, machine ---------------------------------------------------------------------------------
@contextlib.contextmanager
def server(url: str | None) -> Iterator[str]:
    """The URL of a PostGIS server's maintenance database: the given server's, or a throw-away cluster's."""
    if url:
        yield make_url(url).set(database="postgres").render_as_string(hide_password=False)
        return
    tmp = Path(tempfile.mkdtemp(prefix="wangge-bench-"))
    tmp.chmod(0o755)  # as root the cluster runs as the postgres user, which must reach it
    cluster = Cluster(tmp / "pgdata", fast=True)
    try:
        with step("start an embedded PostgreSQL cluster"):
            started = cluster.start()
        yield make_url(started).set(database="postgres").render_as_string(hide_password=False)
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if not cluster.pgdata.is_relative_to(tmp):  # Cluster moved it to where postgres can reach it
            shutil.rmtree(cluster.pgdata.parent, ignore_errors=True)


def recreate(admin_url: str, name: str, drop_only: bool = False) -> str:
    with pg_connect(admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def machine(url: str) -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    with pg_connect(url) as conn:
        pg, postgis, workers, jit = conn.execute(
            """SELECT current_setting('server_version'), postgis_lib_version() || ' (GEOS ' || postgis_geos_version()
                      || ')', current_setting('max_parallel_workers_per_gather'), current_setting('jit')"""
        ).fetchone() or ("?",) * 4
    return {"cores": os.cpu_count(), "cpu": cpu, "load_average": round(os.getloadavg()[0], 2),
            "platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
            "shapely": shapely.__version__, "geos": shapely.geos_version_string, "postgresql": pg, "postgis": postgis,
            "max_parallel_workers_per_gather": workers, "jit": jit}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--cells", type=int, default=100_000, help="cells of the generated grid (100 per village)")
    ap.add_argument("--only", choices=("demo", "grid"))
    ap.add_argument("--repeat", type=int, default=3, help="runs per method; the best counts")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--database-url", help="a PostGIS server to use instead of a throw-away cluster")
    args = ap.parse_args(argv)
    url = given_url(args)
    out: dict[str, Any] = {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                           "args": {k: v for k, v in vars(args).items() if k != "database_url"}, "grids": {}}
    with server(url) as admin_url:
        for name in [args.only] if args.only else ["demo", "grid"]:
            dbname = f"wangge_bench_{name}"
            db_url = recreate(admin_url, dbname)
            try:
                db.upgrade(db.engine_for(db_url))
                out.setdefault("machine", machine(db_url))
                if name == "demo":
                    if not (DEMO / "cells.geojson").exists():
                        sys.exit(f"the demo package is missing: {DEMO}/cells.geojson")
                    source: Path | Package = DEMO
                else:
                    with step(f"[grid] generate {args.cells:,} cells") as t:
                        source = make_grid(args.cells, args.seed)
                    out["grid_generate_s"] = t["s"]
                out["grids"][name] = bench(name, db_url, source, args.points, args.repeat, args.seed)
            finally:
                db.engine_for(db_url).dispose()
                recreate(admin_url, dbname, drop_only=True)
    for name, r in out["grids"].items():
        show(name, r)
    write_results(out, RESULTS)
    return 0


def given_url(args: Any) -> str | None:
    """The PostGIS server a bench script was pointed at (--database-url, else WANGGE_DATABASE_URL), or None for a
    throw-away cluster (see server)."""
    return DatabaseSettings(database_url=args.database_url or os.environ.get("WANGGE_DATABASE_URL")).database_url


def run_record(args: Any, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """The head of a run's results: when, at which commit (+modified for a dirty tree), with which arguments (not
    the database URL, nor `leave_out`). Shared by the bench scripts."""
    git = [subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
           for a in (["rev-parse", "--short", "HEAD"], ["status", "--porcelain", "--untracked-files=no"])]
    return {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "commit": git[0] + ("+modified" if git[1] else ""),
            "args": {k: v for k, v in vars(args).items() if k not in ("database_url", *leave_out)}}


def write_results(out: dict[str, Any], path: Path, prefix: str = "") -> None:
    """Print the machine line and keep the run's figures as JSON (shared by the bench scripts)."""
    machine_info = "; ".join(f"{k} {v}" for k, v in out["machine"].items())
    console.print(textwrap.fill(f"{prefix}machine: {machine_info}", 110, subsequent_indent=" " * 9))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    console.print(f"results written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
