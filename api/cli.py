"""The `wangge` command line: an adapter over gis/ like the HTTP API. Errors print as one line, exit 1."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine

from gis import db
from gis.errors import PackageInvalid, WanggeError
from gis.settings import DatabaseSettings, LocateSettings, ServerSettings

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="wangge (网格): grid-management GIS for township governance.")
db_app = typer.Typer(no_args_is_help=True, help="The database: the embedded PostGIS cluster and migrations.")
app.add_typer(db_app, name="db")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
DEMO = Path(__file__).resolve().parent.parent / "data" / "boundaries" / "demo-j-town"


def _engine(start: bool = True) -> Engine:
    engine = db.engine_for(db.database_url(DatabaseSettings(), start=start))
    db.upgrade(engine)
    return engine


@db_app.command("start")
def db_start() -> None:
    """Create (first time) and start the embedded PostGIS cluster; print its URL."""
    settings = DatabaseSettings()
    if settings.database_url:
        raise WanggeError("WANGGE_DATABASE_URL is set: the embedded cluster is not used")
    out.print(db.embedded_cluster(settings).start())


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded cluster."""
    stopped = db.embedded_cluster().stop()
    out.print("stopped" if stopped else "not running")


@db_app.command("status")
def db_status() -> None:
    """Say which database is configured and whether it answers."""
    settings = DatabaseSettings()
    if settings.database_url:
        engine = db.engine_for(settings.database_url)
        state = "reachable" if db.ping(engine) else "NOT reachable"
        out.print(f"external {state}: {engine.url.render_as_string(hide_password=True)}")
        raise typer.Exit(0 if state == "reachable" else 1)
    cluster = db.embedded_cluster(settings)
    if not cluster.initialised:
        out.print(f"embedded cluster not created yet ({cluster.pgdata}); run `wangge db start`")
        raise typer.Exit(1)
    if cluster.running():
        out.print(f"embedded running: {cluster.url()} (data in {cluster.pgdata})")
    else:
        out.print(f"embedded stopped (data in {cluster.pgdata})")
        raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations to the configured database."""
    engine = db.engine_for(db.database_url(DatabaseSettings()))
    out.print(f"schema at revision {db.upgrade(engine)}")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description:<28}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                    console=err, transient=False)


@app.command()
def load(
    path: Annotated[Path | None, typer.Argument(help="package folder, .zip or .gpkg")] = None,
    valid_from: Annotated[
        str | None, typer.Option(help="date the cells and assignments take effect (YYYY-MM-DD)")
    ] = None,
    if_empty: Annotated[bool, typer.Option("--if-empty", help="do nothing when a dataset is already loaded")] = False,
    draft: Annotated[Path | None, typer.Option(help="a village's cells (GeoPackage from `export --village`, edited "
                                                     "e.g. in QGIS) to bring back as a grid draft")] = None,
    village: Annotated[str | None, typer.Option(help="with --draft: the village's 12-digit code")] = None,
    publish: Annotated[str | None, typer.Option(help="with --draft: publish it when valid, effective from this "
                                                     "date (YYYY-MM-DD)")] = None,
) -> None:
    """Validate a boundary package and load it in one transaction (all or nothing), replacing the dataset.
    With --draft FILE --village CODE: make a grid draft of the file's cells, validate and preview it."""
    from gis.store import load_package, revision

    if draft is not None:
        _load_draft(draft, village, publish)
        return
    if path is None:
        raise WanggeError("give a package PATH, or --draft FILE --village CODE")
    start = dt.date.fromisoformat(valid_from) if valid_from else None
    engine = _engine()
    if if_empty and revision(engine) > 0:
        out.print("a dataset is already loaded; nothing to do")
        return
    with _progress() as bar:
        tasks: dict[str, TaskID] = {}

        def step(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total or 1)
            bar.update(tasks[name], completed=done if total else 1, total=total or 1)

        try:
            summary = load_package(engine, path, valid_from=start, progress=step)
        except PackageInvalid as exc:
            bar.stop()
            err.print(exc.report(), markup=False, highlight=False)
            raise
    for note in summary.notes:
        err.print(f"note: {note}", markup=False)
    out.print(f"loaded {summary.jurisdictions} jurisdictions, {summary.cells} cells, {summary.workers} workers, "
              f"{summary.devices} devices, {summary.water} water bodies (revision {summary.revision})")


