"""Evaluation (督查考核) on a hand-computed fixture: every number of /api/v1/stats/kpi by village, platform, unit and
worker, the CSV export, and responsibility judged at the event's time.

The fixture is one week of March 2026 (Monday 2 March to Sunday 8 March, Asia/Shanghai) in J town: nine cases in
three cells (A and B of village V1, C of village V2), driven through the loop with explicit times; two more lie just
outside the week. Every case's time limit is 24 wall-clock hours, so each deadline is received + 24 h.

    case  cell  category (platform)              received   what happened                          closed      h
    K0    A     sanitation (services)            Mon 07:00  village leader + grid worker close it  Mon 13:00   6
    K1    A     food_safety (market)             Mon 09:00  market office                          Mon 21:00  12
    K2    A     noise (enforcement)              Mon 10:00  enforcement squad, one rework          Wed 10:00  48 late
    K3    A     illegal_fishing (enforcement)    Mon 11:00  sent to market, returned, env squad    Mon 23:00  12
    K4    B     open_burning (enforcement)       Tue 09:00  + 2 merged reports; accepted, no more  open, overdue
    K5    B     street_vending (enforcement)     Tue 10:00  rejected by the village leader         —
    K6    C     community_correction (governance) Wed 09:00 escalated to the district Wed 12:00    Thu 11:00  26
                                                            (deadline restarts: Thu 12:00, on time)
    K7    C     garbage_dumping (services)       Wed 10:00  never accepted                         open, overdue
    K8    C     drainage_flooding (services)     Wed 11:00  urban management office, reworked      open, overdue
    X1    A     noise                            Sun 1 March 22:00 (before the week)
    X2    A     food_safety                      Mon 9 March 07:00 (after the week)

Definitions (GB/T 30428-style): accepted = not reported, needs_location or rejected (应结案); closure rate =
closed / accepted; on-time rate = closed by the deadline / closed; hours from received to closed (mean, p90 by
linear interpolation); overdue = open past the deadline or closed after it; rework rate = reworked / accepted;
return rate = returned / dispatched; escalation rate = escalated / accepted; merged = extra reports folded in.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from typing import Any

import pytest
import shapely
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from gis import accounts, db, kpi
from gis.intake import TZ, Report
from gis.workflow import Actor
from tests.conftest import create_database
from tests.loop_helpers import DISTRICT, TOWN, World, build_world

WEEK = {"from": "2026-03-02", "to": "2026-03-09"}  # local dates, as a township clerk types them


def t(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=TZ)


@pytest.fixture(scope="module")
def world(server_url: str, template_db: str) -> Iterator[World]:
    url = create_database(server_url, "wangge_test_kpi", template=template_db)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANGGE_SUPERVISION_SECONDS", "0")  # no background sweep: the numbers are ours alone
        mp.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        with TestClient(create_app(url)) as client:
            w = build_world(client, url)
            w.fixture = _fixture(w)  # type: ignore[attr-defined]
            yield w
    db.engine_for(url).dispose()


def _fixture(w: World) -> dict[str, Any]:
    engine = db.engine_for(w.url)
    with engine.connect() as conn:
        c = conn.execute(text("""SELECT c.code, v.code AS village, ST_AsBinary(c.geom) AS g, a.worker_id
                                 FROM cells c JOIN jurisdictions v ON v.id = c.village_id
                                 JOIN worker_assignments a ON a.cell_id = c.id
                                 WHERE v.code LIKE '330212101%' AND v.code <> :v ORDER BY c.code LIMIT 1"""),
                         {"v": w.village}).one()
        names: dict[str, str] = {r.id: r.name for r in conn.execute(text("SELECT id, name FROM workers"))}
        villages: dict[str, str] = {r.code: r.name for r in conn.execute(text("SELECT code, name FROM jurisdictions"))}
    pc = shapely.from_wkb(c.g).representative_point()
    where = {"A": w.point, "B": w.other_point, "C": (pc.x, pc.y)}
    intake, cases = w.client.app.state.intake, w.client.app.state.cases  # type: ignore[attr-defined]

    def report(place: str, category: str, grade: int, at: dt.datetime, dx: float = 0.0) -> dict[str, Any]:
        lon, lat = where[place]
        return intake.ingest([Report(source="grid_worker", category=category, grade=grade, lon=lon + dx, lat=lat,
                                     occurred_at=at)], now=at)[0]

    v1 = w.village
    centre = Actor("centre", "command_centre", TOWN)
    vleader = Actor("village_leader", "grid_leader", v1)
    worker_a = Actor("worker", "grid_worker", w.cell, worker_id=w.worker)
    market = Actor("market", "unit_handler", TOWN, "market_supervision_office")
    enforcement = Actor("enforcement", "unit_handler", TOWN, "enforcement_squad")
    env = Actor("env", "unit_handler", TOWN, "env_enforcement_squad")
    justice = Actor("justice", "unit_handler", DISTRICT, "district_justice_bureau")
    urban = Actor("urban", "unit_handler", TOWN, "urban_management_office")

    def run(eid: int, steps: list[tuple[Actor, str, dict[str, Any], dt.datetime]]) -> None:
        for actor, action, payload, at in steps:
            cases.act(eid, action, actor, payload, now=at)

    ids: dict[str, int] = {}
    ids["K0"] = report("A", "sanitation", 2, t(2, 7))["id"]
    run(ids["K0"], [(vleader, "accept", {}, t(2, 7, 30)), (vleader, "dispatch", {"unit": "village_committee"}, t(2, 8)),
                    (worker_a, "start", {}, t(2, 9)), (worker_a, "feedback", {"result": "swept"}, t(2, 12)),
                    (vleader, "review", {}, t(2, 12, 30)), (vleader, "close", {}, t(2, 13))])
    ids["K1"] = report("A", "food_safety", 3, t(2, 9))["id"]
    run(ids["K1"], [(centre, "accept", {}, t(2, 9, 30)),
                    (centre, "dispatch", {"unit": "market_supervision_office"}, t(2, 10)),
                    (market, "start", {}, t(2, 11)), (market, "feedback", {"result": "stall closed"}, t(2, 20)),
                    (centre, "review", {}, t(2, 20, 30)), (centre, "close", {}, t(2, 21))])
    ids["K2"] = report("A", "noise", 2, t(2, 10))["id"]
    run(ids["K2"], [(centre, "accept", {}, t(2, 10, 10)),
                    (centre, "dispatch", {"unit": "enforcement_squad"}, t(2, 10, 30)),
                    (enforcement, "start", {}, t(2, 11)), (enforcement, "feedback", {"result": "warned"}, t(3, 8)),
                    (centre, "review", {}, t(3, 8, 30)), (centre, "rework", {"reason": "still loud"}, t(3, 9)),
                    (enforcement, "feedback", {"result": "equipment seized"}, t(3, 20)),
                    (centre, "review", {}, t(4, 9)), (centre, "close", {}, t(4, 10))])
    ids["K3"] = report("A", "illegal_fishing", 2, t(2, 11))["id"]
    run(ids["K3"], [(centre, "accept", {}, t(2, 11, 10)),
                    (centre, "dispatch", {"unit": "market_supervision_office"}, t(2, 11, 30)),
                    (market, "return", {"reason_code": "not_our_duty"}, t(2, 12)),
                    (centre, "dispatch", {"unit": "env_enforcement_squad"}, t(2, 12, 30)),
                    (env, "start", {}, t(2, 13)), (env, "feedback", {"result": "nets removed"}, t(2, 22)),
                    (centre, "review", {}, t(2, 22, 30)), (centre, "close", {}, t(2, 23))])
    k4 = report("B", "open_burning", 1, t(3, 9))
    ids["K4"] = k4["id"]
    for minute, dx in ((10, 0.0001), (20, -0.0001)):  # the same fire reported twice more, within 50 m and 30 min
        assert report("B", "open_burning", 1, t(3, 9, minute), dx)["id"] == ids["K4"]
    run(ids["K4"], [(vleader, "accept", {}, t(3, 10))])
    ids["K5"] = report("B", "street_vending", 2, t(3, 10))["id"]
    run(ids["K5"], [(vleader, "reject", {"reason": "duplicate of a closed case"}, t(3, 11))])
    ids["K6"] = report("C", "community_correction", 2, t(4, 9))["id"]
    run(ids["K6"], [(centre, "accept", {}, t(4, 9, 30)), (centre, "escalate", {"reason": "cross-district"}, t(4, 12)),
                    (centre, "dispatch", {"unit": "district_justice_bureau"}, t(4, 13)),
                    (justice, "start", {}, t(4, 14)), (justice, "feedback", {"result": "reported in"}, t(5, 10)),
                    (centre, "review", {}, t(5, 10, 30)), (centre, "close", {}, t(5, 11))])
    ids["K7"] = report("C", "garbage_dumping", 2, t(4, 10))["id"]
    ids["K8"] = report("C", "drainage_flooding", 2, t(4, 11))["id"]
    run(ids["K8"], [(centre, "accept", {}, t(4, 11, 10)),
                    (centre, "dispatch", {"unit": "urban_management_office"}, t(4, 11, 30)),
                    (urban, "start", {}, t(4, 12)), (urban, "feedback", {"result": "drain cleared"}, t(4, 18)),
                    (centre, "review", {}, t(4, 18, 30)), (centre, "rework", {"reason": "still flooding"}, t(4, 19))])
    ids["X1"] = report("A", "noise", 2, t(1, 22))["id"]
    ids["X2"] = report("A", "food_safety", 3, t(9, 7))["id"]
    assert len(set(ids.values())) == 11
    with engine.connect() as conn:
        worker_b = conn.execute(text("SELECT worker_id FROM events WHERE id = :i"), {"i": ids["K4"]}).scalar_one()
    return {"ids": ids, "v1": v1, "v2": c.village, "cell_c": c.code, "wa": w.worker, "wb": worker_b,
            "wc": c.worker_id, "names": names, "villages": villages}


FIELDS = ("received", "accepted", "closed", "closure_rate", "on_time_rate", "avg_hours", "p90_hours", "overdue",
          "rework_rate", "return_rate", "escalation_rate", "merged_reports")


def row(*values: Any) -> dict[str, Any]:
    return dict(zip(FIELDS, values, strict=True))


# V1 = K0..K5: accepted K0-K4 (K5 rejected); closed K0-K3 with hours 6, 12, 48, 12 → mean 19.5,
# p90 = 12 + 0.7 × (48 − 12) = 37.2 (rank 0.9 × 3 = 2.7 in 6, 12, 12, 48); on time K0, K1, K3 → 3/4;
# overdue K2 (closed late) and K4 (open); reworked K2 → 1/5; dispatched K0-K3, returned K3 → 1/4; merged 2 (K4).
V1 = row(6, 5, 4, 0.8, 0.75, 19.5, 37.2, 2, 0.2, 0.25, 0.0, 2)
# V2 = K6..K8: accepted K6, K8; closed K6 (26 h, on time); overdue K7, K8; reworked K8 → 1/2;
# dispatched K6, K8, none returned → 0/2; escalated K6 → 1/2.
V2 = row(3, 2, 1, 0.5, 1.0, 26.0, 26.0, 2, 0.5, 0.0, 0.5, 0)
PLATFORMS = {
    # K2, K3, K4, K5: accepted K2-K4; closed K2 (48 h, late), K3 (12 h) → p90 = 12 + 0.9 × 36 = 44.4;
    # overdue K2, K4; reworked K2 → 1/3; dispatched K2, K3, returned K3 → 1/2; merged 2.
    "enforcement": row(4, 3, 2, 0.6667, 0.5, 30.0, 44.4, 2, 0.3333, 0.5, 0.0, 2),
    "governance": row(1, 1, 1, 1.0, 1.0, 26.0, 26.0, 0, 0.0, 0.0, 1.0, 0),  # K6
    "market": row(1, 1, 1, 1.0, 1.0, 12.0, 12.0, 0, 0.0, 0.0, 0.0, 0),  # K1
    # K0, K7, K8: accepted K0, K8; closed K0 (6 h); overdue K7, K8; reworked K8 → 1/2; dispatched K0, K8.
    "services": row(3, 2, 1, 0.5, 1.0, 6.0, 6.0, 2, 0.5, 0.0, 0.0, 0),
}
UNITS = {
    # The unit that holds the case since it was dispatched or escalated to it; never dispatched → no unit (None).
    "district_justice_bureau": row(1, 1, 1, 1.0, 1.0, 26.0, 26.0, 0, 0.0, 0.0, 1.0, 0),  # K6, escalated to it
    "enforcement_squad": row(1, 1, 1, 1.0, 0.0, 48.0, 48.0, 1, 1.0, 0.0, 0.0, 0),  # K2
    "env_enforcement_squad": row(1, 1, 1, 1.0, 1.0, 12.0, 12.0, 0, 0.0, 0.0, 0.0, 0),  # K3: not its return
    # K1, plus K3 which it was sent and returned: dispatched 2, returned 1.
    "market_supervision_office": row(1, 1, 1, 1.0, 1.0, 12.0, 12.0, 0, 0.0, 0.5, 0.0, 0),
    "urban_management_office": row(1, 1, 0, 0.0, None, None, None, 1, 1.0, 0.0, 0.0, 0),  # K8
    "village_committee": row(1, 1, 1, 1.0, 1.0, 6.0, 6.0, 0, 0.0, 0.0, 0.0, 0),  # K0
    # K4 (accepted, never dispatched), K5 (rejected), K7 (never accepted): nobody was sent anything.
    None: row(3, 1, 0, 0.0, None, None, None, 2, 0.0, None, 0.0, 2),
}


def workers(f: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f["wa"]: row(4, 4, 4, 1.0, 0.75, 19.5, 37.2, 1, 0.25, 0.25, 0.0, 0),  # K0-K3
        f["wb"]: row(2, 1, 0, 0.0, None, None, None, 1, 0.0, None, 0.0, 2),  # K4, K5
        f["wc"]: V2,  # K6-K8
    }


def _kpi(w: World, by: str, who: str = "centre", **params: str) -> list[dict[str, Any]]:
    r = w.client.get("/api/v1/stats/kpi", params={**WEEK, "by": by, **params}, headers=w.h(who))
    assert r.status_code == 200, r.text
    return list(r.json()["rows"])


def _numbers(rows: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {r["key"]: {k: r[k] for k in FIELDS} for r in rows}


def test_kpi_by_village(world: World) -> None:
    f = world.fixture  # type: ignore[attr-defined]
    rows = _kpi(world, "village")
    assert _numbers(rows) == {f["v1"]: V1, f["v2"]: V2}
    assert {r["key"]: r["name"] for r in rows} == {f["v1"]: f["villages"][f["v1"]], f["v2"]: f["villages"][f["v2"]]}


def test_kpi_by_platform(world: World) -> None:
    rows = _kpi(world, "platform")
    assert _numbers(rows) == PLATFORMS
    assert [r["key"] for r in rows] == sorted(PLATFORMS)
    names = {k: p.name_zh for k, p in world.client.app.state.taxonomy.platform_set().platforms.items()}  # type: ignore[attr-defined]
    assert {r["key"]: r["name"] for r in rows} == {k: names[k] for k in PLATFORMS}


def test_kpi_by_unit(world: World) -> None:
    rows = _kpi(world, "unit")
    assert _numbers(rows) == UNITS
    assert rows[-1]["key"] is None  # the undispatched cases come last
    assert all(r["name"] for r in rows[:-1]) and rows[-1]["name"] is None


def test_kpi_by_worker(world: World) -> None:
    f = world.fixture  # type: ignore[attr-defined]
    rows = _kpi(world, "worker")
    assert _numbers(rows) == workers(f)
    assert {r["key"]: r["name"] for r in rows} == {k: f["names"][k] for k in workers(f)}


def test_on_time_rate_over_the_cases_due(world: World) -> None:
    """按期办结率 over 应办结 cases: closed ones and open ones past their deadline by the end of the week (rejected
    aside) — K4, K7 and K8, left open past their deadlines, count against it; over closures they did not count.
    V1: K0, K1, K3 on time of K0-K4 → 3/5; V2: K6 of K6-K8 → 1/3."""
    f = world.fixture  # type: ignore[attr-defined]

    def rates(by: str) -> dict[Any, tuple[int, float | None]]:
        return {r["key"]: (r["due"], r["on_time_rate_due"]) for r in _kpi(world, by)}

    assert rates("village") == {f["v1"]: (5, 0.6), f["v2"]: (3, 0.3333)}
    assert rates("platform") == {"enforcement": (3, 0.3333), "governance": (1, 1.0), "market": (1, 1.0),
                                 "services": (3, 0.3333)}
    assert rates("unit") == {"district_justice_bureau": (1, 1.0), "enforcement_squad": (1, 0.0),
                             "env_enforcement_squad": (1, 1.0), "market_supervision_office": (1, 1.0),
                             "urban_management_office": (1, 0.0), "village_committee": (1, 1.0), None: (2, 0.0)}
    assert rates("worker") == {f["wa"]: (4, 0.75), f["wb"]: (1, 0.0), f["wc"]: (3, 0.3333)}
    # K4 (received Tue 09:00, still open) falls due Wed 09:00: not yet for a period ending Wed 08:00, then yes.
    early = {"from": WEEK["from"], "to": "2026-03-04T08:00:00+08:00"}
    late = {"from": WEEK["from"], "to": "2026-03-04T10:00:00+08:00"}
    due = lambda p: {r["key"]: r["due"] for r in _kpi(world, "village", **p)}[f["v1"]]  # noqa: E731
    assert due(late) == due(early) + 1


def test_the_period_is_local_time_and_end_exclusive(world: World) -> None:
    """K0 (Mon 07:00 in Ningbo = Sun 23:00 UTC) is in the week; X2 (Mon 9 March 07:00) and X1 are not — also when
    the period is given with explicit offsets."""
    f = world.fixture  # type: ignore[attr-defined]
    explicit = _kpi(world, "village", **{"from": "2026-03-02T00:00:00+08:00", "to": "2026-03-08T16:00:00Z"})
    assert _numbers(explicit) == {f["v1"]: V1, f["v2"]: V2}
    listed = world.client.get("/api/v1/events", params={**WEEK, "limit": 500}, headers=world.h("centre")).json()
    assert {i["id"] for i in listed["items"]} == {v for k, v in f["ids"].items() if k.startswith("K")}
    monday = _kpi(world, "village", **{"from": "2026-03-02", "to": "2026-03-03"})
    assert [r["received"] for r in monday] == [4]  # K0-K3


def test_kpi_is_scoped_like_the_cases(world: World) -> None:
    f = world.fixture  # type: ignore[attr-defined]
    assert _numbers(_kpi(world, "village", who="village_leader")) == {f["v1"]: V1}
    assert _numbers(_kpi(world, "worker", who="worker")) == {f["wa"]: workers(f)[f["wa"]]}
    # The market office sees the cases it was sent: K1, and K3 which it returned and the env squad closed.
    market = _numbers(_kpi(world, "unit", who="market"))
    assert market == {u: UNITS[u] for u in ("market_supervision_office", "env_enforcement_squad")}


def test_csv_export_has_the_same_numbers(world: World) -> None:
    for by in ("village", "platform", "unit", "worker"):
        r = world.client.get("/api/v1/stats/kpi", params={**WEEK, "by": by, "format": "csv"},
                             headers=world.h("centre"))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert f'filename="kpi-{by}-20260302-20260309.csv"' in r.headers["content-disposition"]
        table = list(csv.DictReader(io.StringIO(r.text)))
        columns = list(kpi.FIELDS[2:])
        assert list(table[0]) == ["key", "name", *columns] and set(FIELDS) < set(columns)

        def parse(v: str, k: str) -> Any:
            if v == "":
                return None
            return int(v) if k in ("received", "accepted", "closed", "due", "overdue", "merged_reports") else float(v)

        from_csv = [{"key": d["key"] or None, "name": d["name"] or None, **{k: parse(d[k], k) for k in columns}}
                    for d in table]
        assert from_csv == _kpi(world, by), by


def test_responsibility_stays_with_the_worker_of_the_day(world: World) -> None:
    """Cell A gets a new grid worker on 20 March: the week's cases stay on the old worker's row, and a case of
    April goes to the new one."""
    f = world.fixture  # type: ignore[attr-defined]
    engine = db.engine_for(world.url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO workers (id, name, phone) VALUES ('W9001', '新网格员', '13900000000')"))
        conn.execute(text("""UPDATE worker_assignments SET valid_to = '2026-03-20'
                             WHERE worker_id = :w AND role = 'grid_worker'"""), {"w": f["wa"]})
        conn.execute(text("""INSERT INTO worker_assignments (worker_id, role, cell_id, valid_from)
                             SELECT 'W9001', 'grid_worker', id, '2026-03-20' FROM cells WHERE code = :c"""),
                     {"c": world.cell})
        conn.execute(text("UPDATE dataset_state SET revision = revision + 1 WHERE id = 1"))
    april = dt.datetime(2026, 4, 1, 10, tzinfo=TZ)
    new = world.client.app.state.intake.ingest([Report(  # type: ignore[attr-defined]
        source="hotline", category="noise", lon=world.point[0], lat=world.point[1], occurred_at=april)], now=april)[0]
    assert new["worker"]["id"] == "W9001"
    assert _numbers(_kpi(world, "worker")) == workers(f)
    later = _kpi(world, "worker", **{"from": "2026-04-01", "to": "2026-05-01"})
    assert [(r["key"], r["name"], r["received"]) for r in later] == [("W9001", "新网格员", 1)]
