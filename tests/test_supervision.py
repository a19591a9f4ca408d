"""Supervision (督办): `sweep` marks cases due soon and overdue, records one notice per case and deadline, writes the
case log, escalates by the category's rule, and keeps all of it in the database across restarts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from api.app import create_app
from gis import accounts, db
from gis.cases import Cases
from gis.intake import TZ, Report
from gis.supervision import sweep
from gis.workflow import Actor
from tests.conftest import create_database
from tests.loop_helpers import TOWN, World, build_world

CENTRE = Actor("centre", "command_centre", TOWN)
MARKET = Actor("market", "unit_handler", TOWN, "market_supervision_office")


@pytest.fixture(scope="module")
def world(server_url: str, template_db: str) -> Iterator[World]:
    url = create_database(server_url, "wangge_test_supervision", template=template_db)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANGGE_SUPERVISION_SECONDS", "0")  # only the sweeps this module runs, at the times it says
        mp.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        with TestClient(create_app(url)) as client:
            yield build_world(client, url)
    db.engine_for(url).dispose()


def _case(w: World, category: str, grade: int, at: dt.datetime, steps: list[tuple[Actor, str, dict[str, Any]]]
          ) -> tuple[int, dt.datetime]:
    """A case received at `at` and moved along by `steps`; returns its id and deadline."""
    state = w.client.app.state  # type: ignore[attr-defined]
    r = state.intake.ingest([Report(source="grid_worker", category=category, grade=grade, lon=w.point[0],
                                    lat=w.point[1], occurred_at=at)], now=at)[0]
    for i, (actor, action, payload) in enumerate(steps, 1):
        state.cases.act(r["id"], action, actor, payload, now=at + dt.timedelta(minutes=i))
    return int(r["id"]), dt.datetime.fromisoformat(r["deadline"])


def _state(w: World, eid: int) -> dict[str, Any]:
    with db.engine_for(w.url).connect() as conn:
        e = conn.execute(text("""SELECT status, level, unit_code, deadline, overdue, due_soon, escalations
                                 FROM events WHERE id = :i"""), {"i": eid}).one()
        notices = conn.execute(text("""SELECT kind, unit_code, deadline FROM supervision_notices WHERE event_id = :i
                                       ORDER BY id"""), {"i": eid}).all()
        log = conn.execute(text("""SELECT action, actor, role, from_status, to_status, data FROM event_log
                                   WHERE event_id = :i AND action IN ('supervise', 'escalate') ORDER BY id"""),
                           {"i": eid}).all()
    return {**dict(e._mapping), "notices": [tuple(n) for n in notices], "log": [dict(r._mapping) for r in log]}


def _sweep(w: World, now: dt.datetime, cases: Cases | None = None, engine: Any = None) -> Any:
    state = w.client.app.state  # type: ignore[attr-defined]
    return sweep(engine or state.engine, cases or state.cases, now=now, due_soon_hours=4)


def test_due_soon_then_overdue_once_and_no_escalation_when_the_category_says_no(world: World) -> None:
    """public_sentiment is handled in the village and never escalates by itself."""
    eid, deadline = _case(world, "public_sentiment", 3, dt.datetime(2026, 5, 11, 9, tzinfo=TZ), [
        (CENTRE, "accept", {}), (CENTRE, "dispatch", {"unit": "village_committee"})])
    assert _sweep(world, deadline - dt.timedelta(hours=5)).due_soon == 0  # not yet within the 4 h window
    assert _state(world, eid)["notices"] == []
    soon = _sweep(world, deadline - dt.timedelta(hours=3))
    s = _state(world, eid)
    assert (soon.due_soon, s["due_soon"], s["overdue"]) == (1, True, False)
    assert s["notices"] == [("due_soon", "village_committee", deadline)]
    late = _sweep(world, deadline + dt.timedelta(minutes=1))
    s = _state(world, eid)
    assert (late.overdue, late.escalated, s["overdue"]) == (1, 0, True)
    assert s["notices"] == [("due_soon", "village_committee", deadline), ("overdue", "village_committee", deadline)]
    assert [(e["action"], e["actor"], e["role"], e["from_status"], e["to_status"], e["data"]["kind"])
            for e in s["log"]] == [("supervise", "supervision", "system", "dispatched", "dispatched", "due_soon"),
                                   ("supervise", "supervision", "system", "dispatched", "dispatched", "overdue")]
    # Later sweeps change nothing: no second notice, no second log entry, and the case stays in the village.
    again = _sweep(world, deadline + dt.timedelta(hours=2))
    assert (again.overdue, again.due_soon) == (0, 0)
    assert _state(world, eid) == s
    assert (s["level"], s["escalations"], s["status"]) == ("village", 0, "dispatched")


def test_overdue_case_escalates_when_its_category_says_so(world: World) -> None:
    """food_safety (grade 3: 24 hours) goes up from the township to the district bureau when its time is up."""
    eid, deadline = _case(world, "food_safety", 3, dt.datetime(2026, 6, 8, 9, tzinfo=TZ), [
        (CENTRE, "accept", {}), (CENTRE, "dispatch", {"unit": "market_supervision_office"}), (MARKET, "start", {})])
    assert deadline == dt.datetime(2026, 6, 9, 9, tzinfo=TZ)
    now = deadline + dt.timedelta(minutes=30)
    result = _sweep(world, now)
    assert result.escalated == 1
    s = _state(world, eid)
    assert (s["level"], s["unit_code"], s["status"], s["escalations"]) == (
        "district", "district_market_bureau", "accepted", 1)
    assert s["deadline"] == now + dt.timedelta(hours=24) and s["overdue"] is False  # the clock restarts up there
    assert s["notices"] == [("overdue", "market_supervision_office", deadline)]
    supervise, escalate = s["log"]
    assert supervise["action"] == "supervise" and supervise["data"]["unit"] == "market_supervision_office"
    assert (escalate["action"], escalate["role"], escalate["from_status"], escalate["to_status"]) == (
        "escalate", "system", "in_progress", "accepted")
    assert escalate["data"] == {"from_level": "township", "to_level": "district", "unit": "district_market_bureau",
                                "auto": True}
    with db.engine_for(world.url).connect() as conn:
        open_tasks = conn.execute(text("SELECT count(*) FROM subtasks WHERE event_id = :i AND status = 'open'"),
                                  {"i": eid}).scalar_one()
    assert open_tasks == 0  # the market office is off the case
    # Nothing more until the new deadline passes; then a notice to the bureau, and no level above to go to.
    assert _sweep(world, now + dt.timedelta(hours=1)).escalated == 0
    world.client.app.state.cases.act(  # type: ignore[attr-defined]
        eid, "dispatch", CENTRE, {"unit": "district_market_bureau"}, now=now + dt.timedelta(hours=2))
    final = _sweep(world, now + dt.timedelta(hours=25))
    s = _state(world, eid)
    assert final.escalated == 0 and s["level"] == "district" and s["overdue"] is True
    assert s["notices"][-1] == ("overdue", "district_market_bureau", now + dt.timedelta(hours=24))


def test_supervision_state_survives_a_restart(world: World) -> None:
    eid, deadline = _case(world, "party_building_matter", 3, dt.datetime(2026, 7, 6, 9, tzinfo=TZ), [
        (CENTRE, "accept", {}), (CENTRE, "dispatch", {"unit": "village_committee"})])
    assert _sweep(world, deadline - dt.timedelta(hours=1)).due_soon == 1
    before = _state(world, eid)
    # A new process: its own engine (pool) and its own Cases, nothing shared with the old one.
    state = world.client.app.state  # type: ignore[attr-defined]
    engine = create_engine(db.engine_for(world.url).url)
    try:
        cases = Cases(engine, state.taxonomy, state.calendar, state.locator)
        replay = _sweep(world, deadline - dt.timedelta(minutes=30), cases=cases, engine=engine)
        assert (replay.due_soon, replay.overdue) == (0, 0)
        assert _state(world, eid) == before
        late = _sweep(world, deadline + dt.timedelta(minutes=5), cases=cases, engine=engine)
        assert late.overdue == 1
        after = _state(world, eid)
        assert [n[0] for n in after["notices"]] == ["due_soon", "overdue"] and after["overdue"] and after["due_soon"]
        assert len(after["log"]) == 2
    finally:
        engine.dispose()


def test_the_case_list_filters_overdue(world: World) -> None:
    late, deadline = _case(world, "public_sentiment", 3, dt.datetime(2026, 8, 3, 9, tzinfo=TZ),
                           [(CENTRE, "accept", {})])
    _sweep(world, deadline + dt.timedelta(hours=1))
    fresh, _ = _case(world, "public_sentiment", 3, dt.datetime(2026, 8, 10, 9, tzinfo=TZ), [(CENTRE, "accept", {})])
    with db.engine_for(world.url).connect() as conn:
        overdue = set(conn.execute(text("SELECT id FROM events WHERE overdue")).scalars())
        others = set(conn.execute(text("SELECT id FROM events WHERE NOT overdue")).scalars())
    assert late in overdue and fresh in others

    def listed(flag: str) -> list[dict[str, Any]]:
        r = world.client.get("/api/v1/events", params={"overdue": flag, "limit": 500}, headers=world.h("centre"))
        assert r.status_code == 200
        return list(r.json()["items"])

    yes, no = listed("true"), listed("false")
    assert {i["id"] for i in yes} == overdue and all(i["overdue"] for i in yes)
    assert {i["id"] for i in no} == others and not any(i["overdue"] for i in no)