def _load_draft(path: Path, village: str | None, publish: str | None) -> None:
    """`wangge load --draft FILE --village CODE`: the file's cells become a draft; problems and preview printed.
    Exit 1 when the draft has problems that block publishing (the draft is kept for fixing)."""
    from gis import grid
    from gis.workflow import Actor

    if not village:
        raise WanggeError("--draft needs --village CODE (the village whose cells the file holds)")
    effective = dt.date.fromisoformat(publish) if publish else None
    engine = _engine()
    actor = Actor("cli", "admin")
    draft_id = grid.draft_from_file(engine, actor, path, village)
    checked = grid.validate_draft(engine, actor, draft_id)
    s = grid.preview(engine, actor, draft_id)["summary"]
    out.print(f"draft {draft_id} of village {village}: {checked['cells']} cells; {s['added']} added, "
              f"{s['removed']} removed, {s['changed']} changed, {s['unchanged']} unchanged; "
              f"{s['moving_cases']} open cases would move", markup=False)
    for p in checked["problems"]:
        where = f" (at {p['lon']:.6f}, {p['lat']:.6f})" if p["lon"] is not None else ""
        out.print(f"{p['severity']}: {p['code']}: {p['message']} [{p['rule']}]{where}", markup=False)
    if not checked["valid"]:
        out.print(f"{checked['errors']} problems block publishing: fix the file and load it again, or edit draft "
                  f"{draft_id} in the planner page", markup=False)
        raise typer.Exit(1)
    out.print("no problems" + (f" ({checked['warnings']} warnings)" if checked["warnings"] else ""), markup=False)
    if effective is not None:
        v = grid.publish(engine, actor, draft_id, effective)
        out.print(f"published as grid version {v['version']} effective {v['effective_date']}; "
                  f"{v['reassigned_cases']} open cases reassigned", markup=False)


@app.command()
def export(
    path: Annotated[Path | None, typer.Argument(help="folder to write the package into")] = None,
    format: Annotated[str, typer.Option("--format", help="gpkg or geojson")] = "geojson",
    date: Annotated[str | None, typer.Option(help="cells valid on this day (YYYY-MM-DD); default today")] = None,
    village: Annotated[str | None, typer.Option(help="only this village's live cells (with their grid workers), "
                                                     "as a GeoPackage for QGIS; see `load --draft`")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="with --village: the .gpkg file to write")] = None,
) -> None:
    """Write the dataset back as a boundary package (or one village's cells with --village CODE --out FILE)."""
    from gis.store import export_dataset

    if village is not None:
        from gis.grid import export_village

        target = out_file or path
        if target is None:
            raise WanggeError("--village needs --out FILE.gpkg")
        written = export_village(_engine(), village, target, dt.date.fromisoformat(date) if date else None)
        out.print(f"wrote {written}")
        return
    if path is None:
        raise WanggeError("give a folder PATH to write the package into (or --village CODE --out FILE)")
    if format not in ("gpkg", "geojson"):
        raise WanggeError(f"unknown format {format!r}: use gpkg or geojson")
    on = dt.date.fromisoformat(date) if date else None
    files = export_dataset(_engine(), path, format, on)
    out.print(f"wrote {', '.join(str(f) for f in files)}")


@app.command()
def locate(
    lon: Annotated[str, typer.Argument(help="longitude, or x in a projected CRS")],
    lat: Annotated[str, typer.Argument(help="latitude, or y in a projected CRS")],
    crs: Annotated[str, typer.Option(help="EPSG:4326, EPSG:4490, any EPSG code, or GCJ02")] = "EPSG:4326",
    date: Annotated[str | None, typer.Option(help="assignments valid on this day (YYYY-MM-DD)")] = None,
) -> None:
    """Print the grid cell, grid worker and jurisdiction of one point as JSON."""
    from gis.errors import InvalidCoordinates
    from gis.locate import Locator

    try:
        x, y = float(lon), float(lat)
    except ValueError as exc:
        raise InvalidCoordinates(f"coordinates must be numbers, got {lon!r} {lat!r}") from exc
    on = dt.date.fromisoformat(date) if date else None
    result = Locator(_engine(), LocateSettings()).locate([x], [y], crs, on)[0]
    out.print_json(json.dumps(result, ensure_ascii=False))


user_app = typer.Typer(no_args_is_help=True, help="Accounts: roles and jurisdiction scopes.")
app.add_typer(user_app, name="user")


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="user name (login)")],
    role: Annotated[str, typer.Option(help="grid_worker, grid_leader, unit_handler, command_centre, leader, "
                                           "planner or admin")],
    scope: Annotated[str, typer.Option(help="code of the cell, village, township or district the account covers")],
    password: Annotated[str | None, typer.Option(help="asked for when absent and stdin is a terminal")] = None,
    unit: Annotated[str | None, typer.Option(help="handling unit code (unit_handler accounts)")] = None,
    display_name: Annotated[str | None, typer.Option(help="name shown in timelines")] = None,
) -> None:
    """Create an account (password hashed with argon2)."""
    from gis.accounts import create_user
    from gis.taxonomy import load_taxonomy

    if password is None:
        if not sys.stdin.isatty():
            raise WanggeError("--password is required when stdin is not a terminal")
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    actor = create_user(_engine(), name, password, role, scope, unit_code=unit, display_name=display_name,
                        known_units=set(load_taxonomy().units))
    out.print(f"created {actor.username} ({actor.role}, scope {actor.scope_code})")


