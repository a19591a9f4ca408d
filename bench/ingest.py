"""Benchmark: event intake through the real HTTP API, against anchors measured in the same run.

single  wrk -t2 -c32 POSTs one event per request to POST /api/v1/events (the app under uvicorn, one process), and to
        a bare FastAPI app (same uvicorn settings) whose async endpoint parses the body into the app's own EventIn
        and returns {"ok": true}: the HTTP ceiling. Each server runs in a subprocess: a 2 s warm-up, then --runs
        runs of --duration; the median run (by requests/s) is reported for each. Bodies vary
        (512 points in J镇's cells, SOURCE_MIX channels with their categories Zipf-weighted, unique external_ids,
        occurred_at spread over 2023). Stored reports must lie between the 2xx answers and the requests sent.
batch   --events events (time-ordered over 2023, uniform over J镇's cells, 1 % 2–10 km outside) in POSTs of 10,000
        to /api/v1/events/batch, against the same points COPY'd into an UNLOGGED table + INSERT … SELECT … JOIN cells
        ON ST_Intersects into a table LIKE events INCLUDING INDEXES (timed together; bodies and COPY text prebuilt).
        Per --loaders count (default 1 and 2) on a fresh database: that many clients, each posting its stretch of
        the year in order and asking for full answers; per --brief-loaders count (default 2) the same asking for
        brief ones (?answer=brief); wall time, the loaders' own work (counting the outcomes) included.
        --batch-runs rounds (default 3) of the anchor and each of these, interleaved; the median run of each is
        reported.
Targets (issue 3): single ≥ 0.5 × the ceiling's requests/s with p99 ≤ 25 ms; batch ≥ 1.0 × the plain INSERT.

    .venv/bin/python bench/ingest.py                   # full run: 3 × 20 s of wrk per server, 3 × 1,000,000 events
                                                       # per anchor and loaders count (~13 min)
    .venv/bin/python bench/ingest.py --events 50000 --duration 5 --only batch

Without --database-url a throw-away embedded cluster (fsync off), as in bench/locate.py; with one, the databases
wangge_bench_ingest_{single,batch} are created there and dropped. Needs wrk; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# The repository first: bench/dashboard.py must not shadow the dashboard package when this folder is sys.path[0].
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import geopandas as gpd
import httpx
import numpy as np
import shapely
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from locate import (
    console,
    given_url,
    machine,
    pg_connect,
    recreate,
    run_record,
    server,
    step,
    write_results,
)
from rich.table import Table

from api.app import create_app
from api.events import EventIn
from gis import accounts, db
from gis.store import load_package
from gis.taxonomy import load_taxonomy

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "boundaries" / "demo-j-town"
RESULTS = ROOT / "bench" / "results" / "ingest.json"
SEED, BATCH, CLIENTS, PASSWORD = 20240226, 10_000, 32, "bench-admin-pw"
OUTCOMES = ("created", "merged", "duplicate")
SOURCE_MIX = {"grid_worker": 0.55, "hotline": 0.15, "citizen": 0.15, "camera": 0.08, "sensor": 0.07}
YEAR0 = np.datetime64("2023-01-01T00:00:00", "s")
Floats = np.ndarray[Any, np.dtype[np.float64]]


# -- the events -------------------------------------------------------------------------------------------------
def sample_points(n: int, rng: np.random.Generator, outside: float = 0.0) -> tuple[Floats, Floats]:
    """n lon/lat points uniform over J镇's cells; a fraction `outside` of them 2–10 km outside the district."""
    cells = shapely.union_all(gpd.read_file(DEMO / "cells.geojson").geometry.values)
    shapely.prepare(cells)
    x0, y0, x1, y1 = shapely.bounds(cells)
    n_in = n - round(n * outside)
    xs, ys = [np.empty(0)], [np.empty(0)]
    while sum(map(len, xs)) < n_in:
        x, y = rng.uniform(x0, x1, 2 * n), rng.uniform(y0, y1, 2 * n)
        keep = shapely.contains_xy(cells, x, y)
        xs.append(x[keep])
        ys.append(y[keep])
    x, y = rng.uniform(x0 - 0.1, x1 + 0.1, 8 * (n - n_in)), rng.uniform(y0 - 0.1, y1 + 0.1, 8 * (n - n_in))
    away = ~((x > x0 - 0.02) & (x < x1 + 0.02) & (y > y0 - 0.02) & (y < y1 + 0.02))
    x = np.concatenate([np.concatenate(xs)[:n_in], x[away][:n - n_in]])
    y = np.concatenate([np.concatenate(ys)[:n_in], y[away][:n - n_in]])
    order = rng.permutation(n)
    return x[order], y[order]


