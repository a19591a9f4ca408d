"""The outward faces of the loop: Open311 GeoReport v2 for citizens' apps, the live change feed (server-sent events
over a real uvicorn server, fed by LISTEN/NOTIFY) and photo uploads."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import queue
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import shapely
import uvicorn
import yaml
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from gis import accounts, db
from gis.intake import TZ, Report
from tests.conftest import ROOT, create_database
from tests.loop_helpers import PASSWORD, World, build_world

TAXONOMY = ROOT / "data" / "taxonomy"
PHONE = "13812345678"


@pytest.fixture(scope="module")
def world(server_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    url = create_database(server_url, "wangge_test_open311", template=template_db)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANGGE_SUPERVISION_SECONDS", "0")
        mp.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        with TestClient(create_app(url)) as client:
            client.app.state.upload_dir = tmp_path_factory.mktemp("uploads")  # type: ignore[attr-defined]
            w = build_world(client, url)
            engine = db.engine_for(url)
            with engine.connect() as conn:
                v2, geom = conn.execute(text("""SELECT v.code, ST_AsBinary(c.geom) FROM cells c
                                                JOIN jurisdictions v ON v.id = c.village_id
                                                WHERE v.code LIKE '330212101%' AND v.code <> :v
                                                ORDER BY c.code LIMIT 1"""), {"v": w.village}).one()
            accounts.create_user(engine, "v2_leader", PASSWORD, "grid_leader", v2)
            w.tokens["v2_leader"] = client.post("/api/v1/auth/token", data={
                "username": "v2_leader", "password": PASSWORD}).json()["access_token"]
            p = shapely.from_wkb(geom).representative_point()
            w.v2_point = (p.x, p.y)  # type: ignore[attr-defined]
            yield w
    db.engine_for(url).dispose()


# ---- Open311 GeoReport v2 ---------------------------------------------------------------------------------------

def test_services_are_the_categories_grouped_by_platform(world: World) -> None:
    platforms = yaml.safe_load((TAXONOMY / "platforms.yaml").read_text(encoding="utf-8"))
    names = {p["key"]: p["name_zh"] for p in platforms["sets"][platforms["active"]]}
    categories = yaml.safe_load((TAXONOMY / "categories.yaml").read_text(encoding="utf-8"))["categories"]
    r = world.client.get("/open311/v2/services.json")
    assert r.status_code == 200
    services = {s["service_code"]: s for s in r.json()}
    assert set(services) == {c["code"] for c in categories} and len(services) >= 30
    for c in categories:
        s = services[c["code"]]
        assert s["group"] == names[c["platform"]] and s["service_name"] == c["name_zh"], c["code"]
        assert s["type"] == "realtime" and s["metadata"] is False
    assert {s["group"] for s in services.values()} == {"综治工作", "市场监管", "综合执法", "便民服务"}
    assert services["food_safety"]["group"] == "市场监管" and services["illegal_fishing"]["group"] == "综合执法"
    one = world.client.get("/open311/v2/services/food_safety.json")
    assert one.status_code == 200 and one.json() == {"service_code": "food_safety", "attributes": []}
    gone = world.client.get("/open311/v2/services/no_such_thing.json")
    assert gone.status_code == 404 and gone.json()[0]["code"] == 404
    assert "no_such_thing" in gone.json()[0]["description"]


def _post311(w: World, **form: Any) -> Any:
    return w.client.post("/open311/v2/requests.json", data=form)


def _request(w: World, rid: str) -> dict[str, Any]:
    r = w.client.get(f"/open311/v2/requests/{rid}.json")
    assert r.status_code == 200, r.text
    assert PHONE not in r.text and "张" not in r.text
    (one,) = r.json()
    return dict(one)


def test_a_citizen_request_becomes_a_case_and_can_be_followed(world: World) -> None:
    lon, lat = world.point
    r = _post311(world, service_code="food_safety", lat=lat, long=lon, description="过期食品在售",
                 first_name="三", last_name="张", phone=PHONE)
    assert r.status_code == 201, r.text
    assert PHONE not in r.text
    rid = r.json()[0]["service_request_id"]
    case = world.get("centre", int(rid)).json()  # the same case the command centre works on
    assert case["source"] == "citizen" and case["category"] == "food_safety" and case["cell_code"] == world.cell
    assert case["reporter_phone"] == PHONE  # kept for the centre, never shown to the public
    req = _request(world, rid)
    assert (req["service_request_id"], req["status"], req["service_code"]) == (rid, "open", "food_safety")
    assert req["agency_responsible"] == "市场监管所" and req["description"] == "过期食品在售"
    assert req["expected_datetime"] == case["deadline"]
    assert req["lat"] == pytest.approx(lat) and req["long"] == pytest.approx(lon)
    # The centre closes the case: the request is closed.
    eid = int(rid)
    world.act("centre", eid, "accept")
    world.act("centre", eid, "dispatch", unit="market_supervision_office")
    world.act("market", eid, "start")
    world.act("market", eid, "feedback", result="goods removed")
    world.act("centre", eid, "review")
    assert world.act("centre", eid, "close").status_code == 200
    assert _request(world, rid)["status"] == "closed"


def test_a_request_by_address_and_one_without_a_location(world: World) -> None:
    r = _post311(world, service_code="illegal_parking", address_string="文昌街 ３号")
    assert r.status_code == 201, r.text
    req = _request(world, r.json()[0]["service_request_id"])
    assert req["status"] == "open" and req["lat"] and req["long"] and req["address"] == "文昌街 ３号"
    assert req["agency_responsible"] == "综合行政执法中队"
    # GeoReport v2 errors: a list of {code, description}, and 400 for anything the server cannot use.
    missing = _post311(world, service_code="illegal_parking", description="somewhere")
    assert missing.status_code == 400 and missing.json() == [
        {"code": 400, "description": "lat/long or address_string is required"}]
    unknown = _post311(world, service_code="no_such_thing", lat=world.point[1], long=world.point[0])
    assert unknown.status_code == 400 and "no_such_thing" in unknown.json()[0]["description"]
    no_code = _post311(world, lat=world.point[1], long=world.point[0])
    assert no_code.status_code == 400 and "service_code" in no_code.json()[0]["description"]
    assert world.client.get("/open311/v2/requests/999999999.json").json()[0]["code"] == 404


def test_request_list_filters(world: World) -> None:
    january = dt.datetime(2026, 1, 10, 9, tzinfo=TZ)
    old = world.client.app.state.intake.ingest([Report(  # type: ignore[attr-defined]
        source="citizen", category="stray_dogs", lon=world.other_point[0], lat=world.other_point[1],
        reporter_phone=PHONE, occurred_at=january)], now=january)[0]["id"]
    new = _post311(world, service_code="stray_dogs", lat=world.v2_point[1], long=world.v2_point[0],  # type: ignore[attr-defined]
                   phone=PHONE).json()[0]["service_request_id"]

    def ids(**params: str) -> list[str]:
        r = world.client.get("/open311/v2/requests.json", params=params)
        assert r.status_code == 200 and PHONE not in r.text
        return [q["service_request_id"] for q in r.json()]

    dogs = ids(service_code="stray_dogs")
    assert set(dogs) == {str(old), new}
    assert all(q["service_code"] == "stray_dogs" for q in world.client.get(
        "/open311/v2/requests.json", params={"service_code": "stray_dogs"}).json())
    assert ids(service_code="stray_dogs", start_date="2026-02-01T00:00:00+08:00") == [new]
    assert ids(service_code="stray_dogs", end_date="2026-02-01T00:00:00+08:00") == [str(old)]
    world.act("centre", old, "reject", reason="the dog was caught in January")
    closed, open_ = ids(status="closed"), ids(status="open")
    assert str(old) in closed and new in open_ and not set(closed) & set(open_)
    assert all(_request(world, rid)["status"] == "closed" for rid in closed)
    assert {_request(world, rid)["service_code"] for rid in ids(service_code="food_safety,stray_dogs")} <= {
        "food_safety", "stray_dogs"}
    pending = world.client.get("/open311/v2/requests.json", params={"status": "pending"})
    assert pending.status_code == 400 and "status" in pending.json()[0]["description"]


# ---- photos -----------------------------------------------------------------------------------------------------

def _png() -> bytes:
    """A real 1×1 red PNG."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


