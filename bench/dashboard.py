"""Benchmark: the command-centre wall with 1,000,000 events in the database, measured in headless Chromium.

cold load  a fresh browser context (empty cache) logged in by cookie opens /dashboard/wall; "fully drawn" is the
           moment the village choropleth (one SVG path per village), the KPI tiles and the ticker are all in the
           page (performance.now() from navigation start). Best and median of --loads runs, each after a change
           notification so that the server computes the wall's figures afresh (no figures shared with the load
           before); one load before them is not counted (the server process's first page sets Dash up).
payload    bytes received by the browser for that cold load (CDP Network.loadingFinished encodedDataLength: compressed
           bodies plus headers), scripts, layout, callbacks and the open live feed included.
live       --live events POSTed one after another to /api/v1/events (each in its own cell, so none merges); the time
           from sending the POST to the case appearing in the wall's ticker, p50/p95.
server     the dashboard's aggregate queries alone at this size (village stats, today's figures, the ticker).
Targets (issue 4): fully drawn ≤ 1.5 s, payload ≤ 1 MB, ingest → visible p95 ≤ 1 s.

    .venv/bin/python bench/dashboard.py                  # 1,000,000 events
    .venv/bin/python bench/dashboard.py --events 100000 --live 30

The events are inserted in PostGIS with one INSERT … SELECT over generate_series (not through the API), spread over
every live cell of the demo district, received over the last 365 days (most closed, some open, some overdue).
Without --database-url a throw-away embedded cluster (fsync off), as in bench/locate.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# This file is bench/dashboard.py: with bench/ first on sys.path, `import dashboard` would find it instead of the
# dashboard package. bench/ goes last (for locate.py), the project first.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"] + [str(ROOT / "bench")]


import httpx  # noqa: E402
from ingest import http_server  # noqa: E402  (bench/ingest.py: the app under uvicorn in a subprocess)
from locate import console, given_url, machine, recreate, run_record, server, step, write_results  # noqa: E402
from playwright.sync_api import Browser, sync_playwright  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import text  # noqa: E402

from dashboard import data  # noqa: E402
from gis import accounts, db  # noqa: E402
from gis.eventlog import CHANNEL  # noqa: E402
from gis.intake import TZ  # noqa: E402
from gis.store import load_package  # noqa: E402
from gis.taxonomy import load_taxonomy  # noqa: E402
from gis.workflow import Actor  # noqa: E402
from tests.browser import launch  # noqa: E402

DEMO = ROOT / "data" / "boundaries" / "demo-j-town"
RESULTS = ROOT / "bench" / "results" / "dashboard.json"
TOWN, PASSWORD = "330212101000", "bench-centre-pw"
TARGETS = {"fully_drawn_s": 1.5, "payload_bytes": 1_000_000, "live_p95_s": 1.0}
DRAWN = """() => document.querySelector('#wall-ready') !== null
    && document.querySelectorAll('.leaflet-overlay-pane path').length >= %d
    && document.querySelectorAll('#ticker li.tick').length > 0
    && document.querySelectorAll('#kpis .kpi').length === 5"""


def fill(url: str, n: int, seed: int) -> dict[str, Any]:
    """n synthetic events over every live cell, with the codes, worker and times intake would have recorded."""
    tax = load_taxonomy()
    pset = tax.platform_set()
    cats = [(c.code, c.platform_in(pset.name), c.default_grade) for c in tax.categories.values()]
    values = ", ".join(f"({i}, '{code}', '{platform}', {grade})" for i, (code, platform, grade) in enumerate(cats))
    engine = db.engine_for(url)
    with engine.begin() as conn:
        conn.execute(text("SELECT setseed(:s)"), {"s": (seed % 1000) / 1000})
        conn.execute(text(f"CREATE TEMP TABLE cats (i int, code text, platform text, grade int) ON COMMIT DROP;"
                          f"INSERT INTO cats VALUES {values}"))
        conn.execute(text("""
            CREATE TEMP TABLE spots ON COMMIT DROP AS
            SELECT (row_number() OVER (ORDER BY c.code) - 1)::int AS i, c.code, c.name, v.code AS village,
                   t.code AS township, d.code AS district, w.id AS worker_id, w.name AS worker_name,
                   ST_PointOnSurface(c.geom) AS g
            FROM cells c JOIN jurisdictions v ON v.id = c.village_id JOIN jurisdictions t ON t.id = v.parent_id
            JOIN jurisdictions d ON d.id = t.parent_id
            LEFT JOIN LATERAL (SELECT wk.id, wk.name FROM worker_assignments a JOIN workers wk ON wk.id = a.worker_id
                               WHERE a.cell_id = c.id AND a.role = 'grid_worker' AND a.valid_to IS NULL
                               ORDER BY wk.id LIMIT 1) w ON true
            WHERE c.valid_to IS NULL"""))
        n_spots = conn.execute(text("SELECT count(*) FROM spots")).scalar_one()
        conn.execute(text("""
            INSERT INTO events (source, category, grade, platform, status, level, unit_code, geom, located_by,
                                cell_code, cell_name, worker_id, worker_name, village_code, township_code,
                                district_code, occurred_at, received_at, last_report_at, deadline, closed_at,
                                updated_at, overdue, description)
            SELECT 'grid_worker', k.code, k.grade, k.platform, r.status, 'village', NULL,
                   ST_Translate(p.g, (random() - 0.5) * 0.0004, (random() - 0.5) * 0.0004), 'point',
                   p.code, p.name, p.worker_id, p.worker_name, p.village, p.township, p.district,
                   r.received_at, r.received_at, r.received_at, r.received_at + interval '72 hours',
                   CASE WHEN r.status = 'closed' THEN r.received_at + make_interval(hours => 1 + (r.u * 100)::int) END,
                   r.received_at, r.status <> 'closed' AND r.received_at < now() - interval '72 hours', 'bench'
            FROM (SELECT s, now() - (random() ^ 2) * interval '365 days' AS received_at, random() AS u,
                         random() AS v FROM generate_series(1, :n) s) q
            CROSS JOIN LATERAL (SELECT q.received_at, q.u,
                   CASE WHEN q.v < 0.90 THEN 'closed' WHEN q.v < 0.94 THEN 'in_progress'
                        WHEN q.v < 0.97 THEN 'dispatched' ELSE 'reported' END AS status) r
            JOIN spots p ON p.i = q.s % :spots
            JOIN cats k ON k.i = (q.s::bigint * 7919) % :cats"""), {"n": n, "spots": n_spots, "cats": len(cats)})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE events"))
        stats = conn.execute(text("""SELECT count(*) AS n, count(*) FILTER (WHERE status <> 'closed') AS open,
                                            count(DISTINCT village_code) AS villages,
                                            count(DISTINCT cell_code) AS cells,
                                            pg_total_relation_size('events') AS bytes FROM events""")).one()
    return dict(stats._mapping)


def prepare(admin_url: str, n: int, seed: int) -> tuple[str, dict[str, Any]]:
    url = recreate(admin_url, "wangge_bench_dashboard")
    engine = db.engine_for(url)
    db.upgrade(engine)
    load_package(engine, DEMO, valid_from=dt.date(2017, 1, 1))
    accounts.create_user(engine, "centre", PASSWORD, "command_centre", TOWN)
    with step(f"insert {n:,} events (INSERT … SELECT generate_series) and VACUUM ANALYZE"):
        filled = fill(url, n, seed)
    return url, filled


def server_side(url: str, repeat: int = 3) -> dict[str, float]:
    """The wall's aggregate queries alone, best of `repeat` (seconds)."""
    engine = db.engine_for(url)
    actor = Actor("centre", "command_centre", TOWN)
    now = dt.datetime.now(TZ)
    day = data.local_midnight(now)
    calls = {"wall_figures": lambda: data.wall_figures(engine, actor),
             "village_stats_30d": lambda: data.village_stats(engine, actor, day - dt.timedelta(days=29),
                                                             day + dt.timedelta(days=1)),
             "ticker": lambda: data.latest_events(engine, actor, 10)}
    out = {}
    for name, fn in calls.items():
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = min(times)
    return out


