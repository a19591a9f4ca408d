"""Benchmark: the command-centre wall left running under live traffic — does memory grow in the browser or the server?

A wall screen runs for days. This opens /dashboard/wall in headless Chromium over --events synthetic cases (as
bench/dashboard.py fills them), drives the server with `wangge simulate` (every channel, handlers progressing cases)
for --minutes, and every --every seconds records, after a forced garbage collection in the page: the JavaScript heap
in use, the page's DOM nodes and event listeners (CDP Memory.getDOMCounters), the server process's resident memory
(VmRSS), the ticker's entries and the live markers on the map.

Anchor: the figures at the end of the warm-up (the first quarter of the run, at least 90 s: until the first live
markers have faded). Printed: each figure at the anchor and
at the end, their ratio, and the growth per hour fitted over the rest of the run (least squares). Target (issue 4):
no growth — end/anchor ≤ 1.10 for the heap, the DOM and the server.

    .venv/bin/python bench/soak.py                      # 100,000 cases, 20 minutes at 5 events/s
    .venv/bin/python bench/soak.py --minutes 5 --rate 10 --events 20000
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"] + [str(ROOT / "bench")]

import numpy as np  # noqa: E402
from ingest import http_server  # noqa: E402
from locate import console, machine, recreate, server, step, write_results  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from rich.table import Table  # noqa: E402

from gis import accounts, db  # noqa: E402
from tests.browser import launch  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "soak.json"
TOWN = "330212101000"
ADMIN_PASSWORD = "bench-admin-pw"
TARGET_RATIO = 1.10
SAMPLE = """() => ({ticker: document.querySelectorAll('#ticker li.tick').length,
                   markers: document.querySelectorAll('.leaflet-marker-pane .pulse').length})"""


def server_pid(port: int) -> int:
    """The uvicorn subprocess bench/ingest.py started for this port."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--serve" in cmd and str(port).encode() in cmd:
            return int(proc.name)
    sys.exit(f"no server process for port {port}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def growth_per_hour(ts: list[float], ys: list[float]) -> float:
    if len(ts) < 2:
        return 0.0
    slope = float(np.polyfit(np.array(ts), np.array(ys), 1)[0])
    return slope * 3600


def _fmt(v: float, unit: str) -> str:
    return f"{v:,.1f} {unit}" if unit else f"{v:,.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000, help="synthetic cases in the database before the run")
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--rate", default="5/s", help="wangge simulate --rate")
    ap.add_argument("--every", type=float, default=30, help="seconds between samples")
    ap.add_argument("--seed", type=int, default=20240226)
    ap.add_argument("--database-url", help="a PostGIS server to use instead of a throw-away cluster")
    args = ap.parse_args(argv)

    from importlib.util import module_from_spec, spec_from_file_location

    import dashboard as _pkg  # noqa: F401  (the package, before bench/dashboard.py is imported by path below)

    spec = spec_from_file_location("bench_dashboard", ROOT / "bench" / "dashboard.py")
    assert spec and spec.loader
    bench_dashboard = module_from_spec(spec)
    spec.loader.exec_module(bench_dashboard)

    out: dict[str, Any] = {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                           "args": {k: v for k, v in vars(args).items() if k != "database_url"}}
    samples: list[dict[str, float]] = []
    with server(args.database_url) as admin_url, tempfile.TemporaryDirectory(prefix="wangge-soak-") as tmp:
        db_url, out["database"] = bench_dashboard.prepare(admin_url, args.events, args.seed)
        accounts.create_user(db.engine_for(db_url), "admin", ADMIN_PASSWORD, "admin", "330212000000")
        quiet = {"WANGGE_SUPERVISION_SECONDS": "0"}
        with http_server("wangge", db_url, Path(tmp) / "server.log", quiet) as port, sync_playwright() as pw:
            base = f"http://127.0.0.1:{port}"
            pid = server_pid(port)
            browser = launch(pw)
            context = browser.new_context(viewport={"width": 1920, "height": 1080})
            context.add_cookies([bench_dashboard.session_cookie(base)])
            page = context.new_page()
            cdp = context.new_cdp_session(page)
            with step("open the wall"):
                page.goto(f"{base}/dashboard/wall", wait_until="commit")
                page.wait_for_selector("#ticker li.tick", timeout=60_000)
            sim = subprocess.Popen(
                [str(ROOT / ".venv" / "bin" / "wangge"), "simulate", "--rate", args.rate, "--duration",
                 f"{int(args.minutes * 60) + 60}s", "--url", base, "--user", "admin", "--password", ADMIN_PASSWORD,
                 "--seed", str(args.seed)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            t0 = time.monotonic()
            try:
                with step(f"{args.minutes:g} minutes of live traffic at {args.rate}, a sample every {args.every:g} s"):
                    while (elapsed := time.monotonic() - t0) <= args.minutes * 60:
                        if sim.poll() is not None:
                            sys.exit(f"the simulator stopped: {(sim.stderr.read() if sim.stderr else b'')!r}")
                        cdp.send("HeapProfiler.collectGarbage")
                        heap = cdp.send("Runtime.getHeapUsage")
                        dom = cdp.send("Memory.getDOMCounters")
                        seen = page.evaluate(SAMPLE)
                        samples.append({"t_s": round(elapsed, 1), "heap_mb": heap["usedSize"] / 2**20,
                                        "dom_nodes": dom["nodes"], "listeners": dom["jsEventListeners"],
                                        "server_rss_mb": rss_mb(pid), "ticker": seen["ticker"],
                                        "markers": seen["markers"]})
                        console.log(" ".join(f"{k} {v:,.1f}" for k, v in samples[-1].items()))
                        time.sleep(max(0.0, args.every - (time.monotonic() - t0 - elapsed)))
            finally:
                sim.terminate()
                sim.wait(30)
            with db.engine_for(db_url).connect() as conn:
                from sqlalchemy import text

                out["cases_opened_during_run"] = conn.execute(text(
                    "SELECT count(*) FROM events WHERE description IS DISTINCT FROM 'bench'")).scalar_one()
            context.close()
            browser.close()
        out["machine"] = machine(db_url)
        recreate(admin_url, "wangge_bench_dashboard", drop_only=True)
    # The warm-up: the first quarter of the run, and at least until the first live markers have faded (60 s).
    warm = max(1, len(samples) // 4, next((i + 1 for i, x in enumerate(samples) if x["t_s"] >= 90), len(samples)))
    anchor, rest = samples[warm - 1], samples[warm - 1:]
    out["samples"] = samples
    out["summary"] = {}
    t = Table(title=f"the wall under live traffic, {args.minutes:g} min, anchor at {anchor['t_s']:.0f} s")
    for col in ("figure", "anchor", "end", "end / anchor", "growth per hour", "met"):
        t.add_column(col)
    for key, unit, judged in (("heap_mb", "MB", True), ("dom_nodes", "", True), ("listeners", "", False),
                              ("server_rss_mb", "MB", True), ("ticker", "", False), ("markers", "", False)):
        a, e = anchor[key], samples[-1][key]
        ratio = e / a if a else float("nan")
        slope = growth_per_hour([s["t_s"] for s in rest], [s[key] for s in rest])
        out["summary"][key] = {"anchor": a, "end": e, "ratio": ratio, "growth_per_hour": slope}
        t.add_row(key, _fmt(a, unit), _fmt(e, unit), f"{ratio:.3f}", _fmt(slope, unit),
                  ("yes" if ratio <= TARGET_RATIO else "NO") if judged else "")
    console.print(t)
    console.print(f"cases the simulator opened during the run: {out['cases_opened_during_run']:,}")
    write_results(out, RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