def category_mix(n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """n (source, category) pairs: channels by SOURCE_MIX, within a channel its categories Zipf-weighted."""
    cats = list(load_taxonomy().categories.values())
    sources = rng.choice(list(SOURCE_MIX), size=n, p=list(SOURCE_MIX.values()))
    out: list[tuple[str, str]] = []
    for s, k in sorted(Counter(sources.tolist()).items()):
        codes = rng.permutation([c.code for c in cats if s in c.sources])
        w = 1.0 / np.arange(1, len(codes) + 1)
        out += [(s, str(c)) for c in rng.choice(codes, size=k, p=w / w.sum())]
    return [out[i] for i in rng.permutation(n)]


# -- servers ----------------------------------------------------------------------------------------------------
def bare_app() -> FastAPI:
    """The HTTP ceiling: FastAPI parsing the same body into the same model, and nothing else."""
    app = FastAPI()

    @app.post("/api/v1/events", status_code=201)
    async def post_event(body: EventIn) -> Any:
        return JSONResponse({"ok": True}, status_code=201)

    app.add_api_route("/healthz", lambda: {"status": "ok"})
    return app


def serve(kind: str, port: int, url: str | None) -> None:
    uvicorn.run(create_app(url) if kind == "wangge" else bare_app(), host="127.0.0.1", port=port, log_level="warning")


@contextlib.contextmanager
def http_server(kind: str, url: str | None, log: Path, env: dict[str, str] | None = None) -> Iterator[int]:
    """The port of `kind` served by uvicorn in a subprocess running this script with --serve (extra `env`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    # Never the project's .wangge/secret_key.
    env = os.environ | {"WANGGE_SECRET_KEY": secrets.token_urlsafe(48)} | (env or {})
    cmd = [sys.executable, __file__, "--serve", kind, "--port", str(port)] + (["--database-url", url] if url else [])
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the {kind} server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


def login(port: int) -> str:
    got = httpx.post(f"http://127.0.0.1:{port}/api/v1/auth/token", data={"username": "admin", "password": PASSWORD})
    got.raise_for_status()
    return str(got.json()["access_token"])


def prepare(admin_url: str, name: str) -> str:
    url = recreate(admin_url, name)
    engine = db.engine_for(url)
    db.upgrade(engine)
    load_package(engine, DEMO, valid_from=dt.date(2017, 1, 1))
    accounts.create_user(engine, "admin", PASSWORD, "admin", "330212000000")
    return url


# -- single-event POSTs with wrk ------------------------------------------------------------------------------------
LUA = """
local points, mix, threads, t0 = {%(points)s}, {%(mix)s}, {}, %(t0)d
function setup(thread) thread:set("id", #threads + 1); table.insert(threads, thread) end
function init(args)  -- tag, token, seed: each run its own random sequence (a repeated body would merge)
  tag, sent, ok, bad = args[1], 0, 0, 0
  headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. args[2]}
  math.randomseed(tonumber(args[3]) * 7919 + id)
end
function request()
  sent = sent + 1
  local p, m = points[math.random(#points)], mix[math.random(#mix)]
  return wrk.format("POST", "/api/v1/events", headers, string.format(
    '{"source":"%%s","category":"%%s","lon":%%.7f,"lat":%%.7f,"occurred_at":"%%s","external_id":"%%s-%%d-%%d"}',
    m[1], m[2], p[1], p[2], os.date("!%%Y-%%m-%%dT%%H:%%M:%%SZ", t0 + math.random(0, 365 * 86400 - 1)), tag, id, sent))
end
function response(status) if status >= 200 and status < 300 then ok = ok + 1 else bad = bad + 1 end end
function done(s, latency)
  local sent_, ok_, bad_ = 0, 0, 0
  for _, t in ipairs(threads) do sent_ = sent_ + t:get("sent"); ok_ = ok_ + t:get("ok"); bad_ = bad_ + t:get("bad") end
  local e = s.errors
  io.write(string.format('WRKJSON {"requests": %%d, "duration_s": %%.6f, "sent": %%d, "ok": %%d, "bad": %%d, '
    .. '"socket_errors": %%d, "p50_ms": %%.3f, "p90_ms": %%.3f, "p99_ms": %%.3f, "max_ms": %%.3f}\\n',
    s.requests, s.duration / 1e6, sent_, ok_, bad_, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3))
end
"""


def wrk(port: int, script: Path, token: str, duration: float, tag: str, seed: int) -> dict[str, Any]:
    cmd = ["wrk", "-t2", f"-c{CLIENTS}", f"-d{duration:g}s", "--latency", "--timeout", "10s", "-s", str(script),
           f"http://127.0.0.1:{port}", "--", tag, token, str(seed)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    r: dict[str, Any] = json.loads(next(ln for ln in out.splitlines() if ln.startswith("WRKJSON "))[8:])
    return r | {"requests_per_s": r["requests"] / r["duration_s"]}


def bench_single(admin_url: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    x, y = sample_points(512, rng)
    script = tmp / "post_event.lua"
    script.write_text(LUA % {"points": ",".join(f"{{{a:.7f},{b:.7f}}}" for a, b in zip(x, y, strict=True)),
                             "mix": ",".join(f'{{"{s}","{c}"}}' for s, c in category_mix(4096, rng)),
                             "t0": YEAR0.astype(np.int64)})
    url = prepare(admin_url, "wangge_bench_ingest_single")
    r: dict[str, Any] = {"clients": CLIENTS, "duration_s": args.duration, "machine": machine(url)}
    try:
        for kind in ("bare", "wangge"):
            with http_server(kind, url, tmp / f"{kind}.log") as port:
                token = login(port) if kind == "wangge" else "none"
                with step(f"[single] {kind}: wrk warm-up 2 s, then {args.runs} × {args.duration:g} s"):
                    warm = wrk(port, script, token, 2, f"{kind}-warm", 1)
                    runs = [wrk(port, script, token, args.duration, f"{kind}-{k}", 2 + k) for k in range(args.runs)]
                    # Runs of this closed loop swing by ±15 %: the median run stands for the server.
                    median = sorted(runs, key=lambda w: float(w["requests_per_s"]))[len(runs) // 2]
                    r[kind] = median | {"warmup": warm, "runs": [
                        {k: w[k] for k in ("requests_per_s", "p50_ms", "p99_ms")} for w in runs],
                        "ok_all": sum(w["ok"] for w in runs), "sent_all": sum(w["sent"] for w in runs)}
                time.sleep(2.0)  # requests in flight when wrk stopped finish before the server does
        with pg_connect(url) as pg:
            stored, merged = pg.execute("""SELECT (SELECT coalesce(sum(report_count), 0) FROM events),
                (SELECT count(*) FROM event_log WHERE action = 'merge')""").fetchone() or (0, 0)
        w = r["wangge"]
        ok, sent = w["ok_all"] + w["warmup"]["ok"], w["sent_all"] + w["warmup"]["sent"]
        r["check"] = {"ok_2xx": ok, "sent": sent, "stored_reports": stored, "merged": merged,
                      "consistent": ok <= stored <= sent}
        r["ratio"] = w["requests_per_s"] / r["bare"]["requests_per_s"]
    finally:
        db.engine_for(url).dispose()
        recreate(admin_url, "wangge_bench_ingest_single", drop_only=True)
    return r


# -- batch ingest -----------------------------------------------------------------------------------------------
def batch_events(n: int, seed: int) -> tuple[Floats, Floats, list[tuple[str, str]], np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    x, y = sample_points(n, rng, outside=0.01)
    seconds = np.sort(rng.uniform(0, 365 * 86400, n)).astype("timedelta64[s]")
    return x, y, category_mix(n, rng), np.datetime_as_string(YEAR0 + seconds, unit="s", timezone="UTC")


def plain_insert(url: str, x: Floats, y: Floats, mix: list[tuple[str, str]], t: np.ndarray) -> dict[str, Any]:
    tax = load_taxonomy()
    route = {c.code: f"{c.default_grade}\t{tax.platform_of(c.code).key}\t{c.level}" for c in tax.categories.values()}
    hexes = shapely.to_wkb(shapely.set_srid(shapely.points(x, y), 4490), hex=True, include_srid=True)
    rows = [f"{s}\tplain-{i}\t{c}\t{route[c]}\t{ti}\t{h}\n"
            for i, ((s, c), ti, h) in enumerate(zip(mix, t, hexes, strict=True))]
    with pg_connect(url) as pg:
        pg.execute("""CREATE UNLOGGED TABLE pts (source text, external_id text, category text, grade smallint,
                      platform text, level text, occurred_at timestamptz, geom geometry(Point, 4490))""")
        pg.execute("CREATE TABLE plain_events (LIKE events INCLUDING DEFAULTS INCLUDING IDENTITY "
                   "INCLUDING CONSTRAINTS INCLUDING INDEXES)")
        n_idx = (pg.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'plain_events'").fetchone() or (0,))[0]
        t0 = time.perf_counter()
        with pg.cursor().copy("COPY pts FROM STDIN") as cp:
            for start in range(0, len(rows), 100_000):
                cp.write("".join(rows[start:start + 100_000]))
        t_copy = time.perf_counter() - t0
        pg.execute("ANALYZE pts")
        inserted = pg.execute("""
            INSERT INTO plain_events (source, external_id, category, grade, platform, status, level, geom,
                                      located_by, cell_code, cell_name, occurred_at, received_at, last_report_at,
                                      updated_at)
            SELECT p.source, p.external_id, p.category, p.grade, p.platform, 'reported', p.level, p.geom, 'point',
                   c.code, c.name, p.occurred_at, now(), p.occurred_at, now()
            FROM pts p JOIN cells c ON ST_Intersects(c.geom, p.geom) AND c.valid_to IS NULL""").rowcount
        seconds = time.perf_counter() - t0
        pg.execute("DROP TABLE pts, plain_events")
        pg.execute("CHECKPOINT")
    return {"seconds": seconds, "copy_s": t_copy, "insert_s": seconds - t_copy, "rows": inserted, "indexes": n_idx,
            "events_per_s": len(x) / seconds}


def bench_batch(admin_url: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with step(f"[batch] draw {args.events:,} events and build the request bodies"):
        x, y, mix, t = batch_events(args.events, args.seed)
        bodies = [json.dumps({"events": [
            {"source": s, "category": c, "lon": round(float(a), 7), "lat": round(float(b), 7), "occurred_at": str(ti),
             "external_id": f"batch-{i}"} for i, (a, b, (s, c), ti) in
            enumerate(zip(x[k:k + BATCH], y[k:k + BATCH], mix[k:k + BATCH], t[k:k + BATCH], strict=True), k)]},
            separators=(",", ":")).encode() for k in range(0, args.events, BATCH)]
    url = prepare(admin_url, "wangge_bench_ingest_batch")
    r: dict[str, Any] = {"events": args.events, "requests": len(bodies), "machine": machine(url),
                         "runs": args.batch_runs}
    # Runs interleaved (anchor, then each number of loaders, again): the two cores of a virtual machine run at
    # different speeds from one minute to the next (two loaders gave 0.82–0.93 on the same code), and the median of
    # interleaved runs compares like with like.
    plains: list[dict[str, Any]] = []
    variants = [(n, "full") for n in args.loaders] + [(n, "brief") for n in args.brief_loaders]
    ours: dict[tuple[int, str], list[dict[str, Any]]] = {v: [] for v in variants}
    try:
        for k in range(args.batch_runs):
            with step(f"[batch] plain PostGIS: COPY + INSERT … SELECT … JOIN cells of {args.events:,} points "
                      f"(run {k + 1} of {args.batch_runs})"):
                plains.append(plain_insert(url, x, y, mix, t))
            for loaders, answer in variants:
                db.engine_for(url).dispose()
                url = prepare(admin_url, "wangge_bench_ingest_batch")
                ours[(loaders, answer)].append(load(url, bodies, loaders, tmp, answer))
    finally:
        db.engine_for(url).dispose()
        recreate(admin_url, "wangge_bench_ingest_batch", drop_only=True)
    r["plain"] = {**median_run(plains), "runs": [p["events_per_s"] for p in plains]}
    r["wangge"] = {}
    for (loaders, answer), runs in ours.items():
        key = str(loaders) if answer == "full" else f"{loaders} {answer}"
        w = r["wangge"][key] = {**median_run(runs), "runs": [w["events_per_s"] for w in runs]}
        w["ratio"] = w["events_per_s"] / r["plain"]["events_per_s"]
        w["run_ratios"] = [a["events_per_s"] / b["events_per_s"] for a, b in zip(runs, plains, strict=True)]
    return r


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate (the lower middle one of an even number)."""
    return sorted(runs, key=lambda run: run["events_per_s"])[(len(runs) - 1) // 2]


def load(url: str, bodies: list[bytes], loaders: int, tmp: Path, answer: str = "full") -> dict[str, Any]:
    """POST the bodies with `loaders` concurrent clients, each the next stretch of time in order (an import split
    by period: its batches share no merge window with the other loaders' except where two stretches meet), asking
    for the `answer` form (full, or brief: id, outcome, status, cell code and reason of each item)."""
    n = sum(body.count(b'"source"') for body in bodies)
    with http_server("wangge", url, tmp / "batch.log") as port, httpx.Client(timeout=3600) as client:
        headers = {"Authorization": f"Bearer {login(port)}", "Content-Type": "application/json"}

        def post_all(share: list[bytes]) -> tuple[Counter[str], list[float]]:
            outcomes: Counter[str] = Counter()
            per_post: list[float] = []
            for body in share:
                t0 = time.perf_counter()
                got = client.post(f"http://127.0.0.1:{port}/api/v1/events/batch?answer={answer}", content=body,
                                  headers=headers)
                per_post.append(time.perf_counter() - t0)
                if got.status_code != 200:
                    raise SystemExit(f"a batch POST failed: HTTP {got.status_code}: {got.text[:500]}")
                # The loader's own work counts in the wall time: it counts the outcomes in the answer's bytes
                # (parsing 10,000 answers, ~5 MB, took ~50 ms a POST, a seventh of the server's time).
                content = got.content
                counts = {o: content.count(b'"outcome":"' + o.encode() + b'"') for o in OUTCOMES}
                if sum(counts.values()) != body.count(b'"source":'):
                    raise SystemExit("a batch POST did not answer every item with a known outcome")
                outcomes.update(counts)
                outcomes["needs_location"] += content.count(b'"status":"needs_location"')
            return outcomes, per_post

        size = -(-len(bodies) // loaders)
        with step(f"[batch] wangge: {len(bodies)} POSTs of ≤ {BATCH:,} events to /api/v1/events/batch, "
                  f"{loaders} loader{'s' if loaders > 1 else ''}, {answer} answers"):
            t0 = time.perf_counter()
            with ThreadPoolExecutor(loaders) as pool:
                done = list(pool.map(post_all, [bodies[k:k + size] for k in range(0, len(bodies), size)]))
            seconds = time.perf_counter() - t0
    outcomes = sum((o for o, _ in done), Counter())
    per_post = [s for _, times in done for s in times]
    with pg_connect(url) as pg:
        events, reports = pg.execute("SELECT count(*), coalesce(sum(report_count), 0) FROM events").fetchone() or (0, 0)
    k = min(10, len(per_post))
    return {"loaders": loaders, "answer": answer, "seconds": seconds, "events_per_s": n / seconds,
            "outcomes": dict(outcomes),
            "post_s": {"first": float(np.median(per_post[:k])), "last": float(np.median(per_post[-k:])),
                       "max": max(per_post)}, "stored_events": events, "stored_reports": reports}


# -- output -----------------------------------------------------------------------------------------------------
def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def table(title: str, *cols: str) -> Table:
    t = Table(title=title, title_justify="left")
    for i, col in enumerate(cols):
        t.add_column(col, justify="left" if i == 0 else "right")
    return t


def show_single(r: dict[str, Any]) -> None:
    t = table(f"single-event POSTs: wrk -t2 -c{r['clients']} -d{r['duration_s']:g}s",
              "server", "requests", "requests/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "non-2xx", "sock err")
    for kind, label in (("bare", "bare FastAPI (ceiling)"), ("wangge", "wangge /api/v1/events")):
        w = r[kind]
        t.add_row(label, f"{w['requests']:,}", f"{w['requests_per_s']:,.0f}",
                  *(f"{w[f'{q}_ms']:.1f}" for q in ("p50", "p90", "p99", "max")), f"{w['bad']:,}",
                  f"{w['socket_errors']:,}")
    console.print(t)
    for kind in ("bare", "wangge"):
        console.print(f"  {kind} runs (the median one above): " + ", ".join(
            f"{w['requests_per_s']:,.0f} req/s p99 {w['p99_ms']:.1f} ms" for w in r[kind]["runs"]))
    p99, c = r["wangge"]["p99_ms"], r["check"]
    console.print(f"  throughput ratio wangge/bare: {r['ratio']:.2f} (target ≥ 0.50: {met(r['ratio'] >= 0.5)})")
    console.print(f"  wangge p99: {p99:.1f} ms (target ≤ 25 ms: {met(p99 <= 25)})")
    console.print(f"  stored reports {c['stored_reports']:,} vs 2xx answers {c['ok_2xx']:,}, requests sent "
                  f"{c['sent']:,} (warm-up included; {c['merged']:,} merged): "
                  f"{'no loss' if c['consistent'] else 'MISMATCH'}")


def who(w: dict[str, Any]) -> str:
    return f"{w['loaders']} loader(s), {w.get('answer', 'full')} answers"


def show_batch(r: dict[str, Any]) -> None:
    t = table(f"batch ingest: {r['events']:,} events", "method", "seconds", "events/s", "rows written", "ratio")
    p = r["plain"]
    for w in r["wangge"].values():
        t.add_row(f"wangge: {r['requests']} POSTs to /api/v1/events/batch, {who(w)}",
                  f"{w['seconds']:.1f}", f"{w['events_per_s']:,.0f}",
                  f"{w['stored_events']:,} events, {w['stored_reports']:,} reports", f"{w['ratio']:.2f}")
    t.add_row("PostGIS: COPY + INSERT … SELECT JOIN cells", f"{p['seconds']:.1f}", f"{p['events_per_s']:,.0f}",
              f"{p['rows']:,} rows", "1")
    console.print(t)
    runs = r.get("runs", 1)
    if runs > 1:
        console.print(f"  median of {runs} interleaved runs; anchor runs "
                      + ", ".join(f"{v:,.0f}" for v in p["runs"]) + " events/s")
    for w in r["wangge"].values():
        o, s = w["outcomes"], w["post_s"]
        if runs > 1:
            console.print(f"  {who(w)} runs: " + ", ".join(
                f"{v:,.0f} events/s ({q:.2f})" for v, q in zip(w["runs"], w["run_ratios"], strict=True))
                + " (ratio to the anchor run before it)")
        console.print(f"  {who(w)}: speed ratio wangge/plain {w['ratio']:.2f} (target ≥ 1.0: "
                      f"{met(w['ratio'] >= 1.0)}); {o.get('created', 0):,} created ({o.get('needs_location', 0):,} "
                      f"needs_location), {o.get('merged', 0):,} merged, {o.get('duplicate', 0):,} duplicate; "
                      f"seconds per POST: median of the first 10 {s['first']:.2f}, of the last 10 {s['last']:.2f}, "
                      f"max {s['max']:.2f}")
    console.print(f"  plain: COPY {p['copy_s']:.1f} s + INSERT {p['insert_s']:.1f} s into a table with {p['indexes']} "
                  "indexes (those of events)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="events of the batch ingest")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of each wrk run")
    ap.add_argument("--runs", type=int, default=3, help="wrk runs per server (the median one is reported)")
    ap.add_argument("--only", choices=("single", "batch"))
    ap.add_argument("--loaders", type=lambda v: [int(k) for k in v.split(",")], default=[1, 2],
                    help="concurrent batch clients, one run each (comma-separated; default 1,2)")
    ap.add_argument("--brief-loaders", type=lambda v: [int(k) for k in v.split(",") if k], default=[2],
                    help="loaders counts also run asking for brief answers (?answer=brief; default 2; '' for none)")
    ap.add_argument("--batch-runs", type=int, default=3,
                    help="batch runs of the anchor and of each number of loaders, interleaved (the median is reported)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--database-url", help="a PostGIS server to use instead of a throw-away cluster")
    ap.add_argument("--serve", choices=("wangge", "bare"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.database_url)
        return 0
    url = given_url(args)
    out: dict[str, Any] = run_record(args, leave_out=("serve", "port"))
    with server(url) as admin_url, tempfile.TemporaryDirectory(prefix="wangge-ingest-") as tmp:
        for name in ("single", "batch") if args.only is None else (args.only,):
            out[name] = (bench_single if name == "single" else bench_batch)(admin_url, args, Path(tmp))
    out["machine"] = next(out[name].pop("machine") for name in ("single", "batch") if name in out)
    for name, show in (("single", show_single), ("batch", show_batch)):
        if name in out:
            show(out[name])
    write_results(out, RESULTS, prefix=f"commit {out['commit']}; ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
