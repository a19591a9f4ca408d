"""The closed loop end to end through the HTTP API on a real PostGIS: the paper's three cases, escalation,
illegal transitions, addresses and triage, and the append-only log."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from gis import accounts, db
from gis.workflow import replay
from tests.loop_helpers import World, world_in


@pytest.fixture(scope="module")
def world(server_url: str, template_db: str) -> Iterator[World]:
    yield from world_in(server_url, template_db, "wangge_test_loop")


def _timeline(w: World, event_id: int) -> list[str]:
    return [e["action"] for e in w.get("centre", event_id).json()["timeline"]]


def test_case1_shop_fire_hazard_flagged_by_the_warning_system(world: World) -> None:
    """Warning system → command centre → market supervision platform → inspection with the fire brigade →
    result uploaded → reviewed → closed and archived."""
    key = accounts.create_device_key(db.engine_for(world.url), "D0001")
    r = world.client.post("/api/v1/events", headers={"X-Device-Key": key},
                          json={"source": "sensor", "category": "fire_hazard_shop", "external_id": "ews-1",
                                "description": "electrical fire risk, shop on 横街"})
    assert r.status_code == 201, r.text
    e = r.json()
    assert e["platform"] == "market" and e["level"] == "township" and e["unit"] == "market_supervision_office"
    assert e["cell"] and e["worker"] and e["village"]["code"].startswith("330212101")
    assert e["deadline"] and e["status"] == "reported"
    eid = e["id"]
    assert world.act("centre", eid, "accept").json()["status"] == "accepted"
    d = world.act("centre", eid, "dispatch", unit="market_supervision_office", assisting=["fire_station"]).json()
    assert d["status"] == "dispatched" and {s["unit_code"] for s in d["subtasks"]} == {
        "market_supervision_office", "fire_station"}
    assert world.act("market", eid, "start").json()["status"] == "in_progress"
    blocked = world.act("market", eid, "feedback", result="extinguishers replaced")
    assert blocked.status_code == 422 and "fire_station" in blocked.json()["detail"]
    assert world.act("fire", eid, "assist_done", note="brigade checked the wiring").status_code == 200
    fb = world.act("market", eid, "feedback", result="extinguishers replaced; owner agreed a fix",
                   photos=["https://example.invalid/after.jpg"])
    assert fb.json()["status"] == "feedback"
    assert world.act("centre", eid, "review").json()["status"] == "review"
    closed = world.act("centre", eid, "close", note="verified on site").json()
    assert closed["status"] == "closed" and closed["closed_at"]
    assert [s["action"] for s in closed["timeline"]] == [
        "report", "accept", "dispatch", "start", "assist_done", "feedback", "review", "close"]
    assert closed["attachments"][0]["url"].endswith("after.jpg")
    # A device key can only speak for its own device.
    other = world.client.post("/api/v1/events", headers={"X-Device-Key": key},
                              json={"source": "sensor", "device_id": "D0002"})
    assert other.status_code == 403


def test_case2_blocked_fire_passage_joint_enforcement_with_rework(world: World) -> None:
    r = world.post("centre", {"source": "hotline", "category": "fire_passage_blocked", "address": "文昌街 ３号",
                              "reporter": {"name": "王小明", "phone": "13812345678"}})
    assert r.status_code == 201, r.text
    e = r.json()
    assert e["status"] == "reported" and e["platform"] == "enforcement" and e["unit"] == "fire_station"
    eid = e["id"]
    world.act("centre", eid, "accept")
    world.act("centre", eid, "dispatch", unit="fire_station",
              assisting=["governance_office", "police_station", "housing_office"])
    world.act("fire", eid, "start")
    for unit in ("governance", "police", "housing"):
        assert world.act(unit, eid, "assist_done").status_code == 200
    world.act("fire", eid, "feedback", result="passage cleared")
    world.act("centre", eid, "review")
    rework = world.act("centre", eid, "rework", reason="structure still standing")
    assert rework.json()["status"] == "in_progress" and rework.json()["reworks"] == 1
    world.act("fire", eid, "feedback", result="structure removed")
    world.act("centre", eid, "review")
    assert world.act("centre", eid, "close").json()["status"] == "closed"


def test_case3_fishing_nets_seen_on_an_evening_walk_escalates_to_the_district(world: World) -> None:
    r = world.post("worker", {"source": "grid_worker", "category": "illegal_fishing",
                              "lon": world.point[0], "lat": world.point[1], "description": "nets across the river"})
    e = r.json()
    assert r.status_code == 201 and e["cell"]["code"] == world.cell and e["worker"]["id"] == world.worker
    assert e["unit"] == "env_enforcement_squad" and e["platform"] == "enforcement"
    eid = e["id"]
    world.act("centre", eid, "accept")
    world.act("centre", eid, "dispatch", unit="env_enforcement_squad")
    world.act("env", eid, "start")
    # The township level ran out of time: the deadline restarts for the district.
    with db.engine_for(world.url).begin() as conn:
        conn.execute(text("UPDATE events SET deadline = now() - interval '1 day', overdue = true WHERE id = :i"),
                     {"i": eid})
    up = world.act("env", eid, "escalate", reason="nets belong to a boat registered in another district")
    body = up.json()
    assert up.status_code == 200 and body["level"] == "district" and body["status"] == "accepted"
    assert body["unit_code"] == "district_agriculture_bureau" and body["escalations"] == 1
    assert body["overdue"] is False
    assert dt.datetime.fromisoformat(body["deadline"]) > dt.datetime.now(dt.UTC)
    assert body["timeline"][-1]["data"]["to_level"] == "district"
    # The squad no longer holds the case; the district bureau does.
    assert world.act("env", eid, "feedback", result="x").status_code == 409
    assert world.act("district_agri", eid, "start").status_code == 409  # accepted: to be dispatched first
    again = world.act("admin", eid, "escalate", reason="no level above")
    assert again.status_code == 409 and "district" in again.json()["detail"]


def test_illegal_transition_is_409_with_the_allowed_actions_and_changes_nothing(world: World) -> None:
    eid = world.post("centre", {"source": "hotline", "category": "noise", "lon": world.point[0],
                                "lat": world.point[1]}).json()["id"]
    before = _timeline(world, eid)
    r = world.act("centre", eid, "close")
    assert r.status_code == 409
    assert "reported" in r.json()["detail"] and set(r.json()["allowed"]) >= {"accept", "reject"}
    wrong_role = world.act("leader", eid, "accept")
    assert wrong_role.status_code == 409 and "leader cannot accept" in wrong_role.json()["detail"]
    assert world.act("market", eid, "accept").status_code == 403  # not dispatched to that unit: out of scope
    assert _timeline(world, eid) == before
    assert world.act("centre", eid, "dispatch").status_code == 409  # not accepted yet
    world.act("centre", eid, "accept")
    missing = world.act("centre", eid, "dispatch")
    assert missing.status_code == 422 and "unit" in missing.json()["detail"]
    unknown = world.act("centre", eid, "dispatch", unit="no_such_unit")
    assert unknown.status_code == 404
    assert world.act("centre", eid, "fly").status_code == 409


def test_unknown_address_waits_for_a_location_and_the_centre_places_it(world: World) -> None:
    r = world.post("centre", {"source": "hotline", "category": "garbage_dumping", "address": "火星路999号"})
    e = r.json()
    assert e["status"] == "needs_location" and e["cell"] is None and "address not found" in e["reason"]
    queue = world.client.get("/api/v1/events", params={"status": "needs_location"}, headers=world.h("centre"))
    assert e["id"] in [i["id"] for i in queue.json()["items"]]
    placed = world.act("centre", e["id"], "locate", lon=world.point[0], lat=world.point[1]).json()
    assert placed["status"] == "reported" and placed["cell_code"] == world.cell and placed["reason"] is None


def test_point_outside_every_cell_goes_to_triage_with_its_reason(world: World) -> None:
    e = world.post("centre", {"source": "citizen", "category": "noise", "lon": 121.30, "lat": 29.70}).json()
    assert e["status"] == "needs_location" and "nearest cell" in e["reason"]


def test_assigned_task_with_only_a_village(world: World) -> None:
    e = world.post("centre", {"source": "assigned", "category": "petition", "village_code": world.village}).json()
    assert e["status"] == "reported" and e["village"]["code"] == world.village and e["cell"] is None
    bad = world.post("centre", {"source": "hotline", "category": "petition", "village_code": world.village})
    assert bad.status_code == 422 and "assigned" in bad.text


def test_return_to_the_centre_counts_against_dispatch(world: World) -> None:
    eid = world.post("centre", {"source": "hotline", "category": "food_safety", "lon": world.point[0],
                                "lat": world.point[1]}).json()["id"]
    world.act("centre", eid, "accept")
    world.act("centre", eid, "dispatch", unit="market_supervision_office")
    bad = world.act("market", eid, "return", reason_code="because")
    assert bad.status_code == 422 and "not_our_duty" in bad.json()["detail"]
    back = world.act("market", eid, "return", reason_code="not_our_duty", note="restaurant is licensed by the county")
    assert back.json()["status"] == "accepted" and back.json()["returns"] == 1 and back.json()["unit_code"] is None


def test_the_log_is_append_only_and_replays_to_the_status(world: World) -> None:
    engine = db.engine_for(world.url)
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(text("UPDATE event_log SET note = 'edited' WHERE id = 1"))
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(text("DELETE FROM event_log"))
    # The log refers to its case without a foreign key (migration 0006): a case itself cannot be deleted.
    with pytest.raises(DBAPIError, match="cannot be deleted"), engine.begin() as conn:
        conn.execute(text("DELETE FROM events WHERE id = (SELECT max(event_id) FROM event_log)"))
    with engine.connect() as conn:
        rows = conn.execute(text("""SELECT e.id, e.status, json_agg(json_build_object('id', l.id,
                                           'from_status', l.from_status, 'to_status', l.to_status) ORDER BY l.id)
                                    FROM events e JOIN event_log l ON l.event_id = e.id GROUP BY e.id""")).all()
    assert len(rows) >= 5
    for event_id, status, log in rows:
        assert log[0]["from_status"] is None, event_id
        assert replay(log[1:], log[0]["to_status"]) == status, event_id
