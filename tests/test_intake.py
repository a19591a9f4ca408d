"""Intake rules: idempotency under concurrent retries, alarm-storm merging across channels, batches, masking."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import zoneinfo
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import numpy as np
import psycopg
import pytest
from sqlalchemy import text

from gis import db, intake_io
from gis.intake import KEYS_UNSEEN_ABOVE, TZ, BatchInvalid, Report, local_days
from gis.intake_batch import COARSE_ABOVE, COPY_ABOVE, MAX_SLOT_LOCKS, SLOTS_PER_EPOCH
from gis.intake_io import Plan, Send
from tests.loop_helpers import World, world_in


@pytest.fixture(scope="module")
def world(server_url: str, template_db: str) -> Iterator[World]:
    yield from world_in(server_url, template_db, "wangge_test_intake")


def _count(w: World, sql: str, **params: object) -> int:
    with db.engine_for(w.url).connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


def test_twenty_concurrent_retries_make_one_event(world: World) -> None:
    intake = world.client.app.state.intake  # type: ignore[attr-defined]
    report = Report(source="hotline", category="noise", lon=world.point[0], lat=world.point[1],
                    external_id="12345-2026-000777")
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: intake.ingest([report])[0], range(20)))
    assert len({r["id"] for r in results}) == 1
    assert sorted(r["outcome"] for r in results).count("created") == 1
    assert _count(world, "SELECT count(*) FROM events WHERE external_id = '12345-2026-000777'") == 1
    again = world.post("centre", {"source": "hotline", "category": "noise", "lon": world.point[0],
                                  "lat": world.point[1], "external_id": "12345-2026-000777"})
    assert again.status_code == 200 and again.json()["id"] == results[0]["id"]
    # The same external id from another source is another report.
    other = world.post("centre", {"source": "citizen", "category": "noise", "lon": world.other_point[0],
                                  "lat": world.other_point[1], "external_id": "12345-2026-000777"})
    assert other.status_code == 201 and other.json()["id"] != results[0]["id"]


def test_idempotency_key_header(world: World) -> None:
    body = {"source": "grid_worker", "category": "street_lighting", "lon": world.other_point[0],
            "lat": world.other_point[1]}
    first = world.post("worker", body, headers={"Idempotency-Key": "phone-app-42"})
    second = world.post("worker", body, headers={"Idempotency-Key": "phone-app-42"})
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"] and second.json()["outcome"] == "duplicate"


def test_a_retried_report_that_was_merged_is_not_merged_again(world: World) -> None:
    """The keys of a report merged into a case are kept too — its Idempotency-Key as well as its external_id."""
    t = dt.datetime.now(TZ).replace(microsecond=0).isoformat()
    body = {"source": "grid_worker", "category": "illegal_parking", "lon": world.point[0] + 0.0003,
            "lat": world.point[1], "occurred_at": t}
    first = world.post("worker", body)
    merged = world.post("worker", {**body, "lon": world.point[0] + 0.0004}, headers={"Idempotency-Key": "app-77"})
    tagged = world.post("worker", {**body, "lon": world.point[0] + 0.0002, "external_id": "patrol-77"})
    assert first.status_code == 201 and [merged.json()["outcome"], tagged.json()["outcome"]] == ["merged"] * 2
    assert merged.json()["id"] == tagged.json()["id"] == first.json()["id"] and tagged.json()["reports"] == 3
    again = world.post("worker", {**body, "lon": world.point[0] + 0.0004}, headers={"Idempotency-Key": "app-77"})
    again_too = world.post("worker", {**body, "lon": world.point[0] + 0.0002, "external_id": "patrol-77"})
    for got in (again, again_too):
        assert got.status_code == 200 and got.json()["outcome"] == "duplicate"
        assert got.json()["id"] == first.json()["id"] and got.json()["reports"] == 3


def test_alarm_storm_and_cross_channel_reports_merge_into_one_case(world: World) -> None:
    engine = db.engine_for(world.url)
    with engine.connect() as conn:
        lon, lat = conn.execute(text("SELECT ST_X(geom), ST_Y(geom) FROM devices WHERE id = 'D0005'")).one()
    intake = world.client.app.state.intake  # type: ignore[attr-defined]
    t0 = dt.datetime(2026, 11, 20, 21, 0, tzinfo=TZ)
    first = intake.ingest([Report(source="sensor", device_id="D0005", occurred_at=t0)])[0]
    assert first["outcome"] == "created"
    storm = intake.ingest([Report(source="sensor", device_id="D0005", occurred_at=t0 + dt.timedelta(minutes=m))
                           for m in range(1, 6)])
    assert {r["id"] for r in storm} == {first["id"]} and {r["outcome"] for r in storm} == {"merged"}
    # A grid worker's report of the same thing 20 m away and 10 minutes later joins the case too.
    near = intake.ingest([Report(source="grid_worker", category=first_category(world, first["id"]),
                                 lon=lon + 0.0002, lat=lat, occurred_at=t0 + dt.timedelta(minutes=10))])[0]
    assert near["id"] == first["id"] and near["reports"] == 7
    # 200 m away, or an hour later, is another case.
    far = intake.ingest([Report(source="grid_worker", category=first_category(world, first["id"]),
                                lon=lon + 0.002, lat=lat, occurred_at=t0 + dt.timedelta(minutes=12))])[0]
    late = intake.ingest([Report(source="citizen", category=first_category(world, first["id"]),
                                 lon=lon, lat=lat + 0.0001, occurred_at=t0 + dt.timedelta(minutes=75))])[0]
    assert far["outcome"] == "created" and late["outcome"] == "created"
    timeline = world.get("centre", first["id"]).json()["timeline"]
    assert [e["action"] for e in timeline].count("merge") == 6


def test_a_device_registered_while_the_server_runs_is_known_at_once(world: World) -> None:
    """The intake keeps the devices of the dataset revision it last saw; a new revision (a load) is noticed in
    the same transaction, so the new device's first alarm is located, not refused."""
    intake = world.client.app.state.intake  # type: ignore[attr-defined]
    t0 = dt.datetime(2026, 11, 21, 9, 0, tzinfo=TZ)
    assert intake.ingest([Report(source="sensor", device_id="D0006", occurred_at=t0)])[0]["outcome"] == "created"
    lon, lat = world.other_point
    engine = db.engine_for(world.url)
    with engine.begin() as conn:  # what a load does: new rows and a new dataset revision
        conn.execute(text("""INSERT INTO devices (id, kind, subtype, name, geom)
                             SELECT 'DNEW1', kind, subtype, 'new smoke sensor', ST_SetSRID(ST_MakePoint(:x, :y), 4490)
                             FROM devices WHERE id = 'D0006'"""), {"x": lon, "y": lat})
        conn.execute(text("UPDATE dataset_state SET revision = revision + 1 WHERE id = 1"))
    got = intake.ingest([Report(source="sensor", device_id="DNEW1", occurred_at=t0)])[0]
    assert got["outcome"] == "created" and got["cell"]["code"] == world.other_cell
    with pytest.raises(BatchInvalid, match="device DNEW2 is not known"):
        intake.ingest([Report(source="sensor", device_id="DNEW2", occurred_at=t0)])