def forget_figures(url: str) -> None:
    """A change notification, as a committed case sends: the server's shared wall figures are stale after it, so the
    next load computes them afresh (dashboard.snapshot)."""
    with db.engine_for(url).connect() as conn:
        conn.execute(text("SELECT pg_notify(:channel, '{\"ids\": []}')"), {"channel": CHANNEL})
        conn.commit()
    time.sleep(0.3)  # the server's listener has it


def session_cookie(base: str) -> dict[str, Any]:
    r = httpx.post(f"{base}/dashboard/login", data={"username": "centre", "password": PASSWORD})
    value = r.cookies.get("wangge_session")
    if not value:
        sys.exit(f"login failed: HTTP {r.status_code}")
    return {"name": "wangge_session", "value": value, "url": base}


def villages_in_scope(url: str) -> int:
    with db.engine_for(url).connect() as conn:
        return int(conn.execute(text("""SELECT count(*) FROM jurisdictions v WHERE v.level = 'village' AND
                                        v.parent_id = (SELECT id FROM jurisdictions WHERE code = :t)"""),
                                {"t": TOWN}).scalar_one())


def cold_load(browser: Browser, base: str, cookie: dict[str, Any], villages: int) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    context.add_cookies([cookie])  # type: ignore[list-item]
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    received: dict[str, float] = {}
    cdp.on("Network.loadingFinished", lambda e: received.__setitem__(e["requestId"], e["encodedDataLength"]))
    cdp.on("Network.dataReceived",  # the never-ending live feed never finishes loading
           lambda e: received.__setitem__("feed-" + e["requestId"],
                                          received.get("feed-" + e["requestId"], 0) + e["encodedDataLength"]))
    page.goto(f"{base}/dashboard/wall", wait_until="commit")
    try:
        page.wait_for_function(DRAWN % villages, timeout=60_000, polling="raf")
    except Exception:
        page.screenshot(path=str(ROOT / "artifacts" / "bench-wall-timeout.png"))
        console.print(page.evaluate("""() => [document.location.href, document.querySelectorAll(
            '.leaflet-overlay-pane path').length, document.querySelectorAll('#ticker li.tick').length]"""))
        raise
    drawn = float(page.evaluate("performance.now()")) / 1000
    page.wait_for_timeout(1500)  # whatever the page still fetches after it is drawn counts as payload too
    finished = {k: v for k, v in received.items() if not k.startswith("feed-")}
    payload = sum(finished.values()) + sum(v for k, v in received.items()
                                           if k.startswith("feed-") and k[5:] not in finished)
    context.close()
    return {"fully_drawn_s": drawn, "payload_bytes": payload, "requests": len(finished)}


