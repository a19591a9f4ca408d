"""Properties of the closed-loop state machine: random action sequences by random actors never reach an unknown
status, a refused action changes nothing and names what is allowed, and the log replays to the status — in the pure
`decide` and through the HTTP API on a real database."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from api.app import create_app
from gis import accounts, db
from gis.intake import TZ
from gis.workflow import (
    FINAL_STATUSES,
    LEVELS,
    OPEN_STATUSES,
    RULES,
    ActionInvalid,
    Actor,
    Case,
    IllegalTransition,
    allowed_actions,
    decide,
    replay,
)
from tests.conftest import create_database
from tests.loop_helpers import TOWN, World, build_world

STATUSES = (*OPEN_STATUSES, *FINAL_STATUSES)
ROLES = ("grid_worker", "grid_leader", "unit_handler", "command_centre", "leader", "planner", "admin", "system")
UNITS = ("village_committee", "market_supervision_office", "fire_station", "district_market_bureau")
WORKERS = ("W0001", "W0002")
ACTIONS = (*RULES, "fly")  # every action, and one that does not exist
NOW = dt.datetime(2026, 3, 2, 9, tzinfo=TZ)
FULL_PAYLOAD = {"reason": "r", "reason_code": "not_our_duty", "unit": "fire_station", "result": "done",
                "note": "n", "lon": 121.5, "lat": 29.7}

# One actor per role, and per unit or worker where the role acts by unit (unit_handler) or cell (grid_worker).
ALL_ACTORS = [Actor("a", role, unit_code=u, worker_id=w) for role in ROLES
              for u in (UNITS if role == "unit_handler" else (None,))
              for w in ((*WORKERS, None) if role == "grid_worker" else (None,))]
actors = st.sampled_from(ALL_ACTORS)


@st.composite
def new_cases(draw: st.DrawFn) -> Case:
    """A case as intake leaves it: reported (or waiting for a location), routed to a level and a unit."""
    return Case(id=1, status=draw(st.sampled_from(("reported", "needs_location"))), level=draw(st.sampled_from(LEVELS)),
                unit_code=draw(st.sampled_from(UNITS)), worker_id=draw(st.sampled_from((None, *WORKERS))),
                category="x", village_may_close=draw(st.booleans()))


# Complete payloads (with and without joint handling), each with one key missing, and a bad return reason.
PAYLOADS = [
    *({**FULL_PAYLOAD, "assisting": list(a)} for a in ((), ("fire_station",), ("village_committee", "fire_station"))),
    *({k: v for k, v in FULL_PAYLOAD.items() if k != missing} for missing in FULL_PAYLOAD),
    {**FULL_PAYLOAD, "reason_code": "because"},
]
payloads = st.sampled_from(PAYLOADS)


def apply(case: Case, d: Any) -> Case:
    """What gis/cases.py does with a decision (status, fields, sub-tasks), on the in-memory case."""
    updates = {k: v for k, v in d.updates.items() if k in ("level", "unit_code")}
    assists = case.open_assists
    action = d.log["action"]
    if action in ("dispatch", "return", "escalate"):
        assists = tuple(u for u, role in d.subtasks if role == "assist")
    if d.close_subtask:
        assists = tuple(u for u in assists if u != d.close_subtask)
    return dataclasses.replace(case, status=d.to_status, open_assists=assists, **updates)


@settings(max_examples=200, deadline=None)
@given(start=new_cases(), data=st.data())
def test_random_sequences_stay_legal_and_replay(start: Case, data: st.DataObject) -> None:
    case, log = start, []
    for _ in range(data.draw(st.integers(1, 40), label="steps")):
        # Half the time a move someone may make now (rejecting rarely, to get far into the loop) by someone who may
        # make it; otherwise any action by anyone.
        movers: dict[str, list[Actor]] = {}
        for x in ALL_ACTORS:
            for a in allowed_actions(case, x):
                if a != "reject":
                    movers.setdefault(a, []).append(x)
        legal: bool = data.draw(st.booleans(), label="legal")
        if movers and legal:
            action = data.draw(st.sampled_from(sorted(movers)), label="action")
            actor = data.draw(st.sampled_from(movers[action]), label="actor")
        else:
            action = data.draw(st.sampled_from(ACTIONS), label="action")
            actor = data.draw(actors, label="actor")
        allowed = allowed_actions(case, actor)
        payload = data.draw(payloads, label="payload")
        before, payload_before = copy.deepcopy(case), copy.deepcopy(payload)
        try:
            d = decide(case, action, actor, payload, NOW)
        except IllegalTransition as exc:
            assert action not in allowed
            assert exc.allowed == allowed and str(exc)
            assert case == before and payload == payload_before
            continue
        except ActionInvalid:
            assert action in allowed  # the move itself is legal; its payload is not
            assert case == before and payload == payload_before
            continue
        assert action in allowed, (action, allowed)
        assert case == before  # decide plans, it does not change the case
        rule = RULES[action]
        assert d.log["from_status"] == case.status and d.to_status == (rule.target or case.status)
        assert d.to_status in STATUSES
        if action == "escalate":
            assert LEVELS.index(d.updates["level"]) == LEVELS.index(case.level) + 1
        if action == "close":
            assert d.updates["closed_at"] == NOW
        log.append(d.log)
        case = apply(case, d)
        assert case.status in STATUSES
    event(f"ends {case.status}, {len(log)} moves")  # --hypothesis-show-statistics: how far sequences get
    # A final case accepts nothing from anyone; the log folds back to the status.
    if case.status in FINAL_STATUSES:
        assert all(allowed_actions(case, a) == [] for a in ALL_ACTORS)
    assert replay(log, start.status) == case.status


@settings(max_examples=300, deadline=None)
@given(case=st.builds(Case, id=st.just(1), status=st.sampled_from(STATUSES), level=st.sampled_from(LEVELS),
                      unit_code=st.sampled_from((None, *UNITS)), worker_id=st.sampled_from((None, *WORKERS)),
                      category=st.just("x"), village_may_close=st.booleans(),
                      open_assists=st.lists(st.sampled_from(UNITS), max_size=2, unique=True).map(tuple)),
       actor=actors)
def test_allowed_actions_are_exactly_those_decide_accepts(case: Case, actor: Actor) -> None:
    """What a 409 offers as allowed must work (with a complete payload), and nothing else may."""
    allowed = allowed_actions(case, actor)
    # A complete payload; an admin finishing a sub-task names an assisting unit that has one open.
    payload = {**FULL_PAYLOAD, "unit": case.open_assists[0] if case.open_assists else "fire_station"}
    for action in ACTIONS:
        try:
            decide(case, action, actor, payload, NOW, next_unit="fire_station")
            ok = True
        except IllegalTransition:
            ok = False
        assert ok == (action in allowed), (action, allowed)
    if case.level == "district":
        assert "escalate" not in allowed
    if actor.role in ("leader", "planner"):
        assert allowed == []


def test_replay_refuses_a_log_with_a_gap() -> None:
    log = [{"id": 1, "from_status": "reported", "to_status": "accepted"},
           {"id": 2, "from_status": "in_progress", "to_status": "feedback"}]
    with pytest.raises(ValueError, match="starts at in_progress"):
        replay(log, "reported")


# ---- the same through the HTTP API, on a real database ---------------------------------------------------------

@pytest.fixture(scope="module")
def world(server_url: str, template_db: str) -> Iterator[World]:
    url = create_database(server_url, "wangge_test_workflow", template=template_db)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANGGE_SUPERVISION_SECONDS", "0")
        mp.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        with TestClient(create_app(url)) as client:
            w = build_world(client, url)
            accounts.create_user(db.engine_for(url), "committee", "correct-horse-42", "unit_handler", TOWN,
                                 unit_code="village_committee")
            w.tokens["committee"] = client.post("/api/v1/auth/token", data={
                "username": "committee", "password": "correct-horse-42"}).json()["access_token"]
            yield w
    db.engine_for(url).dispose()


HTTP_ACTORS = ("centre", "admin", "village_leader", "worker", "market", "fire", "committee", "leader", "district_agri")
HTTP_ACTIONS = ("accept", "reject", "dispatch", "start", "return", "assist_done", "feedback", "review", "close",
                "rework", "escalate", "supervise")
HOLDERS = {"village_committee": "committee", "market_supervision_office": "market", "fire_station": "fire"}
_hour = itertools.count(1)


def _guided(event: dict[str, Any], unit: str) -> tuple[str, str]:
    """The next step of the loop for the case as it stands, by whoever should take it."""
    holder = HOLDERS.get(event["unit_code"] or "", "admin")
    return {"reported": ("centre", "accept"), "accepted": ("centre", "dispatch"), "dispatched": (holder, "start"),
            "in_progress": (holder, "feedback"), "feedback": ("centre", "review"),
            "review": ("centre", "rework" if unit == "fire_station" else "close")}.get(event["status"],
                                                                                      ("centre", "accept"))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(category=st.sampled_from(["garbage_dumping", "food_safety"]),
       steps=st.lists(st.tuples(st.sampled_from(HTTP_ACTORS), st.sampled_from(HTTP_ACTIONS),
                                st.sampled_from(["village_committee", "market_supervision_office", "fire_station"]),
                                st.booleans()),
                      min_size=5, max_size=20))
def test_http_sequences_replay_to_the_stored_status(world: World, category: str,
                                                    steps: list[tuple[str, str, str, bool]]) -> None:
    occurred = dt.datetime(2026, 1, 1, tzinfo=TZ) + dt.timedelta(hours=next(_hour))  # never merged with another
    r = world.post("centre", {"source": "grid_worker", "category": category, "lon": world.point[0],
                              "lat": world.point[1], "occurred_at": occurred.isoformat()})
    assert r.status_code == 201, r.text
    eid = r.json()["id"]
    before = world.get("admin", eid).json()
    for who, action, unit, guided in steps:
        if guided:  # half the steps follow the loop, so that cases get far; the others are anything by anyone
            who, action = _guided(before, unit)
        payload = {"reason": "r", "reason_code": "wrong_category", "unit": unit, "result": "done", "note": "n"}
        got = world.act(who, eid, action, **payload)
        after = world.get("admin", eid).json()
        assert got.status_code in (200, 403, 404, 409, 422), got.text
        if got.status_code == 200:
            assert len(after["timeline"]) == len(before["timeline"]) + 1
            assert after["timeline"][-1]["action"] == action and after["timeline"][-1]["actor"] == who
        else:
            assert (after["status"], after["version"], after["timeline"]) == (
                before["status"], before["version"], before["timeline"]), got.text
        if got.status_code == 409:
            assert action not in got.json()["allowed"]
        assert after["status"] in STATUSES
        before = after
    with db.engine_for(world.url).connect() as conn:
        status = conn.execute(text("SELECT status FROM events WHERE id = :i"), {"i": eid}).scalar_one()
        log = [dict(r._mapping) for r in conn.execute(text(
            "SELECT id, from_status, to_status FROM event_log WHERE event_id = :i ORDER BY id"), {"i": eid})]
    event(f"ends {status}")
    assert log[0]["from_status"] is None and replay(log[1:], log[0]["to_status"]) == status