def first_category(w: World, event_id: int) -> str:
    return str(w.get("centre", event_id).json()["category"])


def test_batch_is_all_or_nothing_with_per_item_results(world: World) -> None:
    before = _count(world, "SELECT count(*) FROM events")
    good = {"source": "hotline", "category": "road_damage", "lon": world.point[0], "lat": world.point[1]}
    bad = world.client.post("/api/v1/events/batch", headers=world.h("centre"), json={"events": [
        good, {**good, "category": "no_such_thing"}, {**good, "lon": None}]})
    assert bad.status_code == 422
    assert _count(world, "SELECT count(*) FROM events") == before
    ok = world.client.post("/api/v1/events/batch", headers=world.h("centre"), json={"events": [
        {**good, "external_id": f"b-{i}", "lon": world.point[0] + i * 0.003} for i in range(5)]})
    assert ok.status_code == 200
    results = ok.json()["results"]
    assert len(results) == 5 and all(r["id"] for r in results)
    items = bad.json()["errors"]
    assert [e["index"] for e in items] == [1, 2]
    assert "no_such_thing" in items[0]["message"] and "lon and lat" in items[1]["message"]
    pigeon = world.client.post("/api/v1/events/batch", headers=world.h("centre"),
                               json={"events": [good, {**good, "source": "pigeon"}]})
    assert pigeon.status_code == 422 and "source" in pigeon.text
    # A point off the globe is named by its place in the batch, whether all points share one CRS (converted in
    # one go) or not.
    for other in ({}, {"crs": "EPSG:4490"}):
        off = world.client.post("/api/v1/events/batch", headers=world.h("centre"), json={"events": [
            good, {**good, **other}, {**good, "lat": 95.0}]})
        assert off.status_code == 422, off.text
        assert [e["index"] for e in off.json()["errors"]] == [2]
    assert _count(world, "SELECT count(*) FROM events") == before + 5


