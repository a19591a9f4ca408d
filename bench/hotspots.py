"""Benchmark: the hotspot analytics (gis/hotspots.py) on 1,000,000 synthetic events, against an anchor measured in
the same run.

Events are written with one INSERT … SELECT (ST_GeneratePoints in every live cell of the demo township, 5 % of them
in 20 tight clusters so that hot spots and recurring places exist, received_at spread over 2026 and written in time
order as intake writes them, categories and statuses drawn from the taxonomy). Each function runs on a 30-day
window (the district, no filter), best of --repeat runs after one warm-up call (which fills the study-area
caches); the anchor is the plainest aggregation a dashboard could do instead:
`SELECT village_code, count(*) FROM events WHERE received_at in the window GROUP BY village_code`.
Target (the brief): every call < 1 s.

    .venv/bin/python bench/hotspots.py                      # 1,000,000 events
    .venv/bin/python bench/hotspots.py --events 100000 --indexes   # also with the suggested indexes

Without --database-url a throw-away embedded cluster (fsync off), as in bench/locate.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from locate import console, given_url, machine, recreate, server, step, write_results  # bench/locate.py
from rich.table import Table
from sqlalchemy import Engine, text

from gis import db, hotspots
from gis.intake import TZ
from gis.store import load_package
from gis.taxonomy import load_taxonomy

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "boundaries" / "demo-j-town"
RESULTS = ROOT / "bench" / "results" / "hotspots.json"
SEED = 20261128
WINDOW = (dt.datetime(2026, 6, 1, tzinfo=TZ), dt.datetime(2026, 7, 1, tzinfo=TZ))
# Suggested indexes (not in a migration: measured here with --indexes).
INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_events_received ON events (received_at)",
    "CREATE INDEX IF NOT EXISTS ix_events_closed_at ON events (closed_at) WHERE status = 'closed'",
)


def synthesize(engine: Engine, n: int, seed: int = SEED) -> int:
    """Write about n synthetic events into the demo township's live cells; returns how many were written."""
    tax = load_taxonomy()
    cats = sorted(tax.categories)
    plats = [tax.categories[c].platform_in(tax.platform_set().name) for c in cats]
    with engine.begin() as conn:
        ncells = conn.execute(text("SELECT count(*) FROM cells WHERE valid_to IS NULL")).scalar_one()
        per_cell = max(1, round(n * 0.95 / ncells))
        conn.execute(text("SELECT setseed(:s)"), {"s": (seed % 1000) / 1000})
        conn.execute(text("""
            CREATE TEMP TABLE pts ON COMMIT DROP AS
            SELECT c.code AS cell_code, c.name AS cell_name, v.code AS village_code, t.code AS township_code,
                   d.code AS district_code, (ST_Dump(ST_GeneratePoints(c.geom, :k, :seed))).geom AS geom
            FROM cells c JOIN jurisdictions v ON v.id = c.village_id JOIN jurisdictions t ON t.id = v.parent_id
            JOIN jurisdictions d ON d.id = t.parent_id WHERE c.valid_to IS NULL"""), {"k": per_cell, "seed": seed})
        # Clusters: 5 % of the events within ~30 m of 20 cell centres (one category each).
        conn.execute(text("""
            INSERT INTO pts SELECT p.cell_code, p.cell_name, p.village_code, p.township_code, p.district_code,
                   ST_SetSRID(ST_MakePoint(ST_X(p.geom) + (random() - 0.5) * 0.0006,
                                           ST_Y(p.geom) + (random() - 0.5) * 0.0006), 4490)
            FROM (SELECT * FROM (SELECT DISTINCT ON (cell_code) * FROM pts ORDER BY cell_code, ST_X(geom)) c
                  ORDER BY md5(cell_code) LIMIT 20) p, generate_series(1, :m)"""),
            {"m": max(1, round(n * 0.05 / 20))})
        written = conn.execute(text("""
            INSERT INTO events (source, category, grade, platform, status, level, located_by, cell_code, cell_name,
                                village_code, township_code, district_code, geom, occurred_at, received_at,
                                last_report_at, updated_at, deadline, closed_at, overdue)
            SELECT 'grid_worker', (CAST(:cats AS text[]))[x.c], 1, (CAST(:plats AS text[]))[x.c], x.status,
                   'village', 'point', p.cell_code, p.cell_name, p.village_code, p.township_code, p.district_code,
                   p.geom, x.t, x.t, x.t, x.t,
                   x.t + interval '3 days', CASE WHEN x.status = 'closed' THEN x.t + x.h * interval '1 hour' END,
                   x.status <> 'closed' AND x.t + interval '3 days' < timestamptz '2026-12-31'
            FROM pts p CROSS JOIN LATERAL (
                SELECT 1 + floor(random() * array_length(CAST(:cats AS text[]), 1))::int AS c,
                       CASE WHEN random() < 0.9 THEN 'closed' WHEN random() < 0.5 THEN 'in_progress'
                            ELSE 'accepted' END AS status,
                       timestamptz '2026-01-01 00:00+08' + random() * interval '365 days' AS t,
                       1 + random() * 100 AS h, p.geom AS g) x
            ORDER BY x.t"""), {"cats": cats, "plats": plats}).rowcount
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE events"))
    return int(written)


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def measure(engine: Engine, repeat: int) -> dict[str, Any]:
    start, end = WINDOW

    def anchor() -> Any:
        with engine.connect() as conn:
            return conn.execute(text("SELECT village_code, count(*) FROM events WHERE received_at >= :s "
                                     "AND received_at < :e GROUP BY village_code"), {"s": start, "e": end}).all()

    calls: dict[str, Callable[[], Any]] = {
        "anchor: SELECT village_code, count(*) … GROUP BY": anchor,
        "village_stats": lambda: hotspots.village_stats(engine, start, end, now=end),
        "hex_density (250 m)": lambda: hotspots.hex_density(engine, start, end),
        "cell_density": lambda: hotspots.cell_density(engine, start, end),
        "getis_ord hex (250 m, 999 permutations)": lambda: hotspots.getis_ord(engine, start, end, unit="hex"),
        "getis_ord cell (999 permutations)": lambda: hotspots.getis_ord(engine, start, end, unit="cell"),
        "recurring_places (50 m, ≥ 3)": lambda: hotspots.recurring_places(engine, start, end),
    }
    out: dict[str, Any] = {}
    anchor_s = None
    for name, fn in calls.items():
        fn()  # warm: caches of the study area, plans, buffers
        s, result = best_of(fn, repeat)
        anchor_s = anchor_s or s
        size = len(result["features"]) if isinstance(result, dict) else len(result)
        out[name] = {"s": round(s, 4), "ratio_to_anchor": round(s / anchor_s, 2), "items": size}
    with engine.connect() as conn:
        out["window_events"] = conn.execute(text("SELECT count(*) FROM events WHERE received_at >= :s "
                                                 "AND received_at < :e"), {"s": start, "e": end}).scalar_one()
    return out