def test_photo_upload(world: World) -> None:
    eid = world.post("centre", {"source": "grid_worker", "category": "road_damage", "lon": world.point[0],
                                "lat": world.point[1]}).json()["id"]
    url = f"/api/v1/events/{eid}/photos"
    png = _png()
    r = world.client.post(url, files={"file": ("pothole.png", png, "image/png")}, headers=world.h("worker"))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["sha256"] == hashlib.sha256(png).hexdigest() and body["size"] == len(png)
    assert body["content_type"] == "image/png"
    stored = Path(world.client.app.state.upload_dir) / f"{body['sha256']}.png"  # type: ignore[attr-defined]
    assert stored.read_bytes() == png
    listed = world.get("centre", eid).json()["attachments"]
    assert {"id": body["id"], "url": None, "content_type": "image/png", "size": len(png)} in listed
    text_file = world.client.post(url, files={"file": ("notes.txt", b"just words", "text/plain")},
                                  headers=world.h("worker"))
    assert text_file.status_code == 415
    disguised = world.client.post(url, files={"file": ("notes.png", b"just words, not a picture", "image/png")},
                                  headers=world.h("worker"))
    assert disguised.status_code == 415
    huge = png + b"\x00" * (10 * 1024 * 1024)
    assert world.client.post(url, files={"file": ("huge.png", huge, "image/png")},
                             headers=world.h("worker")).status_code == 413
    # Someone who cannot see the case cannot add to it.
    assert world.client.post(url, files={"file": ("p.png", png, "image/png")},
                             headers=world.h("other_worker")).status_code == 404
    assert len(world.get("centre", eid).json()["attachments"]) == 1