@pytest.mark.parametrize("cells", [10, 120])  # 30 reports go in one INSERT; 360 stream by COPY as they are decided
def test_a_storm_inside_one_batch_makes_one_case_per_place(world: World, cells: int) -> None:
    with db.engine_for(world.url).connect() as conn:
        points = conn.execute(text("""SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p FROM cells
                                      WHERE valid_to IS NULL ORDER BY code LIMIT :n) c"""), {"n": cells}).all()
    t0 = dt.datetime(2026, 10, 1 + cells % 20, 8, 0, tzinfo=TZ)
    events = [{"source": "citizen", "category": "garbage_dumping", "lon": x, "lat": y,
               "occurred_at": (t0 + dt.timedelta(minutes=5 * m)).isoformat(), "external_id": f"st{cells}-{k}-{m}"}
              for m in range(3) for k, (x, y) in enumerate(points)]
    events.append(dict(events[0]))  # the first report sent twice
    got = world.client.post("/api/v1/events/batch", headers=world.h("centre"), json={"events": events})
    assert got.status_code == 200, got.text
    results = got.json()["results"]
    assert [r["outcome"] for r in results] == ["created"] * cells + ["merged"] * 2 * cells + ["duplicate"]
    assert [r["reports"] for r in results[cells:3 * cells]] == [2] * cells + [3] * cells
    ids = [r["id"] for r in results[:cells]]
    assert [r["id"] for r in results[cells:2 * cells]] == ids == [r["id"] for r in results[2 * cells:3 * cells]]
    assert results[-1]["id"] == ids[0]
    with db.engine_for(world.url).connect() as conn:
        stored = conn.execute(text("""SELECT report_count, last_report_at, occurred_at,
                                             (SELECT count(*) FROM event_reports r WHERE r.event_id = e.id),
                                             (SELECT count(*) FROM event_log l WHERE l.event_id = e.id
                                              AND l.action = 'report'),
                                             (SELECT count(*) FROM event_log l WHERE l.event_id = e.id
                                              AND l.action = 'merge')
                                      FROM events e WHERE id = ANY(:ids)"""), {"ids": ids}).all()
    assert len(stored) == cells
    assert {(n, last, first, linked, rep, mer) for n, last, first, linked, rep, mer in stored} == {
        (3, t0 + dt.timedelta(minutes=10), t0, 2, 1, 2)}


def _until_commit(plan: Plan[Any]) -> Plan[None]:
    """A plan carried out up to (not including) its last round trip: its transaction stays open, its locks held."""
    answer = None
    while True:
        step = plan.send(answer)
        if isinstance(step, Send) and step.last:
            return
        answer = yield step