@app.command("device-key")
def device_key(device_id: Annotated[str, typer.Argument(help="device id, e.g. D0001")]) -> None:
    """Issue an API key with which one sensor or camera posts its own alarms (shown once)."""
    from gis.accounts import create_device_key

    out.print(create_device_key(_engine(), device_id))


@app.command()
def supervise() -> None:
    """Run one supervision sweep now: mark overdue and due-soon cases, notify units, escalate by rule."""
    from gis.cases import Cases
    from gis.locate import Locator
    from gis.supervision import sweep
    from gis.taxonomy import load_taxonomy
    from gis.workcalendar import load_calendar

    engine = _engine()
    cases = Cases(engine, load_taxonomy(), load_calendar(), Locator(engine))
    r = sweep(engine, cases)
    out.print(f"overdue {r.overdue}, due soon {r.due_soon}, escalated {r.escalated}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to bind; default 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="port; default 8000")] = None,
    access_log: Annotated[bool, typer.Option(help="log every request")] = True,
) -> None:
    """Serve the API (and its docs at /docs) over HTTP."""
    import uvicorn

    from api.app import create_app

    settings = ServerSettings()
    engine = _engine()
    base = f"http://{host or settings.host}:{port or settings.port}"
    out.print(f"serving on {base}: the dashboard at {base}/dashboard/, API docs at /docs, OGC API at /ogc")
    uvicorn.run(create_app(engine.url.render_as_string(hide_password=False)),
                host=host or settings.host, port=port or settings.port, log_level="info", access_log=access_log)