def screenshots(browser: Browser, base: str, cookie: dict[str, Any], folder: Path) -> None:
    """The wall and the hotspots page (30 days) over the benchmark's cases, for the README."""
    folder.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    context.add_cookies([cookie])  # type: ignore[list-item]
    page = context.new_page()
    page.goto(f"{base}/dashboard/wall", wait_until="load")  # the live feed never lets the network go idle
    page.wait_for_selector(".leaflet-overlay-pane path", timeout=60_000)
    page.wait_for_timeout(3000)
    page.screenshot(path=str(folder / "wall.png"))
    page.goto(f"{base}/dashboard/hotspots", wait_until="load")
    page.wait_for_function("document.querySelectorAll('#hot-ranking tr').length > 5", timeout=120_000)
    page.wait_for_timeout(3000)
    page.screenshot(path=str(folder / "hotspots.png"))
    context.close()


def live_latency(browser: Browser, base: str, cookie: dict[str, Any], url: str, n: int) -> list[float]:
    with db.engine_for(url).connect() as conn:
        # Away from the synthetic cases (around each cell's PointOnSurface), so that no report merges into one.
        spots = conn.execute(text("""
            SELECT ST_X(p), ST_Y(p) FROM (
                SELECT (ST_Dump(ST_GeneratePoints(ST_Difference(c.geom, ST_Buffer(ST_PointOnSurface(c.geom), 0.0012)),
                                                  1, 7))).geom AS p, c.code
                FROM cells c JOIN jurisdictions v ON v.id = c.village_id
                WHERE v.parent_id = (SELECT id FROM jurisdictions WHERE code = :t) AND c.valid_to IS NULL
                  AND NOT ST_IsEmpty(ST_Difference(c.geom, ST_Buffer(ST_PointOnSurface(c.geom), 0.0012)))) s
            ORDER BY code"""), {"t": TOWN}).all()
    token = httpx.post(f"{base}/api/v1/auth/token", data={"username": "centre", "password": PASSWORD}).json()[
        "access_token"]
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    context.add_cookies([cookie])  # type: ignore[list-item]
    page = context.new_page()
    page.goto(f"{base}/dashboard/wall")
    page.wait_for_selector("#ticker li.tick", timeout=60_000)
    page.wait_for_timeout(2000)  # the live feed is connected
    # When each case first appears in the ticker, by the browser's clock (the same machine clock as ours).
    page.evaluate("""() => { window.__seen = {}; new MutationObserver(() => {
        for (const li of document.querySelectorAll('#ticker [data-id]')) {
            if (!(li.dataset.id in window.__seen)) { window.__seen[li.dataset.id] = Date.now(); } } })
        .observe(document.body, {childList: true, subtree: true}); }""")
    out = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        for i in range(n):
            lon, lat = spots[i % len(spots)]
            t0 = time.time()
            r = client.post("/api/v1/events", json={"source": "hotline", "category": "noise", "lon": lon, "lat": lat,
                                                    "external_id": f"bench-live-{i}-{time.time_ns()}"})
            r.raise_for_status()
            if r.json().get("report_count", 1) != 1:
                sys.exit(f"report {i} merged into case {r.json()['id']}: not a new case")
            eid = str(r.json()["id"])
            page.wait_for_function(f"() => '{eid}' in window.__seen", timeout=30_000)
            out.append(float(page.evaluate(f"window.__seen['{eid}']")) / 1000 - t0)
            page.wait_for_timeout(150)
    context.close()
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--loads", type=int, default=5, help="cold loads of the wall")
    ap.add_argument("--live", type=int, default=100, help="events posted for the ingest → visible latency")
    ap.add_argument("--seed", type=int, default=20240226)
    ap.add_argument("--screenshots", type=Path, help="also save wall.png and hotspots.png into this folder")
    ap.add_argument("--database-url", help="a PostGIS server to use instead of a throw-away cluster")
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    url = given_url(args)
    out: dict[str, Any] = run_record(args, leave_out=("serve", "port", "screenshots"))
    with server(url) as admin_url, tempfile.TemporaryDirectory(prefix="wangge-dash-") as tmp:
        db_url, out["database"] = prepare(admin_url, args.events, args.seed)
        out["server_s"] = server_side(db_url)
        villages = villages_in_scope(db_url)
        # No supervision sweeps: the first sweep over a million synthetic cases that were never swept (100,000
        # open, most past their deadline) is a batch job of its own, not the wall's load.
        quiet = {"WANGGE_SUPERVISION_SECONDS": "0"}
        with http_server("wangge", db_url, Path(tmp) / "server.log", quiet) as port, sync_playwright() as pw:
            base = f"http://127.0.0.1:{port}"
            browser = launch(pw)
            cookie = session_cookie(base)
            with step(f"{args.loads} cold loads of the wall"):
                cold_load(browser, base, cookie, villages)  # not counted: the server process's first page
                loads = []
                for _ in range(args.loads):
                    forget_figures(db_url)
                    loads.append(cold_load(browser, base, cookie, villages))
            with step(f"{args.live} events posted → visible on the wall"):
                live = live_latency(browser, base, cookie, db_url, args.live)
            if args.screenshots:
                with step(f"screenshots into {args.screenshots}"):
                    screenshots(browser, base, cookie, args.screenshots)
            browser.close()
        out["machine"] = machine(db_url)
        recreate(admin_url, "wangge_bench_dashboard", drop_only=True)
    drawn = [x["fully_drawn_s"] for x in loads]
    out["cold_load"] = {"runs": loads, "fully_drawn_best_s": min(drawn),
                        "fully_drawn_median_s": statistics.median(drawn),
                        "payload_bytes": statistics.median(x["payload_bytes"] for x in loads)}
    out["live"] = {"n": len(live), "p50_s": pct(live, 0.5), "p95_s": pct(live, 0.95), "max_s": max(live)}
    out["targets"] = TARGETS
    t = Table(title=f"dashboard wall, {out['database']['n']:,} events")
    for col in ("measure", "value", "target", "met"):
        t.add_column(col)
    rows = [("fully drawn, median of cold loads", out["cold_load"]["fully_drawn_median_s"], "s", "fully_drawn_s"),
            ("fully drawn, best cold load", out["cold_load"]["fully_drawn_best_s"], "s", "fully_drawn_s"),
            ("payload of a cold load", out["cold_load"]["payload_bytes"], "B", "payload_bytes"),
            ("ingest → visible p50", out["live"]["p50_s"], "s", "live_p95_s"),
            ("ingest → visible p95", out["live"]["p95_s"], "s", "live_p95_s")]
    for label, value, unit, key in rows:
        shown = f"{value:,.0f} B" if unit == "B" else f"{value:.3f} s"
        goal = TARGETS[key]
        t.add_row(label, shown, f"≤ {goal:,}" + (" B" if unit == "B" else " s"), "yes" if value <= goal else "NO")
    for name, s in out["server_s"].items():
        t.add_row(f"server: {name}", f"{s:.3f} s", "", "")
    console.print(t)
    write_results(out, RESULTS, prefix=f"commit {out['commit']}; ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
