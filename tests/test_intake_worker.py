"""Single reports go through the intake worker process, batches through a pool of them: they answer as the server
would, survive being killed, and leave with the server."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from gis import db
from gis.errors import DatabaseUnavailable
from gis.intake import BatchInvalid, Report
from gis.intake_worker import IntakeFailed, IntakeWorker, WorkerLost, WorkerPool
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


def _pool(w: World) -> WorkerPool:
    pool = w.client.app.state.batch_workers  # type: ignore[attr-defined]
    assert isinstance(pool, WorkerPool)
    return pool


def _batch(w: World, who: str, events: list[dict[str, Any]]) -> Any:
    return w.client.post("/api/v1/events/batch", json={"events": events}, headers=w.h(who))


def test_batches_are_parsed_decided_and_answered_in_batch_worker_processes(world: World) -> None:
    events = [{"source": "citizen", "category": "garbage_dumping", "lon": world.point[0], "lat": world.point[1],
               "occurred_at": f"2025-02-0{k + 1}T09:00:00+08:00", "external_id": f"bw-{k}"} for k in range(3)]
    got = _batch(world, "centre", events)
    assert got.status_code == 200, got.text
    results = got.json()["results"]
    assert [r["outcome"] for r in results] == ["created"] * 3
    assert {r["cell"]["code"] for r in results} == {world.cell}
    pids = {w.process.pid for w in _pool(world).workers if w.process is not None and w.process.poll() is None}
    assert pids and os.getpid() not in pids
    assert _batch(world, "centre", events).json()["results"][0]["outcome"] == "duplicate"
    # Refusals cross the process boundary as the server's own answers, and nothing is stored.
    bad = _batch(world, "centre", [{**events[0], "external_id": "bw-bad-0"},
                                   {**events[0], "lat": "north", "external_id": "bw-bad-1"}])
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][:3] == ["events", 1, "lat"]
    refused = _batch(world, "leader", [{**events[0], "external_id": "bw-leader"}])
    assert refused.status_code == 403 and "leader account cannot report" in refused.json()["detail"]
    unlocatable = _batch(world, "centre", [{**events[0], "external_id": "bw-nowhere-0"},
                                           {"source": "sensor", "device_id": "NO-SUCH-DEVICE",
                                            "external_id": "bw-nowhere-1"}])
    assert unlocatable.status_code == 422 and "NO-SUCH-DEVICE" in unlocatable.text
    assert _stored(world, "bw-bad-0") == _stored(world, "bw-leader") == _stored(world, "bw-nowhere-0") == 0


def _waiting(conn: Any, n: int, answers: list[Any], seconds: float = 20.0) -> int:
    """How many transactions of this database wait for a lock, once n do (or every answer came, or time is up)."""
    busy, deadline = 0, threading.Event()
    for _ in range(int(seconds * 10)):
        # pg_locks, not pg_stat_activity: the latter is read once per transaction, and `conn` holds one open.
        busy = conn.execute(text("""SELECT count(*) FROM pg_locks WHERE NOT granted
                                    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                                 """)).scalar_one()
        if busy >= n or all(a.done() for a in answers) or deadline.wait(0.1):
            break
    return int(busy)


def test_two_batches_are_decided_at_once_in_two_processes_and_a_third_waits_its_turn(world: World) -> None:
    def batch(tag: str) -> Any:
        return _batch(world, "centre", [{"source": "hotline", "category": "noise", "lon": world.other_point[0],
                                         "lat": world.other_point[1], "external_id": f"bw-two-{tag}-{k}"}
                                        for k in range(50)])

    with ThreadPoolExecutor(3) as pool, db.engine_for(world.url).connect() as blocker:
        blocker.execute(text("LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))  # they get as far as writing
        answers = [pool.submit(batch, tag) for tag in ("a", "b", "c")]
        try:
            assert _waiting(blocker, 2, answers) == 2  # two transactions at once, from two worker processes
            assert _waiting(blocker, 3, answers, seconds=1.5) == 2  # the third waits for a free worker
        finally:
            blocker.rollback()
        assert [a.result(timeout=30).status_code for a in answers] == [200, 200, 200]
    assert len({w.process.pid for w in _pool(world).workers if w.process is not None}) == 2


def test_a_batch_in_flight_when_its_worker_dies_is_a_503_and_its_retry_stores_it_once(world: World) -> None:
    events = [{"source": "grid_worker", "category": "road_damage", "lon": world.point[0] + k * 0.0001,
               "lat": world.point[1], "external_id": f"bw-lost-{k}"} for k in range(20)]
    with ThreadPoolExecutor(1) as pool, db.engine_for(world.url).connect() as blocker:
        blocker.execute(text("LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))
        answer = pool.submit(_batch, world, "centre", events)
        try:
            assert _waiting(blocker, 1, [answer]) == 1
            for w in _pool(world).workers:  # the one with the batch among them
                if w.process is not None:
                    os.kill(w.process.pid, signal.SIGKILL)
            lost = answer.result(timeout=30)
        finally:
            blocker.rollback()
    assert lost.status_code == 503 and "same external_ids or Idempotency-Keys" in lost.json()["detail"]
    again = _batch(world, "centre", events)  # a fresh worker; the lost attempt stored nothing
    assert again.status_code == 200 and "duplicate" not in {r["outcome"] for r in again.json()["results"]}
    with db.engine_for(world.url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM intake_keys WHERE key LIKE 'bw-lost-%'")).scalar_one() == 20
