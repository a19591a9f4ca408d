"""Benchmark: paging through the events of OGC API – Features (/ogc) as GDAL and QGIS do, over 1,000,000 events.

setup   the demo township is loaded and --events synthetic events inserted as in bench/publish.py (one INSERT …
        SELECT over generate_series, points inside the cells, received over the past year); then ANALYZE.
walk    the app under uvicorn (a subprocess, as in bench/ingest.py); every event read in pages of --limit over HTTP:
        wangge follows the next links (which page by key: `after` the last feature's id); the anchor, measured in
        the same run against the same server, asks for the same pages by `offset` (how the links paged before, and
        what a client paging by number still gets). Reported: the whole walk, and the last page alone.
Target: none in an issue; the walk by key should not grow with the depth of the page (the OFFSET walk does).

    .venv/bin/python bench/ogc.py                      # 1,000,000 events, pages of 10,000
    .venv/bin/python bench/ogc.py --events 100000 --limit 1000

Without --database-url a throw-away embedded cluster (fsync off), as in bench/locate.py; with one, the database
wangge_bench_ogc is created there and dropped. Results: a table, bench/results/ogc.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from ingest import http_server  # bench/ingest.py
from locate import console, given_url, run_record, server, step, write_results  # bench/locate.py
from publish import demo_with_events  # bench/publish.py
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "ogc.json"


def walk(client: httpx.Client, first: str, by: str, limit: int, total: int) -> dict[str, Any]:
    """Every page from `first`: by the next links ("key") or by offset; seconds in all and for the last page."""
    url, offset, pages, seen, last = first, 0, 0, 0, 0.0
    t0 = time.perf_counter()
    while True:
        t = time.perf_counter()
        got = client.get(url)
        last = time.perf_counter() - t
        if got.status_code != 200:
            raise SystemExit(f"GET {url}: HTTP {got.status_code}: {got.text[:300]}")
        page = got.json()
        pages += 1
        seen += page["numberReturned"]
        if by == "key":
            nxt = [link["href"] for link in page["links"] if link["rel"] == "next"]
            if not nxt:
                break
            url = nxt[0]
        else:
            offset += limit
            if offset >= page.get("numberMatched", total):  # (given on the first page only)
                break
            url = f"{first}&offset={offset}"
    if seen != total:
        raise SystemExit(f"the walk by {by} read {seen:,} events of {total:,}")
    return {"pages": pages, "events": seen, "seconds": time.perf_counter() - t0, "last_page_s": last}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--limit", type=int, default=10_000)
    ap.add_argument("--database-url", help="a PostGIS server to use instead of a throw-away cluster")
    args = ap.parse_args(argv)
    url = given_url(args)
    out: dict[str, Any] = run_record(args)
    with server(url) as admin_url, tempfile.TemporaryDirectory(prefix="wangge-ogc-") as tmp, \
            demo_with_events(admin_url, "wangge_bench_ogc", args.events, 0.08, out) as (db_url, _):
        n = out["setup"]["events"]
        with http_server("wangge", db_url, Path(tmp) / "ogc.log") as port, httpx.Client(timeout=600) as client:
            first = f"http://127.0.0.1:{port}/ogc/collections/events/items?limit={args.limit}"
            client.get(first).raise_for_status()  # warm
            with step(f"walk {n:,} events by the next links (by key), pages of {args.limit:,}"):
                out["key"] = walk(client, first, "key", args.limit, n)
            with step(f"walk {n:,} events by offset, pages of {args.limit:,}"):
                out["offset"] = walk(client, first, "offset", args.limit, n)
    k, o = out["key"], out["offset"]
    out["ratio_walk"] = o["seconds"] / k["seconds"]
    out["ratio_last_page"] = o["last_page_s"] / k["last_page_s"]
    table = Table(title=f"OGC API – Features: every event of {out['setup']['events']:,}, pages of {args.limit:,}")
    for col in ("walk", "pages", "seconds", "last page", "anchor (by offset)", "speed-up"):
        table.add_column(col)
    table.add_row("next links (by key)", f"{k['pages']}", f"{k['seconds']:.1f} s", f"{k['last_page_s'] * 1000:.0f} ms",
                  f"{o['seconds']:.1f} s, last page {o['last_page_s'] * 1000:.0f} ms",
                  f"{out['ratio_walk']:.1f}× (last page {out['ratio_last_page']:.1f}×)")
    console.print(table)
    write_results(out, RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