def show(title: str, r: dict[str, Any]) -> None:
    t = Table(title=f"{title} ({r['window_events']:,} events in the 30-day window)")
    for col in ("call", "best s", "÷ anchor", "items", "< 1 s"):
        t.add_column(col, justify="left" if col == "call" else "right")
    for name, v in r.items():
        if isinstance(v, dict):
            t.add_row(name, f"{v['s']:.3f}", f"{v['ratio_to_anchor']:.1f}", f"{v['items']:,}",
                      "" if name.startswith("anchor") else ("yes" if v["s"] < 1 else "NO"))
    console.print(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--indexes", action="store_true", help="measure again with the suggested indexes")
    ap.add_argument("--database-url", help="a PostGIS server to use instead of a throw-away cluster")
    args = ap.parse_args(argv)
    url = given_url(args)
    out: dict[str, Any] = {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                           "args": {k: v for k, v in vars(args).items() if k != "database_url"}}
    with server(url) as admin_url:
        db_url = recreate(admin_url, "wangge_bench_hotspots")
        try:
            engine = db.engine_for(db_url)
            db.upgrade(engine)
            out["machine"] = machine(db_url)
            load_package(engine, DEMO, valid_from=dt.date(2017, 1, 1))
            with step(f"write {args.events:,} synthetic events (INSERT … SELECT)"):
                out["events"] = synthesize(engine, args.events)
            out["without_indexes"] = measure(engine, args.repeat)
            show("schema as migrated", out["without_indexes"])
            if args.indexes:
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    for ddl in INDEXES:
                        conn.execute(text(ddl))
                    conn.execute(text("ANALYZE events"))
                out["with_indexes"] = measure(engine, args.repeat)
                out["indexes"] = list(INDEXES)
                show("with " + "; ".join(INDEXES), out["with_indexes"])
            engine.dispose()
        finally:
            recreate(admin_url, "wangge_bench_hotspots", drop_only=True)
    write_results(out, RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
