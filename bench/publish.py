"""Benchmark: publishing a redrawn village over a database of 1,000,000 events, and validating a 200-cell draft.

setup     the demo township (215 cells) is loaded; --events synthetic events are inserted with one INSERT … SELECT
          over generate_series: round-robin over the cells, each at one of 64 points generated inside its cell
          (ST_GeneratePoints), received over the past year, a realistic share open (--open-share, default 8 %,
          spread over the open statuses), the rest closed or rejected; then ANALYZE.
publish   for each of the three villages with the most cells: a draft (gis.grid.create_draft), its largest cell
          split in two (the new piece gets a worker) and two neighbouring cells merged, then gis.grid.publish
          effective today — validation, cell rows, worker assignments, the reassignment of the village's open cases
          with one timeline entry each, all in one transaction — timed. Target (issue 5): ≤ 5 s.
          Anchor, measured in the same run just before: a plain UPDATE of the same rows (the village's open cases,
          `SET worker_id = worker_id`), in a transaction rolled back.
validate  gis.grid.validate_draft of a draft of township 330212101 (200 cells), best of --repeat. Target: ≤ 1 s.
          Anchor: gis.validate.validate of the whole demo package (215 cells, 75 jurisdictions), read beforehand.
Also reported: the preview of the redrawn village's draft (per-cell events of 90 days and open cases).

    .venv/bin/python bench/publish.py                      # 1,000,000 events
    .venv/bin/python bench/publish.py --events 100000

Without --database-url a throw-away embedded cluster (fsync off), as in bench/locate.py; with one, the database
wangge_bench_publish is created there and dropped. Results: a table, bench/results/publish.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import shapely
from locate import (  # bench/locate.py
    DEMO,
    console,
    given_url,
    machine,
    recreate,
    run_record,
    server,
    step,
    write_results,
)
from rich.table import Table
from sqlalchemy import Engine, text

from gis import db, grid
from gis.package import read_package
from gis.store import load_package
from gis.validate import validate
from gis.workflow import OPEN_SQL, OPEN_STATUSES, Actor

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "publish.json"
PLANNER = Actor("bench", "admin", "330212000000")
TOWNSHIP = "330212101000"


def insert_events(engine: Engine, n: int, open_share: float) -> dict[str, Any]:
    opens = "ARRAY[" + ", ".join(f"'{s}'" for s in OPEN_STATUSES if s != "needs_location") + "]"
    with engine.begin() as conn:
        conn.execute(text("""
            CREATE TEMP TABLE bench_cells ON COMMIT DROP AS
            SELECT row_number() OVER (ORDER BY c.code) - 1 AS k, c.code, c.name, v.code AS village, t.code AS town,
                   d.code AS district, a.worker_id, w.name AS worker_name, c.geom
            FROM cells c JOIN jurisdictions v ON v.id = c.village_id JOIN jurisdictions t ON t.id = v.parent_id
            JOIN jurisdictions d ON d.id = t.parent_id
            LEFT JOIN worker_assignments a ON a.cell_id = c.id AND a.role = 'grid_worker'
            LEFT JOIN workers w ON w.id = a.worker_id
            WHERE c.valid_to IS NULL"""))
        ncells = conn.execute(text("SELECT count(*) FROM bench_cells")).scalar_one()
        conn.execute(text("""
            CREATE TEMP TABLE bench_points ON COMMIT DROP AS
            SELECT c.k, row_number() OVER (PARTITION BY c.k) - 1 AS j, p.geom
            FROM bench_cells c, LATERAL ST_Dump(ST_GeneratePoints(c.geom, 64, 7)) p;
            CREATE INDEX ON bench_points (k, j)"""))
        t0 = time.perf_counter()
        conn.execute(text(f"""
            INSERT INTO events (source, category, grade, platform, status, level, geom, located_by, cell_code,
                                cell_name, worker_id, worker_name, village_code, township_code, district_code,
                                occurred_at, received_at, last_report_at, deadline, closed_at, updated_at)
            SELECT 'grid_worker', 'sanitation', 2, 'services', s.status, 'village', p.geom, 'point', c.code, c.name,
                   c.worker_id, c.worker_name, c.village, c.town, c.district, s.at, s.at, s.at,
                   s.at + interval '1 day', CASE WHEN s.status = 'closed' THEN s.at + interval '20 hours' END, s.at
            FROM generate_series(0, :n - 1) g(i)
            CROSS JOIN LATERAL (SELECT
                CASE WHEN (hashint4(g.i) & 1023) < :open_cut THEN ({opens})[1 + (g.i / 7) % 6]
                     WHEN g.i % 20 = 0 THEN 'rejected' ELSE 'closed' END AS status,
                now() - (g.i % 525600) * interval '1 minute' AS at) s
            JOIN bench_cells c ON c.k = g.i % :ncells
            JOIN bench_points p ON p.k = c.k AND p.j = (g.i / :ncells) % 64"""),
            {"n": n, "ncells": ncells, "open_cut": int(open_share * 1024)})
        insert_s = time.perf_counter() - t0
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE events"))
        total, opened = conn.execute(text(f"""SELECT count(*), count(*) FILTER (WHERE status IN {OPEN_SQL})
                                              FROM events""")).one()
    return {"events": total, "open": opened, "insert_s": round(insert_s, 2)}


@contextlib.contextmanager
def demo_with_events(admin_url: str, name: str, events: int, open_share: float, out: dict[str, Any]
                     ) -> Iterator[tuple[str, Engine]]:
    """A database `name` with the demo township and `events` synthetic events (its URL and engine); dropped after.
    Sets out["machine"] and out["setup"]. Shared with bench/ogc.py."""
    db_url = recreate(admin_url, name)
    engine = db.engine_for(db_url)
    try:
        db.upgrade(engine)
        out["machine"] = machine(db_url)
        with step("load the demo township"):
            load_package(engine, DEMO, valid_from=dt.date(2017, 1, 1))
        with step(f"insert {events:,} events"):
            out["setup"] = insert_events(engine, events, open_share)
        yield db_url, engine
    finally:
        engine.dispose()
        recreate(admin_url, name, drop_only=True)


def redraw(engine: Engine, village: str) -> int:
    """A draft of the village with its largest cell split and two neighbouring cells merged."""
    d = grid.create_draft(engine, PLANNER, village, "bench redraw")
    cells = {f["id"]: shapely.geometry.shape(f["geometry"]) for f in d["cells"]["features"]}
    big = max(cells, key=lambda c: cells[c].area)
    g = cells[big]
    x = shapely.point_on_surface(g).x
    line = {"type": "LineString", "coordinates": [[x, g.bounds[1] - 0.001], [x, g.bounds[3] + 0.001]]}
    codes = grid.split_cell(engine, PLANNER, d["id"], big, line)
    worker = next(f["properties"]["worker_id"] for f in d["cells"]["features"] if f["id"] == big)
    now = grid.get_draft(engine, PLANNER, d["id"])
    piece = next(f for f in now["cells"]["features"] if f["id"] == codes[1])
    grid.put_cell(engine, PLANNER, d["id"], codes[1], piece["geometry"], {"worker_id": worker})
    others = {f["id"]: shapely.geometry.shape(f["geometry"]) for f in now["cells"]["features"]
              if f["id"] not in codes}
    pairs = sorted(((shapely.intersection(others[a].buffer(1e-6), others[b]).area, a, b)
                    for a in others for b in others if a < b), reverse=True)
    if pairs and pairs[0][0] > 0:
        grid.merge_cells(engine, PLANNER, d["id"], [pairs[0][1], pairs[0][2]])
    return int(d["id"])


def bench_publish(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        villages = conn.execute(text("""
            SELECT v.code, count(*) AS cells FROM cells c JOIN jurisdictions v ON v.id = c.village_id
            WHERE c.valid_to IS NULL GROUP BY v.code ORDER BY count(*) DESC, v.code LIMIT 3""")).all()
    out = []
    for v in villages:
        draft_id = redraw(engine, v.code)
        with engine.connect() as conn:
            opened = conn.execute(text(f"SELECT count(*) FROM events WHERE village_code = :v AND status IN {OPEN_SQL}"),
                                  {"v": v.code}).scalar_one()
        t0 = time.perf_counter()
        pv = grid.preview(engine, PLANNER, draft_id)
        preview_s = time.perf_counter() - t0
        with engine.connect() as conn:
            t0 = time.perf_counter()
            conn.execute(text(f"UPDATE events SET worker_id = worker_id WHERE village_code = :v "
                              f"AND status IN {OPEN_SQL}"), {"v": v.code})
            anchor_s = time.perf_counter() - t0
            conn.rollback()
        t0 = time.perf_counter()
        r = grid.publish(engine, PLANNER, draft_id, dt.date.today())
        publish_s = time.perf_counter() - t0
        console.log(f"village {v.code}: {v.cells} cells, {opened:,} open cases; publish {publish_s:.2f} s "
                    f"(reassigned {r['reassigned_cases']:,}), plain UPDATE {anchor_s:.3f} s, preview {preview_s:.2f} s")
        out.append({"village": v.code, "cells": v.cells, "open_cases": opened, "summary": r["summary"],
                    "reassigned": r["reassigned_cases"], "moving_in_preview": pv["summary"]["moving_cases"],
                    "publish_s": round(publish_s, 3), "anchor_update_s": round(anchor_s, 4),
                    "preview_s": round(preview_s, 3), "ratio": round(publish_s / anchor_s, 1)})
    return out


def bench_validate(engine: Engine, repeat: int) -> dict[str, Any]:
    d = grid.create_draft(engine, PLANNER, TOWNSHIP, "bench validation")
    n = len(d["cells"]["features"])
    best = float("inf")
    result: dict[str, Any] = {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = grid.validate_draft(engine, PLANNER, d["id"])
        best = min(best, time.perf_counter() - t0)
    pkg = read_package(DEMO)
    anchor = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        validate(pkg)
        anchor = min(anchor, time.perf_counter() - t0)
    console.log(f"validate a {n}-cell draft: {best:.3f} s ({result['errors']} errors); package validation of the "
                f"demo: {anchor:.3f} s")
    return {"cells": n, "validate_s": round(best, 3), "errors": result["errors"], "anchor_package_validate_s":
            round(anchor, 3), "ratio": round(best / anchor, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--open-share", type=float, default=0.08)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--database-url", help="a PostGIS server to use instead of a throw-away cluster")
    args = ap.parse_args(argv)
    url = given_url(args)
    out: dict[str, Any] = run_record(args)
    with server(url) as admin_url, demo_with_events(admin_url, "wangge_bench_publish", args.events, args.open_share,
                                                    out) as (_, engine):
        out["validate"] = bench_validate(engine, args.repeat)
        out["publish"] = bench_publish(engine)
    s = out["setup"]
    table = Table(title=f"grid versions over {s['events']:,} events ({s['open']:,} open)")
    for col in ("what", "wangge", "anchor", "ratio", "target"):
        table.add_column(col)
    for p in out["publish"]:
        table.add_row(f"publish village {p['village']} ({p['cells']} cells → split + merge; {p['open_cases']:,} "
                      f"open cases, {p['reassigned']:,} reassigned)", f"{p['publish_s']:.2f} s",
                      f"plain UPDATE of the open cases: {p['anchor_update_s']:.3f} s", f"{p['ratio']:.1f}×", "≤ 5 s")
    v = out["validate"]
    table.add_row(f"validate a {v['cells']}-cell draft", f"{v['validate_s']:.3f} s",
                  f"package validation of the demo: {v['anchor_package_validate_s']:.3f} s", f"{v['ratio']:.2f}×",
                  "≤ 1 s")
    console.print(table)
    write_results(out, RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
