"""Single reports go through the intake worker process: it answers as the server would, survives being killed, and
leaves with the server."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from gis import db
from gis.errors import DatabaseUnavailable
from gis.intake import BatchInvalid, Report
from gis.intake_worker import IntakeFailed, IntakeWorker, WorkerLost
from gis.settings import LocateSettings
from tests.conftest import create_database
from tests.loop_helpers import World, build_world, world_in


@pytest.fixture(scope="module")
def world(server_url: str, template_db: str) -> Iterator[World]:
    yield from world_in(server_url, template_db, "wangge_test_intake_worker")


def _worker(w: World) -> IntakeWorker:
    worker = w.client.app.state.intake_queue.worker  # type: ignore[attr-defined]
    assert isinstance(worker, IntakeWorker)
    return worker


def _stored(w: World, external_id: str) -> int:
    with db.engine_for(w.url).connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM events WHERE external_id = :x"),
                                {"x": external_id}).scalar_one())


def test_a_single_report_is_decided_in_the_worker_process(world: World) -> None:
    got = world.post("worker", {"source": "grid_worker", "category": "illegal_advertising", "lon": world.point[0],
                                "lat": world.point[1], "external_id": "iw-1"})
    assert got.status_code == 201, got.text
    assert got.json()["cell"]["code"] == world.cell and got.json()["worker"]["id"] == world.worker
    proc = _worker(world).process
    assert proc is not None and proc.poll() is None and proc.pid != os.getpid()
    # The same key again: the first event, answered by the worker from the database.
    again = world.post("worker", {"source": "grid_worker", "category": "illegal_advertising", "lon": world.point[0],
                                  "lat": world.point[1], "external_id": "iw-1"})
    assert again.status_code == 200 and again.json()["id"] == got.json()["id"]
    assert _stored(world, "iw-1") == 1


def test_a_bad_report_gets_its_own_error_across_the_process_boundary(world: World) -> None:
    got = world.post("centre", {"source": "sensor", "category": "fire_hazard_shop", "device_id": "NO-SUCH-DEVICE"})
    assert got.status_code == 422 and "NO-SUCH-DEVICE" in got.text
    assert got.json()["errors"][0]["index"] == 0


def test_the_server_carries_on_after_its_worker_is_killed(world: World) -> None:
    worker = _worker(world)
    ok = world.post("worker", {"source": "grid_worker", "category": "street_lighting", "lon": world.point[0],
                               "lat": world.point[1], "external_id": "iw-before"})
    assert ok.status_code == 201
    assert worker.process is not None
    first = worker.process.pid
    os.kill(first, signal.SIGKILL)
    worker.process.wait(10)
    # The next report starts a new worker (a report the dead one had in hand would have been answered 503).
    got = world.post("worker", {"source": "grid_worker", "category": "road_damage", "lon": world.point[0],
                                "lat": world.point[1], "external_id": "iw-after"})
    assert got.status_code == 201, got.text
    assert worker.process is not None and worker.process.pid != first and _stored(world, "iw-after") == 1


def test_a_group_in_flight_when_the_worker_dies_fails_with_a_retry_hint(world: World) -> None:
    worker = IntakeWorker(world.url, LocateSettings())
    report = Report(source="hotline", category="noise", lon=world.other_point[0], lat=world.other_point[1],
                    external_id="iw-lost")
    try:
        assert isinstance(worker.ingest([Report(source="hotline", category="noise", lon=world.point[0],
                                                lat=world.point[1], external_id="iw-warm")])[0], dict)
        assert worker.process is not None
        # Caught in the middle of a group: its first statements wait on a lock held here, and it is killed.
        with db.engine_for(world.url).connect() as blocker:
            blocker.execute(text("LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))
            threading.Timer(1.0, os.kill, (worker.process.pid, signal.SIGKILL)).start()
            with pytest.raises(WorkerLost, match="same external_id or Idempotency-Key"):
                worker.ingest([report])
            blocker.rollback()
        assert worker.process is None  # gone, and started afresh by the next group
        (out,) = worker.ingest([report])
        assert isinstance(out, dict) and out["outcome"] == "created"
        bad = Report(source="sensor", category="fire_hazard_shop", device_id="NO-SUCH-DEVICE")
        good = Report(source="hotline", category="illegal_advertising", lon=world.other_point[0],
                      lat=world.other_point[1])
        first, second = worker.ingest([bad, good])
        assert isinstance(first, BatchInvalid) and first.errors[0]["message"]  # the details survive pickling
        assert isinstance(second, dict) and second["outcome"] == "created"
        # An error nobody foresaw crosses as one line (HTTP 500), and the worker carries on.
        (odd,) = worker.ingest([Report(source="hotline", category="noise", lon=world.point[0], lat=world.point[1],
                                       occurred_at="yesterday")])  # type: ignore[arg-type]
        assert isinstance(odd, IntakeFailed) and "AttributeError" in str(odd)
        assert isinstance(worker.ingest([Report(source="hotline", category="stray_dogs", lon=world.point[0],
                                                lat=world.point[1])])[0], dict)
    finally:
        worker.close()


def test_a_database_that_does_not_answer_is_a_503_not_a_traceback(world: World) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    worker = IntakeWorker(f"postgresql+psycopg://nobody@127.0.0.1:{port}/nothing", LocateSettings())
    try:
        (out,) = worker.ingest([Report(source="hotline", category="noise", lon=world.point[0], lat=world.point[1])])
        assert isinstance(out, DatabaseUnavailable) and "does not answer" in str(out)
    finally:
        worker.close()


def test_the_worker_leaves_with_the_server(server_url: str, template_db: str) -> None:
    url = create_database(server_url, "wangge_test_intake_worker_exit", template=template_db)
    with TestClient(create_app(url)) as client:
        w = build_world(client, url)
        assert w.post("worker", {"source": "grid_worker", "category": "street_lighting", "lon": w.point[0],
                                 "lat": w.point[1]}).status_code == 201
        proc = _worker(w).process
        assert proc is not None and proc.poll() is None
    assert proc.poll() is not None  # the server's shutdown closed the socket and the worker left
    db.engine_for(url).dispose()


def test_after_the_database_drops_the_workers_connection_reports_go_through_again(world: World) -> None:
    body = {"source": "grid_worker", "category": "sanitation", "lon": world.other_point[0],
            "lat": world.other_point[1], "external_id": "iw-reconnect"}
    assert world.post("worker", {**body, "category": "stray_dogs", "external_id": "iw-reconnect-0"}).status_code == 201
    with db.engine_for(world.url).connect() as conn:
        killed = conn.execute(text("""SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                                      WHERE datname = current_database() AND pid <> pg_backend_pid()""")).scalar_one()
    assert killed >= 1
    # The worker's kept connection is gone; it finds out before anything is committed, and the group is written
    # on a fresh connection: the reporter notices nothing.
    got = world.post("worker", body)
    assert got.status_code == 201, got.text
    assert _stored(world, "iw-reconnect") == 1
