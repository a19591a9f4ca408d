"""The scope matrix: every role × an event in or out of its jurisdiction × read and act.

Out of scope a case does not exist for you (read → 404) and you may not touch it (act → 403); in scope but in the
wrong state or for the wrong role an action is refused with 409 and the actions you may take. The list endpoint
never shows more than a single read would, and reporters' phones are masked for all but the command centre and
admins.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import shapely
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from gis import accounts, db
from gis.intake import TZ
from tests.conftest import create_database
from tests.loop_helpers import PASSWORD, TOWN, World, build_world

EAST_TOWN = "330212102000"  # 东钱镇, the neighbouring township
_hours = itertools.count(1)


@pytest.fixture(scope="module")
def world(server_url: str, template_db: str) -> Iterator[World]:
    url = create_database(server_url, "wangge_test_scope", template=template_db)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANGGE_SUPERVISION_SECONDS", "0")  # no background sweep: nothing changes but what we do
        mp.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        with TestClient(create_app(url)) as client:
            w = build_world(client, url)
            engine = db.engine_for(url)
            accounts.create_user(engine, "town_admin", PASSWORD, "admin", TOWN)
            w.tokens["town_admin"] = client.post("/api/v1/auth/token", data={
                "username": "town_admin", "password": PASSWORD}).json()["access_token"]
            w.places = _places(w)  # type: ignore[attr-defined]
            yield w
    db.engine_for(url).dispose()


def _places(w: World) -> dict[str, tuple[float, float]]:
    """A point in cell A (the grid worker's), cell B (same village), another J town village, and 东钱镇."""
    with db.engine_for(w.url).connect() as conn:
        v2 = conn.execute(text("""SELECT ST_AsBinary(c.geom) FROM cells c JOIN jurisdictions v ON v.id = c.village_id
                                  WHERE v.code LIKE '330212101%' AND v.code <> :v ORDER BY c.code LIMIT 1"""),
                          {"v": w.village}).scalar_one()
        east = conn.execute(text("""SELECT ST_AsBinary(c.geom) FROM cells c JOIN jurisdictions v ON v.id = c.village_id
                                    WHERE v.code LIKE '330212102%' ORDER BY c.code LIMIT 1""")).scalar_one()

    def inside(wkb: bytes) -> tuple[float, float]:
        p = shapely.from_wkb(wkb).representative_point()
        return (p.x, p.y)

    return {"A": w.point, "B": w.other_point, "V2": inside(v2), "EAST": inside(east)}


def make(w: World, place: str, category: str, state: str, phone: str | None = None) -> int:
    """A new case at `place` driven (by the district admin) to `state`: reported, accepted or dispatched:<unit>."""
    lon, lat = w.places[place]  # type: ignore[attr-defined]
    # Each case an hour apart in time, so that no two are merged as reports of the same problem.
    occurred = dt.datetime(2026, 6, 1, tzinfo=TZ) - dt.timedelta(hours=next(_hours))
    body: dict[str, Any] = {"source": "hotline", "category": category, "lon": lon, "lat": lat,
                            "occurred_at": occurred.isoformat()}
    if phone:
        body["reporter"] = {"name": "张三丰", "phone": phone}
    r = w.post("admin", body)
    assert r.status_code == 201, r.text
    eid = int(r.json()["id"])
    if state != "reported":
        assert w.act("admin", eid, "accept").status_code == 200
    if state.startswith("dispatched:"):
        d = w.act("admin", eid, "dispatch", unit=state.split(":", 1)[1])
        assert d.status_code == 200, d.text
    return eid


PAYLOAD = {"accept": {}, "start": {}, "close": {}, "feedback": {"result": "done"}, "supervise": {"note": "hurry"}}
# who, the case (where, category, state), read, action, act, allowed actions (for a 409)
# Places: A = the grid worker's cell, B = another cell of the same village, V2 = another village of J town,
# EAST = a village of 东钱镇. garbage_dumping is handled at village level, food_safety and noise at township level.
MATRIX = [
    # grid worker: the cases of their own cell, and of those only the village-level ones are theirs to handle
    ("worker", ("A", "garbage_dumping", "dispatched:village_committee"), 200, "start", 200, None),
    ("worker", ("B", "garbage_dumping", "dispatched:village_committee"), 404, "start", 403, None),
    ("worker", ("A", "food_safety", "dispatched:market_supervision_office"), 200, "start", 409, []),
    ("worker", ("A", "garbage_dumping", "dispatched:village_committee"), 200, "feedback", 409, ["start"]),
    # village grid leader: the village's cases, village-level ones to act on
    ("village_leader", ("B", "garbage_dumping", "reported"), 200, "accept", 200, None),
    ("village_leader", ("V2", "garbage_dumping", "reported"), 404, "accept", 403, None),
    ("village_leader", ("B", "noise", "reported"), 200, "accept", 409, []),
    ("village_leader", ("A", "garbage_dumping", "dispatched:village_committee"), 200, "start", 409, ["escalate"]),
    # unit handler (market supervision office): only cases dispatched to the unit
    ("market", ("A", "food_safety", "dispatched:market_supervision_office"), 200, "start", 200, None),
    ("market", ("A", "food_safety", "dispatched:fire_station"), 404, "start", 403, None),
    ("market", ("A", "food_safety", "reported"), 404, "accept", 403, None),  # routed to market, not dispatched yet
    ("market", ("A", "food_safety", "dispatched:market_supervision_office"), 200, "close", 409,
     ["escalate", "return", "start"]),
    # command centre of J town: the whole township, not the next one
    ("centre", ("A", "noise", "reported"), 200, "accept", 200, None),
    ("centre", ("EAST", "noise", "reported"), 404, "accept", 403, None),
    ("centre", ("A", "noise", "dispatched:enforcement_squad"), 200, "start", 409, ["escalate", "supervise"]),
    # leader: reads the township, every action refused
    ("leader", ("A", "noise", "reported"), 200, "accept", 409, []),
    ("leader", ("A", "noise", "accepted"), 200, "supervise", 409, []),
    ("leader", ("EAST", "noise", "reported"), 404, "accept", 403, None),
    # planner: reads the township, acts on no case
    ("planner", ("A", "noise", "reported"), 200, "accept", 409, []),
    ("planner", ("EAST", "noise", "reported"), 404, "accept", 403, None),
    # admin: the district admin everywhere; an admin scoped to J town not in 东钱镇
    ("admin", ("EAST", "noise", "reported"), 200, "accept", 200, None),
    ("admin", ("A", "noise", "reported"), 200, "close", 409, ["accept", "escalate", "reject"]),
    ("town_admin", ("EAST", "noise", "reported"), 404, "accept", 403, None),
]


def _listed(w: World, who: str) -> set[int]:
    ids: set[int] = set()
    offset = 0
    while True:
        page = w.client.get("/api/v1/events", params={"limit": 500, "offset": offset}, headers=w.h(who)).json()
        ids |= {i["id"] for i in page["items"]}
        offset += 500
        if offset >= page["total"]:
            return ids


@pytest.mark.parametrize(("who", "case", "read", "action", "act", "allowed"), MATRIX,
                         ids=[f"{m[0]}-{m[1][0]}-{m[1][1]}-{m[1][2].split(':')[0]}-{m[3]}" for m in MATRIX])
def test_scope_matrix(world: World, who: str, case: tuple[str, str, str], read: int, action: str, act: int,
                      allowed: list[str] | None) -> None:
    eid = make(world, *case)
    before = world.get("admin", eid).json()
    got = world.get(who, eid)
    assert got.status_code == read, got.text
    assert (eid in _listed(world, who)) == (read == 200)
    r = world.act(who, eid, action, **PAYLOAD[action])
    assert r.status_code == act, r.text
    after = world.get("admin", eid).json()
    if act == 200:
        assert after["status"] != before["status"] and after["timeline"][-1]["actor"] == who
        return
    assert (after["status"], after["version"], len(after["timeline"])) == (
        before["status"], before["version"], len(before["timeline"]))
    if act == 409:
        assert r.json()["allowed"] == allowed
    else:
        assert "allowed" not in r.json()  # nothing about an out-of-scope case is revealed


def test_unit_sees_a_case_from_dispatch_on_and_keeps_its_history(world: World) -> None:
    eid = make(world, "A", "food_safety", "accepted")
    assert world.get("market", eid).status_code == 404  # accepted by the centre, not yet handed to anyone
    world.act("admin", eid, "dispatch", unit="market_supervision_office", assisting=["food_safety_office"])
    assert world.get("market", eid).status_code == 200
    assert world.get("fire", eid).status_code == 404
    back = world.act("market", eid, "return", reason_code="not_our_duty")
    assert back.json()["status"] == "accepted" and back.json()["unit_code"] is None
    world.act("admin", eid, "dispatch", unit="fire_station")
    # The market office still reads the case it returned but may no longer act on it; the fire station now may.
    assert world.get("market", eid).status_code == 200
    assert world.act("market", eid, "start").status_code == 409
    assert world.act("fire", eid, "start").status_code == 200
    up = world.act("fire", eid, "escalate", reason="licence matter for the district bureau")
    assert up.json()["unit_code"] == "district_market_bureau"
    accounts.create_user(db.engine_for(world.url), "bureau", PASSWORD, "unit_handler", "330212000000",
                         unit_code="district_market_bureau")
    world.tokens["bureau"] = world.client.post("/api/v1/auth/token", data={
        "username": "bureau", "password": PASSWORD}).json()["access_token"]
    assert world.get("bureau", eid).status_code == 200  # escalated to the bureau: its case now


def test_the_list_never_shows_more_than_a_single_read(world: World) -> None:
    """For every account and every case in the database: listed ⇔ readable ⇔ the scope rule says so."""
    # A few more cases so that every place and state is present.
    for place in ("A", "B", "V2", "EAST"):
        make(world, place, "noise", "reported")
        make(world, place, "garbage_dumping", "dispatched:village_committee")
    lost = world.post("admin", {"source": "hotline", "category": "noise", "address": "火星路999号"}).json()
    assert lost["status"] == "needs_location" and lost["township"] is None  # in the centre's triage queue
    with db.engine_for(world.url).connect() as conn:
        events = conn.execute(text("""SELECT e.id, e.cell_code, e.worker_id, e.village_code, e.township_code,
                                             e.district_code, e.status, e.unit_code, e.escalations,
                                             array_remove(array_agg(s.unit_code), NULL) AS units
                                      FROM events e LEFT JOIN subtasks s ON s.event_id = e.id
                                      GROUP BY e.id""")).all()
        users = conn.execute(text("SELECT username, role, scope_code, unit_code, worker_id FROM users")).all()

    def visible(u: Any, e: Any) -> bool:
        if u.role == "grid_worker":
            return e.cell_code == u.scope_code or e.worker_id == u.worker_id
        column = {"village": e.village_code, "township": e.township_code, "district": e.district_code}
        level = "district" if u.scope_code.endswith("000000") else "township" if u.scope_code.endswith("000") \
            else "village"
        inside = column[level] == u.scope_code
        if u.role in ("command_centre", "admin") and e.township_code is None:
            return True  # the triage queue: not yet placed in any jurisdiction
        if u.role == "unit_handler":
            return inside and (u.unit_code in e.units or (e.unit_code == u.unit_code and e.escalations > 0))
        return inside

    assert len(events) >= 30
    one_per_kind = {"worker", "other_worker", "village_leader", "market", "fire", "centre", "leader", "planner",
                    "admin", "town_admin"}
    for u in users:
        if u.username not in one_per_kind:
            continue
        expected = {e.id for e in events if visible(u, e)}
        assert _listed(world, u.username) == expected, u.username
        for e in events:
            assert world.get(u.username, e.id).status_code == (200 if e.id in expected else 404), (u.username, e.id)


def test_reporter_phone_is_masked_for_every_role_but_centre_and_admin(world: World) -> None:
    eid = make(world, "A", "food_safety", "dispatched:market_supervision_office", phone="13812345678")
    readers = {"worker", "village_leader", "market", "leader", "planner", "centre", "admin", "town_admin"}
    for who in readers:
        one = world.get(who, eid).json()
        listed = next(i for i in world.client.get("/api/v1/events", params={"limit": 500},
                                                   headers=world.h(who)).json()["items"] if i["id"] == eid)
        full = who in ("centre", "admin", "town_admin")
        assert one["reporter_phone"] == listed["reporter_phone"] == ("13812345678" if full else "138****5678"), who
        assert one["reporter_name"] == listed["reporter_name"] == ("张三丰" if full else "张**"), who
        if not full:
            assert "13812345678" not in str(one) and "13812345678" not in str(listed), who