# ---- the live change feed ---------------------------------------------------------------------------------------

def _listeners(w: World) -> int:
    with db.engine_for(w.url).connect() as conn:
        return int(conn.execute(text("""SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                                        AND query = 'LISTEN wangge_events'""")).scalar_one())


@pytest.fixture(scope="module")
def server(world: World) -> Iterator[str]:
    """The real app under uvicorn on a free local port, in a background thread."""
    before = _listeners(world)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANGGE_SUPERVISION_SECONDS", "0")
        srv = uvicorn.Server(uvicorn.Config(create_app(world.url), log_level="warning", timeout_graceful_shutdown=1))
        thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        give_up = time.monotonic() + 30
        while not (srv.started and _listeners(world) > before):  # serving, and its feed is listening
            assert thread.is_alive() and time.monotonic() < give_up, "the server did not start"
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            srv.should_exit = True
            thread.join(15)
            sock.close()
    assert not thread.is_alive()


class Subscription:
    """Reads GET /api/v1/feed in a thread; each complete SSE frame is put on `frames` with its arrival time."""

    def __init__(self, base: str, token: str) -> None:
        self.frames: queue.Queue[tuple[float, dict[str, str]]] = queue.Queue()
        self.status: int | None = None
        self.thread = threading.Thread(target=self._run, args=(base, token), daemon=True)
        self.thread.start()

    def _run(self, base: str, token: str) -> None:
        try:
            with httpx.stream("GET", f"{base}/api/v1/feed", headers={"Authorization": f"Bearer {token}"},
                              timeout=httpx.Timeout(10.0, read=None)) as r:
                self.status = r.status_code
                frame: dict[str, str] = {}
                for line in r.iter_lines():
                    if line:
                        key, _, value = line.partition(":")
                        frame[key or "comment"] = value.strip()
                    elif frame:
                        self.frames.put((time.monotonic(), frame))
                        frame = {}
        except httpx.HTTPError:
            pass  # the server went away at the end of the module

    def next(self, timeout: float) -> tuple[float, dict[str, str]] | None:
        try:
            return self.frames.get(timeout=timeout)
        except queue.Empty:
            return None

    def changes_until(self, event_id: int, within: float) -> list[tuple[float, dict[str, Any]]]:
        """Changed events as they arrive (with their arrival time), until one about `event_id` or time is up."""
        out: list[tuple[float, dict[str, Any]]] = []
        until = time.monotonic() + within
        while (left := until - time.monotonic()) > 0:
            got = self.next(left)
            if got and got[1].get("event") == "change":
                out += [(got[0], item) for item in json.loads(got[1]["data"])]
                if any(item["id"] == event_id for _, item in out):
                    break
        return out


def test_a_new_event_reaches_subscribers_in_its_scope_within_a_second(world: World, server: str) -> None:
    village = Subscription(server, world.tokens["village_leader"])
    elsewhere = Subscription(server, world.tokens["v2_leader"])
    for sub in (village, elsewhere):
        first = sub.next(5)
        assert first is not None and first[1] == {"comment": "connected"} and sub.status == 200
    with httpx.Client(base_url=server, headers=world.h("centre")) as c:
        sent = time.monotonic()
        r = c.post("/api/v1/events", json={"source": "grid_worker", "category": "sanitation",
                                           "lon": world.point[0], "lat": world.point[1]})
        assert r.status_code == 201, r.text
        eid = r.json()["id"]
        got = village.changes_until(eid, within=1.0)
        mine = [(at, item) for at, item in got if item["id"] == eid]
        assert mine, f"no change frame for event {eid} within 1 s: {got}"
        at, item = mine[0]
        assert at - sent < 1.0
        assert (item["status"], item["village_code"], item["category"]) == ("reported", world.village, "sanitation")
        # The other village's leader hears nothing of it: its stream is live (its own village's next case arrives,
        # and changes arrive in commit order), but the first case never came.
        there = c.post("/api/v1/events", json={"source": "grid_worker", "category": "sanitation",
                                               "lon": world.v2_point[0], "lat": world.v2_point[1]})  # type: ignore[attr-defined]
        other = there.json()["id"]
        seen = {item["id"] for _, item in elsewhere.changes_until(other, within=1.0)}
        assert other in seen and eid not in seen
        # A change of state is news too.
        assert c.post(f"/api/v1/events/{eid}/actions/accept").status_code == 200  # no body needed
        moved = [item for _, item in village.changes_until(eid, within=1.0) if item["id"] == eid]
        assert moved and moved[-1]["status"] == "accepted"


def test_the_feed_needs_a_login(server: str) -> None:
    with httpx.Client(base_url=server) as c:
        assert c.get("/api/v1/feed").status_code == 401
        assert c.get("/api/v1/feed", headers={"Authorization": "Bearer nonsense"}).status_code == 401