def test_an_import_of_one_month_does_not_hold_up_reports_of_another(world: World) -> None:
    """A large batch locks the stretch of time it covers, not every place: a report waits for it only if it could
    join one of its cases (before, a batch of more than ~100 places took every lock bucket)."""
    intake = world.client.app.state.intake  # type: ignore[attr-defined]
    t0 = dt.datetime(2025, 6, 1, 10, 0, tzinfo=TZ)
    backlog = [Report(source="citizen", category="garbage_dumping", lon=world.point[0] + (k % 30) * 0.0008,
                      lat=world.point[1] + (k // 30) * 0.0008, occurred_at=t0 + dt.timedelta(seconds=5 * k),
                      external_id=f"import-2025-{k}") for k in range(600)]
    assert len(backlog) > COARSE_ABOVE
    live = Report(source="grid_worker", category="garbage_dumping", lon=world.point[0], lat=world.point[1],
                  occurred_at=t0 + dt.timedelta(days=30), external_id="live-a-month-later")
    # 1,024 slots later: where slot numbers modulo 1,024 made it wait.
    weeks_later = dataclasses.replace(live, occurred_at=t0 + 1024 * dt.timedelta(minutes=30),
                                      external_id="live-1024-slots-later")
    then = Report(source="grid_worker", category="garbage_dumping", lon=world.point[0], lat=world.point[1],
                  occurred_at=t0 + dt.timedelta(minutes=3), external_id="live-then")
    pool = ThreadPoolExecutor(2)
    with psycopg.connect(world.url.replace("postgresql+psycopg", "postgresql")) as held:
        try:
            intake_io.run(held, _until_commit(intake.plan(backlog)))  # the import, not yet committed
            for other in (live, weeks_later):
                later = pool.submit(intake.ingest, [other])
                assert later.result(timeout=10)[0]["outcome"] == "created"  # not held up
            same_time = pool.submit(intake.ingest, [then])
            with pytest.raises(FutureTimeout):
                same_time.result(timeout=1.5)  # it could join the import's first case: it waits for the import
        finally:
            held.rollback()
            pool.shutdown()
    assert same_time.result()[0]["outcome"] == "created"
    assert _count(world, "SELECT count(*) FROM intake_keys WHERE key LIKE 'import-2025-%'") == 0


def test_an_import_spanning_months_holds_its_epochs_not_every_time(world: World) -> None:
    """A batch whose reports touch more than MAX_SLOT_LOCKS time slots locks their 32-hour epochs instead (a
    bounded number of locks): a report that could join one of its cases waits for it, one of another year not."""
    intake = world.client.app.state.intake  # type: ignore[attr-defined]
    t0 = dt.datetime(2024, 3, 1, 8, 0, tzinfo=TZ)
    backlog = [Report(source="citizen", category="illegal_parking", lon=world.point[0] + (k % 40) * 0.0003,
                      lat=world.point[1] + (k // 40) * 0.0003, occurred_at=t0 + dt.timedelta(hours=k),
                      external_id=f"import-2024-{k}") for k in range(MAX_SLOT_LOCKS // 2 + 20)]
    slots = 2 * len(backlog)  # an hour apart: each report's own slot and the next, none shared
    near_a_case = Report(source="grid_worker", category="illegal_parking", lon=world.point[0], lat=world.point[1],
                         occurred_at=t0 + dt.timedelta(minutes=10), external_id="live-near-2024-import")
    next_year = dataclasses.replace(near_a_case, occurred_at=t0 + dt.timedelta(days=365),
                                    external_id="live-a-year-after-2024-import")
    pool = ThreadPoolExecutor(2)
    with psycopg.connect(world.url.replace("postgresql+psycopg", "postgresql")) as held:
        try:
            intake_io.run(held, _until_commit(intake.plan(backlog)))
            held_locks = held.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                      "AND pid = pg_backend_pid()").fetchone()
            assert slots > MAX_SLOT_LOCKS and held_locks is not None and held_locks[0] <= slots // SLOTS_PER_EPOCH + 2
            later = pool.submit(intake.ingest, [next_year])
            assert later.result(timeout=10)[0]["outcome"] == "created"
            same_time = pool.submit(intake.ingest, [near_a_case])
            with pytest.raises(FutureTimeout):
                same_time.result(timeout=1.5)
        finally:
            held.rollback()
            pool.shutdown()
    assert same_time.result()[0]["outcome"] == "created"


def test_a_retry_racing_its_original_waits_for_it_and_finds_its_case(world: World) -> None:
    """Nothing but the key ties the two (other place, other month: no merge lock in common): the retry waits at
    the key's unique index until the original commits, then is decided again and answers with the original's
    case."""
    intake = world.client.app.state.intake  # type: ignore[attr-defined]
    t0 = dt.datetime(2025, 3, 1, 10, 0, tzinfo=TZ)
    original = [Report(source="hotline", category="noise", lon=world.point[0] + (k % 30) * 0.0008,
                       lat=world.point[1] + (k // 30) * 0.0008, occurred_at=t0 + dt.timedelta(seconds=5 * k),
                       external_id=f"race-{k}") for k in range(600)]
    retry = Report(source="hotline", category="road_damage", lon=world.other_point[0], lat=world.other_point[1],
                   occurred_at=t0 + dt.timedelta(days=40), external_id="race-7")
    reached, go = threading.Event(), threading.Event()

    def paused(plan: Plan[Any]) -> Plan[Any]:
        """The plan, stopping before its last round trip (its rows and keys written) until `go`."""
        answer = None
        while True:
            try:
                step = plan.send(answer)
            except StopIteration as stop:
                return stop.value
            if isinstance(step, Send) and step.last:
                reached.set()
                go.wait(30)
            answer = yield step

    def run_original() -> list[dict[str, Any]]:
        with db.engine_for(world.url).connect() as conn, conn.begin():
            return intake_io.run(conn.connection.driver_connection,  # type: ignore[arg-type]
                                 paused(intake.plan(original)), commit=True)

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(run_original)
        try:
            assert reached.wait(30)
            racing = pool.submit(intake.ingest, [retry])
            with pytest.raises(FutureTimeout):
                racing.result(timeout=1.5)  # waiting at the key
        finally:
            go.set()
        stored = first.result(timeout=30)
        got = racing.result(timeout=30)[0]
    assert got["outcome"] == "duplicate" and got["id"] == stored[7]["id"]
    assert _count(world, "SELECT count(*) FROM events WHERE external_id = 'race-7'") == 1


def test_a_large_batch_stores_what_a_small_one_stores(world: World) -> None:
    """Large batches write their cases in COPY's binary format of their own making, small ones through psycopg's
    adaptation: the same reports give the same rows and log entries (tabs, newlines and backslashes in the text,
    microseconds in the times, points, devices, addresses and keys included) and the times the answers give."""
    intake = world.client.app.state.intake  # type: ignore[attr-defined]
    t0 = dt.datetime(2024, 3, 1, 9, 0, tzinfo=TZ)
    odd = ["tab\there", "two\nlines", "back\\slash \\N", "回车\r\n换行", "", "NULL", "plain 描述"]

    def reports(tag: str) -> list[Report]:
        return [Report(source=("citizen", "hotline", "grid_worker")[k % 3], category=("noise", "road_damage")[k % 2],
                       lon=world.point[0] + (k % 12) * 0.0009, lat=world.point[1] + (k // 12) * 0.0009 - 0.004,
                       occurred_at=t0 + dt.timedelta(hours=k, microseconds=k * 7919 % 1_000_000),
                       description=odd[k % len(odd)] if k % 4 else None,
                       reporter_name=odd[(k + 1) % len(odd)] if k % 4 else None,
                       reporter_phone=f"1380000{k:04d}" if k % 4 else None,
                       external_id=f"{tag}-{odd[k % len(odd)]}-{k}") for k in range(COPY_ABOVE + 50)]
        # (every fourth with nothing but its place, time and key: the common case, formatted on its own)

    with db.engine_for(world.url).connect() as conn:  # a point 20 m outside the grid: snapped to its nearest cell
        edge = conn.execute(text("""
            SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_Transform(ST_PointN(ST_ExteriorRing(ST_GeometryN(ST_Buffer(
                ST_Transform(ST_Union(geom), 4550), 20), 1)), 1), 4490) AS p
                FROM cells WHERE valid_to IS NULL) q""")).one()
    # plus one at the grid's edge (snapped), one 20 km outside the town (needs_location with its reason), a
    # device's alarm, an address with an Idempotency-Key and an address that is not found (no point)
    extra = [Report(source="citizen", category="noise", lon=edge[0], lat=edge[1], occurred_at=t0),
             Report(source="citizen", category="noise", lon=world.point[0] + 0.2, lat=world.point[1], occurred_at=t0,
                    description="far"),
             Report(source="sensor", category="fire_hazard_shop", device_id="D0011", occurred_at=t0),
             Report(source="hotline", category="fire_passage_blocked", address="文昌街 ３号", occurred_at=t0,
                    idempotency_key="idem-copy"),
             Report(source="hotline", category="noise", address="火星路999号", occurred_at=t0)]
    large = intake.ingest([*reports("large"), *extra])
    small = [res for k in range(0, COPY_ABOVE + 50, 50) for res in intake.ingest(reports("small")[k:k + 50])]
    small += intake.ingest([dataclasses.replace(r, idempotency_key=r.idempotency_key and "idem-copy-2")
                            for r in extra])
    assert len(large) == len(small) == COPY_ABOVE + 55 and {r["outcome"] for r in large} == {"created"}

    def stored(results: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        with db.engine_for(world.url).connect() as conn:
            return [tuple(row) for row in conn.execute(text("""
                SELECT to_jsonb(e) - '{id,external_id,idempotency_key,received_at,updated_at,deadline}'::text[],
                       ST_AsEWKT(geom), split_part(external_id, '-', 2),
                       (SELECT jsonb_agg(to_jsonb(l) - '{id,event_id,at}'::text[] ORDER BY l.id) FROM event_log l
                        WHERE l.event_id = e.id AND l.at = e.received_at), deadline, received_at = updated_at,
                       idempotency_key IS NOT NULL
                FROM events e WHERE id = ANY(:ids) ORDER BY array_position(CAST(:ids AS bigint[]), id)"""),
                {"ids": [r["id"] for r in results]})]

    got, expected = stored(large), stored(small)
    assert [g[:4] + g[5:] for g in got] == [e[:4] + e[5:] for e in expected]
    assert [g[4] for g in got] == [dt.datetime.fromisoformat(r["deadline"]) for r in large]
    assert [g[0]["located_by"] for g in got[-3:-1]] == ["device", "address"] and got[-2][6]
    assert got[-4][3] == [{"actor": "intake:citizen", "role": "system", "action": "report", "from_status": None,
                           "to_status": "needs_location", "note": got[-4][0]["reason"], "data": {"source": "citizen"}}]
    assert got[-1][0]["status"] == "needs_location" and got[-1][1] is None  # no point, never a guessed one
    assert [g[0]["description"] for g in got[:len(odd)]] == [odd[k] if k % 4 else None for k in range(len(odd))]
    assert got[-5][0]["snapped"] is True and 19 < got[-5][0]["distance_m"] < 21 and got[-5][0]["cell_code"]
    assert got[-4][0]["status"] == "needs_location" and got[-4][1] is not None
    assert got[-4][0]["reason"] and "outside every grid cell" in got[-4][0]["reason"]


@pytest.mark.parametrize("size", [3, COPY_ABOVE + 20])
def test_a_batch_keeps_each_events_photos_and_reporter(world: World, size: int) -> None:
    """Photos and the reporter of each event of a batch, small or large, are stored with its case."""
    events = [{"source": "citizen", "category": "noise", "lon": world.point[0] + (k % 10) * 0.0009,
               "lat": world.point[1] - 0.006 - (k // 10) * 0.0009, "external_id": f"ph{size}-{k}",
               "occurred_at": f"2025-11-{1 + k % 28:02d}T10:00:00+08:00"} for k in range(size)]
    events[1] |= {"photos": ["https://example.invalid/a.jpg", "https://example.invalid/b.jpg"],
                  "reporter": {"name": "王小明", "phone": "13812345678"}}
    got = world.client.post("/api/v1/events/batch", headers=world.h("centre"), json={"events": events})
    assert got.status_code == 200, got.text
    ids = [r["id"] for r in got.json()["results"]]
    case = world.get("centre", ids[1]).json()
    assert [a["url"] for a in case["attachments"]] == ["https://example.invalid/a.jpg", "https://example.invalid/b.jpg"]
    assert case["reporter_name"] == "王小明" and case["reporter_phone"] == "13812345678"
    assert world.get("centre", ids[0]).json()["attachments"] == []


def test_a_large_batch_sent_again_finds_every_case_it_stored(world: World) -> None:
    """A large batch does not look its keys up before writing: one stored before fails it at the keys' index and
    it is decided again, looking. The answers are the same either way, and nothing is stored twice."""
    intake = world.client.app.state.intake  # type: ignore[attr-defined]
    t0 = dt.datetime(2025, 6, 1, 9, 0, tzinfo=TZ)
    reports = [Report(source="sensor" if k % 2 else "citizen", category="noise",
                      lon=world.point[0] + (k % 25) * 0.0009, lat=world.point[1] + (k // 25) * 0.0009 - 0.008,
                      occurred_at=t0 + dt.timedelta(hours=k), external_id=f"again-{k}")
               for k in range(KEYS_UNSEEN_ABOVE + 20)]
    before = intake.ingest([reports[300]])[0]  # one of them came alone before
    first = intake.ingest(reports)
    assert [r["outcome"] for r in first].count("created") == len(reports) - 1
    assert first[300]["outcome"] == "duplicate" and first[300]["id"] == before["id"]
    again = intake.ingest(reports)
    assert {r["outcome"] for r in again} == {"duplicate"}
    assert [r["id"] for r in again] == [r["id"] for r in first]
    assert [r["cell"] for r in again] == [r["cell"] for r in first]
    assert _count(world, "SELECT count(*) FROM events WHERE external_id LIKE 'again-%'") == len(reports)
    assert _count(world, "SELECT count(*) FROM intake_keys WHERE key LIKE 'again-%'") == len(reports)


def test_a_large_batch_merges_into_the_open_cases_it_meets(world: World) -> None:
    """A large batch reads the open cases once per stretch of its reports' times (per category), a small plan once
    per report: the same rule decides either way — same category, within the distance and the window, not
    closed or rejected."""
    intake = world.client.app.state.intake  # type: ignore[attr-defined]
    t0 = dt.datetime(2025, 9, 1, 8, 0, tzinfo=TZ)
    lon, lat = world.point

    def at(k: int) -> tuple[float, float]:
        return lon + 0.003 * k, lat + 0.004

    old = [intake.ingest([Report(source="citizen", category="noise", lon=at(k)[0], lat=at(k)[1],
                                 occurred_at=t0)])[0]["id"] for k in range(4)]
    assert world.act("centre", old[1], "reject", reason="a prank").status_code == 200
    near = 0.0002  # ~20 m east
    special = [Report(source="sensor", category="noise", lon=at(0)[0] + near, lat=at(0)[1],
                      occurred_at=t0 + dt.timedelta(minutes=10)),  # joins case 0
               Report(source="sensor", category="noise", lon=at(1)[0] + near, lat=at(1)[1],
                      occurred_at=t0 + dt.timedelta(minutes=10)),  # case 1 was rejected
               Report(source="sensor", category="road_damage", lon=at(2)[0] + near, lat=at(2)[1],
                      occurred_at=t0 + dt.timedelta(minutes=10)),  # another category
               Report(source="sensor", category="noise", lon=at(3)[0] + near, lat=at(3)[1],
                      occurred_at=t0 + dt.timedelta(hours=2))]  # out of the window
    # and reports 90 m apart in a block south of them, 40 s apart: one stretch of time, nothing to join
    scattered = [Report(source="citizen", category=("noise", "road_damage")[k % 2],
                        lon=lon + (k % 25) * 0.0009, lat=lat - 0.002 - (k // 25) * 0.0009,
                        occurred_at=t0 - dt.timedelta(minutes=20) + dt.timedelta(seconds=40 * k))
                 for k in range(COARSE_ABOVE + 10)]
    got = intake.ingest([*scattered[:300], *special, *scattered[300:]])
    decided = got[300:304]
    assert [r["outcome"] for r in decided] == ["merged", "created", "created", "created"]
    assert decided[0]["id"] == old[0] and decided[0]["reports"] == 2
    assert {r["outcome"] for r in got[:300] + got[304:]} == {"created"}


def test_batch_refuses_more_than_10000(world: World) -> None:
    good = {"source": "hotline", "category": "road_damage", "lon": world.point[0], "lat": world.point[1]}
    r = world.client.post("/api/v1/events/batch", headers=world.h("centre"), json={"events": [good] * 10_001})
    assert r.status_code == 422


def test_reporter_phone_is_masked_except_for_the_centre(world: World) -> None:
    e = world.post("centre", {"source": "hotline", "category": "neighbour_dispute", "lon": world.point[0],
                              "lat": world.point[1], "reporter": {"name": "李秀英", "phone": "13912345678"}}).json()
    assert world.get("centre", e["id"]).json()["reporter_phone"] == "13912345678"
    for who in ("leader", "village_leader", "worker"):
        got = world.get(who, e["id"]).json()
        assert got["reporter_phone"] == "139****5678" and got["reporter_name"] == "李**", who


def test_read_only_and_unknown_roles_cannot_report(world: World) -> None:
    body = {"source": "hotline", "category": "noise", "lon": world.point[0], "lat": world.point[1]}
    assert world.post("leader", body).status_code == 403
    assert world.post("planner", body).status_code == 403
    assert world.client.post("/api/v1/events", json=body).status_code == 401
    assert world.client.post("/api/v1/events", json=body, headers={"X-Device-Key": "nope"}).status_code == 401


def test_the_worker_is_the_one_responsible_when_the_event_occurred(world: World) -> None:
    """A worker hands the cell over on 1 March 2026: reports are judged by the day they occurred."""
    engine = db.engine_for(world.url)
    with engine.begin() as conn:
        cell_id = conn.execute(text("SELECT id FROM cells WHERE code = :c"), {"c": world.cell}).scalar_one()
        conn.execute(text("INSERT INTO workers (id, name) VALUES ('W9999', '接任网格员')"))
        conn.execute(text("""UPDATE worker_assignments SET valid_to = '2026-03-01'
                             WHERE cell_id = :c AND role = 'grid_worker'"""), {"c": cell_id})
        conn.execute(text("""INSERT INTO worker_assignments (worker_id, role, cell_id, valid_from)
                             VALUES ('W9999', 'grid_worker', :c, '2026-03-01')"""), {"c": cell_id})
        conn.execute(text("UPDATE dataset_state SET revision = revision + 1"))
    intake = world.client.app.state.intake  # type: ignore[attr-defined]
    lon, lat = world.point
    before, after = intake.ingest([
        Report(source="grid_worker", category="road_damage", lon=lon, lat=lat,
               occurred_at=dt.datetime(2026, 2, 27, 9, tzinfo=TZ)),
        Report(source="grid_worker", category="street_lighting", lon=lon, lat=lat,
               occurred_at=dt.datetime(2026, 3, 2, 9, tzinfo=TZ)),
    ])
    assert before["worker"]["id"] == world.worker and after["worker"]["id"] == "W9999"
    assert before["cell"]["code"] == after["cell"]["code"] == world.cell


def test_concurrent_single_reports_are_written_together_and_a_bad_one_fails_alone(world: World) -> None:
    import asyncio

    from gis.intake_queue import IntakeQueue

    intake = world.client.app.state.intake  # type: ignore[attr-defined]
    calls: list[int] = []
    original = intake.ingest

    def counting(reports: list[Report], now: dt.datetime | None = None, connection: object = None) -> list[dict]:
        calls.append(len(reports))
        return original(reports, now, connection)

    queue = IntakeQueue(intake)
    queue.intake = type("Counting", (), {"ingest": staticmethod(counting)})()  # type: ignore[assignment]
    lon, lat = world.other_point
    good = [Report(source="hotline", category="illegal_advertising", lon=lon + k * 0.003, lat=lat,
                   external_id=f"gc-{k}")
            for k in range(20)]
    bad = Report(source="hotline", category="not_a_category", lon=lon, lat=lat)

    async def main() -> list[object]:
        return await asyncio.gather(*(queue.submit(r) for r in [*good[:10], bad, *good[10:]]),
                                    return_exceptions=True)

    outcomes = asyncio.run(main())
    queue.close()
    assert isinstance(outcomes[10], BatchInvalid) and "not_a_category" in str(outcomes[10])
    created = [o for k, o in enumerate(outcomes) if k != 10]
    assert all(isinstance(o, dict) and o["outcome"] == "created" for o in created)
    assert len({o["id"] for o in created}) == 20  # type: ignore[index]
    assert max(calls) > 1  # reports that arrived while a group was written went in together


def test_local_days_are_the_dates_astimezone_gives() -> None:
    """Dates of event times in the town's zone, looked up per quarter hour: the same as per instant, across the
    1940s summer times of Asia/Shanghai, another zone's DST and a zone 5:45 ahead."""
    stamps = np.random.default_rng(7).uniform(-1e9, 2.5e9, 50_000)
    for tz in (TZ, zoneinfo.ZoneInfo("America/New_York"), zoneinfo.ZoneInfo("Asia/Kathmandu")):
        assert local_days(stamps, tz) == [dt.datetime.fromtimestamp(s, tz).date() for s in stamps.tolist()]
    assert local_days(np.array([])) == []


def test_a_batch_answers_briefly_when_asked(world: World) -> None:
    """?answer=brief gives each item's id, outcome, status, cell code and reason: the same cases the full answer
    names; an unknown answer form is refused, naming the parameter."""
    t = "2025-06-03T09:00:00+08:00"
    base = {"source": "citizen", "category": "noise", "occurred_at": t}
    events = [{**base, "lon": world.point[0], "lat": world.point[1], "external_id": "brief-a"},
              {**base, "lon": world.point[0] + 0.2, "lat": world.point[1], "external_id": "brief-far"},
              {**base, "lon": world.point[0], "lat": world.point[1], "external_id": "brief-a"},
              {**base, "lon": world.point[0] + 0.0001, "lat": world.point[1], "external_id": "brief-near",
               "occurred_at": "2025-06-03T09:05:00+08:00"}]
    got = world.client.post("/api/v1/events/batch?answer=brief", headers=world.h("centre"), json={"events": events})
    assert got.status_code == 200, got.text
    brief = got.json()["results"]
    assert [set(b) for b in brief] == [{"id", "outcome", "status", "cell", "reason"}] * 4
    assert [b["outcome"] for b in brief] == ["created", "created", "duplicate", "merged"]
    assert brief[1]["status"] == "needs_location" and brief[1]["cell"] is None
    assert "outside every grid cell" in brief[1]["reason"]
    again = world.client.post("/api/v1/events/batch", headers=world.h("centre"), json={"events": events})
    full = again.json()["results"]
    assert [f["outcome"] for f in full] == ["duplicate"] * 4
    assert [(b["id"], b["status"], b["cell"], b["reason"]) for b in brief] == [
        (f["id"], f["status"], f["cell"] and f["cell"]["code"], f["reason"]) for f in full]
    assert brief[0]["cell"] == world.cell
    bogus = world.client.post("/api/v1/events/batch?answer=all", headers=world.h("centre"), json={"events": events})
    assert bogus.status_code == 422 and "answer" in bogus.text


def test_connections_talk_utf8_whatever_the_environment_says(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The intake writes text in COPY's binary format as UTF-8 bytes, which the server reads in the connection's
    encoding: a PGCLIENTENCODING left in the environment must not change it (GBK would garble every name)."""
    monkeypatch.setenv("PGCLIENTENCODING", "GBK")
    url = world.url + ("&" if "?" in world.url else "?") + "application_name=wangge-encoding-test"
    engine = db.engine_for(url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW client_encoding").scalar() == "UTF8"
            assert conn.exec_driver_sql("SELECT 'J镇 横塘村'").scalar() == "J镇 横塘村"
    finally:
        engine.dispose()