@app.command()
def demo(
    host: Annotated[str | None, typer.Option(help="address to bind; default 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="port; default 8000")] = None,
    simulate: Annotated[bool, typer.Option(help="drive the town with simulated traffic while serving")] = True,
    rate: Annotated[str, typer.Option(help="simulated reports per second or minute, e.g. 0.5/s or 20/min")] = "0.5/s",
) -> None:
    """The main job: start the embedded PostGIS, load the demo township (first time), create the demo
    accounts (first time), serve."""
    from gis.demo import ensure_demo_accounts
    from gis.taxonomy import load_taxonomy

    load(DEMO, valid_from="2017-01-01", if_empty=True)
    path, password, created = ensure_demo_accounts(_engine(), DatabaseSettings().data_dir.absolute(),
                                                   set(load_taxonomy().units))
    out.print(f"demo accounts (admin, centre, leader, …) password: {password}" + ("" if created else
              f" (from {path})"))
    if simulate:
        _simulate_in_background(f"http://127.0.0.1:{port or ServerSettings().port}", password, rate)
    serve(host, port, access_log=not simulate)  # the simulator's requests would drown everything else


def _simulate_in_background(url: str, password: str, rate: str) -> None:
    """Once the server answers, play a living town (reports from every channel, handlers at work) for a day."""
    import threading
    import time

    import httpx

    from api.simulate import run as run_simulation

    def play() -> None:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/healthz", timeout=1.0, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        try:
            stats = run_simulation(url, "admin", password, rate, "24h", seed=int(time.time()))
            err.print(f"simulation finished: {stats.posted} reports, {stats.closed} cases closed", markup=False)
        except WanggeError as exc:
            err.print(f"simulation stopped: {exc}", markup=False)

    threading.Thread(target=play, name="wangge-simulate", daemon=True).start()
    out.print(f"simulating {rate} reports from every channel (wangge demo --no-simulate to turn it off)")


report_app = typer.Typer(no_args_is_help=True, help="Standalone HTML map reports that open offline.")
app.add_typer(report_app, name="report")


def _report_period(date_from: str | None, date_to: str | None) -> tuple[dt.datetime, dt.datetime]:
    """[from, to) in Asia/Shanghai; a bare date means its midnight. Default: the 30 days up to the end of today."""
    from gis.intake import TZ

    def parse(value: str, option: str) -> dt.datetime:
        try:
            t = dt.datetime.fromisoformat(value)
        except ValueError:
            raise WanggeError(f"{option} {value!r} is not a date (YYYY-MM-DD) or a time (YYYY-MM-DDTHH:MM)") from None
        return t if t.tzinfo else t.replace(tzinfo=TZ)

    end = parse(date_to, "--to") if date_to else dt.datetime.combine(dt.datetime.now(TZ).date(), dt.time(), TZ) \
        + dt.timedelta(days=1)
    start = parse(date_from, "--from") if date_from else end - dt.timedelta(days=30)
    if start >= end:
        raise WanggeError(f"--from {start:%Y-%m-%d %H:%M} is not before --to {end:%Y-%m-%d %H:%M} (--to is exclusive)")
    return start, end


def _report_write(kind: str, build: Callable[[], str], out_file: Path) -> None:
    from gis.report import write_report

    if out_file.suffix.lower() not in (".html", ".htm"):
        raise WanggeError(f"--out {out_file} should be an .html file")
    if not out_file.parent.is_dir():
        raise WanggeError(f"--out: folder {out_file.parent} does not exist")
    with err.status(f"computing the {kind} report …"):
        doc = build()
    write_report(doc, out_file)
    out.print(f"wrote {out_file} ({len(doc.encode()) / 1e6:.1f} MB); it opens offline in any browser", markup=False)


FromOpt = Annotated[str | None, typer.Option("--from", help="start of the period (YYYY-MM-DD, Asia/Shanghai); "
                                                            "default 30 days before --to")]
ToOpt = Annotated[str | None, typer.Option("--to", help="end of the period, exclusive (YYYY-MM-DD); "
                                                        "default tomorrow 00:00")]
OutOpt = Annotated[Path, typer.Option("--out", help="the HTML file to write")]
LangOpt = Annotated[str, typer.Option("--lang", help="zh (default) or en")]


@report_app.command("hotspots")
def report_hotspots(
    out_file: OutOpt,
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    lang: LangOpt = "zh",
    scope: Annotated[str | None, typer.Option(help="a township or village code to report on; default the district")
                     ] = None,
    size: Annotated[float, typer.Option(help="hexagon edge in metres")] = 250,
    alpha: Annotated[float, typer.Option(help="significance level of the hot and cold spots")] = 0.05,
    fdr: Annotated[bool, typer.Option("--fdr", help="correct the hot and cold spots for multiple testing "
                                                     "(Benjamini–Hochberg false-discovery rate)")] = False,
    min_local: Annotated[int, typer.Option(help="events a hot spot needs in it and its neighbours together")] = 3,
) -> None:
    """Hot and cold spots (Getis-Ord Gi*), density, recurring places and the village ranking for a period."""
    from gis.report import LANGS, hotspots_report
    from gis.workflow import Actor

    if lang not in LANGS:
        raise WanggeError(f"--lang {lang!r}: use zh or en")
    if not 0 < alpha <= 0.1 or size < 20:
        raise WanggeError("--alpha must lie in (0, 0.1] and --size be at least 20 metres")
    if min_local < 1:
        raise WanggeError(f"--min-local {min_local}: a hot spot needs at least 1 event")
    if scope is not None and not (scope.isdigit() and len(scope) == 12):
        raise WanggeError(f"--scope {scope!r}: give a 12-digit township or village code")
    start, end = _report_period(date_from, date_to)
    engine = _engine()
    actor = Actor("cli", "leader", scope) if scope else None
    _report_write("hotspots", lambda: hotspots_report(engine, start, end, lang=lang, actor=actor, size_m=size,
                                                      alpha=alpha, correction="fdr" if fdr else "none",
                                                      min_local=min_local), out_file)


@report_app.command("village")
def report_village(
    code: Annotated[str, typer.Argument(help="the village's 12-digit code")],
    out_file: OutOpt,
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    lang: LangOpt = "zh",
) -> None:
    """One village: incidents per grid cell, hot and cold cells, recurring places, categories, for a period."""
    from gis.report import LANGS, village_report

    if lang not in LANGS:
        raise WanggeError(f"--lang {lang!r}: use zh or en")
    if not (code.isdigit() and len(code) == 12):
        raise WanggeError(f"{code!r} is not a village code (12 digits)")
    start, end = _report_period(date_from, date_to)
    engine = _engine()
    _report_write(f"village {code}", lambda: village_report(engine, code, start, end, lang=lang), out_file)


def _register_simulate() -> None:
    from api.simulate import simulate_command

    app.command("simulate", help="Drive a running service with realistic traffic from every channel, and play "
                                 "its handlers (the paper's three cases included).")(simulate_command)


_register_simulate()


def main() -> None:
    try:
        app()
    except PackageInvalid as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(1)
    except (WanggeError, ValueError, OSError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
