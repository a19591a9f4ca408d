"""The `wangge` command line: an adapter over gis/ like the HTTP API. Errors print as one line, exit 1."""

from __future__ import annotations

import datetime as dt
import json
import sys
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
    path: Annotated[Path, typer.Argument(help="package folder, .zip or .gpkg")],
    valid_from: Annotated[
        str | None, typer.Option(help="date the cells and assignments take effect (YYYY-MM-DD)")
    ] = None,
    if_empty: Annotated[bool, typer.Option("--if-empty", help="do nothing when a dataset is already loaded")] = False,
) -> None:
    """Validate a boundary package and load it in one transaction (all or nothing), replacing the dataset."""
    from gis.store import load_package, revision

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


@app.command()
def export(
    path: Annotated[Path, typer.Argument(help="folder to write the package into")],
    format: Annotated[str, typer.Option("--format", help="gpkg or geojson")] = "geojson",
    date: Annotated[str | None, typer.Option(help="cells valid on this day (YYYY-MM-DD); default today")] = None,
) -> None:
    """Write the dataset back as a boundary package."""
    from gis.store import export_dataset

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
) -> None:
    """Serve the API (and its docs at /docs) over HTTP."""
    import uvicorn

    from api.app import create_app

    settings = ServerSettings()
    engine = _engine()
    out.print(f"serving on http://{host or settings.host}:{port or settings.port} (docs at /docs)")
    uvicorn.run(create_app(engine.url.render_as_string(hide_password=False)),
                host=host or settings.host, port=port or settings.port, log_level="info")


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
    serve(host, port)


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
